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
    """Batches of ``identities`` x ``instances`` dataset indices, every identity at least once an epoch.

    Identities are taken in a random order; the last batch is completed with identities from the
    start of that order. An identity with fewer than ``instances`` pictures repeats some of them.
    The order comes from ``generator`` alone, so re-seeding it repeats the epoch exactly.
    """

    def __init__(self, labels, identities, instances, generator):
        self.identities, self.instances, self.generator = identities, instances, generator
        by_label = {}
        for index, label in enumerate(labels):
            by_label.setdefault(int(label), []).append(index)
        self.pictures = [torch.tensor(by_label[label]) for label in sorted(by_label)]
        if len(self.pictures) < identities:
            raise ValueError(f"{identities} identities per batch, but the data has {len(self.pictures)}")

    def __len__(self):
        return -(-len(self.pictures) // self.identities)

    def __iter__(self):
        order = torch.randperm(len(self.pictures), generator=self.generator).tolist()
        order += order[:len(self) * self.identities - len(order)]
        for start in range(0, len(order), self.identities):
            batch = []
            for identity in order[start:start + self.identities]:
                pictures = self.pictures[identity]
                if len(pictures) >= self.instances:
                    chosen = torch.randperm(len(pictures), generator=self.generator)[:self.instances]
                else:
                    chosen = torch.randint(len(pictures), (self.instances,), generator=self.generator)
                batch += pictures[chosen].tolist()
            yield batch


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


def loss_and_scores(outputs, labels, criterion, triplet_margin=None):
    """The training loss and the class scores used for accuracy.

    Part models (PCB) give (N, parts, classes): one cross-entropy per part, summed; scores add the
    parts' softmax. With ``triplet_margin`` the model gives (logits, features) and the batch-hard
    triplet loss on the features is added.
    """
    if isinstance(outputs, tuple):
        logits, features = outputs
        loss, scores = loss_and_scores(logits, labels, criterion)
        return loss + batch_hard_triplet(features, labels, triplet_margin), scores
    if outputs.dim() == 3:
        loss = sum(criterion(outputs[:, part], labels) for part in range(outputs.size(1)))
        return loss, outputs.softmax(-1).sum(1)
    return criterion(outputs, labels), outputs
