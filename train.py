"""Stage 3: train a re-ID network as an identity classifier on ROOT/pytorch/train (or train_all).

Usage (the course's command, on a GPU):
    python train.py --gpu_ids 0 --name ft_ResNet50 --train_all --batchsize 32 --data_dir ../Market/pytorch
On the CPU, with the toy set (README command 1 does this):
    python train.py --gpu_ids -1 --name toy_mobilenet --data_dir data/Market/pytorch --backbone mobilenet_v3 \
        --no_pretrained --batchsize 32 --lr 0.01 --warm_epoch 3 --total_epoch 15 --seed 0
Continue an interrupted run:   python train.py --name toy_mobilenet --resume

Reads:  DATA_DIR/{train or train_all, val}/<pid>/*.jpg (written by prepare.py); with prepare.py --val_ids
        also DATA_DIR/{val_query,val_gallery}: people training never sees, ranked every epoch.
Writes: model/NAME/ (relative to the current directory):
        opts.yaml      every resolved option, nclasses, input size, library versions, kernels (test.py rebuilds from it)
        net_010.pth …  the model's state_dict every 10 epochs; net_last.pth after every epoch
        state_last.pth model, optimizer, scheduler, AMP scaler, epoch, RNG states: what --resume needs
        train.jpg      loss and top-1 error, train and val;  summary.csv  one row per epoch
        with --val_ids data: the unseen identities' Rank@1/mAP in both, net_best.pth (best mAP) and
        threshold.yaml (same-person threshold for --target_fpr on their pairs, per checkpoint)
Every file is written under a temporary name and renamed, so a crash never leaves a truncated file.

A correct run prints, per epoch, a progress bar for each phase and a line like:
    epoch 15/15  train loss 0.513 acc 0.828  val loss 0.497 acc 0.822  unseen Rank@1 0.815 mAP 0.816  lr 0.0020  18.2 s
"""
import os
import sys
import time
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Callable, Optional

import torch
from torch import nn
from tqdm import tqdm

import model as models
import utils
from reid import acceleration, attacks, checkpoints, distributed, divergence, dg, files, images, pictures, pipeline, recipes, runs, validation
from reid.images import training_sets
from reid.losses import LossSettings, MetricLosses, loss_and_scores
from utils import UserError  # noqa: F401  (callers and tests catch train.UserError)

# may change on --resume (a new --total_epoch extends a finished run; --name: a copied run folder resumes)
RUNTIME_OPTIONS = {"gpu_ids", "num_workers", "data_dir", "resume", "overwrite", "name", "total_epoch", "compile",
                   "input_pipeline", "divergence", "dist_timeout", "dg_dir"}
READ_EVERY = 25   # on CUDA: steps between reads of the running loss, so that the CPU can queue steps ahead


