"""How a step runs fast on its device: train.py's speed flags, and torch.compile (with its fallback where it
cannot run)."""
import os
import shutil
import sys

from reid import distributed
from reid.pipeline import PIPELINES


def add_arguments(p):
    """train.py's flags for precision, compilation, several processes and the input pipeline."""
    p.add_argument("--fp16", action="store_true", help="CUDA: float16 autocast with a gradient scaler")
    p.add_argument("--bf16", action="store_true", help="CUDA: bfloat16 autocast")
    p.add_argument("--FSGD", action="store_true", help="fused SGD (layumi's flag): each parameter group's update in "
                   "one kernel, PyTorch's own (no apex); the same steps to float32 rounding")
    p.add_argument("--compile", action="store_true", help="torch.compile the network (falls back, with a note, "
                   "where it cannot run)")
    p.add_argument("--sync_bn", action="store_true", help="several GPU processes: BatchNorm statistics over the "
                   "whole global batch")
    p.add_argument("--dist_timeout", type=float, default=distributed.TIMEOUT_MINUTES,
                   help="several processes: minutes one waits for the others (rank 0 validating and writing "
                        "checkpoints) before the job is aborted; torch's own default is 10")
    p.add_argument("--num_workers", type=int, default=min(4, os.cpu_count() or 1), help="data-loading processes")
    p.add_argument("--input_pipeline", choices=list(PIPELINES), default="auto",
                   help="; ".join(f"{name}: {what}" for name, what in PIPELINES.items()))


def check_arguments(parser, args):
    """``parser.error`` for speed flags that cannot go together."""
    if not args.dist_timeout > 0:
        parser.error("--dist_timeout must be a positive number of minutes")
    if args.fp16 and args.bf16:
        parser.error("--fp16 and --bf16 exclude each other")
    if args.input_pipeline == "device" and args.color_jitter:
        parser.error("--color_jitter runs in the per-picture pipeline only: drop it or --input_pipeline device")


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


def on_cuda(net, device):
    """What train.py and test.py both run with on CUDA: cuDNN's autotuner, TF32 for float32 matrix products
    and convolutions, and channels_last. TF32 keeps 10 bits of each input's mantissa, so features and
    losses move in their third or fourth digit: kernel_set says it, and opts.yaml and the .mat record that.
    On other devices ``net`` is returned as it is and nothing changes."""
    import torch

    if device.type != "cuda":
        return net
    torch.backends.cudnn.benchmark = True   # fast kernels on GPU; determinism is a CPU promise
    torch.backends.cuda.matmul.fp32_precision = "tf32"
    torch.backends.cudnn.conv.fp32_precision = "tf32"
    return net.to(memory_format=torch.channels_last)


def kernel_set(device):
    """What decides the arithmetic on ``device``, printed and kept in opts.yaml and the .mat: on the CPU the
    instruction set PyTorch's kernels use (AVX2, AVX512, ...), since the same seed gives other weights under
    another one; on CUDA the GPU, and TF32 when on_cuda turned it on."""
    import torch

    if device.type == "cpu":
        return f"{torch.backends.cpu.get_cpu_capability()} kernels"
    if device.type != "cuda":
        return device.type
    tf32 = ", TF32 matmul" if torch.backends.cuda.matmul.fp32_precision == "tf32" else ""
    return torch.cuda.get_device_name(device) + tf32


def note_kernel_change(run_dir, kernels):
    """``--resume`` under other kernels than the run's: say so, since the rest of the run then differs (slightly,
    then like another seed) from the one an uninterrupted run would have given."""
    from reid import files

    saved = files.load_yaml(os.path.join(run_dir, "opts.yaml"), "train.py").get("kernels")
    if saved and saved != kernels:
        print(f"note: this run was trained with {saved} and continues with {kernels}: from here its weights differ "
              "from an uninterrupted run's (see README, What is reproducible)")
