"""GNN re-ranking (reid/gnn_reranking.py): the sparse, blocked computation equals the paper's dense one, and
evaluate_gpu.py / demo.py take --rerank gnn beside the k-reciprocal default of a bare --rerank."""
import numpy as np
import pytest

import evaluate_gpu
from conftest import one_error_line, run_cli
from reid import gnn_reranking
from test_evaluate import clustered, write_result
from test_protocols import reference


@pytest.mark.parametrize("seed, n_query, n_gallery, k1, k2", [(0, 30, 200, 26, 7), (1, 20, 150, 10, 3), (2, 25, 120, 6, 1)])
def test_gnn_reranking_equals_the_dense_implementation(seed, n_query, n_gallery, k1, k2, monkeypatch):
    monkeypatch.setattr(gnn_reranking, "BLOCK_ELEMENTS", 3000)   # force many blocks of neighbours and scores
    q, g = clustered(seed, n_query, n_gallery, 8)
    ours = gnn_reranking.gnn_reranking(q, g, k1, k2, 0.3)
    dense = reference.dense_gnn_reranking(q, g, k1, k2, 0.3)
    assert ours.shape == (n_query, n_gallery) and np.abs(ours - dense).max() < 1e-5


def test_evaluate_takes_rerank_gnn_and_a_bare_rerank_stays_k_reciprocal(tmp_path, capsys):
    write_result(tmp_path / "r.mat")
    runs = {}
    for flags in (["--rerank"], ["--rerank", "kreciprocal"], ["--rerank", "gnn"], ["--rerank", "gnn", "--k1", "12"]):
        code, out, err = run_cli(evaluate_gpu.main, ["--mat", tmp_path / "r.mat", "--gpu_ids", "-1", *flags], capsys)
        assert code == 0, err
        runs[" ".join(flags)] = out.splitlines()[1]
    assert runs["--rerank"] == runs["--rerank kreciprocal"] != runs["--rerank gnn"] != runs["--rerank gnn --k1 12"]
    code, _, err = run_cli(evaluate_gpu.main, ["--mat", tmp_path / "r.mat", "--gpu_ids", "-1", "--rerank", "gnn",
                                               "--k1", "5", "--k2", "9"], capsys)
    assert code == 2 and "--k1 5 and --k2 9" in one_error_line(err)
