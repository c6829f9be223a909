"""Compare training recipes on toy data: the practical's, the BoT preset and each metric loss, same budget.

Usage (after bash scripts/practical.sh has made data/Market/pytorch):
    python benchmarks/recipes.py --data_dir data/Market/pytorch --seeds 0 1 2
    python benchmarks/recipes.py --recipes baseline pk triplet arcface      # a few rows only
    python benchmarks/recipes.py --recipes baseline adv --attack            # robustness to ODFA queries
    python benchmarks/recipes.py --data_dir data/Market/pytorch lab/Market/pytorch --recipes baseline fast
        # several sets, e.g. drawn with toy_data.py --size 64x128 --nuisance 1.6 --clutter 8 --train_ids 60

Each run trains mobilenet_v3 from random weights on the CPU for --total_epoch epochs with the same
batch size, learning rate and warm-up (typed flags win over the preset), then runs test.py; the table
gives Rank@1 and mAP (trapezoid) as mean +- standard deviation over the seeds, beside the last epoch's
mAP on the held-out identities (prepare.py --val_ids, as the practical prepares the toy set) and the
classification accuracy on val; then each recipe against the baseline, seed by seed, with
evaluate_gpu.py --compare's paired bootstrap over queries: better, worse, or within noise. Runs go to
model/recipe_<name>_seed<k>/ (with several sets: recipe_<name>_set<i>_seed<k>/) and are resumed, not
redone, when the script is run again. With several sets, a recipe is judged by all its runs: the mean
Rank@1 with a 95 % interval over the runs, and its worst run against chance (a random ranking's Rank@1).
"""
import argparse
import csv
import os
import re
import sys
from contextlib import redirect_stdout
from io import StringIO

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from reid import recipes as metric_learning  # noqa: E402
from reid import features, intervals, runs  # noqa: E402
from reid.datasets import match_masks  # noqa: E402
import test as stage4  # noqa: E402
import train  # noqa: E402

# 16 identities x 2 pictures: with batch 32, K = 4 leaves 8 identities a batch, and mobilenet_v3 from random
# weights at lr 0.02 then does not learn at all (val acc 0.02 after 15 epochs; the same with
# pytorch-metric-learning's MPerClassSampler), while K = 2 reaches 0.89 (random batches: 0.82)
PK = ["--sampler", "pk", "--num_instances", "2"]
# the practical's recipe (scripts/practical.sh's train.py flags; tests/test_docs.py checks they agree)
PRACTICAL = ["--backbone", "mobilenet_v3", "--no_pretrained", "--lr", "0.01", "--warm_epoch", "3"]
# "fast" was the practical's recipe until it proved to sit on the edge of stability (docs/training.md)
RECIPES = {"baseline": [], "fast": ["--lr", "0.02", "--warm_epoch", "1"], "slow": ["--lr", "0.005"],
           "bot": ["--recipe", "bot"], "bot_k2": ["--recipe", "bot", "--num_instances", "2"], "pk": PK,
           "adv": ["--adv", "1"],   # layumi's adversarial training, R = 1 every 10 steps: judge it with --attack
           # each metric loss on top of the cross-entropy, all with the P x K sampler so that row "pk" is their reference
           **{loss: PK + [f"--{loss}"] for loss in metric_learning.LOSSES}}


def build_parser():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--data_dir", nargs="+", default=["data/Market/pytorch"],
                   help="one or more prepared toy pytorch/ folders (prepare.py --val_ids 10, as the practical)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="random seeds")
    p.add_argument("--total_epoch", type=int, default=15, help="the budget, the same for every recipe")
    p.add_argument("--batchsize", type=int, default=32, help="pictures per batch, the same for every recipe")
    p.add_argument("--attack", action="store_true",
                   help="also test every run with its queries attacked by ODFA (test.py --attack odfa): a column of "
                        "the mAP under attack, and the paired comparison of it")
    p.add_argument("--recipes", nargs="+", choices=list(RECIPES), default=list(RECIPES),
                   help="rows of the table: baseline (the practical's: lr 0.01, 3 warm-up epochs), fast (lr 0.02, "
                        "1 warm-up epoch), slow (lr 0.005), bot, bot_k2 (bot with 2 pictures per identity), pk (cross-entropy with the "
                        "P x K sampler), or a loss (with the P x K sampler)")
    return p


def run_name(recipe, data_set, seed):
    return f"recipe_{recipe}_{data_set}seed{seed}"


def run(recipe, data_set, data_dir, seed, args):
    """Train and test one run (resumed when it exists); returns its Rank@1, mAP and a random ranking's Rank@1."""
    name = run_name(recipe, data_set, seed)
    common = ["--gpu_ids", "-1", "--name", name, "--data_dir", data_dir, *PRACTICAL, "--batchsize", str(args.batchsize),
              "--total_epoch", str(args.total_epoch), "--seed", str(seed)]
    resume = ["--resume"] if os.path.exists(os.path.join(runs.run_dir(name), "opts.yaml")) else []
    try:
        train.main(common + RECIPES[recipe] + resume)
    except SystemExit:   # a run stopped as diverged scores what its last good epoch saved
        pass
    output = StringIO()
    with redirect_stdout(output):
        stage4.main(["--gpu_ids", "-1", "--name", name, "--test_dir", data_dir, "--output",
                     os.path.join(runs.run_dir(name), "result.mat")] + (["--attack", "odfa"] if args.attack else []))
    scores = re.findall(r"Rank@1:([\d.]+) .* mAP:([\d.]+)", output.getvalue())   # clean, then attacked
    attacked = float(scores[1][1]) if args.attack else float("nan")
    return float(scores[0][0]), float(scores[0][1]), chance_rank1(os.path.join(runs.run_dir(name), "result.mat")), attacked


