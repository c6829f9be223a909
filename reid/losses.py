"""The extra training losses behind layumi's flags, in one registry (``LOSSES``), and their sum.

Scaling rule, the same for every extra loss: each is a mean over the batch (over the pictures, the
anchors or the pairs its paper sums over), never divided by the batch size a second time, and is added
to the identity cross-entropy with weight 1 (the centre loss with ``--center_weight``, as in BoT).

Ours where the formula is short or the library's differs from the paper (batch-hard triplet, centre,
instance, SphereFace); pytorch-metric-learning's tested implementations for ArcFace, CosFace and the
pair losses. reid/recipes.py adds the flags; train.py builds ``MetricLosses`` from them.
"""
import math
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

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
    farthest_positive = distances.masked_fill(~positives, float("-inf")).max(1).values
    nearest_negative = distances.masked_fill(~negatives, float("inf")).min(1).values
    losses = F.relu(farthest_positive - nearest_negative + margin) * usable   # 0, not inf, where unusable
    return losses.sum() / usable.sum().clamp(min=1)   # no "if usable.any()": reading it would wait for the GPU


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
        """lambda as a tensor on the loss's device: reading ``steps`` as a number would wait for the GPU."""
        return (self.base / (1 + self.gamma * self.steps)).clamp(min=self.lambda_min)

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


class VerificationLoss(nn.Module):
    """The verification loss of Zheng et al. (TOMM 2017, "A discriminatively learned CNN embedding for
    person re-identification"): for every pair of pictures in the batch, a linear classifier on the square
    of their features' difference says "same person" or not (2-way softmax, cross-entropy), trained with
    the identity loss. A batch holds far fewer same-person pairs than different ones, and the paper trains
    on as many of each: the loss is the mean over same-person pairs and the mean over different-person
    pairs, averaged (a kind the batch lacks counts 0)."""

    def __init__(self, dim):
        super().__init__()
        self.classifier = nn.Linear(dim, 2)

    def forward(self, features, labels):
        first, second = torch.triu_indices(len(labels), len(labels), offset=1, device=labels.device)
        same = labels[first] == labels[second]
        losses = F.cross_entropy(self.classifier((features[first] - features[second]).pow(2)), same.long(),
                                 reduction="none")
        mean = lambda kind: (losses * kind).sum() / kind.sum().clamp(min=1)  # noqa: E731
        return (mean(same) + mean(~same)) / 2


def _library_loss(class_name, with_centres=False, mean_over_pairs=False, **library_settings):
    """A builder for one of pytorch-metric-learning's losses (imported only when chosen)."""
    def build(num_classes, dim, settings):   # the library's settings are fixed: ``settings`` is unused
        from pytorch_metric_learning import losses, reducers

        extra = dict(num_classes=num_classes, embedding_size=dim) if with_centres else {}
        if mean_over_pairs:   # its default averages only the pairs still violating the margin
            extra["reducer"] = reducers.MeanReducer()
        return getattr(losses, class_name)(**library_settings, **extra)
    return build


@dataclass(frozen=True)
class LossSettings:
    """The settings the losses read (train.py's flags of the same names)."""

    triplet_margin: float = 0.3
    ins_gamma: float = 32.0
    center_weight: float = 5e-4

    @classmethod
    def from_args(cls, args):
        return cls(**{name: getattr(args, name) for name in cls.__dataclass_fields__})


@dataclass(frozen=True)
class MetricLoss:
    summary: str                # --help text: what it is and its settings
    build: Callable             # (num_classes, feature dim, LossSettings) -> module(features, labels) -> scalar
    needs_pairs: bool = False   # uses positives within the batch: useless without --sampler pk


