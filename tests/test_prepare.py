"""prepare.py / prepare_Duke.py: the splits, safety of re-runs, the source left untouched, bad input."""
import hashlib
import os
import shutil
import subprocess
import sys

import pytest
from PIL import Image

import prepare
import prepare_Duke
from conftest import ROOT, run_cli
from reid.datasets import TOY_MANIFEST, parse_image_name
from conftest import list_images


def source_hash(root):
    """Hash of everything under ROOT except pytorch/: prepare must never change it."""
    digest = hashlib.sha256()
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not (folder == str(root) and d == "pytorch"))
        for name in sorted(files):
            path = os.path.join(folder, name)
            digest.update(os.path.relpath(path, root).encode())
            with open(path, "rb") as handle:
                digest.update(handle.read())
    return digest.hexdigest()


def files_in(split_dir):
    """{label: sorted file names} of one output split."""
    return {label: sorted(os.listdir(os.path.join(split_dir, label))) for label in os.listdir(split_dir)}


def test_market_splits(market_root, capsys):
    code, out, _ = run_cli(prepare.main, ["--download_path", market_root], capsys)
    assert code == 0
    out_dir = market_root / "pytorch"
    train_all, train, val = (files_in(out_dir / s) for s in ("train_all", "train", "val"))
    source_train = list_images(market_root / "bounding_box_train")
    assert sum(map(len, train_all.values())) == len(source_train)
    for label, names in train_all.items():
        assert val[label] == [names[0]], "val is the first file of each identity in sorted order"
        assert train[label] == names[1:]
        assert all(parse_image_name(n).label == label for n in names)
    gallery = files_in(out_dir / "gallery")
    assert {"-1", "0000"} <= set(gallery), "the gallery keeps junk and distractor folders"
    assert sum(map(len, gallery.values())) == len(list_images(market_root / "bounding_box_test"))
    assert sum(map(len, files_in(out_dir / "query").values())) == len(list_images(market_root / "query"))
    assert sum(map(len, files_in(out_dir / "multi-query").values())) == len(list_images(market_root / "gt_bbox"))
    row = next(line for line in out.splitlines() if line.startswith("train_all"))
    assert row.split()[1:3] == [str(len(source_train)), str(len(train_all))]
    assert "official Market-1501 counts not compared" in out


def test_duke_wrapper_uses_the_same_code(duke_root, capsys):
    code, out, _ = run_cli(prepare_Duke.main, ["--download_path", duke_root], capsys)
    assert code == 0
    assert sorted(os.listdir(duke_root / "pytorch")) == sorted(
        ["train_all", "train", "val", "query", "gallery", prepare.MANIFEST])
    assert "multi-query" not in out


@pytest.mark.parametrize("link", ["copy", "symlink", "hardlink"])
def test_source_untouched_and_images_readable(market_root, link, capsys):
    before = source_hash(market_root)
    assert run_cli(prepare.main, ["--download_path", market_root, "--link", link], capsys)[0] == 0
    assert source_hash(market_root) == before
    assert sorted(os.listdir(market_root)) == sorted(
        ["bounding_box_train", "bounding_box_test", "query", "gt_bbox", "gt_query", "readme.txt",
         TOY_MANIFEST, "pytorch"]), "nothing but pytorch/ is added under ROOT"
    label = sorted(os.listdir(market_root / "pytorch" / "query"))[0]
    picture = market_root / "pytorch" / "query" / label / os.listdir(market_root / "pytorch" / "query" / label)[0]
    assert os.path.islink(picture) == (link == "symlink")
    with Image.open(picture) as image:
        assert image.size == (128, 256)


def test_second_run_skips_and_force_rebuilds(market_root, capsys):
    assert run_cli(prepare.main, ["--download_path", market_root], capsys)[0] == 0
    marker = market_root / "pytorch" / "train" / "marker.txt"
    marker.write_text("left by the first run")
    code, out, _ = run_cli(prepare.main, ["--download_path", market_root], capsys)
    assert code == 0 and "up to date" in out and marker.exists()
    code, out, _ = run_cli(prepare.main, ["--download_path", market_root, "--force"], capsys)
    assert code == 0 and "rebuilding" in out and not marker.exists()


