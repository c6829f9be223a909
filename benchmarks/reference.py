"""Straightforward reference implementations, for tests and benchmarks only.

``layumi_style`` evaluates one query at a time with NumPy, the way layumi's evaluate_gpu.py does
(sort the whole gallery, drop junk, trapezoid AP, all queries in the denominator).
``torchreid_style`` follows torchreid's eval_market1501 (sort, drop same pid + camera, plain AP,
valid queries in the denominator); junk pid -1 is dropped from the gallery first, as torchreid's
Market-1501 loader does. ``dense_re_ranking`` is k-reciprocal re-ranking with full N x N matrices;
``dense_gnn_reranking`` GNN re-ranking likewise.
``bootstrap_loop`` resamples queries one draw at a time; ``sorted_pairs_tpr`` sorts every pair's score.
They are slow on purpose: the fast code (reid/metrics.py, re_ranking.py, intervals.py, verification.py)
is checked against them or timed against them.
"""
import numpy as np


def _descending(scores, correct):
    """Ranking by score; a wrong match tied with a correct one first (the rule evaluate_gpu.py documents)."""
    return np.lexsort((correct, -scores))


def layumi_style(q_feats, q_pids, q_cams, g_feats, g_pids, g_cams, scores=None):
    cmc = np.zeros(len(g_pids))
    total_ap = 0.0
    for i in range(len(q_pids)):
        score = g_feats @ q_feats[i] if scores is None else scores[i]   # one query at a time, as layumi does
        good = np.flatnonzero((g_pids == q_pids[i]) & (g_cams != q_cams[i]))
        order = _descending(score, np.isin(np.arange(len(g_pids)), good))
        junk = np.flatnonzero(((g_pids == q_pids[i]) & (g_cams == q_cams[i])) | (g_pids == -1))
        if len(good) == 0:
            continue
        order = order[~np.isin(order, junk)]
        rows = np.flatnonzero(np.isin(order, good))
        cmc[rows[0]:] += 1
        for hit, row in enumerate(rows):
            before = hit / row if row != 0 else 1.0
            total_ap += (before + (hit + 1) / (row + 1)) / 2 / len(good)
    return cmc / len(q_pids), total_ap / len(q_pids)


def torchreid_style(q_feats, q_pids, q_cams, g_feats, g_pids, g_cams, scores=None, max_rank=50):
    scores = q_feats @ g_feats.T if scores is None else scores
    kept = g_pids != -1
    scores, g_pids, g_cams = scores[:, kept], g_pids[kept], g_cams[kept]
    all_cmc, all_ap, all_inp = [], [], []
    for i in range(len(q_pids)):
        order = _descending(scores[i], g_pids == q_pids[i])
        keep = ~((g_pids[order] == q_pids[i]) & (g_cams[order] == q_cams[i]))
        matches = (g_pids[order] == q_pids[i])[keep].astype(np.int64)
        if not matches.any():
            continue
        cumulative = matches.cumsum()
        all_cmc.append(np.minimum(cumulative, 1)[:max_rank])
        all_ap.append(((cumulative / np.arange(1, len(matches) + 1)) * matches).sum() / matches.sum())
        last = np.flatnonzero(matches)[-1]
        all_inp.append(matches.sum() / (last + 1))
    return np.mean(all_cmc, axis=0), float(np.mean(all_ap)), float(np.mean(all_inp))


