"""The decoded-once input pipeline (``--input_pipeline device``): every picture is decoded and resized once
into a uint8 tensor cache, and each batch is augmented by batched tensor operations on the training device.

Why: with a fast GPU, decoding JPEGs and augmenting them one by one on the CPU is what limits training
(README, Stage 3). The cache holds exactly what the per-picture pipeline's first step makes — PIL's
bicubic resize to the input size — so both pipelines see the same pixels; Market-1501's 12,936 training
pictures at 256x128 take 1.3 GB. The augmentations are layumi's, drawn from the same distributions as
torchvision's per-picture transforms (``tests/test_pipeline.py`` compares them):
    Pad 10 (black) -> RandomCrop back to the input size -> HorizontalFlip (p 0.5) -> Normalize
    -> RandomErasing (p --erasing_p, area 2-40 %, aspect 0.3-3.3, erased to 0, up to 100 tries)
Random numbers come from a generator of their own, seeded per epoch from (--seed, epoch), and are drawn
for the whole global batch, so a run in several processes augments each picture as one process would.
"""
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from tqdm import tqdm

from reid import distributed
from reid.images import IMAGENET_MEAN, IMAGENET_STD, check_images, open_rgb

PAD = 10   # layumi's Pad(10) before the random crop
ERASE_AREA, ERASE_RATIO, ERASE_ATTEMPTS = (0.02, 0.4), 0.3, 100   # random_erasing.RandomErasing's defaults


PIPELINES = {"auto": "device on CUDA (without --color_jitter), dataloader on the CPU",
             "dataloader": "torchvision's transforms, picture by picture, in DataLoader workers (layumi's)",
             "device": "decode every picture once, augment batches on the device"}


def uses_device_pipeline(args, device):
    """Whether ``--input_pipeline`` (auto: CUDA without --color_jitter) means the decoded-once pipeline."""
    if args.input_pipeline == "auto":
        return device.type == "cuda" and not args.color_jitter
    return args.input_pipeline == "device"


BROKEN = -1   # ResizedPictures' label for a picture that does not decode


class ResizedPictures(torch.utils.data.Dataset):
    """(uint8 tensor 3 x H x W, label) of each (path, label): decoded and resized by PIL, bicubic, as the
    per-picture pipeline's Resize does, so that both pipelines start from the same pixels. A picture
    that does not decode comes as zeros labelled BROKEN: an error raised in a DataLoader worker would
    reach the main process as a traceback, so the reader names it (check_decoded)."""

    def __init__(self, samples, size):
        self.samples, self.size = list(samples), tuple(size)

    def __len__(self):
        return len(self.samples)

    def __getitem__(self, index):
        from PIL import Image
        from torchvision.transforms.functional import pil_to_tensor

        path, label = self.samples[index]
        try:
            resized = open_rgb(path).resize((self.size[1], self.size[0]), Image.BICUBIC)
        except (OSError, SyntaxError, ValueError, Image.DecompressionBombError):
            return torch.zeros(3, *self.size, dtype=torch.uint8), BROKEN
        return pil_to_tensor(resized), label


def check_decoded(labels, samples, first):
    """The one-line error of the first BROKEN picture among a batch's ``labels`` (samples[first:...])."""
    broken = (labels == BROKEN).nonzero()
    if len(broken):
        check_images([samples[first + int(broken[0])][0]])   # decodes it again, here, to say what is wrong


def decode_all(samples, size, num_workers, device, desc="decoding"):
    """Every picture of ``samples`` as one uint8 tensor (N, 3, H, W) on ``device``, decoded in
    ``num_workers`` processes; the cost is paid once per run instead of once per epoch."""
    loader = torch.utils.data.DataLoader(ResizedPictures(samples, size), batch_size=256, num_workers=num_workers)
    cache = torch.empty(len(samples), 3, *size, dtype=torch.uint8, device=device)
    done = 0
    with tqdm(total=len(samples), desc=desc, unit="img", leave=False) as bar:
        for pictures, labels in loader:
            check_decoded(labels, samples, done)
            cache[done:done + len(pictures)] = pictures.to(device)
            done += len(pictures)
            bar.update(len(pictures))
    return cache


@dataclass
class Augmentation:
    """The random choices for a batch of N pictures (tensors of length N)."""

    top: torch.Tensor          # crop offset in the padded picture, 0..2 * PAD
    left: torch.Tensor
    flip: torch.Tensor         # bool
    erase: torch.Tensor        # bool: a rectangle is erased
    erase_box: torch.Tensor    # (N, 4) top, left, height, width of that rectangle

    def __getitem__(self, part):
        return Augmentation(self.top[part], self.left[part], self.flip[part], self.erase[part], self.erase_box[part])


