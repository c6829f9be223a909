"""Training that goes wrong with a finite loss says so: a warning while it may recover, a stop (and the last
good checkpoint kept) when it is hopeless; a merely noisy run hears nothing."""
import pytest

import train
from conftest import run_cli
from reid import checkpoints, divergence
from test_train import FAST, in_tmp  # noqa: F401  (in_tmp is a fixture)
from utils import UserError


def curves(train_losses, val_losses=None):
    val_losses = val_losses or [loss * 1.1 for loss in train_losses]
    return [{"train_loss": t, "val_loss": v} for t, v in zip(train_losses, val_losses)]


def verdicts(history, warm_epochs=0):
    """check() after every epoch: 'ok', 'warn' or 'stop' per epoch, stopping at the first stop."""
    seen = []
    for epoch in range(1, len(history) + 1):
        try:
            seen.append("warn" if divergence.check(history[:epoch], warm_epochs) else "ok")
        except UserError:
            seen.append("stop")
            break
    return seen


# a run that learns steadily, with the tenfold drop of the learning rate after epoch 10
STEADY = curves([4.456, 4.21, 3.95, 3.61, 3.20, 2.83, 2.47, 2.13, 1.85, 1.62, 0.98, 0.80, 0.67, 0.58, 0.51],
                   [4.615, 4.45, 4.30, 3.90, 3.40, 3.05, 2.72, 2.40, 2.10, 1.95, 0.74, 0.62, 0.56, 0.52, 0.50])


def test_a_noisy_run_that_learns_hears_nothing():
    noisy = curves([4.4, 4.1, 4.2, 3.8, 3.9, 3.3, 3.5, 2.9, 3.0, 2.5], [4.6, 4.3, 6.0, 4.1, 9.0, 3.6, 3.9, 3.1, 3.2, 2.8])
    assert verdicts(noisy) == ["ok"] * 10
    assert verdicts(STEADY, warm_epochs=1) == ["ok"] * 15


def test_a_loss_that_climbs_above_its_start_warns_then_stops():
    climbing = curves([4.1, 3.9, 4.2, 4.3, 4.35, 4.4, 4.5])
    assert verdicts(climbing) == ["ok", "ok", "ok", "warn", "warn", "stop"]


def test_the_warm_up_and_the_epoch_after_it_are_not_held_against_the_run():
    late_start = curves([4.4, 4.6, 4.7, 4.3, 4.0])
    assert verdicts(late_start, warm_epochs=1) == ["ok"] * 5
    assert verdicts(late_start, warm_epochs=0)[2] == "warn"


def test_a_loss_far_above_its_best_warns_then_stops():
    assert verdicts(curves([4.0, 2.0, 1.0, 1.6])) == ["ok", "ok", "ok", "warn"]
    assert verdicts(curves([4.0, 2.0, 1.0, 3.5, 1.2])) == ["ok", "ok", "ok", "warn", "ok"]   # one bad epoch
    assert verdicts(curves([4.0, 2.0, 1.0, 3.5, 3.2])) == ["ok", "ok", "ok", "warn", "stop"]
    assert verdicts(curves([4.0, 2.0, 1.0, 12.0])) == ["ok", "ok", "ok", "stop"]   # ten times at once


def test_a_validation_loss_that_explodes_warns_and_stops_when_it_stays_or_is_absurd():
    once = curves([4.4, 4.0, 3.6, 3.2], [4.6, 200.0, 3.9, 3.4])
    assert verdicts(once) == ["ok", "warn", "ok", "ok"]
    stays = curves([4.4, 4.0, 3.6, 3.2, 3.0], [4.6, 200.0, 300.0, 250.0, 3.0])
    assert verdicts(stays) == ["ok", "warn", "warn", "stop"]
    absurd = curves([4.4, 4.0], [4.6, 1e5])
    assert verdicts(absurd) == ["ok", "stop"]
    assert verdicts(curves([4.4, 4.0], [4.6, float("nan")])) == ["ok", "stop"]


def test_a_finite_divergence_stops_train_py_and_keeps_the_last_good_checkpoint(prepared_market, in_tmp, monkeypatch,
                                                                                capsys):
    """The training loss reads 20 times higher from the third epoch on (finite): the run stops in that epoch,
    with one error line, and net_last.pth is the second epoch's."""
    saved, real_save, real_loss = [], checkpoints.save_checkpoints, train.loss_and_scores

    def save_and_remember(run_dir, net, epoch, *args):
        real_save(run_dir, net, epoch, *args)
        saved.append(open(f"{run_dir}/net_last.pth", "rb").read())

    def blowing_up(outputs, labels, criterion, metric=None):
        loss, scores = real_loss(outputs, labels, criterion, metric)
        return (loss * 20 if len(saved) >= 2 else loss), scores

    monkeypatch.setattr(checkpoints, "save_checkpoints", save_and_remember)
    monkeypatch.setattr(train, "loss_and_scores", blowing_up)
    code, out, err = run_cli(train.main, ["--data_dir", prepared_market, "--name", "blows", *FAST,
                                          "--total_epoch", "5"], capsys)
    errors = [line for line in err.replace("\r", "\n").splitlines() if "error:" in line]
    assert code == 2 and len(errors) == 1 and "times its best" in errors[0] and "--lr" in errors[0], err[-2000:]
    assert out.count("\nepoch ") + out.startswith("epoch ") == 2
    assert len(saved) == 2 and (in_tmp / "model" / "blows" / "net_last.pth").read_bytes() == saved[1]


def test_a_too_high_learning_rate_is_stopped_while_the_loss_is_finite(prepared_market, in_tmp, capsys):
    fast = [flag if flag != "0.02" else "0.5" for flag in FAST]   # --lr 0.5: finite, but a hundred times too high
    code, _, err = run_cli(train.main, ["--data_dir", prepared_market, "--name", "hot", *fast, "--total_epoch", "6"],
                           capsys)
    errors = [line for line in err.replace("\r", "\n").splitlines() if "error:" in line]
    assert code == 2 and len(errors) == 1 and "diverged" in errors[0] and "--lr" in errors[0], err[-2000:]
    assert (in_tmp / "model" / "hot" / "net_last.pth").exists()


def test_divergence_warn_goes_on_where_stop_would_stop():
    hopeless = curves([4.4, 4.0], [4.6, 1e5])
    with pytest.raises(UserError):
        divergence.check(hopeless)
    assert "going on (--divergence warn)" in divergence.check(hopeless, stopping=False)[0]


@pytest.mark.parametrize("history", [[], curves([4.0])])
def test_one_epoch_says_nothing(history):
    assert divergence.check(history) == []
