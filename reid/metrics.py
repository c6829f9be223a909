"""The Market-1501 evaluation protocol as pure functions: Rank@k (CMC), mAP and mINP."""
from dataclasses import dataclass

import numpy as np
import torch

from reid import features, verification
from reid.datasets import match_masks


AP_CONVENTIONS = ("trapezoid", "standard")   # the Market-1501 authors' / layumi's, and torchreid's / fast-reid's
CHUNK_ELEMENTS = 2 ** 21   # query x gallery entries held at once: bounds memory whatever the dataset size


@dataclass
class Metrics:
    """Results of one evaluation. Per-query arrays follow the query order of the inputs."""

    cmc: np.ndarray            # cmc[k]: share of queries with a correct match in the top k+1
    mAP: float
    mINP: float
    ap: np.ndarray             # AP of each query (0 where it has no correct match)
    first_correct: np.ndarray  # 0-based rank of each query's first correct match (junk removed); -1 if none
    valid: np.ndarray          # the query has at least one correct match in the gallery
    convention: str
    pairs: object = None       # verification.PairCounts of the same scores, when evaluate(..., pairs=True)

    @property
    def num_queries(self):
        return len(self.valid)

    @property
    def num_valid(self):
        return int(self.valid.sum())

    def rank(self, k):
        """Rank@k as a fraction (0 when the gallery is shorter than k)."""
        return float(self.cmc[k - 1]) if k <= len(self.cmc) else float(self.cmc[-1])


SCORE_BINS = 4096   # coarse, monotone buckets of the scores: most comparisons become one histogram


def correct_match_ranks(scores, q_pids, q_camids, g_pids, g_camids, same_camera_junk=True, masks=None):
    """For one chunk of queries: the 0-based ranks of their correct matches once junk is removed.

    Returns ``(ranks, n_good)``: ``ranks`` is (queries, max correct) in ascending order, padded
    past ``n_good`` per row. A correct match is the same pid from another camera; junk is the same pid
    from the same camera, or gallery pid -1. A wrong match whose score equals a correct match's ranks
    before it (ties never help), so results do not depend on the gallery's order. ``masks``: the chunk's
    ``match_masks`` when the caller has them already.

    No row is sorted. Each score falls in one of SCORE_BINS monotone buckets; the wrong matches in
    higher buckets than a correct match all outrank it (a histogram counts them), and only those in
    its own bucket are compared with it exactly.
    """
    good, junk = masks or match_masks(q_pids, q_camids, g_pids, g_camids, same_camera_junk)
    n_good = good.sum(1)
    most = int(n_good.max()) if len(n_good) else 0
    if most == 0:
        return torch.zeros(len(q_pids), 0, dtype=torch.int64, device=scores.device), n_good
    wrong = ~(good | junk)   # kept pictures that are not correct matches
    good_scores = scores.masked_fill(~good, float("-inf")).topk(most, dim=1).values
    is_good = torch.arange(most, device=scores.device)[None, :] < n_good[:, None]
    low = scores.min()
    scale = (SCORE_BINS - 1) / max(float(scores.max() - low), 1e-30)   # equal scores: one bucket
    bins = ((scores - low) * scale).long()               # rounding is monotone, so bins never invert scores
    good_bins = torch.where(is_good, ((good_scores.clamp(min=low) - low) * scale).long(), SCORE_BINS)
    wrong_per_bin = torch.zeros(len(q_pids), SCORE_BINS + 2, dtype=torch.int64, device=scores.device)
    wrong_per_bin.scatter_add_(1, bins, wrong.to(torch.int64))
    wrong_from_bin = wrong_per_bin.flip(1).cumsum(1).flip(1)   # wrong matches in this bucket or above
    ranks = torch.arange(most, device=scores.device) + wrong_from_bin.gather(1, good_bins + 1)
    shared = torch.zeros_like(wrong_per_bin, dtype=torch.bool).scatter_(1, good_bins, True)
    rows, cols = (wrong & shared.gather(1, bins)).nonzero(as_tuple=True)
    ahead = (bins[rows, cols][:, None] == good_bins[rows]) & (scores[rows, cols][:, None] >= good_scores[rows])
    return ranks.index_add_(0, rows, ahead.to(torch.int64)), n_good


