"""torch.compile behind --compile: it runs where it can, falls back with one note where it cannot, and the
compiled network saves and loads under its plain names."""
import os
import subprocess
import sys

import torch

from conftest import ROOT
from reid import acceleration
from reid.checkpoints import unwrap


def test_compile_falls_back_with_one_note_without_a_compiler(monkeypatch, capsys):
    monkeypatch.setattr(acceleration.shutil, "which", lambda name: None)
    net = torch.nn.Linear(4, 2)
    assert acceleration.compiled(net, True, torch.device("cpu")) is net
    assert capsys.readouterr().out.strip().splitlines() == [
        "note: --compile cannot run here (no C++ compiler found for the CPU backend (install g++)); training without it"]


def test_without_the_flag_nothing_is_compiled():
    net = torch.nn.Linear(4, 2)
    assert acceleration.compiled(net, False, torch.device("cpu")) is net


def test_a_compiled_network_computes_the_same_and_unwraps_to_plain_weights():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3))
    fast = acceleration.compiled(net, True, torch.device("cpu"))
    inputs = torch.randn(5, 8)
    assert torch.allclose(fast(inputs), net(inputs), atol=1e-6)
    assert unwrap(fast) is net and set(unwrap(fast).state_dict()) == {"0.weight", "0.bias", "2.weight", "2.bias"}


def test_the_cpu_kernel_set_is_the_one_pytorch_dispatches_to():
    code = "import torch; from reid import acceleration; print(acceleration.kernel_set(torch.device('cpu')))"
    for wanted, name in (("default", "DEFAULT"), ("avx2", "AVX2")):   # the variable only lowers what the CPU has
        env = {**os.environ, "ATEN_CPU_CAPABILITY": wanted, "PYTHONPATH": ROOT}
        printed = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
        if name == "AVX2" and torch.backends.cpu.get_cpu_capability() == "DEFAULT":
            continue   # a CPU without AVX2 stays at DEFAULT
        assert printed.stdout.strip() == f"{name} kernels"


def test_on_cuda_turns_on_tf32_and_channels_last_and_kernel_set_says_so(monkeypatch):
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3))
    assert acceleration.on_cuda(net, torch.device("cpu")) is net          # the CPU: nothing changes
    assert torch.backends.cuda.matmul.fp32_precision != "tf32" and not torch.backends.cudnn.benchmark
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device: "a GPU")
    before = torch.backends.cuda.matmul.fp32_precision, torch.backends.cudnn.conv.fp32_precision
    try:
        assert acceleration.kernel_set(torch.device("cuda")) == "a GPU"
        fast = acceleration.on_cuda(net, torch.device("cuda"))   # no GPU needed to set the flags and the layout
        assert fast[0].weight.is_contiguous(memory_format=torch.channels_last) and torch.backends.cudnn.benchmark
        assert acceleration.kernel_set(torch.device("cuda")) == "a GPU, TF32 matmul"
    finally:
        torch.backends.cuda.matmul.fp32_precision, torch.backends.cudnn.conv.fp32_precision = before
        torch.backends.cudnn.benchmark = False
