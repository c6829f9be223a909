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



def match_masks(q_pids, q_camids, g_pids, g_camids):
    """The Market-1501 protocol's two masks, [queries, gallery], for NumPy arrays or torch tensors alike.

    ``good``: the query's person seen by another camera (a correct match). ``junk``: the query's person
    seen by the query's own camera, or a gallery picture with pid JUNK_PID; junk is removed from the
    ranking. Everything else (distractors, pid DISTRACTOR_PID, included) is an ordinary wrong match.
    """
    same_person = q_pids[:, None] == g_pids[None, :]
    same_camera = q_camids[:, None] == g_camids[None, :]
    return same_person & ~same_camera, (same_person & same_camera) | (g_pids == JUNK_PID)[None, :]


class NameRuleError(UserError):
    """A file name that does not follow the dataset's naming rule."""


MARKET_RULE = "PPPP_cCsS_FFFFFF_BB.jpg (e.g. 0002_c1s1_000451_03.jpg; PPPP may be -1)"
DUKE_RULE = "PPPP_cC_fFFFFFFF.jpg (e.g. 0001_c2_f0046182.jpg)"
# pid: four digits, or -1 for junk; camera and sequence: one or more digits (custom sets have > 9).
_MARKET_RE = re.compile(r"(?P<label>-1|\d{4})_c(?P<cam>\d+)s(?P<seq>\d+)_(?P<frame>\d{6})_(?P<box>\d{2})\.jpg")
_DUKE_RE = re.compile(r"(?P<label>\d{4})_c(?P<cam>\d+)_f(?P<frame>\d{7})\.jpg")


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


def parse_image_name(filename):
    """Parse a name under whichever benchmark rule it follows (for stages that read both)."""
    for parser in NAME_PARSERS.values():
        try:
            return parser(filename)
        except NameRuleError:
            continue
    raise NameRuleError(f"{filename!r} follows neither the Market-1501 rule {MARKET_RULE} "
                        f"nor the DukeMTMC-reID rule {DUKE_RULE}",
                        "rename or remove the file")


def _market_name(label, camid, frame, box):
    return f"{label}_c{camid}s{1 + (frame // 4000) % 6}_{frame:06d}_{box:02d}.jpg"   # six sequences, as in Market


def _duke_name(label, camid, frame, box):
    return f"{label}_c{camid}_f{frame:07d}.jpg"


@dataclass(frozen=True)
class Benchmark:
    """Everything the scripts need to know about one dataset: a new layout is one entry here."""

    key: str
    title: str
    script: str             # the prepare script that reads it
    default_root: str
    rule: str
    parse: Callable         # file name -> ImageName, or NameRuleError
    sources: tuple          # (output split, source folder, required?)
    official: dict          # output split -> (images, identities or None) of the real release
    download_hint: str
    folder: str             # the toy set's folder under toy_data.py --out
    cameras: int
    max_pid: int            # real sets number their identities up to about this
    gt_bbox: bool           # hand-drawn boxes (box 00 in the name) and multi-query exist
    distractors: str        # "pictures": 0000 and -1 pictures in the gallery; "identities": people seen once
    toy_name: Callable      # (label, camid, frame, box) -> a file name under the rule


BENCHMARKS = {
    "market": Benchmark(
        key="market", title="Market-1501", script="prepare.py", default_root="../Market", rule=MARKET_RULE,
        parse=parse_market_name,
        sources=(("train_all", "bounding_box_train", True), ("query", "query", True),
                 ("gallery", "bounding_box_test", True), ("multi-query", "gt_bbox", False)),
        official={"train_all": (12936, 751), "query": (3368, 750), "gallery": (19732, None),
                  "multi-query": (25259, None)},
        download_hint="download Market-1501-v15.09.15.zip from the dataset's authors (see README) and unzip it, "
                      "or make the toy set: python toy_data.py --out data --dataset market",
        folder="Market", cameras=6, max_pid=1501, gt_bbox=True, distractors="pictures", toy_name=_market_name),
    "duke": Benchmark(
        key="duke", title="DukeMTMC-reID", script="prepare_Duke.py", default_root="../DukeMTMC-reID", rule=DUKE_RULE,
        parse=parse_duke_name,
        sources=(("train_all", "bounding_box_train", True), ("query", "query", True),
                 ("gallery", "bounding_box_test", True)),
        official={"train_all": (16522, 702), "query": (2228, None), "gallery": (17661, None)},
        download_hint="DukeMTMC-reID was withdrawn by its authors; use a copy your course provides, "
                      "or make the toy set: python toy_data.py --out data --dataset duke",
        folder="DukeMTMC-reID", cameras=8, max_pid=7140, gt_bbox=False, distractors="identities", toy_name=_duke_name),
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
    folders = {out: source for out, source, _ in benchmark.sources}   # train and val come from train_all
    folder = folders.get("train_all" if split in ("train", "val") else split)
    if folder is None:
        return None
    source = os.path.join(os.path.dirname(os.path.dirname(split_dir)), folder, os.path.basename(path))
    return (source, benchmark) if os.path.isfile(source) else None
