"""pytorch_result.mat, the hand-off from test.py to evaluate_gpu.py and demo.py: the one writer/reader pair."""
import os

from reid.files import atomic_write
from utils import UserError


FEATURE_KEYS = ("gallery_f", "gallery_label", "gallery_cam", "query_f", "query_label", "query_cam")
MULTI_KEYS = ("mquery_f", "mquery_label", "mquery_cam")
PROVENANCE_KEYS = ("model_name", "which_epoch", "opts", "created", "run_id", "format_version", "camera_rule",
                   "extracted_with")
FEATURES_FORMAT = 1


def save_features(path, arrays, provenance):
    """Write features the way layumi's scripts read them (float32 [N, D]; int64 [1, N] labels and
    cameras) plus provenance (model, epoch, opts, time, run id, format version), atomically.

    scipy writes the small arrays; each feature matrix is then appended by ``append_matrix``, a block of
    columns at a time, so writing never needs a second copy of the features in memory (test.py extracts
    into a column-major file on disk: see ``feature_store``). The file is one .mat that scipy.io.loadmat
    and MATLAB read as if savemat had written it all.
    """
    import numpy as np
    import scipy.io

    small = {key: np.asarray(value, dtype=np.int64).reshape(1, -1) for key, value in arrays.items()
             if not key.endswith("_f")}
    small.update({key: provenance[key] for key in PROVENANCE_KEYS if key in provenance})

    def write(temporary):
        scipy.io.savemat(temporary, small)
        with open(temporary, "ab") as handle:
            for key, value in arrays.items():
                if key.endswith("_f"):
                    append_matrix(handle, key, value)

    atomic_write(path, write)


MAT_ELEMENT_LIMIT = 2**31 - 1   # bytes one element of a version-5 .mat file can hold (its size is an int32)
(MI_INT8, MI_INT32, MI_UINT32, MI_SINGLE, MI_MATRIX), MX_SINGLE_CLASS = (1, 5, 6, 7, 14), 7
COLUMNS_AT_ONCE = 64


def append_matrix(handle, name, matrix):
    """Append a float32 matrix (N x D: any array, a memory map too) to an open version-5 .mat file as the
    variable ``name``: MATLAB's layout of a real single matrix (flags, dimensions, name, column-major data),
    written COLUMNS_AT_ONCE columns at a time."""
    import struct

    import numpy as np

    rows, cols = matrix.shape
    label = name.encode("ascii")
    data_bytes = rows * cols * 4
    pad = lambda size: b"\0" * (-size % 8)   # noqa: E731  (every element starts on an 8-byte boundary)
    size = 16 + 16 + 8 + len(label) + len(pad(len(label))) + 8 + data_bytes + len(pad(data_bytes))
    check_matrix_size(name, rows, cols)
    handle.write(struct.pack("<II", MI_MATRIX, size) + struct.pack("<IIII", MI_UINT32, 8, MX_SINGLE_CLASS, 0)
                 + struct.pack("<IIii", MI_INT32, 8, rows, cols) + struct.pack("<II", MI_INT8, len(label))
                 + label + pad(len(label)) + struct.pack("<II", MI_SINGLE, data_bytes))
    for start in range(0, cols, COLUMNS_AT_ONCE):
        handle.write(np.asarray(matrix[:, start:start + COLUMNS_AT_ONCE], dtype="<f4").tobytes(order="F"))
    handle.write(pad(data_bytes))


def check_matrix_size(name, rows, cols):
    """One matrix of a version-5 .mat file holds at most 2 GiB (with room for its header)."""
    if rows * cols * 4 + 256 > MAT_ELEMENT_LIMIT:
        raise UserError(f"{name} ({rows} x {cols} float32, {rows * cols * 4 / 2**30:.1f} GiB) are larger than the "
                        "2 GiB one matrix of a .mat file can hold", "extract a smaller gallery per run (split its "
                        "folders), or train with a smaller --linear_num")


def feature_store(folder):
    """``allocate(rows, dim)`` for ``extraction.extract_features``: a column-major float32 file in
    ``folder`` per split, mapped into memory, so the features of a gallery of any size are paged to disk
    as they are extracted and ``append_matrix`` reads them back one block of columns at a time."""
    import numpy as np
    import torch

    def allocate(rows, dim):   # the format's limit, checked after the first batch rather than at the end
        check_matrix_size("the features", rows, dim)
        path = os.path.join(folder, f"features-{len(os.listdir(folder))}.npy")
        mapped = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(rows, dim), fortran_order=True)
        return torch.from_numpy(mapped)

    return allocate


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


def load_features(path, multi=False, like=None, pair_flag="--multi"):
    """Read and check a features file; every problem is one line naming the command that writes it.

    Checks: the keys, 2-D features with as many rows as labels and cameras, equal widths, finite
    values, L2-normalised rows; with ``like`` (the main result), that both files come from one run (of
    test.py ``pair_flag``, which wrote both).
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
                        f"({provenance_line(like)})", f"write both files again with one run of python test.py {pair_flag}")
    return result


def camera_rule_line(result):
    """The line that says how correct matches were decided when the dataset records no cameras, or None."""
    rule = result.get("camera_rule", "")
    return f"cameras: {rule}" if rule.startswith("none") else None


def provenance_line(result):
    """Where the features came from, so a stale file is visible."""
    if not result.get("model_name"):
        return "no provenance recorded (written by another tool)"
    return f"model {result['model_name']}, epoch {result.get('which_epoch', '?')}, made {result.get('created', '?')}"
