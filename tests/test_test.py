"""test.py: rebuilds the model from opts.yaml, writes layumi's .mat, evaluates in-process."""
import os
import re
import shutil

import numpy as np
import pytest
import scipy.io
import torch
import yaml
from PIL import Image

import evaluate_gpu
import model
import test as stage4
from reid import extraction, features, images
from conftest import run_cli


@pytest.fixture
def workdir(trained_workdir, tmp_path, monkeypatch):
    """A private copy of the trained run, as the current directory."""
    shutil.copytree(trained_workdir / "model", tmp_path / "model")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def run_test(data_dir, capsys, *extra):
    return run_cli(stage4.main, ["--gpu_ids", "-1", "--name", "toy", "--test_dir", data_dir, "--batchsize", "16",
                                 "--num_workers", "0", *extra], capsys)


def test_writes_layumis_mat_and_scores(workdir, prepared_market, capsys):
    code, out, err = run_test(prepared_market, capsys)
    assert code == 0, err
    raw = scipy.io.loadmat(workdir / "pytorch_result.mat")
    n_query = sum(len(files) for _, _, files in os.walk(prepared_market / "query"))
    n_gallery = sum(len(files) for _, _, files in os.walk(prepared_market / "gallery"))
    assert raw["query_f"].shape == (n_query, 512) and raw["query_f"].dtype == np.float32
    assert raw["gallery_label"].shape == (1, n_gallery) and raw["gallery_cam"].dtype == np.int64
    assert set(raw["gallery_label"].ravel()) >= {-1, 0}
    assert np.allclose(np.linalg.norm(raw["gallery_f"], axis=1), 1, atol=1e-5)
    assert str(raw["model_name"][0]) == "toy" and str(raw["which_epoch"][0]) == "last"
    assert str(raw["extracted_with"][0]).endswith("kernels")   # the arithmetic: TF32 on CUDA moves the digits
    assert re.search(r"^Rank@1:\d\.\d{6} Rank@5:\d\.\d{6} Rank@10:\d\.\d{6} mAP:\d\.\d{6}$", out, re.M)
    assert "Rank@1:" in (workdir / "model/toy/result.txt").read_text()


def test_multi_query_file_named_by_output_with_the_same_provenance(workdir, prepared_market, capsys):
    """--output names both files (its missing folder is created first); nothing lands in the current folder."""
    code, out, _ = run_test(prepared_market, capsys, "--multi", "--output", workdir / "out" / "result.mat")
    assert code == 0 and "multi-query" in out and f"created folder {workdir / 'out'}" in out
    main, multi = (features.load_features(str(workdir / "out" / name), multi=name != "result.mat")
                   for name in ("result.mat", "result_multi_query.mat"))
    assert main["run_id"] == multi["run_id"] and len(multi["mquery_f"]) >= len(main["query_f"])
    assert not (workdir / "multi_query.mat").exists() and not (workdir / "out" / "multi_query.mat").exists()
    evaluated = evaluate_gpu.main(["--mat", str(workdir / "out" / "result.mat"), "--multi", "--gpu_ids", "-1"])
    assert evaluated.num_queries == len(main["query_f"])


@pytest.mark.parametrize("epoch", ["last", "10", "010"])
def test_which_epoch_forms(workdir, prepared_market, capsys, epoch):
    shutil.copy(workdir / "model/toy/net_last.pth", workdir / "model/toy/net_010.pth")
    code, _, err = run_test(prepared_market, capsys, "--which_epoch", epoch)
    assert code == 0, err


def test_missing_epoch_lists_the_saved_ones(workdir, prepared_market, capsys):
    shutil.copy(workdir / "model/toy/net_last.pth", workdir / "model/toy/net_010.pth")
    code, _, err = run_test(prepared_market, capsys, "--which_epoch", "60")
    assert code == 2 and "net_060.pth does not exist" in err and "010, last" in err


def test_cross_dataset_market_model_on_duke(workdir, prepared_duke, capsys):
    code, out, err = run_test(prepared_duke, capsys, "--output", workdir / "duke.mat")
    assert code == 0, err
    raw = scipy.io.loadmat(workdir / "duke.mat")
    assert raw["query_cam"].max() <= 8 and "Rank@1:" in out


