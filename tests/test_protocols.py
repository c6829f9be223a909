"""evaluate_gpu.py --protocols: each row against an independent computation -- the per-query
references in benchmarks/reference.py, the dense re-ranking, and scikit-learn's AP without junk."""
import os
import sys

import numpy as np
import pytest
from sklearn.metrics import average_precision_score

import evaluate_gpu
from reid import protocols
from test_evaluate import write_result
from test_intervals import problem
from conftest import ROOT, run_cli

sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
import reference  # noqa: E402


def without_junk_rule(q_f, q_p, q_c, g_f, g_p, g_c):
    """Rank@1 and mAP (valid queries) with every picture of the query's person correct, pid -1 dropped."""
    kept = g_p != -1
    scores = q_f @ g_f[kept].T
    rank1, aps = [], []
    for row, pid in enumerate(q_p):
        relevant = g_p[kept] == pid
        if relevant.any():
            rank1.append(relevant[np.argmax(scores[row])])
            aps.append(average_precision_score(relevant, scores[row]))
    return np.mean(rank1), np.mean(aps)


def result_of(q_f, q_p, q_c, g_f, g_p, g_c):
    return dict(query_f=q_f, query_label=q_p, query_cam=q_c, gallery_f=g_f, gallery_label=g_p, gallery_cam=g_c)


def test_each_row_equals_an_independent_computation():
    data = problem(5, n_query=40, n_gallery=150)
    data[4][:4] = -1   # junk detections in the gallery
    rows = {(p.ap, p.denominator, p.same_camera_junk, p.rerank): (r1, mAP)
            for p, r1, mAP in protocols.protocol_table(data[0], result_of(*data))}
    valid_share = np.mean([((data[4] == pid) & (data[5] != cam)).any() for pid, cam in zip(data[1], data[2])])
    cmc, layumi_map = reference.layumi_style(*data)
    torchreid_cmc, torchreid_map, _ = reference.torchreid_style(*data)
    assert rows["trapezoid", "all", True, None] == pytest.approx((cmc[0], layumi_map))
    assert rows["trapezoid", "valid", True, None] == pytest.approx((cmc[0] / valid_share, layumi_map / valid_share))
    assert rows["standard", "valid", True, None] == pytest.approx((torchreid_cmc[0], torchreid_map))
    assert rows["standard", "all", True, None] == pytest.approx((torchreid_cmc[0] * valid_share,
                                                                 torchreid_map * valid_share))
    assert rows["standard", "valid", False, None] == pytest.approx(without_junk_rule(*data))
    for k1, k2, lam in ((20, 6, 0.3), (50, 15, 0.3)):
        scores = -reference.dense_re_ranking(data[0], data[3], k1, k2, lam)
        cmc, mAP, _ = reference.torchreid_style(*data, scores=scores)
        assert rows["standard", "valid", True, ("kreciprocal", k1, k2, lam)] == pytest.approx((cmc[0], mAP), abs=1e-6)
    cmc, mAP = reference.layumi_style(*data, scores=-reference.dense_re_ranking(data[0], data[3], 20, 6, 0.3))
    assert rows["trapezoid", "all", True, ("kreciprocal", 20, 6, 0.3)] == pytest.approx((cmc[0], mAP), abs=1e-6)
    cmc, mAP = reference.layumi_style(*data, scores=reference.dense_gnn_reranking(data[0], data[3], 26, 7, 0.3))
    assert rows["trapezoid", "all", True, ("gnn", 26, 7, 0.3)] == pytest.approx((cmc[0], mAP), abs=1e-6)


def test_the_junk_rule_makes_same_camera_matches_count():
    # one query, person 1 camera 1; the gallery holds it only from camera 1 (and someone else)
    query = np.array([[1.0, 0.0]], np.float32)
    gallery = np.array([[1.0, 0.0], [0.0, 1.0]], np.float32)
    data = result_of(query, np.array([1]), np.array([1]), gallery, np.array([1, 2]), np.array([1, 2]))
    rows = {(p.denominator, p.same_camera_junk, p.rerank): (r1, mAP)
            for p, r1, mAP in protocols.protocol_table(query, data) if p.ap == "standard"}
    assert rows["all", True, None] == (0.0, 0.0)          # the protocol: no correct match, scores 0
    assert rows["valid", False, None] == (1.0, 1.0)       # without it: found at rank 1
    assert np.isnan(rows["valid", True, ("kreciprocal", 20, 6, 0.3)][0])  # k1 20 does not fit a 2-picture gallery


def test_protocols_command_prints_the_table(tmp_path, capsys):
    write_result(tmp_path / "a.mat")
    code, out, _ = run_cli(evaluate_gpu.main, ["--mat", tmp_path / "a.mat", "--gpu_ids", "-1", "--protocols"], capsys)
    lines = out.splitlines()
    start = lines.index("the same features under each convention (Rank@1 and mAP in %):")
    table = lines[start + 2:start + 2 + len(protocols.PROTOCOLS)]
    assert code == 0 and table[0].startswith("trapezoid all      junk         none   ")
    assert "this project's default" in table[0] and "TransReID" in table[-2] and "--rerank gnn" in table[-1]
    assert lines[start + 2 + len(protocols.PROTOCOLS)].startswith("rows differ by convention, not by model")
