"""Stage 1b: check a prepared dataset before training on it (it is never modified).

Usage:
    python audit.py --data_dir data/Market/pytorch
    python audit.py --data_dir ../MSMT17_V1/pytorch --num_workers 8 --out audit_msmt17

Reads:  DATA_DIR/{train_all,query,gallery[,val_query,val_gallery]}/<pid>/<picture> and prepare_manifest.json
        (written by prepare.py; the held-out val_* splits of --val_ids are checked as test splits are).
Writes: OUT/counts.png (pictures per identity and per camera, each split); nothing under DATA_DIR.
Finds:  problems — identities in both training and test (a leak), the same picture in both (identical
        bytes, or perceptual hashes at most --max_distance bits apart), queries with no correct match in
        the gallery; warnings — file names that break the dataset's rule, pictures that do not decode.
        Also prints the training pictures' mean and standard deviation per colour channel, the values
        train.py --norm_mean/--norm_std take (docs/datasets.md says how they differ from layumi's).
Exit:   0 without problems (warnings allowed), 1 with problems, so that CI can run it; 2 for usage errors.

A correct run on the toy Market prints the counts, one line per finding, and ends with:
    audit: no problems in data/Market/pytorch (2247 pictures, 0 warnings)
"""
import os

from tqdm import tqdm

import utils
from reid import audit, files, pictures
from reid.datasets import BENCHMARKS, PREPARED_MANIFEST
from utils import UserError

SHOWN = 5   # findings listed by name per kind; the rest are counted


def build_parser():
    p = utils.ArgumentParser(prog="audit.py", description="Check a prepared re-ID dataset (never modified).")
    p.add_argument("--data_dir", default="../Market/pytorch", help="the pytorch/ folder written by prepare.py")
    p.add_argument("--out", default="audit", help="folder for counts.png")
    p.add_argument("--max_distance", type=int, default=12,
                   help="perceptual-hash bits (of 256) within which two pictures count as the same picture")
    p.add_argument("--num_workers", type=int, default=min(4, os.cpu_count() or 1),
                   help="processes that read the pictures (hashes and colour statistics)")
    return p


def counts_lines(table):
    """The counts table: pictures, identities, pictures per identity (fewest / median / most), cameras."""
    lines = [f"{'split':<11}{'pictures':>9}{'identities':>12}{'per identity (min/median/max)':>32}{'cameras':>9}"]
    for split, (per_identity, per_camera) in table.items():
        values = sorted(per_identity.values()) or [0]
        spread = f"{values[0]} / {values[len(values) // 2]} / {values[-1]}"
        lines.append(f"{split:<11}{sum(values):>9}{len(per_identity):>12}{spread:>32}{len(per_camera):>9}")
    return lines


def listed(title, items, fix):
    """One finding: its count and what to do, then the first few items by name."""
    if not items:
        return []
    shown = [f"    {item}" for item in items[:SHOWN]] + ([f"    … and {len(items) - SHOWN} more"] if len(items) > SHOWN else [])
    return [f"{title} ({len(items)}) — {fix}", *shown]


def colour_lines(statistics):
    """The training pictures' colour statistics, and the train.py flags that normalise with them."""
    if statistics is None:
        return []
    mean, std = (" ".join(f"{value:.4f}" for value in values) for values in statistics)
    return [f"colour of the training pictures (at {audit.COLOUR_SIZE[0]}x{audit.COLOUR_SIZE[1]}, values in [0, 1]): "
            f"mean {mean}, std {std} (ImageNet's: mean 0.485 0.456 0.406, std 0.229 0.224 0.225)",
            f"to normalise with them: python train.py … --norm_mean {mean} --norm_std {std}"]


def findings(data_dir, pictures_found, facts, broken, args):
    """(problems, warnings): lists of printed lines, from every check."""
    manifest = files.read_json(os.path.join(data_dir, PREPARED_MANIFEST)) or {}
    renumbered = any(b.renumbers_test and b.title == manifest.get("benchmark") for b in BENCHMARKS.values())
    leaks = [] if renumbered else audit.leaked_identities(pictures_found)
    same = audit.duplicates(pictures_found, facts, args.max_distance)
    lonely = audit.unanswerable_queries(pictures_found)
    problems = listed("identities in both training and test (a leak)", leaks,
                      "move each identity's pictures to one side, then run prepare.py --force") + \
        listed("the same picture in training and test (bytes or perceptual hash)",
               [f"{a}  =  {b}  ({bits} bits apart)" for a, b, bits in same],
               "remove one copy from the source, then run prepare.py --force") + \
        listed("queries with no correct match in the gallery", lonely,
               "add gallery pictures of that identity from another camera, or remove the query (torchreid's "
               "'all query identities do not appear in gallery'); --ap standard counts them out, trapezoid as 0")
    warnings = listed("file names that break the rules", [f"{path} ({why})" for path, why in broken],
                      "rename them at the source, then run prepare.py --force") + \
        listed("pictures that do not decode", [f"{path} ({why})" for path, why in audit.unreadable(pictures_found)],
               "replace them at the source, then run prepare.py --force")
    notes = [f"note: {manifest['benchmark']} numbers its test identities anew, so identity numbers are not "
             "compared across splits (pictures are)"] if renumbered else []
    return problems, warnings, notes


@utils.cli_main
def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.max_distance < 0 or args.num_workers < 1:
        parser.error("--max_distance must be at least 0 and --num_workers at least 1")
    if not os.path.isdir(os.path.join(args.data_dir, "train_all")):
        raise UserError(f"{args.data_dir} has no train_all/", "pass the pytorch/ folder written by prepare.py")
    files.output_folder(args.out, "--out")
    pictures_found, broken = audit.read_prepared(args.data_dir)
    table = audit.counts(pictures_found)
    print("\n".join(counts_lines(table)))
    pictures.plot_dataset_counts(os.path.join(args.out, "counts.png"), table)
    facts = audit.read_facts(pictures_found, args.num_workers,
                             lambda it, total: tqdm(it, total=total, desc="reading", unit="img", leave=False))
    print("\n".join(colour_lines(audit.colour_statistics(pictures_found, facts))))
    problems, warnings, notes = findings(args.data_dir, pictures_found, facts, broken, args)
    print("\n".join(notes + problems + warnings))
    kinds = sum(line[0] != " " for line in problems)
    summary = (f"{len(pictures_found)} pictures, {sum(line[0] != ' ' for line in warnings)} warning kind(s); "
               f"counts.png in {args.out}")
    if kinds:
        print(f"audit: {kinds} kind(s) of problem in {args.data_dir} ({summary})")
        raise SystemExit(1)
    print(f"audit: no problems in {args.data_dir} ({summary})")
    return 0


if __name__ == "__main__":
    main()
