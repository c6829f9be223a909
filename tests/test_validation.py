"""Validation on unseen identities: prepare.py --val_ids, train.py's per-epoch retrieval scores,
net_best.pth, threshold.yaml, and the threshold's use in demo.py and the report."""
import csv
import os
import re
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from sklearn.metrics import roc_curve

import demo
import evaluate_gpu
import model
import prepare
import test as stage4
import train
import utils
from conftest import ROOT, list_images, make_toy, run_cli
from reid import extraction, runs, validation, verification
from reid.datasets import parse_image_name
from test_prepare import source_hash
from test_train import FAST

sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
import reference  # noqa: E402


def identities(folder):
    return set(os.listdir(folder)) if os.path.isdir(folder) else set()


@pytest.fixture(scope="module")
def held_out_market(tmp_path_factory):
    """The small toy Market with 14 training identities, 6 of them held out: enough different-person
    pairs (over 100) to choose a threshold for a false-positive rate of 1 %."""
    root = Path(make_toy(tmp_path_factory.mktemp("val"), "market", "--train_ids", "14"))
    prepare.main(["--download_path", str(root), "--val_ids", "6", "--seed", "0"])
    return root / "pytorch"


def test_held_out_identities_leave_every_training_split(held_out_market):
    held = identities(held_out_market / "val_query")
    assert len(held) == 6 and identities(held_out_market / "val_gallery") == held
    for split in ("train_all", "train", "val"):
        assert not held & identities(held_out_market / split), split
    everyone = identities(held_out_market / "train_all") | held
    assert len(everyone) == 14   # the toy's training identities: nothing lost, only moved
    gallery = [parse_image_name(p) for p in list_images(held_out_market / "val_gallery")]
    for query in map(parse_image_name, list_images(held_out_market / "val_query")):   # each one answerable
        assert any(g.pid == query.pid and g.camid != query.camid for g in gallery), query.filename


def test_the_seed_decides_which_identities(market_root, capsys):
    chosen = []
    for seed in range(4):
        assert run_cli(prepare.main, ["--download_path", market_root, "--val_ids", "2", "--seed", seed], capsys)[0] == 0
        chosen.append(frozenset(identities(market_root / "pytorch" / "val_query")))
    before = source_hash(market_root)
    assert run_cli(prepare.main, ["--download_path", market_root, "--val_ids", "2", "--seed", 0], capsys)[0] == 0
    assert frozenset(identities(market_root / "pytorch" / "val_query")) == chosen[0]   # same seed, same people
    assert len(set(chosen)) > 1 and source_hash(market_root) == before
    code, _, err = run_cli(prepare.main, ["--download_path", market_root, "--val_ids", "5"], capsys)
    assert code == 2 and err.startswith("error: --val_ids 5 asks to hold out 5") and "between 1 and 4" in err


