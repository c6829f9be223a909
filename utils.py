"""Shared foundations for every stage of reid-practical.

What lives here, once:
  * ``UserError`` and ``cli_main`` -- a problem the user can fix becomes one line
    ``error: <what is wrong> — <how to fix it>`` on stderr and exit status 2, without a traceback;
    real bugs keep their traceback.
  * ``select_device`` -- ``--gpu_ids`` to a ``torch.device`` (``-1`` or no CUDA -> CPU).
  * ``set_seed`` / ``seed_worker`` -- one call seeds Python, NumPy and torch.
  * ``parse_market_name`` / ``parse_duke_name`` -- strict parsers of the two benchmark naming rules.

torch is imported inside the functions that need it, so that ``prepare.py`` and ``toy_data.py``
start quickly.
"""
import argparse
import functools
import os
import random
import re
import sys
from dataclasses import dataclass

JUNK_PID = -1        # Market-1501: a bad detection, ignored by the evaluation
DISTRACTOR_PID = 0   # Market-1501 ``0000``: a false detection, an ordinary wrong match
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
TOY_MANIFEST = "toy_dataset.json"   # written by toy_data.py at the root of every toy dataset


class UserError(Exception):
    """A mistake the user can fix (wrong path, bad flag, malformed file).

    ``what`` says what is wrong and ``fix`` how to fix it; ``cli_main`` prints both on one line.
    """

    def __init__(self, what, fix):
        super().__init__(f"{what} — {fix}")
        self.what = what
        self.fix = fix


def cli_main(main):
    """Decorate a stage's ``main(argv=None)``: a ``UserError`` becomes one ``error:`` line and exit 2.

    Tests call the decorated ``main([...])`` in-process and see exactly what a terminal user sees
    (a ``SystemExit`` with code 2 and the line on stderr). Any other exception is a bug and keeps
    its traceback.
    """

    @functools.wraps(main)
    def wrapper(argv=None):
        try:
            return main(argv)
        except UserError as err:
            print(f"error: {shorten(err.what)} — {shorten(err.fix)}", file=sys.stderr)
            raise SystemExit(2) from None
        except KeyboardInterrupt:
            print("error: interrupted — run the same command again to continue", file=sys.stderr)
            raise SystemExit(130) from None
        except BrokenPipeError:   # the output was piped into a reader that stopped early (| head)
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            raise SystemExit(0) from None

    return wrapper


MAX_MESSAGE = 400   # characters of an error line; a list of thousands of names is cut, not printed whole


def shorten(text, limit=MAX_MESSAGE):
    """``text`` on one line, cut to ``limit`` characters with an ellipsis."""
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[:limit - 1].rstrip() + "…"


class ArgumentParser(argparse.ArgumentParser):
    """argparse with the project's error format: a usage mistake is one ``error:`` line and exit 2.

    argparse's own errors (a non-integer, an unknown flag) and ``parser.error`` calls print the same single
    line as a ``UserError``, with a pointer to ``--help`` instead of the 20-line usage block.
    """

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", argparse.ArgumentDefaultsHelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message):
        print(f"error: {shorten(message)} — see python {self.prog} --help", file=sys.stderr)
        raise SystemExit(2)


def parse_gpu_ids(gpu_ids):
    """``"0,1"`` -> ``[0, 1]``; ``"-1"`` or ``""`` -> ``[]`` (CPU). Negative ids are dropped."""
    ids = []
    for part in str(gpu_ids).replace(" ", "").split(","):
        if not part:
            continue
        if not re.fullmatch(r"-?\d+", part):
            raise UserError(f"--gpu_ids {gpu_ids!r} is not a comma-separated list of integers",
                            "use e.g. --gpu_ids 0, --gpu_ids 0,1, or --gpu_ids -1 for the CPU")
        if int(part) >= 0:
            ids.append(int(part))
    return ids


