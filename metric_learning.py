"""Training recipes beyond plain cross-entropy: the P x K identity sampler and metric losses.

Scaling rule, the same for every loss here: each term is a mean over the batch, and the terms are
added to the identity (cross-entropy) loss with weight 1.

``PKSampler`` yields batches of P identities x K pictures each, so that every picture in a batch has
K-1 positives (a random batch of 32 from 751 people has almost none), and uses every identity in
every epoch. ``batch_hard_triplet`` is the triplet loss with batch-hard mining (Hermans et al. 2017):
for each anchor, its farthest positive and its nearest negative in the batch.
"""
import torch
import torch.nn.functional as F


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
    """train.py's flags for samplers, metric losses, BNNeck and the recipe preset."""
    p.add_argument("--sampler", choices=["random", "pk"], default="random",
                   help="random batches, or P identities x --num_instances pictures (for metric losses)")
    p.add_argument("--num_instances", type=int, default=4, help="--sampler pk: pictures per identity in a batch (K)")
    p.add_argument("--label_smoothing", type=float, default=0.0, help="label smoothing of the cross-entropy (0 = off)")
    p.add_argument("--triplet", action="store_true",
                   help="add the batch-hard triplet loss on the L2-normalised feature; every extra loss "
                        "is a mean over the batch added to the cross-entropy (weight 1 unless stated)")
    p.add_argument("--triplet_margin", type=float, default=0.3, help="--triplet: the margin")
    p.add_argument("--center", action="store_true", help="add the centre loss (class centres are learned)")
    p.add_argument("--center_weight", type=float, default=5e-4, help="--center: weight of the centre loss (BoT's)")
    p.add_argument("--center_lr", type=float, default=0.5, help="--center: learning rate of the centres (BoT's)")
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


def check_arguments(parser, args):
    """``parser.error`` for the combinations of these flags that cannot work."""
    if args.sampler == "pk" and (args.num_instances < 2 or args.batchsize % args.num_instances):
        parser.error("--sampler pk needs --num_instances >= 2 dividing --batchsize (P x K pictures a batch)")
    if (args.triplet or args.center or args.bnneck) and args.backbone == "pcb":
        parser.error("--triplet, --center and --bnneck need one feature per picture; PCB has six")
    if not 0 <= args.label_smoothing < 1:
        parser.error("--label_smoothing must be within [0, 1)")


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


def loss_and_scores(outputs, labels, criterion, triplet_margin=None, center=None, center_weight=0.0):
    """The training loss and the class scores used for accuracy.

    Part models (PCB) give (N, parts, classes): one cross-entropy per part, summed; scores add the
    parts' softmax. With metric losses the model gives (logits, features): the batch-hard triplet
    loss (``triplet_margin``) and ``center_weight`` x the centre loss are added.
    """
    if isinstance(outputs, tuple):
        logits, features = outputs
        loss, scores = loss_and_scores(logits, labels, criterion)
        if triplet_margin is not None:
            loss = loss + batch_hard_triplet(features, labels, triplet_margin)
        if center is not None:
            loss = loss + center_weight * center(features.float(), labels)
        return loss, scores
    if outputs.dim() == 3:
        loss = sum(criterion(outputs[:, part], labels) for part in range(outputs.size(1)))
        return loss, outputs.softmax(-1).sum(1)
    return criterion(outputs, labels), outputs
