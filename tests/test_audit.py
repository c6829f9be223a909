"""audit.py on generated data: a clean toy set passes, each problem the toy generator plants is found (and
only it), warnings do not fail, and the dataset is never modified."""
import os
import shutil

import pytest

import audit
import prepare
from conftest import make_toy, run_cli, snapshot

KINDS = {"leak": "identities in both training and test", "duplicate": "the same picture in training and test",
         "unanswerable": "queries with no correct match in the gallery"}


@pytest.fixture(scope="module")
def prepared_sets(tmp_path_factory):
    """{plant or "clean": prepared pytorch/ folder} of small toy Markets."""
    found = {}
    for plant in ["clean", *KINDS]:
        root = make_toy(tmp_path_factory.mktemp(plant), "market", *([] if plant == "clean" else ["--plant", plant]))
        prepare.main(["--download_path", str(root)])
        found[plant] = os.path.join(root, "pytorch")
    return found


def run_audit(data_dir, out, capsys, *extra):
    return run_cli(audit.main, ["--data_dir", data_dir, "--out", out, "--num_workers", "1", *extra], capsys)


def test_a_clean_set_passes_with_its_counts_and_plot(prepared_sets, tmp_path, capsys):
    before = snapshot(prepared_sets["clean"])
    code, out, _ = run_audit(prepared_sets["clean"], tmp_path / "audit", capsys)
    assert code == 0 and out.strip().splitlines()[-1].startswith("audit: no problems in")
    assert [line.split()[0] for line in out.splitlines() if line.split()[:1] in (["train_all"], ["query"], ["gallery"])] \
        == ["train_all", "query", "gallery"] and (tmp_path / "audit" / "counts.png").stat().st_size > 0
    assert not any(kind in out for kind in KINDS.values())
    assert snapshot(prepared_sets["clean"]) == before


@pytest.mark.parametrize("plant", sorted(KINDS))
def test_each_planted_problem_is_found_and_fails_the_audit(plant, prepared_sets, tmp_path, capsys):
    before = snapshot(prepared_sets[plant])
    code, out, _ = run_audit(prepared_sets[plant], tmp_path / "audit", capsys)
    assert code == 1 and "audit: 1 kind(s) of problem" in out.strip().splitlines()[-1]
    assert [kind for kind, text in KINDS.items() if text in out] == [plant]
    assert snapshot(prepared_sets[plant]) == before


def test_a_near_copy_is_the_same_picture_and_a_looser_threshold_is_a_flag(prepared_sets, tmp_path, capsys):
    from PIL import Image

    data_dir = shutil.copytree(prepared_sets["clean"], tmp_path / "pytorch")
    label = sorted(os.listdir(data_dir / "train_all"))[0]
    original = sorted(os.listdir(data_dir / "train_all" / label))[0]
    with Image.open(data_dir / "train_all" / label / original) as image:   # resized and re-encoded: not the same bytes
        image.resize((115, 230)).save(data_dir / "gallery" / "-1" / "-1_c1s1_000001_01.jpg", quality=70)
    code, out, _ = run_audit(data_dir, tmp_path / "audit", capsys)
    assert code == 1 and KINDS["duplicate"] in out and original in out
    code, out, _ = run_audit(data_dir, tmp_path / "audit", capsys, "--max_distance", "0")
    assert code == 0


def test_broken_names_and_unreadable_pictures_are_warnings(prepared_sets, tmp_path, capsys):
    data_dir = shutil.copytree(prepared_sets["clean"], tmp_path / "pytorch")
    label = sorted(os.listdir(data_dir / "gallery"))[0]
    (data_dir / "gallery" / label / "holiday.jpg").write_bytes(b"not a picture")
    code, out, _ = run_audit(data_dir, tmp_path / "audit", capsys)
    assert code == 0 and "file names that break the rules (1)" in out and "pictures that do not decode (1)" in out
    assert "2 warning kind(s)" in out.strip().splitlines()[-1]


def test_msmt17_compares_pictures_not_identity_numbers(tmp_path, capsys):
    root = make_toy(tmp_path, "msmt17")
    prepare.main(["--dataset", "msmt17", "--download_path", str(root)])
    code, out, _ = run_audit(os.path.join(root, "pytorch"), tmp_path / "audit", capsys)
    assert code == 0 and "MSMT17 numbers its test identities anew" in out


def test_a_folder_that_is_not_prepared_is_one_line(tmp_path, capsys):
    code, _, err = run_audit(tmp_path, tmp_path / "audit", capsys)
    assert code == 2 and err.startswith("error: ") and "has no train_all/" in err


def test_colour_statistics_by_hand(tmp_path, capsys):
    """Two one-colour training pictures, pure red and pure blue: each channel's pixels are half 0 and half 1
    (green: all 0), so the mean is 0.5 / 0 / 0.5 and the standard deviation the same."""
    from PIL import Image

    from reid.audit import Picture, colour_statistics, read_facts

    found = []
    for index, (colour, split) in enumerate([((255, 0, 0), "train_all"), ((0, 0, 255), "train_all"),
                                             ((0, 255, 0), "gallery")]):   # test pictures do not count
        path = str(tmp_path / f"{index}.png")
        Image.new("RGB", (64, 128), colour).save(path)
        found.append(Picture(path, split, "0001", 1, 1))
    mean, std = colour_statistics(found, read_facts(found))
    assert mean == pytest.approx([0.5, 0, 0.5]) and std == pytest.approx([0.5, 0, 0.5], abs=1e-6)


def test_the_audit_prints_the_flags_that_normalise_with_the_training_colours(prepared_sets, tmp_path, capsys):
    from reid.images import input_statistics

    code, out, _ = run_audit(prepared_sets["clean"], tmp_path / "audit", capsys)
    line = next(line for line in out.splitlines() if line.startswith("to normalise with them: python train.py"))
    values = [float(v) for v in line.split("--norm_mean")[1].replace("--norm_std", "").split()]
    assert code == 0 and len(values) == 6
    mean, std = input_statistics({"norm_mean": values[:3], "norm_std": values[3:]})
    assert mean != [0.485, 0.456, 0.406] and all(0.05 < s < 0.5 for s in std)
