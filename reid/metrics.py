"""The Market-1501 evaluation protocol as pure functions: Rank@k (CMC), mAP and mINP."""
from dataclasses import dataclass

import numpy as np
import torch

from reid import features, matching, verification


AP_CONVENTIONS = ("trapezoid", "standard")   # the Market-1501 authors' / layumi's, and torchreid's / fast-reid's
CHUNK_ELEMENTS = 2 ** 23   # query x gallery entries held at once: bounds memory whatever the dataset size


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


BUCKET_BITS = 12   # the ranking's histogram has up to 4096 buckets per query


def bucket_count(n_gallery):
    """Buckets per query for a gallery of ``n_gallery``: 4096, or fewer for a small gallery, so that the
    histograms never hold more entries than the scores (a power of two: bins_as_buckets shifts to it)."""
    return 1 << min(BUCKET_BITS, max(1, int(n_gallery).bit_length()))


def bins_as_buckets(bins, count):
    """A chunk's verification bins (overwritten) as at most ``count`` buckets (a power of two): shifted to
    start at 0 and merged by a power of two, just enough to fit, so that a narrow spread still fills them."""
    if not bins.numel():   # a gallery of junk alone
        return bins
    low, high = (int(value) for value in torch.aminmax(bins))
    return bins.sub_(low).bitwise_right_shift_(max(0, (high - low).bit_length() - (count.bit_length() - 1)))


def score_buckets(scores, count):
    """``count`` monotone buckets of any scores (re-ranking's are not cosines): their range, cut evenly."""
    if not scores.numel():
        return scores.long()
    low = scores.min()
    scale = (count - 1) / max(float(scores.max() - low), 1e-30)   # equal scores: one bucket
    return ((scores - low) * scale).long()


def correct_match_ranks(scores, buckets, width, good, junk, work=None):
    """For one chunk of queries: the 0-based ranks of their correct matches once junk is removed.

    ``scores`` [q, g] float32, higher is better; ``buckets`` [q, g] integers in [0, width), never
    inverting two scores (overwritten); ``good``, ``junk``: the chunk's matching.match_lists; ``work``:
    its Workspace. Returns ``(ranks, n_good)``: ``ranks`` is (q, max correct) in ascending order,
    padded with 0 past ``n_good`` per row. A wrong match whose score equals a correct match's ranks
    before it (ties never help), so results do not depend on the gallery's order.

    No row is sorted: the wrong matches in higher buckets than a correct match all outrank it (one
    histogram per row counts them); only those in its own bucket are compared with it (same_bucket_ahead).
    """
    n_queries, n_gallery = scores.shape
    n_good = torch.bincount(good[0], minlength=n_queries)
    most = int(n_good.max()) if n_queries else 0
    if most == 0:
        return torch.zeros(n_queries, 0, dtype=torch.int64, device=scores.device), n_good
    keys = buckets.add_(torch.arange(0, n_queries * width, width, dtype=buckets.dtype, device=scores.device)[:, None])
    keys, flat_scores = keys.ravel(), scores.ravel()
    good_flat = good[0] * n_gallery + good[1]   # flat positions
    not_wrong = torch.cat([good_flat, junk[0] * n_gallery + junk[1]])
    per_bucket = torch.bincount(keys, minlength=n_queries * width)
    per_bucket.index_add_(0, keys[not_wrong], torch.full_like(not_wrong, -1))   # the wrong matches are left
    up_to = per_bucket.view(n_queries, width).cumsum(1)   # wrong matches in this bucket or below
    good_keys = keys[good_flat].long()
    codes, order = torch.sort(score_codes(good_keys, flat_scores[good_flat]))
    rows = good[0][order]   # in rising rows, and rising scores within a row
    place = n_good.cumsum(0)[rows] - 1 - torch.arange(len(rows), device=scores.device)   # falling scores
    ahead = same_bucket_ahead(codes, keys, flat_scores, not_wrong, n_queries * width, work)
    ranks = torch.zeros(n_queries, most, dtype=torch.int64, device=scores.device)
    above = up_to[:, -1][rows] - up_to.view(-1)[good_keys[order]]   # in higher buckets than the correct match
    ranks[rows, place] = place + above + ahead
    return ranks, n_good


