"""An instructor's own pictures (``prepare.py --dataset folder``): ROOT/<identity>/<picture>, cameras from the
file names (``--camera_regex``), from a CSV (``--cameras_csv``: path,identity,camera) or unknown, and a
seeded split into train / query / gallery by identity, never by picture.

Every picture is placed under a name of the folder rule (``0003_c2_p000017.jpg``: identity number, camera,
picture number), so that test.py, evaluate_gpu.py, demo.py and the report read it like any benchmark;
``pytorch/identities.csv`` maps the numbers back to the folder names.

Which gallery pictures count as correct matches: with cameras, the benchmarks' rule — the same identity
seen by another camera (the same camera is junk), one query per (identity, camera), test identities taken
among those seen by two cameras or more. Without cameras there is nothing to tell two cameras apart, so
each test identity gives one query (its first picture) and every other picture of it in the gallery is a
correct match: queries are written as camera 1 and gallery pictures as camera 2, which makes the usual
rule say exactly that. Pictures taken moments apart then count as matches, so scores run higher than
across cameras.
"""
import csv
import io
import os
import re

import numpy as np

from reid.files import read_text
from reid.images import picture_names
from utils import UserError

ORIGIN = {"train_all": "identities not held out", "query": "held-out identities: first picture (of each camera)",
          "gallery": "held-out identities: the other pictures"}
NO_CAMERAS = "none: one query per test identity; every other picture of it is a correct match"


def identity_folders(root):
    """{identity folder: sorted picture names}, each identity with at least two pictures."""
    folders = {}
    for name in sorted(os.listdir(root)):
        path = os.path.join(root, name)
        if os.path.isdir(path) and name != "pytorch" and not name.startswith("."):
            folders[name] = picture_names(path)
    folders = {name: pictures for name, pictures in folders.items() if pictures}
    if len(folders) < 3:
        raise UserError(f"{root} holds {len(folders)} identity folder(s) with pictures",
                        "lay your pictures out as ROOT/<identity>/<picture> with at least 3 identities")
    lonely = [name for name, pictures in folders.items() if len(pictures) == 1]
    if lonely:
        raise UserError(f"identity folder {os.path.join(root, lonely[0])} has one picture "
                        f"({len(lonely)} such folder(s))", "re-ID needs two pictures of each person: add pictures "
                        "or remove the folder (this script never changes it)")
    return folders


def cameras_from_regex(folders, pattern):
    """{(identity, picture): camera} read from each file name by ``pattern`` (group ``cam`` or the first)."""
    try:
        rule = re.compile(pattern)
    except re.error as err:
        raise UserError(f"--camera_regex {pattern!r} is not a regular expression ({err})",
                        r"pass e.g. --camera_regex '_c(\d+)_'") from None
    cameras, unmatched = {}, []
    for identity, pictures in folders.items():
        for picture in pictures:
            found = rule.search(picture)
            text = (found.groupdict().get("cam") or (found.group(1) if found.re.groups else None)) if found else None
            if text is None or not text.isdigit():
                unmatched.append(f"{identity}/{picture}")
            else:
                cameras[identity, picture] = int(text)
    if unmatched:
        what = "matches nothing" if not cameras else f"does not match {len(unmatched)} picture(s)"
        raise UserError(f"--camera_regex {pattern!r} {what} (e.g. {unmatched[0]})",
                        r"pass a pattern whose first group is the camera number, e.g. --camera_regex '_c(\d+)_'")
    return cameras


def from_one(cameras, source):
    """Cameras numbered from 0 (many recording systems do) moved up by one: the naming rules count from 1."""
    if min(cameras.values()) > 0:
        return cameras
    print(f"note: {source} numbers the cameras from 0; they are written from 1 "
          "(camera 0 as c1, camera 1 as c2, ...)")
    return {key: camera + 1 for key, camera in cameras.items()}


