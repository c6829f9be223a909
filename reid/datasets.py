"""The benchmarks' table: the junk and distractor ids, the protocol's correct and junk matches, and what
prepare.py needs to know about each dataset (its folders or list files, naming rule from reid/names.py,
published counts).
"""
import os
from dataclasses import dataclass
from typing import Callable

from reid.names import (CUB_RULE, CUHK03_RULE, DUKE_RULE, FOLDER_RULE, MARKET_RULE, MSMT17_RULE, VEHICLEID_RULE,
                        VERI_RULE, VIPER_RULE, NameRuleError, cuhk03_toy_name, duke_toy_name, market_toy_name,
                        msmt17_toy_name, veri_toy_name, parse_cub_name, parse_cuhk03_name, parse_duke_name,
                        parse_folder_name, parse_market_name, parse_msmt17_name, parse_vehicleid_name,
                        parse_veri_name, parse_viper_name)


JUNK_PID = -1        # Market-1501: a bad detection, ignored by the evaluation
DISTRACTOR_PID = 0   # Market-1501 ``0000``: a false detection, an ordinary wrong match
TOY_MANIFEST = "toy_dataset.json"   # written by toy_data.py at the root of every toy dataset


def match_masks(q_pids, q_camids, g_pids, g_camids, same_camera_junk=True):
    """The Market-1501 protocol's two masks, [queries, gallery], for NumPy arrays or torch tensors alike.

    ``good``: the query's person seen by another camera (a correct match). ``junk``: the query's person
    seen by the query's own camera, or a gallery picture with pid JUNK_PID; junk is removed from the
    ranking. Everything else (distractors, pid DISTRACTOR_PID, included) is an ordinary wrong match.
    ``same_camera_junk=False`` (not the protocol; for ``evaluate_gpu.py --protocols``) counts the
    query's person seen by its own camera as a correct match, and only pid JUNK_PID as junk.
    """
    same_person = q_pids[:, None] == g_pids[None, :]
    same_camera = (q_camids[:, None] == g_camids[None, :]) & same_camera_junk   # False: every camera is "another"
    return same_person & ~same_camera, (same_person & same_camera) | (g_pids == JUNK_PID)[None, :]


def parse_image_name(filename):
    """Parse a name under whichever benchmark rule it follows (for stages that read every dataset; the
    rules cannot be confused: each has its own shape)."""
    for parser in NAME_PARSERS.values():
        try:
            return parser(filename)
        except NameRuleError:
            continue
    raise NameRuleError(f"{filename!r} follows none of the benchmarks' naming rules "
                        f"({'; '.join(sorted({b.rule for b in BENCHMARKS.values()}))})",
                        "rename or remove the file")


@dataclass(frozen=True)
class Source:
    """Where one output split comes from: the first of ``folders`` that exists under ROOT (a release may
    name it in several ways), or, with ``lists``, the pictures those list files name inside it."""

    split: str
    folders: tuple
    required: bool = True
    lists: tuple = ()     # list files under ROOT: lines "relative/path.jpg label" (MSMT17)

    def folder_in(self, root):
        return next((folder for folder in self.folders if os.path.isdir(os.path.join(root, folder))), None)


def bounding_box_sources(gt_bbox=False):
    """Market-1501's folders (also Duke's, and CUHK03-NP's inside labeled/ or detected/)."""
    sources = (Source("train_all", ("bounding_box_train",)), Source("query", ("query",)),
               Source("gallery", ("bounding_box_test",)))
    return sources + ((Source("multi-query", ("gt_bbox",), required=False),) if gt_bbox else ())


@dataclass(frozen=True)
class Benchmark:
    """Everything the scripts need to know about one dataset: a new layout is one entry here."""

    key: str
    title: str
    script: str             # the prepare script that reads it
    default_root: str
    rule: str
    parse: Callable         # file name -> ImageName, or NameRuleError
    sources: tuple          # Source per output split
    official: dict          # output split -> (images, identities or None) of the real release
    download_hint: str
    folder: str             # the toy set's folder under toy_data.py --out
    cameras: int
    max_pid: int            # real sets number their identities up to about this
    gt_bbox: bool           # hand-drawn boxes (gt_bbox/) and so multi-query exist
    distractors: str        # "pictures": 0000 and -1 pictures in the gallery; "identities": people seen once
    toy_name: Callable      # (label, camid, frame, box) -> a file name under the rule
    kind: str = "person"    # what an identity is: a person, or a vehicle (VeRi-776)
    subfolder: str = ""     # the release folder under --download_path (CUHK03-NP: labeled/ or detected/)
    renumbers_test: bool = False   # test identities numbered anew (MSMT17): equal numbers are not one person
    drawn: bool = False     # prepare.py draws the splits by the release's protocol (reid/drawn_sets.PLANNERS[key])
    requires: tuple = ()    # what ROOT must hold when the splits are drawn: "folder/" or "list file"


