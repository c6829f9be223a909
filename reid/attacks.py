"""Adversarial pictures for re-ID: ODFA, and the adversarial training term behind --adv R --aiter N.

ODFA, the opposite-direction feature attack (Wang et al., "U-turn: Crafting Adversarial Queries with
Opposite-direction Features", IJCV 2022), changes a picture, within a small budget of pixel levels, so that
its feature points the other way: it then matches nobody it should. Each iteration moves every pixel by
one level (1/255) against the sign of the gradient of ||f(x) - (-f(x0))||^2; a pixel never moves more
than ``rate`` levels from the original, nor leaves [0, 255]. The network is in eval mode meanwhile
(BatchNorm's running statistics, no dropout) and gets no parameter gradient.

Three differences from layumi's ODFA.py, on purpose:
  * the distance is between the features as the network gives them. Between L2-normalised ones (layumi's)
    the attack starts on a maximum of the loss: at f(x) = f(x0) its gradient is zero but for rounding,
    so the first step follows the sign of rounding noise (or, where the rounding is exact, never moves);
  * a pixel level is 1/255 divided by each channel's own ImageNet std (layumi's uses 0.226 for all three);
  * the attack reads the network's test-time feature (``features``: PCB's six stripes included) instead of
    editing the model's layers.
"""
import os

import torch
import torch.nn.functional as F

from reid.images import IMAGENET_MEAN, IMAGENET_STD

RATE = 16   # layumi's budget, in pixel levels


def steps_for(rate):
    """layumi's number of iterations for a budget of ``rate`` levels: round(min(1.25 rate, rate + 4))."""
    return round(min(1.25 * rate, rate + 4))


def flat_feature(net, images):
    """The test-time feature, flattened (PCB's stripes as one vector)."""
    return net.features(images).flatten(1)


def odfa(net, images, rate=RATE):
    """Adversarial copies of ``images`` (N, 3, H, W, normalised with ImageNet's mean and std) for ``net`` (a
    module with ``features``); returned detached, in the same normalisation."""
    mean, std = (torch.tensor(values, device=images.device).view(1, 3, 1, 1) for values in (IMAGENET_MEAN, IMAGENET_STD))
    level = 1 / (255 * std)                               # one pixel level, normalised
    lowest, highest = -mean / std, (1 - mean) / std       # pixels 0 and 255, normalised
    was_training = net.training
    net.eval()
    try:
        original = images.detach()
        with torch.no_grad():
            target = -flat_feature(net, original)
        moved = torch.zeros_like(original)   # signed pixel levels
        current = original
        for _ in range(steps_for(rate)):
            current = current.detach().requires_grad_(True)
            loss = F.mse_loss(flat_feature(net, current), target)
            gradient, = torch.autograd.grad(loss, current)
            moved = (moved + gradient.sign()).clamp(-rate, rate)
            current = torch.maximum(torch.minimum(original - moved * level, highest), lowest)
    finally:
        net.train(was_training)
    return current.detach()


def attacked_features(net, dataset, device, batchsize, rate=RATE, scales=(1.0,), num_workers=0, desc="odfa"):
    """test.py --attack odfa: the L2-normalised test features (float32, CPU) of ODFA copies of every picture of
    ``dataset`` (uint8 pictures, ``reid.pipeline.ResizedPictures``), each attacked within ``rate`` levels."""
    from tqdm import tqdm

    from reid import extraction, pipeline

    loader = torch.utils.data.DataLoader(dataset, batchsize, shuffle=False, num_workers=num_workers)
    constants, rows = pipeline.imagenet_constants(device), []
    for pixels, _ in tqdm(loader, desc=desc, unit="batch", leave=False):
        adversarial = odfa(net, pipeline.normalise_pixels(pixels.to(device), constants), rate)
        with torch.no_grad():
            rows.append(extraction.picture_features(net, adversarial, scales, None).cpu())
    return torch.cat(rows)


def attacked_path(output):
    """Where test.py --attack odfa writes its .mat: ``<stem>_odfa.mat`` beside --output."""
    return f"{os.path.splitext(output)[0]}_odfa.mat"


def adversarial_term(weight, every, criterion):
    """--adv R --aiter N, as layumi's train.py: every N-th step of an epoch, the batch's ODFA copies are
    classified too and their cross-entropy, times R, is added to the loss. ``weight`` 0: no term.

    Returns ``term(net, images, labels, step)`` -> a loss tensor, or 0 (also in validation, ``net`` in eval
    mode). ``net`` may be wrapped
    (DistributedDataParallel, torch.compile): the attack and the second forward use the plain module. Its
    parameters are the wrapped one's, so their gradients still meet DistributedDataParallel's all-reduce once.
    """
    from reid.checkpoints import unwrap
    from reid.losses import loss_and_scores

    def term(net, images, labels, step):
        if weight <= 0 or not net.training or step % every:   # off, validation, or not its step
            return 0
        plain = unwrap(net)
        return weight * loss_and_scores(plain(odfa(plain, images)), labels, criterion)[0]
    return term
