"""benchmarks/gpu_check.sh: a plan that fits a borrowed GPU's 8 minutes by construction, checks of numbers
that can fail, and one line (exit 0) on a machine without a GPU."""
import os
import subprocess
import sys

import pytest
import torch

from conftest import ROOT

sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
import gpu_check  # noqa: E402


def test_the_plan_fits_the_budget_correctness_first_speed_last():
    steps = gpu_check.plan("/data/Market/pytorch")
    assert sum(step.timeout for step in steps) <= gpu_check.BUDGET_SECONDS == 480
    speed = [index for index, step in enumerate(steps) if step.name.startswith("speed")]
    assert speed and speed == list(range(len(steps) - len(speed), len(steps)))
    assert all(step.check for step in steps[2:])   # past the machine and the data, every step checks numbers
    gpu_check.check_commands(steps)                # and every stage command parses with today's flags


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU: the script would run the check")
def test_without_a_gpu_it_says_so_in_one_line_and_exits_0():
    done = subprocess.run(["bash", os.path.join(ROOT, "benchmarks", "gpu_check.sh")], capture_output=True, text=True,
                          env={**os.environ, "PYTHON": sys.executable}, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines() == [done.stdout.strip()] and done.stdout.startswith("no CUDA GPU here")


def write_summary(folder, name, loss, accuracy):
    os.makedirs(folder / "model" / name)
    (folder / "model" / name / "summary.csv").write_text(f"epoch,train_loss,val_acc\n1,{loss},{accuracy}\n")


@pytest.mark.parametrize("loss, accuracy, ok", [(2.50, 0.40, True), (2.60, 0.40, False), (2.50, 0.50, False)])
def test_torchrun_is_compared_with_the_plain_run_by_its_numbers(tmp_path, loss, accuracy, ok):
    write_summary(tmp_path, "plain", 2.50, 0.40)
    write_summary(tmp_path, "launched", loss, accuracy)
    assert gpu_check.torchrun_matches_plain(str(tmp_path))[0] is ok


def test_the_two_evaluations_must_print_the_same_figures(tmp_path):
    printed = "Rank@1:0.500000 Rank@5:0.700000 Rank@10:0.800000 mAP:0.400000\n  EER 0.120 at threshold 0.5000\n"
    (tmp_path / "eval_gpu.txt").write_text(printed)
    (tmp_path / "eval_cpu.txt").write_text(printed)
    assert gpu_check.evaluation_agrees(str(tmp_path))[0]
    (tmp_path / "eval_cpu.txt").write_text(printed.replace("mAP:0.400000", "mAP:0.400100"))
    assert not gpu_check.evaluation_agrees(str(tmp_path))[0]