def cameras_from_csv(folders, path):
    """{(identity, picture): camera} from a CSV with the columns path (relative to ROOT), identity, camera."""
    if not os.path.isfile(path):
        raise UserError(f"--cameras_csv {path} does not exist", "pass a CSV with the columns path,identity,camera")
    text = read_text(path, "export it from the spreadsheet as 'CSV UTF-8'")
    reader = csv.DictReader(io.StringIO(text, newline=""))
    rows = list(reader)
    missing = [column for column in ("path", "identity", "camera") if column not in (reader.fieldnames or [])]
    if missing:
        raise UserError(f"{path} lacks the column(s) {', '.join(missing)}",
                        "give it a header line path,identity,camera and one row per picture")
    cameras = {}
    for number, row in enumerate(rows, 2):
        identity, picture = os.path.split(os.path.normpath(row["path"]))
        if identity != row["identity"] or not str(row["camera"]).strip().isdigit():
            raise UserError(f"{path} line {number}: {row['path']!r} is not in folder {row['identity']!r}, or camera "
                            f"{row['camera']!r} is not a number", "fix that row")
        cameras[identity, picture] = int(row["camera"])
    absent = [f"{i}/{p}" for i, pictures in folders.items() for p in pictures if (i, p) not in cameras]
    if absent:
        raise UserError(f"{path} gives no camera for {len(absent)} picture(s) (e.g. {absent[0]})", "add their rows")
    return cameras


def test_identities(folders, cameras, test_ids, seed):
    """The identities held out for testing: ``test_ids`` (a fraction below 1, or a count) of them, drawn with
    ``seed``; with cameras, among the identities seen by two cameras or more (others could not be asked for)."""
    eligible = [name for name in folders if cameras is None or len({cameras[name, p] for p in folders[name]}) >= 2]
    count = round(test_ids * len(folders)) if test_ids < 1 else int(test_ids)
    if not 1 <= count <= min(len(eligible), len(folders) - 2):
        raise UserError(f"--test_ids {test_ids} asks for {count} test identities, but {len(eligible)} of the "
                        f"{len(folders)} can be tested{' (seen by two cameras or more)' if cameras else ''} and "
                        "at least 2 must stay for training", "pass a smaller --test_ids (a count, or a fraction)")
    chosen = np.random.default_rng(seed).choice(len(eligible), size=count, replace=False)
    return {eligible[i] for i in chosen}


def plan(root, camera_regex=None, cameras_csv=None, test_ids=0.5, seed=0):
    """{"train_all" | "query" | "gallery": [(source path, label, name under the folder rule)]} and the
    {label: identity folder} map."""
    folders = identity_folders(root)
    cameras = cameras_from_regex(folders, camera_regex) if camera_regex else \
        cameras_from_csv(folders, cameras_csv) if cameras_csv else None
    cameras = from_one(cameras, camera_regex or cameras_csv) if cameras else None
    testing = test_identities(folders, cameras, test_ids, seed)
    splits, labels = {"train_all": [], "query": [], "gallery": []}, {}
    for number, (identity, pictures) in enumerate(folders.items(), 1):
        label = f"{number:04d}"
        labels[label] = identity
        seen = [cameras[identity, p] for p in pictures] if cameras else [1] + [2] * (len(pictures) - 1)
        queries = query_pictures(seen) if identity in testing else set()
        for index, (picture, camera) in enumerate(zip(pictures, seen)):
            split = "train_all" if identity not in testing else "query" if index in queries else "gallery"
            name = f"{label}_c{camera}_p{index + 1:06d}{os.path.splitext(picture)[1].lower()}"
            splits[split].append((os.path.join(root, identity, picture), label, name))
    return splits, labels


def query_pictures(seen):
    """Indices of one identity's queries: the first picture of each camera, as long as every query keeps a
    gallery picture of this identity from another camera (so none is unanswerable)."""
    left = {camera: seen.count(camera) for camera in seen}
    queries, asked = set(), []
    for index, camera in enumerate(seen):
        if camera in asked:
            continue
        left[camera] -= 1
        if all(sum(n for c, n in left.items() if c != q) >= 1 for q in asked + [camera]):
            queries.add(index)
            asked.append(camera)
        else:
            left[camera] += 1
    return queries


def describe(root, splits, args):
    """What prepare_manifest.json records of an own-pictures set: the identity behind each number, the
    camera rule (test.py and evaluate_gpu.py print it) and the split's settings."""
    identities = sorted(os.listdir(root))
    labels = {entry.label: os.path.basename(os.path.dirname(entry.source))
              for entries in splits.values() for entry in entries}
    rule = (f"from the file names (--camera_regex {args.camera_regex})" if args.camera_regex else
            f"from {args.cameras_csv}" if args.cameras_csv else NO_CAMERAS)
    assert set(labels.values()) <= set(identities)
    return {"identities": dict(sorted(labels.items())), "cameras": rule,
            "split": {"test_ids": args.test_ids, "seed": args.seed}}