def build_parser():
    p = utils.ArgumentParser(prog="train.py", description="Train a person re-ID model (stage 3).")
    p.add_argument("--gpu_ids", default="0", help="GPU ids such as 0 or 0,1; -1 for the CPU (also the fallback)")
    p.add_argument("--name", default="ft_ResNet50", type=runs.run_name,
                   help="run name, a plain folder name: files go to model/NAME/")
    p.add_argument("--data_dir", default="../Market/pytorch", help="the pytorch/ folder written by prepare.py")
    p.add_argument("--train_all", action="store_true", help="train on train_all (train + val)")
    p.add_argument("--batchsize", type=int, default=32, help="pictures per batch (the last partial batch is dropped)")
    p.add_argument("--total_epoch", type=int, default=60, help="number of epochs")
    p.add_argument("--lr", type=float, default=0.05,
                   help="learning rate of the head; a pretrained backbone gets 0.1x (a random one the same)")
    p.add_argument("--weight_decay", type=float, default=5e-4, help="SGD weight decay")
    p.add_argument("--warm_epoch", type=int, default=0, help="epochs over which the loss weight ramps 0.1 -> 1")
    p.add_argument("--cosine", action="store_true", help="cosine learning-rate decay instead of x0.1 at 2/3")
    p.add_argument("--color_jitter", action="store_true", help="add colour jitter to the augmentation")
    p.add_argument("--erasing_p", type=float, default=0.0, help="random erasing probability (0 = off)")
    models.add_head_arguments(p)
    models.add_backbone_arguments(p, default="resnet50")
    images.add_input_arguments(p)
    recipes.add_arguments(p)
    dg.add_arguments(p)
    divergence.add_arguments(p)
    p.add_argument("--no_pretrained", action="store_true", help="random initial weights instead of ImageNet's")
    acceleration.add_arguments(p)
    p.add_argument("--target_fpr", type=float, default=0.001,
                   help="false-positive rate per pair that the same-person threshold is chosen for (threshold.yaml, "
                        "--val_ids data); a search compares with every gallery picture, so keep it well below 1/gallery")
    p.add_argument("--seed", type=int, default=0, help="random seed: the same seed gives the same weights on CPU")
    p.add_argument("--resume", action="store_true", help="continue model/NAME from its last finished epoch")
    p.add_argument("--overwrite", action="store_true", help="delete an existing model/NAME and start again")
    return p


def resolve_options(parser, argv):
    """Parse, apply the legacy backbone aliases, refuse impossible combinations, merge a resumed run's opts."""
    args = parser.parse_args(argv)
    typed = utils.explicit_options(parser, argv)
    legacy = [flag for flag in models.LEGACY_FLAGS if getattr(args, flag)]
    if len(legacy) > 1 or (legacy and "backbone" in typed and args.backbone != models.LEGACY_FLAGS[legacy[0]]):
        parser.error(f"choose one backbone: --{' and --'.join(legacy)}{' and --backbone' if 'backbone' in typed else ''}")
    if legacy:
        args.backbone = models.LEGACY_FLAGS[legacy[0]]
    recipes.apply_recipe(args, typed, models.get_backbone(args.backbone).supports_stride)
    if args.resume and args.overwrite:
        parser.error("--resume continues a run and --overwrite deletes it: pass one of them")
    recipes.check_ranges(parser, args)
    if args.resume:
        path = os.path.join(runs.run_dir(args.name), "opts.yaml")
        saved = files.load_yaml(path, "train.py (this run never started: drop --resume)")
        files.check_saved_kinds(path, saved, utils.parser_kinds(parser))
        clashes = [k for k, v in typed.items() if k not in RUNTIME_OPTIONS and k in saved and saved[k] != v]
        if clashes:
            parser.error(f"--resume keeps the run's options; drop --{', --'.join(clashes)} or start a new --name")
        for key in vars(args):   # the run's own options, except runtime ones typed now
            if key in saved and key not in typed:
                setattr(args, key, saved[key])
    args.wa = args.wa or args.DG   # the weight average is --DG's teacher
    recipes.check_arguments(parser, args, models.get_backbone(args.backbone))
    acceleration.check_arguments(parser, args)
    if args.stride == 1 and not models.get_backbone(args.backbone).supports_stride:
        parser.error(f"--stride 1 is not available for {args.backbone}")
    for flag, name in models.LEGACY_FLAGS.items():   # layumi's test.py reads these booleans from opts.yaml
        setattr(args, flag, args.backbone == name)
    return args


