"""Training recipes beyond plain cross-entropy: the P x K identity sampler, metric losses, BNNeck's
preset and the weight average.

Scaling rule, the same for every extra loss: each is a mean over the batch (over the pictures, the
anchors or the pairs its paper sums over), never divided by the batch size a second time, and is added
to the identity cross-entropy with weight 1 (the centre loss with ``--center_weight``, as in BoT).

``PKSampler`` yields batches of P identities x K pictures each, so that every picture in a batch has
K-1 positives (a random batch of 32 from 751 people has almost none), and uses every identity in
every epoch. ``LOSSES`` is the registry of the extra losses behind layumi's flags: ours where the
formula is short or the library's differs from the paper (batch-hard triplet, centre, instance,
SphereFace), and pytorch-metric-learning's tested implementations for ArcFace, CosFace and the pair losses.
"""
import math
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

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


RECIPES = {   # Bag of Tricks (Luo et al., CVPR-W 2019), option by option; opts.yaml records them resolved
    "bot": {"sampler": "pk", "num_instances": 4, "batchsize": 64, "warm_epoch": 10, "erasing_p": 0.5,
            "label_smoothing": 0.1, "stride": 1, "bnneck": True, "neck_feat": "after", "triplet": True,
            "center": True, "linear_num": 0, "droprate": 0.0},
}


def weight_average(net, decay):
    """An exponential moving average of the weights, updated after every step (``--wa``).

    BatchNorm statistics are not averaged: ``finish_weight_average`` recomputes them once, at the end.
    """
    from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

    return AveragedModel(net, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=False)


@torch.no_grad()
def finish_weight_average(average, loader, device):
    """One pass over the training pictures to give the averaged weights their own BatchNorm statistics."""
    from torch.optim.swa_utils import update_bn

    update_bn(((images.to(device), labels) for images, labels in loader), average, device=device)
    return average.module


def add_arguments(p):
    """train.py's flags for samplers, metric losses, BNNeck, the weight average and the recipe preset."""
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
    p.add_argument("--bnneck", action="store_true",
                   help="BoT's BNNeck head: metric losses on the pooled feature, the classifier after a BatchNorm")
    p.add_argument("--neck_feat", choices=["after", "before"], default="after",
                   help="--bnneck: test on the feature after the BatchNorm or before it")
    p.add_argument("--wa", action="store_true",
                   help="also keep an exponential moving average of the weights, saved as net_average.pth")
    p.add_argument("--wa_decay", type=float, default=0.998, help="--wa: decay per training step")
    p.add_argument("--recipe", choices=["none", *RECIPES], default="none",
                   help="bot: Luo et al.'s strong baseline (P x K sampler, erasing, label smoothing, stride 1, "
                        "BNNeck, triplet + centre loss); flags typed explicitly still win")


def chosen_losses(args):
    """Names of the extra losses switched on, in registry order (the order they are added in)."""
    return [name for name in LOSSES if getattr(args, name, False)]


def check_arguments(parser, args):
    """``parser.error`` for the combinations of these flags that cannot work."""
    if args.sampler == "pk" and (args.num_instances < 2 or args.batchsize % args.num_instances):
        parser.error("--sampler pk needs --num_instances >= 2 dividing --batchsize (P x K pictures a batch)")
    if (chosen_losses(args) or args.bnneck) and args.backbone == "pcb":
        parser.error(f"--{' --'.join(chosen_losses(args) or ['bnneck'])} need(s) one feature per picture; PCB has six")
    if not 0 <= args.label_smoothing < 1:
        parser.error("--label_smoothing must be within [0, 1)")
    if args.ins_gamma <= 0 or args.triplet_margin < 0 or args.center_weight <= 0:
        parser.error("--ins_gamma and --center_weight must be positive, --triplet_margin at least 0")


def pair_losses_without_pk(args):
    """The chosen losses that need positives in a batch, when batches are random (train.py warns)."""
    return [] if args.sampler == "pk" else [name for name in chosen_losses(args) if LOSSES[name].needs_pairs]


def apply_recipe(args, typed, supports_stride):
    """Set the preset's options, except those typed on the command line (and the last stride where the
    backbone has none to change)."""
    for key, value in RECIPES.get(args.recipe, {}).items():
        if key not in typed and (key != "stride" or supports_stride):
            setattr(args, key, value)


def batch_hard_triplet(features, labels, margin=0.3):
    """mean over anchors of max(0, d(anchor, farthest positive) - d(anchor, nearest negative) + margin).

    Distances are Euclidean between L2-normalised features (as layumi's baseline normalises them).
    Anchors without a positive or a negative in the batch are left out.
    """
    features = F.normalize(features, dim=1)
    distances = torch.cdist(features, features).clamp(min=0)
    same = labels[:, None] == labels[None, :]
    eye = torch.eye(len(labels), dtype=torch.bool, device=labels.device)
    positives, negatives = same & ~eye, ~same
    usable = positives.any(1) & negatives.any(1)
    if not usable.any():
        return features.sum() * 0
    farthest_positive = distances.masked_fill(~positives, float("-inf")).max(1).values
    nearest_negative = distances.masked_fill(~negatives, float("inf")).min(1).values
    return F.relu(farthest_positive - nearest_negative + margin)[usable].mean()


