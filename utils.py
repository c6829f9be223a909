"""Command-line plumbing that every stage needs, and nothing else (shared code lives in reid/).

  * ``UserError`` and ``cli_main`` -- a problem the user can fix becomes one line
    ``error: <what is wrong> — <how to fix it>`` on stderr and exit status 2, without a traceback;
    real bugs keep their traceback.
  * ``ArgumentParser`` -- argparse whose own errors are that same single line; ``explicit_options``:
    the flags the user typed (they win over a saved opts.yaml).
  * ``select_device`` -- ``--gpu_ids`` to a ``torch.device`` (``-1`` or no CUDA -> CPU).
  * ``set_seed`` / ``derived_seed`` / ``seed_worker`` -- one call seeds Python, NumPy and torch.

torch is imported inside the functions that need it, so that ``prepare.py`` and ``toy_data.py``
start quickly.
"""
import argparse
import errno
import functools
import os
import random
import re
import sys


class UserError(Exception):
    """A mistake the user can fix (wrong path, bad flag, malformed file).

    ``what`` says what is wrong and ``fix`` how to fix it; ``cli_main`` prints both on one line.
    """

    def __init__(self, what, fix):
        super().__init__(f"{what} — {fix}")
        self.what = what
        self.fix = fix


# the operating system refused a file (permissions, a read-only disk): the user's environment, not a bug
REFUSED = (errno.EACCES, errno.EPERM, errno.EROFS)


def cli_main(main=None, interrupted="run the same command again to continue"):
    """Decorate a stage's ``main(argv=None)``: a ``UserError`` becomes one ``error:`` line and exit 2.

    Tests call the decorated ``main([...])`` in-process and see exactly what a terminal user sees
    (a ``SystemExit`` with code 2 and the line on stderr). A file the operating system refuses
    (permissions, a read-only disk) is one line too; any other exception is a bug and keeps its traceback. ``interrupted`` is what Ctrl-C's line tells to do next (``@cli_main(interrupted=...)``
    where the same command would not continue, as train.py's needs --resume).
    """
    if main is None:
        return functools.partial(cli_main, interrupted=interrupted)

    @functools.wraps(main)
    def wrapper(argv=None):
        try:
            return main(argv)
        except UserError as err:
            print(f"error: {shorten(err.what)} — {shorten(err.fix)}", file=sys.stderr)
            raise SystemExit(2) from None
        except KeyboardInterrupt:
            print(f"error: interrupted — {interrupted}", file=sys.stderr)
            raise SystemExit(130) from None
        except BrokenPipeError:   # the output was piped into a reader that stopped early (| head)
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            raise SystemExit(0) from None
        except OSError as err:
            if err.errno not in REFUSED or not err.filename:
                raise
            print(f"error: {err.filename}: {err.strerror} — check that you may read and write there (permissions, "
                  f"a disk mounted read-only), or choose another path", file=sys.stderr)
            raise SystemExit(2) from None

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


def seed_worker(worker_id, rank=0):
    """``DataLoader(worker_init_fn=seed_worker)``: each worker's NumPy/random seeds follow torch's. ``rank``
    (``functools.partial(seed_worker, rank=R)``): a process of a distributed run other than rank 0 reseeds
    torch first, since every rank's loader draws its workers' seeds from the generator they all share."""
    import numpy as np
    import torch

    if rank:
        torch.manual_seed(derived_seed(torch.initial_seed(), rank))
    worker_seed = torch.initial_seed() % 2**32
    np.random.seed(worker_seed)
    random.seed(worker_seed)


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


KIND_WORDS = {bool: "true or false", int: "a whole number", float: "a number", str: "text"}


def has_kind(value, kind):
    """Whether ``value`` (read from YAML) is what argparse would have made of a flag of ``kind``."""
    if kind is bool:
        return isinstance(value, bool)
    if kind in (int, float):
        return isinstance(value, (int, float) if kind is float else int) and not isinstance(value, bool)
    return isinstance(value, str)


def wrong_kinds(saved, expected):
    """``saved`` values that do not have the kind (and choices) in ``expected``: {key: (kind, choices)};
    one readable clause per problem, e.g. "total_epoch is '3' (text), not a whole number"."""
    problems = []
    for key, (kind, choices) in expected.items():
        if key not in saved or saved[key] is None:
            continue
        value = saved[key]
        if not has_kind(value, kind):
            problems.append(f"{key} is {value!r} ({type(value).__name__}), not {KIND_WORDS[kind]}")
        elif choices and value not in choices:
            problems.append(f"{key} is {value!r}, not one of {', '.join(map(str, choices))}")
    return problems


def parser_kinds(parser):
    """{dest: (kind, choices)} of a parser's single-valued options: the kinds a saved opts.yaml must keep."""
    kinds = {}
    for action in parser._actions:
        if action.dest == "help" or action.nargs not in (None, "?", 0):
            continue
        if isinstance(action, (argparse._StoreTrueAction, argparse._StoreFalseAction)):
            kinds[action.dest] = (bool, None)
        else:
            kinds[action.dest] = (action.type if action.type in (int, float) else str, action.choices)
    return kinds
