"""Is it the same person? Open-set verification from the retrieval features.

Retrieval ranks a gallery and never says "nobody". Verification decides for one pair of pictures:
*same person* when their cosine similarity reaches a threshold. Every query-gallery pair of a test run
is one trial: the query's person seen by another camera is a same-person pair, any other person
(distractors included) a different-person pair, and the protocol's junk (same person and camera, or
gallery pid -1) is left out, as the ranking leaves it out.

A threshold trades the two errors: the false-positive rate (FPR, different people accepted) against
the true-positive rate (TPR, same person accepted). The ROC curve is every such trade; TPR at FPR
1e-2/1e-3/1e-4 and the equal error rate (EER, where FPR = 1 - TPR) summarise it.

Scores are counted, not sorted: each pair falls in one of BINS equal bins of [-1, 1], one histogram
for same-person and one for different-person pairs, so a Market-1501 test set (66 million pairs) costs
two ``bincount``s per chunk and constant memory. Thresholds are the bins' lower edges (a step of
2 / BINS = 3e-5 in cosine); at those thresholds every rate is exact (tests/test_verification.py
compares them with scikit-learn's ``roc_curve``).
"""
from dataclasses import dataclass

import numpy as np
import torch

from reid.datasets import match_masks

BINS = 2 ** 16
TARGET_FPRS = (1e-2, 1e-3, 1e-4)
CHUNK_ELEMENTS = 2 ** 22


@dataclass
class PairCounts:
    """How many same-person and different-person pairs score in each bin; bin b holds the scores in
    [threshold(b), threshold(b + 1)), the last bin also 1.0 itself."""

    same: np.ndarray        # int64 [BINS]
    different: np.ndarray   # int64 [BINS]

    @classmethod
    def from_scores(cls, same_scores, different_scores):
        """The histograms of two lists of scores (same-person pairs, different-person pairs)."""
        return cls(histogram(same_scores), histogram(different_scores))

    @property
    def num_same(self):
        return int(self.same.sum())

    @property
    def num_different(self):
        return int(self.different.sum())


def threshold(bin_index):
    """The score at which bin ``bin_index`` starts: pairs scoring at least this are in it or above."""
    return -1.0 + 2.0 * np.asarray(bin_index, dtype=np.float64) / BINS


def score_bins(scores):
    """The bin of each score (float64 arithmetic, so a score on a bin edge lands in that bin)."""
    position = (scores.double().clamp(-1.0, 1.0) + 1.0) * (BINS / 2.0)
    return position.floor().long().clamp(max=BINS - 1)


def histogram(scores):
    """How many of ``scores`` (any shape; a torch tensor or an array) fall in each bin: int64 [BINS]."""
    return torch.bincount(score_bins(torch.as_tensor(scores).ravel()), minlength=BINS).cpu().numpy()


