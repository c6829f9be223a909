"""The run folder model/NAME/: its name, its checkpoint names, how train.py opens it, and the weights saved there."""
import argparse
import hashlib
import os
import shutil
import tempfile
from contextlib import contextmanager

from reid.files import RUN_AGAIN, atomic_write, cannot_write, exclusive_lock
from utils import UserError


RUNS_ROOT = "model"   # every run lives in model/NAME/, relative to the current directory
TRAIN_OPTS = "opts.yaml"
# keys every opts.yaml that train.py writes has held: how --overwrite recognises a run folder it may delete
TRAIN_OPTS_KEYS = ("name", "backbone", "nclasses", "total_epoch", "lr", "batchsize")
# export.py --format: the file it writes in model/NAME/ (test.py --backend reads it from there)
EXPORT_FILES = {"onnx": "model.onnx", "torchscript": "model.pt", "tensorrt": "model.engine"}


def run_name(text):
    """``--name``: one plain folder name under model/ (argparse ``type=``), never a path.

    ``..``, ``.``, an empty string (an unset shell variable) or a path with separators would put the run,
    or what ``--overwrite`` deletes, outside model/NAME.
    """
    separators = {"/", "\\", os.sep} | ({os.altsep} if os.altsep else set())
    if text in ("", ".", "..") or any(sep in text for sep in separators) or "\0" in text or text != text.strip():
        raise argparse.ArgumentTypeError(f"{text!r} is not a plain folder name (no /, not . or .., not empty); "
                                         "runs live in model/NAME")
    return text


def run_dir(name):
    """model/NAME for a name that ``run_name`` accepts."""
    return os.path.join(RUNS_ROOT, name)


def is_train_run(folder):
    """True when ``folder`` holds an opts.yaml that train.py wrote (a mapping with train.py's keys)."""
    import yaml

    path = os.path.join(folder, TRAIN_OPTS)
    if not os.path.isfile(path):
        return False
    try:
        with open(path) as handle:
            saved = yaml.safe_load(handle)
    except (OSError, yaml.YAMLError, UnicodeDecodeError):
        return False
    return isinstance(saved, dict) and all(key in saved for key in TRAIN_OPTS_KEYS)


NAMED_CHECKPOINTS = ("last", "best", "average")   # newest epoch, best held-out mAP, --wa's weight average


def checkpoint_label(epoch):
    """``last``, ``best``, ``average`` or ``060`` (for 60 or "060"): what follows ``net_`` in the file name."""
    return str(epoch) if str(epoch) in NAMED_CHECKPOINTS else f"{int(epoch):03d}"


def checkpoint_name(epoch):
    """``net_last.pth``, ``net_best.pth``, ``net_average.pth`` or ``net_060.pth``: the one naming rule of
    train.py and test.py."""
    return f"net_{checkpoint_label(epoch)}.pth"


def save_weights(path, module, again=RUN_AGAIN):
    """A module's state_dict as CPU tensors, written atomically (loads with ``weights_only=True``)."""
    import torch

    weights = {key: value.detach().cpu() for key, value in module.state_dict().items()}
    atomic_write(path, lambda temporary: torch.save(weights, temporary), again)
    return weights


