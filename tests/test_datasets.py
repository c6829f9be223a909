"""MSMT17, CUHK03-NP and VeRi-776 on generated data: the toy generator lays each release out as it is
published, prepare.py --dataset reads it through the dataset table (names, cameras, splits, counts, no
identity of training in the test splits), and bad input is one line that leaves the source untouched."""
import os
import shutil

import pytest

import prepare
from conftest import SMALL, make_toy, one_error_line, run_cli, snapshot
from reid.datasets import BENCHMARKS, parse_image_name

LAYOUTS = {   # toy --dataset, prepare.py flags, the release folder under the toy's root, its benchmark
    "msmt17": ("msmt17", ["--dataset", "msmt17"], "", "msmt17"),
    "cuhk03-labeled": ("cuhk03", ["--dataset", "cuhk03"], "labeled", "cuhk03-labeled"),
    "cuhk03-detected": ("cuhk03", ["--dataset", "cuhk03", "--cuhk03_kind", "detected"], "detected", "cuhk03-detected"),
    "veri": ("veri", ["--dataset", "veri"], "", "veri"),
}


@pytest.fixture(scope="module")
def toy_sources(tmp_path_factory):
    """One small toy set per release (MSMT17 with enough identities to walk past >= 10 cameras)."""
    folder = tmp_path_factory.mktemp("releases")
    extra = {"msmt17": ["--train_ids", "12", "--test_ids", "12"]}
    return {dataset: make_toy(folder, dataset, *extra.get(dataset, [])) for dataset in ("msmt17", "cuhk03", "veri")}


def source_files(root):
    """Size and modification time of every file of the release (pytorch/ is prepare.py's own)."""
    return {path: state for path, state in snapshot(root).items()
            if "pytorch" not in path.split(os.sep) and os.path.isfile(os.path.join(root, path))}


def split_files(output, split):
    """{label: names} of one prepared split."""
    return {label: sorted(os.listdir(os.path.join(output, split, label))) for label in os.listdir(os.path.join(output, split))}


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_each_release_is_prepared_with_its_names_cameras_and_splits(layout, toy_sources, tmp_path, capsys):
    toy, flags, subfolder, key = LAYOUTS[layout]
    root = shutil.copytree(toy_sources[toy], tmp_path / "release")
    before = source_files(root)
    code, out, err = run_cli(prepare.main, [*flags, "--download_path", root], capsys)
    assert code == 0, err
    output = os.path.join(root, subfolder, "pytorch")
    benchmark = BENCHMARKS[key]
    splits = {split: split_files(output, split) for split in ("train_all", "train", "val", "query", "gallery")}
    for split, labels in splits.items():
        for label, names in labels.items():
            parsed = [benchmark.parse(name) for name in names]   # the release's own rule, strictly
            assert {p.label for p in parsed} == {label}, (split, label)
            assert all(1 <= p.camid <= benchmark.cameras for p in parsed)
    assert not set(splits["train_all"]) & (set(splits["query"]) | set(splits["gallery"])), "identities leak"
    assert set(splits["query"]) <= set(splits["gallery"])
    counted = {line.split()[0]: int(line.split()[1]) for line in out.splitlines()[1:6]}
    assert counted == {split: sum(map(len, labels.values())) for split, labels in splits.items()}
    cameras = {parse_image_name(n).camid for labels in splits.values() for names in labels.values() for n in names}
    assert len(cameras) >= (10 if key == "msmt17" else 2)
    assert source_files(root) == before   # the release itself is never modified


def test_veri_test_pictures_never_enter_training(toy_sources, tmp_path, capsys):
    root = shutil.copytree(toy_sources["veri"], tmp_path / "VeRi")
    assert run_cli(prepare.main, ["--dataset", "veri", "--download_path", root], capsys)[0] == 0
    trained = {n for names in split_files(root / "pytorch", "train_all").values() for n in names}
    assert trained == set(os.listdir(root / "image_train"))
    assert not trained & (set(os.listdir(root / "image_test")) | set(os.listdir(root / "image_query")))


def test_msmt17_reads_its_lists_in_either_release_layout(toy_sources, tmp_path, capsys):
    root = shutil.copytree(toy_sources["msmt17"], tmp_path / "MSMT17_V2")
    os.rename(root / "train", root / "mask_train_v2")
    os.rename(root / "test", root / "mask_test_v2")
    code, out, err = run_cli(prepare.main, ["--dataset", "msmt17", "--download_path", root], capsys)
    assert code == 0, err
    listed = sum(1 for name in ("list_train.txt", "list_val.txt") for _ in open(root / name))
    assert sum(map(len, split_files(root / "pytorch", "train_all").values())) == listed
    assert os.path.getsize(root / "list_val.txt") > 0   # val pictures are training pictures too


