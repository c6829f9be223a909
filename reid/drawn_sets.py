"""Releases whose splits prepare.py draws or reads from lists itself, as their papers describe the protocol:

* VIPeR (Gray et al., 2007): 632 people, one picture each in ``cam_a/`` and ``cam_b/`` (``PPP_AAA.bmp``: person,
  viewpoint angle). A random half of the people trains; the other half is tested with its cam_a pictures as
  queries and its cam_b pictures as the gallery. Papers draw 10 such splits and report the mean.
* VehicleID (Liu et al., CVPR 2016): ``image/IIIIIII.jpg`` and ``train_test_split/{train_list,test_list_N}.txt``
  (lines ``IIIIIII vehicle``). The test list of 800, 1,600 or 2,400 vehicles is split by drawing one picture of
  each vehicle as its gallery picture; the others are queries. Papers repeat the draw 10 times.
* CUB-200-2011 (Wah et al., 2011): ``images/NNN.Name/*.jpg`` listed in ``images.txt`` (``id path``). Classes
  1-100 train; every picture of classes 101-200 is a query against all the others.

None of them has cameras to tell a correct match from junk. Each prepared name therefore carries a camera
chosen so that the usual rule (the same identity from another camera is correct, from the same camera
junk) says what the protocol says. VIPeR: cam_a is camera 1 and cam_b camera 2. VehicleID: queries are
camera 1, the gallery camera 2, so a vehicle's gallery picture is its correct match. CUB: each picture is
its own camera, so a query is junk to itself and every other picture of its class is correct.
The draws come from ``--seed``: seeds 0-9 give the ten splits (or draws) papers average over.
"""
import os
import re

import numpy as np

from reid.files import read_text
from reid.images import picture_names
from utils import UserError

VIPER_SOURCE = re.compile(r"(?P<person>\d{3})_(?P<angle>\d{1,3})\.bmp")
CUB_FOLDER = re.compile(r"(?P<number>\d{3})\.\S+")


def entry(source, label, filename):
    """One file to place: pytorch/<split>/<label>/<filename> from ``source`` (reid.sources makes it an Entry)."""
    return source, label, filename


def listed_lines(root, name, fields):
    """[(line number, [fields])] of a list file under ROOT; one line for a line that does not fit."""
    path = os.path.join(root, name)
    text = read_text(path, "restore it from the download (or unzip it again)")
    lines = []
    for number, line in enumerate(text.splitlines(), 1):
        if line.strip():
            parts = line.split()
            if len(parts) != len(fields) or any(not part.isdigit() for part, field in zip(parts, fields) if field != "path"):
                raise UserError(f"{path} line {number} is {line.strip()!r}, not '{' '.join(fields)}'",
                                "restore the file from the download (or unzip it again)")
            lines.append((number, parts))
    return lines


def existing(path, named_by):
    if not os.path.isfile(path):
        raise UserError(f"{named_by} names {path}, which does not exist",
                        "restore that picture from the download (or unzip it again)")
    return path


def viper_pictures(root):
    """{person: {camera (1 = cam_a, 2 = cam_b): (path, angle)}}, every person in both cameras once."""
    people = {}
    for camera, folder in ((1, "cam_a"), (2, "cam_b")):
        for name in picture_names(os.path.join(root, folder)):
            match = VIPER_SOURCE.fullmatch(name)
            if match is None:
                raise UserError(f"{os.path.join(root, folder, name)} does not follow VIPeR's naming rule PPP_AAA.bmp "
                                "(person, viewpoint angle; e.g. 000_45.bmp)", "move it out of the folder")
            pictures = people.setdefault(int(match["person"]), {})
            if camera in pictures:
                raise UserError(f"{folder}/ holds two pictures of person {match['person']}",
                                "VIPeR has one picture of each person per camera: restore the download")
            pictures[camera] = (os.path.join(root, folder, name), int(match["angle"]))
    lonely = sorted(person for person, pictures in people.items() if len(pictures) < 2)
    if lonely:
        raise UserError(f"person {lonely[0]:03d} ({len(lonely)} such) is in one of cam_a/ and cam_b/ only",
                        "restore the download: every VIPeR person has a picture in both")
    return people


