"""Test-time features: the network's feature of each picture and its mirror image (and scales), L2-normalised."""
import math
import os

import torch
import torch.nn.functional as F
from tqdm import tqdm

from reid import datasets, distributed, images, pipeline
from reid.pipeline import normalise_pixels
from utils import UserError

FLUSH_ROWS = 8192   # CUDA: features kept on the GPU until this many rows, then copied to the CPU in one go


def split_pictures(test_dir, split, size):
    """One split's pictures in ImageFolder order, as uint8 ResizedPictures, with the pids and cameras read
    from the file names (any benchmark's rule): (pictures, pids, camera ids)."""
    folder = os.path.join(test_dir, split)
    if not os.path.isdir(folder):
        market_only = " (multi-query: Market only)" if split == "multi-query" else ""
        raise UserError(f"{folder} does not exist",
                        f"pass --test_dir ROOT/pytorch as written by prepare.py{market_only}")
    samples = images.image_folder(folder).samples
    names = [datasets.parse_image_name(path) for path, _ in samples]
    images.check_images([path for path, _ in samples])
    return pipeline.ResizedPictures(samples, size), [n.pid for n in names], [n.camid for n in names]


@torch.inference_mode()
def extract_features(net, dataset, device, batchsize, scales=(1.0,), num_workers=0, amp_dtype=None, desc="features",
                     world=distributed.World(), allocate=torch.empty):
    """L2-normalised features of every picture in ``dataset`` (float32, on the CPU), in dataset order.

    ``dataset`` yields uint8 pictures (``reid.pipeline.ResizedPictures``: decoded and resized in the
    loader's workers, normalised here on the device, a quarter of the bytes to copy) or normalised float
    tensors. ``allocate(rows, dim)`` gives the matrix the features are written into, batch by batch
    (``reid.features.feature_store``: a file on disk). With several processes (torchrun) each extracts
    its contiguous share and every process receives the whole matrix. ``scales`` are layumi's ``--ms``
    values: area scales, so each side is resized by sqrt(scale). One difference is kept on purpose: every scale resizes the original picture,
    where layumi's loop resizes the previous scale's result (the same for ``--ms 1,1.1``; with three or
    more scales ours are as typed).
    """
    share = distributed.shard(len(dataset), world)
    loader = torch.utils.data.DataLoader(torch.utils.data.Subset(dataset, share), batchsize, shuffle=False,
                                         num_workers=num_workers, pin_memory=device.type == "cuda")
    constants = pipeline.imagenet_constants(device)   # once: each new one is a host-to-device copy
    features, done, pending, broken = None, 0, [], torch.zeros((), dtype=torch.int64, device=device)
    with tqdm(total=len(share), desc=desc, unit="img", leave=False, disable=not world.main) as bar:
        for index, (pixels, _) in enumerate(loader):
            batch = picture_features(net, pixels.to(device, non_blocking=True), scales, amp_dtype, constants)
            broken += (~torch.isfinite(batch).all(1)).sum()   # read once at the end: no wait for the GPU here
            pending.append(batch)
            if features is None:   # written in place: no list of chunks to concatenate (and hold twice)
                features = allocate(len(share), batch.shape[1])
            if sum(map(len, pending)) >= rows_held(device) or index == len(loader) - 1:
                done = flush(pending, features, done)
            bar.update(len(batch))
    features = distributed.gather_rows(world, features, device)
    broken = int(distributed.reduce_sums(world, int(broken))[0])
    if broken:
        raise UserError(f"the model gives non-finite features (nan or inf) for {broken} of {len(features)} "
                        f"{desc} pictures: its weights diverged in training, so nothing was written",
                        "train again with a smaller --lr (train.jpg shows where the loss exploded), "
                        "or pass an earlier --which_epoch")
    return features


def rows_held(device):
    """How many feature rows wait on ``device`` before one copy to the CPU: on CUDA a copy waits for the GPU
    to finish its queue, so it is done every FLUSH_ROWS rows rather than every batch."""
    return FLUSH_ROWS if device.type == "cuda" else 1


def flush(pending, features, done):
    """Copy the batches in ``pending`` (emptied) into rows ``done``... of ``features``; returns the rows filled."""
    rows = torch.cat(pending).cpu() if len(pending) > 1 else pending[0].cpu()
    features[done:done + len(rows)] = rows
    pending.clear()
    return done + len(rows)


def picture_features(net, images, scales, amp_dtype, constants=None):
    """The normalised feature of each picture of a batch, on its device: summed over it and its mirror
    image, at every scale. ``constants``: pipeline.imagenet_constants, made once by the caller."""
    if images.dtype == torch.uint8:
        images = normalise_pixels(images, constants)
    use_amp = amp_dtype is not None and images.device.type == "cuda"
    total = 0
    for view in (images, images.flip(3)):
        for scale in scales:   # an area scale, as in layumi's test.py: each side times sqrt(scale)
            scaled = view if scale == 1 else F.interpolate(view, scale_factor=math.sqrt(scale),
                                                           mode="bicubic", align_corners=False)
            with torch.autocast(images.device.type, dtype=amp_dtype, enabled=use_amp):
                total = total + net.features(scaled).float()
    return normalise(total)


def normalise(features):
    """Unit length; PCB's (N, 2048, parts) stripes each get length 1/sqrt(parts), then are concatenated."""
    if features.dim() == 3:
        parts = features.shape[2]
        features = features / (features.norm(dim=1, keepdim=True) * math.sqrt(parts))
        return features.flatten(1)   # not reshape(len(features), -1): the exported graph keeps its batch dynamic
    return F.normalize(features, dim=1)


def parse_scales(text):
    try:
        scales = [float(part) for part in text.split(",") if part.strip()]
    except ValueError:
        scales = []
    if not scales or any(s <= 0 for s in scales):
        raise UserError(f"--ms {text} is not a list of positive scales", "pass e.g. --ms 1 or --ms 1,1.1,1.2")
    return scales
