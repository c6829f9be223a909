"""train.py on the small toy set, on CPU: files written, determinism, resume, and bad input."""
import contextlib
import csv
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
import yaml
from PIL import Image

import model
import train
from conftest import ROOT, run_cli  # noqa: F401  (FAST is shared with test_metric_learning)

FAST = ["--gpu_ids", "-1", "--backbone", "mobilenet_v3", "--no_pretrained", "--batchsize", "8",
        "--num_workers", "0", "--lr", "0.02"]


@pytest.fixture
def in_tmp(tmp_path, monkeypatch):
    """train.py writes model/NAME relative to the current directory."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


def train_run(data_dir, name, *extra):
    return train.main(["--data_dir", str(data_dir), "--name", name, *FAST, *extra])


def weights(path):
    return torch.load(path, map_location="cpu", weights_only=True)


def same_weights(first, second):
    return first.keys() == second.keys() and all(torch.equal(first[k], second[k]) for k in first)


def test_one_epoch_writes_every_file(prepared_market, in_tmp):
    run_dir = in_tmp / train_run(prepared_market, "one", "--total_epoch", "1", "--erasing_p", "0.5")
    assert sorted(os.listdir(run_dir)) == ["net_last.pth", "opts.yaml", "state_last.pth", "summary.csv", "train.jpg"]
    with open(run_dir / "opts.yaml") as handle:
        opts = yaml.safe_load(handle)
    classes = len(os.listdir(prepared_market / "train"))
    assert opts["nclasses"] == classes and opts["backbone"] == "mobilenet_v3" and opts["input_size"] == [256, 128]
    assert opts["torch"] == str(torch.__version__) and opts["use_dense"] is False
    assert opts["kernels"] == f"{torch.backends.cpu.get_cpu_capability()} kernels"   # the same seed differs across them
    net = model.build_model("mobilenet_v3", classes, pretrained=False)
    net.load_state_dict(weights(run_dir / "net_last.pth"), strict=True)
    state = weights(run_dir / "state_last.pth")
    assert state["epoch"] == 1 and {"optimizer", "scheduler", "scaler", "rng", "history"} <= set(state)
    with open(run_dir / "summary.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 1 and 0 <= float(rows[0]["val_acc"]) <= 1
    with Image.open(run_dir / "train.jpg") as picture:
        assert picture.format == "JPEG" and picture.size[0] > 300


def test_every_tenth_epoch_is_kept(prepared_market, in_tmp):
    run_dir = in_tmp / train_run(prepared_market, "ten", "--total_epoch", "10", "--batchsize", "32")
    assert (run_dir / "net_010.pth").exists()
    assert same_weights(weights(run_dir / "net_010.pth"), weights(run_dir / "net_last.pth"))


def test_same_seed_same_weights(prepared_market, in_tmp):
    first = weights(in_tmp / train_run(prepared_market, "a", "--total_epoch", "1") / "net_last.pth")
    second = weights(in_tmp / train_run(prepared_market, "b", "--total_epoch", "1") / "net_last.pth")
    other = weights(in_tmp / train_run(prepared_market, "c", "--total_epoch", "1", "--seed", "1") / "net_last.pth")
    assert same_weights(first, second)
    assert not same_weights(first, other)


def test_resume_after_interruption_is_bit_identical(prepared_market, in_tmp, monkeypatch, capsys):
    whole = weights(in_tmp / train_run(prepared_market, "whole", "--total_epoch", "3", "--warm_epoch", "2")
                    / "net_last.pth")
    calls = []
    real_run_epoch = train.run_epoch

    def interrupted(net, loader, phase, ctx):
        calls.append(phase)
        if len(calls) == 4:     # during the second epoch's validation
            raise KeyboardInterrupt
        return real_run_epoch(net, loader, phase, ctx)

    monkeypatch.setattr(train, "run_epoch", interrupted)
    code, _, err = run_cli(train.main, ["--data_dir", prepared_market, "--name", "cut", *FAST,
                                        "--total_epoch", "3", "--warm_epoch", "2"], capsys)
    assert code == 130 and "interrupted — run the same command with --resume" in err
    assert weights(in_tmp / "model/cut/state_last.pth")["epoch"] == 1
    monkeypatch.setattr(train, "run_epoch", real_run_epoch)
    code, out, _ = run_cli(train.main, ["--name", "cut", "--resume", "--num_workers", "0"], capsys)
    assert code == 0 and "epochs 2..3" in out and "note: this run was trained with" not in out
    assert same_weights(whole, weights(in_tmp / "model/cut/net_last.pth"))


def test_resume_under_other_cpu_kernels_says_so(prepared_market, in_tmp, capsys):
    run_dir = in_tmp / train_run(prepared_market, "moved", "--total_epoch", "1")
    opts = yaml.safe_load((run_dir / "opts.yaml").read_text())
    here = opts["kernels"]
    (run_dir / "opts.yaml").write_text(yaml.safe_dump({**opts, "kernels": "VSX kernels"}))   # as if trained on POWER
    code, out, _ = run_cli(train.main, ["--name", "moved", "--resume", "--total_epoch", "2", "--num_workers", "0"], capsys)
    assert code == 0 and f"note: this run was trained with VSX kernels and continues with {here}" in out
    assert yaml.safe_load((run_dir / "opts.yaml").read_text())["kernels"] == here


def test_resume_after_sigkill(prepared_market, in_tmp):
    command = [sys.executable, os.path.join(ROOT, "train.py"), "--data_dir", str(prepared_market),
               "--name", "killed", *FAST, "--total_epoch", "3"]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    state = in_tmp / "model/killed/state_last.pth"
    deadline = time.time() + 120
    while not state.exists() and time.time() < deadline and process.poll() is None:
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert state.exists(), "the first epoch never finished"
    subprocess.run([*command, "--resume"], check=True, capture_output=True)
    whole = train_run(prepared_market, "unkilled", "--total_epoch", "3")
    assert same_weights(weights(in_tmp / whole / "net_last.pth"), weights(in_tmp / "model/killed/net_last.pth"))


def test_existing_run_is_never_overwritten_silently(prepared_market, in_tmp, capsys):
    train_run(prepared_market, "kept", "--total_epoch", "1")
    code, _, err = run_cli(train.main, ["--data_dir", prepared_market, "--name", "kept", *FAST, "--total_epoch", "1"],
                           capsys)
    assert code == 2 and "--resume" in err and "--overwrite" in err
    code, _, _ = run_cli(train.main, ["--data_dir", prepared_market, "--name", "kept", *FAST, "--total_epoch", "1",
                                      "--overwrite"], capsys)
    assert code == 0


def test_resume_refuses_changed_recipe(prepared_market, in_tmp, capsys):
    train_run(prepared_market, "recipe", "--total_epoch", "1")
    code, _, err = run_cli(train.main, ["--name", "recipe", "--resume", "--lr", "0.5"], capsys)
    assert code == 2 and "--lr" in err


def test_legacy_flags_and_abbreviations():
    parser = train.build_parser()
    args = train.resolve_options(parser, ["--use_dense", "--total", "1", "--batch", "4"])
    assert args.backbone == "densenet121" and args.use_dense and not args.PCB
    assert args.total_epoch == 1 and args.batchsize == 4
    assert train.resolve_options(parser, ["--PCB"]).backbone == "pcb"


@pytest.mark.parametrize("argv, fragment", [
    (["--use_dense", "--PCB"], "choose one backbone"),
    (["--use_dense", "--backbone", "resnet18"], "choose one backbone"),
    (["--fp16", "--bf16"], "--fp16 and --bf16"),
    (["--batchsize", "0"], "--batchsize"),
    (["--use_swin", "--stride", "1"], "--stride 1"),
    (["--resume", "--overwrite"], "--resume"),
])
def test_impossible_combinations(argv, fragment, capsys):
    with pytest.raises(SystemExit) as stop:
        train.resolve_options(train.build_parser(), argv)
    assert stop.value.code == 2 and fragment in capsys.readouterr().err


def expect_error(argv, capsys, fragment):
    code, _, err = run_cli(train.main, argv, capsys)
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: ") and fragment in lines[0], err


def test_bad_inputs_fail_in_one_line(prepared_market, in_tmp, capsys, tmp_path_factory):
    expect_error(["--data_dir", in_tmp / "nowhere", *FAST], capsys, "prepare.py")
    expect_error(["--data_dir", prepared_market, *FAST, "--backbone", "resnet51"], capsys, "mobilenet_v3")
    expect_error(["--data_dir", prepared_market, *FAST, "--batchsize", "100000"], capsys, "--batchsize")
    expect_error(["--data_dir", prepared_market, *FAST, "--gpu_ids", "x"], capsys, "--gpu_ids")
    single = tmp_path_factory.mktemp("single")
    for split in ("train", "val"):
        label = sorted(os.listdir(prepared_market / split))[0]
        os.makedirs(single / split / label)
        for name in os.listdir(prepared_market / split / label):
            (single / split / label / name).write_bytes((prepared_market / split / label / name).read_bytes())
    expect_error(["--data_dir", single, *FAST], capsys, "at least 2 identities")


def test_unreadable_image_is_named(prepared_market, tmp_path, monkeypatch, capsys):
    data = tmp_path / "data"
    for split in ("train", "val"):
        for label in os.listdir(prepared_market / split):
            os.makedirs(data / split / label)
            for name in os.listdir(prepared_market / split / label):
                (data / split / label / name).write_bytes((prepared_market / split / label / name).read_bytes())
    label = sorted(os.listdir(data / "train"))[0]
    broken = data / "train" / label / sorted(os.listdir(data / "train" / label))[0]
    broken.write_bytes(b"not a jpeg")
    monkeypatch.chdir(tmp_path)
    expect_error(["--data_dir", data, *FAST], capsys, str(broken))


def test_a_diverging_run_stops_in_one_line_and_saves_nothing(prepared_market, in_tmp, capsys):
    code, _, err = run_cli(train.main, ["--data_dir", prepared_market, "--name", "boom", *FAST, "--total_epoch", "1",
                                        "--lr", "1e12"], capsys)
    line = err.replace("\r", "\n").strip().splitlines()[-1]   # after the progress bar it closed
    assert code == 2 and "Traceback" not in err and line.startswith("error: the training loss became nan at step")
    assert "smaller --lr" in line
    assert not [name for name in os.listdir(in_tmp / "model/boom") if name.endswith(".pth")]


def tiny_epoch(batches, read_every, phase="train"):
    """run_epoch on a linear classifier over ``batches`` of (pictures, labels), reading its sums every
    ``read_every`` steps (what train.py does on CUDA, here on the CPU)."""
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 3))
    optimizer = torch.optim.SGD(net.parameters(), lr=0.1)
    ctx = train.TrainingContext(device=torch.device("cpu"), criterion=torch.nn.CrossEntropyLoss(), metric=None,
                                optimizer=optimizer, scheduler=None, scaler=torch.amp.GradScaler("cpu", enabled=False),
                                autocast=contextlib.nullcontext, memory_format=torch.contiguous_format, batchsize=4,
                                progress=False, read_every=read_every)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(*batches), batch_size=4)
    return train.run_epoch(net, loader, phase, ctx)


def test_reading_the_sums_less_often_gives_the_same_epoch_and_still_stops_a_divergence():
    torch.manual_seed(0)
    pictures, labels = torch.randn(20, 3, 2, 2), torch.randint(0, 3, (20,))
    for phase in ("train", "val"):
        torch.manual_seed(1)
        every_step = tiny_epoch((pictures, labels), 1, phase)
        torch.manual_seed(1)
        every_third = tiny_epoch((pictures, labels), 3, phase)
        assert (every_step["loss"], every_step["acc"]) == (every_third["loss"], every_third["acc"])
    pictures[5] = float("nan")   # the second batch of four
    with pytest.raises(train.UserError, match="became nan at step 2 of"):
        tiny_epoch((pictures, labels), 1)
    with pytest.raises(train.UserError, match=r"became nan at step 3 of this epoch \(read every 3 steps\)"):
        tiny_epoch((pictures, labels), 3)


def test_the_datas_colour_statistics_train_and_test_reads_them(prepared_market, in_tmp, capsys):
    import test as stage4

    mean, std = ["0.5143", "0.4334", "0.4254"], ["0.2320", "0.1727", "0.1802"]
    run_dir = in_tmp / train_run(prepared_market, "colours", "--total_epoch", "1", "--norm_mean", *mean,
                                 "--norm_std", *std)
    with open(run_dir / "opts.yaml") as handle:
        opts = yaml.safe_load(handle)
    assert opts["norm_mean"] == [float(v) for v in mean] and opts["norm_std"] == [float(v) for v in std]
    net, _ = model.load_trained(str(run_dir), "last", torch.device("cpu"))
    assert torch.allclose(net.input_scale.flatten(), torch.tensor([0.229, 0.224, 0.225]) / torch.tensor([float(v) for v in std]))
    code, out, err = run_cli(stage4.main, ["--gpu_ids", "-1", "--name", "colours", "--test_dir", prepared_market,
                                           "--num_workers", "0"], capsys)
    assert code == 0 and "Rank@1:" in out, err
    opts["norm_std"] = [0.2, 0.0, 0.2]   # hand-edited into something that is no standard deviation
    with open(run_dir / "opts.yaml", "w") as handle:
        yaml.safe_dump(opts, handle)
    code, _, err = run_cli(stage4.main, ["--gpu_ids", "-1", "--name", "colours", "--test_dir", prepared_market], capsys)
    assert code == 2 and "opts.yaml: norm_mean" in err and len(err.strip().splitlines()) == 1
    code, _, err = run_cli(train.main, ["--data_dir", prepared_market, *FAST, "--name", "bad", "--norm_std", "0", "1", "1"],
                           capsys)
    assert code == 2 and "not colour statistics" in err and not (in_tmp / "model/bad").exists()
