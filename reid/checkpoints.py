"""The training state: what train.py saves after every epoch (weights, optimiser, schedule, history, RNG)
and what --resume restores from it."""
import os

import torch
from torch import nn

from reid import files, runs


STATE = "state_last.pth"


def save_checkpoints(run_dir, net, epoch, args, history, ctx):
    """net_last.pth (and net_XXX.pth every 10 epochs), then the full state for --resume, atomically."""
    weights = runs.save_weights(os.path.join(run_dir, runs.checkpoint_name("last")), unwrap(net))
    if epoch % 10 == 0:
        runs.save_weights(os.path.join(run_dir, runs.checkpoint_name(epoch)), unwrap(net))
    state = {"epoch": epoch, "model": weights, "optimizer": ctx.optimizer.state_dict(),
             "scheduler": ctx.scheduler.state_dict(), "scaler": ctx.scaler.state_dict(),
             "history": history, "rng": runs.rng_states(),
             "metric": ctx.metric.state_dict() if ctx.metric is not None else {},
             "average": ctx.average.state_dict() if ctx.average is not None else {}}
    files.atomic_write(os.path.join(run_dir, STATE), lambda tmp: torch.save(state, tmp))


def restore(run_dir, net, ctx):
    """Load state_last.pth into the model, optimizer, scheduler and scaler; returns (epoch, history)."""
    path = os.path.join(run_dir, STATE)
    if not os.path.isfile(path):
        print(f"{path} does not exist (stopped during the first epoch): starting from epoch 1")
        return 0, []
    state = torch.load(path, map_location="cpu", weights_only=True)
    unwrap(net).load_state_dict(state["model"])
    for key in ("optimizer", "scheduler", "scaler", "metric", "average"):
        if getattr(ctx, key) is not None:
            getattr(ctx, key).load_state_dict(state[key])
    torch.set_rng_state(state["rng"]["torch"])
    return state["epoch"], state["history"]


def unwrap(net):
    return net.module if isinstance(net, nn.DataParallel) else net
