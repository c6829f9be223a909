"""Stage 1: arrange a Market-1501 download into the ImageFolder trees the later stages read.

Usage:
    python prepare.py --download_path ../Market                  # the course's default
    python prepare.py --download_path ../Market-1501-v15.09.15   # the unzipped folder, as it is
    python prepare.py --download_path data/Market --link symlink # no second copy of the images
(``prepare_Duke.py`` does the same for DukeMTMC-reID.)

Reads:  ROOT/{bounding_box_train,bounding_box_test,query}/ and, for Market-1501, ROOT/gt_bbox/.
Writes: ROOT/pytorch/{train_all,train,val,query,gallery,multi-query}/<pid>/<file> and
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
    gallery           996         102  bounding_box_test (junk and distractors kept)
    multi-query       609         100  gt_bbox
    wrote data/Market/pytorch (copy) in 0.6 s
"""
import hashlib
import json
import os
import shutil
import time
from collections import Counter, namedtuple

from tqdm import tqdm

import utils
from reid import files
from reid.datasets import BENCHMARKS, PREPARED_MANIFEST, TOY_MANIFEST, NameRuleError
from reid.images import is_image_file
from utils import UserError, cli_main

MANIFEST = PREPARED_MANIFEST
FORMAT_VERSION = 1
OUTPUT, PARTIAL, OLD, LOCK = "pytorch", ".pytorch.partial", ".pytorch.old", ".pytorch.lock"


SPLIT_ORIGIN = {"train_all": "bounding_box_train", "train": "train_all minus val",
                "val": "first file of each identity (sorted)", "query": "query",
                "gallery": "bounding_box_test (junk and distractors kept)", "multi-query": "gt_bbox"}
LINKERS = {
    "copy": shutil.copyfile,
    # relative, so that the dataset folder can be moved or mounted elsewhere as a whole
    "symlink": lambda src, dst: os.symlink(os.path.relpath(src, os.path.dirname(dst)), dst),
    "hardlink": os.link,
}

Entry = namedtuple("Entry", "source label filename")  # one file to place: pytorch/<split>/<label>/<filename>


def build_parser(benchmark="market"):
    spec = BENCHMARKS[benchmark]
    parser = utils.ArgumentParser(
        prog=spec.script,
        description=f"Arrange a {spec.title} download into ROOT/pytorch/ for training and testing.")
    parser.add_argument("--download_path", default=spec.default_root,
                        help=f"ROOT: the unzipped {spec.title} folder (holding bounding_box_train/ ...)")
    parser.add_argument("--link", choices=sorted(LINKERS), default="copy",
                        help="how files reach pytorch/: copy, or symlink/hardlink to avoid a second copy")
    parser.add_argument("--force", action="store_true", help="rebuild pytorch/ even when it is up to date")
    return parser


def check_layout(root, spec):
    """Fail before any work when ROOT is missing or is not laid out like the benchmark."""
    if not os.path.exists(root):
        raise UserError(f"dataset folder {root} does not exist", f"{spec.download_hint}; then pass --download_path")
    if not os.path.isdir(root):
        raise UserError(f"{root} is a file, not the dataset folder", "pass the unzipped folder as --download_path")
    missing = [folder for _, folder, required in spec.sources
               if required and not os.path.isdir(os.path.join(root, folder))]
    if not missing:
        return
    nested = [child for child in sorted(os.listdir(root))
              if os.path.isdir(os.path.join(root, child, "bounding_box_train"))]
    if nested:
        raise UserError(f"{root} has no {', '.join(m + '/' for m in missing)} but {nested[0]}/ inside it "
                        "looks like the dataset",
                        f"pass --download_path {os.path.join(root, nested[0])}")
    raise UserError(f"{root} has no {', '.join(m + '/' for m in missing)}, so it is not the {spec.title} folder",
                    f"pass the folder that holds bounding_box_train/, bounding_box_test/ and query/; {spec.download_hint}")


