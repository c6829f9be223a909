"""metric_learning.py and its flags in train.py: the P x K sampler, the batch-hard triplet loss, label smoothing."""
import math
from collections import Counter

import pytest
import torch
import yaml

import train
from reid.losses import batch_hard_triplet
from reid.recipes import PKSampler
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
    args.nclasses = 5
    context = train.training_context(args, torch.nn.Linear(2, 2), torch.device("cpu"))
    assert context.criterion.label_smoothing == 0.1 and context.metric.terms["triplet"].margin == 0.3
    for argv, fragment in ((["--sampler", "pk", "--batchsize", "10"], "--num_instances"),
                           (["--PCB", "--triplet"], "PCB"), (["--PCB", "--arcface"], "PCB"),
                           (["--label_smoothing", "1"], "--label_smoothing"), (["--ins_gamma", "0"], "--ins_gamma")):
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


def test_every_loss_at_once_trains_resumes_and_is_tested(prepared_market, tmp_path, monkeypatch, capsys):
    from reid import recipes as metric_learning
    import test as stage4

    monkeypatch.chdir(tmp_path)
    everything = [f"--{name}" for name in metric_learning.LOSSES]
    # all the losses at once on six people: the validation loss runs wild (it is a code path, not a recipe)
    common = ["--data_dir", str(prepared_market), *FAST, "--sampler", "pk", "--num_instances", "2",
              "--linear_num", "64", "--total_epoch", "2", "--divergence", "warn", "--FSGD", *everything]
    whole = torch.load(tmp_path / train.main(common + ["--name", "whole"]) / "state_last.pth", weights_only=True)
    real_run_epoch, calls = train.run_epoch, []

    def interrupted(net, loader, phase, ctx):
        calls.append(phase)
        if len(calls) == 3:     # the second epoch's training
            raise KeyboardInterrupt
        return real_run_epoch(net, loader, phase, ctx)

    monkeypatch.setattr(train, "run_epoch", interrupted)
    with pytest.raises(SystemExit):   # cli_main turns the interruption into exit code 130
        train.main(common + ["--name", "cut"])
    first = torch.load(tmp_path / "model/cut/state_last.pth", weights_only=True)["metric"]
    assert {"terms.arcface.W", "terms.cosface.W", "terms.sphere.W", "terms.center.centers",
            "terms.verif.classifier.weight"} <= first.keys()
    with open(tmp_path / "model/cut/opts.yaml") as handle:
        assert first["terms.arcface.W"].shape == (64, yaml.safe_load(handle)["nclasses"])
    monkeypatch.setattr(train, "run_epoch", real_run_epoch)
    train.main(["--name", "cut", "--resume"])
    resumed = torch.load(tmp_path / "model/cut/state_last.pth", weights_only=True)
    assert all(math.isfinite(row["train_loss"]) for row in resumed["history"])
    for key, value in resumed["metric"].items():
        assert torch.equal(value, whole["metric"][key]), f"{key}: a resumed run continues exactly"
    assert not torch.equal(first["terms.arcface.W"], resumed["metric"]["terms.arcface.W"]), "centres are trained"
    stage4.main(["--gpu_ids", "-1", "--name", "cut", "--test_dir", str(prepared_market), "--num_workers", "0",
                 "--batchsize", "16"])
    assert "Rank@1:" in capsys.readouterr().out


