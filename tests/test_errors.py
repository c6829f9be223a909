"""Every usage mistake, argparse's own included, ends in one ``error:`` line, exit 2, no usage block."""
import errno

import pytest

import demo
import evaluate_gpu
import prepare
import prepare_Duke
import test as stage4
import toy_data
import train
import utils
from conftest import one_error_line, run_cli
from reid import files


@pytest.mark.parametrize("main, argv, fragment", [
    (train.main, ["--batchsize", "0"], "--batchsize"),
    (train.main, ["--batchsize", "many"], "invalid int value"),
    (train.main, ["--no_such_flag"], "unrecognized arguments"),
    (train.main, ["--fp16", "--bf16"], "--fp16 and --bf16"),
    (demo.main, ["--query_index", "seven"], "--query_index"),
    (stage4.main, ["--batchsize", "0"], "--batchsize"),
    (evaluate_gpu.main, ["--ap", "other"], "--ap"),
    (prepare.main, ["--link", "move"], "--link"),
    (prepare_Duke.main, ["--link", "move"], "--link"),
    (toy_data.main, ["--train_ids", "1"], "--train_ids"),
])
def test_usage_mistakes_are_one_line(main, argv, fragment, capsys):
    code, out, err = run_cli(main, argv, capsys)
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1, err
    assert lines[0].startswith("error: ") and fragment in lines[0] and "--help" in lines[0]
    assert "usage:" not in err + out


def test_the_help_hint_names_the_script(capsys):
    run_cli(prepare_Duke.main, ["--link", "move"], capsys)
    code, _, err = run_cli(prepare_Duke.main, ["--link", "move"], capsys)
    assert "python prepare_Duke.py --help" in err


def test_long_messages_are_cut_to_a_readable_line(capsys):
    @utils.cli_main
    def fails(argv=None):
        raise utils.UserError("unknown keys " + ", ".join(f"key{i}" for i in range(2000)), "remove them")

    code, _, err = run_cli(fails, [], capsys)
    line = err.strip()
    assert code == 2 and "\n" not in line and len(line) < 2 * utils.MAX_MESSAGE and line.endswith("— remove them")


def refuse(*args, **kwargs):
    raise PermissionError(errno.EACCES, "Permission denied")


@pytest.mark.parametrize("main, argv", [
    (toy_data.main, ["--out", "{tmp}/toy"]),
    (stage4.main, ["--output", "{tmp}/result.mat"]),
    (demo.main, ["--report", "--out", "{tmp}/report"]),
])
def test_an_output_folder_that_refuses_files_is_one_line_before_any_work(main, argv, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(files.tempfile, "TemporaryFile", refuse)
    code, _, err = run_cli(main, [a.format(tmp=tmp_path) for a in argv], capsys)
    line = one_error_line(err)
    assert code == 2 and "cannot write in" in line and "Permission denied" in line, err


def test_an_output_folder_that_cannot_be_made_is_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(files.os, "makedirs", refuse)
    code, _, err = run_cli(toy_data.main, ["--out", tmp_path / "new" / "toy"], capsys)
    assert code == 2 and "could not create the folder" in one_error_line(err)


def test_a_model_folder_that_refuses_files_is_one_line(prepared_market, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(files.tempfile, "TemporaryFile", refuse)
    argv = ["--gpu_ids", "-1", "--name", "x", "--data_dir", prepared_market, "--backbone", "mobilenet_v3",
            "--no_pretrained", "--total_epoch", "1"]
    code, _, err = run_cli(train.main, argv, capsys)
    line = one_error_line(err)
    assert code == 2 and "cannot write in" in line and "./model" in line, err


def test_a_file_the_system_refuses_is_one_line_other_os_errors_keep_their_traceback(capsys):
    @utils.cli_main
    def reads(argv=None):
        raise PermissionError(errno.EACCES, "Permission denied", "/data/locked.jpg")

    code, _, err = run_cli(reads, [], capsys)
    assert code == 2 and "/data/locked.jpg: Permission denied" in one_error_line(err)

    @utils.cli_main
    def breaks(argv=None):
        raise OSError(errno.EIO, "Input/output error", "/data/x.jpg")

    with pytest.raises(OSError):
        breaks([])