def load_weights(path, fix):
    """``torch.load(path, weights_only=True)`` of a mapping, with one line for each way a file that users
    can copy, truncate or replace goes wrong: empty, cut short or not a checkpoint, or holding Python
    objects (which could run code while loading, so they are refused). ``fix`` says how to do without it."""
    import pickle

    import torch

    if os.path.getsize(path) == 0:
        raise UserError(f"{path} is empty (0 bytes)", f"if you copied it, copy it again; otherwise {fix}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        if "weights only" in str(err).lower():
            raise UserError(f"{path} holds Python objects besides tensors; loading those can run arbitrary code, "
                            "so it is refused", f"use a checkpoint that holds only a state_dict: {fix}") from None
        raise UserError(f"{path} is damaged (not a PyTorch checkpoint)",
                        f"put back the checkpoint train.py wrote under that name, or {fix}") from None
    except (RuntimeError, OSError, EOFError, ValueError) as err:   # torch's errors on a cut-short zip
        raise UserError(f"{path} is damaged or cut short ({err.__class__.__name__})",
                        f"if you copied it, copy it again in full; otherwise {fix}") from None
    if not isinstance(state, dict):
        raise UserError(f"{path} holds a {type(state).__name__}, not a state_dict",
                        f"put back a checkpoint that train.py wrote (a mapping of names to tensors), or {fix}")
    return state


def rng_states():
    """torch's generator state, the one --resume restores (each epoch re-seeds Python and NumPy from
    (--seed, epoch), so their states need no saving)."""
    import torch

    return {"torch": torch.get_rng_state()}


def checkpoint_path(run_dir, which_epoch):
    """model/NAME/net_<epoch>.pth for last, 60 or 060; a missing one lists the epochs that exist."""
    if which_epoch not in NAMED_CHECKPOINTS and not which_epoch.isdigit():
        raise UserError(f"--which_epoch {which_epoch} is not 'last', 'best', 'average' or a number",
                        "pass e.g. last, best, 60 or 060")
    path = os.path.join(run_dir, checkpoint_name(which_epoch))
    if not os.path.isfile(path):
        found = sorted(n[4:-4] for n in os.listdir(run_dir) if n.startswith("net_") and n.endswith(".pth"))
        raise UserError(f"{path} does not exist", f"pass --which_epoch with one of: {', '.join(found) or 'none saved yet'}")
    return path


@contextmanager
def run_lock(name, main=True):
    """Hold a lock on model/NAME while train.py writes it (the process that writes it: rank 0), so that a
    second train.py on the same run -- an --overwrite or a --resume typed while the first still trains --
    stops with one line instead of deleting the folder under the running job or mixing two runs' files.
    The lock file lives in the system's temporary folder, keyed by the run folder's absolute path, so that
    nothing is created beside the user's files."""
    if not main:
        yield
        return
    folder = os.path.abspath(run_dir(name))
    key = hashlib.sha1(folder.encode()).hexdigest()[:16]
    user = os.getuid() if hasattr(os, "getuid") else "user"
    with exclusive_lock(os.path.join(tempfile.gettempdir(), f"reid-run-{user}-{key}.lock"), run_dir(name)):
        yield


def prepare_run_dir(args):
    """model/NAME ready for writing, under ``run_lock``. Called only once the network is built, so a failed
    start leaves no folder behind. ``--overwrite`` deletes only a folder train.py made (its opts.yaml is there)."""
    folder = run_dir(args.name)
    if os.path.exists(RUNS_ROOT) and not os.path.isdir(RUNS_ROOT):
        raise UserError(f"{RUNS_ROOT} is a file, but train.py keeps its runs in a folder of that name",
                        f"move the file {RUNS_ROOT} away, or run train.py from another folder")
    if os.path.islink(folder) or (os.path.exists(folder) and not os.path.isdir(folder)):
        raise UserError(f"{folder} is not a folder", "choose another --name, or move that file away")
    if os.path.isdir(folder) and not args.resume and any(".tmp-" not in n for n in os.listdir(folder)):
        if not args.overwrite:
            raise UserError(f"{folder} already exists", "pass --resume to continue it or --overwrite to start again")
        if not is_train_run(folder):
            raise UserError(f"{folder} holds no opts.yaml written by train.py, so --overwrite will not delete it",
                            "move its files away yourself, or choose another --name")
        shutil.rmtree(folder)
    try:
        os.makedirs(folder, exist_ok=True)
        refused = cannot_write(folder)
    except OSError as err:
        refused = err.strerror
    if refused:
        raise UserError(f"cannot write in {folder} ({refused})",
                        f"run train.py from a folder you may write to: it keeps its runs in ./{RUNS_ROOT}")
    for leftover in os.listdir(folder):   # temporary files of a run killed while writing
        if ".tmp-" in leftover:
            os.remove(os.path.join(folder, leftover))
    return folder