def test_pair_losses_warn_without_pk(prepared_market, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    train.main(["--data_dir", str(prepared_market), "--name", "warn", *FAST, "--total_epoch", "1",
                "--circle", "--arcface"])
    out = capsys.readouterr().out
    assert "warning: --circle find(s) few positives" in out and "--arcface find" not in out


def test_center_loss_value_and_gradients_reach_the_centres():
    from reid.losses import CenterLoss

    loss_fn = CenterLoss(num_classes=2, dim=2)
    with torch.no_grad():
        loss_fn.centers.copy_(torch.tensor([[0.0, 0.0], [1.0, 1.0]]))
    features = torch.tensor([[1.0, 0.0], [1.0, 3.0]])
    loss = loss_fn(features, torch.tensor([0, 1]))
    assert loss.item() == pytest.approx((1 + 4) / 2)          # ||(1,0)-(0,0)||^2 and ||(1,3)-(1,1)||^2, averaged
    loss.backward()
    assert torch.allclose(loss_fn.centers.grad, torch.tensor([[-1.0, 0.0], [0.0, -2.0]]))


def test_bnneck_head():
    import model

    net = model.build_model("resnet18", 5, pretrained=False, circle=True, bnneck=True).train()
    logits, feature = net(torch.randn(4, 3, 256, 128))
    assert logits.shape == (4, 5) and feature.shape == (4, 512)          # the pooled feature, before the BN
    assert net.classifier.classifier[0].bias is None and not net.classifier.add_block[0].bias.requires_grad
    net.eval()
    with torch.no_grad():
        after = net.features(torch.randn(2, 3, 256, 128))
        net.neck_feat = "before"
        before = net.features(torch.randn(2, 3, 256, 128))
    assert after.shape == before.shape == (2, 512)


def test_recipe_sets_every_option_and_typed_flags_win():
    from reid import recipes as metric_learning

    parser = train.build_parser()
    args = train.resolve_options(parser, ["--recipe", "bot", "--batchsize", "32", "--backbone", "resnet18"])
    for key, value in metric_learning.RECIPES["bot"].items():
        assert getattr(args, key) == (32 if key == "batchsize" else value), key


def test_bot_run_is_rebuilt_by_test_py(prepared_market, tmp_path, monkeypatch, capsys):
    import test as stage4

    monkeypatch.chdir(tmp_path)
    run_dir = train.main(["--data_dir", str(prepared_market), "--name", "bot", *FAST, "--total_epoch", "1",
                          "--recipe", "bot", "--batchsize", "8", "--num_instances", "2", "--warm_epoch", "1"])
    with open(tmp_path / run_dir / "opts.yaml") as handle:
        opts = yaml.safe_load(handle)
    assert opts["recipe"] == "bot" and opts["bnneck"] and opts["center"] and opts["feature_dim"] == 576
    assert opts["stride"] == 2, "mobilenet_v3 has no last stride to change"
    assert "terms.center.centers" in torch.load(tmp_path / run_dir / "state_last.pth", weights_only=True)["metric"]
    stage4.main(["--gpu_ids", "-1", "--name", "bot", "--test_dir", str(prepared_market), "--num_workers", "0",
                 "--batchsize", "16"])
    assert "Rank@1:" in capsys.readouterr().out


def test_weight_average_is_an_ema_of_every_step():
    from reid.recipes import weight_average

    net = torch.nn.Linear(1, 1, bias=False)
    average = weight_average(net, decay=0.5)
    values = [1.0, 3.0, 5.0]
    expected = None
    for value in values:
        with torch.no_grad():
            net.weight.fill_(value)
        average.update_parameters(net)
        expected = value if expected is None else 0.5 * expected + 0.5 * value
    assert average.module.weight.item() == pytest.approx(expected)


def test_wa_writes_net_average_with_its_own_batchnorm_statistics(prepared_market, tmp_path, monkeypatch, capsys):
    import test as stage4

    monkeypatch.chdir(tmp_path)
    run_dir = tmp_path / train.main(["--data_dir", str(prepared_market), "--name", "wa", *FAST, "--total_epoch", "2",
                                     "--wa", "--wa_decay", "0.9"])
    last = torch.load(run_dir / "net_last.pth", weights_only=True)
    average = torch.load(run_dir / "net_average.pth", weights_only=True)
    assert last.keys() == average.keys()
    weight = "model.features.0.0.weight"
    assert not torch.equal(last[weight], average[weight])
    running = [key for key in average if key.endswith("running_mean")]
    assert any(not torch.equal(last[key], average[key]) for key in running)
    stage4.main(["--gpu_ids", "-1", "--name", "wa", "--which_epoch", "average", "--test_dir", str(prepared_market),
                 "--num_workers", "0", "--batchsize", "16"])
    assert "Rank@1:" in capsys.readouterr().out


def test_pk_sampler_refuses_more_identities_than_exist_and_notes_few(capsys):
    from reid.recipes import pk_sampler
    from utils import UserError

    labels = [label for label in range(20) for _ in range(3)]
    with pytest.raises(UserError, match="identities a batch, but there are 20"):
        pk_sampler(labels, 64, 2, torch.Generator())
    assert len(next(iter(pk_sampler(labels, 32, 4, torch.Generator())))) == 32
    assert "note: 8 identities a batch" in capsys.readouterr().out
    pk_sampler(labels, 32, 2, torch.Generator())
    assert capsys.readouterr().out == ""
