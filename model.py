"""Stage 2: the backbone registry, the head options, and ``load_trained`` for test.py and demo.py.

Every network is a backbone that pools a picture into one vector (PCB: six, one per horizontal
stripe) followed by layumi's head ``ClassBlock``: Linear -> BatchNorm1d -> Dropout -> Linear(classes).
At test time the classifier is dropped and the bottleneck output is the feature.

    >>> import model
    >>> spec = model.get_backbone("resnet18")
    >>> net = model.build_model("resnet18", num_classes=751, pretrained=False)
    >>> spec.input_size, spec.feature_dim(linear_num=512)
    ((256, 128), 512)

``BACKBONES`` is the one registry; train.py, test.py and the tests all go through ``build_model``.
``HEAD_OPTIONS`` is the one table of options that shape the network (train.py's flags, opts.yaml's keys,
test.py's overrides); ``load_trained(run_dir, which_epoch, device, overrides)`` rebuilds a trained run.
The network classes live in reid/networks.py and are importable from here (``from model import ft_net, PCB``).
State-dict keys of resnet50, densenet121 and pcb are those of layumi's Person_reID_baseline_pytorch
(``model.conv1.weight``, ``classifier.add_block.0.weight``, ``classifier.classifier.0.weight``), so its
``net_last.pth`` files load here with ``strict=True``. ImageNet weights are fetched as torchvision /
timm / pretrainedmodels do; offline with an empty cache, ``build_model`` fails at once with one line.
"""
import os
from dataclasses import dataclass
from typing import Callable, Optional

from torch import nn

from reid.files import check_saved_kinds, load_yaml
from reid.images import input_statistics
from reid.networks import PCB, ClassBlock, DenseNetReID, ReIDNet, ResNetReID, ResNetUSAM  # noqa: F401  (course code imports them from here)
from reid.pretrained import require_url_weights, resnet50_ibn_a, timm_backbone, torchvision_backbone
from reid.runs import checkpoint_path, load_weights
from utils import UserError


# --- pretrained weights: fetch, or fail at once with one line ---------------------------------------


# --- the registry -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class Backbone:
    """One registry entry: how to build the network, and what it expects and gives."""

    name: str
    build: Callable            # (pooled_dim, num_classes, pretrained, droprate, linear_num, stride, circle) -> nn.Module
    input_size: tuple          # (height, width) of the pictures it is trained and tested on
    pooled_dim: int            # width of the pooled backbone vector
    legacy_flag: Optional[str] = None   # layumi's boolean that selects it (e.g. "use_dense")
    supports_stride: bool = False       # --stride 1 removes the last down-sampling
    heavy: bool = False                 # large transformers etc.: slow on CPU
    parts: int = 1                      # features per picture (PCB: one per stripe)

    def feature_dim(self, linear_num=512):
        """Length of the test feature before L2 normalisation."""
        if self.parts > 1:
            return self.pooled_dim * self.parts
        return linear_num if linear_num > 0 else self.pooled_dim


def _resnet(builder, weights_name, ibn=False, usam=False):
    def build(pooled_dim, num_classes, pretrained, droprate, linear_num, stride, circle):
        from torchvision import models

        trunk = (resnet50_ibn_a(pretrained) if ibn else
                 torchvision_backbone(builder(models), getattr(models, weights_name).DEFAULT, pretrained))
        trunk.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        if stride == 1:
            set_last_stride_one(trunk)
        return (ResNetUSAM if usam else ResNetReID)(trunk, pooled_dim, num_classes, droprate, linear_num, circle)
    return build


def set_last_stride_one(resnet):
    """Keep layer4 at layer3's resolution (a finer feature map; layumi's ``--stride 1``)."""
    block = resnet.layer4[0]
    block.conv1.stride = block.conv2.stride = (1, 1)   # Bottleneck strides in conv2, BasicBlock in conv1
    block.downsample[0].stride = (1, 1)


def _densenet(pooled_dim, num_classes, pretrained, droprate, linear_num, stride, circle):
    from torchvision import models

    trunk = torchvision_backbone(models.densenet121, models.DenseNet121_Weights.DEFAULT, pretrained)
    trunk.features.avgpool = nn.AdaptiveAvgPool2d((1, 1))   # appended to ``features``, as layumi does
    if stride == 1:
        trunk.features.transition3.pool.stride = 1
    return DenseNetReID(trunk, pooled_dim, num_classes, droprate, linear_num, circle)


def _pcb(pooled_dim, num_classes, pretrained, droprate, linear_num, stride, circle):
    from torchvision import models

    trunk = torchvision_backbone(models.resnet50, models.ResNet50_Weights.DEFAULT, pretrained)
    set_last_stride_one(trunk)   # PCB always uses stride 1
    return PCB(trunk, num_classes, droprate)


