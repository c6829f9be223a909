"""--DG: generated pictures as a consistency target, layumi's "memory in vivo" loss on DG-Market.

DG-Market holds about 128,000 pictures that DG-Net (Zheng et al., "Joint Discriminative and Generative
Learning for Person Re-identification", CVPR 2019) generated from Market-1501's training people, by
dressing one person's body in another's clothes. Its pictures have no identity label. In the last fifth
of the epochs, each training step also takes a batch of them in two augmented views; the weight-averaged
network (--wa, the teacher; no gradient, as in DINO) predicts the classes of the second view, and the
network's prediction for the first should agree with it: the loss is the symmetric Kullback-Leibler
divergence between the two class distributions, times 0.1, added to the step's loss.

What differs from layumi's train.py, on purpose:
  * the term runs in the last ceil(20 %) of the epochs (12 of 60, and at least the last one); layumi's
    test ``epoch > 0.8 * total`` on 0-based epochs gives 11 of 60 and none at all in a run of 5 epochs
    or fewer;
  * PCB's six parts each get their own divergence, averaged, instead of a log-softmax of an average of
    probabilities;
  * the generated batches are drawn afresh every epoch from (seed, epoch), so --resume repeats them.
"""
import functools
import math
import os

import torch
import torch.nn.functional as F

import utils
from reid.images import image_folder, image_transforms
from utils import UserError

WEIGHT = 0.1            # layumi's weight of the divergence
LAST_FRACTION = 0.2     # the share of the epochs, at the end, that use the generated pictures
SOURCE = "https://github.com/NVlabs/DG-Net#dg-market"
STREAM = 9              # derived_seed(seed, epoch, STREAM, rank, cycle): the generated batches' own draws


class TwoViews(torch.utils.data.Dataset):
    """An ImageFolder's pictures, each returned as two independently augmented views (labels unused)."""

    def __init__(self, folder):
        self.folder = folder

    def __len__(self):
        return len(self.folder.samples)

    def __getitem__(self, index):
        picture = self.folder.loader(self.folder.samples[index][0])
        return self.folder.transform(picture), self.folder.transform(picture)


def generated_set(args, size):
    """--dg_dir as two-view training pictures (training augmentation); one error line when it is missing."""
    if not os.path.isdir(args.dg_dir):
        raise UserError(f"--DG: {args.dg_dir} does not exist",
                        f"download DG-Market (DG-Net's generated pictures, {SOURCE}) and unzip it there or pass "
                        "--dg_dir PATH; for the toy set: python toy_data.py --out data --dataset dg-market "
                        "and --dg_dir data/DG-Market")
    transform = image_transforms(size, train=True, color_jitter=args.color_jitter, erasing_p=args.erasing_p)
    return TwoViews(image_folder(args.dg_dir, transform))


def generated_loader(dataset, args, world):
    """Batches of max(8, --batchsize / 2) generated pictures (layumi's size), in an order seeded per epoch."""
    batch = max(8, args.batchsize // 2)
    generator = torch.Generator()
    return torch.utils.data.DataLoader(
        dataset, batch_size=batch, sampler=torch.utils.data.RandomSampler(dataset, generator=generator),
        drop_last=len(dataset) >= batch, num_workers=args.num_workers, generator=generator,
        worker_init_fn=functools.partial(utils.seed_worker, rank=world.rank))


def active(epoch, total_epoch):
    """Whether 0-based ``epoch`` is among the last ceil(LAST_FRACTION x total) epochs."""
    return epoch >= total_epoch - max(1, math.ceil(LAST_FRACTION * total_epoch - 1e-9))


def class_log_probabilities(outputs):
    """Log-softmax over the classes of a network's training output: logits (N, C), PCB's (N, parts, C),
    or (logits, features) with the metric losses."""
    logits = outputs[0] if isinstance(outputs, tuple) else outputs
    return F.log_softmax(logits.float(), dim=-1)


def symmetric_kl(student, teacher):
    """(KL(p_s || p_t) + KL(p_t || p_s)) / 2 from log-probabilities (..., C), summed over the classes and
    averaged over everything else (the batch, and PCB's parts)."""
    forward = (student.exp() * (student - teacher)).sum(-1)
    backward = (teacher.exp() * (teacher - student)).sum(-1)
    return (forward + backward).mean() / 2


class Consistency:
    """The --DG term of one epoch: ``term(net)`` draws the next generated batch and returns WEIGHT x the
    divergence between the ``student``'s prediction on the first view and ``teacher``'s on the second (0 while
    ``net``, the student as training runs it, is in eval mode). ``student`` is the plain module (not wrapped
    by DistributedDataParallel or torch.compile); its parameters are the wrapped one's, so their gradients
    still meet DistributedDataParallel's all-reduce once. The batches restart, re-seeded, when an epoch uses
    them all."""

    def __init__(self, loader, teacher, student, seed, epoch, rank, device, memory_format):
        self.loader, self.teacher, self.student = loader, teacher, student
        self.device, self.memory_format = device, memory_format
        self.seeds = (seed, epoch, STREAM, rank)
        self.cycle, self.batches = 0, None

    def next_batch(self):
        if self.batches is None:
            self.loader.generator.manual_seed(utils.derived_seed(*self.seeds, self.cycle))
            self.batches = iter(self.loader)
        try:
            return next(self.batches)
        except StopIteration:
            self.cycle, self.batches = self.cycle + 1, None
            return self.next_batch()

    def __call__(self, net):
        if not net.training:
            return 0
        first, second = (view.to(self.device, non_blocking=True, memory_format=self.memory_format)
                         for view in self.next_batch())
        self.teacher.eval()
        with torch.no_grad():
            target = class_log_probabilities(self.teacher(second))
        return WEIGHT * symmetric_kl(class_log_probabilities(self.student(first)), target)


def consistency_term(args, epoch, loader, average, student, ctx):
    """The epoch's --DG term (``Consistency``), or a term that is always 0 (no --DG, or an earlier epoch).
    ``ctx``: train.py's TrainingContext (world, device, memory format)."""
    if loader is None or not active(epoch, args.total_epoch):
        return lambda net: 0
    return Consistency(loader, average.module, student, args.seed, epoch, ctx.world.rank, ctx.device, ctx.memory_format)


def add_arguments(p):
    p.add_argument("--DG", action="store_true",
                   help="in the last fifth of the epochs, also learn from DG-Market's generated pictures: the --wa "
                        "average's prediction on one view is the target of the network's on another (turns --wa on)")
    p.add_argument("--dg_dir", default="../DG-Market",
                   help=f"--DG: the unzipped DG-Market folder ({SOURCE}), one subfolder per identity")