def test_flip_and_scales_are_summed(tmp_path):
    """A picture and its mirror image get the same feature; --ms scales add up."""
    class ColumnMeans(torch.nn.Module):
        def features(self, x):
            return x.mean(dim=(1, 2))            # one value per column: mirrored by a flip

    folder = tmp_path / "split" / "0001"
    os.makedirs(folder)
    pixels = np.random.default_rng(0).integers(0, 255, size=(16, 8, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(folder / "a.png")
    Image.fromarray(pixels[:, ::-1]).save(folder / "b.png")
    dataset = images.image_folder(str(tmp_path / "split"), images.image_transforms((16, 8)))
    single = extraction.extract_features(ColumnMeans(), dataset, torch.device("cpu"), 2)
    assert torch.allclose(single[0], single[1], atol=1e-5)
    assert torch.allclose(single.norm(dim=1), torch.ones(2))
    two_scales = extraction.extract_features(ColumnMeans(), dataset, torch.device("cpu"), 2, scales=(1.0, 1.0))
    assert torch.allclose(two_scales, single, atol=1e-6)   # equal scales sum to the same direction


def test_ms_is_an_area_scale_like_layumis(tmp_path):
    """--ms 1,4 looks at the picture at its size and at twice each side (sqrt 4), as layumi's test.py does;
    a third scale resizes the original picture, not the previous result."""
    class SizeRecorder(torch.nn.Module):
        sizes = []

        def features(self, x):
            self.sizes.append(tuple(x.shape[2:]))
            return x.mean(dim=(1, 2))[:, :4]

    folder = tmp_path / "split" / "0001"
    os.makedirs(folder)
    Image.fromarray(np.full((16, 8, 3), 90, dtype=np.uint8)).save(folder / "a.png")
    dataset = images.image_folder(str(tmp_path / "split"), images.image_transforms((16, 8)))
    net = SizeRecorder()
    extraction.extract_features(net, dataset, torch.device("cpu"), 1, scales=extraction.parse_scales("1,4,2.25"))
    assert net.sizes[:3] == [(16, 8), (32, 16), (24, 12)]


def test_pcb_feature_normalises_each_stripe():
    stripes = torch.randn(3, 2048, 6)
    feature = extraction.normalise(stripes)
    assert feature.shape == (3, 2048 * 6)
    per_part = feature.reshape(3, 2048, 6).norm(dim=1)
    assert torch.allclose(per_part, torch.full_like(per_part, 6 ** -0.5)) and torch.allclose(feature.norm(dim=1), torch.ones(3))


def test_layumi_written_opts_yaml(workdir):
    """An opts.yaml from the original repository: booleans choose the backbone, no 'backbone' key."""
    run = workdir / "model" / "layumi_dense"
    os.makedirs(run)
    with open(run / "opts.yaml", "w") as handle:
        yaml.safe_dump({"name": "layumi_dense", "use_dense": True, "PCB": False, "stride": 2, "nclasses": 751,
                        "droprate": 0.5, "fp16": False, "gpu_ids": "0", "lr": 0.05}, handle)
    net = model.build_model("densenet121", 751, pretrained=False)
    torch.save(net.state_dict(), run / "net_last.pth")
    options, _ = model.trained_options(run)
    assert options["backbone"] == "densenet121" and options["linear_num"] == 512   # a missing key: the default
    loaded, _ = model.load_trained(run, "last", torch.device("cpu"))
    assert isinstance(loaded, model.DenseNetReID) and not loaded.training


def expect_error(argv, capsys, *fragments):
    code, _, err = run_cli(stage4.main, ["--gpu_ids", "-1", "--num_workers", "0", *argv], capsys)
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: "), err
    for fragment in fragments:
        assert fragment in lines[0]


def test_bad_inputs(workdir, prepared_market, tmp_path, capsys):
    expect_error(["--name", "nobody", "--test_dir", prepared_market], capsys, "opts.yaml", "train.py --name nobody")
    expect_error(["--name", "toy", "--test_dir", tmp_path / "nowhere"], capsys, "gallery does not exist", "prepare.py")
    expect_error(["--name", "toy", "--test_dir", prepared_market, "--ms", "1,x"], capsys, "--ms")
    expect_error(["--name", "toy", "--test_dir", prepared_market, "--which_epoch", "best"], capsys, "--which_epoch")
    expect_error(["--name", "toy", "--test_dir", prepared_market, "--linear_num", "256"], capsys, "does not fit")


def test_extraction_copies_to_the_cpu_in_few_large_pieces(tmp_path, monkeypatch):
    """The ImageNet constants are made once per extraction, not per batch, and the features wait on the
    device for rows_held rows before one copy: the same features whatever the grouping."""
    class ColumnMeans(torch.nn.Module):
        def features(self, x):
            return x.mean(dim=(1, 2))

    folder = tmp_path / "split" / "0001"
    os.makedirs(folder)
    rng = np.random.default_rng(1)
    for index in range(7):
        Image.fromarray(rng.integers(0, 255, size=(16, 8, 3), dtype=np.uint8)).save(folder / f"{index}.png")
    dataset = extraction.pipeline.ResizedPictures(images.image_folder(str(tmp_path / "split")).samples, (16, 8))
    made, copies = [], []
    constants = extraction.pipeline.imagenet_constants
    monkeypatch.setattr(extraction.pipeline, "imagenet_constants", lambda device: made.append(1) or constants(device))
    each_batch = extraction.extract_features(ColumnMeans(), dataset, torch.device("cpu"), 2)
    assert len(made) == 1
    flush = extraction.flush
    monkeypatch.setattr(extraction, "flush", lambda pending, *rest: copies.append(len(pending)) or flush(pending, *rest))
    monkeypatch.setattr(extraction, "rows_held", lambda device: 5)   # as on CUDA, with a small FLUSH_ROWS
    grouped = extraction.extract_features(ColumnMeans(), dataset, torch.device("cpu"), 2)
    assert copies == [3, 1] and torch.equal(grouped, each_batch)   # batches of 2, 2, 2 | 1
