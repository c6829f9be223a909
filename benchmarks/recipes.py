"""Compare training recipes on the toy data: the baseline, the BoT preset and each metric loss, same budget.

Usage (after bash scripts/practical.sh has made data/Market/pytorch):
    python benchmarks/recipes.py --data_dir data/Market/pytorch --seeds 0 1 2
    python benchmarks/recipes.py --recipes baseline pk triplet arcface      # a few rows only

Each run trains mobilenet_v3 from random weights on the CPU for --total_epoch epochs with the same
batch size, learning rate and warm-up (typed flags win over the preset), then runs test.py; the table
gives Rank@1 and mAP (trapezoid) as mean +- standard deviation over the seeds. Runs go to
model/recipe_<name>_seed<k>/ and are resumed, not redone, when the script is run again.
"""
import argparse
import os
import re
import sys
from contextlib import redirect_stdout
from io import StringIO

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from reid import recipes as metric_learning  # noqa: E402
from reid import runs  # noqa: E402
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
    p.add_argument("--recipes", nargs="+", choices=list(RECIPES), default=list(RECIPES),
                   help="rows of the table: baseline, bot, bot_k2 (bot with 2 pictures per identity), "
                        "pk (cross-entropy with the P x K sampler), or a loss (with the P x K sampler)")
    return p


def run(recipe, seed, args):
    name = f"recipe_{recipe}_seed{seed}"
    common = ["--gpu_ids", "-1", "--name", name, "--data_dir", args.data_dir, "--backbone", "mobilenet_v3",
              "--no_pretrained", "--batchsize", "32", "--lr", "0.02", "--warm_epoch", "1",
              "--total_epoch", str(args.total_epoch), "--seed", str(seed)]
    resume = ["--resume"] if os.path.exists(os.path.join(runs.run_dir(name), "opts.yaml")) else []
    train.main(common + RECIPES[recipe] + resume)
    output = StringIO()
    with redirect_stdout(output):
        stage4.main(["--gpu_ids", "-1", "--name", name, "--test_dir", args.data_dir, "--output",
                     os.path.join(runs.run_dir(name), "result.mat")])
    rank1, mAP = re.search(r"Rank@1:([\d.]+) .* mAP:([\d.]+)", output.getvalue()).groups()
    return float(rank1), float(mAP)


def main(argv=None):
    args = build_parser().parse_args(argv)
    results = {recipe: [run(recipe, seed, args) for seed in args.seeds] for recipe in args.recipes}
    print(f"\nmobilenet_v3, random init, {args.total_epoch} epochs, batch 32, seeds {args.seeds}")
    print(f"{'recipe':<12}{'Rank@1 (%)':>16}{'mAP (%)':>16}   per seed (Rank@1 / mAP)")
    for recipe, scores in results.items():
        values = 100 * np.array(scores)
        print(f"{recipe:<12}{values[:, 0].mean():>9.1f} ± {values[:, 0].std():<4.1f}"
              f"{values[:, 1].mean():>9.1f} ± {values[:, 1].std():<4.1f}   "
              + ", ".join(f"{r:.1f}/{m:.1f}" for r, m in values))


if __name__ == "__main__":
    main()