def run_epoch(net, loader, phase, ctx):
    """One pass over ``loader``; trains when ``phase == "train"``. Returns mean loss, accuracy, seconds. The sums
    stay on the device and are read every ``ctx.read_every`` steps: a read (``.item()``) waits for the GPU."""
    training = phase == "train"
    net.train(training)
    sums, seen, started = torch.zeros(2, dtype=torch.float64, device=ctx.device), 0, time.time()   # loss, correct
    total = len(loader) * ctx.batchsize if training else len(loader.dataset)
    bar = tqdm(total=total, desc=f"{phase:>5}", unit="img", leave=False, disable=not ctx.progress)
    with torch.set_grad_enabled(training):
        for step, (images, labels) in enumerate(loader):
            images = images.to(ctx.device, non_blocking=True, memory_format=ctx.memory_format)
            labels = labels.to(ctx.device, non_blocking=True)
            with ctx.autocast():
                loss, scores = loss_and_scores(net(images), labels, ctx.criterion, ctx.metric)
                loss = loss + ctx.adversarial(net, images, labels, step)   # --adv only; else 0
                loss = loss + ctx.consistency(net)                         # --DG only; else 0
            if training:
                ctx.optimizer.zero_grad(set_to_none=True)
                ctx.scaler.scale(loss * ctx.warm(step)).backward()
                distributed.average_gradients(ctx.world, ctx.metric)   # DDP averages the network's only
                ctx.scaler.step(ctx.optimizer)
                ctx.scaler.update()
                if ctx.average is not None:
                    ctx.average.update_parameters(net)
            sums += torch.stack([loss.detach().double() * len(labels), (scores.argmax(1) == labels).sum().double()])
            seen += len(labels)
            bar.update(len(labels))
            if (step + 1) % ctx.read_every == 0 or step + 1 == len(loader):
                divergence.show_running(sums, seen, bar, training, step + 1, ctx.read_every)
    bar.close()
    total_loss, correct = sums.tolist()
    if training:   # every rank trained on its slice: the epoch's figures are over all of them
        total_loss, correct, seen = distributed.reduce_sums(ctx.world, total_loss, correct, seen)
    return {"loss": total_loss / max(seen, 1), "acc": correct / max(seen, 1), "seconds": time.time() - started}


@dataclass
class TrainingContext:
    """Everything run_epoch needs besides the network and the data."""

    device: torch.device
    criterion: nn.Module
    metric: Optional[MetricLosses]          # the extra losses (and their class centres), or None
    optimizer: torch.optim.Optimizer
    scheduler: object
    scaler: torch.amp.GradScaler
    autocast: Callable                      # () -> a context manager: AMP on CUDA, nothing on the CPU
    memory_format: torch.memory_format
    batchsize: int
    average: Optional[nn.Module] = None     # the --wa weight average
    warm: Callable = lambda step: 1.0      # step -> loss weight during warm-up (set per epoch by fit)
    progress: bool = True                   # draw the progress bars
    world: distributed.World = distributed.World()   # this process's rank among torchrun's processes
    held_out: Optional[validation.HeldOut] = None     # the unseen identities (prepare.py --val_ids), or None
    read_every: int = 1                     # steps between reads of the running loss (a read waits for a GPU)
    adversarial: Callable = lambda net, images, labels, step: 0   # --adv: attacks.adversarial_term
    consistency: Callable = lambda net: 0   # --DG: the epoch's dg.consistency_term (set per epoch by fit)


def training_context(args, net, device):
    """The TrainingContext for ``args``: device, precision, loss, optimizer, scheduler."""
    cuda = device.type == "cuda"
    amp_dtype = torch.float16 if args.fp16 else torch.bfloat16 if args.bf16 else None
    if amp_dtype is not None and not cuda:
        print("note: --fp16/--bf16 need CUDA; training in float32 on the CPU")
    use_amp = amp_dtype is not None and cuda
    metric = None
    if recipes.chosen_losses(args):
        dim = models.get_backbone(args.backbone).feature_dim(0 if args.bnneck else args.linear_num)
        metric = MetricLosses(recipes.chosen_losses(args), LossSettings.from_args(args), args.nclasses, dim).to(device)
    optimizer, scheduler = recipes.build_optimizer(net, args, metric)
    criterion = nn.CrossEntropyLoss(label_smoothing=args.label_smoothing)
    return TrainingContext(
        device=device, criterion=criterion, metric=metric,
        adversarial=attacks.adversarial_term(args.adv, args.aiter, criterion),
        optimizer=optimizer, scheduler=scheduler, batchsize=args.batchsize,
        average=recipes.weight_average(net, args.wa_decay) if args.wa else None,
        scaler=torch.amp.GradScaler(device.type, enabled=use_amp and args.fp16),
        autocast=(lambda: torch.autocast("cuda", dtype=amp_dtype)) if use_amp else nullcontext,
        memory_format=torch.channels_last if cuda else torch.contiguous_format, read_every=READ_EVERY if cuda else 1)


