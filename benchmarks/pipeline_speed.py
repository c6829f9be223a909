"""Where the time of a training step and of feature extraction goes: the input pipeline alone against the
whole step, layumi's per-picture pipeline against the decoded-once one (reid/pipeline.py), and one
against two processes (DistributedDataParallel; gloo on the CPU, NCCL on GPUs).

Usage:
    python benchmarks/pipeline_speed.py                          # CPU, resnet50 at 256x128, the toy Market
    python benchmarks/pipeline_speed.py --gpu_ids 0 --batchsize 128 --steps 40
    python benchmarks/pipeline_speed.py --data_dir ../Market/pytorch   # real pictures (JPEG decoding included)

Without --data_dir it generates the toy Market (whose pictures are already 256x128, so resizing costs
less than on Market-1501's 64x128 crops). Every row is measured in this run; the ratio column compares
each row with the first row of its group. A correct CPU run prints a table like:
    group       what                                   images/s   ratio
    training    input alone, per-picture (dataloader)     512.3   1.00x
"""
import argparse
import itertools
import os
import sys
import tempfile
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import model as models  # noqa: E402
import train  # noqa: E402
import utils  # noqa: E402
from reid import distributed, extraction, images, pipeline, recipes  # noqa: E402


def build_parser():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--gpu_ids", default="-1", help="-1 for the CPU, or one GPU id")
    p.add_argument("--data_dir", default=None, help="a prepared pytorch/ folder (default: generate the toy Market)")
    p.add_argument("--backbone", default="resnet50", help="the network of the full-step rows")
    p.add_argument("--batchsize", type=int, default=None, help="pictures a step (default: 16 CPU, 128 GPU)")
    p.add_argument("--steps", type=int, default=None, help="timed steps a row (default: 3 CPU, 30 GPU)")
    p.add_argument("--num_workers", type=int, default=min(4, os.cpu_count() or 1), help="DataLoader processes")
    p.add_argument("--bf16", action="store_true", help="CUDA: bfloat16 autocast in the full-step rows")
    p.add_argument("--no_processes", action="store_true", help="skip the 1 vs 2 processes rows")
    return p


class Limited:
    """The first ``steps`` batches of an iterable, cycling it when it is shorter, as run_epoch wants them."""

    def __init__(self, batches, steps):
        self.batches, self.steps = batches, steps

    def __len__(self):
        return self.steps

    def __iter__(self):
        return itertools.islice(itertools.chain.from_iterable(itertools.repeat(self.batches)), self.steps)


def timed(work, device):
    """Seconds ``work()`` takes, with the GPU's queue drained before and after."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    started = time.perf_counter()
    work()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - started


def training_rows(opts, train_args, data_dir, device):
    """Input alone and the full step, for each pipeline: {what: images/s}."""
    spec = models.get_backbone(opts.backbone)
    train_set, val_set = images.training_sets(train_args, spec.input_size)
    started = time.perf_counter()
    cache = pipeline.decode_all(train_set.samples, spec.input_size, opts.num_workers, device)
    print(f"decoded {len(cache)} training pictures once in {time.perf_counter() - started:.1f} s "
          f"({cache.numel() / 2**20:.0f} MiB as uint8 on {device})")
    net = train.build_network(train_args, spec, len(train_set.classes), device)
    ctx = train.training_context(train_args, net, device)
    ctx.progress = False
    rows = {}   # filled input, input, step, step: each pair compares the two pipelines
    for name, use_cache in (("per-picture (dataloader)", None), ("decoded once (device)", cache)):
        loaders = recipes.make_loaders(train_args, train_set, val_set, device, distributed.World(), use_cache)
        batches = Limited(loaders["train"], opts.steps)

        def drain():
            for pictures, labels in batches:
                pictures.to(device, non_blocking=True).float().sum()
        drain()   # warm-up: workers started, caches filled
        rows[f"input alone, {name}"] = opts.steps * opts.batchsize / timed(drain, device)
        train.run_epoch(net, Limited(loaders["train"], 2), "train", ctx)   # warm-up (cuDNN's choice of kernels)
        seconds = timed(lambda: train.run_epoch(net, batches, "train", ctx), device)
        rows[f"{opts.backbone} step, {name}"] = opts.steps * opts.batchsize / seconds
    return dict(sorted(rows.items(), key=lambda row: "step" in row[0]))


def extraction_rows(opts, net, data_dir, device, amp_dtype):
    """test.py's input alone and the whole extraction, per-picture float transforms vs uint8 + device."""
    spec_size = models.get_backbone(opts.backbone).input_size
    folder = images.image_folder(os.path.join(data_dir, "gallery"))
    count = min(len(folder.samples), opts.steps * opts.batchsize)
    datasets = {"per-picture float (ToTensor+Normalize)": torch.utils.data.Subset(
                    images.image_folder(folder.root, images.image_transforms(spec_size)), range(count)),
                "uint8, normalised on the device": pipeline.ResizedPictures(folder.samples[:count], spec_size)}
    rows = {}
    for name, dataset in datasets.items():
        loader = torch.utils.data.DataLoader(dataset, opts.batchsize, num_workers=opts.num_workers,
                                             pin_memory=device.type == "cuda")
        seconds = timed(lambda: [pictures.to(device, non_blocking=True) for pictures, _ in loader], device)
        rows[f"input alone, {name}"] = count / seconds
        extraction.extract_features(net, dataset, device, opts.batchsize, num_workers=opts.num_workers,
                                    amp_dtype=amp_dtype)   # warm-up
        seconds = timed(lambda: extraction.extract_features(net, dataset, device, opts.batchsize,
                                                            num_workers=opts.num_workers, amp_dtype=amp_dtype), device)
        rows[f"{opts.backbone} extraction, {name}"] = count / seconds
    return dict(sorted(rows.items(), key=lambda row: "extraction" in row[0]))


