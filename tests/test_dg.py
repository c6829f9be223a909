"""--DG: the memory-in-vivo divergence by hand, the epochs it runs in, the toy DG-Market, and a training run."""
import math
import os

import pytest
import torch
import yaml
from torch import nn

import test as stage4
import toy_data
import train
from conftest import SMALL, make_toy, one_error_line, run_cli
from reid import dg, toy_layout
from test_train import FAST, in_tmp, same_weights, weights  # noqa: F401  (in_tmp is a fixture)


def test_symmetric_kl_by_hand():
    student = torch.log(torch.tensor([[0.25, 0.75]]))   # logits up to a constant
    teacher = torch.log(torch.tensor([[0.5, 0.5]]))
    forward = 0.25 * math.log(0.25 / 0.5) + 0.75 * math.log(0.75 / 0.5)   # KL(p_s || p_t)
    backward = 0.5 * math.log(0.5 / 0.25) + 0.5 * math.log(0.5 / 0.75)    # KL(p_t || p_s)
    got = dg.symmetric_kl(dg.class_log_probabilities(student), dg.class_log_probabilities(teacher))
    assert got.item() == pytest.approx((forward + backward) / 2, abs=1e-6)   # 0.137327
    same = dg.class_log_probabilities(torch.randn(4, 3, 7))   # PCB-shaped: (batch, parts, classes)
    assert dg.symmetric_kl(same, same).item() == pytest.approx(0, abs=1e-6)
    assert dg.class_log_probabilities((student, torch.zeros(1, 5))).shape == (1, 2)   # (logits, features)


def test_the_term_is_on_in_the_last_fifth_of_the_epochs():
    assert [e for e in range(60) if dg.active(e, 60)] == list(range(48, 60))
    assert [e for e in range(5) if dg.active(e, 5)] == [4]
    assert [e for e in range(1) if dg.active(e, 1)] == [0]


class Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.classifier = nn.Linear(12, 3)

    def forward(self, x):
        return self.classifier(x.flatten(1))


def test_only_the_student_learns_and_batches_cycle():
    pictures = torch.utils.data.TensorDataset(torch.randn(5, 3, 2, 2), torch.randn(5, 3, 2, 2))
    loader = torch.utils.data.DataLoader(pictures, batch_size=2, drop_last=True, generator=torch.Generator(),
                                         sampler=torch.utils.data.RandomSampler(pictures, generator=torch.Generator()))
    loader.sampler.generator = loader.generator
    student, teacher = Tiny(), Tiny()
    term = dg.Consistency(loader, teacher, student, 0, 0, 0, torch.device("cpu"), torch.contiguous_format)
    losses = [term(student) for _ in range(5)]   # two batches a pass: the third call starts a new pass
    assert term.cycle == 2 and all(loss.item() > 0 for loss in losses)
    losses[0].backward()
    assert student.classifier.weight.grad.abs().sum() > 0 and teacher.classifier.weight.grad is None
    assert not teacher.training
    student.eval()
    assert term(student) == 0   # validation adds nothing


def test_toy_dg_market_dresses_the_market_toys_training_people(tmp_path):
    market = make_toy(tmp_path, "market")
    generated = make_toy(tmp_path, "dg-market")
    trained = {name.split("_")[0] for name in os.listdir(os.path.join(market, "bounding_box_train"))}
    assert set(os.listdir(generated)) - {"toy_dataset.json"} == trained
    per_identity = toy_layout.GENERATED_PER_IDENTITY * int(SMALL[SMALL.index("--images_per_camera") + 1])
    assert all(len(os.listdir(os.path.join(generated, label))) == per_identity for label in trained)


@pytest.fixture(scope="module")
def toy_dg_market(tmp_path_factory):
    return make_toy(tmp_path_factory.mktemp("dg"), "dg-market")


def test_dg_trains_resumes_bit_identically_and_test_reads_the_run(prepared_market, toy_dg_market, in_tmp,
                                                                  monkeypatch, capsys):
    command = ["--data_dir", str(prepared_market), *FAST, "--total_epoch", "2", "--DG", "--dg_dir", toy_dg_market]
    calls = []
    real_call = dg.Consistency.__call__
    monkeypatch.setattr(dg.Consistency, "__call__", lambda self, net: calls.append(net.training) or real_call(self, net))
    whole = in_tmp / train.main([*command, "--name", "whole"])
    steps = sum(len(f) for _, _, f in os.walk(prepared_market / "train")) // 8
    val_batches = math.ceil(sum(len(f) for _, _, f in os.walk(prepared_market / "val")) / 8)
    assert calls == [True] * steps + [False] * val_batches   # the second epoch only: the last fifth of 2
    with open(whole / "opts.yaml") as handle:
        opts = yaml.safe_load(handle)
    assert opts["DG"] is True and opts["wa"] is True and (whole / "net_average.pth").exists()

    real_run_epoch, phases = train.run_epoch, []

    def interrupted(net, loader, phase, ctx):
        phases.append(phase)
        if len(phases) == 4:   # the second epoch's validation: the DG epoch is lost and done again
            raise KeyboardInterrupt
        return real_run_epoch(net, loader, phase, ctx)

    monkeypatch.setattr(train, "run_epoch", interrupted)
    code, _, _ = run_cli(train.main, [*command, "--name", "cut"], capsys)
    assert code == 130
    monkeypatch.setattr(train, "run_epoch", real_run_epoch)
    code, out, err = run_cli(train.main, ["--name", "cut", "--resume", "--num_workers", "0"], capsys)
    assert code == 0, err
    for name in ("net_last.pth", "net_average.pth"):
        assert same_weights(weights(whole / name), weights(in_tmp / "model/cut" / name))
    code, out, err = run_cli(stage4.main, ["--gpu_ids", "-1", "--name", "whole", "--test_dir", prepared_market,
                                           "--which_epoch", "average", "--num_workers", "0"], capsys)
    assert code == 0 and "Rank@1:" in out, err


def test_dg_without_the_download_is_one_line(prepared_market, in_tmp, capsys):
    code, _, err = run_cli(train.main, ["--data_dir", prepared_market, *FAST, "--name", "nodg", "--DG",
                                        "--dg_dir", in_tmp / "DG-Market"], capsys)
    line = one_error_line(err)
    assert code == 2 and "DG-Market" in line and dg.SOURCE in line and "toy_data.py" in line
    assert not (in_tmp / "model/nodg").exists()
