"""evaluate_gpu.py: the metrics on rankings worked out by hand, against the per-query references,
re-ranking against the dense implementation, and the .mat reader's checks."""
import os
import re
import sys

import numpy as np
import pytest
import scipy.io

import evaluate_gpu
from reid import features, metrics, re_ranking
from reid.metrics import evaluate, multi_query_features
from conftest import ROOT, run_cli

sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
import reference  # noqa: E402


def one_hot_scores(scores):
    """Features whose cosine similarity to the query e0 is exactly ``scores`` (rows stay unit length)."""
    scores = np.asarray(scores, dtype=np.float64)
    g = np.zeros((len(scores), len(scores) + 1))
    g[:, 0] = scores
    g[np.arange(len(scores)), np.arange(1, len(scores) + 1)] = np.sqrt(1 - scores ** 2)
    q = np.zeros((1, len(scores) + 1))
    q[0, 0] = 1
    return q.astype(np.float32), g.astype(np.float32)


# query: person 1, camera 1. Gallery rows: (pid, camera, score)
WORKED = [(1, 1, 0.9),    # same person, same camera: junk
          (2, 2, 0.8),    # wrong
          (1, 2, 0.7),    # correct
          (-1, 3, 0.6),   # junk detection
          (0, 2, 0.5),    # distractor: an ordinary wrong match
          (1, 3, 0.4)]    # correct
# kept ranking: wrong, correct, wrong, correct -> correct matches at 0-based ranks 1 and 3


def worked_inputs(extra_queries=()):
    q, g = one_hot_scores([s for _, _, s in WORKED])
    pids, cams = np.array([p for p, _, _ in WORKED]), np.array([c for _, c, _ in WORKED])
    q_feats, q_pids, q_cams = q, [1], [1]
    for pid, cam in extra_queries:
        q_feats, q_pids, q_cams = np.vstack([q_feats, q]), q_pids + [pid], q_cams + [cam]
    return q_feats, np.array(q_pids), np.array(q_cams), g, pids, cams


def test_worked_example_both_conventions():
    trapezoid = evaluate(*worked_inputs())
    assert trapezoid.first_correct.tolist() == [1]
    assert trapezoid.rank(1) == 0 and trapezoid.rank(2) == 1 and trapezoid.rank(5) == 1
    # hits at ranks 1 and 3: ((0/1 + 1/2)/2 + (1/3 + 2/4)/2) / 2
    assert trapezoid.mAP == pytest.approx(((0 + 0.5) / 2 + (1 / 3 + 0.5) / 2) / 2, abs=1e-12)
    standard = evaluate(*worked_inputs(), ap="standard")
    assert standard.mAP == pytest.approx((1 / 2 + 2 / 4) / 2, abs=1e-12)
    assert standard.mINP == pytest.approx(2 / 4)   # two correct matches, the last at position 4


def test_query_without_a_correct_match_changes_only_the_denominator():
    # a second query of person 1 seen by camera 1... and one of person 9, who is absent from the gallery
    metrics = evaluate(*worked_inputs(extra_queries=[(9, 1)]))
    assert metrics.num_queries == 2 and metrics.num_valid == 1
    assert metrics.valid.tolist() == [True, False] and metrics.first_correct.tolist() == [1, -1]
    assert metrics.mAP == pytest.approx((((0 + 0.5) / 2 + (1 / 3 + 0.5) / 2) / 2) / 2)   # layumi: over all
    assert metrics.rank(2) == 0.5
    standard = evaluate(*worked_inputs(extra_queries=[(9, 1)]), ap="standard")
    assert standard.mAP == pytest.approx(0.5) and standard.rank(2) == 1.0          # torchreid: over valid


def test_correct_match_at_the_top_scores_one():
    q, g = one_hot_scores([0.9, 0.1])
    metrics = evaluate(q, [3], [1], g, np.array([3, 4]), np.array([2, 2]))
    assert metrics.mAP == 1.0 and metrics.rank(1) == 1.0 and metrics.mINP == 1.0


@pytest.mark.parametrize("order", [[0, 1], [1, 0]])
def test_ties_never_help_whatever_the_gallery_order(order):
    q, g = one_hot_scores([0.5, 0.5])
    pids, cams = np.array([1, 2])[order], np.array([2, 2])[order]
    metrics = evaluate(q, [1], [1], g[order], pids, cams, ap="standard")
    assert metrics.first_correct.tolist() == [1] and metrics.mAP == 0.5


def test_same_camera_matches_are_not_correct():
    q, g = one_hot_scores([0.9, 0.8])
    metrics = evaluate(q, [5], [2], g, np.array([5, 5]), np.array([2, 2]))
    assert metrics.num_valid == 0 and metrics.mAP == 0 and metrics.rank(1) == 0


