"""What can be wrong with a prepared dataset, found without changing it: file names that break the rule,
unreadable pictures, identities in both training and test, the same picture in both, queries that can
never be answered. Pure functions over a list of ``Picture``; audit.py prints and draws them.

Near-identical pictures are found by a perceptual hash (imagehash's pHash: the signs of the picture's
low DCT frequencies, 16 x 16 = 256 bits): it costs about a millisecond a picture without a trained model,
and it answers "is this the same picture?", where a re-ID feature would answer "is this the same
person?" — the point of the dataset, not a fault in it. Measured on the toy Market: a copy resized to
90 % and re-saved at JPEG quality 70 stays within 8 bits (3 on average), two different pictures were
never closer than 36 bits; the 64-bit pHash (hash_size 8) put different toy pictures 2 bits apart.
"""
import hashlib
import os
from collections import Counter, defaultdict
from dataclasses import dataclass
from multiprocessing import Pool
from typing import Optional

import numpy as np

from reid.datasets import parse_image_name
from reid.names import NameRuleError
from reid.images import open_rgb, picture_names

TRAIN_SPLITS, TEST_SPLITS = ("train_all",), ("query", "gallery")
# prepare.py --val_ids: people held out of training for validation; like the test, they must never meet training
HELD_OUT_SPLITS = ("val_query", "val_gallery")
NOT_TRAINING = TEST_SPLITS + HELD_OUT_SPLITS
ASKED = (("query", "gallery"), ("val_query", "val_gallery"))   # each query split and the gallery it searches
HASH_SIZE = 16   # pHash side: 16 x 16 = 256 bits, held as 4 uint64 words
BLOCK = 256      # training pictures compared with all test pictures at once
COLOUR_SIZE = (256, 128)   # (height, width) the colour statistics are taken at: the default input size


@dataclass(frozen=True)
class Picture:
    path: str
    split: str
    label: str             # its identity folder
    pid: Optional[int]     # from its name (None: the name breaks every rule)
    camid: Optional[int]


def read_prepared(data_dir):
    """Every picture of train_all, query, gallery (and val_query, val_gallery) under ``data_dir`` (a prepared
    pytorch/ folder) and the names that break the rules or disagree with their folder: (pictures, [(path, why)])."""
    pictures, broken = [], []
    for split in TRAIN_SPLITS + NOT_TRAINING:
        folder = os.path.join(data_dir, split)
        labels = sorted(os.listdir(folder)) if os.path.isdir(folder) else []
        for label in (f for f in labels if os.path.isdir(os.path.join(folder, f))):   # as ImageFolder: not .DS_Store
            for name in picture_names(os.path.join(folder, label)):
                path = os.path.join(folder, label, name)
                try:
                    parsed = parse_image_name(name)
                except NameRuleError:
                    broken.append((path, "follows no naming rule"))
                    pictures.append(Picture(path, split, label, None, None))
                    continue
                if parsed.label != label:
                    broken.append((path, f"its name says identity {parsed.label}, its folder {label}"))
                pictures.append(Picture(path, split, label, parsed.pid, parsed.camid))
    return pictures, broken


def unreadable(pictures):
    """[(path, why)] of the pictures that do not decode."""
    from PIL import Image

    found = []
    for picture in pictures:
        try:
            with Image.open(picture.path) as image:
                image.load()
        except (OSError, SyntaxError, ValueError) as err:
            found.append((picture.path, str(err)))
    return found


def counts(pictures):
    """{split: (Counter of pictures per identity, Counter of pictures per camera)}."""
    table = {}
    for split in TRAIN_SPLITS + NOT_TRAINING:
        chosen = [p for p in pictures if p.split == split]
        if not chosen and split in HELD_OUT_SPLITS:   # prepared without --val_ids
            continue
        table[split] = (Counter(p.label for p in chosen), Counter(p.camid for p in chosen if p.camid is not None))
    return table


def leaked_identities(pictures):
    """Identity labels with pictures both in training and in query/gallery or the held-out val_query/val_gallery
    (junk -1 and distractors 0000, which are nobody, excepted)."""
    in_train = {p.label for p in pictures if p.split in TRAIN_SPLITS and (p.pid or 0) > 0}
    in_test = {p.label for p in pictures if p.split in NOT_TRAINING and (p.pid or 0) > 0}
    return sorted(in_train & in_test)


