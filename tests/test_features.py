"""pytorch_result.mat written a block of columns at a time: scipy reads what savemat would have written,
for any shape and memory layout, from a file on disk too; a matrix too large for the format is one line."""
import os

import numpy as np
import pytest
import scipy.io
import torch

from reid import features
from utils import UserError


@pytest.mark.parametrize("rows, cols, order", [(5, 3, "C"), (7, 130, "F"), (1, 1, "C"), (3, 64, "F")])
def test_appended_matrices_read_back_as_savemat_writes_them(tmp_path, rows, cols, order):
    generator = np.random.default_rng(rows * cols)
    matrix = np.asarray(generator.standard_normal((rows, cols)), dtype=np.float32, order=order)
    labels = generator.integers(-1, 1500, rows)
    features.save_features(str(tmp_path / "ours.mat"), {"gallery_f": matrix, "gallery_label": labels},
                           {"model_name": "m"})
    scipy.io.savemat(tmp_path / "theirs.mat", {"gallery_f": matrix, "gallery_label": labels.reshape(1, -1)})
    ours, theirs = scipy.io.loadmat(tmp_path / "ours.mat"), scipy.io.loadmat(tmp_path / "theirs.mat")
    for key in ("gallery_f", "gallery_label"):
        assert ours[key].dtype == theirs[key].dtype and np.array_equal(ours[key], theirs[key]), key
    assert str(ours["model_name"][0]) == "m"


def test_features_extracted_to_disk_are_written_from_there(tmp_path):
    allocate = features.feature_store(str(tmp_path))
    stored = allocate(300, 70)
    stored[:] = torch.arange(300 * 70, dtype=torch.float32).reshape(300, 70)
    assert os.listdir(tmp_path) == ["features-0.npy"] and stored.numpy().flags.f_contiguous
    features.save_features(str(tmp_path / "out.mat"), {"query_f": stored.numpy()}, {})
    assert np.array_equal(scipy.io.loadmat(tmp_path / "out.mat")["query_f"], stored.numpy())


def test_a_matrix_beyond_the_formats_two_gigabytes_is_refused_before_writing(tmp_path):
    huge = np.broadcast_to(np.float32(0), (2**20, 2**10))   # 4 GiB that take no memory
    with pytest.raises(UserError, match=r"larger than the 2 GiB one matrix of a \.mat file can hold"):
        features.save_features(str(tmp_path / "huge.mat"), {"gallery_f": huge}, {})
    assert os.listdir(tmp_path) == []