def select_device(gpu_ids):
    """Choose the device once, from ``--gpu_ids``; returns ``(torch.device, [gpu ids used])``.

    ``-1`` (or an empty list) means CPU. Asking for a GPU on a machine without CUDA falls back to
    the CPU with a warning, so the course's ``--gpu_ids 0`` commands still run on a laptop.
    """
    import torch

    ids = parse_gpu_ids(gpu_ids)
    if not ids:
        return torch.device("cpu"), []
    if not torch.cuda.is_available():
        print(f"warning: --gpu_ids {gpu_ids} asked for CUDA, which is not available here; using the CPU",
              file=sys.stderr)
        return torch.device("cpu"), []
    count = torch.cuda.device_count()
    missing = [i for i in ids if i >= count]
    if missing:
        raise UserError(f"--gpu_ids {gpu_ids}: this machine has {count} GPU(s), numbered 0..{count - 1}",
                        "pass ids that exist (see nvidia-smi) or -1 for the CPU")
    torch.cuda.set_device(ids[0])
    return torch.device("cuda", ids[0]), ids


def set_seed(seed, deterministic=True):
    """Seed Python, NumPy and torch; with ``deterministic`` also ask cuDNN for repeatable kernels."""
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if deterministic:
        torch.backends.cudnn.benchmark = False
        torch.backends.cudnn.deterministic = True


def derived_seed(seed, *path):
    """A seed of its own for (seed, epoch, ...): a resumed run draws exactly what an uninterrupted one does."""
    import numpy as np

    return int(np.random.SeedSequence([seed, *path]).generate_state(1)[0])


def seed_worker(worker_id):
    """``DataLoader(worker_init_fn=seed_worker)``: each worker's NumPy/random seeds follow torch's."""
    import numpy as np
    import torch

    worker_seed = torch.initial_seed() % 2**32
    np.random.seed(worker_seed)
    random.seed(worker_seed)


# --- the two benchmark naming rules ---------------------------------------------------------------

@dataclass(frozen=True)
class ImageName:
    """What a benchmark file name says about its image."""

    filename: str
    label: str    # the identity as written in the name ("0002", "0000", "-1"): the folder name
    pid: int      # JUNK_PID (-1), DISTRACTOR_PID (0) or a person id >= 1
    camid: int    # camera number as written (1-based)
    frame: int
    sequence: int = 0  # Market-1501 only: the video sequence ``s`` of ``cCsS``

    @property
    def is_junk(self):
        return self.pid == JUNK_PID

    @property
    def is_distractor(self):
        return self.pid == DISTRACTOR_PID


class NameRuleError(UserError):
    """A file name that does not follow the dataset's naming rule."""


MARKET_RULE = "PPPP_cCsS_FFFFFF_BB.jpg (e.g. 0002_c1s1_000451_03.jpg; PPPP may be -1)"
DUKE_RULE = "PPPP_cC_fFFFFFFF.jpg (e.g. 0001_c2_f0046182.jpg)"
# pid: four digits, or -1 for junk; camera and sequence: one or more digits (custom sets have > 9).
_MARKET_RE = re.compile(r"(?P<label>-1|\d{4})_c(?P<cam>\d+)s(?P<seq>\d+)_(?P<frame>\d{6})_(?P<box>\d{2})\.jpg")
_DUKE_RE = re.compile(r"(?P<label>\d{4})_c(?P<cam>\d+)_f(?P<frame>\d{7})\.jpg")


def _match_name(filename, pattern, rule, dataset):
    base = os.path.basename(filename)
    match = pattern.fullmatch(base)
    if match is None:
        raise NameRuleError(f"{filename!r} does not follow the {dataset} naming rule {rule}",
                            "rename or remove the file, or check that this is the right dataset")
    if int(match["cam"]) < 1 or ("seq" in match.groupdict() and int(match["seq"]) < 1):
        raise NameRuleError(f"{filename!r}: camera and sequence numbers start at 1 in {dataset}",
                            "rename or remove the file")
    return match


