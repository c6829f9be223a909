"""Stage 1: arrange a re-ID dataset download into the ImageFolder trees the later stages read.

Usage:
    python prepare.py --download_path ../Market                  # Market-1501, the course's default
    python prepare.py --download_path ../Market-1501-v15.09.15   # the unzipped folder, as it is
    python prepare.py --download_path data/Market --link symlink # no second copy of the images
    python prepare.py --dataset msmt17 --download_path ../MSMT17_V1     # or MSMT17_V2
    python prepare.py --dataset cuhk03 --cuhk03_kind detected --download_path ../cuhk03-np
    python prepare.py --dataset veri --download_path ../VeRi
    python prepare.py --dataset viper --download_path ../VIPeR --seed 3         # split 3 of the 10
    python prepare.py --dataset vehicleid --vehicleid_test 1600 --download_path ../VehicleID_V1.0
    python prepare.py --dataset cub --download_path ../CUB_200_2011
(``prepare_Duke.py`` is ``--dataset duke``.)

Reads:  ROOT/{bounding_box_train,bounding_box_test,query}/ and, for Market-1501, ROOT/gt_bbox/; the
        other releases' folders and list files as reid/datasets.py's table says (reid/sources.py reads them).
Writes: ROOT/pytorch/{train_all,train,val,query,gallery,multi-query}/<pid>/<file> (CUHK03-NP: ROOT/KIND/pytorch) and
        ROOT/pytorch/prepare_manifest.json; nothing else under ROOT is ever touched.
        train_all = bounding_box_train; val = the first file of each identity in sorted order;
        train = train_all minus val; gallery = bounding_box_test with its -1 and 0000 folders;
        multi-query = gt_bbox (Market only).
The tree is built in ROOT/.pytorch.partial and renamed into place, so an interrupted run never leaves
a complete-looking pytorch/. A second run with the same source skips the work (--force rebuilds).

A correct run on the toy set prints:
    split          images  identities  from
    train_all         948         100  bounding_box_train
    train             848         100  train_all minus val
    val               100         100  first file of each identity (sorted)
    query             303         100  query
    gallery           996         102  bounding_box_test
    multi-query       609         100  gt_bbox
    wrote data/Market/pytorch (copy) in 0.6 s
"""
import hashlib
import json
import os
import shutil
import time

from tqdm import tqdm

import utils
from reid import drawn_sets, files, own_folder
from reid.sources import check_layout, plan_splits
from reid.datasets import BENCHMARKS, PREPARED_MANIFEST, TOY_MANIFEST
from utils import UserError, cli_main

MANIFEST = PREPARED_MANIFEST
FORMAT_VERSION = 1
OUTPUT, PARTIAL, OLD, LOCK = "pytorch", ".pytorch.partial", ".pytorch.old", ".pytorch.lock"
SPLITS = ("train_all", "train", "val", "query", "gallery", "multi-query", "val_query", "val_gallery")


DERIVED_ORIGIN = {"train": "train_all minus val", "val": "first file of each identity (sorted)",
                  "val_query": "held-out training identities (--val_ids): first picture of each camera",
                  "val_gallery": "held-out training identities: their other pictures"}
DATASETS = ("market", "duke", "msmt17", "cuhk03", "veri", "viper", "vehicleid", "cub", "folder")   # --dataset
VEHICLEID_TESTS = (800, 1600, 2400)   # VehicleID's small, medium and large test lists
LINKERS = {
    "copy": shutil.copyfile,
    # relative, so that the dataset folder can be moved or mounted elsewhere as a whole
    "symlink": lambda src, dst: os.symlink(os.path.relpath(src, os.path.dirname(dst)), dst),
    "hardlink": os.link,
}



def build_parser(default="market"):
    spec = BENCHMARKS[default]
    parser = utils.ArgumentParser(
        prog=spec.script, description="Arrange a re-ID dataset download into ROOT/pytorch/ for training and testing.")
    parser.add_argument("--dataset", choices=DATASETS, default=default,
                        help="which release ROOT holds: Market-1501, DukeMTMC-reID, MSMT17 (V1 or V2), CUHK03-NP, "
                             "VeRi-776, VIPeR, VehicleID, CUB-200-2011, or your own pictures (folder)")
    parser.add_argument("--cuhk03_kind", choices=("labeled", "detected"), default="labeled",
                        help="--dataset cuhk03: the hand-drawn (labeled) or the detector's (detected) boxes")
    parser.add_argument("--vehicleid_test", type=int, choices=VEHICLEID_TESTS, default=800,
                        help="--dataset vehicleid: the test list of 800, 1600 or 2400 vehicles")
    own = parser.add_argument_group("--dataset folder: your own pictures, ROOT/<identity>/<picture>")
    own.add_argument("--camera_regex", default=None, help="read each picture's camera from its file name: the "
                     r"pattern's first group (or group 'cam'), e.g. '_c(\d+)_'")
    own.add_argument("--cameras_csv", default=None, help="read the cameras from a CSV: path,identity,camera")
    own.add_argument("--test_ids", type=float, default=0.5,
                     help="identities held out for query/gallery: a fraction below 1, or a count")
    parser.add_argument("--val_ids", type=int, default=0,
                        help="hold out this many training identities as val_query/val_gallery: retrieval of people "
                             "training never sees, which train.py scores every epoch (0: none)")
    parser.add_argument("--seed", type=int, default=0, help="the seed of the random splits (--val_ids, --test_ids, "
                        "VIPeR's halves, VehicleID's gallery): seeds 0-9 give the ten that papers average over")
    parser.add_argument("--download_path", default=None,
                        help="ROOT: the unzipped release (default: the dataset's usual folder, e.g. ../Market)")
    parser.add_argument("--link", choices=sorted(LINKERS), default="copy",
                        help="how files reach pytorch/: copy, or symlink/hardlink to avoid a second copy")
    parser.add_argument("--force", action="store_true", help="rebuild pytorch/ even when it is up to date")
    return parser


