"""The training state: what train.py saves after every epoch (weights, optimiser, schedule, history, RNG)
and what --resume restores from it."""
import os

import torch
from torch import nn

from reid import distributed, files, recipes, runs, validation
from utils import UserError


STATE = "state_last.pth"


def save_checkpoints(run_dir, net, epoch, args, history, ctx):
    """net_last.pth (net_XXX.pth every 10 epochs, net_best.pth when the held-out mAP is the best so far),
    then the full state for --resume, atomically."""
    resume = f"then continue with python train.py --name {os.path.basename(run_dir)} --resume"
    weights = runs.save_weights(os.path.join(run_dir, runs.checkpoint_name("last")), unwrap(net), resume)
    if epoch % 10 == 0:
        runs.save_weights(os.path.join(run_dir, runs.checkpoint_name(epoch)), unwrap(net), resume)
    if validation.is_best(history):   # the highest held-out mAP so far (prepare.py --val_ids)
        runs.save_weights(os.path.join(run_dir, runs.checkpoint_name("best")), unwrap(net), resume)
    state = {"epoch": epoch, "model": weights, "optimizer": ctx.optimizer.state_dict(),
             "scheduler": ctx.scheduler.state_dict(), "scaler": ctx.scaler.state_dict(),
             "history": history, "rng": runs.rng_states(),
             "metric": ctx.metric.state_dict() if ctx.metric is not None else {},
             "average": ctx.average.state_dict() if ctx.average is not None else {}}
    files.atomic_write(os.path.join(run_dir, STATE), lambda tmp: torch.save(state, tmp), resume)


STATE_KEYS = ("epoch", "model", "optimizer", "scheduler", "scaler", "history", "rng", "metric", "average")


def restore(run_dir, net, ctx, args):
    """Load state_last.pth into the model, optimizer, scheduler and scaler; returns (epoch, history).

    A damaged file, or one that does not fit the network built now (another number of identities),
    is one line before anything is changed. A new --total_epoch recomputes the schedule for it.
    """
    path = os.path.join(run_dir, STATE)
    if not os.path.isfile(path):
        print(f"{path} does not exist (stopped during the first epoch): starting from epoch 1")
        return 0, []
    restart = f"start the run again (python train.py --name {os.path.basename(run_dir)} --overwrite, with its other flags)"
    again = "train a new --name (test.py still reads this run's net_*.pth), or start it again with --overwrite"
    # rank 0 reads opts.yaml for every rank: it rewrites the file once resumed, and a late rank would read that
    saved = distributed.from_main(ctx.world, lambda: files.load_yaml(os.path.join(run_dir, "opts.yaml"), "train.py"))
    if saved.get("nclasses", args.nclasses) != args.nclasses:
        raise UserError(f"{run_dir} was trained on {saved['nclasses']} identities (--data_dir "
                        f"{saved.get('data_dir', '?')}), but the training folder given now holds {args.nclasses}",
                        "resume with the dataset it was trained on, or train a new --name")
    state = runs.load_weights(path, again)
    missing = [key for key in STATE_KEYS if key not in state]
    if missing:
        raise UserError(f"{path} lacks {', '.join(missing)} (not written by this train.py)",
                        f"--resume cannot continue from it: {restart}, or train a new --name (test.py still reads its "
                        "net_*.pth)")
    try:
        unwrap(net).load_state_dict(state["model"])
        for key in ("optimizer", "scheduler", "scaler", "metric", "average"):
            if getattr(ctx, key) is not None:
                getattr(ctx, key).load_state_dict(state[key])
    except (RuntimeError, ValueError, KeyError) as err:
        first = str(err).strip().splitlines()[-1].strip()
        raise UserError(f"{path} does not fit the network and options of this run ({first})",
                        "keep this file and the opts.yaml beside it from the same run (--resume builds the network "
                        f"from opts.yaml), or {restart}") from None
    torch.set_rng_state(state["rng"]["torch"])
    if saved.get("total_epoch", args.total_epoch) != args.total_epoch:
        ctx.scheduler = recipes.build_scheduler(ctx.optimizer, args, done=state["epoch"])
        print(f"{run_dir}: --total_epoch {saved['total_epoch']} -> {args.total_epoch}; the learning-rate schedule "
              f"is recomputed for {args.total_epoch} epochs (lr now {ctx.optimizer.param_groups[-1]['lr']:.4g})")
    return state["epoch"], state["history"]


def unwrap(net):
    """The network itself, under torch.compile's and DistributedDataParallel's wrappers (either order)."""
    while True:
        if isinstance(net, (nn.DataParallel, nn.parallel.DistributedDataParallel)):
            net = net.module
        elif hasattr(net, "_orig_mod"):   # torch.compile's OptimizedModule
            net = net._orig_mod
        else:
            return net