def draw_augmentation(count, size, erasing_p, generator):
    """The choices torchvision's RandomCrop/RandomHorizontalFlip and RandomErasing would make, for
    ``count`` pictures at once. Erasing tries up to 100 rectangles, as RandomErasing does one by one,
    and keeps the first that fits."""
    device = generator.device
    uniform = lambda *shape: torch.rand(*shape, generator=generator, device=device)   # noqa: E731
    height, width = size
    top = torch.randint(0, 2 * PAD + 1, (count,), generator=generator, device=device)
    left = torch.randint(0, 2 * PAD + 1, (count,), generator=generator, device=device)
    flip = uniform(count) < 0.5
    low, high = ERASE_AREA
    area = height * width * (low + (high - low) * uniform(count, ERASE_ATTEMPTS))
    log_ratio = math.log(ERASE_RATIO) + 2 * math.log(1 / ERASE_RATIO) * uniform(count, ERASE_ATTEMPTS)
    box_h = torch.round(torch.sqrt(area * torch.exp(log_ratio))).long()
    box_w = torch.round(torch.sqrt(area / torch.exp(log_ratio))).long()
    fits = (box_h > 0) & (box_h < height) & (box_w > 0) & (box_w < width)
    first = fits.to(torch.uint8).argmax(1, keepdim=True)
    box_h, box_w = box_h.gather(1, first)[:, 0], box_w.gather(1, first)[:, 0]
    box_top = (uniform(count) * (height - box_h + 1)).long()
    box_left = (uniform(count) * (width - box_w + 1)).long()
    erase = (uniform(count) < erasing_p) & fits.any(1)
    return Augmentation(top, left, flip, erase, torch.stack([box_top, box_left, box_h, box_w], 1))


def apply_augmentation(pictures, choice, constants=None):
    """uint8 pictures (N, 3, H, W) -> normalised float32, cropped from the zero-padded picture, mirrored and
    erased as ``choice`` says: what the per-picture transforms make of each picture with the same choices.
    ``constants``: as for ``normalise_pixels``."""
    count, _, height, width = pictures.shape
    device = pictures.device
    padded = F.pad(pictures, (PAD, PAD, PAD, PAD))
    rows = choice.top[:, None] + torch.arange(height, device=device)
    cols = choice.left[:, None] + torch.arange(width, device=device)
    cols = torch.where(choice.flip[:, None], cols.flip(1), cols)
    batch = torch.arange(count, device=device)[:, None, None]
    cropped = padded.permute(0, 2, 3, 1)[batch, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2)
    images = normalise_pixels(cropped, constants)
    top, left, box_h, box_w = (column[:, None] for column in choice.erase_box.unbind(1))
    inside_rows = (torch.arange(height, device=device) >= top) & (torch.arange(height, device=device) < top + box_h)
    inside_cols = (torch.arange(width, device=device) >= left) & (torch.arange(width, device=device) < left + box_w)
    erased = inside_rows[:, :, None] & inside_cols[:, None, :] & choice.erase[:, None, None]
    return images.masked_fill(erased[:, None], 0.0)


def imagenet_constants(device):
    """ImageNet's (mean, std) as float32 (1, 3, 1, 1) tensors on ``device``."""
    return tuple(torch.tensor(values, device=device).view(1, 3, 1, 1) for values in (IMAGENET_MEAN, IMAGENET_STD))


def normalise_pixels(pictures, constants=None):
    """uint8 pictures (N, 3, H, W) -> float32 normalised with ImageNet's mean and std, by the same float32
    operations as ToTensor + Normalize (so the values are bit-identical on the CPU). ``constants``:
    ``imagenet_constants`` made once by a caller that runs every step (each new one is a host-to-device copy)."""
    mean, std = constants or imagenet_constants(pictures.device)
    return pictures.float().div(255).sub(mean).div(std)


class DeviceBatches:
    """Training batches like a DataLoader's, from the uint8 cache and augmented on the device.

    ``batches`` is the whole (global) batch sampler; each process keeps its slice, as with a DataLoader.
    ``generator`` drives the sampler and is re-seeded by train.py every epoch; the augmentation's own
    generator is derived from that seed, so an epoch's pictures depend on (--seed, epoch) only.
    """

    def __init__(self, cache, labels, batches, generator, erasing_p, world):
        self.cache, self.labels = cache, torch.as_tensor(labels, device=cache.device)
        self.batches, self.generator, self.erasing_p, self.world = batches, generator, erasing_p, world

    def __len__(self):
        return len(self.batches)

    def __iter__(self):
        from utils import derived_seed

        device = self.cache.device
        generator = torch.Generator(device=device).manual_seed(derived_seed(self.generator.initial_seed(), 1))
        constants = imagenet_constants(device)   # once, not a copy per step
        for batch in self.batches:
            choice = draw_augmentation(len(batch), self.cache.shape[2:], self.erasing_p, generator)
            mine = distributed.rank_share(len(batch), self.world)
            indices = to_device(torch.as_tensor(batch[mine]), device)
            yield apply_augmentation(self.cache[indices], choice[mine], constants), self.labels[indices]


def to_device(indices, device):
    """A small host tensor on ``device`` without waiting for the GPU's queue: from pinned memory, asynchronously,
    so that the CPU keeps running ahead of the GPU (a plain copy from pageable memory blocks every step)."""
    if device.type != "cuda":
        return indices.to(device)
    return indices.pin_memory().to(device, non_blocking=True)
