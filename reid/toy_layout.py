"""Where toy_data.py puts each picture: every benchmark's folders and list files (from the dataset table),
Market-1501's gt_query/ and readme, the layouts of the releases whose splits prepare.py draws, the toy
DG-Market, and the table toy_data.py prints."""
import dataclasses
import io
import os
from dataclasses import dataclass

import numpy as np

from reid.datasets import BENCHMARKS, JUNK_PID, match_masks

@dataclass(frozen=True)
class Shot:
    """One picture to write: where, what name, and what it shows."""

    folder: str
    filename: str
    pid: int              # -1 junk, 0 distractor (Market), else a person
    camid: int
    seed: tuple           # the picture's own random stream
    crop: str = "full"
    copy_of: int = -1     # a planted duplicate: write the bytes of shots[copy_of] instead


PLANTS = {"leak": "a training identity also in query and gallery",
          "duplicate": "a training picture's bytes again in the gallery, under a test identity",
          "unanswerable": "a query whose identity the gallery lacks"}


def planted(plants, shots, namer, benchmark):
    """The extra shots that plant each problem named in ``plants`` (comma-separated PLANTS keys)."""
    extra = []
    train = [index for index, shot in enumerate(shots) if shot.folder == "bounding_box_train"]
    if "leak" in plants:
        pid = shots[train[0]].pid
        label = f"{pid:04d}"
        for camid in (1, 1, 2):
            extra.append(Shot("bounding_box_test", namer(label, camid), pid, camid, (0, 7, pid, len(extra))))
        extra.append(Shot("query", namer(label, 2, hand_drawn=True), pid, 2, (0, 7, pid, len(extra))))
    if "duplicate" in plants:
        source = shots[train[-1]]
        test_pid = next(shot.pid for shot in shots if shot.folder == "query")
        extra.append(Shot("bounding_box_test", namer(f"{test_pid:04d}", source.camid), test_pid, source.camid,
                          source.seed, copy_of=train[-1]))
    if "unanswerable" in plants:
        pid = max(shot.pid for shot in shots) + 1
        extra.append(Shot("query", namer(f"{pid:04d}", 1, hand_drawn=True), pid, 1, (0, 8, pid)))
    return extra


# the generator plans pictures in Market's terms; each benchmark's Source says where that split lives
PLANNED_SPLIT = {"bounding_box_train": "train_all", "bounding_box_test": "gallery", "query": "query",
                 "gt_bbox": "multi-query"}
VAL_EVERY = 8   # MSMT17's list_val.txt: every 8th training picture (the release holds about one in thirteen)


def place(benchmark, shot):
    """The path of ``shot`` under the dataset root: the split's folder, and a folder per identity when the
    release lists its pictures in list files (MSMT17's train/0000/…). A release without splits (the toy
    DG-Market) keeps each shot's own folder."""
    if not benchmark.sources:
        return os.path.join(shot.folder, shot.filename)
    source = next(s for s in benchmark.sources if s.split == PLANNED_SPLIT[shot.folder])
    label = os.path.basename(shot.filename).split("_")[0]
    folder = os.path.join(benchmark.subfolder, source.folders[0])
    return os.path.join(folder, label, shot.filename) if source.lists else os.path.join(folder, shot.filename)


def list_files(benchmark, shots):
    """{list file: text} for a release that names its pictures in lists (lines ``label/name label``)."""
    lists = {}
    for source in (s for s in benchmark.sources if s.lists):
        chosen = sorted((s for s in shots if PLANNED_SPLIT[s.folder] == source.split), key=lambda s: s.filename)
        for index, shot in enumerate(chosen):
            name = source.lists[-1] if len(source.lists) > 1 and index % VAL_EVERY == VAL_EVERY - 1 else source.lists[0]
            label = shot.filename.split("_")[0]
            lists.setdefault(name, []).append(f"{label}/{shot.filename} {int(label)}\n")
        for name in source.lists:
            lists.setdefault(name, [])
    return {name: "".join(lines) for name, lines in lists.items()}


def mat_bytes(**arrays):
    """A MATLAB file with a fixed header: scipy stamps the current time there, which breaks determinism."""
    import scipy.io

    buffer = io.BytesIO()
    scipy.io.savemat(buffer, arrays)
    data = bytearray(buffer.getvalue())
    data[:116] = b"MATLAB 5.0 MAT-file, written by reid-practical toy_data.py".ljust(116)
    return bytes(data)


