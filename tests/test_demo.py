"""demo.py and report.py: the picture's colours, the range error, own-photo search, the report."""
import os
import re
import shutil
import subprocess

import numpy as np
import pytest
from PIL import Image

import demo
import prepare
from reid import datasets, features, pictures
from reid.metrics import evaluate
from conftest import run_cli

# query: person 1, camera 1; gallery rows (pid, camera, cosine with the query)
GALLERY = [(1, 1, 0.95),   # junk: same person, same camera -> skipped
           (2, 2, 0.90),   # wrong
           (1, 2, 0.80),   # correct
           (-1, 3, 0.70),  # junk detection -> skipped
           (0, 4, 0.60),   # distractor: wrong
           (1, 3, 0.50)]   # correct
CRAFTED = '0001_c1s1_000001_00<img src=x onerror=alert(1)>.png'


def unit_rows_with_scores(scores):
    rows = np.zeros((len(scores), len(scores) + 1))
    rows[:, 0] = scores
    rows[np.arange(len(scores)), np.arange(1, len(scores) + 1)] = np.sqrt(1 - np.asarray(scores) ** 2)
    return rows.astype(np.float32)


@pytest.fixture
def constructed(tmp_path):
    """A test_dir tree and a matching .mat whose ranking is known in advance."""
    test_dir = tmp_path / "pytorch"
    rng = np.random.default_rng(0)

    def picture(split, label, name):
        os.makedirs(test_dir / split / label, exist_ok=True)
        pixels = rng.integers(0, 255, size=(256, 128, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(test_dir / split / label / name)

    picture("query", "0001", CRAFTED)   # a crafted name: the report must escape it
    names = []
    for index, (pid, cam, _) in enumerate(GALLERY):
        label = "-1" if pid == -1 else f"{pid:04d}"
        names.append((label, f"{label}_c{cam}s1_{index:06d}_01.png"))
    for label, name in names:
        picture("gallery", label, name)
    order = sorted(range(len(names)), key=lambda i: names[i])      # ImageFolder's order
    g_feats = unit_rows_with_scores([GALLERY[i][2] for i in order])
    q_feats = np.zeros((1, g_feats.shape[1]), np.float32)
    q_feats[0, 0] = 1
    features.save_features(str(tmp_path / "result.mat"), {
        "query_f": q_feats, "query_label": [1], "query_cam": [1], "gallery_f": g_feats,
        "gallery_label": [GALLERY[i][0] for i in order], "gallery_cam": [GALLERY[i][1] for i in order]},
        {"model_name": "constructed", "which_epoch": "last", "created": "now", "run_id": "x"})
    return test_dir, tmp_path / "result.mat"


def test_picture_colours_follow_the_labels(constructed, tmp_path, capsys):
    test_dir, mat = constructed
    out = tmp_path / "show.png"
    code, printed, err = run_cli(demo.main, ["--query_index", "0", "--test_dir", test_dir, "--mat", mat,
                                             "--out", out], capsys)
    assert code == 0, err
    result = demo.load_run(demo.build_parser().parse_args(["--test_dir", str(test_dir), "--mat", str(mat)]))
    _, boxes, _ = pictures.query_strip(result, 0, topk=10)
    assert [status for _, status in boxes] == ["query", "wrong", "correct", "wrong", "correct"]   # junk skipped
    assert "AP 0.333" in printed and "first correct match at rank 2" in printed
    with Image.open(out) as picture:
        pixels = picture.convert("RGB")
        for (left, top, right, bottom), status in boxes:
            assert pixels.getpixel((left + 1, (top + bottom) // 2)) == pictures.COLOURS[status]
            assert pixels.getpixel(((left + right) // 2, top + 1)) == pictures.COLOURS[status]


def test_query_index_out_of_range(constructed, capsys):
    test_dir, mat = constructed
    code, _, err = run_cli(demo.main, ["--query_index", "5", "--test_dir", test_dir, "--mat", mat], capsys)
    assert code == 2 and err.strip() == ("error: --query_index 5 is outside this test run's queries "
                                         "— pass a number from 0 to 0")


def test_test_dir_must_match_the_mat(constructed, tmp_path, capsys):
    test_dir, mat = constructed
    os.remove(sorted((test_dir / "gallery" / "0001").iterdir())[0])
    code, _, err = run_cli(demo.main, ["--test_dir", test_dir, "--mat", mat], capsys)
    assert code == 2 and "5 pictures but the .mat has 6" in err
    os.remove(next((test_dir / "gallery" / "0002").iterdir()))    # an identity folder left empty
    code, _, err = run_cli(demo.main, ["--test_dir", test_dir, "--mat", mat], capsys)
    assert code == 2 and err.startswith("error: ") and "prepare.py --force" in err and len(err.splitlines()) == 1


def test_own_photo_search_finds_the_copied_picture(trained_workdir, prepared_market, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(trained_workdir)
    crops = tmp_path / "crops"
    os.makedirs(crops)
    for folder, _, files in os.walk(prepared_market / "gallery"):
        for name in files:
            shutil.copy(os.path.join(folder, name), crops / name)
    chosen = sorted(os.listdir(crops))[len(os.listdir(crops)) // 2]
    shutil.copy(crops / chosen, tmp_path / "me.jpg")
    code, printed, err = run_cli(demo.main, ["--name", "toy", "--query_image", tmp_path / "me.jpg",
                                             "--gallery_dir", crops, "--topk", "3", "--out", tmp_path / "me.png"],
                                 capsys)
    assert code == 0, err
    first = printed.splitlines()[0].split()
    assert first[0] == "1" and first[-1].endswith(chosen) and float(first[1]) == pytest.approx(1, abs=1e-4)
    assert datasets.parse_image_name(first[-1]).pid == datasets.parse_image_name(chosen).pid
    assert os.path.getsize(tmp_path / "me.png") > 0


def test_own_photo_search_on_the_prepared_gallery_as_the_docs_write_it(trained_workdir, prepared_market,
                                                                     tmp_path, monkeypatch, capsys):
    """--gallery_dir ROOT/pytorch/gallery (one folder per person) works; the default picture is search.png,
    so a show.png from an earlier query is not overwritten."""
    monkeypatch.chdir(tmp_path)
    shutil.copytree(trained_workdir / "model", tmp_path / "model")
    (tmp_path / "show.png").write_bytes(b"an earlier ranking")
    query = sorted((prepared_market / "query").glob("*/*.jpg"))[0]
    code, printed, err = run_cli(demo.main, ["--name", "toy", "--gallery_dir", prepared_market / "gallery",
                                             "--query_image", query, "--topk", "5"], capsys)
    assert code == 0, err
    assert (tmp_path / "search.png").stat().st_size > 1000 and (tmp_path / "show.png").read_bytes() == b"an earlier ranking"
    ranked = [line.split()[-1] for line in printed.splitlines() if line.strip()[:1].isdigit()]
    assert len(ranked) == 5 and all("/gallery/" in path for path in ranked)


def test_own_photo_search_above_a_prepared_tree_ranks_each_picture_once(trained_workdir, market_root, tmp_path,
                                                                           monkeypatch, capsys):
    """--gallery_dir ROOT (a release with its prepared pytorch/ inside) would rank every picture twice, once as
    itself and once as prepare.py's copy: the copy is left out, with a note."""
    monkeypatch.chdir(trained_workdir)
    prepare.main(["--download_path", str(market_root)])
    query = sorted((market_root / "query").glob("*.jpg"))[0]
    code, printed, err = run_cli(demo.main, ["--name", "toy", "--gallery_dir", market_root, "--query_image", query,
                                             "--topk", "400", "--out", tmp_path / "s.png"], capsys)
    assert code == 0, err
    ranked = [line.split()[-1] for line in printed.splitlines() if line.strip()[:1].isdigit()]
    assert "note: left out" in printed and not [path for path in ranked if "/pytorch/" in path]
    outside = [name for top, _, names in os.walk(market_root) if "pytorch" not in top for name in names
               if name.endswith(".jpg")]
    assert len(ranked) == len(outside) - 1   # every picture of the release once, the query itself left out


def test_report_numbers_equal_the_evaluation_and_names_are_escaped(constructed, tmp_path, capsys):
    test_dir, mat = constructed
    code, _, err = run_cli(demo.main, ["--report", "--test_dir", test_dir, "--mat", mat, "--out", tmp_path / "rep"],
                           capsys)
    assert code == 0, err
    page = (tmp_path / "rep" / "index.html").read_text()
    result = features.load_features(str(mat))
    metrics = evaluate(result["query_f"], result["query_label"], result["query_cam"],
                                    result["gallery_f"], result["gallery_label"], result["gallery_cam"])
    for name, value in (("Rank@1", metrics.rank(1)), ("Rank@5", metrics.rank(5)), ("mAP", metrics.mAP),
                        ("mINP", metrics.mINP)):
        shown = re.search(rf'<td id="{name}">([0-9.]+)</td>', page).group(1)
        assert float(shown) == pytest.approx(value, abs=1e-6)
    assert "<img src=x onerror" not in page and "&lt;img src=x onerror=alert(1)&gt;" in page
    assert page.count("<script>") == 1
    for picture in ("cmc.png", "ap.png", "worst_0.png"):
        assert (tmp_path / "rep" / picture).stat().st_size > 1000


BROWSER = shutil.which("chromium") or shutil.which("chromium-browser")
HEADLESS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@pytest.mark.skipif(BROWSER is None, reason="no chromium on this machine (apt-get install chromium)")
def test_report_in_a_real_browser(constructed, tmp_path, capsys):
    test_dir, mat = constructed
    assert run_cli(demo.main, ["--report", "--test_dir", test_dir, "--mat", mat, "--out", tmp_path / "rep"],
                   capsys)[0] == 0
    url = (tmp_path / "rep" / "index.html").as_uri()
    common = [BROWSER, *HEADLESS, f"--user-data-dir={tmp_path / 'profile'}"]
    dom = subprocess.run([*common, "--dump-dom", url], capture_output=True, text=True, timeout=120).stdout
    body = re.search(r"<body[^>]*>", dom).group(0)
    assert 'data-ready="yes"' in body and "data-errors" not in body, body   # the script ran, nothing threw
    subprocess.run([*common, "--window-size=1200,1600", f"--screenshot={tmp_path / 'shot.png'}", url],
                   capture_output=True, timeout=120, check=True)
    with Image.open(tmp_path / "shot.png") as shot:
        colours = shot.convert("RGB").getcolors(maxcolors=1 << 20)
    assert colours is None or len(colours) > 50, "the screenshot is blank"
