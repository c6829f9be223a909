"""VIPeR, VehicleID and CUB-200-2011: the toy generator lays each out as published, prepare.py draws the
protocol's splits from --seed, a layout written here by hand from the published description prepares the
same way, and the later stages read each."""
import os
import shutil

import pytest
from PIL import Image

import prepare
from conftest import make_toy, one_error_line, run_cli
from reid.datasets import BENCHMARKS, parse_image_name
from test_datasets import run_later_stages

LAYOUTS = {   # toy --dataset: (prepare.py flags, benchmark key)
    "viper": (["--dataset", "viper"], "viper"),
    "vehicleid": (["--dataset", "vehicleid", "--vehicleid_test", "2400"], "vehicleid-2400"),
    "cub": (["--dataset", "cub"], "cub"),
}


@pytest.fixture(scope="module")
def toy_sources(tmp_path_factory):
    folder = tmp_path_factory.mktemp("drawn")
    return {dataset: make_toy(folder, dataset) for dataset in LAYOUTS}


def prepared(source, dataset, tmp_path, capsys, *extra):
    root = shutil.copytree(source, tmp_path / f"release{len(os.listdir(tmp_path))}")
    code, out, err = run_cli(prepare.main, [*LAYOUTS[dataset][0], "--download_path", root, *extra], capsys)
    assert code == 0, err
    return root / "pytorch", out


def names(output, split):
    """{label: sorted names} of one prepared split."""
    folder = os.path.join(output, split)
    return {label: sorted(os.listdir(os.path.join(folder, label))) for label in sorted(os.listdir(folder))}


@pytest.mark.parametrize("dataset", sorted(LAYOUTS))
def test_each_release_is_prepared_by_its_protocol(dataset, toy_sources, tmp_path, capsys):
    output, out = prepared(toy_sources[dataset], dataset, tmp_path, capsys)
    benchmark = BENCHMARKS[LAYOUTS[dataset][1]]
    splits = {split: names(output, split) for split in ("train_all", "query", "gallery")}
    parsed = {split: [benchmark.parse(n) for files in labels.values() for n in files] for split, labels in splits.items()}
    assert all(p.label in splits[split] for split, found in parsed.items() for p in found)
    assert not set(splits["train_all"]) & (set(splits["query"]) | set(splits["gallery"])), "identities leak"
    if dataset == "viper":   # a half of the people; their other half: cam_a asks, cam_b answers, one each
        people = len(splits["train_all"]) + len(splits["query"])
        assert len(splits["train_all"]) == people // 2 and len(splits["query"]) == len(splits["gallery"])
        assert {p.camid for p in parsed["query"]} == {1} and {p.camid for p in parsed["gallery"]} == {2}
        assert all(len(files) == 1 for files in splits["query"].values())
    if dataset == "vehicleid":   # one gallery picture of each test vehicle, the others its queries
        assert all(len(files) == 1 for files in splits["gallery"].values())
        assert set(splits["query"]) <= set(splits["gallery"]) and len(parsed["query"]) > len(parsed["gallery"])
    if dataset == "cub":   # classes 1-100 train; every test picture is a query and in the gallery, its own camera
        assert max(map(int, splits["train_all"])) <= 100 < min(map(int, splits["query"]))
        assert splits["query"] == splits["gallery"]
        assert len({p.camid for p in parsed["query"]}) == len(parsed["query"])
    assert "official" not in out.splitlines()[0]   # a toy set is not compared with the published counts


@pytest.mark.parametrize("dataset", ["viper", "vehicleid"])
def test_the_seed_draws_the_split_and_repeats_it(dataset, toy_sources, tmp_path, capsys):
    split = "train_all" if dataset == "viper" else "gallery"
    drawn = [names(prepared(toy_sources[dataset], dataset, tmp_path, capsys, "--seed", seed)[0], split)
             for seed in ("0", "0", "1")]
    assert drawn[0] == drawn[1] and drawn[0] != drawn[2]


def picture(path, colour=(90, 120, 150), size=(48, 128)):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.new("RGB", size, colour).save(path)


def test_a_viper_layout_written_from_its_description(tmp_path, capsys):
    """VIPeR.v1.0: cam_a/ and cam_b/, one 48x128 BMP of each person in each, named person_angle.bmp."""
    for person, angles in ((0, (0, 90)), (7, (45, 180)), (12, (90, 90)), (631, (135, 0))):
        picture(tmp_path / "VIPeR" / "cam_a" / f"{person:03d}_{angles[0]}.bmp")
        picture(tmp_path / "VIPeR" / "cam_b" / f"{person:03d}_{angles[1]}.bmp")
    code, out, err = run_cli(prepare.main, ["--dataset", "viper", "--download_path", tmp_path / "VIPeR"], capsys)
    assert code == 0, err
    output = tmp_path / "VIPeR" / "pytorch"
    assert sum(map(len, names(output, "train_all").values())) == 4 and len(names(output, "query")) == 2
    assert "632/     316" in out and "warning: differs from the official VIPeR counts" in out
    assert all("_c1_" in n for files in names(output, "query").values() for n in files)
    assert all("_c2_" in n for files in names(output, "gallery").values() for n in files)
    assert "0631_c2_000.bmp" in sum([*names(output, "gallery").values(), *names(output, "train_all").values()], [])