def scan_folder(root, folder, spec):
    """Parse every image name in ROOT/folder; on bad names, say which and suggest the other script."""
    path = os.path.join(root, folder)
    names = sorted(name for name in os.listdir(path) if is_image_file(name))
    parsed, bad = [], []
    for name in names:
        try:
            parsed.append(spec.parse(name))
        except NameRuleError:
            bad.append(name)
    if bad:
        others = [b for b in BENCHMARKS.values() if b is not spec and all(_parses(name, b) for name in bad)]
        for other in others if len(bad) > len(parsed) else ():   # a few odd names among many good ones are strays
            raise UserError(f"{path} holds {other.title} file names (e.g. {bad[0]}), not {spec.title} ones",
                            f"run python {other.script} --download_path {root}")
        raise UserError(f"{len(bad)} file(s) in {path} break the {spec.title} naming rule {spec.rule}: "
                        f"{', '.join(bad[:3])}{' ...' if len(bad) > 3 else ''}",
                        "move them out of that folder (this script never changes the source)")
    if not parsed:
        raise UserError(f"{path} holds no images", f"check the download is complete; {spec.download_hint}")
    return [Entry(os.path.join(path, p.filename), p.label, p.filename) for p in parsed]


def _parses(name, benchmark):
    try:
        benchmark.parse(name)
        return True
    except NameRuleError:
        return False


def plan_splits(root, spec):
    """Every output split as a list of entries, in sorted order."""
    splits = {}
    for split, folder, required in spec.sources:
        if required or os.path.isdir(os.path.join(root, folder)):
            splits[split] = scan_folder(root, folder, spec)
    first_seen = {}
    for entry in splits["train_all"]:   # sorted, so the first entry of a label is its first file
        first_seen.setdefault(entry.label, entry)
    pictures = Counter(entry.label for entry in splits["train_all"])
    # an identity with a single picture stays in train: val must not hold classes train lacks
    splits["val"] = [e for e in first_seen.values() if pictures[e.label] > 1]
    in_val = set(splits["val"])
    splits["train"] = [e for e in splits["train_all"] if e not in in_val]
    order = ("train_all", "train", "val", "query", "gallery", "multi-query")
    return {split: splits[split] for split in order if split in splits}


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


def counts_table(counts):
    lines = [f"{'split':<13}{'images':>8}{'identities':>12}  from"]
    for split, (images, identities) in counts.items():
        lines.append(f"{split:<13}{images:>8}{identities:>12}  {SPLIT_ORIGIN[split]}")
    return "\n".join(lines)


def compare_official(root, spec, counts):
    """For a real download, say whether the counts are the published ones (a truncated unzip is common)."""
    if os.path.exists(os.path.join(root, TOY_MANIFEST)):
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


def run(argv, benchmark):
    """The whole stage for one benchmark; ``prepare_Duke.py`` calls it with ``"duke"``."""
    spec = BENCHMARKS[benchmark]
    args = build_parser(benchmark).parse_args(argv)
    root = os.path.normpath(args.download_path)
    check_layout(root, spec)
    splits = plan_splits(root, spec)
    if "multi-query" not in splits and spec.gt_bbox:
        print(f"note: {root} has no gt_bbox/: multi-query is not written")
    manifest = {"benchmark": spec.title, "link": args.link, "format_version": FORMAT_VERSION,
                "source_digest": source_digest(splits, args.link), "splits": split_counts(splits)}
    output = os.path.join(root, OUTPUT)
    try:
        with files.exclusive_lock(os.path.join(root, LOCK), output):
            return place_files(root, spec, args, splits, manifest)
    except PermissionError as err:
        if up_to_date(output, manifest, args):   # a read-only, already prepared dataset is fine
            return output
        raise UserError(f"cannot write under {root}: {err.strerror} ({err.filename})",
                        "make the dataset folder writable, or prepare a writable copy of it") from None


def up_to_date(output, manifest, args):
    """True (and the table printed) when pytorch/ was built from this very source and --force is not given."""
    if args.force or files.read_json(os.path.join(output, MANIFEST)) != manifest:
        return False
    print(counts_table(manifest["splits"]))
    print(f"{output} is already up to date for this source; nothing to do (--force rebuilds it)")
    return True


def place_files(root, spec, args, splits, manifest):
    """Under the lock: clean up, skip when up to date, else build pytorch/ and print the table."""
    output, counts = os.path.join(root, OUTPUT), manifest["splits"]
    remove_leftovers(root)
    if up_to_date(output, manifest, args):
        return output
    previous = files.read_json(os.path.join(output, MANIFEST))
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
    print(counts_table(counts))
    print(compare_official(root, spec, counts))
    print(f"wrote {output} ({args.link}) in {time.time() - started:.1f} s")
    return output


@cli_main
def main(argv=None):
    return run(argv, "market")


if __name__ == "__main__":
    main()