def drawn_benchmarks():
    """VIPeR, VehicleID (one entry per test size) and CUB-200-2011: releases whose splits prepare.py draws or
    reads from lists itself (reid/drawn_sets.py); their counts are those the releases' papers publish."""
    common = dict(sources=(), gt_bbox=False, distractors="none", toy_name=lambda label, camid, frame, box: "",
                  drawn=True)
    vehicleid = {   # test size -> (test pictures, of which one per vehicle is the gallery)
        800: 6493, 1600: 13377, 2400: 19777}
    return {
        "viper": Benchmark(
            key="viper", title="VIPeR", script="prepare.py --dataset viper", default_root="../VIPeR",
            rule=VIPER_RULE, parse=parse_viper_name, requires=("cam_a/", "cam_b/"),
            official={"train_all": (632, 316), "query": (316, 316), "gallery": (316, 316)},
            download_hint="download VIPeR.v1.0.zip (Gray et al., 2007) and unzip it to the folder holding cam_a/ and "
                          "cam_b/, or make the toy set: python toy_data.py --out data --dataset viper",
            folder="VIPeR", cameras=2, max_pid=873, **common),
        **{f"vehicleid-{size}": Benchmark(
            key=f"vehicleid-{size}", title=f"VehicleID (test {size})",
            script=f"prepare.py --dataset vehicleid --vehicleid_test {size}", default_root="../VehicleID_V1.0",
            rule=VEHICLEID_RULE, parse=parse_vehicleid_name,
            requires=("image/", "train_test_split/train_list.txt", f"train_test_split/test_list_{size}.txt"),
            official={"train_all": (113346, 13164), "query": (pictures - size, None), "gallery": (size, size)},
            download_hint="VehicleID is given by PKU on request (Liu et al., CVPR 2016); unzip VehicleID_V1.0 (image/, "
                          "train_test_split/), or make the toy set: python toy_data.py --out data --dataset vehicleid",
            folder="VehicleID_V1.0", cameras=2, max_pid=26328, kind="vehicle", **common)
            for size, pictures in vehicleid.items()},
        "cub": Benchmark(
            key="cub", title="CUB-200-2011", script="prepare.py --dataset cub", default_root="../CUB_200_2011",
            rule=CUB_RULE, parse=parse_cub_name, requires=("images/", "images.txt"),
            official={"train_all": (5864, 100), "query": (5924, 100), "gallery": (5924, 100)},
            download_hint="download CUB_200_2011.tgz (Wah et al., 2011) and unpack it to the folder holding images/ and "
                          "images.txt, or make the toy set: python toy_data.py --out data --dataset cub",
            folder="CUB_200_2011", cameras=2, max_pid=200, kind="bird", **common),
    }