def unanswerable_queries(pictures):
    """Queries (and held-out val queries) without a correct match in their gallery (the same identity seen by
    another camera)."""
    lonely = []
    for query_split, gallery_split in ASKED:
        cameras = defaultdict(set)
        for p in pictures:
            if p.split == gallery_split and p.pid is not None:
                cameras[p.pid].add(p.camid)
        lonely += [p.path for p in pictures
                   if p.split == query_split and p.pid is not None and not cameras[p.pid] - {p.camid}]
    return lonely


def picture_facts(path):
    """(sha256 of the bytes, the 256-bit perceptual hash as 4 uint64 words, the colour sums) of one picture.
    The colour sums are a (2, 3) float64 array: per channel, the sum of the pixel values (in [0, 1]) and of
    their squares, over the picture resized to COLOUR_SIZE as training resizes it (bicubic). (sha, None,
    None) when it does not decode."""
    import imagehash
    from PIL import Image

    with open(path, "rb") as handle:
        exact = hashlib.sha256(handle.read()).hexdigest()
    try:
        picture = open_rgb(path)
        bits = imagehash.phash(picture, hash_size=HASH_SIZE).hash
        perceptual = np.packbits(bits.flatten()).view(np.uint64)
        pixels = np.asarray(picture.resize(COLOUR_SIZE[::-1], Image.Resampling.BICUBIC), dtype=np.float64) / 255
        colour = np.stack([pixels.sum((0, 1)), (pixels ** 2).sum((0, 1))])
    except (OSError, SyntaxError, ValueError):
        perceptual = colour = None
    return exact, perceptual, colour


def read_facts(pictures, workers=1, progress=None):
    """``picture_facts`` of every picture, in order, read by ``workers`` processes."""
    paths = [p.path for p in pictures]
    with Pool(workers) as pool:
        return list(progress(pool.imap(picture_facts, paths, chunksize=64), total=len(paths))
                    if progress else pool.imap(picture_facts, paths, chunksize=64))


def colour_statistics(pictures, facts):
    """(mean, std): per channel, over every pixel of the training pictures that decode (resized to
    COLOUR_SIZE), of the values in [0, 1]; what train.py --norm_mean/--norm_std take. None without any."""
    sums = [facts[i][2] for i, p in enumerate(pictures) if p.split in TRAIN_SPLITS and facts[i][2] is not None]
    if not sums:
        return None
    total, count = np.sum(sums, axis=0), len(sums) * COLOUR_SIZE[0] * COLOUR_SIZE[1]
    mean = total[0] / count
    return mean, np.sqrt(np.maximum(total[1] / count - mean ** 2, 0))


def duplicates(pictures, hashes, max_distance):
    """[(training picture, test picture, bits apart)] of pictures that are the same in both: identical bytes
    (0 bits), or perceptual hashes at most ``max_distance`` bits apart. ``hashes``: ``read_facts``. Every
    training hash is compared with every test hash, a block of training pictures at a time."""
    train = [i for i, p in enumerate(pictures) if p.split in TRAIN_SPLITS]
    test = [i for i, p in enumerate(pictures) if p.split in NOT_TRAINING]
    found = {}
    by_bytes = defaultdict(list)
    for i in train:
        by_bytes[hashes[i][0]].append(i)
    for j in test:
        for i in by_bytes.get(hashes[j][0], ()):
            found[i, j] = 0
    usable = lambda ids: [i for i in ids if hashes[i][1] is not None]   # noqa: E731
    train, test = usable(train), usable(test)
    test_bits = np.array([hashes[j][1] for j in test], dtype=np.uint64).reshape(len(test), -1)
    for start in range(0, len(train), BLOCK):
        block = train[start:start + BLOCK]
        bits = np.array([hashes[i][1] for i in block], dtype=np.uint64).reshape(len(block), -1)
        distance = np.zeros((len(block), len(test)), dtype=np.uint16)
        for word in range(bits.shape[1]):   # one word at a time: a (block, test) array, not four
            distance += np.bitwise_count(bits[:, word, None] ^ test_bits[None, :, word])
        for row, column in zip(*np.nonzero(distance <= max_distance)):
            found.setdefault((block[row], test[column]), int(distance[row, column]))
    return sorted((pictures[i].path, pictures[j].path, bits) for (i, j), bits in found.items())
