"""Evaluation and re-ranking: time and peak memory against straightforward baselines, in one run.

Usage:
    python benchmarks/eval_speed.py                 # Market-1501 size, plus MSMT17-size evaluation
    python benchmarks/eval_speed.py --msmt_rerank   # also re-rank at MSMT17 size (minutes, ~10 GB)
    python benchmarks/eval_speed.py --skip_dense    # leave out the dense re-ranking (8+ GB, ~2 minutes)

"default command" is what evaluate_gpu.py does without flags: the ranking, the bootstrap intervals and the
verification counts (from the ranking's own pass); "evaluate" is the ranking alone.
Every measurement runs in a fresh process on random L2-normalised 512-d features with random ids
and cameras (seeded), and reports its wall time and the memory it added on top of its inputs
(peak resident set minus the resident set once the inputs exist). Baselines: a per-query NumPy loop
in the layumi style (benchmarks/reference.py), dense k-reciprocal re-ranking with N x N matrices, a
Python loop over the bootstrap draws, and verification by sorting every pair's score (scikit-learn's
roc_curve).
"""
import argparse
import multiprocessing
import os
import resource
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MARKET = (3368, 19732)
MSMT17 = (11659, 82161)


def problem(n_query, n_gallery, dim=512, seed=0):
    rng = np.random.default_rng(seed)
    feats = rng.standard_normal((n_query + n_gallery, dim), dtype=np.float32)
    feats /= np.linalg.norm(feats, axis=1, keepdims=True)
    pids = rng.integers(1, max(2, n_gallery // 26), n_query + n_gallery)
    cams = rng.integers(1, 7, n_query + n_gallery)
    return (feats[:n_query], pids[:n_query], cams[:n_query], feats[n_query:], pids[n_query:], cams[n_query:])


def resident_bytes():
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def worker(task, sizes, queue):
    sys.path[:0] = [ROOT, os.path.join(ROOT, "benchmarks")]
    import evaluate_gpu
    from reid import intervals, re_ranking, verification
    import reference

    data = problem(*sizes)
    per_query = evaluate_gpu.evaluate(*data) if task.startswith("bootstrap") else None   # not timed
    before = resident_bytes()
    started = time.perf_counter()
    if task == "evaluate":
        value = evaluate_gpu.evaluate(*data).mAP
    elif task == "default command":   # what evaluate_gpu.py prints by default: ranking, intervals, verification
        metrics = evaluate_gpu.evaluate(*data, pairs=True)
        intervals.interval_line(metrics, intervals.DRAWS, 0)
        verification.summary_lines(metrics.pairs)
        value = metrics.mAP
    elif task == "bootstrap":
        value = intervals.bootstrap_intervals(per_query)["mAP"][0]
    elif task == "bootstrap loop":
        value = reference.bootstrap_loop(per_query.ap, intervals.DRAWS)
    elif task == "verification":
        counts = verification.pair_counts(*data)
        value = verification.operating_point(counts, 1e-3)[1]
    elif task == "sorted pairs":
        value = reference.sorted_pairs_tpr(*data, 1e-3)
    elif task == "per-query loop":
        value = reference.layumi_style(*data)[1]
    elif task == "re-rank":
        value = float(re_ranking.re_ranking(data[0], data[3])[:5, :5].sum())
    else:
        value = float(reference.dense_re_ranking(data[0], data[3])[:5, :5].sum())
    seconds = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    queue.put((seconds, max(0, peak - before), value))


def measure(task, sizes):
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    process = context.Process(target=worker, args=(task, sizes, queue))
    process.start()
    result = queue.get()
    process.join()
    return result


def build_parser():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--skip_dense", action="store_true", help="leave out the dense re-ranking baseline")
    parser.add_argument("--msmt_rerank", action="store_true", help="also re-rank at MSMT17 size")
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    rows = [("default command", MARKET, "per-query loop"), ("evaluate", MARKET, "per-query loop"),
            ("per-query loop", MARKET, None), ("re-rank", MARKET, "dense")]
    rows += [] if args.skip_dense else [("dense", MARKET, None)]
    rows += [("bootstrap", MARKET, "bootstrap loop"), ("bootstrap loop", MARKET, None),
             ("verification", MARKET, "sorted pairs"), ("sorted pairs", MARKET, None)]
    rows += [("default command", MSMT17, None), ("evaluate", MSMT17, None)]
    rows += [("re-rank", MSMT17, None)] if args.msmt_rerank else []
    print(f"{os.cpu_count()} CPU cores; random 512-d features")
    print(f"{'task':<16}{'queries x gallery':>20}{'seconds':>10}{'extra memory':>14}  result")
    results = {}
    for task, sizes, _ in rows:
        seconds, extra, value = measure(task, sizes)
        results[(task, sizes)] = (seconds, value)
        print(f"{task:<16}{f'{sizes[0]} x {sizes[1]}':>20}{seconds:>10.2f}{extra / 2**30:>11.2f} GB  {value:.6f}",
              flush=True)
    for task, sizes, baseline in rows:
        if baseline and (baseline, sizes) in results:
            ratio = results[(baseline, sizes)][0] / results[(task, sizes)][0]
            print(f"{task} runs at {ratio:.1f}x the speed of {baseline} at {sizes[0]} x {sizes[1]}")


if __name__ == "__main__":
    main()