def test_changed_link_mode_or_foreign_tree_is_rebuilt(market_root, capsys):
    assert run_cli(prepare.main, ["--download_path", market_root], capsys)[0] == 0
    code, out, _ = run_cli(prepare.main, ["--download_path", market_root, "--link", "symlink"], capsys)
    assert code == 0 and "--link changed" in out
    os.remove(market_root / "pytorch" / prepare.MANIFEST)   # as a half-finished older tool leaves it
    code, out, _ = run_cli(prepare.main, ["--download_path", market_root], capsys)
    assert code == 0 and "incomplete" in out
    assert (market_root / "pytorch" / prepare.MANIFEST).exists()


def test_interrupted_run_leaves_no_complete_looking_tree(market_root, monkeypatch, capsys):
    placed = []

    def copy_then_fail(source, target):
        if len(placed) == 20:
            raise KeyboardInterrupt
        placed.append(target)
        shutil.copyfile(source, target)

    monkeypatch.setitem(prepare.LINKERS, "copy", copy_then_fail)
    code, _, err = run_cli(prepare.main, ["--download_path", market_root], capsys)
    assert code == 130 and "interrupted" in err
    assert not (market_root / "pytorch").exists()
    assert not (market_root / prepare.PARTIAL).exists() and not (market_root / prepare.LOCK).exists()
    monkeypatch.undo()
    code, out, _ = run_cli(prepare.main, ["--download_path", market_root], capsys)
    assert code == 0 and not (market_root / prepare.PARTIAL).exists()


def test_leftovers_of_a_killed_run_are_removed_even_when_up_to_date(market_root, capsys):
    """kill -9 during --force leaves .pytorch.partial (and perhaps .pytorch.old): the next run removes them."""
    assert run_cli(prepare.main, ["--download_path", market_root], capsys)[0] == 0
    for leftover in (prepare.PARTIAL, prepare.OLD):
        os.makedirs(market_root / leftover / "train" / "0001")
        (market_root / leftover / "train" / "0001" / "half.jpg").write_bytes(b"half")
    code, out, _ = run_cli(prepare.main, ["--download_path", market_root], capsys)
    assert code == 0 and "already up to date" in out and "left by an interrupted run" in out
    assert not (market_root / prepare.PARTIAL).exists() and not (market_root / prepare.OLD).exists()


HOLD_LOCK = """
import fcntl, os, sys, time
handle = open(sys.argv[1], "a+")
fcntl.flock(handle, fcntl.LOCK_EX)
handle.write(str(os.getpid())); handle.flush()
print("holding", flush=True)
time.sleep(60)
"""


def test_a_second_run_on_the_same_folder_waits_its_turn(market_root, capsys):
    lock = market_root / prepare.LOCK
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(lock)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "holding"
        line = expect_error(prepare.main, ["--download_path", market_root], capsys,
                            f"another run (process {holder.pid}) is writing", "wait for it to finish")
        assert "permission" not in line and not (market_root / "pytorch").exists()
    finally:
        holder.kill()
        holder.wait()
    code, _, err = run_cli(prepare.main, ["--download_path", market_root], capsys)   # the lock died with it
    assert code == 0, err
    assert not lock.exists() and (market_root / "pytorch" / prepare.MANIFEST).exists()


def test_a_stray_file_of_the_other_rule_is_named_not_sent_to_the_other_script(market_root, duke_root, capsys):
    stray = list_images(duke_root / "bounding_box_train")[0]
    shutil.copy(duke_root / "bounding_box_train" / stray, market_root / "bounding_box_train" / stray)
    line = expect_error(prepare.main, ["--download_path", market_root], capsys, "1 file(s)", stray)
    assert "prepare_Duke.py" not in line and "move them out" in line
    expect_error(prepare_Duke.main, ["--download_path", market_root], capsys,
                 "holds Market-1501 file names", "run python prepare.py")