def benchmark_of(args):
    """The BENCHMARKS entry that --dataset (and --cuhk03_kind) select."""
    keyed = {"cuhk03": f"cuhk03-{args.cuhk03_kind}", "vehicleid": f"vehicleid-{args.vehicleid_test}"}
    return BENCHMARKS[keyed.get(args.dataset, args.dataset)]


def source_digest(splits, link):
    """Fingerprint of the source listing (names and sizes) and link mode: decides 'up to date'."""
    digest = hashlib.sha256(link.encode())
    for split in sorted(splits):
        for entry in splits[split]:
            digest.update(f"{split}/{entry.label}/{entry.filename}:{os.path.getsize(entry.source)}\n".encode())
    return digest.hexdigest()


def split_counts(splits):
    return {split: [len(entries), len({e.label for e in entries})] for split, entries in splits.items()}


def remove_leftovers(root):
    """Delete what an interrupted run left beside pytorch/ (its half-built tree, the tree it was replacing)."""
    for name in (PARTIAL, OLD):
        folder = os.path.join(root, name)
        if os.path.lexists(folder):
            shutil.rmtree(folder)
            print(f"removed {folder}, left by an interrupted run")


def build_tree(root, splits, link, manifest):
    """Place every file into ROOT/.pytorch.partial, then swap it in for ROOT/pytorch."""
    partial, output, old = (os.path.join(root, name) for name in (PARTIAL, OUTPUT, OLD))
    total = sum(len(entries) for entries in splits.values())
    try:
        with tqdm(total=total, desc=f"{link:>8}", unit="img") as progress:
            for split, entries in splits.items():
                for label in sorted({entry.label for entry in entries}):
                    os.makedirs(os.path.join(partial, split, label))
                for entry in entries:
                    LINKERS[link](entry.source, os.path.join(partial, split, entry.label, entry.filename))
                    progress.update()
    except BaseException:   # Ctrl-C or a failed copy: leave nothing half-built (kill -9: the next run cleans up)
        shutil.rmtree(partial, ignore_errors=True)
        raise
    with open(os.path.join(partial, MANIFEST), "w") as handle:
        json.dump(manifest, handle, indent=1, sort_keys=True)
    if os.path.exists(output):
        os.replace(output, old)
    os.replace(partial, output)
    shutil.rmtree(old, ignore_errors=True)


def counts_table(counts, spec, official=True):
    """The images and identities of each split, where they come from, and (for a real download) the
    published counts of the release beside them."""
    origin = {source.split: " + ".join(source.lists) if source.lists else "/".join(source.folders)
              for source in spec.sources} or drawn_sets.ORIGIN.get(spec.key.split("-")[0]) or own_folder.ORIGIN
    official = official and bool(spec.official)
    lines = [f"{'split':<13}{'images':>8}{'identities':>12}" + (f"{'official':>18}" if official else "") + "  from"]
    for split, (images, identities) in counts.items():
        published = spec.official.get(split)
        column = (f"{published[0]:>9,}/{published[1] or '-':>8}" if published else f"{'':>18}") if official else ""
        source = origin.get(split) or DERIVED_ORIGIN[split]
        if split == "train_all" and "val_query" in counts:
            source += " minus the held-out identities"
        lines.append(f"{split:<13}{images:>8}{identities:>12}{column}  {source}")
    return "\n".join(lines)


def is_toy(root):
    """A set toy_data.py made (its manifest in ROOT, or beside labeled/ and detected/ for CUHK03-NP)."""
    return any(os.path.exists(os.path.join(folder, TOY_MANIFEST)) for folder in (root, os.path.dirname(root)))


def compare_official(root, spec, counts):
    """For a real download, say whether the counts are the published ones (a truncated unzip is common)."""
    if is_toy(root):
        return f"toy dataset ({TOY_MANIFEST} found): official {spec.title} counts not compared"
    differences = []
    for split, (images, identities) in spec.official.items():
        if split in counts and images != counts[split][0]:
            differences.append(f"{split} {counts[split][0]} images (official {images:,})")
        if split in counts and identities is not None and identities != counts[split][1]:
            differences.append(f"{split} {counts[split][1]} identities (official {identities:,})")
    if differences:
        return (f"warning: differs from the official {spec.title} counts: {'; '.join(differences)} "
                f"— an incomplete download or another version?")
    return f"matches the official {spec.title} counts"


