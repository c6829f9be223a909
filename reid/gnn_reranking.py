"""GNN re-ranking (Zhang, Jiang, Zheng, Tan, Ding, Yang: "Understanding Image Retrieval Re-Ranking: A Graph
Neural Network Perspective", 2020), the method of layumi's GPU-Re-Ranking/, in plain PyTorch on any device.

Every picture, query or gallery, is a node of a k-nearest-neighbour graph:
  1. the adjacency row of node i has a 1 at each of its k1 nearest nodes by cosine (itself included);
  2. two rounds of propagation: A <- A + A^T, then each row becomes the sum of the rows of its k2 nearest
     nodes, each weighted by its cosine squared, and is divided by its L2 norm;
  3. the score of (query, gallery) is (1 - lambda) cos(A_query, A_gallery) + lambda cos(f_query, f_gallery).
The original builds dense N x N matrices with two compiled CUDA extensions (2.1 GB each at Market-1501 size).
Here A is a sparse matrix: k1 non-zeros a row to begin with, a few hundred after the rounds; the neighbour
lists are found block by block, and only the query x gallery scores are dense, also block by block.
The paper's defaults for Market-1501 are k1 26, k2 7, lambda 0.3.
"""
import warnings

import torch

from utils import UserError

K1, K2, LAMBDA = 26, 7, 0.3
BLOCK_ELEMENTS = 2 ** 24   # scores held at once while finding neighbours or scoring


def nearest(feats, count):
    """Each row's ``count`` largest cosines with every row (itself included) and their indices, descending."""
    rows = max(1, BLOCK_ELEMENTS // len(feats))
    found = [torch.topk(feats[start:start + rows] @ feats.T, count, dim=1) for start in range(0, len(feats), rows)]
    return torch.cat([f.values for f in found]), torch.cat([f.indices for f in found])


def sparse_rows(columns, values, size):
    """An N x size sparse COO matrix whose row i holds ``values[i]`` at ``columns[i]``."""
    rows = torch.arange(len(columns), device=columns.device).repeat_interleave(columns.shape[1])
    return torch.sparse_coo_tensor(torch.stack([rows, columns.reshape(-1)]), values.reshape(-1),
                                   (len(columns), size), check_invariants=False).coalesce()


def unit_rows(matrix):
    """A coalesced sparse COO matrix with each row divided by its L2 norm."""
    rows, values = matrix.indices()[0], matrix.values()
    norms = torch.zeros(matrix.shape[0], dtype=values.dtype, device=values.device).index_add_(0, rows, values * values)
    return torch.sparse_coo_tensor(matrix.indices(), values / norms.sqrt()[rows], matrix.shape,
                                   check_invariants=False, is_coalesced=True)   # the same, already sorted, indices


def propagate(adjacency, ranks, weights, k2):
    """Two rounds of A <- rows of (A + A^T) summed over each node's k2 nearest, weighted, L2-normalised."""
    spread = sparse_rows(ranks[:, :k2], weights[:, :k2], len(ranks))
    with warnings.catch_warnings():   # torch calls its sparse product "beta"; the tests check it against a dense one
        warnings.simplefilter("ignore", UserWarning)
        for _ in range(2):
            adjacency = unit_rows(torch.sparse.mm(spread, (adjacency + adjacency.t()).coalesce()))
    return adjacency


def check_neighbourhood(k1, k2, nodes):
    if not 1 <= k2 <= k1 < nodes:
        raise UserError(f"--k1 {k1} and --k2 {k2} do not fit {nodes} pictures: GNN re-ranking needs "
                        "1 <= k2 <= k1 < query + gallery pictures", f"pass e.g. --k1 {min(K1, nodes - 1)} "
                        f"--k2 {min(K2, nodes - 1)}")


def gnn_reranking(q_feats, g_feats, k1=K1, k2=K2, lambda_value=LAMBDA, device="cpu"):
    """Re-ranked query x gallery scores (float32 numpy, larger = better) for L2-normalised features."""
    q = torch.as_tensor(q_feats, dtype=torch.float32, device=device)
    g = torch.as_tensor(g_feats, dtype=torch.float32, device=device)
    feats = torch.cat([q, g])
    check_neighbourhood(k1, k2, len(feats))
    cosines, ranks = nearest(feats, k1)
    adjacency = sparse_rows(ranks, torch.ones_like(cosines), len(feats))
    if k2 != 1:   # the original skips the propagation when k2 is 1
        adjacency = propagate(adjacency, ranks, cosines * cosines, k2)
    gallery = adjacency.index_select(0, torch.arange(len(q), len(feats), device=q.device)).t().coalesce()
    scores = torch.empty(len(q), len(g), dtype=torch.float32)
    rows = max(1, BLOCK_ELEMENTS // max(1, len(g)))
    for start in range(0, len(q), rows):
        block = adjacency.index_select(0, torch.arange(start, min(start + rows, len(q)), device=q.device))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            graph = torch.sparse.mm(block, gallery).to_dense()
        scores[start:start + rows] = ((1 - lambda_value) * graph + lambda_value * (q[start:start + rows] @ g.T)).cpu()
    return scores.numpy()
