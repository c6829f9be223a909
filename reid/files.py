"""Files written so that a crash never leaves half of one, and the small text formats (YAML, JSON, CSV)."""
import contextlib
import errno
import os
import tempfile

from utils import UserError, wrong_kinds


RUN_AGAIN = "then run the command again"


def atomic_write(path, write, again=RUN_AGAIN):
    """Call ``write(temporary_path)``, then rename it onto ``path``: a crash never leaves half a file.

    A failed write (a full disk, a folder that refuses writing) is one line saying that the previous
    ``path`` is untouched; ``again`` says how to go on once the cause is fixed.
    """
    temporary = f"{path}.tmp-{os.getpid()}"
    try:
        write(temporary)
        os.replace(temporary, path)
    except (OSError, RuntimeError) as err:   # torch.save reports a failed write as a RuntimeError
        if isinstance(err, RuntimeError) and not any(w in str(err) for w in ("inline_container", "write")):
            raise
        code = err.errno if isinstance(err, OSError) else errno.ENOSPC   # torch's failed write: most likely space
        kept = f"the previous {os.path.basename(path)} is intact" if os.path.isfile(path) else "nothing was written"
        cause = os.strerror(code) if code else "the write failed"
        if code in (errno.ENOSPC, errno.EDQUOT):
            raise UserError(f"could not write {path} ({cause}); {kept}",
                            f"free disk space on that disk (or ask for a larger quota), {again}") from None
        raise UserError(f"could not write {path} ({cause}); {kept}",
                        f"make sure its folder exists and you may write to it (permissions, a disk not mounted "
                        f"read-only), {again}") from None
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)


def output_file(path, flag, example):
    """Check an output file's path before any work: refuse a folder in its place or a file where one of
    its folders should be; create missing folders (saying so). ``example``: a file name to suggest."""
    if os.path.isdir(path):
        raise UserError(f"{flag} {path} is a folder", f"pass a file name, e.g. {flag} {os.path.join(path, example)}")
    output_folder(os.path.dirname(path), f"{flag} {path}")
    return path


def output_folder(folder, flag):
    """Make sure ``folder`` (for ``flag``) is a folder we may write in: create it when missing; refuse when a
    file is in the way or the folder refuses a file (permissions, a read-only disk), before any work."""
    if folder and not os.path.isdir(folder):
        blocker = folder
        while blocker and not os.path.exists(blocker):
            blocker = os.path.dirname(blocker)
        if blocker and not os.path.isdir(blocker):
            raise UserError(f"{flag}: {blocker} is a file, not a folder",
                            f"choose another {flag.split()[0]} or move {blocker}")
        try:
            os.makedirs(folder)
        except OSError as err:
            raise UserError(f"{flag}: could not create the folder {folder} ({err.strerror})",
                            f"choose another {flag.split()[0]} in a folder you may write to") from None
        print(f"created folder {folder}")
    refused = cannot_write(folder or ".")   # better now than after an hour of work
    if refused:
        raise UserError(f"{flag}: cannot write in {folder or '.'} ({refused})",
                        f"choose another {flag.split()[0]} in a folder you may write to (check its permissions, "
                        f"or that its disk is not mounted read-only)")
    return folder


def cannot_write(folder):
    """Why a file cannot be created in ``folder`` (permissions, a read-only disk), or None when it can."""
    try:
        with tempfile.TemporaryFile(dir=folder):
            return None
    except OSError as err:
        return err.strerror or str(err)


@contextlib.contextmanager
def exclusive_lock(path, what):
    """Hold the lock file ``path`` while the block runs, so that two runs cannot write ``what`` at once.

    The operating system drops the lock when the process dies (kill -9 included), so a crashed run
    never blocks the next one; the file itself is removed on the way out.
    """
    try:
        import fcntl
    except ImportError:   # not POSIX: no locking
        yield
        return
    handle = open(path, "a+")
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "?"
            raise UserError(f"another run (process {holder}) is writing {what} right now",
                            "wait for it to finish, then run this command again") from None
        if not os.path.exists(path) or os.stat(path).st_ino != os.fstat(handle.fileno()).st_ino:
            raise UserError(f"another run has just finished writing {what}", "run this command again")
        handle.truncate(0)
        handle.write(str(os.getpid()))
        handle.flush()
        try:
            yield
        finally:
            os.remove(path)
    finally:
        handle.close()


def save_yaml(path, data):
    import yaml

    def write(temporary):
        with open(temporary, "w") as handle:
            yaml.safe_dump(data, handle, sort_keys=True, default_flow_style=False)
    atomic_write(path, write)


def read_text(path, remedy):
    """A text file's content: UTF-8, with or without the byte-order mark spreadsheets write; any other encoding
    is one line that says where its first byte that is not UTF-8 sits (``remedy``: another way to mend it)."""
    with open(path, "rb") as handle:
        data = handle.read()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = data[:err.start].count(b"\n") + 1
        raise UserError(f"{path} is not UTF-8 text (line {line} holds the byte 0x{data[err.start]:02x})",
                        f"save it as UTF-8 (any text editor can), or {remedy}") from None


def load_yaml(path, made_by):
    """Read a YAML mapping with ``safe_load``; a missing or broken file names the command that makes it."""
    import yaml

    if not os.path.isfile(path):
        raise UserError(f"{path} does not exist", f"it is written by {made_by}")
    text = read_text(path, f"re-create it with {made_by}")
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise UserError(f"{path} is not valid YAML ({err.__class__.__name__})", f"re-create it with {made_by}") from None
    if not isinstance(data, dict):
        raise UserError(f"{path} does not hold a mapping of options", f"re-create it with {made_by}")
    return data


def check_saved_kinds(path, saved, expected):
    """One line naming every hand-edited value of a saved options file that has the wrong kind.

    ``expected`` is {key: (kind, choices)}, e.g. ``utils.parser_kinds(parser)``: the same types the flags have.
    """
    problems = wrong_kinds(saved, expected)
    if problems:
        raise UserError(f"{path}: {'; '.join(problems)}",
                        "correct it (numbers without quotes, true/false for switches), or train again")


def read_json(path):
    """A JSON file's content, or None when it is missing or broken (callers then rebuild it)."""
    import json

    try:
        with open(path) as handle:
            return json.load(handle)
    except (OSError, ValueError):
        return None


def write_csv(path, rows):
    """A list of same-keyed dicts as CSV, atomically."""
    import csv

    def write(temporary):
        with open(temporary, "w", newline="") as handle:
            columns = list(dict.fromkeys(key for row in rows for key in row))   # a resumed older run lacks some
            writer = csv.DictWriter(handle, fieldnames=columns, restval="")
            writer.writeheader()
            writer.writerows(rows)
    atomic_write(path, write)
