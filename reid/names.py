"""The benchmarks' file-name rules: what a name says about its picture (one strict parser per rule), and
how the toy generator writes a name under each rule. reid/datasets.py's table says which rule a release uses."""
import os
import re
from dataclasses import dataclass

from utils import UserError


@dataclass(frozen=True)
class ImageName:
    """What a benchmark file name says about its image."""

    filename: str
    label: str    # the identity as written in the name ("0002", "0000", "-1"): the folder name
    pid: int      # JUNK_PID (-1), DISTRACTOR_PID (0) or a person id >= 1
    camid: int    # camera number as written (1-based)
    frame: int
    sequence: int = 0  # Market-1501 only: the video sequence ``s`` of ``cCsS``


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


def market_toy_name(label, camid, frame, box):
    return f"{label}_c{camid}s{1 + (frame // 4000) % 6}_{frame:06d}_{box:02d}.jpg"   # six sequences, as in Market


def duke_toy_name(label, camid, frame, box):
    return f"{label}_c{camid}_f{frame:07d}.jpg"


def msmt17_toy_name(label, camid, frame, box):
    day = ("morning", "noon", "afternoon")[frame % 3]
    return f"{label}_{frame % 1000:03d}_{camid:02d}_0{3 + frame // 30000 % 7}{10 + frame // 3000 % 20}{day}_{frame:04d}_0.jpg"


def cuhk03_toy_name(label, camid, frame, box):
    return f"{label}_c{camid}_{frame}.png"


def veri_toy_name(label, camid, frame, box):
    return f"{label}_c{camid:03d}_{frame:08d}_0.jpg"