def parse_market_name(filename):
    """Parse a Market-1501 name ``PPPP_cCsS_FFFFFF_BB.jpg`` into an ``ImageName``.

    ``-1`` is junk and ``0000`` a distractor; a path is accepted (only its base name is read).
    Raises ``NameRuleError`` naming the file when the name breaks the rule.
    """
    match = _match_name(filename, _MARKET_RE, MARKET_RULE, "Market-1501")
    return ImageName(filename=os.path.basename(filename), label=match["label"], pid=int(match["label"]),
                     camid=int(match["cam"]), frame=int(match["frame"]), sequence=int(match["seq"]))


def parse_duke_name(filename):
    """Parse a DukeMTMC-reID name ``PPPP_cC_fFFFFFFF.jpg`` into an ``ImageName``.

    Raises ``NameRuleError`` naming the file when the name breaks the rule.
    """
    match = _match_name(filename, _DUKE_RE, DUKE_RULE, "DukeMTMC-reID")
    return ImageName(filename=os.path.basename(filename), label=match["label"], pid=int(match["label"]),
                     camid=int(match["cam"]), frame=int(match["frame"]))


NAME_PARSERS = {"market": parse_market_name, "duke": parse_duke_name}


def parse_image_name(filename):
    """Parse a name under whichever benchmark rule it follows (for stages that read both)."""
    for parser in NAME_PARSERS.values():
        try:
            return parser(filename)
        except NameRuleError:
            continue
    raise NameRuleError(f"{filename!r} follows neither the Market-1501 rule {MARKET_RULE} "
                        f"nor the DukeMTMC-reID rule {DUKE_RULE}",
                        "rename or remove the file")


def read_json(path):
    """A JSON file's content, or None when it is missing or broken (callers then rebuild it)."""
    import json

    try:
        with open(path) as handle:
            return json.load(handle)
    except (OSError, ValueError):
        return None


def is_image_file(filename):
    """True for the image types the datasets use; other files (e.g. Thumbs.db) are ignored."""
    return filename.lower().endswith(IMAGE_SUFFIXES)


def list_images(folder):
    """Sorted base names of the image files directly in ``folder``."""
    return sorted(name for name in os.listdir(folder) if is_image_file(name))


# --- run folders: atomic files, options, checkpoint names -----------------------------------------

RUNS_ROOT = "model"   # every run lives in model/NAME/, relative to the current directory
TRAIN_OPTS = "opts.yaml"
# keys every opts.yaml that train.py writes has held: how --overwrite recognises a run folder it may delete
TRAIN_OPTS_KEYS = ("name", "backbone", "nclasses", "total_epoch", "lr", "batchsize")


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


def atomic_write(path, write):
    """Call ``write(temporary_path)``, then rename it onto ``path``: a crash never leaves half a file."""
    temporary = f"{path}.tmp-{os.getpid()}"
    try:
        write(temporary)
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)


def save_weights(path, module):
    """A module's state_dict as CPU tensors, written atomically (loads with ``weights_only=True``)."""
    import torch

    weights = {key: value.detach().cpu() for key, value in module.state_dict().items()}
    atomic_write(path, lambda temporary: torch.save(weights, temporary))
    return weights


def save_yaml(path, data):
    import yaml

    def write(temporary):
        with open(temporary, "w") as handle:
            yaml.safe_dump(data, handle, sort_keys=True, default_flow_style=False)
    atomic_write(path, write)


def load_yaml(path, made_by):
    """Read a YAML mapping with ``safe_load``; a missing or broken file names the command that makes it."""
    import yaml

    if not os.path.isfile(path):
        raise UserError(f"{path} does not exist", f"it is written by {made_by}")
    try:
        with open(path) as handle:
            data = yaml.safe_load(handle)
    except yaml.YAMLError as err:
        raise UserError(f"{path} is not valid YAML ({err.__class__.__name__})", f"re-create it with {made_by}") from None
    if not isinstance(data, dict):
        raise UserError(f"{path} does not hold a mapping of options", f"re-create it with {made_by}")
    return data


def explicit_options(parser, argv):
    """The options the user actually typed (not defaults), as a dict: they win over a saved opts.yaml."""

    defaults = {action.dest: action.default for action in parser._actions}
    try:
        for action in parser._actions:
            action.default = argparse.SUPPRESS
        return vars(parser.parse_args(argv))
    finally:
        for action in parser._actions:
            action.default = defaults[action.dest]


