"""metric_learning.py and its flags in train.py: the P x K sampler, the batch-hard triplet loss, label smoothing."""
import math
from collections import Counter

import pytest
import torch
import yaml

import train
from metric_learning import PKSampler, batch_hard_triplet
from test_train import FAST


def test_triplet_on_the_square_is_the_margin():
    # four unit vectors at right angles; every hardest positive and negative are sqrt(2) apart
    features = torch.tensor([[1.0, 0], [0, 1], [-1, 0], [0, -1]])
    loss = batch_hard_triplet(features, torch.tensor([0, 0, 1, 1]), margin=0.3)
    assert loss.item() == pytest.approx(0.3, abs=1e-6)


def test_triplet_worked_by_hand():
    features = torch.tensor([[1.0, 0], [0.8, 0.6], [0, 1], [-1, 0]], requires_grad=True)
    loss = batch_hard_triplet(features, torch.tensor([0, 0, 1, 1]), margin=0.3)
    # anchor a: 0.632 - 1.414 + 0.3 < 0; b: sqrt(.4) - sqrt(.8) + .3; c: sqrt(2) - sqrt(.8) + .3; d: < 0
    expected = ((math.sqrt(0.4) - math.sqrt(0.8) + 0.3) + (math.sqrt(2) - math.sqrt(0.8) + 0.3)) / 4
    assert loss.item() == pytest.approx(expected, abs=1e-5)
    loss.backward()
    assert features.grad.abs().sum() > 0


def test_triplet_ignores_anchors_without_positives():
    features = torch.randn(3, 8, requires_grad=True)
    loss = batch_hard_triplet(features, torch.tensor([0, 1, 2]))
    assert loss.item() == 0
    loss.backward()


def batches(seed, labels, identities=3, instances=4):
    return list(PKSampler(labels, identities, instances, torch.Generator().manual_seed(seed)))


def test_pk_sampler_invariants():
    labels = [0] * 6 + [1] * 2 + [2] * 5 + [3] * 9 + [4] * 1 + [5] * 4 + [6] * 3
    epoch = batches(0, labels)
    assert len(epoch) == len(PKSampler(labels, 3, 4, torch.Generator())) == 3   # ceil(7 identities / 3)
    for batch in epoch:
        counts = Counter(labels[i] for i in batch)
        assert len(batch) == 12 and len(counts) == 3 and set(counts.values()) == {4}
        for label in counts:   # distinct pictures whenever the identity has enough
            chosen = [i for i in batch if labels[i] == label]
            assert len(set(chosen)) == min(4, labels.count(label))
    assert {labels[i] for batch in epoch for i in batch} == set(range(7)), "every identity in every epoch"
    assert batches(0, labels) == epoch and batches(1, labels) != epoch


def test_flags_and_their_checks(capsys):
    parser = train.build_parser()
    args = train.resolve_options(parser, ["--sampler", "pk", "--num_instances", "4", "--batchsize", "16", "--triplet",
                                          "--label_smoothing", "0.1", "--backbone", "resnet18"])
    assert args.sampler == "pk" and args.triplet and args.triplet_margin == 0.3
    context = train.training_context(args, torch.nn.Linear(2, 2), torch.device("cpu"))
    assert context["criterion"].label_smoothing == 0.1 and context["triplet_margin"] == 0.3
    for argv, fragment in ((["--sampler", "pk", "--batchsize", "10"], "--num_instances"),
                           (["--PCB", "--triplet"], "PCB"), (["--label_smoothing", "1"], "--label_smoothing")):
        with pytest.raises(SystemExit):
            train.resolve_options(parser, argv)
        assert fragment in capsys.readouterr().err


def test_one_epoch_with_triplet_pk_and_smoothing(prepared_market, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    run_dir = train.main(["--data_dir", str(prepared_market), "--name", "metric", *FAST, "--total_epoch", "1",
                          "--sampler", "pk", "--num_instances", "2", "--triplet", "--label_smoothing", "0.1"])
    with open(tmp_path / run_dir / "opts.yaml") as handle:
        opts = yaml.safe_load(handle)
    assert opts["sampler"] == "pk" and opts["triplet"] and opts["label_smoothing"] == 0.1
    assert (tmp_path / run_dir / "net_last.pth").exists()