def plan_viper(root, seed):
    """train_all: a half of the people drawn with ``seed``, both cameras; query: the others' cam_a pictures;
    gallery: their cam_b pictures."""
    people = viper_pictures(root)
    persons = sorted(people)
    trained = {persons[i] for i in np.random.default_rng(seed).permutation(len(persons))[:len(persons) // 2]}
    splits = {"train_all": [], "query": [], "gallery": []}
    for person in persons:
        for camera, (path, angle) in sorted(people[person].items()):
            split = "train_all" if person in trained else ("query" if camera == 1 else "gallery")
            splits[split].append(entry(path, f"{person:04d}", f"{person:04d}_c{camera}_{angle:03d}.bmp"))
    return splits


def vehicleid_pictures(root, name):
    """{vehicle: [(path, image id)]} of one of VehicleID's lists, in the list's order."""
    vehicles = {}
    for number, (image, vehicle) in listed_lines(root, os.path.join("train_test_split", name), ("image", "vehicle")):
        path = existing(os.path.join(root, "image", f"{image}.jpg"), f"train_test_split/{name} line {number}")
        vehicles.setdefault(int(vehicle), []).append((path, image))
    return vehicles


def plan_vehicleid(root, seed, size):
    """train_all: train_list.txt; query/gallery: test_list_SIZE.txt, one picture of each vehicle drawn with
    ``seed`` as the gallery (camera 2), the others queries (camera 1)."""
    name = lambda vehicle, camera, image: f"{vehicle:05d}_c{camera}_{int(image):07d}.jpg"   # noqa: E731
    splits = {"train_all": [], "query": [], "gallery": []}
    for vehicle, pictures in sorted(vehicleid_pictures(root, "train_list.txt").items()):
        splits["train_all"] += [entry(path, f"{vehicle:05d}", name(vehicle, 1, image)) for path, image in pictures]
    draw = np.random.default_rng(seed)
    for vehicle, pictures in sorted(vehicleid_pictures(root, f"test_list_{size}.txt").items()):
        pictures = sorted(pictures, key=lambda picture: picture[1])
        chosen = int(draw.integers(len(pictures)))
        for index, (path, image) in enumerate(pictures):
            camera = 2 if index == chosen else 1
            splits["gallery" if camera == 2 else "query"].append(entry(path, f"{vehicle:05d}", name(vehicle, camera, image)))
    for split in splits.values():
        split.sort(key=lambda placed: placed[2])
    return splits


def plan_cub(root, seed):
    """train_all: classes 1-100; query and gallery: every picture of classes 101-200 (each its own camera).
    ``seed`` is unused: the split is fixed by class."""
    splits = {"train_all": [], "query": [], "gallery": []}
    for number, (image, path) in listed_lines(root, "images.txt", ("id", "path")):
        folder = CUB_FOLDER.fullmatch(path.split("/")[0]) if "/" in path else None
        if folder is None or not 1 <= int(folder["number"]) <= 200:
            raise UserError(f"{os.path.join(root, 'images.txt')} line {number} names {path}, not "
                            "NNN.Class_name/picture.jpg with a class from 001 to 200",
                            "restore the file from the download (or unpack it again)")
        source = existing(os.path.join(root, "images", path), f"images.txt line {number}")
        bird = int(folder["number"])
        picture = entry(source, f"{bird:04d}", f"{bird:04d}_i{int(image):05d}.jpg")
        for split in (("train_all",) if bird <= 100 else ("query", "gallery")):
            splits[split].append(picture)
    for split in splits.values():
        split.sort(key=lambda placed: placed[2])
    return splits


ORIGIN = {   # counts_table's "from" column
    "viper": {"train_all": "half the people (--seed), cam_a + cam_b", "query": "the other half, cam_a",
              "gallery": "the other half, cam_b"},
    "vehicleid": {"train_all": "train_test_split/train_list.txt", "query": "the test list minus the gallery",
                  "gallery": "one picture per test vehicle (--seed)"},
    "cub": {"train_all": "classes 1-100 (images.txt)", "query": "classes 101-200, every picture",
            "gallery": "classes 101-200, every picture"},
}


PLANNERS = {"viper": plan_viper, "cub": plan_cub,   # the dataset table's key -> (root, seed) -> {split: [entry]}
            **{f"vehicleid-{size}": (lambda root, seed, size=size: plan_vehicleid(root, seed, size))
               for size in (800, 1600, 2400)}}

