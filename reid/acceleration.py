"""How a step runs fast on its device: torch.compile (with its fallback where it cannot run)."""
import shutil
import sys


def compile_blocker(device):
    """Why torch.compile cannot run here, or None. Checked before any work, so the run falls back at once
    instead of failing at its first step: inductor needs a C++ compiler for the CPU and Triton for CUDA."""
    import torch

    if not hasattr(torch, "compile"):
        return f"torch {torch.__version__} has no torch.compile"
    if sys.platform == "win32":
        return "torch.compile's default backend does not run on Windows"
    if device.type == "cuda":
        from torch.utils._triton import has_triton

        return None if has_triton() else "Triton is not installed (pip install triton)"
    if not any(shutil.which(name) for name in ("c++", "g++", "clang++")):
        return "no C++ compiler found for the CPU backend (install g++)"
    return None


def compiled(net, wanted, device):
    """``torch.compile(net)`` for ``--compile``; ``net`` itself, with a one-line note, where it cannot run."""
    if not wanted:
        return net
    import torch

    blocker = compile_blocker(device)
    if blocker:
        print(f"note: --compile cannot run here ({blocker}); training without it")
        return net
    return torch.compile(net)