def _mobilenet(pooled_dim, num_classes, pretrained, droprate, linear_num, stride, circle):
    from torchvision import models

    trunk = torchvision_backbone(models.mobilenet_v3_small, models.MobileNet_V3_Small_Weights.DEFAULT, pretrained)
    trunk.classifier = nn.Flatten()   # features -> avgpool -> flatten: a 576-d vector
    for module in trunk.modules():
        if isinstance(module, nn.BatchNorm2d):
            # torchvision's 0.01 suits long ImageNet runs; in a short re-ID run the running
            # statistics would lag far behind the weights and ruin every evaluation
            module.momentum = 0.1
    return ReIDNet(trunk, pooled_dim, num_classes, droprate, linear_num, circle)


def _timm(timm_name, **kwargs):
    def build(pooled_dim, num_classes, pretrained, droprate, linear_num, stride, circle):
        trunk = timm_backbone(timm_name, pretrained, **kwargs)
        return ReIDNet(trunk, pooled_dim, num_classes, droprate, linear_num, circle)
    return build


def _nasnet(pooled_dim, num_classes, pretrained, droprate, linear_num, stride, circle):
    import pretrainedmodels

    if pretrained:
        require_url_weights("nasnet", pretrainedmodels.pretrained_settings["nasnetalarge"]["imagenet"]["url"])
    trunk = pretrainedmodels.nasnetalarge(num_classes=1000, pretrained="imagenet" if pretrained else None)
    trunk.avg_pool, trunk.dropout, trunk.last_linear = nn.AdaptiveAvgPool2d((1, 1)), nn.Sequential(), nn.Sequential()
    return ReIDNet(trunk, pooled_dim, num_classes, droprate, linear_num, circle)


BACKBONES = {spec.name: spec for spec in [
    Backbone("resnet50", _resnet(lambda m: m.resnet50, "ResNet50_Weights"), (256, 128), 2048,
             supports_stride=True),
    Backbone("resnet50_ibn", _resnet(None, None, ibn=True), (256, 128), 2048, legacy_flag="ibn",
             supports_stride=True),
    Backbone("resnet50_usam", _resnet(lambda m: m.resnet50, "ResNet50_Weights", usam=True), (256, 128), 2048,
             legacy_flag="usam", supports_stride=True),
    Backbone("densenet121", _densenet, (256, 128), 1024, legacy_flag="use_dense", supports_stride=True),
    Backbone("pcb", _pcb, (384, 192), 2048, legacy_flag="PCB", parts=PCB.parts),
    Backbone("swin", _timm("swin_base_patch4_window7_224"), (224, 224), 1024, legacy_flag="use_swin",
             heavy=True),
    Backbone("swinv2", _timm("swinv2_base_window8_256", img_size=(256, 128)), (256, 128), 1024,
             legacy_flag="use_swinv2", heavy=True),
    Backbone("convnext", _timm("convnext_base"), (256, 128), 1024, legacy_flag="use_convnext",
             heavy=True),
    Backbone("hrnet18", _timm("hrnet_w18"), (256, 128), 2048, legacy_flag="use_hr"),
    Backbone("efficientnet_b4", _timm("efficientnet_b4"), (256, 128), 1792, legacy_flag="use_efficient"),
    Backbone("nasnet", _nasnet, (256, 128), 4032, legacy_flag="use_NAS", heavy=True),
    Backbone("dino", _timm("vit_base_patch16_224.dino"), (224, 224), 768, legacy_flag="use_dino",
             heavy=True),
    Backbone("resnet18", _resnet(lambda m: m.resnet18, "ResNet18_Weights"), (256, 128), 512,
             supports_stride=True),
    Backbone("mobilenet_v3", _mobilenet, (256, 128), 576),
]}


LEGACY_FLAGS = {spec.legacy_flag: name for name, spec in BACKBONES.items() if spec.legacy_flag}


def add_backbone_arguments(parser, default):
    """``--backbone NAME`` and layumi's booleans (``--use_dense``...) as its aliases, for train.py and test.py."""
    parser.add_argument("--backbone", default=default, help=f"one of: {', '.join(BACKBONES)}")
    for flag, name in LEGACY_FLAGS.items():
        parser.add_argument(f"--{flag}", action="store_true", help=f"same as --backbone {name}")


def backbone_from_legacy(options):
    """The backbone an options mapping selects with layumi's booleans (``use_dense: true``...), or None."""
    chosen = [name for flag, name in LEGACY_FLAGS.items() if options.get(flag)]
    return chosen[0] if chosen else None


@dataclass(frozen=True)
class HeadOption:
    """An option that shapes the trained network: train.py's flag, opts.yaml's key, test.py's override."""

    kind: type          # int, float, bool or str: also how a hand-edited opts.yaml value is checked
    default: object
    help: str
    choices: Optional[tuple] = None
    overridable: bool = False   # test.py may build the network differently from opts.yaml


HEAD_OPTIONS = {
    "stride": HeadOption(int, 2, "stride of the last stage (1 = finer)", (1, 2), overridable=True),
    "linear_num": HeadOption(int, 512, "bottleneck width (<= 0: no bottleneck Linear)", overridable=True),
    "droprate": HeadOption(float, 0.5, "dropout rate in the head"),
    "bnneck": HeadOption(bool, False, "BoT's BNNeck head: metric losses on the pooled feature, the classifier "
                                      "after a BatchNorm"),
    "neck_feat": HeadOption(str, "after", "--bnneck: test on the feature after the BatchNorm or before it",
                            ("after", "before"), overridable=True),
}