BENCHMARKS = {
    "market": Benchmark(
        key="market", title="Market-1501", script="prepare.py", default_root="../Market", rule=MARKET_RULE,
        parse=parse_market_name, sources=bounding_box_sources(gt_bbox=True),
        official={"train_all": (12936, 751), "query": (3368, 750), "gallery": (19732, None),
                  "multi-query": (25259, None)},
        download_hint="download Market-1501-v15.09.15.zip from the dataset's authors (see README) and unzip it, "
                      "or make the toy set: python toy_data.py --out data --dataset market",
        folder="Market", cameras=6, max_pid=1501, gt_bbox=True, distractors="pictures", toy_name=market_toy_name),
    "duke": Benchmark(
        key="duke", title="DukeMTMC-reID", script="prepare_Duke.py", default_root="../DukeMTMC-reID", rule=DUKE_RULE,
        parse=parse_duke_name, sources=bounding_box_sources(),
        official={"train_all": (16522, 702), "query": (2228, None), "gallery": (17661, None)},
        download_hint="DukeMTMC-reID was withdrawn by its authors; use a copy your course provides, "
                      "or make the toy set: python toy_data.py --out data --dataset duke",
        folder="DukeMTMC-reID", cameras=8, max_pid=7140, gt_bbox=False, distractors="identities", toy_name=duke_toy_name),
    "msmt17": Benchmark(
        key="msmt17", title="MSMT17", script="prepare.py --dataset msmt17", default_root="../MSMT17_V1",
        rule=MSMT17_RULE, parse=parse_msmt17_name,
        sources=(Source("train_all", ("train", "mask_train_v2"), lists=("list_train.txt", "list_val.txt")),
                 Source("query", ("test", "mask_test_v2"), lists=("list_query.txt",)),
                 Source("gallery", ("test", "mask_test_v2"), lists=("list_gallery.txt",))),
        official={"train_all": (32621, 1041), "query": (11659, 3060), "gallery": (82161, 3060)},
        download_hint="MSMT17 is given by its authors on request (see README); unzip MSMT17_V1 (train/, test/) or "
                      "MSMT17_V2 (mask_train_v2/, mask_test_v2/) with its list_*.txt files, "
                      "or make the toy set: python toy_data.py --out data --dataset msmt17",
        folder="MSMT17_V1", cameras=15, max_pid=3060, gt_bbox=False, distractors="none", toy_name=msmt17_toy_name,
        renumbers_test=True),
    **{f"cuhk03-{kind}": Benchmark(
        key=f"cuhk03-{kind}", title=f"CUHK03-NP ({kind})", script=f"prepare.py --dataset cuhk03 --cuhk03_kind {kind}",
        default_root="../cuhk03-np", rule=CUHK03_RULE, parse=parse_cuhk03_name, sources=bounding_box_sources(),
        subfolder=kind,
        official={"train_all": (7368 if kind == "labeled" else 7365, 767), "query": (1400, 700),
                  "gallery": (5328 if kind == "labeled" else 5332, 700)},
        download_hint="download CUHK03-NP (the 767/700 new protocol of Zhong et al.) and unzip it to the folder "
                      "holding labeled/ and detected/, or make the toy set: python toy_data.py --out data --dataset "
                      "cuhk03",
        folder="cuhk03-np", cameras=2, max_pid=1467, gt_bbox=False, distractors="none",
        toy_name=cuhk03_toy_name)
        for kind in ("labeled", "detected")},
    "veri": Benchmark(
        key="veri", title="VeRi-776", script="prepare.py --dataset veri", default_root="../VeRi", rule=VERI_RULE,
        parse=parse_veri_name,
        sources=(Source("train_all", ("image_train",)), Source("query", ("image_query",)),
                 Source("gallery", ("image_test",))),
        official={"train_all": (37778, 576), "query": (1678, 200), "gallery": (11579, 200)},
        download_hint="VeRi-776 is given by its authors on request (see README); unzip it to the folder holding "
                      "image_train/, image_query/ and image_test/, or make the toy set: "
                      "python toy_data.py --out data --dataset veri",
        folder="VeRi", cameras=20, max_pid=776, gt_bbox=False, distractors="none", toy_name=veri_toy_name,
        kind="vehicle"),
    **drawn_benchmarks(),
    "folder": Benchmark(   # ROOT/<identity>/<picture>, split by reid/own_folder.py, placed under FOLDER_RULE names
        key="folder", title="own pictures", script="prepare.py --dataset folder", default_root="../my_pictures",
        rule=FOLDER_RULE, parse=parse_folder_name, sources=(), official={},
        download_hint="lay your pictures out as ROOT/<identity>/<picture>", folder="my_pictures", cameras=999,
        max_pid=9999, gt_bbox=False, distractors="none", toy_name=lambda label, camid, frame, box: ""),
}
NAME_PARSERS = {key: benchmark.parse for key, benchmark in BENCHMARKS.items()}

PREPARED_MANIFEST = "prepare_manifest.json"   # prepare.py's record in ROOT/pytorch/ of what it built


def source_picture(path):
    """The source file that prepare.py placed at ROOT/pytorch/<split>/<pid>/<name>, and its Benchmark:
    (source, benchmark), or None for a picture that does not come from a prepared tree.

    An error about a broken picture names this file, since fixing the copy would not last: the next
    prepare.py run copies the source again.
    """
    from reid.files import read_json

    split_dir = os.path.dirname(os.path.dirname(os.path.normpath(path)))
    manifest = read_json(os.path.join(os.path.dirname(split_dir) or ".", PREPARED_MANIFEST))
    if not isinstance(manifest, dict):
        return None
    benchmark = next((b for b in BENCHMARKS.values() if b.title == manifest.get("benchmark")), None)
    if benchmark is None:
        return None
    split = os.path.basename(split_dir)
    sources = {source.split: source for source in benchmark.sources}   # train and val come from train_all
    source = sources.get("train_all" if split in ("train", "val") else split)
    root = os.path.dirname(os.path.dirname(split_dir))
    folder = source.folder_in(root) if source else None
    if folder is None:
        return None
    label = os.path.basename(os.path.dirname(os.path.normpath(path)))   # list-file sets keep a folder per identity
    for candidate in (os.path.join(root, folder, os.path.basename(path)),
                      os.path.join(root, folder, label, os.path.basename(path))):
        if os.path.isfile(candidate):
            return candidate, benchmark
    return None