def test_a_list_file_that_is_not_utf8_is_one_line_and_writes_nothing(toy_sources, tmp_path, capsys):
    root = shutil.copytree(toy_sources["msmt17"], tmp_path / "MSMT17_V1")
    with open(root / "list_gallery.txt", "ab") as handle:
        handle.write(b"caf\xe9.jpg 3\n")   # a Latin-1 byte, as an edit in another editor may leave
    before = snapshot(root)
    code, _, err = run_cli(prepare.main, ["--dataset", "msmt17", "--download_path", root], capsys)
    assert code == 2 and "list_gallery.txt is not UTF-8 text" in one_error_line(err)
    assert snapshot(root) == before


def test_a_list_naming_a_missing_picture_is_one_line_and_writes_nothing(toy_sources, tmp_path, capsys):
    root = shutil.copytree(toy_sources["msmt17"], tmp_path / "MSMT17_V1")
    first = open(root / "list_query.txt").readline().split()[0]
    os.remove(root / "test" / first)
    before = snapshot(root)
    code, _, err = run_cli(prepare.main, ["--dataset", "msmt17", "--download_path", root], capsys)
    assert code == 2 and "list_query.txt line 1 names" in one_error_line(err) and "does not exist" in err
    assert snapshot(root) == before


@pytest.mark.parametrize("dataset", ["msmt17", "veri", "cuhk03"])
def test_another_release_on_a_market_folder_is_one_line(market_root, dataset, capsys):
    before = snapshot(market_root)
    code, _, err = run_cli(prepare.main, ["--dataset", dataset, "--download_path", market_root], capsys)
    line = one_error_line(err)
    assert code == 2 and ("is laid out like Market-1501 or DukeMTMC-reID" in line or "has no" in line), line
    assert snapshot(market_root) == before


def test_a_real_download_is_compared_with_the_published_counts(toy_sources, tmp_path, capsys):
    root = shutil.copytree(toy_sources["veri"], tmp_path / "VeRi")
    os.remove(root / "toy_dataset.json")   # now it looks like a (very incomplete) real download
    code, out, _ = run_cli(prepare.main, ["--dataset", "veri", "--download_path", root], capsys)
    assert code == 0 and "official" in out.splitlines()[0] and "37,778/     576" in out
    assert "warning: differs from the official VeRi-776 counts" in out


def test_toy_releases_follow_their_published_layouts(toy_sources):
    msmt, cuhk, veri = (toy_sources[name] for name in ("msmt17", "cuhk03", "veri"))
    assert {"train", "test", "list_train.txt", "list_val.txt", "list_query.txt", "list_gallery.txt"} <= set(os.listdir(msmt))
    assert all(os.path.isdir(os.path.join(msmt, "train", label)) for label in os.listdir(os.path.join(msmt, "train")))
    for kind in ("labeled", "detected"):
        names = os.listdir(os.path.join(cuhk, kind, "bounding_box_train"))
        assert names and all(name.endswith(".png") for name in names)
    assert {"image_train", "image_query", "image_test"} <= set(os.listdir(veri))
    assert len(SMALL) > 0   # the other releases use the suite's small sizes


def run_later_stages(test_dir, workdir, tmp_path, monkeypatch, capsys, demo_flags=()):
    """test.py, evaluate_gpu.py, demo.py (``demo_flags`` added) and the report on a prepared ``test_dir``, with the
    trained toy run in ``workdir``; each must succeed. Returns the report's page."""
    import demo
    import evaluate_gpu
    import test as stage4

    monkeypatch.chdir(workdir)
    result = tmp_path / "result.mat"
    code, out, err = run_cli(stage4.main, ["--gpu_ids", "-1", "--name", "toy", "--test_dir", test_dir, "--num_workers",
                                           "0", "--output", result], capsys)
    assert code == 0 and "without a correct match:0" in out, err
    assert run_cli(evaluate_gpu.main, ["--gpu_ids", "-1", "--mat", result], capsys)[0] == 0
    code, _, err = run_cli(demo.main, ["--query_index", "0", "--test_dir", test_dir, "--mat", result,
                                       "--out", tmp_path / "show.png", *demo_flags], capsys)
    assert code == 0 and (tmp_path / "show.png").stat().st_size > 0, err
    code, _, err = run_cli(demo.main, ["--report", "--test_dir", test_dir, "--mat", result, "--out", tmp_path / "report"],
                           capsys)
    assert code == 0 and (tmp_path / "report" / "index.html").exists(), err
    return (tmp_path / "report" / "index.html").read_text()


@pytest.mark.parametrize("layout", ["msmt17", "cuhk03-detected", "veri"])
def test_the_later_stages_read_every_release(layout, toy_sources, trained_workdir, tmp_path, monkeypatch, capsys):
    toy, flags, subfolder, _ = LAYOUTS[layout]
    root = shutil.copytree(toy_sources[toy], tmp_path / "release")
    run_cli(prepare.main, [*flags, "--download_path", root], capsys)
    run_later_stages(os.path.join(root, subfolder, "pytorch"), trained_workdir, tmp_path, monkeypatch, capsys)
