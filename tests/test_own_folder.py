"""prepare.py --dataset folder: an instructor's ROOT/<identity>/<picture> split by identity (seeded), cameras
from the names, a CSV or none, every query answerable, and each mistake one line that writes nothing."""
import csv
import os
import shutil

import numpy as np
import pytest

import evaluate_gpu
import prepare
from conftest import one_error_line, run_cli, snapshot
from reid import features
from reid.datasets import match_masks, parse_image_name
from reid.files import read_json


@pytest.fixture
def own_root(toy_market_source, tmp_path):
    """The toy Market's training pictures as an instructor would lay them out: one folder per person."""
    root = tmp_path / "pictures"
    source = os.path.join(toy_market_source, "bounding_box_train")
    for name in sorted(os.listdir(source)):
        os.makedirs(root / f"person {name[:4]}", exist_ok=True)
        shutil.copy(os.path.join(source, name), root / f"person {name[:4]}" / name)
    return root


def prepared(root, split):
    """[(label, camera)] of every picture of a prepared split."""
    folder = os.path.join(root, "pytorch", split)
    return [(label, parse_image_name(name).camid) for label in sorted(os.listdir(folder))
            for name in sorted(os.listdir(os.path.join(folder, label)))]


def every_query_is_answerable(root):
    query, gallery = (np.array(prepared(root, split), dtype=int) for split in ("query", "gallery"))
    good, _ = match_masks(query[:, 0], query[:, 1], gallery[:, 0], gallery[:, 1])
    return bool(good.any(1).all())


def test_without_cameras_each_held_out_identity_gives_one_query_and_the_rest_are_matches(own_root, capsys):
    code, out, err = run_cli(prepare.main, ["--dataset", "folder", "--download_path", own_root, "--test_ids", "3"], capsys)
    assert code == 0, err
    query, gallery, train = (prepared(own_root, split) for split in ("query", "gallery", "train_all"))
    assert len(query) == len({label for label, _ in query}) == 3 and {c for _, c in query} == {1}
    assert {c for _, c in gallery} == {2} and {label for label, _ in gallery} == {label for label, _ in query}
    assert not {label for label, _ in train} & {label for label, _ in query}, "split by identity, not by picture"
    assert every_query_is_answerable(own_root)
    manifest = read_json(own_root / "pytorch" / "prepare_manifest.json")
    assert manifest["identities"]["0001"] == "person " + sorted(os.listdir(own_root))[0][-4:]
    assert manifest["cameras"].startswith("none") and "cameras: none" in out


def test_the_split_follows_the_seed(own_root, capsys):
    held_out = []
    for seed in (0, 0, 1):
        run_cli(prepare.main, ["--dataset", "folder", "--download_path", own_root, "--seed", seed, "--force"], capsys)
        held_out.append({label for label, _ in prepared(own_root, "query")})
    assert held_out[0] == held_out[1] != held_out[2] and len(held_out[0]) == 3   # half of 6 identities


def test_cameras_from_the_names_give_one_answerable_query_per_camera(own_root, capsys):
    code, _, err = run_cli(prepare.main, ["--dataset", "folder", "--download_path", own_root,
                                          "--camera_regex", r"_c(\d+)s"], capsys)
    assert code == 0, err
    query = prepared(own_root, "query")
    assert len(query) > len({label for label, _ in query}), "several cameras, several queries per identity"
    assert every_query_is_answerable(own_root)


@pytest.mark.parametrize("first", [7, 0])   # 0: a recording system that counts from 0; written from 1
def test_cameras_from_a_csv(first, own_root, tmp_path, capsys):
    table = tmp_path / "cameras.csv"
    with open(table, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "identity", "camera"])
        for identity in sorted(os.listdir(own_root)):
            for index, name in enumerate(sorted(os.listdir(own_root / identity))):
                writer.writerow([f"{identity}/{name}", identity, first + index % 2])
    code, out, err = run_cli(prepare.main, ["--dataset", "folder", "--download_path", own_root,
                                            "--cameras_csv", table], capsys)
    assert code == 0, err
    written = {first, first + 1} if first else {1, 2}
    assert {camera for _, camera in prepared(own_root, "gallery")} <= written and every_query_is_answerable(own_root)
    assert ("numbers the cameras from 0" in out) == (first == 0)


def test_the_camera_rule_travels_to_the_evaluation(tmp_path, capsys):
    rng = np.random.default_rng(0)
    unit = lambda n: (lambda f: f / np.linalg.norm(f, axis=1, keepdims=True))(rng.standard_normal((n, 8)))  # noqa: E731
    arrays = {"gallery_f": unit(4), "gallery_label": [1, 1, 2, 2], "gallery_cam": [2, 2, 2, 2],
              "query_f": unit(2), "query_label": [1, 2], "query_cam": [1, 1]}
    features.save_features(str(tmp_path / "own.mat"), arrays, {"camera_rule": "none: one query per test identity"})
    code, out, _ = run_cli(evaluate_gpu.main, ["--gpu_ids", "-1", "--mat", tmp_path / "own.mat"], capsys)
    assert code == 0 and "cameras: none: one query per test identity" in out


def write_csv(path, header):
    with open(path, "w") as handle:
        handle.write(",".join(header) + "\n")