def run(argv, default):
    """The whole stage; ``prepare_Duke.py`` calls it with ``"duke"`` as the default --dataset."""
    parser = build_parser(default)
    args = parser.parse_args(argv)
    own = {"camera_regex": args.camera_regex, "cameras_csv": args.cameras_csv, "test_ids": args.test_ids,
           "seed": args.seed}
    typed = [f"--{key}" for key in own if key != "seed" and key in utils.explicit_options(parser, argv)]
    if args.dataset != "folder" and typed:
        parser.error(f"{' '.join(typed)} only apply to --dataset folder")
    if args.camera_regex and args.cameras_csv:
        parser.error("--camera_regex and --cameras_csv exclude each other")
    if args.test_ids <= 0 or (args.test_ids >= 1 and args.test_ids != int(args.test_ids)):
        parser.error("--test_ids must be a fraction in (0, 1) or a whole count")
    if args.val_ids < 0:
        parser.error("--val_ids must be 0 (no held-out validation identities) or more")
    spec = benchmark_of(args)
    root = os.path.normpath(os.path.join(args.download_path or spec.default_root, spec.subfolder))
    check_layout(root, spec)
    splits = plan_splits(root, spec, own, args.val_ids, args.seed)
    if "multi-query" not in splits and spec.gt_bbox:
        print(f"note: {root} has no gt_bbox/: multi-query is not written")
    manifest = {"benchmark": spec.title, "link": args.link, "format_version": FORMAT_VERSION,
                "source_digest": source_digest(splits, args.link), "splits": split_counts(splits)}
    if spec.key == "folder":
        manifest.update(own_folder.describe(root, splits, args))
    if spec.drawn:
        manifest["seed"] = args.seed   # of the drawn split (VIPeR) or gallery (VehicleID)
    output = os.path.join(root, OUTPUT)
    try:
        with files.exclusive_lock(os.path.join(root, LOCK), output):
            return place_files(root, spec, args, splits, manifest)
    except PermissionError as err:
        if up_to_date(output, manifest, args, spec):   # a read-only, already prepared dataset is fine
            return output
        raise UserError(f"cannot write under {root}: {err.strerror} ({err.filename})",
                        "make the dataset folder writable, or prepare a writable copy of it") from None


def up_to_date(output, manifest, args, spec):
    """True (and the table printed) when pytorch/ was built from this very source and --force is not given."""
    if args.force or files.read_json(os.path.join(output, MANIFEST)) != manifest:
        return False
    print(counts_table(manifest["splits"], spec, official=False))
    print(f"{output} is already up to date for this source; nothing to do (--force rebuilds it)")
    return True


def check_replaceable(output, previous, manifest, force):
    """Refuse to replace a pytorch/ that is not a tree prepared for this dataset: a folder of the user's that
    happens to be called pytorch (an identity of their own pictures), or another dataset's prepared tree."""
    if not os.path.isdir(output):
        return
    if previous is None:   # not ours; a tree of split folders (layumi's prepare.py) may be rebuilt
        foreign = sorted(set(os.listdir(output)) - set(SPLITS) - {MANIFEST})
        if foreign:
            raise UserError(f"{output} exists and was not written by prepare.py (it holds {foreign[0]})",
                            "move or rename that folder: prepare.py writes its output there and would replace it")
    elif previous.get("benchmark") != manifest["benchmark"] and not force:
        raise UserError(f"{output} was prepared from {previous.get('benchmark')}, not from "
                        f"{manifest['benchmark']}", "check --dataset and --download_path; --force replaces it")


def place_files(root, spec, args, splits, manifest):
    """Under the lock: clean up, skip when up to date, else build pytorch/ and print the table."""
    output, counts = os.path.join(root, OUTPUT), manifest["splits"]
    remove_leftovers(root)
    if up_to_date(output, manifest, args, spec):
        return output
    previous = files.read_json(os.path.join(output, MANIFEST))
    check_replaceable(output, previous, manifest, args.force)
    if os.path.exists(output):
        reason = "--force" if previous == manifest else ("its source or --link changed" if previous
                                                          else "it is incomplete or made by another tool")
        print(f"rebuilding {output}: {reason}")
    started = time.time()
    try:
        build_tree(root, splits, args.link, manifest)
    except OSError as err:
        raise UserError(f"cannot write under {root}: {err.strerror} ({err.filename})",
                        "check write permission and free space, or try another --link") from None
    print(counts_table(counts, spec, official=not is_toy(root)))
    print(f"cameras: {manifest['cameras']}" if "cameras" in manifest else compare_official(root, spec, counts))
    print(f"wrote {output} ({args.link}) in {time.time() - started:.1f} s")
    return output


@cli_main
def main(argv=None):
    return run(argv, "market")


if __name__ == "__main__":
    main()