LOSSES = {   # layumi's flag names; settings are the papers' (or layumi's where the paper gives none for re-ID)
    "triplet": MetricLoss("batch-hard triplet loss on the L2-normalised feature, margin --triplet_margin "
                          "(Hermans et al. 2017)", lambda classes, dim, settings: BatchHardTriplet(settings.triplet_margin),
                          needs_pairs=True),
    "center": MetricLoss("centre loss with learned class centres, weight --center_weight (Wen et al. 2016, BoT)",
                         lambda classes, dim, settings: CenterLoss(classes, dim)),
    "arcface": MetricLoss("ArcFace: additive angular margin 0.5 rad (28.6 degrees), scale 64, learned class "
                          "centres (Deng et al. 2019)", _library_loss("ArcFaceLoss", True, margin=math.degrees(0.5), scale=64)),
    "cosface": MetricLoss("CosFace: additive cosine margin 0.35, scale 64, learned class centres (Wang et al. 2018)",
                          _library_loss("CosFaceLoss", True, margin=0.35, scale=64)),
    "sphere": MetricLoss("SphereFace: multiplicative angular margin 4 on the unnormalised feature, learned class "
                         "centres, the paper's lambda annealing 1000 -> 5 (Liu et al. 2017)",
                         lambda classes, dim, settings: SphereFace(classes, dim)),
    "circle": MetricLoss("circle loss on cosine similarities, m 0.25, gamma 32, mean over anchors (Sun et al. 2020)",
                         _library_loss("CircleLoss", m=0.25, gamma=32), needs_pairs=True),
    "contrast": MetricLoss("contrastive loss on L2-normalised features: positives pulled to distance 0, negatives "
                           "pushed beyond 1; mean over positive pairs + mean over negative pairs (Hadsell et al. 2006)",
                           _library_loss("ContrastiveLoss", mean_over_pairs=True, pos_margin=0, neg_margin=1),
                           needs_pairs=True),
    "lifted": MetricLoss("generalised lifted structure loss on L2-normalised features, negative margin 1, "
                         "mean over anchors (Hermans et al. 2017)",
                         _library_loss("GeneralizedLiftedStructureLoss", neg_margin=1, pos_margin=0), needs_pairs=True),
    "verif": MetricLoss("verification loss: a same/different classifier on the squared difference of two "
                        "pictures' features, over every pair in the batch, same and different pairs weighted "
                        "equally (Zheng et al. 2017)", lambda classes, dim, settings: VerificationLoss(dim),
                        needs_pairs=True),
    "instance": MetricLoss("instance loss: each picture is its own class among the batch, scale --ins_gamma "
                           "(Zheng et al. 2020)", lambda classes, dim, settings: InstanceLoss(settings.ins_gamma, False)),
    "instance_id": MetricLoss("instance loss with each identity's pictures averaged into one class, scale --ins_gamma",
                              lambda classes, dim, settings: InstanceLoss(settings.ins_gamma, True)),
}


def chosen_losses(args):
    """Names of the extra losses switched on, in registry order (the order they are added in)."""
    return [name for name in LOSSES if getattr(args, name, False)]


class _GatherRows(torch.autograd.Function):
    """Every rank's rows, concatenated in rank order; the gradient of a rank's own rows is the sum of
    the gradients every rank's loss gives them (each rank computes the loss of the whole batch)."""

    @staticmethod
    def forward(ctx, rows):
        import torch.distributed as dist

        parts = [torch.empty_like(rows) for _ in range(dist.get_world_size())]
        dist.all_gather(parts, rows.contiguous())
        ctx.rank, ctx.count = dist.get_rank(), len(rows)
        return torch.cat(parts)

    @staticmethod
    def backward(ctx, gradient):
        import torch.distributed as dist

        gradient = gradient.contiguous().clone()
        dist.all_reduce(gradient)
        return gradient[ctx.rank * ctx.count:(ctx.rank + 1) * ctx.count]


def whole_batch(features, labels):
    """A training step of several processes (torchrun): the features and labels of the whole global batch,
    so that the triplet, centre, instance and pair losses compare a picture with every other picture of
    the batch, as one process does, not only with its rank's slice. Alone, or without gradients (rank 0's
    validation), the inputs themselves.

    The loss is then the same on every rank, and a rank's rows get the sum of every rank's gradient: once
    DistributedDataParallel averages the parameters' gradients over the ranks, the step is one process's.
    """
    import torch.distributed as dist

    if not (torch.is_grad_enabled() and dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return features, labels
    parts = [torch.empty_like(labels) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, labels.contiguous())
    return _GatherRows.apply(features), torch.cat(parts)


class MetricLosses(nn.Module):
    """The extra losses ``names`` (registry keys), summed with their weights; learned class centres live here.

    They are computed in float32 outside autocast: margins on cosines near 1 need the precision, and the
    library's losses cast their centres to the feature's dtype.
    """

    def __init__(self, names, settings, num_classes, dim):
        super().__init__()
        self.terms = nn.ModuleDict({name: LOSSES[name].build(num_classes, dim, settings) for name in names})
        self.weights = {name: settings.center_weight if name == "center" else 1.0 for name in self.terms}

    def forward(self, features, labels):
        with torch.autocast(features.device.type, enabled=False):
            features, labels = whole_batch(features.float(), labels)
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
