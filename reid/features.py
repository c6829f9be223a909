"""pytorch_result.mat, the hand-off from test.py to evaluate_gpu.py and demo.py: the one writer/reader pair."""
import os

from reid.files import atomic_write
from utils import UserError


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


def multi_query_path(output):
    """Where test.py --multi writes the multi-query features for ``--output``: layumi's multi_query.mat
    beside the default pytorch_result.mat, else ``<stem>_multi_query.mat`` beside OUTPUT."""
    folder, name = os.path.split(output)
    if name == "pytorch_result.mat":
        return os.path.join(folder, "multi_query.mat")
    return os.path.join(folder, f"{os.path.splitext(name)[0]}_multi_query.mat")


def _as_text(value):
    import numpy as np

    value = np.asarray(value).ravel()
    return str(value[0]) if value.size else ""


def _numbers(raw, key, dtype, path, maker):
    """``raw[key]`` as a ``dtype`` array; text or other non-numbers are one line."""
    import numpy as np

    value = np.asarray(raw[key])
    if value.dtype.kind not in "biuf" or (np.dtype(dtype).kind in "iu" and value.dtype.kind == "f"
                                           and not np.all(np.mod(value, 1) == 0)):
        raise UserError(f"{path}: {key} holds {value.dtype.name} values, not {np.dtype(dtype).name} numbers",
                        f"write it again with python {maker}")
    return value.astype(dtype)


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
    except (ValueError, OSError, TypeError, NotImplementedError, IndexError,
            scipy.io.matlab.MatReadError) as err:   # scipy's errors on junk and on a cut-short file
        raise UserError(f"{path} is not a readable .mat file ({err.__class__.__name__})", f"write it again with python {maker}") from None
    keys = MULTI_KEYS if multi else FEATURE_KEYS
    missing = [key for key in keys if key not in raw]
    if missing:
        raise UserError(f"{path} lacks {', '.join(missing)}", f"write it with python {maker}")
    result = {key: _as_text(raw[key]) for key in PROVENANCE_KEYS if key in raw}
    for prefix in (("mquery",) if multi else ("query", "gallery")):
        features = _numbers(raw, f"{prefix}_f", np.float32, path, maker)
        labels, cams = (_numbers(raw, f"{prefix}_{k}", np.int64, path, maker).ravel() for k in ("label", "cam"))
        if not len(labels):
            raise UserError(f"{path}: the {prefix} set is empty", f"check TEST_DIR/{prefix.replace('mquery', 'multi-query')}"
                            f" holds pictures, then write it again with python {maker}")
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
