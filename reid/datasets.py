"""The benchmarks' rules: how each names its files (one strict parser per rule), the junk and
distractor ids, and what prepare.py needs to know about each dataset.
"""
import os
import re
from dataclasses import dataclass
from typing import Callable

from utils import UserError


JUNK_PID = -1        # Market-1501: a bad detection, ignored by the evaluation
DISTRACTOR_PID = 0   # Market-1501 ``0000``: a false detection, an ordinary wrong match
TOY_MANIFEST = "toy_dataset.json"   # written by toy_data.py at the root of every toy dataset


@dataclass(frozen=True)
class ImageName:
    """What a benchmark file name says about its image."""

    filename: str
    label: str    # the identity as written in the name ("0002", "0000", "-1"): the folder name
    pid: int      # JUNK_PID (-1), DISTRACTOR_PID (0) or a person id >= 1
    camid: int    # camera number as written (1-based)
    frame: int
    sequence: int = 0  # Market-1501 only: the video sequence ``s`` of ``cCsS``



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


class NameRuleError(UserError):
    """A file name that does not follow the dataset's naming rule."""


MARKET_RULE = "PPPP_cCsS_FFFFFF_BB.jpg (e.g. 0002_c1s1_000451_03.jpg; PPPP may be -1)"
DUKE_RULE = "PPPP_cC_fFFFFFFF.jpg (e.g. 0001_c2_f0046182.jpg)"
MSMT17_RULE = "PPPP_NNN_CC_DDDDtime_FFFF_B.jpg (e.g. 0000_000_01_0303morning_0015_0.jpg; CC the camera, 01-15)"
CUHK03_RULE = "PPPP_cC_N.png (e.g. 0001_c1_1.png; camera 1 or 2)"
VERI_RULE = "VVVV_cCCC_FFFFFFFF_N.jpg (e.g. 0002_c002_00030600_0.jpg; VVVV the vehicle)"
FOLDER_RULE = "PPPP_cC_pNNNNNN.jpg (prepare.py --dataset folder's names, e.g. 0003_c2_p000017.jpg)"
# the names prepare.py gives VIPeR, VehicleID and CUB-200-2011 pictures: their own names carry no camera
VIPER_RULE = "PPPP_cC_AAA.bmp (prepare.py's names for VIPeR's cam_a/PPP_AAA.bmp, e.g. 0045_c1_090.bmp; C 1 = cam_a)"
VEHICLEID_RULE = "VVVVV_cC_IIIIIII.jpg (prepare.py's names for VehicleID's image/IIIIIII.jpg, e.g. 00012_c2_0000456.jpg)"
CUB_RULE = "CCCC_iIIIII.jpg (prepare.py's names for CUB-200-2011: class, then image id, e.g. 0101_i05865.jpg)"
# pid: four digits, or -1 for junk; camera and sequence: one or more digits (custom sets have > 9).
_MARKET_RE = re.compile(r"(?P<label>-1|\d{4})_c(?P<cam>\d+)s(?P<seq>\d+)_(?P<frame>\d{6})_(?P<box>\d{2})\.jpg")
_DUKE_RE = re.compile(r"(?P<label>\d{4})_c(?P<cam>\d+)_f(?P<frame>\d{7})\.jpg")
_MSMT17_RE = re.compile(r"(?P<label>\d{4})_(?P<index>\d{3,})_(?P<cam>\d{2,})_(?P<day>\d{4})(?:morning|noon|afternoon)"
                        r"_(?P<frame>\d{4,})_(?P<box>\d+)(?:_[a-z]+)?\.jpg")
_CUHK03_RE = re.compile(r"(?P<label>\d{4})_c(?P<cam>\d+)_(?P<frame>\d+)\.png")
_FOLDER_RE = re.compile(r"(?P<label>\d{4})_c(?P<cam>\d+)_p(?P<frame>\d{6})\.(?:jpg|jpeg|png)")
_VIPER_RE = re.compile(r"(?P<label>\d{4})_c(?P<cam>[12])_(?P<frame>\d{3})\.bmp")
_VEHICLEID_RE = re.compile(r"(?P<label>\d{5})_c(?P<cam>[12])_(?P<frame>\d{7})\.jpg")
_CUB_RE = re.compile(r"(?P<label>\d{4})_i(?P<cam>(?P<frame>\d{5}))\.jpg")   # each picture its own camera
_VERI_RE = re.compile(r"(?P<label>\d{4})_c(?P<cam>\d{3,})_(?P<frame>\d{8})_(?P<box>\d+)\.jpg")


