"""Heatmaps (reid/heatmaps.py): Grad-CAM of the similarity lights up what a network is known to match on,
works for every backbone of the registry, and demo.py draws it over a test run's ranking and report."""
import pytest
import torch
from PIL import Image
from torch import nn

import demo
import model
from conftest import run_cli
from reid import heatmaps
from test_model import HEAVY, LIGHT


class RedSpotter(nn.Module):
    """Feature 0: how much red the picture holds; feature 1: a constant. So the cosine with (1, 0) is
    decided by the red pixels alone."""

    def __init__(self):
        super().__init__()
        conv = nn.Conv2d(3, 2, 1)
        with torch.no_grad():
            conv.weight.zero_()
            conv.weight[0, :, 0, 0] = torch.tensor([1.0, -1.0, -1.0])
            conv.bias.copy_(torch.tensor([0.0, 0.1]))
        self.model = nn.Sequential(conv, nn.ReLU(), nn.AdaptiveAvgPool2d(1))

    def features(self, x):
        return self.model(x).flatten(1)


def test_the_map_lights_the_pixels_the_match_comes_from():
    pictures = torch.zeros(2, 3, 64, 32)
    pictures[0, 0, 40:60, 4:20] = 2.0     # a red patch low on the left
    pictures[1, 0, 2:12, 20:30] = 2.0     # and one high on the right
    maps = heatmaps.similarity_maps(RedSpotter().eval(), pictures, torch.tensor([[1.0, 0.0], [1.0, 0.0]]))
    assert maps.shape == (2, 64, 32) and float(maps.max()) == pytest.approx(1.0)
    for index, (rows, cols) in enumerate(((slice(40, 60), slice(4, 20)), (slice(2, 12), slice(20, 30)))):
        inside = torch.zeros(64, 32, dtype=torch.bool)
        inside[rows, cols] = True
        assert maps[index][inside].mean() > 0.9 and maps[index][~inside].max() < 0.05


@pytest.mark.parametrize("name", LIGHT + [pytest.param(name, marks=pytest.mark.heavy) for name in HEAVY])
def test_every_backbone_has_a_map(name):
    torch.manual_seed(0)
    net = model.build_model(name, 5, pretrained=False).eval()
    height, width = model.get_backbone(name).input_size
    targets = nn.functional.normalize(torch.randn(2, model.get_backbone(name).feature_dim()), dim=1)
    maps = heatmaps.similarity_maps(net, torch.randn(2, 3, height, width), targets)
    assert maps.shape == (2, height, width) and torch.isfinite(maps).all() and 0 <= maps.min() and maps.max() <= 1


def test_demo_draws_heatmaps_over_the_ranking_and_in_the_report(prepared_market, trained_workdir, tmp_path,
                                                               monkeypatch, capsys):
    import test as stage4

    monkeypatch.chdir(trained_workdir)
    mat = tmp_path / "r.mat"
    assert run_cli(stage4.main, ["--gpu_ids", "-1", "--name", "toy", "--test_dir", prepared_market, "--num_workers",
                                 "0", "--output", mat], capsys)[0] == 0
    common = ["--test_dir", prepared_market, "--mat", mat, "--topk", "3"]
    shown = {}
    for flags in ([], ["--heatmap", "--name", "toy"]):
        out = tmp_path / f"show{len(flags)}.png"
        code, _, err = run_cli(demo.main, [*common, "--query_index", "2", "--out", out, *flags], capsys)
        assert code == 0, err
        with Image.open(out) as picture:
            shown[len(flags)] = picture.convert("RGB")
    assert shown[0].size == shown[3].size and shown[0].tobytes() != shown[3].tobytes()   # the same strip, overlaid
    code, _, err = run_cli(demo.main, [*common, "--report", "--heatmap", "--name", "toy", "--out", tmp_path / "rep"],
                           capsys)
    assert code == 0 and "Grad-CAM of its similarity" in (tmp_path / "rep" / "index.html").read_text(), err
    code, _, err = run_cli(demo.main, [*common, "--heatmap"], capsys)
    assert code == 2 and "--heatmap draws a test run's ranking" in err