@pytest.fixture(scope="module")
def validated_run(held_out_market, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("work")
    previous = os.getcwd()
    os.chdir(workdir)
    try:
        train.main(["--data_dir", str(held_out_market), "--name", "v", *FAST, "--total_epoch", "3", "--seed", "1",
                    "--target_fpr", "0.01"])   # about 260 different-person pairs: enough for 1e-2, not 1e-3
    finally:
        os.chdir(previous)
    return workdir, workdir / "model" / "v"


def held_out_features(run_dir, data_dir, which):
    net, options = model.load_trained(str(run_dir), which, torch.device("cpu"))
    size = model.get_backbone(options["backbone"]).input_size
    out = []
    for split in ("val_query", "val_gallery"):
        pictures, pids, cams = extraction.split_pictures(str(data_dir), split, size)
        out += [extraction.extract_features(net, pictures, torch.device("cpu"), 8).numpy(), np.array(pids), np.array(cams)]
    return out


def layumi_scores(q_f, q_p, q_c, g_f, g_p, g_c):
    """The per-query loop's (Rank@1, mAP), ranking by the same float32 product as training's evaluation
    (a short toy run's features are nearly parallel: a differently rounded product would reorder ties)."""
    scores = (torch.from_numpy(q_f) @ torch.from_numpy(g_f).T).numpy()
    cmc, mAP = reference.layumi_style(q_f, q_p, q_c, g_f, g_p, g_c, scores=scores)
    return cmc[0], mAP


def test_each_epoch_reports_the_unseen_retrieval_score(validated_run, held_out_market):
    _, run_dir = validated_run
    with open(run_dir / "summary.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 3 and {"unseen_rank1", "unseen_mAP", "unseen_threshold", "val_acc"} <= set(rows[0])
    rank1, mAP = layumi_scores(*held_out_features(run_dir, held_out_market, "last"))   # not our evaluate
    assert float(rows[-1]["unseen_rank1"]) == pytest.approx(rank1) and float(rows[-1]["unseen_mAP"]) == pytest.approx(mAP)
    assert (run_dir / "train.jpg").stat().st_size > 1000


def test_best_checkpoint_is_the_epoch_with_the_highest_unseen_map(validated_run, held_out_market, tmp_path, monkeypatch):
    workdir, run_dir = validated_run
    with open(run_dir / "summary.csv") as handle:
        scores = [float(row["unseen_mAP"]) for row in csv.DictReader(handle)]
    _, mAP = layumi_scores(*held_out_features(run_dir, held_out_market, "best"))
    assert mAP == pytest.approx(max(scores))   # net_best.pth scores what the best epoch scored
    best, last = (torch.load(run_dir / f"net_{k}.pth", weights_only=True) for k in ("best", "last"))
    same = all(torch.equal(best[k], last[k]) for k in best)
    assert same == (int(np.argmax(scores)) == len(scores) - 1)
    monkeypatch.chdir(workdir)
    out = stage4.main(["--gpu_ids", "-1", "--name", "v", "--test_dir", str(held_out_market), "--which_epoch", "best",
                       "--output", str(tmp_path / "best.mat")])
    assert os.path.isfile(out)


def test_threshold_is_chosen_on_the_held_out_pairs(validated_run, held_out_market):
    _, run_dir = validated_run
    with open(run_dir / validation.THRESHOLDS) as handle:
        saved = yaml.safe_load(handle)
    assert saved["target_fpr"] == 0.01 and set(saved["checkpoints"]) == {"last", "best"}
    q_f, q_p, q_c, g_f, g_p, g_c = held_out_features(run_dir, held_out_market, "last")
    same = (q_p[:, None] == g_p[None, :]) & (q_c[:, None] != g_c[None, :])
    different = q_p[:, None] != g_p[None, :]
    scores = q_f @ g_f.T
    labels, values = np.r_[np.ones(same.sum()), np.zeros(different.sum())], np.r_[scores[same], scores[different]]
    entry = saved["checkpoints"]["last"]
    # the threshold's rates, recomputed at its value
    accepted = values >= entry["threshold"]
    assert different.sum() >= 100 and entry["fpr"] <= 0.01
    assert accepted[labels == 0].mean() == pytest.approx(entry["fpr"])
    assert accepted[labels == 1].mean() == pytest.approx(entry["tpr"])
    # and the best threshold a bin edge can be: scikit-learn's ROC of the scores rounded down to their bin's
    # edge (a few epochs on the toy can leave pairs closer together than one bin, 2 / verification.BINS)
    edges = verification.threshold(verification.score_bins(torch.as_tensor(values)).numpy())
    fpr, tpr, _ = roc_curve(labels, edges, drop_intermediate=False)
    assert entry["tpr"] == pytest.approx(tpr[fpr <= 0.01].max())


def test_read_threshold_finds_each_checkpoint(tmp_path):
    history = [{"epoch": e, "unseen_mAP": m, "unseen_rank1": m, "unseen_threshold": t, "unseen_tpr": 0.5,
                "unseen_fpr": 0.01, "unseen_pairs": 500} for e, m, t in ((9, 0.2, 0.6), (10, 0.4, 0.5), (11, 0.3, 0.7))]
    validation.write_thresholds(str(tmp_path), history, 0.01)
    assert validation.read_threshold(str(tmp_path), "last")["threshold"] == 0.7
    assert validation.read_threshold(str(tmp_path), "best")["epoch"] == 10
    assert validation.read_threshold(str(tmp_path), "10")["threshold"] == 0.5 == \
        validation.read_threshold(str(tmp_path), "010")["threshold"]
    assert validation.read_threshold(str(tmp_path), "20") is None
    assert validation.read_threshold(str(tmp_path / "elsewhere"), "last") is None


@pytest.mark.parametrize("edit, fragment", [
    (("threshold", "'0.7'"), "checkpoints.last.threshold is '0.7', not a threshold on cosine"),
    (("threshold", "70"), "checkpoints.last.threshold is 70, not a threshold"),
    (("threshold", "true"), "is True, not a threshold"),
    (("target_fpr", "1e-3x"), "target_fpr is '1e-3x', not a rate per pair"),
])
def test_a_hand_edited_threshold_is_one_line_not_a_silent_nobody(edit, fragment, tmp_path):
    history = [{"epoch": 1, "unseen_mAP": 0.4, "unseen_rank1": 0.4, "unseen_threshold": 0.6, "unseen_tpr": 0.5,
                "unseen_fpr": 0.01, "unseen_pairs": 500}]
    validation.write_thresholds(str(tmp_path), history, 0.01)
    path = tmp_path / validation.THRESHOLDS
    key, value = edit
    path.write_text(re.sub(rf"^(\s*{key}): .*$", rf"\1: {value}", path.read_text(), flags=re.M))
    with pytest.raises(utils.UserError) as caught:
        validation.read_threshold(str(tmp_path), "last")
    assert fragment in caught.value.what and "delete threshold.yaml" in caught.value.fix
    path.write_text("checkpoints: [1, 2]\n")   # not a mapping of checkpoints: no threshold, not a crash
    assert validation.read_threshold(str(tmp_path), "last") is None


def write_threshold(run_dir, value):
    with open(run_dir / validation.THRESHOLDS, "w") as handle:
        yaml.safe_dump({"target_fpr": 0.01, "checkpoints": {"last": {"epoch": 3, "threshold": value}}}, handle)


def test_own_photo_search_says_no_match_below_the_threshold(validated_run, held_out_market, tmp_path, monkeypatch, capsys):
    workdir, run_dir = validated_run
    monkeypatch.chdir(tmp_path)
    shutil.copytree(run_dir, tmp_path / "model" / "v")
    query = sorted((held_out_market / "val_query").glob("*/*.jpg"))[0]
    argv = ["--name", "v", "--gallery_dir", held_out_market / "gallery", "--query_image", query, "--topk", "3"]
    write_threshold(tmp_path / "model" / "v", 1.5)   # above any cosine similarity: nobody is the same person
    code, out, err = run_cli(demo.main, argv, capsys)
    assert code == 0, err
    assert "no match above the threshold (best " in out and "< 1.500" in out and "same person" not in out
    gallery = len(list((held_out_market / "gallery").glob("*/*.jpg")))   # what the threshold's per-pair rate means per search
    assert f"per search: {gallery} pictures x 0.01 per pair = about {gallery * 0.01:.1f} stranger(s)" in out
    write_threshold(tmp_path / "model" / "v", -1.0)   # below any: the best match is the same person
    code, out, _ = run_cli(demo.main, argv, capsys)
    assert code == 0 and "the same person: best " in out and out.count("same person") >= 4
    os.remove(tmp_path / "model" / "v" / validation.THRESHOLDS)
    code, out, _ = run_cli(demo.main, argv, capsys)
    assert code == 0 and "ranking only: model/v has no threshold" in out


def test_report_applies_the_held_out_threshold_to_the_test_set(validated_run, held_out_market, tmp_path,
                                                               monkeypatch, capsys):
    workdir, run_dir = validated_run
    monkeypatch.chdir(workdir)
    mat = tmp_path / "result.mat"
    stage4.main(["--gpu_ids", "-1", "--name", "v", "--test_dir", str(held_out_market), "--output", str(mat)])
    code, _, err = run_cli(demo.main, ["--report", "--test_dir", held_out_market, "--mat", mat, "--out",
                                       tmp_path / "rep"], capsys)
    assert code == 0, err
    page = (tmp_path / "rep" / "index.html").read_text()
    assert "The threshold train.py chose on the held-out identities for FPR 0.01" in page and "EER" in page
    for picture in ("roc.png", "scores.png"):
        assert (tmp_path / "rep" / picture).stat().st_size > 1000


def test_recipes_benchmark_compares_each_recipe_with_the_baseline(held_out_market, tmp_path, monkeypatch, capsys):
    sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
    import recipes

    monkeypatch.chdir(tmp_path)
    recipes.main(["--data_dir", str(held_out_market), "--seeds", "0", "1", "--total_epoch", "1", "--batchsize", "8",
                  "--recipes", "baseline", "bot_k2", "--attack"])
    out = capsys.readouterr().out
    assert "unseen mAP" in out and "val acc" in out and "attacked mAP" in out
    attacked_row = out.split("under the ODFA attack")[1].splitlines()[1]
    assert attacked_row.startswith("bot_k2") and "better in" in attacked_row
    assert os.path.exists("model/recipe_bot_k2_seed1/result_odfa.mat")
    row = next(line for line in out.splitlines() if line.startswith("bot_k2") and "better in" in line)
    verdicts = re.search(r"better in (\d) of 2, worse in (\d), within noise in (\d)", row).groups()
    assert sum(map(int, verdicts)) == 2
    # the same verdict as evaluate_gpu.py --compare on those two files
    code, compared, _ = run_cli(evaluate_gpu.main, ["--mat", "model/recipe_baseline_seed0/result.mat", "--compare",
                                                    "model/recipe_bot_k2_seed0/result.mat", "--gpu_ids", "-1"], capsys)
    difference = float(re.search(r"bot_k2\s+([+-][\d.]+) \(", row).group(1))
    printed = re.search(r"mAP.*?([\d.]+) mAP points|mAP \(([+-][\d.]+) points", compared)
    assert code == 0 and printed is not None
    assert abs(difference) == pytest.approx(float(printed.group(1) or printed.group(2).lstrip("+-")), abs=0.051)


def test_audit_checks_the_held_out_identities_too(held_out_market, tmp_path, capsys):
    import audit

    argv = ["--out", tmp_path / "audit", "--num_workers", "1"]
    code, out, _ = run_cli(audit.main, ["--data_dir", held_out_market, *argv], capsys)
    assert code == 0 and "val_query" in out and "val_gallery" in out
    copy = shutil.copytree(held_out_market, tmp_path / "pytorch")
    person = sorted(os.listdir(copy / "val_query"))[0]
    shutil.copytree(copy / "val_gallery" / person, copy / "train_all" / person)   # a held-out person trained on
    shutil.rmtree(copy / "val_gallery" / sorted(os.listdir(copy / "val_query"))[1])   # a query left unanswerable
    code, out, _ = run_cli(audit.main, ["--data_dir", copy, *argv], capsys)
    assert code == 1 and "identities in both training and test (a leak) (1)" in out and f"    {person}" in out
    assert "the same picture in training and test" in out   # the copied pictures are the same bytes
    assert "queries with no correct match in the gallery" in out and "/val_query/" in out