def random_problem(seed, n_query=40, n_gallery=300, dim=16):
    rng = np.random.default_rng(seed)
    feats = rng.normal(size=(n_query + n_gallery, dim)).astype(np.float32)
    feats /= np.linalg.norm(feats, axis=1, keepdims=True)
    feats[n_query + 5] = feats[n_query + 6]    # an exact tie in every query's ranking
    return (feats[:n_query], rng.integers(1, 27, n_query), rng.integers(1, 5, n_query),
            feats[n_query:], rng.integers(-1, 25, n_gallery), rng.integers(1, 5, n_gallery))


@pytest.mark.parametrize("seed", range(4))
def test_equals_the_per_query_references(seed, monkeypatch):
    monkeypatch.setattr(metrics, "CHUNK_ELEMENTS", 3000)   # several chunks even on a small problem
    problem = random_problem(seed)
    ours = evaluate(*problem)
    cmc, mAP = reference.layumi_style(*problem)
    assert ours.mAP == pytest.approx(mAP, abs=1e-6) and np.allclose(ours.cmc, cmc, atol=1e-6)
    ours = evaluate(*problem, ap="standard")
    cmc, mAP, mINP = reference.torchreid_style(*problem)
    assert ours.mAP == pytest.approx(mAP, abs=1e-6) and ours.mINP == pytest.approx(mINP, abs=1e-6)
    assert np.allclose(ours.cmc[:len(cmc)], cmc, atol=1e-6)


@pytest.mark.parametrize("seed", range(3))
def test_equals_the_references_with_ties_everywhere_and_four_buckets(seed, monkeypatch):
    """Features drawn from five vectors of +-0.25 and 0: every score is one of a few multiples of 1/16, exact
    in any order of summation, so correct, junk and wrong matches tie within and across queries; with
    four buckets most of them share a correct match's bucket."""
    monkeypatch.setattr(metrics, "CHUNK_ELEMENTS", 3000)
    monkeypatch.setattr(metrics, "BUCKET_BITS", 2)
    rng = np.random.default_rng(seed)
    palette = rng.choice(np.float32([-0.25, 0, 0.25]), size=(5, 16))   # length at most 1
    problem = (palette[rng.integers(0, 5, 40)], rng.integers(1, 9, 40), rng.integers(1, 4, 40),
               palette[rng.integers(0, 5, 300)], rng.integers(-1, 8, 300), rng.integers(1, 4, 300))
    scores = problem[0] @ problem[3].T   # given scores take the other bucketing (re-ranking's)
    for ap, reference_style in (("trapezoid", reference.layumi_style), ("standard", reference.torchreid_style)):
        for ours, theirs in ((evaluate(*problem, ap=ap), reference_style(*problem)),
                             (evaluate(None, *problem[1:3], None, *problem[4:], ap=ap, scores=scores),
                              reference_style(*problem, scores=scores))):
            assert ours.mAP == pytest.approx(theirs[1], abs=1e-6)
            assert np.allclose(ours.cmc[:len(theirs[0])], theirs[0])


def test_minus_zero_ties_with_zero():
    """-0.0 == 0.0: a wrong match scoring -0.0 ranks before a correct one scoring 0.0, and the other way round."""
    for wrong, good in ((-0.0, 0.0), (0.0, -0.0)):
        scores = np.array([[wrong, good]], dtype=np.float32)
        metrics_ = evaluate(None, [1], [1], None, np.array([2, 1]), np.array([2, 2]), scores=scores)
        assert metrics_.first_correct.tolist() == [1]


def test_multi_query_averages_same_person_and_camera():
    queries = np.eye(3, dtype=np.float32)
    multi = np.array([[0, 1, 0], [0, 0, 1], [0, 1, 0]], dtype=np.float32)
    merged, missing = multi_query_features(queries, [1, 2, 3], [1, 1, 1], multi, [1, 1, 2], [1, 1, 1])
    assert np.allclose(merged[0], [0, 0.5, 0.5]) and np.allclose(merged[1], [0, 1, 0])
    assert missing == 1 and np.allclose(merged[2], queries[2]) and np.isfinite(merged).all()


def clustered(seed, n_query, n_gallery, dim):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(12, dim))
    feats = centres[rng.integers(0, 12, n_query + n_gallery)] + 0.5 * rng.normal(size=(n_query + n_gallery, dim))
    feats = (feats / np.linalg.norm(feats, axis=1, keepdims=True)).astype(np.float32)
    return feats[:n_query], feats[n_query:]


@pytest.mark.parametrize("seed, n_query, n_gallery, k1, k2", [(0, 30, 200, 20, 6), (1, 20, 150, 10, 3), (2, 25, 120, 6, 1)])
def test_re_ranking_equals_the_dense_implementation(seed, n_query, n_gallery, k1, k2, monkeypatch):
    monkeypatch.setattr(re_ranking, "BLOCK_ELEMENTS", 5000)   # force many blocks
    q, g = clustered(seed, n_query, n_gallery, 8)
    ours = re_ranking.re_ranking(q, g, k1, k2, 0.3)
    dense = reference.dense_re_ranking(q, g, k1, k2, 0.3)
    assert ours.shape == (n_query, n_gallery) and np.abs(ours - dense).max() < 1e-5


