"""ODFA (reid/attacks.py) worked out on a linear feature, and --adv R --aiter N in a training run."""
import os

import torch
import torch.nn.functional as F

import test as stage4
import train
from conftest import run_cli
from reid import attacks
from reid.images import IMAGENET_MEAN, IMAGENET_STD
from test_train import FAST, in_tmp  # noqa: F401  (in_tmp is a fixture)

MEAN, STD = (torch.tensor(values).view(1, 3, 1, 1) for values in (IMAGENET_MEAN, IMAGENET_STD))


class LinearFeature(torch.nn.Module):
    """A network whose feature is a fixed linear map of the pixels; it counts its eval-mode calls."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.map = torch.nn.Linear(3 * 4 * 2, 5)
        self.eval_calls = 0

    def features(self, x):
        self.eval_calls += not self.training
        return self.map(x.flatten(1))


def pictures(seed=1):
    pixels = torch.randint(30, 226, (2, 3, 4, 2), generator=torch.Generator().manual_seed(seed)).float() / 255
    return (pixels - MEAN) / STD


def test_the_number_of_steps_is_layumis():
    assert [attacks.steps_for(rate) for rate in (1, 2, 4, 16, 32)] == [1, 2, 5, 20, 36]


def test_one_step_moves_every_pixel_one_level_against_the_gradient():
    net, images = LinearFeature(), pictures()
    adversarial = attacks.odfa(net, images, rate=1)   # one step
    wanted = images.clone().requires_grad_(True)
    target = -net.features(images).detach()
    gradient, = torch.autograd.grad(F.mse_loss(net.features(wanted), target), wanted)
    assert torch.allclose(adversarial, images - gradient.sign() / (255 * STD), atol=1e-6)
    assert net.training and net.eval_calls > 0   # attacked in eval mode, handed back in training mode


def test_the_feature_turns_away_within_the_budget_and_the_pixel_range():
    net = LinearFeature()
    images = pictures()
    images[0, :, 0, 0] = (torch.zeros(3) - MEAN.view(3)) / STD.view(3)   # a black pixel cannot get darker
    adversarial = attacks.odfa(net, images, rate=8)
    levels = (adversarial - images) * 255 * STD
    assert levels.abs().max() <= 8 + 1e-3 and levels.abs().max() >= 7.999
    pixels = adversarial * STD + MEAN
    assert pixels.min() >= -1e-6 and pixels.max() <= 1 + 1e-6
    before, after = (F.normalize(net.features(x), dim=1) for x in (images, adversarial))
    assert ((before * after).sum(1) < 0.999).all()   # every feature turned away from where it pointed


def test_adversarial_training_runs_and_test_reads_the_run(prepared_market, in_tmp, monkeypatch, capsys):  # noqa: F811
    calls = []
    real = attacks.odfa
    monkeypatch.setattr(attacks, "odfa", lambda net, images, rate=attacks.RATE: calls.append(len(images)) or
                        real(net, images, rate))
    assert train.main(["--data_dir", str(prepared_market), *FAST, "--total_epoch", "1", "--adv", "1", "--aiter", "3",
                       "--name", "adv"])
    pictures_ = sum(len(files) for _, _, files in os.walk(prepared_market / "train"))
    assert calls == [8] * len(range(0, pictures_ // 8, 3))   # steps 0, 3, 6, ... of the epoch, whole batches
    code, out, err = run_cli(stage4.main, ["--gpu_ids", "-1", "--name", "adv", "--test_dir", str(prepared_market),
                                           "--num_workers", "0"], capsys)
    assert code == 0 and "Rank@1:" in out, err
    code, _, err = run_cli(train.main, ["--name", "bad", "--data_dir", str(prepared_market), "--aiter", "0"], capsys)
    assert code == 2 and "--aiter 0 must be at least 1" in err


def test_test_py_attacks_the_queries_and_writes_their_own_mat(prepared_market, trained_workdir, tmp_path, monkeypatch,
                                                             capsys):
    import evaluate_gpu
    from reid.features import load_features

    monkeypatch.chdir(trained_workdir)
    output = tmp_path / "clean.mat"
    code, out, err = run_cli(stage4.main, ["--gpu_ids", "-1", "--name", "toy", "--test_dir", prepared_market,
                                           "--num_workers", "0", "--output", output, "--attack", "odfa",
                                           "--epsilon", "8"], capsys)
    assert code == 0 and "queries attacked by ODFA, each pixel within 8 levels:" in out, err
    clean, attacked = load_features(str(output)), load_features(str(tmp_path / "clean_odfa.mat"))
    assert (clean["gallery_f"] == attacked["gallery_f"]).all() and (clean["query_label"] == attacked["query_label"]).all()
    turned = (clean["query_f"] * attacked["query_f"]).sum(1)   # cosine of each query's clean and attacked feature
    assert turned.mean() < 0.9 and len([line for line in out.splitlines() if line.startswith("Rank@1:")]) == 2
    code, out, err = run_cli(evaluate_gpu.main, ["--gpu_ids", "-1", "--mat", output, "--compare",
                                                 tmp_path / "clean_odfa.mat"], capsys)
    assert code == 0 and "B = " in out, err
    code, _, err = run_cli(stage4.main, ["--name", "toy", "--attack", "odfa", "--backend", "onnxruntime"], capsys)
    assert code == 2 and "--attack needs --backend torch" in err
    import demo

    code, _, err = run_cli(demo.main, ["--report", "--test_dir", prepared_market, "--mat", output, "--attacked",
                                       tmp_path / "clean_odfa.mat", "--out", tmp_path / "report"], capsys)
    page = (tmp_path / "report" / "index.html").read_text()
    assert code == 0 and "<h2>Under attack</h2>" in page, err
    assert len([name for name in os.listdir(tmp_path / "report") if name.startswith("attacked_")]) == 3