class CenterLoss(torch.nn.Module):
    """Centre loss (Wen et al. 2016), as BoT uses it: mean over the batch of ||f_i - c_{y_i}||^2.

    The class centres are parameters; train.py gives them an optimizer group of their own.
    """

    def __init__(self, num_classes, dim):
        super().__init__()
        self.centers = torch.nn.Parameter(torch.randn(num_classes, dim))

    def forward(self, features, labels):
        return (features - self.centers[labels]).pow(2).sum(1).mean()


class BatchHardTriplet(nn.Module):
    def __init__(self, margin):
        super().__init__()
        self.margin = margin

    def forward(self, features, labels):
        return batch_hard_triplet(features, labels, self.margin)


class InstanceLoss(nn.Module):
    """Instance loss (Zheng et al., TOMM 2020) within the batch, as layumi's baseline computes it.

    Every picture is a class of its own: its logits are ``gamma`` x its cosine similarity to each
    picture of the batch, and the target is itself; the loss is the mean cross-entropy. With
    ``merge_identities`` the pictures of one identity are first averaged into one feature, so that an
    identity, not a picture, is a class (a P x K batch would otherwise push an identity's pictures apart).
    pytorch-metric-learning's InstanceLoss indexes pictures with identity numbers when given labels,
    so it is not used.
    """

    def __init__(self, gamma, merge_identities):
        super().__init__()
        self.gamma, self.merge_identities = gamma, merge_identities

    def forward(self, features, labels):
        if self.merge_identities:
            identities, index = labels.unique(return_inverse=True)
            if len(identities) < 2:
                return features.sum() * 0
            sums = features.new_zeros(len(identities), features.size(1)).index_add_(0, index, features)
            features = sums / torch.bincount(index, minlength=len(identities))[:, None]
        normalised = F.normalize(features, dim=1)
        logits = self.gamma * normalised @ normalised.t()
        return F.cross_entropy(logits, torch.arange(len(logits), device=logits.device))


class SphereFace(nn.Module):
    """SphereFace's A-Softmax loss (Liu et al., CVPR 2017) with the paper's annealing.

    Logits are ||x|| cos(theta_j) against normalised class centres; the target's is
    ||x|| (lambda cos(theta) + psi(theta)) / (1 + lambda), psi(theta) = (-1)^k cos(m theta) - 2k on
    [k pi/m, (k+1) pi/m], with lambda = max(5, 1000 / (1 + 0.12 t)) after t training steps (the authors'
    settings; pytorch-metric-learning's version has no annealing). Early on, a wrong target lowers the
    loss by shrinking ||x||: from random weights on the toy set it still collapses (README).
    """

    def __init__(self, num_classes, dim, margin=4, base=1000.0, gamma=0.12, lambda_min=5.0):
        super().__init__()
        self.margin, self.base, self.gamma, self.lambda_min = margin, base, gamma, lambda_min
        self.W = nn.Parameter(torch.randn(dim, num_classes))
        self.register_buffer("steps", torch.zeros((), dtype=torch.long))   # saved, so --resume continues the schedule

    def annealing(self):
        return max(self.lambda_min, self.base / (1 + self.gamma * self.steps.item()))

    def forward(self, features, labels):
        cosine = F.normalize(features, dim=1) @ F.normalize(self.W, dim=0)
        target = cosine.gather(1, labels[:, None]).clamp(-1 + 1e-7, 1 - 1e-7)   # acos' slope is infinite at +-1
        theta = target.acos()
        k = (theta * self.margin / math.pi).floor().detach()
        psi = torch.where(k % 2 == 0, 1.0, -1.0) * torch.cos(self.margin * theta) - 2 * k
        weight = self.annealing()
        if torch.is_grad_enabled():   # training steps only, not validation
            self.steps += 1
        logits = cosine.scatter(1, labels[:, None], (weight * target + psi) / (1 + weight))
        return F.cross_entropy(logits * features.norm(dim=1, keepdim=True), labels)


def _library_loss(class_name, with_centres=False, mean_over_pairs=False, **settings):
    """A builder for one of pytorch-metric-learning's losses (imported only when chosen)."""
    def build(num_classes, dim, args):
        from pytorch_metric_learning import losses, reducers

        extra = dict(num_classes=num_classes, embedding_size=dim) if with_centres else {}
        if mean_over_pairs:   # its default averages only the pairs still violating the margin
            extra["reducer"] = reducers.MeanReducer()
        return getattr(losses, class_name)(**settings, **extra)
    return build