def write_result(path, seed=0, **changes):
    q_f, q_p, q_c, g_f, g_p, g_c = random_problem(seed)
    arrays = dict(query_f=q_f, query_label=q_p, query_cam=q_c, gallery_f=g_f, gallery_label=g_p, gallery_cam=g_c)
    arrays.update(changes)
    features.save_features(str(path), arrays, {"model_name": "m", "which_epoch": "last", "created": "now",
                                            "run_id": "r1", "format_version": 1, "opts": "{}"})
    return arrays


def test_mat_round_trip_keeps_layumis_layout(tmp_path):
    arrays = write_result(tmp_path / "result.mat")
    raw = scipy.io.loadmat(tmp_path / "result.mat")
    assert raw["gallery_f"].dtype == np.float32 and raw["gallery_f"].shape == arrays["gallery_f"].shape
    assert raw["gallery_label"].dtype == np.int64 and raw["gallery_label"].shape == (1, len(arrays["gallery_label"]))
    loaded = features.load_features(str(tmp_path / "result.mat"))
    for key in features.FEATURE_KEYS:
        assert np.array_equal(loaded[key], arrays[key])
    assert loaded["model_name"] == "m" and loaded["run_id"] == "r1"


def test_command_prints_layumis_line_first(tmp_path, capsys):
    write_result(tmp_path / "result.mat")
    code, out, _ = run_cli(evaluate_gpu.main, ["--mat", tmp_path / "result.mat", "--gpu_ids", "-1"], capsys)
    lines = out.splitlines()
    assert code == 0 and "model m, epoch last" in lines[0]
    assert re.fullmatch(r"Rank@1:\d\.\d{6} Rank@5:\d\.\d{6} Rank@10:\d\.\d{6} mAP:\d\.\d{6}", lines[1])
    assert "AP:trapezoid" in lines[2] and "without a correct match" in lines[2]
    code, out, _ = run_cli(evaluate_gpu.main, ["--mat", tmp_path / "result.mat", "--gpu_ids", "-1", "--rerank",
                                               "--k1", "6", "--k2", "3"], capsys)
    assert code == 0 and out.splitlines()[1].startswith("Rank@1:")


def expect_error(argv, capsys, *fragments):
    code, _, err = run_cli(evaluate_gpu.main, [*argv, "--gpu_ids", "-1"], capsys)
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: "), err
    for fragment in fragments:
        assert fragment in lines[0]


def test_bad_files_fail_in_one_line_naming_the_writer(tmp_path, capsys):
    expect_error(["--mat", tmp_path / "none.mat"], capsys, "does not exist", "test.py")
    (tmp_path / "junk.mat").write_bytes(b"not a mat file at all")
    expect_error(["--mat", tmp_path / "junk.mat"], capsys, "not a readable", "test.py")
    scipy.io.savemat(tmp_path / "partial.mat", {"query_f": np.eye(2, dtype=np.float32)})
    expect_error(["--mat", tmp_path / "partial.mat"], capsys, "lacks", "gallery_f")
    write_result(tmp_path / "short.mat", gallery_label=np.arange(3))
    expect_error(["--mat", tmp_path / "short.mat"], capsys, "3 labels")
    write_result(tmp_path / "raw.mat", gallery_f=2 * random_problem(0)[3])
    expect_error(["--mat", tmp_path / "raw.mat"], capsys, "L2-normalised")


def test_stale_multi_query_file_is_refused(tmp_path, capsys):
    write_result(tmp_path / "result.mat")
    q_f, q_p, q_c = random_problem(0)[:3]
    features.save_features(str(tmp_path / "multi.mat"), {"mquery_f": q_f, "mquery_label": q_p, "mquery_cam": q_c},
                        {"model_name": "old", "which_epoch": "10", "created": "yesterday", "run_id": "r0"})
    expect_error(["--mat", tmp_path / "result.mat", "--multi", tmp_path / "multi.mat"], capsys, "another test.py run")


@pytest.mark.parametrize("g_pids", [np.array([], dtype=np.int64), np.array([-1, -1])])
def test_a_gallery_without_a_kept_picture_leaves_every_query_without_a_match(g_pids):
    q, g = one_hot_scores([0.5, 0.4])
    result = evaluate(q, [1], [1], g[:len(g_pids)], g_pids, np.full(len(g_pids), 2))
    assert result.num_valid == 0 and result.mAP == 0 and result.first_correct.tolist() == [-1]


def test_a_small_gallery_gets_few_buckets():
    """The per-query histograms never outgrow the scores: a 40-picture gallery gets 64 buckets, not 4,096."""
    assert [metrics.bucket_count(n) for n in (0, 1, 40, 3000, 19732, 82161)] == [2, 2, 64, 4096, 4096, 4096]
