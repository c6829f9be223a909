"""Reading a release as its publishers laid it out: which folders and list files it must have, and every
picture of each split, parsed by the dataset table's naming rule (reid/datasets.py). Nothing here writes."""
import os
from collections import Counter, namedtuple

import numpy as np

from reid.datasets import BENCHMARKS, parse_image_name
from reid.names import NameRuleError
from reid.files import read_text
from reid.images import picture_names
from utils import UserError

Entry = namedtuple("Entry", "source label filename")  # one file to place: pytorch/<split>/<label>/<filename>


def missing_sources(root, spec):
    """What ROOT lacks of the benchmark's required folders and list files (names, for the message)."""
    missing = [name for name in spec.requires
               if not (os.path.isdir if name.endswith("/") else os.path.isfile)(os.path.join(root, name))]
    for source in spec.sources:
        if source.required and source.folder_in(root) is None:
            missing.append(" or ".join(folder + "/" for folder in source.folders))
        missing += [name for name in source.lists if not os.path.isfile(os.path.join(root, name))]
    return list(dict.fromkeys(missing))


def release_commands(benchmarks, root):
    return " or ".join(f"python {b.script} --download_path {root}" for b in benchmarks)


def check_layout(root, spec):
    """Fail before any work when ROOT is missing or is not laid out like the benchmark."""
    release = os.path.dirname(root) if spec.subfolder else root   # CUHK03-NP: ROOT/labeled or ROOT/detected
    if not os.path.exists(release):
        raise UserError(f"dataset folder {release} does not exist", f"{spec.download_hint}; then pass --download_path")
    if not os.path.isdir(release):
        raise UserError(f"{release} is a file, not the dataset folder", "pass the unzipped folder as --download_path")
    missing = [f"{spec.subfolder}/"] if spec.subfolder and not os.path.isdir(root) else missing_sources(root, spec)
    others = [b for b in BENCHMARKS.values() if b is not spec and (b.sources or b.requires) and not b.subfolder
              and not missing_sources(release, b) and b.title != spec.title]
    others = list({b.script.split(" --vehicleid_test")[0]: b for b in others}.values())   # VehicleID once
    if not spec.sources and not spec.requires and others:   # own pictures: a release's folders would become "identities"
        raise UserError(f"{release} is laid out like {' or '.join(b.title for b in others)}, not as one folder per "
                        "identity", f"prepare it with {release_commands(others, release)}")
    if not missing:
        return
    root = release
    if others:
        raise UserError(f"{root} is laid out like {' or '.join(b.title for b in others)}, not {spec.title} "
                        f"(it has no {', '.join(missing)})",
                        f"it is another dataset: prepare it with {release_commands(others, root)}, or pass the "
                        f"{spec.title} folder as --download_path")
    nested = [child for child in sorted(os.listdir(root))
              if os.path.isdir(os.path.join(root, child)) and not missing_sources(os.path.join(root, child), spec)]
    if nested:
        raise UserError(f"{root} has no {', '.join(missing)} but {nested[0]}/ inside it looks like the dataset",
                        f"pass --download_path {os.path.join(root, nested[0])}")
    raise UserError(f"{root} has no {', '.join(missing)}, so it is not the {spec.title} folder",
                    f"pass the folder that holds them; {spec.download_hint}")


def parse_names(path, names, spec, root):
    """``spec.parse`` of every name; on bad names, say which and suggest the other script."""
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
    return parsed


def scan_folder(root, folder, spec):
    """Every picture directly in ROOT/folder, parsed by the benchmark's rule."""
    path = os.path.join(root, folder)
    names = picture_names(path)
    return [Entry(os.path.join(path, p.filename), p.label, p.filename) for p in parse_names(path, names, spec, root)]