def pair_counts(q_feats, q_pids, q_camids, g_feats, g_pids, g_camids, device="cpu"):
    """The two histograms of cosine similarity over every query-gallery pair (junk left out).

    q_feats [Nq, D], g_feats [Ng, D]: L2-normalised features; pids and camids as in metrics.evaluate.
    (metrics.evaluate(..., pairs=True) counts the same pairs from its own score chunks.)
    """
    tensor = lambda a, dtype: torch.as_tensor(np.asarray(a), dtype=dtype, device=device)  # noqa: E731
    q_feats, g_feats = tensor(q_feats, torch.float32), tensor(g_feats, torch.float32)
    q_pids, q_camids = tensor(q_pids, torch.int64).ravel(), tensor(q_camids, torch.int64).ravel()
    g_pids, g_camids = tensor(g_pids, torch.int64).ravel(), tensor(g_camids, torch.int64).ravel()
    counts = no_pairs()
    chunk = max(1, CHUNK_ELEMENTS // max(1, len(g_pids)))
    for start in range(0, len(q_pids), chunk):
        rows = slice(start, start + chunk)
        add_pairs(counts, q_feats[rows] @ g_feats.T, *match_masks(q_pids[rows], q_camids[rows], g_pids, g_camids))
    return counts


def no_pairs():
    """Empty histograms, for ``add_pairs`` to fill chunk by chunk."""
    return PairCounts(np.zeros(BINS, np.int64), np.zeros(BINS, np.int64))


def add_pairs(counts, scores, good, junk):
    """Count one chunk of pairs into ``counts``: ``scores`` [q, g] with its ``good`` (same person, another
    camera) and ``junk`` masks. One ``bincount`` over the chunk: the pair's kind picks a third of the bins."""
    kind = torch.where(good, 0, torch.where(junk, 2, 1))   # same, different, junk (left out)
    both = torch.bincount((score_bins(scores) + kind * BINS).ravel(), minlength=3 * BINS)[:2 * BINS].cpu().numpy()
    counts.same += both[:BINS]
    counts.different += both[BINS:]


def result_pair_counts(result, device="cpu"):
    """pair_counts of a loaded feature file (features.load_features): its queries against its gallery."""
    return pair_counts(result["query_f"], result["query_label"], result["query_cam"], result["gallery_f"],
                       result["gallery_label"], result["gallery_cam"], device)


def roc(counts):
    """(fpr, tpr, thresholds), thresholds falling from the highest bin to -1: accepting every pair that
    scores at least thresholds[i] gives fpr[i] and tpr[i]."""
    tpr = np.cumsum(counts.same[::-1]) / max(1, counts.num_same)
    fpr = np.cumsum(counts.different[::-1]) / max(1, counts.num_different)
    return fpr, tpr, threshold(np.arange(BINS)[::-1])


def rates_at(counts, threshold):
    """(FPR, TPR) of accepting the pairs that score at least ``threshold`` (the nearest bin edge at or above
    it; exact for thresholds this module chose)."""
    fpr, tpr, thresholds = roc(counts)
    at = int(np.searchsorted(-thresholds, -threshold, side="right")) - 1   # thresholds fall, so negate them
    return (float(fpr[at]), float(tpr[at])) if at >= 0 else (0.0, 0.0)


def operating_point(counts, target_fpr):
    """The best threshold for a false-positive rate of at most ``target_fpr``: the highest TPR within
    that rate, at the highest threshold reaching it (fewest false positives). Returns (threshold, tpr,
    fpr), or None when there are too few different-person pairs to measure the rate (< 1 / target_fpr)."""
    if counts.num_different * target_fpr < 1:
        return None
    fpr, tpr, thresholds = roc(counts)
    last = int(np.searchsorted(fpr, target_fpr, side="right")) - 1   # fpr only grows as the threshold falls
    if last < 0:   # the top bin alone exceeds the target: accept nothing
        return 1.0 + 2.0 / BINS, 0.0, 0.0
    best = int(np.searchsorted(tpr, tpr[last], side="left"))   # tpr grows too: its first index at that value
    return float(thresholds[best]), float(tpr[best]), float(fpr[best])


def equal_error_rate(counts):
    """(eer, threshold): where the false-positive and false-negative rates meet (their mean there)."""
    fpr, tpr, thresholds = roc(counts)
    closest = int(np.argmin(np.abs(fpr - (1 - tpr))))
    return float((fpr[closest] + 1 - tpr[closest]) / 2), float(thresholds[closest])


def area_under_roc(counts):
    """The area under the ROC curve: the chance that a same-person pair outscores a different one
    (pairs in one bin count half)."""
    fpr, tpr, _ = roc(counts)
    fpr, tpr = np.concatenate([[0.0], fpr]), np.concatenate([[0.0], tpr])
    return float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2))


def summary_lines(counts):
    """What evaluate_gpu.py prints: the pairs, TPR at each target FPR with its threshold, EER, AUC."""
    if counts.num_same == 0 or counts.num_different == 0:
        return ["verification: needs both same-person and different-person pairs; this test set lacks one kind"]
    points = []
    for target in TARGET_FPRS:
        point = operating_point(counts, target)
        if point is None:
            points.append(f"FPR {target:.0e}: n/a (needs {int(1 / target):,} different-person pairs)")
        else:   # TPR 0: no threshold accepts a same-person pair before that many different ones
            points.append(f"FPR {target:.0e}: TPR {point[1]:.3f}" + (f" at threshold {point[0]:.4f}" if point[1] else ""))
    eer, eer_threshold = equal_error_rate(counts)
    return [f"verification by cosine similarity over query-gallery pairs (junk left out): {counts.num_same:,} "
            f"same-person, {counts.num_different:,} different-person",
            "  " + "  ".join(points),
            f"  EER {eer:.3f} at threshold {eer_threshold:.4f}  AUC {area_under_roc(counts):.4f}"]