def checkpoint_name(epoch):
    """``net_last.pth``, ``net_average.pth`` or ``net_060.pth``: the one naming rule of train.py and test.py."""
    if str(epoch) in ("last", "average"):
        return f"net_{epoch}.pth"
    return f"net_{int(epoch):03d}.pth"


def check_images(paths):
    """Decode every picture once before the slow work; the first unreadable one is named."""
    from PIL import Image

    for path in paths:
        try:
            with Image.open(path) as image:
                image.load()
        except (OSError, SyntaxError, ValueError) as err:
            raise UserError(f"cannot read image {path} ({err})",
                            "remove or replace the file, then run prepare.py again with --force") from None


# --- pictures in, tensors out: shared by train.py and test.py -------------------------------------

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def image_transforms(size, train=False, color_jitter=False, erasing_p=0.0):
    """Test: Resize (bicubic) -> ToTensor -> Normalize. Training (layumi's recipe) adds Pad 10 ->
    RandomCrop -> HorizontalFlip [-> ColorJitter] before, and [RandomErasing] after."""
    from torchvision import transforms

    from random_erasing import RandomErasing

    steps = [transforms.Resize(tuple(size), interpolation=transforms.InterpolationMode.BICUBIC)]
    if train:
        steps += [transforms.Pad(10), transforms.RandomCrop(tuple(size)), transforms.RandomHorizontalFlip()]
        if color_jitter:
            steps.append(transforms.ColorJitter(brightness=0.1, contrast=0.1, saturation=0.1, hue=0))
    steps += [transforms.ToTensor(), transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD)]
    if train and erasing_p > 0:
        steps.append(RandomErasing(probability=erasing_p, mean=[0.0, 0.0, 0.0]))
    return transforms.Compose(steps)


def rng_states():
    """Python, NumPy and torch generator states as tensors and plain values (loadable with weights_only)."""
    import numpy as np
    import torch

    numpy_state = np.random.get_state()
    return {"torch": torch.get_rng_state(), "numpy": torch.from_numpy(numpy_state[1].astype(np.int64)),
            "numpy_pos": int(numpy_state[2]), "python": list(random.getstate()[1])}