def fit(net, loaders, ctx, args, run_dir, start, history):
    """The epoch loop: train, step the schedule, validate, save, report."""
    for epoch in range(start, args.total_epoch):
        started = time.time()
        utils.set_seed(distributed.process_seed(args.seed, epoch, ctx.world), deterministic=ctx.device.type == "cpu")
        loaders["train"].generator.manual_seed(utils.derived_seed(args.seed, epoch))
        ctx.warm = recipes.warm_schedule(args, epoch, len(loaders["train"]))
        ctx.consistency = dg.consistency_term(args, epoch, loaders.get("dg"), ctx.average, checkpoints.unwrap(net),
                                              ctx)
        lr = ctx.optimizer.param_groups[-1]["lr"]
        train_stats = run_epoch(net, loaders["train"], "train", ctx)
        ctx.scheduler.step()
        if not ctx.world.main:   # rank 0 validates, saves and reports; the others wait for it
            distributed.wait_for_main(ctx.world)
            continue
        val_stats = run_epoch(checkpoints.unwrap(net), loaders["val"], "val", ctx)
        unseen = validation.score_held_out(checkpoints.unwrap(net), ctx.held_out, ctx.device, args.batchsize,
                                           args.num_workers, args.target_fpr) if ctx.held_out else {}
        history.append({"epoch": epoch + 1, "lr": lr, **{f"train_{k}": v for k, v in train_stats.items()},
                        **{f"val_{k}": v for k, v in val_stats.items()}, **{f"unseen_{k}": v for k, v in unseen.items()}})
        warnings = divergence.check(history, args.warm_epoch, args.divergence == "stop")   # stops before saving
        checkpoints.save_checkpoints(run_dir, net, epoch + 1, args, history, ctx)
        distributed.wait_for_main(ctx.world)
        files.write_csv(os.path.join(run_dir, "summary.csv"), history)
        pictures.plot_training_curves(os.path.join(run_dir, "train.jpg"), history)
        validation.write_thresholds(run_dir, history, args.target_fpr)
        print(f"epoch {epoch + 1}/{args.total_epoch}  train loss {train_stats['loss']:.3f} acc {train_stats['acc']:.3f}"
              f"  val loss {val_stats['loss']:.3f} acc {val_stats['acc']:.3f}"
              + (f"  unseen Rank@1 {unseen['rank1']:.3f} mAP {unseen['mAP']:.3f}" if unseen else "")
              + f"  lr {lr:.4f}  {time.time() - started:.1f} s" + "".join(f"\nwarning: {w}" for w in warnings))
    return history


def build_network(args, spec, nclasses, device):
    utils.set_seed(args.seed, deterministic=device.type == "cpu")
    net = models.build_model(spec.name, nclasses, not args.no_pretrained, args.droprate, args.linear_num,
                             args.stride, circle=bool(recipes.chosen_losses(args)), bnneck=args.bnneck,
                             neck_feat=args.neck_feat, statistics=images.input_statistics(vars(args))).to(device)
    return acceleration.on_cuda(net, device)   # channels_last, cuDNN autotuner, TF32