def chance_rank1(path):
    """A random ranking's expected Rank@1: per query, its correct matches over the pictures it is ranked among."""
    result = features.load_features(path)
    good, junk = match_masks(result["query_label"], result["query_cam"], result["gallery_label"], result["gallery_cam"])
    return float((good.sum(1) / np.maximum((~junk).sum(1), 1)).mean())


def unseen_and_val(name):
    """The last epoch's held-out retrieval mAP and classification val accuracy, from summary.csv."""
    with open(os.path.join(runs.run_dir(name), "summary.csv")) as handle:
        last = list(csv.DictReader(handle))[-1]
    return float(last.get("unseen_mAP") or "nan"), float(last["val_acc"])


def paired_lines(recipes, names, reference, result="result.mat"):
    """Each recipe against ``reference`` on the same queries, run by run (evaluate_gpu.py --compare's
    paired bootstrap): is the difference in mAP beyond what the choice of queries explains? ``result``:
    the runs' clean features, or result_odfa.mat (attacked queries)."""
    evaluation = argparse.Namespace(multi=None, rerank=False, ap="trapezoid")
    under = " under the ODFA attack" if result != "result.mat" else ""
    lines = [f"\nmAP{under} against {reference} on the same queries (paired bootstrap, 95 % interval, points):"]
    for recipe in recipes:
        verdicts, cells = [], []
        for data_set, seed in names:
            paths = [os.path.join(runs.run_dir(run_name(r, data_set, seed)), result) for r in (reference, recipe)]
            with redirect_stdout(StringIO()):
                difference = intervals.compare_runs(*paths, evaluation, seed=seed)[3]["mAP"]
            verdicts.append(difference.verdict)
            cells.append(f"{difference.points:+.1f} ({difference.low:.1f} to {difference.high:.1f})")
        lines.append(f"{recipe:<12}" + "  ".join(cells) + f"   better in {verdicts.count('better')} of {len(names)}, "
                     f"worse in {verdicts.count('worse')}, within noise in {verdicts.count('noise')}")
    return lines


def mean_interval(values, draws=10000, seed=0):
    """The mean and a 95 % bootstrap interval of it over runs."""
    values = np.asarray(values)
    means = values[np.random.default_rng(seed).integers(len(values), size=(draws, len(values)))].mean(1)
    return values.mean(), np.percentile(means, 2.5), np.percentile(means, 97.5)


def report(args, sets, results, held_out):
    print(f"\nmobilenet_v3, random init, {args.total_epoch} epochs, batch {args.batchsize}, seeds {args.seeds}"
          + "".join(f"\n  {label or 'the set'}: {path}" for label, path in sets))
    print(f"{'recipe':<10}{'Rank@1 (%), 95% interval':>28}{'worst / chance':>16}{'mAP (%)':>14}{'unseen mAP':>12}"
          f"{'val acc':>9}{'attacked mAP':>14}   per run (Rank@1 / mAP)")
    for recipe, scores in results.items():
        values, chosen_by = 100 * np.array(scores), 100 * held_out[recipe]
        mean, low, high = mean_interval(values[:, 0])
        worst = values[:, 0].argmin()
        print(f"{recipe:<10}{mean:>10.1f} ({low:.1f} to {high:.1f}) ± {values[:, 0].std():<4.1f}"
              f"{values[worst, 0]:>8.1f} / {values[worst, 2]:<5.1f}{values[:, 1].mean():>8.1f} ± {values[:, 1].std():<4.1f}"
              f"{chosen_by[:, 0].mean():>10.1f}{chosen_by[:, 1].mean():>9.1f}"
              f"{values[:, 3].mean():>8.1f} ± {values[:, 3].std():<4.1f}   "
              + ", ".join(f"{r:.1f}/{m:.1f}" for r, m, *_ in values))


def main(argv=None):
    args = build_parser().parse_args(argv)
    sets = [(f"set{i}_" if len(args.data_dir) > 1 else "", path) for i, path in enumerate(args.data_dir, 1)]
    names = [(label, seed) for label, _ in sets for seed in args.seeds]
    results = {recipe: [run(recipe, label, path, seed, args) for label, path in sets for seed in args.seeds]
               for recipe in args.recipes}
    held_out = {recipe: np.array([unseen_and_val(run_name(recipe, label, seed)) for label, seed in names])
                for recipe in args.recipes}
    report(args, [(label.rstrip("_"), path) for label, path in sets], results, held_out)
    reference = "baseline" if "baseline" in args.recipes else args.recipes[0]
    others = [r for r in args.recipes if r != reference]
    for line in paired_lines(others, names, reference) + (paired_lines(others, names, reference, "result_odfa.mat")
                                                          if args.attack else []):
        print(line)


if __name__ == "__main__":
    main()
