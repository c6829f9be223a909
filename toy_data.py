"""Make a toy dataset laid out and named exactly like Market-1501, DukeMTMC-reID, MSMT17, CUHK03-NP or VeRi-776.

The real benchmarks cannot be downloaded on the course machines, so the practical runs on this one.
Each identity has a stable appearance (clothing colours and pattern, bag, hat, body shape) and each
camera its own background, colour cast, brightness, blur, noise and viewpoints (see toy_render.py);
several identities share clothing colours, so a model has to combine cues.

Usage:
    python toy_data.py --out data --dataset market      # -> data/Market/
    python toy_data.py --out data --dataset duke        # -> data/DukeMTMC-reID/
    python toy_data.py --out data --dataset msmt17      # -> data/MSMT17_V1/ (train/, test/, list_*.txt)
    python toy_data.py --out data --dataset cuhk03      # -> data/cuhk03-np/{labeled,detected}/ (PNG)
    python toy_data.py --out data --dataset veri        # -> data/VeRi/ (image_train/, image_query/, image_test/)
    python toy_data.py --out data --dataset dg-market   # -> data/DG-Market/<id>/ (train.py --DG --dg_dir data/DG-Market)

Reads: nothing.
Writes (Market):  OUT/Market/{bounding_box_train,bounding_box_test,query,gt_bbox,gt_query}/,
                  readme.txt, toy_dataset.json
Writes (Duke):    OUT/DukeMTMC-reID/{bounding_box_train,bounding_box_test,query}/, toy_dataset.json
(the others):     each release's folders and list files (reid/datasets.py's table), toy_dataset.json
The protocol facts of the real sets hold: train and test identities are disjoint, every test
identity is seen by >= 2 cameras and has one query per (identity, camera); Market's gallery holds
distractors ``0000_*`` and junk ``-1_*``; Duke's gallery holds distractor identities seen by one camera.
The same --seed gives the same bytes on every run.

A correct run prints (default sizes, seed 0):
    folder              images  identities  cameras
    bounding_box_train    1182         100        6
    ...
    wrote data/Market in 9.1 s
"""
import io
import json
import os
import shutil
import time
from multiprocessing import Pool

import numpy as np
from tqdm import tqdm

import utils
from reid import toy_layout, toy_render
from reid.toy_layout import Shot, toy_benchmark
from reid.datasets import TOY_MANIFEST
from reid.files import output_folder, read_json
from utils import UserError, cli_main