def write_gt_query(root, shots):
    """Market's gt_query/: for each query, 1-based indices into sorted bounding_box_test of the
    good matches (same person, other camera) and of the junk (same person and camera, or -1)."""
    gallery = sorted((s for s in shots if s.folder == "bounding_box_test"), key=lambda s: s.filename)
    pids = np.array([s.pid for s in gallery])
    cams = np.array([s.camid for s in gallery])
    os.makedirs(os.path.join(root, "gt_query"))
    for query in (s for s in shots if s.folder == "query"):
        good, junk = (np.flatnonzero(mask[0]) + 1 for mask in match_masks(np.array([query.pid]),
                                                                          np.array([query.camid]), pids, cams))
        stem = os.path.join(root, "gt_query", query.filename[:-4])
        for suffix, key, index in (("_good.mat", "good_index", good), ("_junk.mat", "junk_index", junk)):
            with open(stem + suffix, "wb") as handle:
                handle.write(mat_bytes(**{key: index.reshape(-1, 1).astype(np.float64)}))


MARKET_README = """Toy dataset made by reid-practical toy_data.py -- not the real Market-1501.
It imitates Market-1501's layout and naming so that the course's scripts run unchanged.

File names: PPPP_cCsS_FFFFFF_BB.jpg
  PPPP    person id (four digits); 0000 = distractor (false detection), -1 = junk (bad detection)
  cC      camera C;  sS = video sequence S
  FFFFFF  frame number;  BB = index of the box in the frame, from 00 (the toy names query/ and gt_bbox/ pictures 00)

Folders: bounding_box_train (training), bounding_box_test (gallery), query (one per person and camera),
gt_bbox (hand-drawn boxes for multi-query), gt_query (good/junk gallery indices for each query).
"""


# --- the releases whose splits prepare.py draws (reid/drawn_sets.py): each laid out as published ---------

VIPER_ANGLES = (0, 45, 90, 135, 180)   # VIPeR's viewpoint angles, the second part of its names
PER_CLASS = 4        # toy VehicleID / CUB pictures of an identity, per --images_per_camera
VEHICLEID_THIRDS = {800: 1, 1600: 2, 2400: 3}   # the toy's test lists: the first third, two thirds, all


def drawn_shots(dataset, seed, images_per_camera, rng, identities):
    """The pictures of a toy VIPeR, VehicleID or CUB-200-2011 (``identities``: (training, test) numbers).
    Each shot's ``folder`` is its folder under the release root."""
    train, test = identities
    shots = []
    if dataset == "viper":   # every person once in each camera; prepare.py draws the halves
        for pid in sorted(train + test):
            for camid, folder in ((1, "cam_a"), (2, "cam_b")):
                angle = int(rng.choice(VIPER_ANGLES))
                shots.append(Shot(folder, f"{pid:03d}_{angle}.bmp", pid, camid, (seed, 3, pid, camid)))
        return shots
    image = 0
    for pid in sorted(train + test):
        for index in range(PER_CLASS * images_per_camera + int(rng.integers(-1, 2))):
            image += int(rng.integers(1, 40))   # image numbers with gaps, as a release's are
            camid = int(rng.integers(1, 3))
            if dataset == "vehicleid":
                shots.append(Shot("image", f"{image:07d}.jpg", pid, camid, (seed, 3, pid, index)))
            else:
                name = f"Toy_Bird_{pid:03d}"
                shots.append(Shot(f"images/{pid:03d}.{name}", f"{name}_{index + 1:04d}_{image:06d}.jpg", pid, camid,
                                  (seed, 3, pid, index)))
    return shots