@pytest.mark.parametrize("extra, fragment", [
    (["--camera_regex", r"_x(\d+)_"], "matches nothing"),
    (["--camera_regex", "(("], "is not a regular expression"),
    (["--cameras_csv", "CSV"], "lacks the column(s) camera"),
    (["--test_ids", "6"], "at least 2 must stay for training"),
    (["--lonely"], "has one picture"),
])
def test_each_mistake_is_one_line_and_writes_nothing(own_root, tmp_path, extra, fragment, capsys):
    if extra == ["--lonely"]:
        first = sorted(os.listdir(own_root))[0]
        for name in sorted(os.listdir(own_root / first))[1:]:
            os.remove(own_root / first / name)
        extra = []
    if "CSV" in extra:
        write_csv(tmp_path / "cameras.csv", ["path", "identity"])
        extra = ["--cameras_csv", tmp_path / "cameras.csv"]
    before = snapshot(own_root)
    code, _, err = run_cli(prepare.main, ["--dataset", "folder", "--download_path", own_root, *extra], capsys)
    assert code == 2 and fragment in one_error_line(err)
    assert snapshot(own_root) == before and not (own_root / "pytorch").exists()


def test_folder_flags_on_a_benchmark_are_refused(market_root, capsys):
    code, _, err = run_cli(prepare.main, ["--download_path", market_root, "--camera_regex", "x"], capsys)
    assert code == 2 and "only apply to --dataset folder" in one_error_line(err)


def test_an_identity_folder_named_pytorch_is_never_replaced(own_root, capsys):
    """prepare.py writes ROOT/pytorch/: a person's folder of that name must stop it, not be deleted by it."""
    os.rename(own_root / sorted(os.listdir(own_root))[0], own_root / "pytorch")
    before = snapshot(own_root)
    code, _, err = run_cli(prepare.main, ["--dataset", "folder", "--download_path", own_root], capsys)
    assert code == 2 and "was not written by prepare.py" in one_error_line(err)
    assert snapshot(own_root) == before


def test_a_release_is_not_taken_for_own_pictures(market_root, capsys):
    """A Market-1501 folder's bounding_box_train/, query/ … are not people, and its prepared tree stays."""
    assert run_cli(prepare.main, ["--download_path", market_root], capsys)[0] == 0
    before = snapshot(market_root)
    code, _, err = run_cli(prepare.main, ["--dataset", "folder", "--download_path", market_root], capsys)
    assert code == 2 and "is laid out like Market-1501" in one_error_line(err)
    assert snapshot(market_root) == before


def test_another_datasets_prepared_tree_is_not_replaced(own_root, market_root, capsys):
    assert run_cli(prepare.main, ["--download_path", market_root], capsys)[0] == 0
    shutil.copytree(market_root / "pytorch", own_root / "pytorch")
    before = snapshot(own_root)
    code, _, err = run_cli(prepare.main, ["--dataset", "folder", "--download_path", own_root], capsys)
    assert code == 2 and "was prepared from Market-1501" in one_error_line(err)
    assert snapshot(own_root) == before
    code, _, _ = run_cli(prepare.main, ["--dataset", "folder", "--download_path", own_root, "--force"], capsys)
    assert code == 0 and read_json(own_root / "pytorch" / "prepare_manifest.json")["benchmark"] == "own pictures"


def camera_table(own_root):
    lines = ["path,identity,camera"]
    for identity in sorted(os.listdir(own_root)):
        lines += [f"{identity}/{name},{identity},{1 + index % 2}"
                  for index, name in enumerate(sorted(os.listdir(own_root / identity)))]
    return "\r\n".join(lines) + "\r\n"   # as a spreadsheet writes it


def test_a_spreadsheets_utf8_csv_with_its_byte_order_mark_is_read(own_root, tmp_path, capsys):
    table = tmp_path / "cameras.csv"
    table.write_bytes(camera_table(own_root).encode("utf-8-sig"))
    code, _, err = run_cli(prepare.main, ["--dataset", "folder", "--download_path", own_root, "--cameras_csv", table],
                           capsys)
    assert code == 0, err


def test_a_csv_in_another_encoding_is_one_line(own_root, tmp_path, capsys):
    os.rename(own_root / sorted(os.listdir(own_root))[0], own_root / "Zoë")
    table = tmp_path / "cameras.csv"
    table.write_bytes(camera_table(own_root).encode("latin-1"))
    code, _, err = run_cli(prepare.main, ["--dataset", "folder", "--download_path", own_root, "--cameras_csv", table],
                           capsys)
    assert code == 2 and "is not UTF-8 text (line 2 holds the byte 0xeb)" in one_error_line(err)
    assert not (own_root / "pytorch").exists()


def test_system_files_and_a_readme_beside_the_identities_are_left_alone(own_root, capsys):
    """A Mac's .DS_Store, a README beside the identity folders: not identities, not pictures, not touched."""
    first = own_root / sorted(os.listdir(own_root))[0]
    for junk in (own_root / ".DS_Store", own_root / "README.md", first / ".DS_Store", first / "notes.txt"):
        junk.write_text("not a picture\n")
    code, _, err = run_cli(prepare.main, ["--dataset", "folder", "--download_path", own_root], capsys)
    assert code == 0, err
    assert (own_root / "README.md").read_text() == "not a picture\n" and prepared(own_root, "query")
    assert not any(name.endswith((".txt", ".md", ".DS_Store")) for _, _, names in os.walk(own_root / "pytorch")
                   for name in names)


def test_a_link_to_a_missing_picture_is_one_line(own_root, capsys):
    first = own_root / sorted(os.listdir(own_root))[0]
    os.symlink(own_root / "moved" / "0001_c1s1_000001_00.jpg", first / "0001_c1s1_000001_00.jpg")
    before = snapshot(own_root)
    code, _, err = run_cli(prepare.main, ["--dataset", "folder", "--download_path", own_root], capsys)
    line = one_error_line(err)
    assert code == 2 and "which does not exist" in line and "delete the link" in line
    assert snapshot(own_root) == before
