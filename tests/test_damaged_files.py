"""Files a user can damage, values a stage cannot use: each is one ``error:`` line, exit 2, nothing lost.

Every test damages something on generated data, runs the stage as a user would and checks the exit
code, the single line (what is wrong, how to fix it) and that nothing else changed.
"""
import argparse
import collections
import errno
import os
import shutil

import numpy as np
import pytest
import scipy.io
import torch
import yaml

import demo
import evaluate_gpu
import test as stage4
import train
from conftest import one_error_line, run_cli, snapshot
from reid import checkpoints, features, files
from test_test import run_test, workdir  # noqa: F401  (workdir is a fixture)
from test_train import FAST


def resume(data_dir, capsys, *extra):
    return run_cli(train.main, ["--data_dir", data_dir, "--name", "toy", "--resume", "--gpu_ids", "-1",
                                "--num_workers", "0", *extra], capsys)


def pickled_object(path):
    torch.save({"weights": argparse.Namespace(lr=0.1)}, path)


def truncated(path):
    data = open(path, "rb").read()
    open(path, "wb").write(data[:len(data) // 3])


DAMAGE = {
    "empty": (lambda path: open(path, "wb").close(), "is empty (0 bytes)"),
    "truncated": (truncated, "is damaged or cut short"),
    "pickle payload": (pickled_object, "loading those can run arbitrary code, so it is refused"),
    "not a state_dict": (lambda path: torch.save([torch.zeros(2)], path), "holds a list, not a state_dict"),
}


@pytest.mark.parametrize("damage", DAMAGE)
def test_damaged_weights_file(damage, workdir, prepared_market, capsys):
    spoil, expected = DAMAGE[damage]
    spoil(workdir / "model/toy/net_last.pth")
    before = snapshot(workdir)
    code, _, err = run_test(prepared_market, capsys)
    line = one_error_line(err)
    assert code == 2 and "net_last.pth" in line and expected in line and "--which_epoch" in line
    assert "weights_only" not in line   # never the advice to switch the safety off
    assert snapshot(workdir) == before


@pytest.mark.parametrize("damage", DAMAGE)
def test_damaged_training_state(damage, workdir, prepared_market, capsys):
    spoil, expected = DAMAGE[damage]
    spoil(workdir / "model/toy/state_last.pth")
    before = snapshot(workdir)
    code, _, err = resume(prepared_market, capsys, "--total_epoch", "6")
    line = one_error_line(err)
    assert code == 2 and "state_last.pth" in line and expected in line and "weights_only" not in line
    assert snapshot(workdir) == before


def test_training_state_of_another_program(workdir, prepared_market, capsys):
    torch.save({"model": {}, "epoch": 3}, workdir / "model/toy/state_last.pth")
    code, _, err = resume(prepared_market, capsys, "--total_epoch", "6")
    assert code == 2 and "lacks optimizer" in one_error_line(err)


@pytest.mark.parametrize("key, value, stage", [("linear_num", "512", "test"), ("nclasses", 6.0, "test"),
                                               ("stride", 3, "test"), ("total_epoch", "3", "train"),
                                               ("lr", True, "train")])
def test_hand_edited_opts_yaml_with_a_wrong_type(key, value, stage, workdir, prepared_market, capsys):
    path = workdir / "model/toy/opts.yaml"
    saved = yaml.safe_load(path.read_text())
    path.write_text(yaml.safe_dump({**saved, key: value}))
    before = snapshot(workdir)
    code, _, err = (run_test if stage == "test" else resume)(prepared_market, capsys)
    line = one_error_line(err)
    assert code == 2 and f"opts.yaml: {key} is {value!r}" in line
    assert snapshot(workdir) == before


@pytest.mark.parametrize("stage", ["test", "train"])
def test_opts_yaml_saved_in_another_encoding_is_one_line(stage, workdir, prepared_market, capsys):
    path = workdir / "model/toy/opts.yaml"
    path.write_bytes(path.read_bytes() + "# notes: r\xe9sum\xe9\n".encode("latin-1"))   # an editor's Latin-1
    before = snapshot(workdir)
    code, _, err = (run_test if stage == "test" else resume)(prepared_market, capsys)
    assert code == 2 and "opts.yaml is not UTF-8 text" in one_error_line(err)
    assert snapshot(workdir) == before


def test_resume_on_a_dataset_with_other_identities(workdir, prepared_market, capsys):
    data = shutil.copytree(prepared_market, workdir / "fewer")
    person = sorted(os.listdir(data / "train"))[0]
    shutil.rmtree(data / "train" / person)
    shutil.rmtree(data / "val" / person, ignore_errors=True)
    before = snapshot(workdir / "model")
    code, _, err = resume(data, capsys, "--total_epoch", "6")
    line = one_error_line(err)
    assert code == 2 and "trained on 6 identities" in line and "holds 5" in line
    assert snapshot(workdir / "model") == before


def test_a_full_disk_while_saving_keeps_the_previous_checkpoint(prepared_market, tmp_path, monkeypatch, capsys):
    """The second epoch's state cannot be written (torch's own error on a full device): one line, and
    --resume then continues from the first epoch's intact state."""
    monkeypatch.chdir(tmp_path)
    real_save = torch.save
    saves = collections.Counter()

    def disk_full_at_second_state(obj, path, *args, **kwargs):
        if "state_last.pth" in str(path):
            saves["state"] += 1
            if saves["state"] == 2:
                return real_save(obj, "/dev/full")   # the write fails as on a full disk
        return real_save(obj, path, *args, **kwargs)

    monkeypatch.setattr(torch, "save", disk_full_at_second_state)
    code, _, err = run_cli(train.main, ["--data_dir", prepared_market, "--name", "full", *FAST,
                                        "--total_epoch", "2"], capsys)
    line = err.strip().splitlines()[-1]
    assert code == 2 and "Traceback" not in err
    assert "could not write model/full/state_last.pth (No space left on device)" in line
    assert "the previous state_last.pth is intact" in line and "--resume" in line
    assert not [name for name in os.listdir("model/full") if ".tmp-" in name]
    assert torch.load("model/full/state_last.pth", weights_only=True)["epoch"] == 1
    monkeypatch.setattr(torch, "save", real_save)
    code, out, err = run_cli(train.main, ["--data_dir", prepared_market, "--name", "full", *FAST, "--resume"], capsys)
    assert code == 0 and "epochs 2..2" in out, err


def test_atomic_write_that_fails_names_the_cause(tmp_path):
    target = tmp_path / "kept.txt"
    target.write_text("previous")

    def no_space(temporary):
        open(temporary, "w").write("half")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    with pytest.raises(files.UserError) as caught:
        files.atomic_write(str(target), no_space)
    assert "No space left on device" in caught.value.what and "intact" in caught.value.what
    assert caught.value.fix.startswith("free disk space") and target.read_text() == "previous"
    assert os.listdir(tmp_path) == ["kept.txt"]


def damaged_result(source, target, change):
    raw = {key: value for key, value in scipy.io.loadmat(source).items() if not key.startswith("__")}
    change(raw)
    scipy.io.savemat(target, raw)


def text_labels(raw):
    raw["gallery_label"] = np.array([f"p{i}" for i in range(raw["gallery_f"].shape[0])])


def empty(prefix):
    def change(raw):
        raw[f"{prefix}_f"] = np.zeros((0, raw[f"{prefix}_f"].shape[1]), np.float32)
        raw[f"{prefix}_label"] = raw[f"{prefix}_cam"] = np.zeros((1, 0), np.int64)
    return change


@pytest.fixture(scope="module")
def result_mat(trained_workdir, prepared_market, tmp_path_factory):
    folder = tmp_path_factory.mktemp("mat")
    path = folder / "pytorch_result.mat"
    previous = os.getcwd()
    os.chdir(trained_workdir)
    try:
        stage4.main(["--gpu_ids", "-1", "--name", "toy", "--test_dir", str(prepared_market), "--num_workers", "0",
                     "--output", str(path)])
    finally:
        os.chdir(previous)
    return path


@pytest.mark.parametrize("damage, expected", [(text_labels, "gallery_label holds str"),
                                              (empty("gallery"), "the gallery set is empty"),
                                              (empty("query"), "the query set is empty"),
                                              (None, "is not a readable .mat file")])
def test_damaged_features_file(damage, expected, result_mat, tmp_path, capsys):
    path = tmp_path / "damaged.mat"
    if damage is None:
        path.write_bytes(b"")
    else:
        damaged_result(result_mat, path, damage)
    for main, argv in ((evaluate_gpu.main, ["--mat", path, "--gpu_ids", "-1"]),
                       (demo.main, ["--mat", path, "--test_dir", tmp_path, "--out", tmp_path / "show.png"])):
        code, _, err = run_cli(main, argv, capsys)
        assert code == 2 and expected in one_error_line(err) and "test.py" in one_error_line(err)
    assert not (tmp_path / "show.png").exists()


@pytest.mark.parametrize("flags, expected", [(["--k1", "5000"], "--k1 5000 is not smaller than the"),
                                             (["--k1", "5", "--k2", "7"], "--k2 7 is larger than --k1 + 1")])
def test_rerank_neighbourhood_bounded_by_the_gallery(flags, expected, result_mat, capsys):
    code, _, err = run_cli(evaluate_gpu.main, ["--mat", result_mat, "--gpu_ids", "-1", "--rerank", *flags], capsys)
    assert code == 2 and expected in one_error_line(err)
    gallery = len(features.load_features(str(result_mat))["gallery_f"])
    code, _, _ = run_cli(evaluate_gpu.main, ["--mat", result_mat, "--gpu_ids", "-1", "--rerank", "--k1",
                                             str(gallery - 1), "--k2", "3"], capsys)
    assert code == 0


def test_output_paths_are_checked_before_any_work(workdir, prepared_market, capsys, monkeypatch):
    (workdir / "a_file").write_text("not a folder")
    os.makedirs(workdir / "a_folder")
    monkeypatch.setattr(stage4.models, "load_trained", lambda *a, **k: pytest.fail("work started"))
    for output, expected in (("a_file/result.mat", "a_file is a file, not a folder"),
                             ("a_folder", "--output a_folder is a folder")):
        code, _, err = run_test(prepared_market, capsys, "--output", output)
        assert code == 2 and expected in one_error_line(err)
    code, _, err = run_cli(demo.main, ["--report", "--out", "a_file"], capsys)
    assert code == 2 and "a_file is a file, not a folder" in one_error_line(err)
    assert (workdir / "a_file").read_text() == "not a folder"


def test_demo_creates_the_missing_folder_of_its_picture(result_mat, prepared_market, tmp_path, capsys):
    out = tmp_path / "new" / "deeper" / "q0.png"
    code, stdout, err = run_cli(demo.main, ["--mat", result_mat, "--test_dir", prepared_market, "--out", out], capsys)
    assert code == 0 and out.is_file() and f"created folder {out.parent}" in stdout, err


def test_diverged_model_writes_no_features(workdir, prepared_market, capsys):
    path = workdir / "model/toy/net_last.pth"
    state = torch.load(path, weights_only=True)
    torch.save({key: torch.full_like(value, float("nan")) if value.is_floating_point() else value
                for key, value in state.items()}, path)
    code, _, err = run_test(prepared_market, capsys, "--output", "nan.mat")
    assert code == 2 and "Traceback" not in err
    line = err.strip().splitlines()[-1]
    assert "non-finite features" in line and "diverged" in line and "--lr" in line
    assert not (workdir / "nan.mat").exists()


def test_resume_total_epoch_extends_a_finished_run(workdir, prepared_market, capsys):
    code, out, _ = resume(prepared_market, capsys)
    assert code == 0 and "nothing to do (add --total_epoch N to extend it)" in out
    code, out, err = resume(prepared_market, capsys, "--total_epoch", "7")
    assert code == 0, err
    assert "--total_epoch 5 -> 7; the learning-rate schedule is recomputed for 7 epochs" in out
    assert "epochs 6..7" in out
    saved = yaml.safe_load((workdir / "model/toy/opts.yaml").read_text())
    state = torch.load(workdir / "model/toy/state_last.pth", weights_only=True)
    assert saved["total_epoch"] == 7 and state["epoch"] == 7 and len(state["history"]) == 7
    assert state["scheduler"]["step_size"] == 7 * 2 // 3   # the schedule of the new length


def test_a_copied_run_folder_resumes_under_its_new_name(workdir, prepared_market, capsys):
    shutil.copytree(workdir / "model/toy", workdir / "model/toy_copy")
    code, out, err = run_cli(train.main, ["--data_dir", prepared_market, "--name", "toy_copy", "--resume",
                                          "--gpu_ids", "-1", "--num_workers", "0", "--total_epoch", "6"], capsys)
    assert code == 0 and "writing model/toy_copy/" in out, err
    assert yaml.safe_load((workdir / "model/toy_copy/opts.yaml").read_text())["name"] == "toy_copy"
    assert checkpoints.STATE in os.listdir(workdir / "model/toy")


def test_a_file_named_model_is_not_taken_for_the_runs_folder(prepared_market, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "model").write_text("notes")
    code, _, err = run_cli(train.main, ["--data_dir", prepared_market, "--name", "x", *FAST, "--total_epoch", "1"],
                           capsys)
    assert code == 2 and "model is a file" in one_error_line(err) and (tmp_path / "model").read_text() == "notes"