def test_unreadable_picture_names_its_source_and_the_fix_works(market_root, tmp_path, monkeypatch, capsys):
    """The error names bounding_box_train/<file>, not its copy under pytorch/; following the advice
    (replace the source, prepare.py --force) lets training start."""
    import train
    from test_train import FAST

    name = list_images(market_root / "bounding_box_train")[0]
    source = market_root / "bounding_box_train" / name
    good = source.read_bytes()
    source.write_bytes(good[:200])   # cut short, as by a broken unzip
    assert run_cli(prepare.main, ["--download_path", market_root], capsys)[0] == 0
    monkeypatch.chdir(tmp_path)
    argv = ["--data_dir", market_root / "pytorch", "--name", "run", *FAST, "--total_epoch", "1"]
    code, _, err = run_cli(train.main, argv, capsys)
    line = err.strip().splitlines()[-1]
    assert code == 2 and f"cannot read image {source}" in line and "is its copy" in line
    assert f"python prepare.py --download_path {market_root} --force" in line
    source.write_bytes(good)
    assert run_cli(prepare.main, ["--download_path", market_root, "--force"], capsys)[0] == 0
    code, _, err = run_cli(train.main, argv, capsys)
    assert code == 0, err


def test_identity_with_one_picture_stays_in_train(market_root, capsys):
    train_dir = market_root / "bounding_box_train"
    names = list_images(train_dir)
    lonely = parse_image_name(names[0]).label
    for name in names[1:]:
        if parse_image_name(name).label == lonely:
            os.remove(train_dir / name)
    (train_dir / "Thumbs.db").write_bytes(b"windows leaves these")   # ignored, as in the real download
    assert run_cli(prepare.main, ["--download_path", market_root], capsys)[0] == 0
    assert os.listdir(market_root / "pytorch" / "train" / lonely) == [names[0]]
    assert not (market_root / "pytorch" / "val" / lonely).exists()


def test_real_download_is_compared_with_official_counts(market_root, capsys):
    os.remove(market_root / TOY_MANIFEST)
    code, out, _ = run_cli(prepare.main, ["--download_path", market_root], capsys)
    assert code == 0 and "differs from the official Market-1501 counts" in out and "12,936" in out


def expect_error(main, argv, capsys, *fragments):
    code, _, err = run_cli(main, argv, capsys)
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and " — " in lines[0], err
    for fragment in fragments:
        assert fragment in lines[0]
    return lines[0]


def test_missing_root(tmp_path, capsys):
    expect_error(prepare.main, ["--download_path", tmp_path / "nowhere"], capsys, "does not exist", "toy_data.py")


def test_root_is_a_file(tmp_path, capsys):
    (tmp_path / "Market.zip").write_bytes(b"PK")
    expect_error(prepare.main, ["--download_path", tmp_path / "Market.zip"], capsys, "is a file")


def test_missing_folders_are_named(market_root, capsys):
    shutil.rmtree(market_root / "query")
    expect_error(prepare.main, ["--download_path", market_root], capsys, "query/")


def test_one_level_too_high_suggests_the_folder(market_root, capsys):
    expect_error(prepare.main, ["--download_path", market_root.parent], capsys,
                 f"--download_path {market_root}")


def test_wrong_script_for_the_dataset(market_root, duke_root, capsys):
    expect_error(prepare.main, ["--download_path", duke_root], capsys, "DukeMTMC-reID", "prepare_Duke.py")
    expect_error(prepare_Duke.main, ["--download_path", market_root], capsys, "Market-1501", "prepare.py")


def test_bad_names_are_listed(market_root, capsys):
    for name in ("person1.jpg", "person2.jpg", "0002_c1.jpg", "IMG_0001.jpg"):
        (market_root / "query" / name).write_bytes(b"x")
    line = expect_error(prepare.main, ["--download_path", market_root], capsys, "4 file(s)", "naming rule")
    assert "0002_c1.jpg" in line and "..." in line


def test_empty_folder(market_root, capsys):
    shutil.rmtree(market_root / "bounding_box_test")
    (market_root / "bounding_box_test").mkdir()
    expect_error(prepare.main, ["--download_path", market_root], capsys, "holds no images")


def test_command_line_error_has_no_traceback(tmp_path):
    result = subprocess.run([sys.executable, os.path.join(ROOT, "prepare.py"), "--download_path",
                             str(tmp_path / "nowhere")], capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.startswith("error: ") and "Traceback" not in result.stderr
