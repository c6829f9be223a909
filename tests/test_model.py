"""model.py: the registry builds every backbone; layumi's checkpoints load; the head is layumi's."""
import os

import huggingface_hub
import pytest
import torch
import yaml
from torchvision import models as tv_models

import model
from reid import images, pretrained
from utils import UserError

LIGHT = [name for name, spec in model.BACKBONES.items() if not spec.heavy]
HEAVY = [name for name, spec in model.BACKBONES.items() if spec.heavy]


def check_backbone(name):
    spec = model.get_backbone(name)
    torch.manual_seed(0)
    net = model.build_model(name, num_classes=7, pretrained=False)
    images = torch.randn(2, 3, *spec.input_size)
    net.train()
    logits = net(images)
    assert logits.shape[0] == 2 and logits.shape[-1] == 7
    logits.float().sum().backward()
    assert all(p.grad is not None for p in net.classifier.parameters()) if hasattr(net, "classifier") else True
    # DistributedDataParallel stops at a trainable parameter that the loss never reaches (the ImageNet head)
    assert [n for n, p in net.named_parameters() if p.requires_grad and p.grad is None] == []
    net.eval()
    with torch.no_grad():
        features = net.features(images)
    assert features.reshape(2, -1).shape[1] == spec.feature_dim(linear_num=512)


@pytest.mark.parametrize("name", LIGHT)
def test_backbone_builds_and_trains(name):
    check_backbone(name)


@pytest.mark.heavy
@pytest.mark.parametrize("name", HEAVY)
def test_heavy_backbone_builds_and_trains(name):
    check_backbone(name)


def test_unknown_backbone_lists_the_valid_ones():
    with pytest.raises(UserError) as caught:
        model.build_model("resnet51", 10, pretrained=False)
    assert "resnet50" in str(caught.value) and "mobilenet_v3" in str(caught.value)


def head_keys(prefix, in_dim, bottleneck, classes):
    """The keys and shapes of layumi's ClassBlock (Linear -> BN -> Dropout -> Linear)."""
    return {f"{prefix}.add_block.0.weight": (bottleneck, in_dim), f"{prefix}.add_block.0.bias": (bottleneck,),
            f"{prefix}.add_block.1.weight": (bottleneck,), f"{prefix}.add_block.1.bias": (bottleneck,),
            f"{prefix}.add_block.1.running_mean": (bottleneck,), f"{prefix}.add_block.1.running_var": (bottleneck,),
            f"{prefix}.add_block.1.num_batches_tracked": (),
            f"{prefix}.classifier.0.weight": (classes, bottleneck), f"{prefix}.classifier.0.bias": (classes,)}


def layumi_state_dict(trunk, heads):
    """A state dict shaped as layumi's code saves it: the whole torchvision model under ``model.``
    (its unused ImageNet classifier included) plus the heads; random values."""
    shapes = {f"model.{k}": tuple(v.shape) for k, v in trunk.state_dict().items()}
    for head in heads:
        shapes.update(head)
    return {k: (torch.randn(s) if s else torch.tensor(5)) for k, s in shapes.items()}


@pytest.mark.parametrize("name, trunk, heads", [
    ("resnet50", tv_models.resnet50, [head_keys("classifier", 2048, 512, 751)]),
    ("densenet121", tv_models.densenet121, [head_keys("classifier", 1024, 512, 751)]),
    ("pcb", tv_models.resnet50, [head_keys(f"classifier{i}", 2048, 256, 751) for i in range(6)]),
])
def test_layumi_checkpoints_load_strictly(name, trunk, heads):
    state = layumi_state_dict(trunk(weights=None), heads)
    net = model.build_model(name, 751, pretrained=False)
    net.load_state_dict(state, strict=True)
    assert torch.equal(net.state_dict()["model.conv1.weight" if name != "densenet121"
                                        else "model.features.conv0.weight"],
                       state["model.conv1.weight" if name != "densenet121" else "model.features.conv0.weight"])


def test_class_block_initialisation():
    torch.manual_seed(0)
    block = model.ClassBlock(2048, 1000, droprate=0.5, linear=512)
    linear, norm, dropout = block.add_block
    assert isinstance(dropout, torch.nn.Dropout) and dropout.p == 0.5
    assert abs(norm.weight.mean().item() - 1) < 0.01 and abs(norm.weight.std().item() - 0.02) < 0.005
    assert abs(linear.weight.std().item() - (2 / 512) ** 0.5) < 0.01   # kaiming, fan_out = 512
    assert abs(block.classifier[0].weight.std().item() - 0.001) < 0.0002
    assert not linear.bias.any() and not norm.bias.any() and not block.classifier[0].bias.any()
    no_linear = model.ClassBlock(2048, 10, droprate=0, linear=0)
    assert [type(m) for m in no_linear.add_block] == [torch.nn.BatchNorm1d]
    assert no_linear.classifier[0].in_features == 2048


