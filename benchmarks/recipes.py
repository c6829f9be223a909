"""Compare training recipes on the toy data: the baseline, the BoT preset and each metric loss, same budget.

Usage (after bash scripts/practical.sh has made data/Market/pytorch):
    python benchmarks/recipes.py --data_dir data/Market/pytorch --seeds 0 1 2
    python benchmarks/recipes.py --recipes baseline pk triplet arcface      # a few rows only

Each run trains mobilenet_v3 from random weights on the CPU for --total_epoch epochs with the same
batch size, learning rate and warm-up (typed flags win over the preset), then runs test.py; the table
gives Rank@1 and mAP (trapezoid) as mean +- standard deviation over the seeds, beside the last epoch's
mAP on the held-out identities (prepare.py --val_ids, as the practical prepares the toy set) and the
classification accuracy on val; then each recipe against the baseline, seed by seed, with
evaluate_gpu.py --compare's paired bootstrap over queries: better, worse, or within noise. Runs go to
model/recipe_<name>_seed<k>/ and are resumed, not redone, when the script is run again.
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
from reid import intervals, runs  # noqa: E402
import test as stage4  # noqa: E402
import train  # noqa: E402

# 16 identities x 2 pictures: with batch 32, K = 4 leaves 8 identities a batch, and mobilenet_v3 from random
# weights at lr 0.02 then does not learn at all (val acc 0.02 after 15 epochs; the same with
# pytorch-metric-learning's MPerClassSampler), while K = 2 reaches 0.89 (random batches: 0.82)
PK = ["--sampler", "pk", "--num_instances", "2"]
RECIPES = {"baseline": [], "bot": ["--recipe", "bot"], "bot_k2": ["--recipe", "bot", "--num_instances", "2"], "pk": PK,
           # each metric loss on top of the cross-entropy, all with the P x K sampler so that row "pk" is their reference
           **{loss: PK + [f"--{loss}"] for loss in metric_learning.LOSSES}}


def build_parser():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--data_dir", default="data/Market/pytorch", help="the toy pytorch/ folder")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="random seeds")
    p.add_argument("--total_epoch", type=int, default=15, help="the budget, the same for every recipe")
    p.add_argument("--batchsize", type=int, default=32, help="pictures per batch, the same for every recipe")
    p.add_argument("--recipes", nargs="+", choices=list(RECIPES), default=list(RECIPES),
                   help="rows of the table: baseline, bot, bot_k2 (bot with 2 pictures per identity), "
                        "pk (cross-entropy with the P x K sampler), or a loss (with the P x K sampler)")
    return p


def run(recipe, seed, args):
    name = f"recipe_{recipe}_seed{seed}"
    common = ["--gpu_ids", "-1", "--name", name, "--data_dir", args.data_dir, "--backbone", "mobilenet_v3",
              "--no_pretrained", "--batchsize", str(args.batchsize), "--lr", "0.02", "--warm_epoch", "1",
              "--total_epoch", str(args.total_epoch), "--seed", str(seed)]
    resume = ["--resume"] if os.path.exists(os.path.join(runs.run_dir(name), "opts.yaml")) else []
    train.main(common + RECIPES[recipe] + resume)
    output = StringIO()
    with redirect_stdout(output):
        stage4.main(["--gpu_ids", "-1", "--name", name, "--test_dir", args.data_dir, "--output",
                     os.path.join(runs.run_dir(name), "result.mat")])
    rank1, mAP = re.search(r"Rank@1:([\d.]+) .* mAP:([\d.]+)", output.getvalue()).groups()
    return float(rank1), float(mAP)


def unseen_and_val(recipe, seed):
    """The last epoch's held-out retrieval mAP and classification val accuracy, from summary.csv."""
    with open(os.path.join(runs.run_dir(f"recipe_{recipe}_seed{seed}"), "summary.csv")) as handle:
        last = list(csv.DictReader(handle))[-1]
    return float(last.get("unseen_mAP") or "nan"), float(last["val_acc"])


def paired_lines(recipes, seeds, reference):
    """Each recipe against ``reference`` on the same queries, seed by seed (evaluate_gpu.py --compare's
    paired bootstrap): is the difference in mAP beyond what the choice of queries explains?"""
    evaluation = argparse.Namespace(multi=None, rerank=False, ap="trapezoid")
    lines = [f"\nmAP against {reference} on the same queries (paired bootstrap, 95 % interval, points):"]
    for recipe in recipes:
        verdicts, cells = [], []
        for seed in seeds:
            paths = [os.path.join(runs.run_dir(f"recipe_{name}_seed{seed}"), "result.mat") for name in (reference, recipe)]
            with redirect_stdout(StringIO()):
                difference = intervals.compare_runs(*paths, evaluation, seed=seed)[3]["mAP"]
            verdicts.append(difference.verdict)
            cells.append(f"{difference.points:+.1f} ({difference.low:.1f} to {difference.high:.1f})")
        lines.append(f"{recipe:<12}" + "  ".join(cells) + f"   better in {verdicts.count('better')} of {len(seeds)}, "
                     f"worse in {verdicts.count('worse')}, within noise in {verdicts.count('noise')}")
    return lines


def main(argv=None):
    args = build_parser().parse_args(argv)
    results = {recipe: [run(recipe, seed, args) for seed in args.seeds] for recipe in args.recipes}
    held_out = {recipe: np.array([unseen_and_val(recipe, seed) for seed in args.seeds]) for recipe in args.recipes}
    print(f"\nmobilenet_v3, random init, {args.total_epoch} epochs, batch {args.batchsize}, seeds {args.seeds}")
    print(f"{'recipe':<12}{'Rank@1 (%)':>16}{'mAP (%)':>16}{'unseen mAP':>14}{'val acc':>10}   per seed (Rank@1 / mAP)")
    for recipe, scores in results.items():
        values, chosen_by = 100 * np.array(scores), 100 * held_out[recipe]
        print(f"{recipe:<12}{values[:, 0].mean():>9.1f} ± {values[:, 0].std():<4.1f}"
              f"{values[:, 1].mean():>9.1f} ± {values[:, 1].std():<4.1f}"
              f"{chosen_by[:, 0].mean():>14.1f}{chosen_by[:, 1].mean():>10.1f}   "
              + ", ".join(f"{r:.1f}/{m:.1f}" for r, m in values))
    reference = "baseline" if "baseline" in args.recipes else args.recipes[0]
    for line in paired_lines([r for r in args.recipes if r != reference], args.seeds, reference):
        print(line)


if __name__ == "__main__":
    main()
