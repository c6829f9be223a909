"""toy_data.py: names, layout, benchmark protocol facts, determinism, and that it can be learned."""
import hashlib
import os
from collections import defaultdict

import numpy as np
import pytest
import scipy.io
from PIL import Image

import toy_data
from conftest import make_toy, run_cli
from reid.datasets import NAME_PARSERS
from conftest import list_images


def tree_hashes(root):
    hashes = {}
    for folder, _, files in os.walk(root):
        for name in files:
            path = os.path.join(folder, name)
            with open(path, "rb") as handle:
                hashes[os.path.relpath(path, root)] = hashlib.sha256(handle.read()).hexdigest()
    return hashes


def parsed(root, folder, dataset):
    return [NAME_PARSERS[dataset](name) for name in list_images(os.path.join(root, folder))]


@pytest.mark.parametrize("dataset, cameras, folders", [
    ("market", 6, {"bounding_box_train", "bounding_box_test", "query", "gt_bbox", "gt_query"}),
    ("duke", 8, {"bounding_box_train", "bounding_box_test", "query"}),
])
def test_layout_and_names(dataset, cameras, folders, toy_market_source, toy_duke_source):
    root = toy_market_source if dataset == "market" else toy_duke_source
    assert folders <= {entry for entry in os.listdir(root) if os.path.isdir(os.path.join(root, entry))}
    seen_cameras = set()
    for folder in ("bounding_box_train", "bounding_box_test", "query"):
        names = parsed(root, folder, dataset)             # every name follows the rule, or this raises
        assert names and len(names) == len(os.listdir(os.path.join(root, folder)))
        seen_cameras |= {name.camid for name in names}
    assert seen_cameras <= set(range(1, cameras + 1))
    sample = os.path.join(root, "query", list_images(os.path.join(root, "query"))[0])
    with Image.open(sample) as image:
        assert (image.format, image.mode, image.size) == ("JPEG", "RGB", (128, 256))


@pytest.mark.parametrize("dataset", ["market", "duke"])
def test_protocol_facts(dataset, toy_market_source, toy_duke_source):
    root = toy_market_source if dataset == "market" else toy_duke_source
    train = {n.pid for n in parsed(root, "bounding_box_train", dataset)}
    gallery = parsed(root, "bounding_box_test", dataset)
    query = parsed(root, "query", dataset)
    query_pids = {n.pid for n in query}
    assert not train & {n.pid for n in gallery}, "train and test identities must be disjoint"
    cameras_of = defaultdict(set)
    for name in gallery:
        cameras_of[name.pid].add(name.camid)
    queries_at = {(n.pid, n.camid) for n in query}
    for pid in query_pids:
        assert len(cameras_of[pid]) >= 2, f"test identity {pid} seen by one camera only"
        assert {(pid, cam) for cam in cameras_of[pid]} <= queries_at, "one query per (identity, camera)"
    extra = {n.pid for n in gallery} - query_pids
    if dataset == "market":
        assert extra == {0, -1}
    else:
        assert extra and all(len(cameras_of[pid]) == 1 for pid in extra)


def test_market_gt_files(toy_market_source):
    root = toy_market_source
    gt_names = set(list_images(os.path.join(root, "gt_bbox")))
    query_names = list_images(os.path.join(root, "query"))
    assert set(query_names) <= gt_names
    assert all(name.endswith("_00.jpg") for name in gt_names), "hand-drawn boxes are numbered 00"
    gallery = parsed(root, "bounding_box_test", "market")
    first = parsed(root, "query", "market")[0]
    good = scipy.io.loadmat(os.path.join(root, "gt_query", first.filename[:-4] + "_good.mat"))["good_index"]
    junk = scipy.io.loadmat(os.path.join(root, "gt_query", first.filename[:-4] + "_junk.mat"))["junk_index"]
    for index in good.ravel().astype(int):
        assert gallery[index - 1].pid == first.pid and gallery[index - 1].camid != first.camid
    for index in junk.ravel().astype(int):
        name = gallery[index - 1]
        assert name.pid == -1 or (name.pid == first.pid and name.camid == first.camid)
    assert good.size > 0 and os.path.exists(os.path.join(root, "readme.txt"))


def test_same_seed_same_bytes_other_seed_other_bytes(tmp_path, toy_market_source):
    again = make_toy(tmp_path / "again", "market", "--workers", "2")  # parallelism must not matter
    assert tree_hashes(again) == tree_hashes(toy_market_source)
    other = make_toy(tmp_path / "other", "market", "--seed", "1")
    assert tree_hashes(other) != tree_hashes(toy_market_source)


def test_never_overwrites_what_it_did_not_make(tmp_path, capsys):
    real = tmp_path / "Market"
    real.mkdir()
    (real / "precious.jpg").write_bytes(b"data")
    code, _, err = run_cli(toy_data.main, ["--out", tmp_path, "--train_ids", "2", "--test_ids", "2"], capsys)
    assert code == 2 and err.startswith("error:") and "never overwritten" in err
    assert (real / "precious.jpg").read_bytes() == b"data"