def train_run(args, spec, device, world):
    """Data, network, run folder (rank 0 makes it), resume, the epochs; returns the run folder."""
    say = print if world.main else (lambda *a, **k: None)
    distributed.check_batch(world, args.batchsize, args.num_instances if args.sampler == "pk" else None)
    on_device = pipeline.uses_device_pipeline(args, device)
    train_set, val_set = training_sets(args, spec.input_size, decoded_later=on_device)
    generated = dg.generated_set(args, spec.input_size) if args.DG else None   # DG-Market's pictures
    cache = pipeline.decode_all(train_set.samples, spec.input_size, args.num_workers, device) if on_device else None
    args.nclasses = len(train_set.classes)
    net = build_network(args, spec, args.nclasses, device)
    ctx = training_context(args, net, device)
    net = distributed.sync_batchnorm(net, world, device) if args.sync_bn else net   # same parameters, optimizer kept
    ctx.world, ctx.progress = world, world.main
    ctx.held_out = validation.held_out_sets(args.data_dir, spec.input_size) if world.main else None
    run_dir = runs.prepare_run_dir(args) if world.main else runs.run_dir(args.name)
    distributed.barrier(world)
    net = acceleration.compiled(distributed.wrap(net, world, device), args.compile, device)
    start, history = checkpoints.restore(run_dir, net, ctx, args) if args.resume else (0, [])
    opts = {**vars(args), "nclasses": len(train_set.classes), "input_size": list(spec.input_size),
            "feature_dim": spec.feature_dim(0 if args.bnneck else args.linear_num), "torch": str(torch.__version__),
            "torchvision": str(__import__("torchvision").__version__),
            "kernels": acceleration.kernel_set(device)}
    if world.main:
        if args.resume:
            acceleration.note_kernel_change(run_dir, opts["kernels"])
        files.save_yaml(os.path.join(run_dir, "opts.yaml"), opts)
    if start >= args.total_epoch:
        say(f"{run_dir} has finished all {args.total_epoch} epochs; nothing to do (add --total_epoch N to extend it)")
        return run_dir
    processes = f" x {world.size} process{'es' if world.size > 1 else ''}" if world.distributed else ""
    say(f"{args.backbone} on {device} ({opts['kernels']}){processes}: {len(train_set)} training pictures of "
        f"{len(train_set.classes)} identities, epochs {start + 1}..{args.total_epoch}, writing {run_dir}/")
    loaders = recipes.make_loaders(args, train_set, val_set, device, world, cache, generated)
    fit(net, loaders, ctx, args, run_dir, start, history)
    if ctx.average is not None and world.main:   # BatchNorm statistics of the average: rank 0, every picture
        loader = recipes.make_loaders(args, train_set, val_set, device, distributed.World(), cache)["train"]
        loader.generator.manual_seed(utils.derived_seed(args.seed, args.total_epoch))
        average = recipes.finish_weight_average(ctx.average, loader, device)
        runs.save_weights(os.path.join(run_dir, runs.checkpoint_name("average")), checkpoints.unwrap(average))
    say(f"done: {run_dir}/net_last.pth" + (" and net_average.pth" if ctx.average is not None else ""))
    return run_dir


@utils.cli_main(interrupted="run the same command with --resume to continue (the last finished epoch is kept)")
def main(argv=None):
    world = distributed.from_environment()   # torchrun's (or spawn's) processes, or this one alone
    args = resolve_options(build_parser(), argv)
    spec = models.get_backbone(args.backbone)
    device, gpu_ids = distributed.choose_device(world, args.gpu_ids)
    if len(gpu_ids) > 1 and not world.distributed:   # --gpu_ids 0,1: one process per GPU, as torchrun starts
        distributed.check_batch(distributed.World(size=len(gpu_ids)), args.batchsize,
                                args.num_instances if args.sampler == "pk" else None)
        distributed.spawn(main, sys.argv[1:] if argv is None else argv, len(gpu_ids))
        return runs.run_dir(args.name)
    distributed.start(world, device, args.dist_timeout)
    try:
        with runs.run_lock(args.name, world.main):   # no second train.py may write or delete model/NAME meanwhile
            return train_run(args, spec, device, world)
    finally:
        distributed.stop(world)


if __name__ == "__main__":
    main()
