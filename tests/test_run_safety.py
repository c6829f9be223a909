"""train.py never loses data: --name is a plain folder under model/, --overwrite deletes only train.py's
own runs, and a failed start leaves no run folder behind."""

import pytest

import model
import train
from reid import checkpoints, runs
import utils
from conftest import one_error_line, run_cli, snapshot
from test_train import FAST, in_tmp, train_run  # noqa: F401  (in_tmp is a fixture)


@pytest.mark.parametrize("name", ["..", ".", "", "../x", "a/b", "/tmp/x", " padded"])
def test_name_that_is_not_a_plain_folder_is_refused(name, prepared_market, in_tmp, capsys):
    train_run(prepared_market, "precious", "--total_epoch", "1")
    (in_tmp / "dataset.txt").write_text("the user's own file")
    before = snapshot(in_tmp)
    capsys.readouterr()
    code, _, err = run_cli(train.main, ["--data_dir", prepared_market, "--name", name, *FAST, "--total_epoch", "1",
                                        "--overwrite"], capsys)
    assert code == 2 and "--name" in one_error_line(err)
    assert snapshot(in_tmp) == before


def test_overwrite_deletes_only_a_folder_train_made(prepared_market, in_tmp, capsys):
    notes = in_tmp / "model" / "notes"
    notes.mkdir(parents=True)
    (notes / "thesis.tex").write_text("months of work")
    before = snapshot(in_tmp)
    code, _, err = run_cli(train.main, ["--data_dir", prepared_market, "--name", "notes", *FAST, "--total_epoch", "1",
                                        "--overwrite"], capsys)
    assert code == 2 and "not delete" in one_error_line(err)
    assert snapshot(in_tmp) == before


def test_overwrite_replaces_a_run_train_made(prepared_market, in_tmp, capsys):
    run_dir = in_tmp / train_run(prepared_market, "again", "--total_epoch", "1")
    (run_dir / "stale.txt").write_text("from the old run")
    code, _, _ = run_cli(train.main, ["--data_dir", prepared_market, "--name", "again", *FAST, "--total_epoch", "1",
                                      "--overwrite"], capsys)
    assert code == 0 and not (run_dir / "stale.txt").exists() and (run_dir / "net_last.pth").exists()


def test_a_run_still_training_is_never_overwritten_nor_resumed_twice(prepared_market, in_tmp, capsys):
    train_run(prepared_market, "busy", "--total_epoch", "1")
    before = snapshot(in_tmp)
    capsys.readouterr()
    with runs.run_lock("busy"):   # what the first train.py holds while it trains
        for extra in (["--overwrite"], ["--resume", "--total_epoch", "2"]):
            code, _, err = run_cli(train.main, ["--data_dir", prepared_market, "--name", "busy", *FAST,
                                                "--total_epoch", "1", *extra], capsys)
            assert code == 2 and "is writing model/busy right now" in one_error_line(err), extra
    assert snapshot(in_tmp) == before
    code, _, _ = run_cli(train.main, ["--data_dir", prepared_market, "--name", "busy", *FAST, "--total_epoch", "1",
                                      "--overwrite"], capsys)
    assert code == 0   # once the first run has ended, the same command works


def test_failed_start_leaves_no_folder_and_the_retry_works(prepared_market, in_tmp, monkeypatch, capsys):
    real_build = model.build_model

    def offline(*args, **kwargs):
        raise utils.UserError("cannot fetch ImageNet weights for mobilenet_v3 (offline?)", "pass --no_pretrained")

    monkeypatch.setattr(model, "build_model", offline)
    code, _, err = run_cli(train.main, ["--data_dir", prepared_market, "--name", "first", *FAST,
                                        "--total_epoch", "1"], capsys)
    assert code == 2 and "offline" in one_error_line(err)
    assert not (in_tmp / "model" / "first").exists()
    monkeypatch.setattr(model, "build_model", real_build)
    code, _, _ = run_cli(train.main, ["--data_dir", prepared_market, "--name", "first", *FAST, "--total_epoch", "1"],
                         capsys)
    assert code == 0 and (in_tmp / "model" / "first" / "net_last.pth").exists()


def test_empty_folder_from_an_older_failed_start_is_reused(prepared_market, in_tmp, capsys):
    (in_tmp / "model" / "empty").mkdir(parents=True)
    code, _, _ = run_cli(train.main, ["--data_dir", prepared_market, "--name", "empty", *FAST, "--total_epoch", "1"],
                         capsys)
    assert code == 0


def test_test_and_demo_refuse_a_path_as_name(capsys):
    import demo
    import test as stage4

    for main in (stage4.main, demo.main):
        code, _, err = run_cli(main, ["--name", "../elsewhere"], capsys)
        assert code == 2 and "--name" in one_error_line(err)


@pytest.mark.parametrize("flag, value", [("--lr", "-0.1"), ("--lr", "0"), ("--weight_decay", "-1"),
                                         ("--erasing_p", "1.5"), ("--droprate", "1"), ("--warm_epoch", "-2")])
def test_impossible_values_are_refused(flag, value, capsys):
    code, _, err = run_cli(train.main, [*FAST, flag, value], capsys)
    assert code == 2 and flag in one_error_line(err)


def test_a_diverging_run_stops_at_once_and_keeps_the_last_good_checkpoint(prepared_market, in_tmp, monkeypatch,
                                                                          capsys):
    saved, real_save, real_loss = [], checkpoints.save_checkpoints, train.loss_and_scores

    def save_and_remember(run_dir, net, epoch, *args):
        real_save(run_dir, net, epoch, *args)
        saved.append((run_dir / "net_last.pth").read_bytes() if hasattr(run_dir, "read_bytes") else
                     open(f"{run_dir}/net_last.pth", "rb").read())

    def exploding_after_one_epoch(outputs, labels, criterion, metric=None):
        loss, scores = real_loss(outputs, labels, criterion, metric)
        return (loss * float("nan") if saved else loss), scores

    monkeypatch.setattr(checkpoints, "save_checkpoints", save_and_remember)
    monkeypatch.setattr(train, "loss_and_scores", exploding_after_one_epoch)
    code, _, err = run_cli(train.main, ["--data_dir", prepared_market, "--name", "diverges", *FAST,
                                        "--total_epoch", "3"], capsys)
    errors = [line for line in err.replace("\r", "\n").splitlines() if "error:" in line]
    assert code == 2 and len(errors) == 1 and errors[0].startswith("error: "), err[-2000:]
    assert "nan" in errors[0] and "--lr" in errors[0]
    assert len(saved) == 1 and (in_tmp / "model" / "diverges" / "net_last.pth").read_bytes() == saved[0]