def dense_re_ranking(q_feats, g_feats, k1=20, k2=6, lambda_value=0.3):
    """k-reciprocal re-ranking (Zhong et al. 2017) with dense matrices, as the peers implement it."""
    feats = np.concatenate([q_feats, g_feats]).astype(np.float32)
    n_query, n_all = len(q_feats), len(feats)
    dist = np.power(2.0 - 2.0 * (feats @ feats.T), 2).astype(np.float32)
    dist = (dist / dist.max(axis=1, keepdims=True)).astype(np.float32)
    rank = np.argsort(dist, axis=1, kind="stable")
    weights = np.zeros_like(dist)
    half = int(np.around(k1 / 2.0))
    for i in range(n_all):
        forward = rank[i, :k1 + 1]
        reciprocal = forward[np.any(rank[forward, :k1 + 1] == i, axis=1)]
        expansion = reciprocal
        for candidate in reciprocal:
            c_forward = rank[candidate, :half + 1]
            c_reciprocal = c_forward[np.any(rank[c_forward, :half + 1] == candidate, axis=1)]
            if len(np.intersect1d(c_reciprocal, reciprocal)) > 2.0 / 3 * len(c_reciprocal):
                expansion = np.append(expansion, c_reciprocal)
        expansion = np.unique(expansion)
        w = np.exp(-dist[i, expansion])
        weights[i, expansion] = w / w.sum()
    if k2 != 1:
        weights = np.stack([weights[rank[i, :k2]].mean(axis=0) for i in range(n_all)])
    columns = [np.flatnonzero(weights[:, k]) for k in range(n_all)]   # the peers' inverted index
    jaccard = np.zeros((n_query, n_all), dtype=np.float32)
    for i in range(n_query):
        overlap = np.zeros(n_all, dtype=np.float32)
        for k in np.flatnonzero(weights[i]):
            overlap[columns[k]] += np.minimum(weights[i, k], weights[columns[k], k])
        jaccard[i] = 1 - overlap / (2.0 - overlap)
    final = jaccard * (1 - lambda_value) + dist[:n_query] * lambda_value
    return final[:, n_query:]


def dense_gnn_reranking(q_feats, g_feats, k1=26, k2=7, lambda_value=0.3):
    """GNN re-ranking (Zhang et al. 2020) as its code computes it: a dense N x N adjacency, each propagation
    one node at a time, in float64."""
    feats = np.concatenate([q_feats, g_feats]).astype(np.float64)
    n_query, n_all = len(q_feats), len(feats)
    cosine = feats @ feats.T
    rank = np.argsort(-cosine, axis=1, kind="stable")[:, :k1]
    weight = np.take_along_axis(cosine, rank, axis=1) ** 2
    adjacency = np.zeros((n_all, n_all))
    for i in range(n_all):
        adjacency[i, rank[i]] = 1
    if k2 != 1:
        for _ in range(2):
            adjacency = adjacency + adjacency.T
            spread = np.zeros_like(adjacency)
            for i in range(n_all):
                for j in range(k2):
                    spread[i] += weight[i, j] * adjacency[rank[i, j]]
            adjacency = spread / np.linalg.norm(spread, axis=1, keepdims=True)
    graph = adjacency[:n_query] @ adjacency[n_query:].T
    return (1 - lambda_value) * graph + lambda_value * cosine[:n_query, n_query:]


def bootstrap_loop(ap, draws, seed=0):
    """The 2.5th percentile of mAP over ``draws`` resamples of the queries, one draw per Python step."""
    rng = np.random.default_rng(seed)
    values = [ap[rng.integers(0, len(ap), len(ap))].mean() for _ in range(draws)]
    return float(np.percentile(values, 2.5))


def sorted_pairs_tpr(q_feats, q_pids, q_cams, g_feats, g_pids, g_cams, target_fpr):
    """TPR at ``target_fpr`` over every query-gallery pair (junk left out), from scikit-learn's ROC of all
    the scores at once: the straightforward way, sorting tens of millions of pairs."""
    from sklearn.metrics import roc_curve

    scores = q_feats @ g_feats.T
    same_person = q_pids[:, None] == g_pids[None, :]
    junk = (same_person & (q_cams[:, None] == g_cams[None, :])) | (g_pids == -1)[None, :]
    fpr, tpr, _ = roc_curve(same_person[~junk], scores[~junk])
    return float(tpr[fpr <= target_fpr].max())