def score_codes(keys, values):
    """int64 codes that sort as the pairs (key, value) do: the key in the high 32 bits, the float32
    value's bits in the low ones, made to rise with the value (the sign bit and the order of negatives)."""
    bits = (values + 0.0).view(torch.int32).long()   # + 0.0 turns -0.0 into +0.0, which it equals
    return (keys << 32) | (torch.where(bits < 0, bits ^ 0x7FFFFFFF, bits) + 2 ** 31)


def same_bucket_ahead(codes, keys, flat_scores, not_wrong, n_keys, work):
    """For each correct match (``codes``: their sorted score_codes), the wrong matches of its own bucket
    that score at least as high. Every picture in a bucket holding a correct match counts +1 for the
    correct matches of that bucket it is not below; the correct and junk pictures (``not_wrong``) then
    count -1 the same way, which leaves the wrong ones."""
    shared = torch.zeros(n_keys, dtype=torch.bool, device=keys.device)
    shared[codes >> 32] = True
    in_shared = torch.empty(len(keys), dtype=torch.bool, device=keys.device) if work is None else (
        work.take("flags", (1, len(keys)), torch.bool)[0])
    positions = torch.cat([torch.index_select(shared, 0, keys, out=in_shared).nonzero()[:, 0], not_wrong])
    weights = torch.ones_like(positions)
    weights[len(positions) - len(not_wrong):] = -1
    entries = score_codes(keys[positions].long(), flat_scores[positions])
    first = torch.searchsorted(codes, (entries >> 32) << 32)      # the bucket's first correct match
    past = torch.searchsorted(codes, entries, right=True)         # past those scoring at most the entry
    change = torch.zeros(len(codes) + 1, dtype=torch.int64, device=keys.device)
    change.index_add_(0, first, weights).index_add_(0, past, -weights)
    return change.cumsum(0)[:-1]


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
    if pairs and (scores is not None or not same_camera_junk):
        raise ValueError("pairs=True counts the cosines of the protocol's pairs: no scores, same_camera_junk=True")
    tally = torch.zeros(2, verification.BINS, dtype=torch.int64, device=device) if pairs else None
    aps, firsts, inps, valids = [], [], [], []
    for block, good, junk, work in matching.protocol_chunks(q_feats, q_pids, q_camids, g_feats, g_pids, g_camids,
                                                            CHUNK_ELEMENTS, device, scores, same_camera_junk):
        count = bucket_count(block.shape[1])
        if scores is None:   # cosines: the ranking's buckets are the verification bins, merged
            bins = verification.score_bins(block, work)
            if tally is not None:
                tally += verification.chunk_pairs(bins, good, junk)
            buckets = bins_as_buckets(bins, count)
        else:
            buckets = score_buckets(block, count)
        ranks, n_good = correct_match_ranks(block, buckets, count, good, junk, work)
        valid = n_good > 0
        aps.append(average_precision(ranks, n_good, ap))
        last = ranks.gather(1, (n_good - 1).clamp(min=0)[:, None])[:, 0] if ranks.shape[1] else n_good
        inps.append(torch.where(valid, n_good.double() / (last.double() + 1), torch.zeros_like(n_good).double()))
        firsts.append(torch.where(valid, ranks[:, 0], -1) if ranks.shape[1] else -torch.ones_like(n_good))
        valids.append(valid)
    metrics = summarise(torch.cat(aps).cpu().numpy(), torch.cat(firsts).cpu().numpy(),
                        torch.cat(inps).cpu().numpy(), torch.cat(valids).cpu().numpy(), len(np.ravel(g_pids)), ap)
    metrics.pairs = verification.counts_of(tally) if pairs else None
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
        from reid.re_ranking import reranked_scores
        scores = reranked_scores(args.rerank, query, result["gallery_f"], args.k1, args.k2, args.lambda_value, device)
    same_pass = pairs and scores is None and not args.multi
    metrics = evaluate(query, result["query_label"], result["query_cam"], result["gallery_f"], result["gallery_label"],
                       result["gallery_cam"], ap=args.ap, scores=scores, device=device, pairs=same_pass)
    if pairs and not same_pass:
        metrics.pairs = verification.result_pair_counts(result, device)
    return metrics
