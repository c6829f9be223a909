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
one ``bincount`` of every score per chunk and constant memory. Thresholds are the bins' lower edges (a step of
2 / BINS = 3e-5 in cosine); at those thresholds every rate is exact (tests/test_verification.py
compares them with scikit-learn's ``roc_curve``).
"""
from dataclasses import dataclass

import numpy as np
import torch

from reid import matching

BINS = 2 ** 16
TARGET_FPRS = (1e-2, 1e-3, 1e-4)
CHUNK_ELEMENTS = 2 ** 23


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


def score_bins(scores, work=None):
    """The bin of each score (int32), floor(score * BINS / 2) + BINS / 2: scaling by a power of two is
    exact in floating point, so a score on a bin edge lands in that bin. ``work``: a
    matching.Workspace to take the two tensors from."""
    take = (lambda name, dtype: work.take(name, scores.shape, dtype)) if work else (
        lambda name, dtype: torch.empty(scores.shape, dtype=dtype, device=scores.device))
    position = torch.clamp(scores, -1.0, 1.0 - 2.0 ** -16, out=take("positions", scores.dtype))   # 1.0: last bin
    position.mul_(BINS // 2).floor_().add_(BINS // 2)
    return take("bins", torch.int32).copy_(position)


def histogram(scores):
    """How many of ``scores`` (any shape; a torch tensor or an array) fall in each bin: int64 [BINS]."""
    return torch.bincount(score_bins(torch.as_tensor(scores).ravel()), minlength=BINS).cpu().numpy()


def pair_counts(q_feats, q_pids, q_camids, g_feats, g_pids, g_camids, device="cpu"):
    """The two histograms of cosine similarity over every query-gallery pair (junk left out).

    q_feats [Nq, D], g_feats [Ng, D]: L2-normalised features; pids and camids as in metrics.evaluate.
    (metrics.evaluate(..., pairs=True) counts the same pairs from its own score chunks.)
    """
    tally = torch.zeros(2, BINS, dtype=torch.int64, device=device)
    for block, good, junk, work in matching.protocol_chunks(q_feats, q_pids, q_camids, g_feats, g_pids, g_camids,
                                                            CHUNK_ELEMENTS, device):
        tally += chunk_pairs(score_bins(block, work), good, junk)
    return counts_of(tally)


def chunk_pairs(bins, good, junk):
    """int64 [2, BINS]: the same-person and different-person pairs per bin of one chunk of scores.
    ``bins`` [q, g]: score_bins of the chunk; ``good``, ``junk``: its matching.match_lists. Every pair
    is counted once, then the few correct and junk pairs are taken back out of the different ones."""
    every = torch.bincount(bins.ravel(), minlength=BINS)
    same = torch.bincount(bins[good], minlength=BINS)
    return torch.stack([same, every - same - torch.bincount(bins[junk], minlength=BINS)])


def counts_of(tally):
    """The PairCounts of a [2, BINS] tally (a sum of chunk_pairs)."""
    same, different = tally.cpu().numpy()
    return PairCounts(same, different)


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