def test_rerun_is_a_no_op_and_other_settings_need_overwrite(tmp_path, capsys):
    small = ["--out", tmp_path, "--train_ids", "2", "--test_ids", "2", "--distractors", "1", "--junk", "1"]
    assert run_cli(toy_data.main, small, capsys)[0] == 0
    code, out, _ = run_cli(toy_data.main, small, capsys)
    assert code == 0 and "nothing to do" in out
    code, _, err = run_cli(toy_data.main, small + ["--seed", "3"], capsys)
    assert code == 2 and "--overwrite" in err
    assert run_cli(toy_data.main, small + ["--seed", "3", "--overwrite"], capsys)[0] == 0
    assert not [entry for entry in os.listdir(tmp_path) if entry.endswith(".partial")]


def test_impossible_sizes_are_refused(capsys):
    code, _, err = run_cli(toy_data.main, ["--max_cameras", "9", "--dataset", "market"], capsys)
    assert code == 2 and "--max_cameras" in err


def person_colour_descriptor(path):
    """A hand-made baseline: colour histogram of the image centre after grey-world normalisation."""
    with Image.open(path) as image:
        pixels = np.asarray(image, dtype=np.float32)[16:240, 40:88] / 256
    pixels = np.clip(pixels / pixels.reshape(-1, 3).mean(0) * 0.45, 0, 0.999)
    bins = (pixels * 4).astype(int)
    codes = bins[..., 0] * 16 + bins[..., 1] * 4 + bins[..., 2]
    histogram = np.concatenate([np.bincount(part.ravel(), minlength=64) for part in np.array_split(codes, 4)])
    descriptor = np.sqrt(histogram.astype(np.float32))
    return descriptor / np.linalg.norm(descriptor)


def cross_camera_rank1(root, describe):
    """Share of queries whose nearest gallery picture (other camera, not junk) is the same person."""
    def load(folder):
        names = parsed(root, folder, "market")
        return (np.stack([describe(os.path.join(root, folder, n.filename)) for n in names]),
                np.array([n.pid for n in names]), np.array([n.camid for n in names]))

    q_feats, q_pids, q_cams = load("query")
    g_feats, g_pids, g_cams = load("bounding_box_test")
    scores = q_feats @ g_feats.T
    hits = 0
    for i in range(len(q_pids)):
        valid = ~(((g_pids == q_pids[i]) & (g_cams == q_cams[i])) | (g_pids == -1))
        hits += g_pids[valid][np.argmax(scores[i][valid])] == q_pids[i]
    return hits / len(q_pids)


def test_identities_are_learnable_but_cameras_get_in_the_way(tmp_path):
    """Appearance identifies people (a colour histogram of the person beats chance many times over),
    yet the camera nuisances defeat a whole-image histogram, so the task is not trivial."""
    root = make_toy(tmp_path, "market", "--test_ids", "30", "--train_ids", "2")
    chance = 1 / 30
    person_rank1 = cross_camera_rank1(root, person_colour_descriptor)
    assert person_rank1 > 5 * chance
    assert person_rank1 < 0.9

    def whole_image(path):
        with Image.open(path) as image:
            histogram = np.asarray(image.histogram(), dtype=np.float32)
        return histogram / np.linalg.norm(histogram)

    assert cross_camera_rank1(root, whole_image) < person_rank1 / 2


def test_a_set_can_look_like_other_lab_data(tmp_path, toy_market_source):
    """--size, --nuisance and --clutter draw the same people and cameras in another look, deterministically;
    the default look is the practical's set, byte for byte, and its manifest does not mention them."""
    look = ["--size", "64x128", "--nuisance", "1.6", "--clutter", "8"]
    lab = make_toy(tmp_path / "lab", "market", *look)
    assert tree_hashes(make_toy(tmp_path / "again", "market", *look)) == tree_hashes(lab)
    assert tree_hashes(make_toy(tmp_path / "same", "market", "--size", "128x256")) == tree_hashes(toy_market_source)
    first = sorted(os.listdir(os.path.join(lab, "query")))[0]
    with Image.open(os.path.join(lab, "query", first)) as picture:
        assert picture.size == (64, 128)
    assert sorted(os.listdir(os.path.join(lab, "query"))) == sorted(os.listdir(os.path.join(toy_market_source, "query")))
    manifest = toy_data.read_json(os.path.join(lab, "toy_dataset.json"))
    assert (manifest["size"], manifest["nuisance"], manifest["clutter"]) == ("64x128", 1.6, 8)
    assert "size" not in toy_data.read_json(os.path.join(toy_market_source, "toy_dataset.json"))


def test_nuisance_zero_leaves_the_camera_neutral():
    import numpy.random as npr
    from reid import toy_render
    camera = toy_render.make_camera(npr.default_rng(3), nuisance=0.0)
    assert camera.gains == (1.0, 1.0, 1.0) and camera.brightness == 1.0 and camera.blur == 0 and camera.noise == 0
    assert toy_render.make_camera(npr.default_rng(3)).wall == camera.wall   # the scene itself is kept


@pytest.mark.parametrize("flag, value", [("--size", "64"), ("--size", "8x8"), ("--nuisance", "-1"), ("--clutter", "0")])
def test_impossible_looks_are_refused(flag, value, capsys):
    code, _, err = run_cli(toy_data.main, [flag, value], capsys)
    assert code == 2 and flag in err