FORMAT_VERSION = 1
TOY_DATASETS = ("cub", "cuhk03", "dg-market", "duke", "market", "msmt17", "vehicleid", "veri", "viper")
DRAWN = ("viper", "vehicleid", "cub")   # releases whose splits prepare.py draws: reid/toy_layout.drawn_shots
def build_parser():
    parser = utils.ArgumentParser(prog="toy_data.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="data", help="folder that receives Market/ or DukeMTMC-reID/")
    parser.add_argument("--dataset", choices=TOY_DATASETS, default="market",
                        help="which release to imitate (cuhk03: both labeled/ and detected/; dg-market: train.py "
                             "--DG's generated pictures of the market toy's training people, same --seed and --train_ids)")
    parser.add_argument("--seed", type=int, default=0, help="random seed: the same seed writes the same bytes")
    parser.add_argument("--train_ids", type=int, default=100, help="identities in bounding_box_train")
    parser.add_argument("--test_ids", type=int, default=100, help="identities in query and bounding_box_test")
    parser.add_argument("--images_per_camera", type=int, default=3,
                        help="typical pictures of one identity in one camera (each gets this ±1)")
    parser.add_argument("--max_cameras", type=int, default=None,
                        help="most cameras one identity walks past (at least 2; default 4, or all if fewer)")
    parser.add_argument("--distractors", type=int, default=40,
                        help="Market: 0000 false detections; Duke: identities seen by one camera only")
    parser.add_argument("--junk", type=int, default=40, help="Market: -1 bad detections in the gallery")
    parser.add_argument("--workers", type=int, default=min(4, os.cpu_count() or 1),
                        help="processes that draw pictures (the output does not depend on it)")
    toy_render.add_look_arguments(parser)
    parser.add_argument("--plant", default="", help="problems for audit.py to find, comma-separated: "
                        + ", ".join(f"{name} ({what})" for name, what in toy_layout.PLANTS.items()))
    parser.add_argument("--overwrite", action="store_true",
                        help="replace an existing toy dataset made with other settings")
    return parser


def check_args(parser, args):
    if args.train_ids < 2 or args.test_ids < 2:
        parser.error("--train_ids and --test_ids must be at least 2")
    if args.images_per_camera < 1:
        parser.error("--images_per_camera must be at least 1")
    if args.max_cameras is None:
        args.max_cameras = min(4, toy_benchmark(args.dataset).cameras)
    if not 2 <= args.max_cameras <= toy_benchmark(args.dataset).cameras:
        parser.error(f"--max_cameras must be between 2 and {toy_benchmark(args.dataset).cameras} for {args.dataset}")
    if args.distractors < 0 or args.junk < 0 or args.workers < 1:
        parser.error("--distractors and --junk must be >= 0, --workers >= 1")
    args.plant = ",".join(sorted({p.strip() for p in args.plant.split(",") if p.strip()}))
    unknown = set(args.plant.split(",")) - set(toy_layout.PLANTS) - {""}
    if unknown:
        parser.error(f"--plant {', '.join(sorted(unknown))}: choose from {', '.join(toy_layout.PLANTS)}")
    args.style = toy_render.style_of(parser, args)
    if args.train_ids + args.test_ids + 1 > 9999:
        parser.error("at most 9998 identities fit the four-digit names")
    limits = {"viper": (1000, "VIPeR's three-digit person numbers"), "cub": (200, "CUB's 200 classes")}
    if args.dataset in limits and args.train_ids + args.test_ids > limits[args.dataset][0]:
        parser.error(f"--train_ids + --test_ids: at most {limits[args.dataset][0]} for {limits[args.dataset][1]}")
    if args.dataset == "cub" and max(args.train_ids, args.test_ids) > 100:
        parser.error("--train_ids and --test_ids: at most 100 each for CUB (classes 1-100 train, 101-200 test)")


class Namer:
    """Unique benchmark file names: frame numbers grow per camera, as in a video."""

    def __init__(self, benchmark, rng):
        self.benchmark, self.rng = benchmark, rng
        self.frames = {}

    def __call__(self, label, camid, hand_drawn=False):
        frame = self.frames.get(camid, 0) + int(self.rng.integers(5, 60))
        self.frames[camid] = frame
        box = 0
        if self.benchmark.gt_bbox:   # names carry a box index; the toy gives its hand-drawn boxes 00
            box = 0 if hand_drawn else int(self.rng.integers(1, 5))
        return self.benchmark.toy_name(label, camid, frame, box)


def choose_identities(args, layout, rng):
    """Distinct person ids spread like the real sets' (not 1..N), split into train and test."""
    wanted = args.train_ids + args.test_ids + args.distractors * (layout.distractors == "identities")
    pids = rng.choice(np.arange(1, max(layout.max_pid, wanted) + 1), size=wanted, replace=False)
    pids = [int(p) for p in pids]
    train = sorted(pids[:args.train_ids])
    test = sorted(pids[args.train_ids:args.train_ids + args.test_ids])
    return train, test, sorted(pids[args.train_ids + args.test_ids:])


def person_shots(args, layout, rng, namer, pid, test):
    """All pictures of one identity: >= 2 cameras, a few per camera, a query per camera if test."""
    n_cams = int(rng.integers(2, args.max_cameras + 1))
    cams = sorted(int(c) for c in rng.choice(np.arange(1, layout.cameras + 1), size=n_cams, replace=False))
    label, folder = f"{pid:04d}", "bounding_box_test" if test else "bounding_box_train"
    shots = []
    for cam in cams:
        count = int(rng.integers(max(1, args.images_per_camera - 1), args.images_per_camera + 2))
        for _ in range(count):
            shots.append(Shot(folder, namer(label, cam), pid, cam, (args.seed, 3, pid, len(shots))))
        if test:
            hand_drawn = [namer(label, cam, hand_drawn=True) for _ in range(int(rng.integers(1, 4)))]
            shots.append(Shot("query", hand_drawn[0], pid, cam, (args.seed, 3, pid, len(shots))))
            for name in hand_drawn:  # Market's gt_bbox repeats the query and adds more hand-drawn boxes
                if layout.gt_bbox:
                    shots.append(Shot("gt_bbox", name, pid, cam, (args.seed, 3, pid, len(shots))))
    return shots


def gallery_extras(args, layout, rng, namer, distractor_pids):
    """Market: ``0000`` false detections and ``-1`` junk; Duke: identities seen by one camera."""
    shots = []
    if layout.distractors == "pictures":
        for index in range(args.distractors + args.junk):
            pid = 0 if index < args.distractors else -1
            cam = int(rng.integers(1, layout.cameras + 1))
            name = namer("0000" if pid == 0 else "-1", cam)
            shots.append(Shot("bounding_box_test", name, pid, cam, (args.seed, 4, index),
                              crop="full" if pid == 0 else "bad"))
    for pid in distractor_pids:
        cam = int(rng.integers(1, layout.cameras + 1))
        for index in range(int(rng.integers(1, 4))):
            shots.append(Shot("bounding_box_test", namer(f"{pid:04d}", cam), pid, cam, (args.seed, 3, pid, index)))
    return shots


def plan_identities(args):
    """(training, test) identity numbers, as plan_dataset draws them first from the seed."""
    return choose_identities(args, toy_benchmark(args.dataset), np.random.default_rng([args.seed, 0]))[:2]


def plan_dataset(args):
    """Every picture to write, in a fixed order, from the seed alone."""
    layout = toy_benchmark(args.dataset)
    rng = np.random.default_rng([args.seed, 0])
    namer = Namer(layout, rng)
    train, test, distractors = choose_identities(args, layout, rng)   # DG-Market: the Market toy's, same seed
    if args.dataset == "dg-market":
        return toy_layout.generated_shots(args.seed, args.images_per_camera, layout, rng, train)
    if args.dataset == "cub":   # classes 1-100 train and 101-200 test, by number
        train, test = list(range(1, args.train_ids + 1)), list(range(101, 101 + args.test_ids))
    if args.dataset in DRAWN:
        return toy_layout.drawn_shots(args.dataset, args.seed, args.images_per_camera, rng, (train, test))
    shots = []
    for pid in train:
        shots += person_shots(args, layout, rng, namer, pid, test=False)
    for pid in test:
        shots += person_shots(args, layout, rng, namer, pid, test=True)
    shots += gallery_extras(args, layout, rng, namer, distractors)
    return shots + toy_layout.planted(args.plant, shots, namer, layout)


def draw_shot(job):
    """Render one shot to JPEG bytes (runs in a worker process)."""
    shot, seed, style = job
    camera = toy_render.make_camera(np.random.default_rng([seed, 2, shot.camid]), style.nuisance)
    rng = np.random.default_rng(list(shot.seed))
    person = None
    if shot.pid != 0:
        # junk shows someone from outside the dataset, badly cropped
        identity_seed = [seed, 1, shot.pid] if shot.pid > 0 else [seed, 5, *shot.seed]
        person = toy_render.make_identity(np.random.default_rng(identity_seed))
    image = toy_render.render(rng, camera, person, crop=shot.crop, style=style)
    buffer = io.BytesIO()
    image.save(buffer, format=toy_layout.PICTURE_FORMATS.get(os.path.splitext(shot.filename)[1], "JPEG"), quality=90)
    return buffer.getvalue()


def write_dataset(args, root, shots):
    """Draw every shot and write the release's folder tree (and list files) into ``root``."""
    benchmark = toy_benchmark(args.dataset)
    paths = [os.path.join(root, toy_layout.place(benchmark, shot)) for shot in shots]
    for folder in sorted({os.path.dirname(path) for path in paths}):
        os.makedirs(folder)
    jobs = [(shot, args.seed, args.style) for shot in shots]
    with Pool(args.workers) as pool:
        pictures = list(tqdm(pool.imap(draw_shot, jobs, chunksize=32), total=len(shots), desc="drawing", unit="img"))
    for shot, path, picture in zip(shots, paths, pictures):
        with open(path, "wb") as handle:   # a planted duplicate takes another picture's very bytes
            handle.write(pictures[shot.copy_of] if shot.copy_of >= 0 else picture)
    lists = toy_layout.list_files(benchmark, shots)
    if args.dataset in DRAWN:
        lists = toy_layout.drawn_lists(args.dataset, shots, set(plan_identities(args)[1]))
    for name, text in lists.items():
        os.makedirs(os.path.dirname(os.path.join(root, name)), exist_ok=True)
        with open(os.path.join(root, name), "w") as handle:
            handle.write(text)
    if benchmark.subfolder:   # CUHK03-NP holds labeled/ and detected/ boxes; the toy draws them alike
        shutil.copytree(os.path.join(root, benchmark.subfolder), os.path.join(root, "detected"))
    if benchmark.gt_bbox:
        toy_layout.write_gt_query(root, shots)
        with open(os.path.join(root, "readme.txt"), "w") as handle:
            handle.write(toy_layout.MARKET_README)
    with open(os.path.join(root, TOY_MANIFEST), "w") as handle:
        json.dump(settings_of(args), handle, indent=1, sort_keys=True)


def settings_of(args):
    """What determines the dataset's bytes; stored in toy_dataset.json to recognise a finished set."""
    keys = ("dataset", "seed", "train_ids", "test_ids", "images_per_camera", "max_cameras", "distractors", "junk")
    planted = {"plant": args.plant} if args.plant else {}   # the clean sets' manifests stay as they were
    return {"generator": "reid-practical toy_data.py", "format_version": FORMAT_VERSION,
            **{key: getattr(args, key) for key in keys}, **planted, **toy_render.look_settings(args)}


@cli_main
def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    check_args(parser, args)
    root = os.path.join(args.out, toy_benchmark(args.dataset).folder)
    if os.path.exists(root):
        found = read_json(os.path.join(root, TOY_MANIFEST))
        if found is None:
            raise UserError(f"{root} exists and is not a toy dataset made by this script",
                            "choose another --out; a real dataset is never overwritten")
        if found == settings_of(args):
            print(f"{root} already holds this toy dataset (seed {args.seed}); nothing to do")
            return root
        if not args.overwrite:
            raise UserError(f"{root} holds a toy dataset made with other settings",
                            "pass --overwrite to replace it, or choose another --out")
    started = time.time()
    shots = plan_dataset(args)
    temporary = os.path.join(args.out, f".{toy_benchmark(args.dataset).folder}.partial")
    shutil.rmtree(temporary, ignore_errors=True)   # left by an interrupted run
    output_folder(args.out, "--out")
    write_dataset(args, temporary, shots)
    if os.path.exists(root):
        shutil.rmtree(root)
    os.replace(temporary, root)
    print(toy_layout.summary_table(shots, args.dataset, toy_benchmark(args.dataset).cameras, args.size))
    print(f"wrote {root} in {time.time() - started:.1f} s")
    return root


if __name__ == "__main__":
    main()