def drawn_lists(dataset, shots, test):
    """{list file under the root: text} of a toy VehicleID or CUB-200-2011 (``test``: the test identities)."""
    if dataset == "vehicleid":
        line = lambda shot: f"{shot.filename[:-4]} {shot.pid}\n"   # noqa: E731
        tested = sorted(test)
        lists = {"attribute/img2vid.txt": "".join(map(line, shots)),
                 "train_test_split/train_list.txt": "".join(line(s) for s in shots if s.pid not in test)}
        for size, thirds in VEHICLEID_THIRDS.items():
            chosen = set(tested[:max(1, len(tested) * thirds // 3)])
            lists[f"train_test_split/test_list_{size}.txt"] = "".join(line(s) for s in shots if s.pid in chosen)
        return lists
    if dataset == "cub":
        ordered = sorted(shots, key=lambda shot: (shot.folder, shot.filename))
        paths = [f"{shot.folder[len('images/'):]}/{shot.filename}" for shot in ordered]
        return {"images.txt": "".join(f"{n} {path}\n" for n, path in enumerate(paths, 1)),
                "image_class_labels.txt": "".join(f"{n} {shot.pid}\n" for n, shot in enumerate(ordered, 1)),
                "train_test_split.txt": "".join(f"{n} {n % 2}\n" for n in range(1, len(ordered) + 1)),
                "classes.txt": "".join(f"{pid} {pid:03d}.Toy_Bird_{pid:03d}\n" for pid in sorted({s.pid for s in shots}))}
    return {}


# --- what toy_data.py --dataset writes, and the table it prints -------------------------------------------

# train.py --DG's generated pictures: Market's people and cameras, one folder per identity, no splits
DG_MARKET = dataclasses.replace(BENCHMARKS["market"], key="dg-market", title="DG-Market", folder="DG-Market",
                                sources=(), official={}, gt_bbox=False, distractors="none")
GENERATED_PER_IDENTITY = 4   # toy DG-Market pictures of each training identity's clothes, per --images_per_camera


def toy_benchmark(dataset):
    """The dataset table's entry whose layout the toy ``dataset`` imitates."""
    keyed = {"cuhk03": "cuhk03-labeled", "vehicleid": "vehicleid-2400"}
    return DG_MARKET if dataset == "dg-market" else BENCHMARKS[keyed.get(dataset, dataset)]


PICTURE_FORMATS = {".png": "PNG", ".bmp": "BMP"}   # by file suffix; JPEG otherwise


def generated_shots(seed, images_per_camera, layout, rng, train):
    """The toy DG-Market: each training identity's clothes in new pictures from random cameras, in a folder
    per identity (DG-Net's pictures dress one Market person's body in another's clothes)."""
    shots = []
    for pid in train:
        for index in range(GENERATED_PER_IDENTITY * images_per_camera):
            camid = int(rng.integers(1, layout.cameras + 1))
            shots.append(Shot(f"{pid:04d}", f"{pid:04d}_g{index:04d}.jpg", pid, camid, (seed, 9, pid, index)))
    return shots


def summary_table(shots, dataset, cameras, size="128x256"):
    """Rows of images / identities / cameras per folder of the release, as printed at the end."""
    benchmark = toy_benchmark(dataset)
    lines = [f"{'folder':<20}{'images':>7}{'identities':>12}{'cameras':>9}"]
    if not benchmark.sources:   # DG-Market and the releases whose splits prepare.py draws: by top folder
        for top in sorted({s.folder.split("/")[0] for s in shots}) if dataset != "dg-market" else [benchmark.folder]:
            chosen = [s for s in shots if dataset == "dg-market" or s.folder.split("/")[0] == top]
            lines.append(f"{top:<20}{len(chosen):>7}{len({s.pid for s in chosen}):>12}{len({s.camid for s in chosen}):>9}")
        what = ("generated pictures of the Market toy's training identities" if dataset == "dg-market"
                else f"prepare.py --dataset {dataset} draws the splits")
        return "\n".join(lines + [f"{what}; {size} {PICTURE_FORMATS.get(os.path.splitext(shots[0].filename)[1], 'JPEG')}"])
    for planned in ("bounding_box_train", "bounding_box_test", "query", "gt_bbox"):
        chosen = [s for s in shots if s.folder == planned]
        if chosen:
            source = next(s for s in benchmark.sources if s.split == PLANNED_SPLIT[planned])
            folder = source.lists[0] if source.lists else os.path.basename(source.folders[0])
            lines.append(f"{folder:<20}{len(chosen):>7}{len({s.pid for s in chosen}):>12}"
                         f"{len({s.camid for s in chosen}):>9}")
    extras = ""
    if benchmark.distractors == "pictures":
        distractors = sum(s.pid == 0 for s in shots)
        junk = sum(s.pid == JUNK_PID for s in shots)
        extras = f"gallery extras: {distractors} distractors (0000) and {junk} junk (-1) pictures; "
    elif benchmark.distractors == "identities":
        in_test = {s.pid for s in shots if s.folder == "query"}
        extras = (f"gallery extras: {len({s.pid for s in shots if s.folder == 'bounding_box_test'} - in_test)} "
                  "distractor identities; ")
    kind = PICTURE_FORMATS.get(os.path.splitext(shots[0].filename)[1], "JPEG")
    lines.append(f"{extras}{cameras} cameras; {size} {kind}")
    return "\n".join(lines)
