"""Open-set verification: the pair histograms against a per-pair loop, and every rate against
scikit-learn's ROC on the same scores."""
import numpy as np
import pytest
from sklearn.metrics import roc_auc_score, roc_curve

from reid import verification
from reid.verification import BINS, PairCounts
from test_intervals import problem


def grid_scores(rng, count, centre, spread):
    """Scores on the bins' edges (so each rate is exact at a threshold sklearn also has)."""
    edges = np.clip(np.round(rng.normal(centre, spread, count) * BINS / 2), -BINS / 2, BINS / 2 - 1)
    return edges * 2.0 / BINS


@pytest.fixture
def scored_pairs():
    rng = np.random.default_rng(0)
    same, different = grid_scores(rng, 3000, 0.6, 0.15), grid_scores(rng, 40000, 0.1, 0.2)
    labels = np.r_[np.ones(len(same)), np.zeros(len(different))]
    return PairCounts.from_scores(same, different), labels, np.r_[same, different]


def test_roc_equals_scikit_learn_at_every_threshold(scored_pairs):
    counts, labels, scores = scored_pairs
    fpr, tpr, thresholds = verification.roc(counts)
    sk_fpr, sk_tpr, sk_thresholds = roc_curve(labels, scores, drop_intermediate=False)
    ours = {round(t * BINS / 2): (f, r) for f, r, t in zip(fpr, tpr, thresholds)}
    for f, r, t in zip(sk_fpr[1:], sk_tpr[1:], sk_thresholds[1:]):   # sklearn's first threshold is +inf
        assert ours[round(t * BINS / 2)] == pytest.approx((f, r), abs=1e-12)
    assert verification.area_under_roc(counts) == pytest.approx(roc_auc_score(labels, scores), abs=1e-12)


@pytest.mark.parametrize("target", verification.TARGET_FPRS[:2])
def test_operating_point_is_the_best_tpr_within_the_fpr(scored_pairs, target):
    counts, labels, scores = scored_pairs
    sk_fpr, sk_tpr, sk_thresholds = roc_curve(labels, scores, drop_intermediate=False)
    within = sk_fpr <= target   # the highest TPR within the rate, and the fewest false positives for it
    best = np.flatnonzero(within & (sk_tpr == sk_tpr[within].max()))[0]
    threshold, tpr, fpr = verification.operating_point(counts, target)
    assert tpr == pytest.approx(sk_tpr[best]) and fpr == pytest.approx(sk_fpr[best]) and fpr <= target
    assert threshold == pytest.approx(sk_thresholds[best])
    accepted = scores >= threshold   # the rule as a user applies it
    assert accepted[labels == 1].mean() == pytest.approx(tpr) and accepted[labels == 0].mean() == pytest.approx(fpr)


def test_too_few_pairs_for_a_rate_say_so(scored_pairs):
    counts, _, _ = scored_pairs   # 40,000 different-person pairs: enough for 1e-4, not for 1e-5
    assert verification.operating_point(counts, 1e-4) is not None
    assert verification.operating_point(counts, 1e-5) is None
    lines = verification.summary_lines(PairCounts.from_scores(np.array([0.9, 0.8]), np.linspace(-0.5, 0.5, 500)))
    assert "FPR 1e-03: n/a (needs 1,000 different-person pairs)" in lines[1]


def test_equal_error_rate_where_the_two_errors_meet(scored_pairs):
    counts, labels, scores = scored_pairs
    eer, threshold = verification.equal_error_rate(counts)
    accepted = scores >= threshold
    false_positive, false_negative = accepted[labels == 0].mean(), 1 - accepted[labels == 1].mean()
    assert eer == pytest.approx((false_positive + false_negative) / 2)
    sk_fpr, sk_tpr, _ = roc_curve(labels, scores)   # sklearn's closest point has the same gap
    assert abs(false_positive - false_negative) == pytest.approx(np.min(np.abs(sk_fpr - (1 - sk_tpr))), abs=1e-12)
    # a hand-worked case: same 0.9 0.7 0.3, different 0.8 0.2 0.1 -> at 0.7 one of three of each is wrong
    small = PairCounts.from_scores(np.array([0.9, 0.7, 0.3]), np.array([0.8, 0.2, 0.1]))
    assert verification.equal_error_rate(small) == pytest.approx((1 / 3, 0.7), abs=1e-4)


def test_pair_counts_equal_a_loop_over_every_pair(monkeypatch):
    monkeypatch.setattr(verification, "CHUNK_ELEMENTS", 1000)   # several chunks
    q_f, q_p, q_c, g_f, g_p, g_c = problem(0)
    g_p[:5] = -1   # junk detections
    same, different = [], []
    for i in range(len(q_p)):
        for j in range(len(g_p)):
            if g_p[j] == -1 or (g_p[j] == q_p[i] and g_c[j] == q_c[i]):
                continue   # junk: left out
            (same if g_p[j] == q_p[i] else different).append(float(q_f[i] @ g_f[j]))
    counts = verification.pair_counts(q_f, q_p, q_c, g_f, g_p, g_c)
    expected = PairCounts.from_scores(np.array(same), np.array(different))
    assert counts.num_same == len(same) and counts.num_different == len(different)
    # a float32 dot product may differ in its last bit from the matrix product: allow a neighbouring bin
    assert np.abs(np.cumsum(counts.same) - np.cumsum(expected.same)).max() <= 1
    assert np.abs(np.cumsum(counts.different) - np.cumsum(expected.different)).max() <= 1


def test_the_evaluations_own_pass_counts_the_same_pairs(monkeypatch):
    """evaluate(..., pairs=True) counts from the ranking's score chunks: the histograms equal pair_counts'."""
    from reid import metrics

    monkeypatch.setattr(metrics, "CHUNK_ELEMENTS", 1000)   # several chunks, unlike pair_counts' own
    q_f, q_p, q_c, g_f, g_p, g_c = problem(1)
    g_p[:5] = -1
    counted = metrics.evaluate(q_f, q_p, q_c, g_f, g_p, g_c, pairs=True)
    alone = verification.pair_counts(q_f, q_p, q_c, g_f, g_p, g_c)
    assert (counted.pairs.num_same, counted.pairs.num_different) == (alone.num_same, alone.num_different) != (0, 0)
    for mine, theirs in ((counted.pairs.same, alone.same), (counted.pairs.different, alone.different)):
        assert np.abs(np.cumsum(mine) - np.cumsum(theirs)).max() <= 1   # a GEMM of other blocks: a last-bit change
    assert counted.mAP == metrics.evaluate(q_f, q_p, q_c, g_f, g_p, g_c).mAP
    with pytest.raises(ValueError):   # re-ranked distances are not the cosines verification counts
        metrics.evaluate(q_f, q_p, q_c, g_f, g_p, g_c, scores=q_f @ g_f.T, pairs=True)
