"""Training throughput (images/s) of train.py's own step, on synthetic batches already on the device.

Usage:
    python benchmarks/train_speed.py                    # CPU: resnet18, mobilenet_v3 and resnet50
    python benchmarks/train_speed.py --gpu_ids 0        # GPU: resnet50 fp32 vs bf16 vs bf16 + channels_last (+ compile)

Each row runs the same ``train.run_epoch`` as training does (forward, loss, backward, SGD step, and
on CUDA autocast/GradScaler/channels_last) and prints images/s and the ratio to the first row, which
is measured in the same run. A correct CPU run prints something like:
    device  backbone      precision  batch  images/s  vs first row
    cpu     resnet50      fp32          16       7.1  1.00x
"""
import argparse
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import model as models  # noqa: E402
import train  # noqa: E402
from reid import acceleration  # noqa: E402
import utils  # noqa: E402


def build_parser():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--gpu_ids", default="-1", help="-1 for the CPU, or a GPU id")
    parser.add_argument("--batchsize", type=int, default=None, help="pictures per step (default: 16 CPU, 64 GPU)")
    parser.add_argument("--steps", type=int, default=None, help="timed steps per row (default: 4 CPU, 30 GPU)")
    parser.add_argument("--compile", action="store_true", help="CPU: add a torch.compile row (slow to compile)")
    return parser


def measure(backbone, precision, device, batchsize, steps, channels_last=True, compile=False):
    """Images per second of ``steps`` training steps, after two warm-up steps (which also compile)."""
    spec = models.get_backbone(backbone)
    flags = ["--backbone", backbone, "--no_pretrained"] + ([f"--{precision}"] if precision != "fp32" else [])
    args = train.resolve_options(train.build_parser(), flags)
    net = train.build_network(args, spec, 751, device)
    ctx = train.training_context(args, net, device)
    ctx.progress = False
    if not channels_last:   # train.py uses channels_last on CUDA; this row measures what it gains
        net, ctx.memory_format = net.to(memory_format=torch.contiguous_format), torch.contiguous_format
    net = acceleration.compiled(net, compile, device)
    # the batches wait on the device, in the step's layout, before the clock starts: only the step is timed
    batches = [(torch.randn(batchsize, 3, *spec.input_size, device=device).to(memory_format=ctx.memory_format),
                torch.randint(0, 751, (batchsize,), device=device)) for _ in range(steps + 2)]
    warm_up, timed = batches[:2], batches[2:]
    train.run_epoch(net, warm_up, "train", ctx)
    if device.type == "cuda":
        torch.cuda.synchronize()
    started = time.perf_counter()
    train.run_epoch(net, timed, "train", ctx)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return steps * batchsize / (time.perf_counter() - started)


@utils.cli_main
def main(argv=None):
    args = build_parser().parse_args(argv)
    device, _ = utils.select_device(args.gpu_ids)
    cuda = device.type == "cuda"
    batchsize = args.batchsize or (64 if cuda else 16)
    steps = args.steps or (30 if cuda else 4)
    rows = ([("resnet50", "fp32", False, False), ("resnet50", "bf16", False, False), ("resnet50", "fp16", True, False),
             ("resnet50", "bf16", True, False), ("resnet50", "bf16", True, True), ("resnet18", "bf16", True, False)]
            if cuda else [("resnet50", "fp32", False, False), ("resnet18", "fp32", False, False),
                          ("mobilenet_v3", "fp32", False, False)] + ([("resnet50", "fp32", False, True)] if args.compile else []))
    name = torch.cuda.get_device_name(device) if cuda else f"cpu ({torch.get_num_threads()} threads)"
    print(f"{name}, torch {torch.__version__}")
    print(f"{'backbone':<14}{'precision':<11}{'layout':<15}{'compiled':<10}{'batch':>5}{'images/s':>10}  vs first row")
    first = None
    for backbone, precision, channels_last, compile in rows:
        speed = measure(backbone, precision, device, batchsize, steps, channels_last, compile)
        first = first or speed
        layout = "channels_last" if channels_last and cuda else "contiguous"
        print(f"{backbone:<14}{precision:<11}{layout:<15}{'yes' if compile else 'no':<10}{batchsize:>5}{speed:>10.1f}"
              f"  {speed / first:.2f}x")


if __name__ == "__main__":
    main()
