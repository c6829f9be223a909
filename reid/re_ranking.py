"""k-reciprocal re-ranking (Zhong, Zheng, Cao, Li: "Re-ranking Person Re-identification with
k-reciprocal Encoding", CVPR 2017), exact, in memory that grows with N * k1 instead of N^2.

The peers build four dense N x N matrices (distances, their argsort, V, the query-expanded V): about
8.6 GB at Market-1501 size (N = 23,100) and out of reach at MSMT17's 93,820. The same quantities need
far less:
  * the ranking is only ever read up to position k1 (and k2 <= k1 + 1): keep top-(k1+1) neighbour lists,
    found block by block from feature products;
  * V has a few dozen non-zeros per row: a sparse matrix; query expansion is a sparse product;
  * the Jaccard overlap sum_k min(V_ik, V_jk) runs over the shared non-zeros only.
Only the query x gallery result is dense. The distance between L2-normalised features is (2 - 2 cos)^2
divided by its row maximum, as in the peers' code; neighbour ties go to the lower index.
"""
import numpy as np
import scipy.sparse
import torch

from utils import UserError

BLOCK_ELEMENTS = 2 ** 24   # rows x N distances held at once


def raw_distance(block, feats):
    """(2 - 2 cos)^2 between a block of rows and every row, as the peers compute it (float32)."""
    return (2.0 - 2.0 * (block @ feats.T)).pow(2)