def write_csv(path, rows):
    """A list of same-keyed dicts as CSV, atomically."""
    import csv

    def write(temporary):
        with open(temporary, "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    atomic_write(path, write)


def plot_training_curves(path, history):
    """train.jpg: loss and top-1 error per epoch, train and val (headless)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (loss_axis, error_axis) = plt.subplots(1, 2, figsize=(10, 4))
    epochs = [row["epoch"] for row in history]
    for phase, style in (("train", "o-"), ("val", "s-")):
        loss_axis.plot(epochs, [row[f"{phase}_loss"] for row in history], style, label=phase)
        error_axis.plot(epochs, [1 - row[f"{phase}_acc"] for row in history], style, label=phase)
    loss_axis.set_yscale("log")   # an early spike in val loss would otherwise flatten the rest
    for axis, title in ((loss_axis, "loss (log scale)"), (error_axis, "top-1 error")):
        axis.set_title(title)
        axis.set_xlabel("epoch")
        axis.legend()
    figure.tight_layout()
    atomic_write(path, lambda temporary: figure.savefig(temporary, format="jpg"))
    plt.close(figure)


# --- pytorch_result.mat: the one writer/reader pair -------------------------------------------------

FEATURE_KEYS = ("gallery_f", "gallery_label", "gallery_cam", "query_f", "query_label", "query_cam")
MULTI_KEYS = ("mquery_f", "mquery_label", "mquery_cam")
PROVENANCE_KEYS = ("model_name", "which_epoch", "opts", "created", "run_id", "format_version")
FEATURES_FORMAT = 1


def save_features(path, arrays, provenance):
    """Write features the way layumi's scripts read them (float32 [N, D]; int64 [1, N] labels and
    cameras) plus provenance (model, epoch, opts, time, run id, format version), atomically."""
    import numpy as np
    import scipy.io

    data = {}
    for key, value in arrays.items():
        if key.endswith("_f"):
            data[key] = np.asarray(value, dtype=np.float32)
        else:
            data[key] = np.asarray(value, dtype=np.int64).reshape(1, -1)
    data.update({key: provenance[key] for key in PROVENANCE_KEYS if key in provenance})
    atomic_write(path, lambda temporary: scipy.io.savemat(temporary, data))


def _as_text(value):
    import numpy as np

    value = np.asarray(value).ravel()
    return str(value[0]) if value.size else ""


def load_features(path, multi=False, like=None):
    """Read and check a features file; every problem is one line naming the command that writes it.

    Checks: the keys, 2-D features with as many rows as labels and cameras, equal widths, finite
    values, L2-normalised rows; with ``like`` (the main result), that both files come from one run.
    """
    import numpy as np
    import scipy.io

    maker = "test.py --multi" if multi else "test.py --name NAME --test_dir ROOT/pytorch"
    if not os.path.isfile(path):
        raise UserError(f"{path} does not exist", f"write it with python {maker}")
    try:
        raw = scipy.io.loadmat(path)
    except (ValueError, OSError, TypeError, NotImplementedError, IndexError) as err:   # scipy's errors on junk
        raise UserError(f"{path} is not a readable .mat file ({err.__class__.__name__})", f"write it again with python {maker}") from None
    keys = MULTI_KEYS if multi else FEATURE_KEYS
    missing = [key for key in keys if key not in raw]
    if missing:
        raise UserError(f"{path} lacks {', '.join(missing)}", f"write it with python {maker}")
    result = {key: _as_text(raw[key]) for key in PROVENANCE_KEYS if key in raw}
    for prefix in (("mquery",) if multi else ("query", "gallery")):
        features = np.asarray(raw[f"{prefix}_f"], dtype=np.float32)
        labels, cams = (np.asarray(raw[f"{prefix}_{k}"]).ravel().astype(np.int64) for k in ("label", "cam"))
        if features.ndim != 2 or not len(features) == len(labels) == len(cams):
            raise UserError(f"{path}: {prefix}_f is {features.shape} but there are {len(labels)} labels and "
                            f"{len(cams)} cameras", f"write it again with python {maker}")
        norms = np.linalg.norm(features, axis=1)
        if not np.isfinite(features).all() or (len(norms) and np.abs(norms - 1).max() > 1e-3):
            raise UserError(f"{path}: {prefix}_f has rows that are not L2-normalised (or not finite)",
                            f"write it again with python {maker}")
        result.update({f"{prefix}_f": features, f"{prefix}_label": labels, f"{prefix}_cam": cams})
    widths = {result[f"{p}_f"].shape[1] for p in ("mquery", "query", "gallery") if f"{p}_f" in result}
    widths |= {like["query_f"].shape[1]} if like else set()
    if len(widths) > 1:
        raise UserError(f"{path}: features of different lengths {sorted(widths)}", f"write it again with python {maker}")
    if like and result.get("run_id") != like.get("run_id"):
        raise UserError(f"{path} comes from another test.py run ({provenance_line(result)}) than the main result "
                        f"({provenance_line(like)})", "write both files again with one run of python test.py --multi")
    return result


def provenance_line(result):
    """Where the features came from, so a stale file is visible."""
    if not result.get("model_name"):
        return "no provenance recorded (written by another tool)"
    return f"model {result['model_name']}, epoch {result.get('which_epoch', '?')}, made {result.get('created', '?')}"


def image_folder(folder, transform=None):
    """torchvision's ImageFolder (sorted identity folders, sorted files) with one-line errors."""
    from torchvision.datasets import ImageFolder

    if not os.path.isdir(folder):
        raise UserError(f"{folder} does not exist", "pass the pytorch/ folder written by prepare.py")
    try:
        return ImageFolder(folder, transform)
    except FileNotFoundError as err:   # an empty identity folder, or no picture at all
        raise UserError(f"{folder}: {err}", "rebuild it with prepare.py --force") from None
