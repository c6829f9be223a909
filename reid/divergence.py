"""Training that goes wrong while its loss stays finite: the signs in the epoch curves, a warning, then a stop.

train.py stops at once on a nan or inf loss. A run can also fail with finite numbers: the training loss
climbs back above where it started, or far above its best, or the validation loss runs orders of
magnitude above the training loss (BatchNorm's running statistics no longer describe the network).
``check`` reads the epoch rows train.py keeps (``train_loss``, ``val_loss``) after every epoch and says
what it sees: warning lines while the run may still recover, a ``UserError`` once it is hopeless, raised
before that epoch's checkpoints are written, so the previous epoch's are kept.
"""
import itertools
import math

from utils import UserError

RISE_WARN, RISE_STOP = 2, 4            # epochs in a row with the training loss above its first epoch's
ABOVE_BEST_WARN, ABOVE_BEST_STOP = 1.5, 3.0   # the training loss as a multiple of its best before it (stop: twice)
ABSURD = 10.0                          # ... this many times its best stops at once
GAP_WARN, GAP_STOP = 30.0, 1000.0      # the validation loss as a multiple of the training loss
GAP_STOP_EPOCHS = 3                    # ... for this many epochs in a row at GAP_WARN also stops
FIX = "train again with a smaller --lr (or a longer --warm_epoch), with --overwrite or a new --name"


def trailing(items, holds):
    """How many of the last ``items`` in a row ``holds`` is true for."""
    count = 0
    for item in reversed(items):
        if not holds(item):
            break
        count += 1
    return count


def show_running(sums, seen, bar, training, steps, read_every):
    """Show the running loss and accuracy (``sums``: their totals over ``seen`` pictures) on ``bar``; a nan or
    inf training loss stops the run at once (nothing of the epoch is saved)."""
    total_loss, correct = sums.tolist()
    if training and not math.isfinite(total_loss):
        bar.close()   # so that the error line starts a line of its own
        late = f" (read every {read_every} steps)" if read_every > 1 else ""
        raise UserError(f"the training loss became {total_loss / seen} at step {steps} of this epoch{late}: the run "
                        "diverged", "the last finished epoch's checkpoints are kept; start again with a smaller --lr "
                        "(and --overwrite, or a new --name)")
    bar.set_postfix(loss=f"{total_loss / seen:.3f}", acc=f"{correct / seen:.3f}")


def add_arguments(parser):
    parser.add_argument("--divergence", choices=("stop", "warn"), default="stop",
                        help="a run that diverges with a finite loss (far above its start or its best, or a "
                             "validation loss orders of magnitude above it): stop, keeping the previous epoch's "
                             "checkpoints, or only warn and go on (a nan or inf loss always stops)")


def stop(what):
    raise UserError(f"{what}: the run diverged", f"the previous epoch's checkpoints are kept; {FIX}")


def check(history, warm_epochs=0, stopping=True):
    """Warning lines about the run so far (``history``: one dict per epoch, oldest first); raises UserError
    when it is hopeless, or with ``stopping=False`` (``--divergence warn``) says so in a warning. The first
    ``warm_epochs`` epochs and the one after them (the learning rate has just reached its full value) are
    never counted against the run."""
    try:
        return signs(history, warm_epochs)
    except UserError as hopeless:
        if stopping:
            raise
        return [f"{hopeless.what}; going on (--divergence warn)"]


def signs(history, warm_epochs):
    if len(history) < 2:
        return []
    losses = [row["train_loss"] for row in history]
    start, last, epoch = losses[0], losses[-1], len(history)
    bests = list(itertools.accumulate(losses, min))
    best = bests[-2]
    above = [loss / max(before, 1e-12) for loss, before in zip(losses[1:], bests)]   # each epoch's over its best
    counted = losses[warm_epochs + 1:]
    rising = trailing(counted, lambda loss: loss > start)
    val_loss = history[-1]["val_loss"]
    gap = val_loss / max(last, 1e-12)
    if rising >= RISE_STOP:
        stop(f"the training loss ({last:.3f}) has been above its first epoch's ({start:.3f}) for {rising} "
             f"epochs, at epoch {epoch}")
    if above[-1] > ABSURD or (len(above) > 1 and min(above[-2:]) > ABOVE_BEST_STOP):
        stop(f"the training loss ({last:.4g}) is {above[-1]:.1f} times its best ({best:.3f}) at epoch {epoch}")
    wide = trailing(history[warm_epochs + 1:], lambda row: row["val_loss"] > GAP_WARN * row["train_loss"])
    if not math.isfinite(val_loss) or gap > GAP_STOP or wide >= GAP_STOP_EPOCHS:
        stop(f"the validation loss is {val_loss:.3g} at epoch {epoch}, {gap:.0f} times the training loss: the network "
             "no longer works outside training (BatchNorm's running statistics, or weights that diverged)")
    warnings = []
    if rising >= RISE_WARN:
        warnings.append(f"the training loss ({last:.3f}) has been above its first epoch's ({start:.3f}) for "
                        f"{rising} epochs: the learning rate may be too high; if it goes on rising, {FIX}")
    if above[-1] > ABOVE_BEST_WARN and epoch > warm_epochs + 1:
        warnings.append(f"the training loss ({last:.3f}) is {above[-1]:.1f} times its best ({best:.3f}): "
                        f"training is unstable; if it does not come down, {FIX}")
    if gap > GAP_WARN and math.isfinite(gap):
        warnings.append(f"the validation loss ({val_loss:.3g}) is {gap:.0f} times the training "
                        "loss: BatchNorm's running statistics lag behind weights that change fast; it usually "
                        f"settles within an epoch or two, and if it does not, {FIX}")
    return warnings