def ddp_steps(argv):
    """One process of the 1-vs-2 rows: DistributedDataParallel steps on synthetic pictures; rank 0 writes
    the global images/s to the file argv[-1]. Threads are shared out so that both rows use the same cores."""
    backbone, batchsize, steps, gpu_ids, out = argv
    world = distributed.from_environment()
    device, _ = distributed.choose_device(world, gpu_ids)
    if device.type == "cpu":
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // world.size))
    distributed.start(world, device)
    try:
        args = train.resolve_options(train.build_parser(), ["--backbone", backbone, "--no_pretrained",
                                                            "--batchsize", str(batchsize)])
        spec = models.get_backbone(backbone)
        net = distributed.wrap(train.build_network(args, spec, 751, device), world, device)
        ctx = train.training_context(args, net, device)
        ctx.progress, ctx.world = False, world
        pictures = torch.randn(int(batchsize), 3, *spec.input_size)
        data = torch.utils.data.TensorDataset(pictures, torch.randint(0, 751, (int(batchsize),)))
        batches = distributed.RankSlice([list(range(int(batchsize)))], world)
        loader = Limited(torch.utils.data.DataLoader(data, batch_sampler=batches), int(steps))
        train.run_epoch(net, Limited(loader.batches, 1), "train", ctx)
        distributed.barrier(world)
        seconds = timed(lambda: train.run_epoch(net, loader, "train", ctx), device)
        if world.main:
            with open(out, "w") as handle:
                handle.write(str(int(steps) * int(batchsize) / seconds))
    finally:
        distributed.stop(world)


def process_rows(opts, device):
    """The same global batch in one process and split over two (two GPUs, or the CPU's cores shared)."""
    gpu_ids = utils.parse_gpu_ids(opts.gpu_ids)
    if device.type == "cuda" and torch.cuda.device_count() < 2:
        print("1 vs 2 processes: one GPU here, skipped (NCCL puts one process on each GPU)")
        return {}
    rows = {}
    with tempfile.TemporaryDirectory() as folder:
        out = os.path.join(folder, "speed")
        ids = ",".join(str(i) for i in range(2)) if gpu_ids else "-1"
        for processes in (1, 2):
            argv = [opts.backbone, str(opts.batchsize), str(opts.steps), ids if processes == 2 else opts.gpu_ids, out]
            distributed.spawn(ddp_steps, argv, processes)
            with open(out) as handle:
                rows[f"{opts.backbone} step, {processes} process{'es' if processes > 1 else ''}"] = float(handle.read())
    return rows


def toy_market(folder):
    import prepare
    import toy_data

    root = toy_data.main(["--out", folder, "--dataset", "market"])
    prepare.main(["--download_path", str(root)])
    return os.path.join(root, "pytorch")


@utils.cli_main
def main(argv=None):
    opts = build_parser().parse_args(argv)
    device, _ = utils.select_device(opts.gpu_ids)
    cuda = device.type == "cuda"
    opts.batchsize = opts.batchsize or (128 if cuda else 16)
    opts.steps = opts.steps or (30 if cuda else 3)
    with tempfile.TemporaryDirectory() as scratch:
        data_dir = opts.data_dir or toy_market(scratch)
        train_args = train.resolve_options(train.build_parser(), [
            "--backbone", opts.backbone, "--no_pretrained", "--batchsize", str(opts.batchsize), "--data_dir", data_dir,
            "--erasing_p", "0.5", "--num_workers", str(opts.num_workers), *(["--bf16"] if opts.bf16 else [])])
        groups = {"training": training_rows(opts, train_args, data_dir, device)}
        net = train.build_network(train_args, models.get_backbone(opts.backbone), 751, device).eval()
        groups["extraction"] = extraction_rows(opts, net, data_dir, device, torch.bfloat16 if opts.bf16 else None)
    if not opts.no_processes:
        groups["processes"] = process_rows(opts, device)
    name = torch.cuda.get_device_name(device) if cuda else f"cpu ({os.cpu_count()} cores)"
    print(f"{name}, torch {torch.__version__}, batch {opts.batchsize}, {opts.steps} steps a row, "
          f"{opts.num_workers} workers{', bf16' if opts.bf16 else ''}")
    print(f"{'group':<12}{'what':<58}{'images/s':>10}   ratio")
    for group, rows in groups.items():
        first = next(iter(rows.values()), None)
        for what, speed in rows.items():
            print(f"{group:<12}{what:<58}{speed:>10.1f}   {speed / first:.2f}x")


if __name__ == "__main__":
    main()