def neighbours(feats, count):
    """Each row's ``count`` nearest rows (ascending distance, ties by index) and its largest distance."""
    n = len(feats)
    rows = max(1, BLOCK_ELEMENTS // n)
    shift = max(1, (n - 1).bit_length())
    index = torch.arange(n, device=feats.device)
    lists, maxima = [], []
    for start in range(0, n, rows):
        dist = raw_distance(feats[start:start + rows], feats)
        maxima.append(dist.max(1).values)
        bits = (-dist + 0.0).view(torch.int32)   # ascending distance as descending integer keys
        keys = (torch.where(bits < 0, bits ^ 0x7FFFFFFF, bits).to(torch.int64) << shift) | ((1 << shift) - 1 - index)
        lists.append((keys.topk(count, dim=1).values & ((1 << shift) - 1)).neg() + (1 << shift) - 1)
    return torch.cat(lists).cpu().numpy(), torch.cat(maxima).cpu().numpy()


def reciprocal_mask(ranks, k):
    """mask[i, p]: the p-th of i's k nearest also has i among its k nearest."""
    mask = np.zeros((len(ranks), k), dtype=bool)
    rows = max(1, 2 ** 22 // (k * k))
    for start in range(0, len(ranks), rows):
        block = ranks[start:start + rows, :k]
        own = np.arange(start, start + len(block))[:, None, None]
        mask[start:start + rows] = (ranks[block, :k] == own).any(-1)
    return mask


def expansion_sets(ranks, k1):
    """Each row's k-reciprocal set, grown by the half-size sets of its members that overlap it by > 2/3.

    Returns a COO pair (rows, cols) without duplicates.
    """
    n, k, half = len(ranks), k1 + 1, int(np.around(k1 / 2.0)) + 1
    recip = reciprocal_mask(ranks, k)
    recip_half = reciprocal_mask(ranks, half)
    rows_out, cols_out = [], []
    block_rows = max(1, 2 ** 21 // (k * half * k))
    for start in range(0, n, block_rows):
        own, own_mask = ranks[start:start + block_rows, :k], recip[start:start + block_rows]
        cand_sets = ranks[own, :half]                    # (B, k, half): half-size neighbours of each member
        cand_mask = recip_half[own]                      # which of those are reciprocal
        inside = ((cand_sets[..., None] == own[:, None, None, :]) & own_mask[:, None, None, :]).any(-1)
        overlap = (inside & cand_mask).sum(-1)
        grow = own_mask & (overlap > 2.0 / 3 * cand_mask.sum(-1))
        members = np.where(own_mask, own, n)
        added = np.where(grow[..., None] & cand_mask, cand_sets, n).reshape(len(own), -1)
        every = np.sort(np.concatenate([members, added], axis=1), axis=1)
        fresh = np.ones_like(every, dtype=bool)
        fresh[:, 1:] = every[:, 1:] != every[:, :-1]
        fresh &= every < n
        local, where = np.nonzero(fresh)
        rows_out.append(local + start)
        cols_out.append(every[local, where])
    return np.concatenate(rows_out), np.concatenate(cols_out)


def encode(feats, ranks, maxima, k1, k2):
    """The sparse k-reciprocal feature V (N x N): Gaussian weights on each row's expansion set,
    normalised to sum 1, then averaged over the k2 nearest rows (query expansion)."""
    n = len(ranks)
    rows, cols = expansion_sets(ranks, k1)
    dots = np.empty(len(rows), dtype=np.float32)
    step = max(1, BLOCK_ELEMENTS // feats.shape[1])
    for start in range(0, len(rows), step):
        r = torch.as_tensor(rows[start:start + step], device=feats.device)
        c = torch.as_tensor(cols[start:start + step], device=feats.device)
        dots[start:start + step] = (feats[r] * feats[c]).sum(1).cpu().numpy()
    weights = np.exp(-(np.power(np.float32(2.0) - np.float32(2.0) * dots, 2) / maxima[rows]).astype(np.float32))
    weights = weights / np.bincount(rows, weights=weights, minlength=n)[rows]
    v = scipy.sparse.csr_matrix((weights.astype(np.float32), (rows, cols)), shape=(n, n))
    if k2 != 1:
        expand = scipy.sparse.csr_matrix((np.full(n * k2, 1.0 / k2, dtype=np.float32),
                                          (np.repeat(np.arange(n), k2), ranks[:, :k2].ravel())), shape=(n, n))
        v = (expand @ v).tocsr()
    return v


def jaccard_block(v_rows, gallery_columns, n_gallery):
    """1 - |min overlap| / (2 - |min overlap|) between some V rows and every gallery row."""
    coo = v_rows.tocoo()
    starts = gallery_columns.indptr[coo.col]
    counts = gallery_columns.indptr[coo.col + 1] - starts
    total = int(counts.sum())
    offsets = np.arange(total) - np.repeat(np.cumsum(counts) - counts, counts) + np.repeat(starts, counts)
    mins = np.minimum(np.repeat(coo.data, counts), gallery_columns.data[offsets])
    flat = np.repeat(coo.row.astype(np.int64), counts) * n_gallery + gallery_columns.indices[offsets]
    overlap = np.bincount(flat, weights=mins, minlength=v_rows.shape[0] * n_gallery)
    overlap = overlap.reshape(v_rows.shape[0], n_gallery).astype(np.float32)
    return 1 - overlap / (2 - overlap)


def jaccard_blocks(query_rows, gallery_columns, n_gallery, budget=2 ** 23):
    """Split the query rows so that each block expands to at most ``budget`` (row, column) pairs."""
    column_sizes = np.diff(gallery_columns.indptr).astype(np.float64)
    pattern = query_rows.copy()
    pattern.data[:] = 1
    cost = pattern @ column_sizes + n_gallery   # pairs to expand, plus the dense output row
    blocks, start, used = [], 0, 0.0
    for row, row_cost in enumerate(cost):
        if row > start and used + row_cost > budget:
            blocks.append((start, row))
            start, used = row, 0.0
        used += row_cost
    return blocks + [(start, len(cost))]


def check_neighbourhood(k1, k2, gallery_size):
    """The k1/k2 a gallery of ``gallery_size`` pictures can take: one line naming what to pass otherwise."""
    if k1 >= gallery_size:
        raise UserError(f"--k1 {k1} is not smaller than the {gallery_size} gallery pictures, so every picture "
                        f"would be everyone's neighbour", f"pass --k1 {max(1, min(20, gallery_size - 1))} or less "
                        "(the paper's 20 suits Market-1501)")
    if k2 > k1 + 1:
        raise UserError(f"--k2 {k2} is larger than --k1 + 1 ({k1 + 1}): query expansion reads only k1 + 1 "
                        "neighbours", f"pass --k2 {min(6, k1 + 1)} or raise --k1")


def re_ranking(q_feats, g_feats, k1=20, k2=6, lambda_value=0.3, device="cpu"):
    """Re-ranked query x gallery distances (float32 numpy, smaller = better) for L2-normalised features."""
    check_neighbourhood(k1, k2, len(g_feats))
    q = torch.as_tensor(np.asarray(q_feats, np.float32), device=device)
    g = torch.as_tensor(np.asarray(g_feats, np.float32), device=device)
    feats = torch.cat([q, g])
    n_query, n_gallery = len(q), len(g)
    ranks, maxima = neighbours(feats, k1 + 1)
    v = encode(feats, ranks, maxima, k1, k2)
    gallery_columns = v[n_query:].tocsc()
    final = np.empty((n_query, n_gallery), dtype=np.float32)
    for start, stop in jaccard_blocks(v[:n_query], gallery_columns, n_gallery):
        original = (raw_distance(q[start:stop], g).cpu().numpy() / maxima[start:stop, None]).astype(np.float32)
        jaccard = jaccard_block(v[start:stop], gallery_columns, n_gallery)
        final[start:stop] = jaccard * (1 - lambda_value) + original * lambda_value
    return final


METHODS = {"kreciprocal": (20, 6), "gnn": (26, 7)}   # --rerank METHOD: its paper's k1 and k2 for Market-1501


def add_arguments(parser):
    """evaluate_gpu.py's and demo.py's --rerank [METHOD] --k1 --k2 --lambda_value."""
    parser.add_argument("--rerank", nargs="?", const="kreciprocal", default=None, choices=list(METHODS),
                        help="re-rank: kreciprocal (Zhong et al. 2017; the default of a bare --rerank) or gnn "
                             "(Zhang et al. 2020, layumi's GPU-Re-Ranking)")
    parser.add_argument("--k1", type=int, default=None, help="re-ranking: neighbours (kreciprocal 20, gnn 26)")
    parser.add_argument("--k2", type=int, default=None,
                        help="re-ranking: neighbours of the query expansion or propagation (kreciprocal 6, gnn 7)")
    parser.add_argument("--lambda_value", type=float, default=0.3, help="re-ranking: weight of the original score")


def reranked_scores(method, q_feats, g_feats, k1=None, k2=None, lambda_value=0.3, device="cpu"):
    """Query x gallery scores after re-ranking by ``method`` (larger = better); k1/k2 None: its paper's."""
    k1 = METHODS[method][0] if k1 is None else k1
    k2 = METHODS[method][1] if k2 is None else k2
    if method == "gnn":
        from reid.gnn_reranking import gnn_reranking

        return gnn_reranking(q_feats, g_feats, k1, k2, lambda_value, device=device)
    return -re_ranking(q_feats, g_feats, k1, k2, lambda_value, device=device)
