"""Re-ranking at Market-1501 size: GNN re-ranking against k-reciprocal re-ranking, time, memory and mAP, one run.

Usage:
    python benchmarks/rerank_speed.py              # on the CPU
    python benchmarks/rerank_speed.py --device cuda

Each row runs in a fresh process on the same features: 3,368 queries and 19,732 gallery pictures of 751
people seen by 6 cameras, 512-d, each a person's own direction plus a camera's plus noise (seeded), so that
re-ranking has neighbourhoods to exploit and the mAP means something. A row reports its wall time, the memory
it added on top of its inputs (peak resident set minus the resident set once the inputs exist; on CUDA
the peak GPU memory), and Rank@1 and mAP under the Market-1501 protocol.
"""
import argparse
import os
import resource
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from eval_speed import MARKET, ROOT, resident_bytes  # noqa: E402

PEOPLE, CAMERAS, DIM = 751, 6, 512


def clustered_problem(n_query, n_gallery, seed=0, noise=2.0, camera_shift=0.6):
    """Features of people (a direction each) seen by cameras (a shared offset each), with noise."""
    rng = np.random.default_rng(seed)
    people = rng.standard_normal((PEOPLE, DIM), dtype=np.float32)
    cameras = rng.standard_normal((CAMERAS, DIM), dtype=np.float32)
    pids = rng.integers(1, PEOPLE + 1, n_query + n_gallery)
    cams = rng.integers(1, CAMERAS + 1, n_query + n_gallery)
    feats = people[pids - 1] + camera_shift * cameras[cams - 1]
    feats += noise * rng.standard_normal(feats.shape, dtype=np.float32)
    feats /= np.linalg.norm(feats, axis=1, keepdims=True)
    return feats[:n_query], pids[:n_query], cams[:n_query], feats[n_query:], pids[n_query:], cams[n_query:]


def worker(method, device, queue):
    sys.path[:0] = [ROOT]
    import torch

    from reid.metrics import evaluate
    from reid.re_ranking import reranked_scores

    data = clustered_problem(*MARKET)
    before = resident_bytes()
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    started = time.perf_counter()
    scores = None if method == "none" else reranked_scores(method, data[0], data[3], device=device)
    seconds = time.perf_counter() - started
    extra = (torch.cuda.max_memory_allocated() if device == "cuda"
             else max(0, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - before))
    metrics = evaluate(*data, scores=scores)
    queue.put((seconds, extra, metrics.rank(1), metrics.mAP))


def build_parser():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"], help="where re-ranking runs")
    return parser


def main(argv=None):
    import multiprocessing

    args = build_parser().parse_args(argv)
    print(f"{os.cpu_count()} CPU cores; {MARKET[0]} x {MARKET[1]}, {PEOPLE} people, {CAMERAS} cameras, "
          f"{DIM}-d clustered features; re-ranking on {args.device}")
    print(f"{'re-ranking':<26}{'seconds':>9}{'extra memory':>14}{'Rank@1':>8}{'mAP':>8}")
    context = multiprocessing.get_context("spawn")
    times = {}
    for method, label in (("none", "none"), ("kreciprocal", "k-reciprocal (k1 20, k2 6)"), ("gnn", "GNN (k1 26, k2 7)")):
        queue = context.Queue()
        process = context.Process(target=worker, args=(method, args.device, queue))
        process.start()
        seconds, extra, rank1, mAP = queue.get()
        process.join()
        times[method] = seconds
        cost = f"{'—':>9}{'—':>14}" if method == "none" else f"{seconds:>9.2f}{extra / 2**30:>11.2f} GB"
        print(f"{label:<26}{cost}{100 * rank1:>8.1f}{100 * mAP:>8.1f}", flush=True)
    print(f"GNN re-ranking takes {times['gnn'] / times['kreciprocal']:.2f}x the time of k-reciprocal re-ranking")


if __name__ == "__main__":
    main()