@dataclass(frozen=True)
class MetricLoss:
    summary: str                # --help text: what it is and its settings
    build: Callable             # (num_classes, feature dim, args) -> module(features, labels) -> scalar
    needs_pairs: bool = False   # uses positives within the batch: useless without --sampler pk


LOSSES = {   # layumi's flag names; settings are the papers' (or layumi's where the paper gives none for re-ID)
    "triplet": MetricLoss("batch-hard triplet loss on the L2-normalised feature, margin --triplet_margin "
                          "(Hermans et al. 2017)", lambda classes, dim, args: BatchHardTriplet(args.triplet_margin),
                          needs_pairs=True),
    "center": MetricLoss("centre loss with learned class centres, weight --center_weight (Wen et al. 2016, BoT)",
                         lambda classes, dim, args: CenterLoss(classes, dim)),
    "arcface": MetricLoss("ArcFace: additive angular margin 0.5 rad (28.6 degrees), scale 64, learned class "
                          "centres (Deng et al. 2019)", _library_loss("ArcFaceLoss", True, margin=math.degrees(0.5), scale=64)),
    "cosface": MetricLoss("CosFace: additive cosine margin 0.35, scale 64, learned class centres (Wang et al. 2018)",
                          _library_loss("CosFaceLoss", True, margin=0.35, scale=64)),
    "sphere": MetricLoss("SphereFace: multiplicative angular margin 4 on the unnormalised feature, learned class "
                         "centres, the paper's lambda annealing 1000 -> 5 (Liu et al. 2017)",
                         lambda classes, dim, args: SphereFace(classes, dim)),
    "circle": MetricLoss("circle loss on cosine similarities, m 0.25, gamma 32, mean over anchors (Sun et al. 2020)",
                         _library_loss("CircleLoss", m=0.25, gamma=32), needs_pairs=True),
    "contrast": MetricLoss("contrastive loss on L2-normalised features: positives pulled to distance 0, negatives "
                           "pushed beyond 1; mean over positive pairs + mean over negative pairs (Hadsell et al. 2006)",
                           _library_loss("ContrastiveLoss", mean_over_pairs=True, pos_margin=0, neg_margin=1),
                           needs_pairs=True),
    "lifted": MetricLoss("generalised lifted structure loss on L2-normalised features, negative margin 1, "
                         "mean over anchors (Hermans et al. 2017)",
                         _library_loss("GeneralizedLiftedStructureLoss", neg_margin=1, pos_margin=0), needs_pairs=True),
    "instance": MetricLoss("instance loss: each picture is its own class among the batch, scale --ins_gamma "
                           "(Zheng et al. 2020)", lambda classes, dim, args: InstanceLoss(args.ins_gamma, False)),
    "instance_id": MetricLoss("instance loss with each identity's pictures averaged into one class, scale --ins_gamma",
                              lambda classes, dim, args: InstanceLoss(args.ins_gamma, True)),
}


class MetricLosses(nn.Module):
    """The extra losses chosen in ``args``, summed with their weights; learned class centres live here.

    They are computed in float32 outside autocast: margins on cosines near 1 need the precision, and the
    library's losses cast their centres to the feature's dtype.
    """

    def __init__(self, args, num_classes, dim):
        super().__init__()
        self.terms = nn.ModuleDict({name: LOSSES[name].build(num_classes, dim, args) for name in chosen_losses(args)})
        self.weights = {name: args.center_weight if name == "center" else 1.0 for name in self.terms}

    def forward(self, features, labels):
        with torch.autocast(features.device.type, enabled=False):
            features = features.float()
            return sum(self.weights[name] * term(features, labels) for name, term in self.terms.items())

    def parameter_groups(self, lr, center_lr):
        """Optimizer groups: the centre loss's centres at ``center_lr`` (BoT: the gradient of the unweighted
        loss), the margin losses' class centres at ``lr``; no weight decay (centres are not a model to shrink)."""
        groups = []
        for name, term in self.terms.items():
            params = list(term.parameters())
            if params:
                rate = center_lr / self.weights[name] if name == "center" else lr
                groups.append({"params": params, "lr": rate, "weight_decay": 0.0})
        return groups


def loss_and_scores(outputs, labels, criterion, metric=None):
    """The training loss and the class scores used for accuracy.

    Part models (PCB) give (N, parts, classes): one cross-entropy per part, summed; scores add the
    parts' softmax. With metric losses the model gives (logits, features) and ``metric`` (a
    ``MetricLosses``) adds its terms.
    """
    if isinstance(outputs, tuple):
        logits, features = outputs
        loss, scores = loss_and_scores(logits, labels, criterion)
        return (loss + metric(features, labels) if metric is not None else loss), scores
    if outputs.dim() == 3:
        loss = sum(criterion(outputs[:, part], labels) for part in range(outputs.size(1)))
        return loss, outputs.softmax(-1).sum(1)
    return criterion(outputs, labels), outputs
