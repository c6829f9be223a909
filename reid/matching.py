"""The protocol's query-gallery pairs, walked in chunks of scores: what the ranking and verification share.

A Market-1501 test set has 66 million query-gallery pairs, but each query has only a few dozen pictures
of its own person in the gallery. So the scores come in chunks of queries (memory stays bounded), and
the protocol's correct matches and junk come as short lists of (query row, gallery index) pairs rather
than as queries x gallery masks. Gallery pictures with pid JUNK_PID are junk for every query: they are
dropped before any score is computed.
"""
import numpy as np
import torch

from reid.datasets import JUNK_PID


def gallery_by_pid(g_pids):
    """(order, sorted pids): the gallery's indices sorted by pid, for ``match_lists`` to look pids up."""
    sorted_pids, order = torch.sort(g_pids, stable=True)
    return order, sorted_pids


def match_lists(q_pids, q_camids, by_pid, g_camids, same_camera_junk=True):
    """datasets.match_masks as lists, for a gallery without JUNK_PID pictures. Torch int64 tensors;
    ``by_pid``: gallery_by_pid(g_pids).

    Returns ``(good, junk)``, each a pair (rows, columns): ``good`` the query's person seen by another
    camera, ``junk`` the query's person seen by the query's own camera. ``same_camera_junk=False``:
    every picture of the query's person is good.
    """
    order, sorted_pids = by_pid
    first = torch.searchsorted(sorted_pids, q_pids)
    counts = torch.searchsorted(sorted_pids, q_pids, right=True) - first
    rows = torch.repeat_interleave(torch.arange(len(q_pids), device=q_pids.device), counts)
    starts = counts.cumsum(0) - counts
    cols = order[first[rows] + torch.arange(len(rows), device=q_pids.device) - starts[rows]]
    same_camera = (q_camids[rows] == g_camids[cols]) & same_camera_junk   # False: every camera is "another"
    return (rows[~same_camera], cols[~same_camera]), (rows[same_camera], cols[same_camera])


class Workspace:
    """Tensors used again from chunk to chunk: a fresh tensor of tens of megabytes per chunk costs more
    in page faults than the arithmetic done on it."""

    def __init__(self, elements, device):
        self.elements, self.device, self.buffers = elements, device, {}

    def take(self, name, shape, dtype):
        """The buffer ``name`` as a tensor of ``shape`` (at most ``elements`` entries) and ``dtype``."""
        if name not in self.buffers:
            self.buffers[name] = torch.empty(self.elements, dtype=dtype, device=self.device)
        return self.buffers[name][:shape[0] * shape[1]].view(shape)


def protocol_chunks(q_feats, q_pids, q_camids, g_feats, g_pids, g_camids, chunk_elements, device="cpu",
                    scores=None, same_camera_junk=True):
    """Yield ``(block, good, junk, work)`` for consecutive chunks of queries, in query order.

    ``block`` [chunk, kept gallery] holds the scores: q_feats @ g_feats.T (float32), or the rows of
    ``scores`` [Nq, Ng] when given; gallery columns with pid JUNK_PID are left out of both. ``good`` and
    ``junk`` are match_lists of the chunk (rows counted from the chunk's first query); ``work`` a
    Workspace of the chunk's size. ``block`` is overwritten by the next chunk.
    """
    tensor = lambda a, dtype: torch.as_tensor(np.asarray(a), dtype=dtype, device=device)  # noqa: E731
    q_pids, q_camids = tensor(q_pids, torch.int64).ravel(), tensor(q_camids, torch.int64).ravel()
    g_pids, g_camids = tensor(g_pids, torch.int64).ravel(), tensor(g_camids, torch.int64).ravel()
    kept = g_pids != JUNK_PID
    every_column = bool(kept.all())
    if scores is None:
        q_feats = tensor(q_feats, torch.float32)
        g_feats = tensor(g_feats, torch.float32)[kept].T.contiguous()   # [D, kept]: the GEMM reads it in rows
    g_pids, g_camids = g_pids[kept], g_camids[kept]
    by_pid = gallery_by_pid(g_pids)
    step = max(1, chunk_elements // max(1, len(g_pids)))
    work = Workspace(step * len(g_pids), device)
    for start in range(0, len(q_pids), step):
        rows = slice(start, start + step)
        if scores is None:
            block = torch.mm(q_feats[rows], g_feats, out=work.take("scores", (len(q_pids[rows]), len(g_pids)),
                                                                     torch.float32))
        else:
            block = tensor(scores[rows], torch.float32)
            block = block if every_column else block[:, kept]
        yield (block, *match_lists(q_pids[rows], q_camids[rows], by_pid, g_camids, same_camera_junk), work)