def test_a_vehicleid_layout_written_from_its_description(tmp_path, capsys):
    """VehicleID_V1.0: image/NNNNNNN.jpg; train_test_split/train_list.txt and test_list_800.txt, lines 'image vehicle'."""
    root = tmp_path / "VehicleID_V1.0"
    lists = {"train_list.txt": [("0000001", 1), ("0000002", 1), ("0000005", 2), ("0000009", 2)],
             "test_list_800.txt": [("0000010", 26000), ("0000011", 26000), ("0000012", 26000), ("0000020", 3)]}
    for name, lines in lists.items():
        os.makedirs(root / "train_test_split", exist_ok=True)
        (root / "train_test_split" / name).write_text("".join(f"{image} {vehicle}\n" for image, vehicle in lines))
        for image, _ in lines:
            picture(root / "image" / f"{image}.jpg")
    code, out, err = run_cli(prepare.main, ["--dataset", "vehicleid", "--download_path", root], capsys)
    assert code == 0, err
    gallery, query = names(root / "pytorch", "gallery"), names(root / "pytorch", "query")
    assert {label: len(files) for label, files in gallery.items()} == {"00003": 1, "26000": 1}
    assert {label: len(files) for label, files in query.items()} == {"26000": 2}   # vehicle 3's one picture answers none
    assert all(parse_image_name(n).camid == 2 for n in gallery["26000"]) and "113,346/   13164" in out


def test_a_cub_layout_written_from_its_description(tmp_path, capsys):
    """CUB_200_2011: images/NNN.Name/*.jpg listed in images.txt as 'id path'; classes 1-100 train, 101-200 test."""
    root = tmp_path / "CUB_200_2011"
    listed = ["001.Black_footed_Albatross/Black_Footed_Albatross_0001_796111.jpg",
              "001.Black_footed_Albatross/Black_Footed_Albatross_0002_55.jpg",
              "100.Brown_Pelican/Brown_Pelican_0001_94463.jpg", "100.Brown_Pelican/Brown_Pelican_0003_9.jpg",
              "101.White_Pelican/White_Pelican_0012_97.jpg", "101.White_Pelican/White_Pelican_0025_97604.jpg",
              "200.Common_Yellowthroat/Common_Yellowthroat_0003_190521.jpg",
              "200.Common_Yellowthroat/Common_Yellowthroat_0004_1.jpg"]
    for path in listed:
        picture(root / "images" / path, size=(300, 200))
    (root / "images.txt").write_text("".join(f"{n} {path}\n" for n, path in enumerate(listed, 5)))
    code, out, err = run_cli(prepare.main, ["--dataset", "cub", "--download_path", root], capsys)
    assert code == 0, err
    assert set(names(root / "pytorch", "train_all")) == {"0001", "0100"}
    assert names(root / "pytorch", "query") == names(root / "pytorch", "gallery") == {
        "0101": ["0101_i00009.jpg", "0101_i00010.jpg"], "0200": ["0200_i00011.jpg", "0200_i00012.jpg"]}


@pytest.mark.parametrize("dataset, broken, fragment", [
    ("viper", "cam_b", "cam_b/"),
    ("vehicleid", "image", "does not exist"),
    ("cub", "images.txt", "images.txt line 1"),
])
def test_a_broken_release_is_one_line_and_writes_nothing(dataset, broken, fragment, toy_sources, tmp_path, capsys):
    root = shutil.copytree(toy_sources[dataset], tmp_path / "release")
    path = root / broken
    if broken == "images.txt":
        path.write_text("1 not-a-class/picture.jpg\n" + path.read_text())
    elif broken == "image":
        os.remove(path / sorted(os.listdir(path))[0])
    else:
        shutil.rmtree(path)
    code, _, err = run_cli(prepare.main, [*LAYOUTS[dataset][0], "--download_path", root], capsys)
    assert code == 2 and fragment in one_error_line(err) and not (root / "pytorch").exists()


@pytest.mark.parametrize("dataset", sorted(LAYOUTS))
def test_the_later_stages_read_each(dataset, toy_sources, trained_workdir, tmp_path, monkeypatch, capsys):
    test_dir, _ = prepared(toy_sources[dataset], dataset, tmp_path, capsys)
    rerank = ["--rerank", "gnn"] if dataset == "cub" else []   # CUB's test set is large enough for k1 26
    page = run_later_stages(test_dir, trained_workdir, tmp_path, monkeypatch, capsys, rerank)
    assert ("too many for a table" in page) == (dataset == "cub")