def scan_lists(root, source, spec):
    """The pictures that the source's list files name (lines ``relative/path.jpg label``), each checked to exist."""
    folder = os.path.join(root, source.folder_in(root))
    paths = []
    for list_name in source.lists:
        text = read_text(os.path.join(root, list_name), "restore it from the download (or unzip it again)")
        for number, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            relative = line.split()[0]
            if not os.path.isfile(os.path.join(folder, relative)):
                raise UserError(f"{list_name} line {number} names {os.path.join(folder, relative)}, which does "
                                "not exist", "restore that picture from the download (or unzip it again)")
            paths.append(os.path.join(folder, relative))
    paths.sort(key=os.path.basename)
    parsed = parse_names(folder, [os.path.basename(path) for path in paths], spec, root)
    return [Entry(path, p.label, p.filename) for path, p in zip(paths, parsed)]


def _parses(name, benchmark):
    try:
        benchmark.parse(name)
        return True
    except NameRuleError:
        return False


def plan_splits(root, spec, options=None, val_ids=0, seed=0):
    """Every output split as a list of entries, in sorted order (``options``: --dataset folder's flags;
    ``val_ids``: training identities to hold out as the unseen-identity validation set, drawn with ``seed``)."""
    if spec.key == "folder":
        from reid import own_folder

        planned, _ = own_folder.plan(root, **options)
        splits = {split: [Entry(*entry) for entry in entries] for split, entries in planned.items()}
    elif spec.drawn:   # VIPeR, VehicleID, CUB-200-2011: their protocols' splits
        from reid.drawn_sets import PLANNERS

        splits = {split: [Entry(*entry) for entry in entries] for split, entries in PLANNERS[spec.key](root, seed).items()}
    else:
        splits = {}
        for source in spec.sources:
            if source.lists:
                splits[source.split] = scan_lists(root, source, spec)
            elif source.folder_in(root) is not None:
                splits[source.split] = scan_folder(root, source.folder_in(root), spec)
    return with_val(hold_out(splits, val_ids, seed) if val_ids else splits)


def retrieval_split(entries):
    """One identity's pictures as (queries, gallery): the first picture of each camera is a query as long
    as every query keeps a picture of the identity from another camera in the gallery."""
    from reid.own_folder import query_pictures

    queries = query_pictures([parse_image_name(entry.filename).camid for entry in entries])
    return ([e for i, e in enumerate(entries) if i in queries], [e for i, e in enumerate(entries) if i not in queries])


def hold_out(splits, count, seed):
    """Move ``count`` training identities, drawn with ``seed`` among those a query can be asked of (seen by
    two cameras), out of train_all into val_query / val_gallery: retrieval of people training never sees."""
    by_label = {}
    for entry in splits["train_all"]:
        by_label.setdefault(entry.label, []).append(entry)
    answerable = {label: retrieval_split(entries) for label, entries in by_label.items()}
    eligible = sorted(label for label, (queries, _) in answerable.items() if queries)
    if not 1 <= count <= min(len(eligible), len(by_label) - 2):
        raise UserError(f"--val_ids {count} asks to hold out {count} training identities, but {len(eligible)} of "
                        f"the {len(by_label)} are seen by two cameras and at least 2 must stay for training",
                        f"pass --val_ids between 1 and {max(1, min(len(eligible), len(by_label) - 2))}")
    chosen = {eligible[i] for i in np.random.default_rng(seed).choice(len(eligible), size=count, replace=False)}
    splits = dict(splits, train_all=[e for e in splits["train_all"] if e.label not in chosen])
    splits["val_query"] = [e for label in sorted(chosen) for e in answerable[label][0]]
    splits["val_gallery"] = [e for label in sorted(chosen) for e in answerable[label][1]]
    return splits


def with_val(splits):
    """``splits`` with val (the first picture of each training identity) and train (the rest) added."""
    first_seen = {}
    for entry in splits["train_all"]:   # sorted, so the first entry of a label is its first file
        first_seen.setdefault(entry.label, entry)
    pictures = Counter(entry.label for entry in splits["train_all"])
    # an identity with a single picture stays in train: val must not hold classes train lacks
    splits["val"] = [e for e in first_seen.values() if pictures[e.label] > 1]
    in_val = set(splits["val"])
    splits["train"] = [e for e in splits["train_all"] if e not in in_val]
    order = ("train_all", "train", "val", "val_query", "val_gallery", "query", "gallery", "multi-query")
    return {split: splits[split] for split in order if split in splits}