def add_head_arguments(parser, overrides=False):
    """train.py: every head option with its default; test.py (``overrides``): the overridable ones,
    defaulting to None, which means opts.yaml's value."""
    for key, option in HEAD_OPTIONS.items():
        if overrides and not option.overridable:
            continue
        help_text = f"override opts.yaml: {option.help}" if overrides else option.help
        if option.kind is bool:
            parser.add_argument(f"--{key}", action="store_true", help=help_text)
        else:
            parser.add_argument(f"--{key}", type=option.kind, choices=option.choices, help=help_text,
                                default=None if overrides else option.default)


def trained_options(run_dir, overrides=None):
    """The network a run trained: defaults <- its opts.yaml <- ``overrides`` (backbone and head options).

    A layumi-written opts.yaml selects its backbone with booleans (``use_dense: true``) instead.
    Returns (options, the saved mapping).
    """
    overrides = overrides or {}
    path = os.path.join(run_dir, "opts.yaml")
    saved = load_yaml(path, f"train.py --name {os.path.basename(run_dir)}")
    options = {key: saved.get(key, option.default) for key, option in HEAD_OPTIONS.items()}
    options.update({key: value for key, value in overrides.items() if key in HEAD_OPTIONS})
    options["backbone"] = (overrides.get("backbone") or saved.get("backbone") or backbone_from_legacy(saved)
                           or "resnet50")
    if "nclasses" not in saved:
        raise UserError(f"{run_dir}/opts.yaml has no nclasses", "add the number of training identities to it")
    options["nclasses"] = saved["nclasses"]
    expected = {key: (option.kind, option.choices) for key, option in HEAD_OPTIONS.items()}
    check_saved_kinds(path, {**saved, **options}, {**expected, "backbone": (str, None), "nclasses": (int, None)})
    if options["nclasses"] < 1:
        raise UserError(f"{path}: nclasses is {options['nclasses']}", "set it to the number of training identities")
    get_backbone(options["backbone"])
    return options, saved


def load_trained(run_dir, which_epoch, device, overrides=None):
    """Rebuild a trained network from the registry and load its checkpoint, in eval mode on ``device``.

    Used by test.py and demo.py. Returns (network, the options it was built with).
    """
    options, _ = trained_options(run_dir, overrides)
    path = checkpoint_path(run_dir, str(which_epoch))
    options, saved = trained_options(run_dir, overrides)
    net = build_model(options["backbone"], options["nclasses"], pretrained=False,
                      statistics=input_statistics(saved, os.path.join(run_dir, "opts.yaml")),
                      **{key: options[key] for key in HEAD_OPTIONS})
    state = load_weights(path, "pass another --which_epoch, or train again (python train.py --help)")
    if state and all(key.startswith("module.") for key in state):   # saved from a DataParallel wrapper
        state = {key[len("module."):]: value for key, value in state.items()}
    try:
        net.load_state_dict(state, strict=True)
    except RuntimeError as err:
        first = str(err).splitlines()[1].strip() if len(str(err).splitlines()) > 1 else str(err)
        raise UserError(f"{path} does not fit a {options['backbone']} model as opts.yaml describes it ({first})",
                        "pass the backbone flags it was trained with (e.g. --use_dense, --linear_num)") from None
    return net.to(device).eval(), options


def get_backbone(name):
    """The registry entry for ``name``; one line listing the valid names when it is unknown."""
    if name not in BACKBONES:
        raise UserError(f"unknown backbone {name!r}", f"choose one of: {', '.join(BACKBONES)}")
    return BACKBONES[name]


def build_model(name, num_classes, pretrained=True, droprate=0.5, linear_num=512, stride=2, circle=False,
                bnneck=False, neck_feat="after", statistics=None):
    """Build backbone ``name`` with a head for ``num_classes`` identities.

    ``circle`` (layumi's name) makes the forward also return the feature for metric losses.
    ``bnneck`` replaces the head by BoT's BNNeck: pooled feature -> BatchNorm1d -> Linear without bias.
    ``statistics``: (mean, std) to normalise pictures with instead of ImageNet's (``reid.images.input_statistics``).
    """
    spec = get_backbone(name)
    net = spec.build(spec.pooled_dim, num_classes, pretrained, droprate, linear_num, stride, circle)
    if bnneck:
        if spec.parts > 1:
            raise UserError(f"--bnneck needs one feature per picture; {name} has {spec.parts}", "drop --bnneck")
        net.classifier = ClassBlock(spec.pooled_dim, num_classes, droprate=0, linear=0, return_f=circle, bnneck=True)
        net.neck_feat = neck_feat
    if statistics is not None:
        net.set_input_statistics(*statistics)
    return net


def ft_net(class_num=751, droprate=0.5, stride=2, circle=False, ibn=False, linear_num=512, pretrained=True):
    """layumi's name and signature for the ResNet-50 model, for course code that imports it."""
    return build_model("resnet50_ibn" if ibn else "resnet50", class_num, pretrained, droprate, linear_num,
                       stride, circle)
