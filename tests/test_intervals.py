"""Bootstrap intervals and the paired comparison: every resample against evaluating the resampled
queries from scratch, the verdict sentences, and evaluate_gpu.py --compare."""
import numpy as np
import pytest

import evaluate_gpu
from reid import intervals
from reid.metrics import evaluate
from test_evaluate import write_result
from conftest import run_cli
from utils import UserError


def problem(seed, n_query=30, n_gallery=200, dim=12, noise=1.0):
    """Queries and gallery of 10 people, features = person centre + noise; query 0's person is absent."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(11, dim))
    q_pids, g_pids = rng.integers(1, 11, n_query), rng.integers(1, 11, n_gallery)
    q_pids[0] = 0   # nobody in the gallery: counted in 'all queries', left out of 'valid queries'
    q_cams, g_cams = rng.integers(1, 4, n_query), rng.integers(1, 4, n_gallery)

    def features(pids):
        feats = centres[pids] + noise * rng.normal(size=(len(pids), dim))
        return (feats / np.linalg.norm(feats, axis=1, keepdims=True)).astype(np.float32)
    return features(q_pids), q_pids, q_cams, features(g_pids), g_pids, g_cams


def test_resampling_draws_queries_with_replacement():
    picks = intervals.resample_queries(50, draws=300, seed=3)
    assert picks.shape == (300, 50) and picks.min() >= 0 and picks.max() < 50
    assert np.array_equal(picks, intervals.resample_queries(50, draws=300, seed=3))
    assert not np.array_equal(picks, intervals.resample_queries(50, draws=300, seed=4))
    counts = np.stack([np.bincount(row, minlength=50) for row in picks])
    # each query is picked Binomial(50, 1/50) times per draw: mean 1, variance 0.98
    assert counts.mean() == pytest.approx(1.0) and counts.var() == pytest.approx(0.98, abs=0.05)


@pytest.mark.parametrize("convention", ["trapezoid", "standard"])
def test_each_resample_equals_evaluating_the_drawn_queries(convention):
    q_f, q_p, q_c, g_f, g_p, g_c = problem(0)
    metrics = evaluate(q_f, q_p, q_c, g_f, g_p, g_c, ap=convention)
    picks = intervals.resample_queries(len(q_p), draws=25, seed=1)
    resampled = intervals.resampled_scores(metrics, picks)
    for draw in range(25):
        drawn = picks[draw]   # the draw's queries, repeats included
        again = evaluate(q_f[drawn], q_p[drawn], q_c[drawn], g_f, g_p, g_c, ap=convention)
        assert resampled["Rank@1"][draw] == pytest.approx(again.rank(1), abs=1e-12)
        assert resampled["mAP"][draw] == pytest.approx(again.mAP, abs=1e-9)


def test_interval_is_the_middle_95_percent_and_holds_the_score():
    metrics = evaluate(*problem(1, n_query=120))
    bounds = intervals.bootstrap_intervals(metrics, draws=400, seed=0)
    values = intervals.resampled_scores(metrics, intervals.resample_queries(120, 400, 0))
    for name, point in (("Rank@1", metrics.rank(1)), ("mAP", metrics.mAP)):
        low, high = bounds[name]
        assert (low, high) == pytest.approx(tuple(np.percentile(values[name], [2.5, 97.5])))
        assert low < point < high
        assert np.mean(values[name] < low) <= 0.03 and np.mean(values[name] > high) <= 0.03
    line = intervals.interval_line(metrics, draws=400, seed=0)
    assert line.startswith("95% interval over queries (bootstrap, 400 draws, seed 0): Rank@1 ")


def test_more_queries_give_a_narrower_interval():
    width = lambda n: np.subtract(*intervals.bootstrap_intervals(evaluate(*problem(2, n_query=n)))["mAP"][::-1])  # noqa: E731
    assert width(400) < 0.7 * width(50)


def map_of_drawn(data, drawn):
    """mAP of the queries ``drawn`` (repeats included), evaluated from scratch."""
    q_f, q_p, q_c, g_f, g_p, g_c = data
    return evaluate(q_f[drawn], q_p[drawn], q_c[drawn], g_f, g_p, g_c).mAP


def test_paired_difference_equals_the_loop_over_draws():
    clean, noisy = problem(3, n_query=60), problem(3, n_query=60, noise=1.6)   # same ids and cameras
    worse, better = evaluate(*noisy), evaluate(*clean)
    picks = intervals.resample_queries(60, 500, 0)
    per_draw = [100 * (map_of_drawn(clean, drawn) - map_of_drawn(noisy, drawn)) for drawn in picks]
    difference = intervals.paired_differences(worse, better, draws=500, seed=0)["mAP"]
    assert difference.points == pytest.approx(100 * (better.mAP - worse.mAP))
    assert (difference.low, difference.high) == pytest.approx(tuple(np.percentile(per_draw, [2.5, 97.5])))
    assert difference.low > 0 and difference.sentence().startswith("B is better than A by ")
    swapped = intervals.paired_differences(better, worse, draws=500, seed=0)["mAP"]
    assert swapped.sentence().startswith("A is better than B by ")


def test_a_run_compared_with_itself_is_within_noise():
    metrics = evaluate(*problem(4))
    same = intervals.paired_differences(metrics, metrics)
    assert same["mAP"].points == 0 and (same["mAP"].low, same["mAP"].high) == (0, 0)
    assert "is within noise" in same["mAP"].sentence()


def test_sentences_read_plainly():
    assert intervals.Difference("mAP", 3.14, 1.2, 5.0).sentence() == \
        "B is better than A by 3.1 mAP points (95 % interval 1.2 to 5.0)"
    assert intervals.Difference("mAP", -2.0, -3.5, -0.4).sentence() == \
        "A is better than B by 2.0 mAP points (95 % interval 0.4 to 3.5)"
    assert intervals.Difference("Rank@1", 0.5, -1.0, 2.0).sentence().startswith(
        "the difference in Rank@1 (+0.5 points, 95 % interval -1.0 to 2.0) is within noise")


def test_files_of_other_queries_are_refused():
    result = {"query_label": np.array([1, 2]), "query_cam": np.array([1, 1]),
              "gallery_label": np.array([1, 2, 3]), "gallery_cam": np.array([2, 2, 2])}
    other = {**result, "query_cam": np.array([1, 2])}
    intervals.check_same_queries(result, dict(result), "a.mat", "b.mat")
    with pytest.raises(UserError, match="a.mat and b.mat hold different query cams"):
        intervals.check_same_queries(result, other, "a.mat", "b.mat")


def test_compare_command(tmp_path, capsys):
    write_result(tmp_path / "a.mat", seed=0)
    arrays = write_result(tmp_path / "b.mat", seed=0)
    code, out, _ = run_cli(evaluate_gpu.main, ["--mat", tmp_path / "a.mat", "--compare", tmp_path / "b.mat",
                                               "--gpu_ids", "-1"], capsys)
    assert code == 0 and "mAP: the difference in mAP (+0.0 points" in out and "within noise" in out
    assert f"A = {tmp_path / 'a.mat'}: Rank@1 " in out
    write_result(tmp_path / "c.mat", seed=0, query_label=arrays["query_label"][::-1].copy())
    code, _, err = run_cli(evaluate_gpu.main, ["--mat", tmp_path / "a.mat", "--compare", tmp_path / "c.mat",
                                               "--gpu_ids", "-1"], capsys)
    assert code != 0 and err.startswith("error: ") and "different query labels" in err
    code, _, err = run_cli(evaluate_gpu.main, ["--compare", tmp_path / "b.mat", "--bootstrap", "0"], capsys)
    assert code == 2 and "keep --bootstrap above 0" in err


def test_evaluate_prints_the_interval(tmp_path, capsys):
    write_result(tmp_path / "a.mat")
    code, out, _ = run_cli(evaluate_gpu.main, ["--mat", tmp_path / "a.mat", "--gpu_ids", "-1", "--seed", "7"], capsys)
    assert code == 0 and "95% interval over queries (bootstrap, 1000 draws, seed 7): Rank@1 " in out
    code, out, _ = run_cli(evaluate_gpu.main, ["--mat", tmp_path / "a.mat", "--gpu_ids", "-1", "--bootstrap", "0"], capsys)
    assert code == 0 and "interval" not in out
