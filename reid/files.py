"""Files written so that a crash never leaves half of one, and the small text formats (YAML, JSON, CSV)."""
import os

from utils import UserError


def atomic_write(path, write):
    """Call ``write(temporary_path)``, then rename it onto ``path``: a crash never leaves half a file."""
    temporary = f"{path}.tmp-{os.getpid()}"
    try:
        write(temporary)
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)


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
            writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    atomic_write(path, write)