@pytest.mark.parametrize("name", ["resnet50", "resnet18", "densenet121"])
def test_stride_one_doubles_the_last_feature_map(name):
    sizes = {}
    for stride in (1, 2):
        net = model.build_model(name, 5, pretrained=False, stride=stride).eval()
        last = net.model.layer4 if name != "densenet121" else net.model.features.norm5
        last.register_forward_hook(lambda m, i, out, s=stride: sizes.__setitem__(s, out.shape[-2:]))
        with torch.no_grad():
            net(torch.randn(1, 3, 256, 128))
    # DenseNet keeps layumi's 2x2 average pool with stride 1, which loses one row and column
    expected = (2 * sizes[2][0] - 1, 2 * sizes[2][1] - 1) if name == "densenet121" else (2 * sizes[2][0], 2 * sizes[2][1])
    assert tuple(sizes[1]) == expected


@pytest.mark.parametrize("name", ["resnet18", "hrnet18", "nasnet"])
def test_offline_pretrained_fails_at_once_in_one_line(name, monkeypatch, tmp_path):
    monkeypatch.setattr(pretrained, "_reachable", lambda url: False)
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    monkeypatch.setattr(huggingface_hub, "try_to_load_from_cache", lambda repo, filename: None)
    with pytest.raises(UserError) as caught:
        model.build_model(name, 10, pretrained=True)
    message = str(caught.value)
    assert "cannot fetch ImageNet weights" in message and "--no_pretrained" in message and "\n" not in message


def test_ft_net_keeps_layumis_name():
    net = model.ft_net(class_num=10, pretrained=False)
    assert isinstance(net, model.ResNetReID) and net.classifier.classifier[0].out_features == 10


def test_usam_by_hand_and_in_the_network():
    """One bright position: its contrast with the 3x3 neighbourhood, 9 x 2 - 2 = 16, through an untrained
    BatchNorm (eval: x / sqrt(1 + eps)) and a ReLU, scales it; its neighbours' contrast is negative."""
    from reid.networks import USAM

    usam = USAM().eval()
    x = torch.zeros(1, 2, 4, 4)
    x[0, :, 1, 1] = 1
    out = usam(x)
    assert torch.allclose(out[0, :, 1, 1], torch.full((2,), 1 + 16 / (1 + 1e-5) ** 0.5))
    assert torch.equal(out[0, :, 2, 2], torch.zeros(2)) and out.shape == x.shape
    net = model.build_model("resnet50_usam", 5, pretrained=False).eval()
    assert {"usam_1.weight", "usam_1.weight2", "usam_2.bn.running_mean"} <= set(net.state_dict())   # layumi's keys
    assert net(torch.randn(2, 3, 64, 32)).shape == (2, 5)
    assert model.LEGACY_FLAGS["usam"] == "resnet50_usam"


def test_usam_trains_an_epoch_and_test_reads_the_run(prepared_market, tmp_path, monkeypatch, capsys):
    import test as stage4
    import train
    from conftest import run_cli

    monkeypatch.chdir(tmp_path)
    run_dir = train.main(["--data_dir", str(prepared_market), "--gpu_ids", "-1", "--usam", "--no_pretrained",
                          "--batchsize", "8", "--num_workers", "0", "--total_epoch", "1", "--name", "usam"])
    with open(os.path.join(run_dir, "opts.yaml")) as handle:
        saved = yaml.safe_load(handle)
    assert saved["backbone"] == "resnet50_usam" and saved["usam"] is True
    code, out, err = run_cli(stage4.main, ["--gpu_ids", "-1", "--name", "usam", "--test_dir", str(prepared_market),
                                           "--num_workers", "0", "--batchsize", "16"], capsys)
    assert code == 0 and "Rank@1:" in out, err


def test_a_network_normalises_with_the_datas_statistics_and_keeps_layumis_keys():
    from reid.images import IMAGENET_MEAN, IMAGENET_STD

    mean, std = [0.4, 0.3, 0.2], [0.1, 0.2, 0.3]
    plain = model.build_model("resnet18", 5, pretrained=False).eval()
    renormalising = model.build_model("resnet18", 5, pretrained=False, statistics=(mean, std)).eval()
    assert renormalising.state_dict().keys() == plain.state_dict().keys()
    renormalising.load_state_dict(plain.state_dict(), strict=True)
    pixels = torch.rand(2, 3, 256, 128)
    column = lambda values: torch.tensor(values).view(1, 3, 1, 1)   # noqa: E731
    as_fed = (pixels - column(IMAGENET_MEAN)) / column(IMAGENET_STD)    # what every stage gives the network
    as_wanted = (pixels - column(mean)) / column(std)
    assert torch.allclose(renormalising.renormalise(as_fed), as_wanted, atol=1e-5)
    expected = plain.features(as_wanted)
    assert torch.allclose(renormalising.features(as_fed), expected, atol=1e-4 * expected.abs().max().item())
    assert not torch.allclose(plain.features(as_fed), expected, atol=1e-4 * expected.abs().max().item())
    assert images.input_statistics({"norm_mean": list(IMAGENET_MEAN), "norm_std": list(IMAGENET_STD)}) is None
    with pytest.raises(model.UserError, match="not colour statistics"):
        images.input_statistics({"norm_mean": mean, "norm_std": [0.1, 0, 0.3]})