def _match_name(filename, pattern, rule, dataset):
    base = os.path.basename(filename)
    match = pattern.fullmatch(base)
    if match is None:
        raise NameRuleError(f"{filename!r} does not follow the {dataset} naming rule {rule}",
                            "rename or remove the file, or check that this is the right dataset")
    if int(match["cam"]) < 1 or ("seq" in match.groupdict() and int(match["seq"]) < 1):
        raise NameRuleError(f"{filename!r}: camera and sequence numbers start at 1 in {dataset}",
                            "rename or remove the file")
    return match


def parse_market_name(filename):
    """Parse a Market-1501 name ``PPPP_cCsS_FFFFFF_BB.jpg`` into an ``ImageName``.

    ``-1`` is junk and ``0000`` a distractor; a path is accepted (only its base name is read).
    Raises ``NameRuleError`` naming the file when the name breaks the rule.
    """
    match = _match_name(filename, _MARKET_RE, MARKET_RULE, "Market-1501")
    return ImageName(filename=os.path.basename(filename), label=match["label"], pid=int(match["label"]),
                     camid=int(match["cam"]), frame=int(match["frame"]), sequence=int(match["seq"]))


def parse_duke_name(filename):
    """Parse a DukeMTMC-reID name ``PPPP_cC_fFFFFFFF.jpg`` into an ``ImageName``.

    Raises ``NameRuleError`` naming the file when the name breaks the rule.
    """
    match = _match_name(filename, _DUKE_RE, DUKE_RULE, "DukeMTMC-reID")
    return ImageName(filename=os.path.basename(filename), label=match["label"], pid=int(match["label"]),
                     camid=int(match["cam"]), frame=int(match["frame"]))


def _simple_parser(pattern, rule, dataset):
    """A parser for a rule whose name holds the label, the camera and a frame number (and nothing junk)."""
    def parse(filename):
        match = _match_name(filename, pattern, rule, dataset)
        return ImageName(filename=os.path.basename(filename), label=match["label"], pid=int(match["label"]),
                         camid=int(match["cam"]), frame=int(match["frame"]))
    parse.__doc__ = f"Parse a {dataset} name {rule} into an ``ImageName`` (``NameRuleError`` when it breaks the rule)."
    return parse


parse_msmt17_name = _simple_parser(_MSMT17_RE, MSMT17_RULE, "MSMT17")
parse_cuhk03_name = _simple_parser(_CUHK03_RE, CUHK03_RULE, "CUHK03-NP")
parse_veri_name = _simple_parser(_VERI_RE, VERI_RULE, "VeRi-776")
parse_folder_name = _simple_parser(_FOLDER_RE, FOLDER_RULE, "an own-pictures set")
parse_viper_name = _simple_parser(_VIPER_RE, VIPER_RULE, "VIPeR")
parse_vehicleid_name = _simple_parser(_VEHICLEID_RE, VEHICLEID_RULE, "VehicleID")
parse_cub_name = _simple_parser(_CUB_RE, CUB_RULE, "CUB-200-2011")


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


def _market_name(label, camid, frame, box):
    return f"{label}_c{camid}s{1 + (frame // 4000) % 6}_{frame:06d}_{box:02d}.jpg"   # six sequences, as in Market


def _duke_name(label, camid, frame, box):
    return f"{label}_c{camid}_f{frame:07d}.jpg"


def _msmt17_name(label, camid, frame, box):
    day = ("morning", "noon", "afternoon")[frame % 3]
    return f"{label}_{frame % 1000:03d}_{camid:02d}_0{3 + frame // 30000 % 7}{10 + frame // 3000 % 20}{day}_{frame:04d}_0.jpg"


def _cuhk03_name(label, camid, frame, box):
    return f"{label}_c{camid}_{frame}.png"


def _veri_name(label, camid, frame, box):
    return f"{label}_c{camid:03d}_{frame:08d}_0.jpg"


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
        folder="Market", cameras=6, max_pid=1501, gt_bbox=True, distractors="pictures", toy_name=_market_name),
    "duke": Benchmark(
        key="duke", title="DukeMTMC-reID", script="prepare_Duke.py", default_root="../DukeMTMC-reID", rule=DUKE_RULE,
        parse=parse_duke_name, sources=bounding_box_sources(),
        official={"train_all": (16522, 702), "query": (2228, None), "gallery": (17661, None)},
        download_hint="DukeMTMC-reID was withdrawn by its authors; use a copy your course provides, "
                      "or make the toy set: python toy_data.py --out data --dataset duke",
        folder="DukeMTMC-reID", cameras=8, max_pid=7140, gt_bbox=False, distractors="identities", toy_name=_duke_name),
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
        folder="MSMT17_V1", cameras=15, max_pid=3060, gt_bbox=False, distractors="none", toy_name=_msmt17_name,
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
        toy_name=_cuhk03_name)
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
        folder="VeRi", cameras=20, max_pid=776, gt_bbox=False, distractors="none", toy_name=_veri_name,
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
