"""Training recipes: layumi's optimiser and schedule, and beyond plain cross-entropy the P x K identity
sampler, train.py's flags for the metric losses (``reid.losses.LOSSES``), the BoT preset and the weight average.

``PKSampler`` yields batches of P identities x K pictures each, so that every picture in a batch has
K-1 positives (a random batch of 32 from 751 people has almost none), and uses every identity in
every epoch.
"""
import functools
import warnings

import torch
from torch.optim.swa_utils import AveragedModel

from reid.losses import LOSSES, chosen_losses
import utils
from utils import UserError


class PKSampler(torch.utils.data.Sampler):
    """Batches of ``identities`` x ``instances`` dataset indices; every identity in every epoch.

    An epoch makes as many passes over the identities as it takes to show about as many pictures as
    the dataset holds (a pass uses each identity once, in random order, padded with identities from
    its own start), so one epoch costs about what a plain epoch does and a batch never repeats an
    identity. An identity with fewer than ``instances`` pictures repeats some. The order comes from
    ``generator`` alone, so re-seeding it repeats the epoch exactly.
    """

    def __init__(self, labels, identities, instances, generator):
        self.identities, self.instances, self.generator = identities, instances, generator
        by_label = {}
        for index, label in enumerate(labels):
            by_label.setdefault(int(label), []).append(index)
        self.pictures = [torch.tensor(by_label[label]) for label in sorted(by_label)]
        if len(self.pictures) < identities:
            raise ValueError(f"{identities} identities per batch, but the data has {len(self.pictures)}")
        self.passes = max(1, round(len(labels) / (len(self.pictures) * instances)))

    def __len__(self):
        return self.passes * -(-len(self.pictures) // self.identities)

    def __iter__(self):
        for _ in range(self.passes):
            order = torch.randperm(len(self.pictures), generator=self.generator).tolist()
            order += order[:(-len(order)) % self.identities]   # pad the last batch from this pass
            for start in range(0, len(order), self.identities):
                yield [index for identity in order[start:start + self.identities] for index in self.draw(identity)]

    def draw(self, identity):
        pictures = self.pictures[identity]
        if len(pictures) >= self.instances:
            return pictures[torch.randperm(len(pictures), generator=self.generator)[:self.instances]].tolist()
        return pictures[torch.randint(len(pictures), (self.instances,), generator=self.generator)].tolist()


def pk_sampler(labels, batchsize, instances, generator):
    """train.py's ``--sampler pk``: checks that the batch can hold distinct identities, and says when it holds few."""
    identities = batchsize // instances
    if identities > len(set(labels)):
        raise UserError(f"--batchsize {batchsize} / --num_instances {instances} = {identities} identities a batch, "
                        f"but there are {len(set(labels))}", "pass a smaller --batchsize")
    if identities < 16:
        print(f"note: {identities} identities a batch; BoT uses 16 (on the toy set 8 x 4 stalls training from "
              "random weights, 16 x 2 does not: README, Training recipes)")
    return PKSampler(labels, identities, instances, generator)


RANGES = {   # train.py flag: (is the value possible?, what it must be)
    "batchsize": (lambda v: v >= 1, "at least 1"), "total_epoch": (lambda v: v >= 1, "at least 1"),
    "num_workers": (lambda v: v >= 0, "at least 0"), "lr": (lambda v: v > 0, "positive"),
    "weight_decay": (lambda v: v >= 0, "at least 0"), "warm_epoch": (lambda v: v >= 0, "at least 0"),
    "erasing_p": (lambda v: 0 <= v <= 1, "within [0, 1]"), "droprate": (lambda v: 0 <= v < 1, "within [0, 1)"),
    "wa_decay": (lambda v: 0 < v < 1, "within (0, 1)"), "target_fpr": (lambda v: 0 < v < 1, "within (0, 1)"),
    "adv": (lambda v: v >= 0, "at least 0"), "aiter": (lambda v: v >= 1, "at least 1"),
}


def check_ranges(parser, args):
    """One ``parser.error`` naming every numeric flag outside the values it can take."""
    bad = [f"--{flag} {getattr(args, flag)} must be {what}" for flag, (possible, what) in RANGES.items()
           if not possible(getattr(args, flag))]
    if bad:
        parser.error("; ".join(bad))


def make_loaders(args, train_set, val_set, device, world, cache=None, generated=None):
    """Training batches (random, or P x K with --sampler pk) from a generator that train.py re-seeds every
    epoch, so the order depends on (seed, epoch) only; under torchrun each rank keeps its slice of each.
    With ``cache`` (the decoded pictures, ``reid.pipeline``) they are augmented on the device; else by
    torchvision's per-picture transforms in DataLoader workers. Those are started afresh every epoch,
    because persistent workers would keep their random state across epochs and --resume could not
    repeat an epoch exactly; the validation loader keeps its workers (it draws nothing). ``generated``: --DG's
    pictures (``reid.dg``), drawn by a loader of their own."""
    from reid import dg, distributed, pipeline

    generator = torch.Generator()
    common = dict(num_workers=args.num_workers, pin_memory=device.type == "cuda",
                  worker_init_fn=functools.partial(utils.seed_worker, rank=world.rank))   # augmentations per rank
    if args.sampler == "pk":
        batches = pk_sampler(train_set.targets, args.batchsize, args.num_instances, generator)
    else:
        weak = pair_losses_without_pk(args)
        if weak and world.main:
            print(f"warning: --{' --'.join(weak)} find(s) few positives in random batches; add --sampler pk")
        batches = torch.utils.data.BatchSampler(torch.utils.data.RandomSampler(train_set, generator=generator),
                                                args.batchsize, drop_last=True)
    if cache is not None:
        train = pipeline.DeviceBatches(cache, train_set.targets, batches, generator, args.erasing_p, world)
    else:
        train = torch.utils.data.DataLoader(train_set, batch_sampler=distributed.RankSlice(batches, world),
                                            generator=generator, **common)
    val = torch.utils.data.DataLoader(val_set, args.batchsize, shuffle=False, persistent_workers=args.num_workers > 0,
                                      **common)
    extra = {"dg": dg.generated_loader(generated, args, world)} if generated is not None else {}
    return {"train": train, "val": val, **extra}


RECIPES = {   # Bag of Tricks (Luo et al., CVPR-W 2019), option by option; opts.yaml records them resolved
    "bot": {"sampler": "pk", "num_instances": 4, "batchsize": 64, "warm_epoch": 10, "erasing_p": 0.5,
            "label_smoothing": 0.1, "stride": 1, "bnneck": True, "neck_feat": "after", "triplet": True,
            "center": True, "linear_num": 0, "droprate": 0.0},
}


class WeightAverage(AveragedModel):
    """torch's EMA (AveragedModel with get_ema_multi_avg_fn), without its per-step trip to the host: the
    library reads its step counter (``n_averaged == 0``) and copies it to the GPU at every update. Here the
    counter stays on the CPU, for checkpoints, and is read once, after a --resume has loaded it."""

    def __init__(self, net, decay):
        super().__init__(net, use_buffers=False)
        self.decay, self.first = decay, None

    def update_parameters(self, model):
        averaged, current = [p.detach() for p in self.module.parameters()], [p.detach() for p in model.parameters()]
        if self.first is None:
            self.first = bool(self.n_averaged == 0)
        if self.first:
            torch._foreach_copy_(averaged, current)
            self.first = False
        else:
            torch._foreach_lerp_(averaged, current, 1 - self.decay)
        for mine, theirs in zip(self.module.buffers(), model.buffers()):   # BatchNorm's, kept in step
            mine.detach().copy_(theirs.detach())
        self.n_averaged += 1


def weight_average(net, decay):
    """An exponential moving average of the weights, updated after every step (``--wa``).

    BatchNorm statistics are not averaged: ``finish_weight_average`` recomputes them once, at the end.
    """
    return WeightAverage(net, decay)


@torch.no_grad()
def finish_weight_average(average, loader, device):
    """One pass over the training pictures to give the averaged weights their own BatchNorm statistics."""
    from torch.optim.swa_utils import update_bn

    update_bn(((images.to(device), labels) for images, labels in loader), average, device=device)
    return average.module


def add_arguments(p):
    """train.py's flags for samplers, metric losses, the weight average and the recipe preset (BNNeck is a
    head option: model.HEAD_OPTIONS)."""
    p.add_argument("--sampler", choices=["random", "pk"], default="random",
                   help="random batches, or P identities x --num_instances pictures (for metric losses)")
    p.add_argument("--num_instances", type=int, default=4, help="--sampler pk: pictures per identity in a batch (K)")
    p.add_argument("--label_smoothing", type=float, default=0.0, help="label smoothing of the cross-entropy (0 = off)")
    losses = p.add_argument_group(
        "metric losses (combine freely; all need one feature per picture)",
        "Scaling rule: every extra loss is a mean over the batch (of its pictures, anchors or pairs), never "
        "divided by the batch size again, and is added to the cross-entropy with weight 1 (the centre loss "
        "with --center_weight). Class centres are learned without weight decay, at --lr (the centre "
        "loss's at --center_lr).")
    for name, loss in LOSSES.items():
        losses.add_argument(f"--{name}", action="store_true", help=loss.summary)
    losses.add_argument("--triplet_margin", type=float, default=0.3, help="--triplet: the margin")
    losses.add_argument("--ins_gamma", type=float, default=32, help="--instance/--instance_id: scale of the cosines")
    losses.add_argument("--center_weight", type=float, default=5e-4, help="--center: weight of the centre loss (BoT's)")
    losses.add_argument("--center_lr", type=float, default=0.5, help="--center: learning rate of the centres (BoT's)")
    p.add_argument("--adv", type=float, default=0.0, help="adversarial training (layumi's flag): the weight R of the "
                   "cross-entropy of the batch's ODFA copies (reid/attacks.py, Wang et al. 2022); 0 = off")
    p.add_argument("--aiter", type=int, default=10, help="--adv: add the adversarial term every N-th step")
    p.add_argument("--wa", action="store_true",
                   help="also keep an exponential moving average of the weights, saved as net_average.pth")
    p.add_argument("--wa_decay", type=float, default=0.998, help="--wa: decay per training step")
    p.add_argument("--recipe", choices=["none", *RECIPES], default="none",
                   help="bot: Luo et al.'s strong baseline (P x K sampler, erasing, label smoothing, stride 1, "
                        "BNNeck, triplet + centre loss); flags typed explicitly still win")


def check_arguments(parser, args, backbone):
    """``parser.error`` for the combinations of these flags that cannot work (``backbone``: the registry entry)."""
    if args.sampler == "pk" and (args.num_instances < 2 or args.batchsize % args.num_instances):
        parser.error("--sampler pk needs --num_instances >= 2 dividing --batchsize (P x K pictures a batch)")
    if (chosen_losses(args) or args.bnneck) and backbone.parts > 1:
        alias = f" (--{backbone.legacy_flag})" if backbone.legacy_flag else ""
        parser.error(f"--{' --'.join(chosen_losses(args) or ['bnneck'])} need(s) one feature per picture; "
                     f"--backbone {backbone.name}{alias} has {backbone.parts}")
    if not 0 <= args.label_smoothing < 1:
        parser.error("--label_smoothing must be within [0, 1)")
    if args.ins_gamma <= 0 or args.triplet_margin < 0 or args.center_weight <= 0:
        parser.error("--ins_gamma and --center_weight must be positive, --triplet_margin at least 0")
    from reid.images import input_statistics

    input_statistics(vars(args))   # one line, before any work, for values that are not colour statistics


def pair_losses_without_pk(args):
    """The chosen losses that need positives in a batch, when batches are random (train.py warns)."""
    return [] if args.sampler == "pk" else [name for name in chosen_losses(args) if LOSSES[name].needs_pairs]


def apply_recipe(args, typed, supports_stride):
    """Set the preset's options, except those typed on the command line (and the last stride where the
    backbone has none to change)."""
    for key, value in RECIPES.get(args.recipe, {}).items():
        if key not in typed and (key != "stride" or supports_stride):
            setattr(args, key, value)


def build_optimizer(net, args, metric=None):
    """SGD with nesterov; the new head learns at --lr, the pretrained backbone at 0.1 x --lr; the metric
    losses' class centres as ``MetricLosses.parameter_groups`` says."""
    head = [p for n, p in net.named_parameters() if n.startswith("classifier") and p.requires_grad]
    backbone = [p for n, p in net.named_parameters() if not n.startswith("classifier")]
    backbone_lr = args.lr if args.no_pretrained else 0.1 * args.lr   # nothing to preserve in random weights
    groups = [{"params": backbone, "lr": backbone_lr}, {"params": head, "lr": args.lr}]
    if metric is not None:   # first, so that param_groups[-1] stays the head (its lr is the one printed)
        groups = metric.parameter_groups(args.lr, args.center_lr) + groups
    settings = dict(weight_decay=args.weight_decay, momentum=0.9, nesterov=True)
    try:
        optimizer = torch.optim.SGD(groups, **settings, fused=True if args.FSGD else None)
    except (RuntimeError, ValueError) as err:   # a torch or device without the fused kernel
        print(f"note: --FSGD cannot run here ({str(err).splitlines()[0]}); training with the plain SGD")
        optimizer = torch.optim.SGD(groups, **settings)
    return optimizer, build_scheduler(optimizer, args)


def build_scheduler(optimizer, args, done=0):
    """Cosine decay (--cosine) or x0.1 at 2/3 of --total_epoch, ``done`` epochs on: a finished run that
    --resume --total_epoch extends gets the schedule of its new length from where it stands."""
    for group in optimizer.param_groups:
        group["lr"] = group.setdefault("initial_lr", group["lr"])
    if args.cosine:
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, args.total_epoch, eta_min=0.01 * args.lr)
    else:
        scheduler = torch.optim.lr_scheduler.StepLR(optimizer, max(1, args.total_epoch * 2 // 3), gamma=0.1)
    with warnings.catch_warnings():   # stepping without optimizer.step() is the point here
        warnings.simplefilter("ignore")
        for _ in range(done):
            scheduler.step()
    return scheduler


def warm_schedule(args, epoch, steps_per_epoch):
    """layumi's warm-up: the loss weight grows from 0.1 to 1 over --warm_epoch epochs (stateless: resumable)."""
    warm_steps = args.warm_epoch * steps_per_epoch
    done = epoch * steps_per_epoch
    return lambda step: min(1.0, 0.1 + 0.9 * (done + step + 1) / warm_steps) if done + step < warm_steps else 1.0