def average_precision(ranks, n_good, convention):
    """AP per query from the ascending ranks of its correct matches (float64).

    standard:  mean over hits of precision at the hit, (m+1)/(r_m+1).
    trapezoid: mean over hits of the average of the precision just before and at the hit
               (m/r_m, or 1 when r_m = 0, and (m+1)/(r_m+1)): the Market-1501 authors' formula.
    """
    m = torch.arange(ranks.shape[1], device=ranks.device, dtype=torch.float64)
    r = ranks.to(torch.float64)
    hit = m[None, :] < n_good[:, None]
    precision = (m + 1) / (r + 1)
    if convention == "trapezoid":
        before = torch.where(r > 0, m / r.clamp(min=1), torch.ones_like(r))
        precision = (before + precision) / 2
    return torch.where(hit, precision, torch.zeros_like(precision)).sum(1) / n_good.clamp(min=1)


def evaluate(q_feats, q_pids, q_camids, g_feats, g_pids, g_camids, ap="trapezoid", scores=None, device="cpu",
             same_camera_junk=True, pairs=False):
    """Market-1501 evaluation of L2-normalised features (cosine similarity ranks the gallery).

    q_feats [Nq, D], g_feats [Ng, D]: features; q_pids/g_pids: person ids (-1 junk, 0 distractor);
    q_camids/g_camids: camera ids. ``scores`` [Nq, Ng], higher is better, replaces q_feats @ g_feats.T
    (re-ranking passes minus its distance). A wrong match tied with a correct one ranks first.
    Denominators: ``trapezoid`` averages CMC, mAP and mINP over all queries (a query with no correct
    match scores 0, as layumi's evaluate_gpu.py prints); ``standard`` over the queries that have a
    correct match (torchreid's eval_market1501). ``same_camera_junk=False`` leaves the protocol: the
    query's person seen by its own camera becomes a correct match (see datasets.match_masks).
    ``pairs=True`` also counts every pair's cosine into ``Metrics.pairs`` (verification.PairCounts) from
    the same score chunks, so that verification costs no second pass. No I/O, no printing.
    """
    if ap not in AP_CONVENTIONS:
        raise ValueError(f"unknown AP convention {ap!r}")
    tensor = lambda a, dtype: torch.as_tensor(np.asarray(a), dtype=dtype, device=device)  # noqa: E731
    q_pids, q_camids = tensor(q_pids, torch.int64).ravel(), tensor(q_camids, torch.int64).ravel()
    g_pids, g_camids = tensor(g_pids, torch.int64).ravel(), tensor(g_camids, torch.int64).ravel()
    if scores is None:
        q_feats, g_feats = tensor(q_feats, torch.float32), tensor(g_feats, torch.float32)
    if pairs and (scores is not None or not same_camera_junk):
        raise ValueError("pairs=True counts the cosines of the protocol's pairs: no scores, same_camera_junk=True")
    counts = verification.no_pairs() if pairs else None
    chunk = max(1, CHUNK_ELEMENTS // max(1, len(g_pids)))
    aps, firsts, inps, valids = [], [], [], []
    for start in range(0, len(q_pids), chunk):
        rows = slice(start, start + chunk)
        block = q_feats[rows] @ g_feats.T if scores is None else tensor(scores[rows], torch.float32)
        masks = match_masks(q_pids[rows], q_camids[rows], g_pids, g_camids, same_camera_junk)
        if counts is not None:
            verification.add_pairs(counts, block, *masks)
        ranks, n_good = correct_match_ranks(block, q_pids[rows], q_camids[rows], g_pids, g_camids, masks=masks)
        valid = n_good > 0
        aps.append(average_precision(ranks, n_good, ap))
        last = ranks.gather(1, (n_good - 1).clamp(min=0)[:, None])[:, 0] if ranks.shape[1] else n_good
        inps.append(torch.where(valid, n_good.double() / (last.double() + 1), torch.zeros_like(n_good).double()))
        firsts.append(torch.where(valid, ranks[:, 0], -1) if ranks.shape[1] else -torch.ones_like(n_good))
        valids.append(valid)
    metrics = summarise(torch.cat(aps).cpu().numpy(), torch.cat(firsts).cpu().numpy(),
                        torch.cat(inps).cpu().numpy(), torch.cat(valids).cpu().numpy(), len(g_pids), ap)
    metrics.pairs = counts
    return metrics


def summarise(ap, first, inp, valid, gallery_size, convention):
    denominator = len(valid) if convention == "trapezoid" else max(1, int(valid.sum()))
    hits = np.bincount(first[valid], minlength=gallery_size)[:gallery_size]
    cmc = np.cumsum(hits) / denominator
    return Metrics(cmc=cmc, mAP=float(ap[valid].sum() / denominator), mINP=float(inp[valid].sum() / denominator),
                   ap=np.where(valid, ap, 0.0), first_correct=first, valid=valid, convention=convention)


def multi_query_features(q_feats, q_pids, q_camids, mq_feats, mq_pids, mq_camids):
    """Market multi-query: each query becomes the mean of the gt_bbox features of its pid and camera.

    Returns (features, number of queries that had none and kept their own feature).
    """
    q_feats, mq_feats = np.asarray(q_feats, np.float32), np.asarray(mq_feats, np.float32)
    keys = {}
    for index, key in enumerate(zip(np.ravel(mq_pids).tolist(), np.ravel(mq_camids).tolist())):
        keys.setdefault(key, []).append(index)
    merged, missing = q_feats.copy(), 0
    for row, key in enumerate(zip(np.ravel(q_pids).tolist(), np.ravel(q_camids).tolist())):
        if key in keys:
            merged[row] = mq_feats[keys[key]].mean(0)
        else:
            missing += 1
    return merged, missing


def add_ap_argument(parser):
    """``--ap``, the AP convention, the same in every script that scores."""
    parser.add_argument("--ap", choices=AP_CONVENTIONS, default=AP_CONVENTIONS[0],
                        help="trapezoid: Market-1501 official / layumi; standard: torchreid / fast-reid")


def summary_lines(metrics):
    """The two lines every stage prints: layumi's, then the rest of what a reader needs."""
    layumi = "Rank@1:%f Rank@5:%f Rank@10:%f mAP:%f" % (metrics.rank(1), metrics.rank(5), metrics.rank(10),
                                                      metrics.mAP)
    more = (f"Rank@20:{metrics.rank(20):f} mINP:{metrics.mINP:f} AP:{metrics.convention} "
            f"queries:{metrics.num_queries} without a correct match:{metrics.num_queries - metrics.num_valid}")
    return [layumi, more]


def query_features(args, result, say=lambda line: None):
    """The query features ``args`` asks to score: the .mat's own, or with ``args.multi`` the multi-query ones."""
    if not args.multi:
        return result["query_f"]
    multi = features.load_features(args.multi, multi=True, like=result)
    query, missing = multi_query_features(result["query_f"], result["query_label"], result["query_cam"],
                                          multi["mquery_f"], multi["mquery_label"], multi["mquery_cam"])
    say(f"multi-query: {len(query) - missing} queries averaged over their gt_bbox pictures"
        + (f", {missing} had none and kept their own feature" if missing else ""))
    return query


def run(args, result, device, pairs=False):
    """Evaluate a loaded result dict as ``args`` asks; returns the Metrics. Used by test.py too. ``pairs``:
    also the verification counts of the single queries' cosines, from the same pass when the ranking
    scores them (no --multi, no --rerank), else from a pass of their own."""
    query = query_features(args, result, print)
    scores = None
    if args.rerank:
        from reid.re_ranking import re_ranking
        scores = -re_ranking(query, result["gallery_f"], args.k1, args.k2, args.lambda_value, device=device)
    same_pass = pairs and scores is None and not args.multi
    metrics = evaluate(query, result["query_label"], result["query_cam"], result["gallery_f"], result["gallery_label"],
                       result["gallery_cam"], ap=args.ap, scores=scores, device=device, pairs=same_pass)
    if pairs and not same_pass:
        metrics.pairs = verification.result_pair_counts(result, device)
    return metrics
