"""Stage 2: the backbone registry and the re-ID head.

Every network is a backbone that pools a picture into one vector (PCB: six, one per horizontal
stripe) followed by layumi's head ``ClassBlock``: Linear -> BatchNorm1d -> Dropout -> Linear(classes).
At test time the classifier is dropped and the bottleneck output is the feature.

    >>> import model
    >>> spec = model.get_backbone("resnet18")
    >>> net = model.build_model("resnet18", num_classes=751, pretrained=False)
    >>> spec.input_size, spec.feature_dim(linear_num=512)
    ((256, 128), 512)

``BACKBONES`` is the one registry; train.py, test.py and the tests all go through ``build_model``.
State-dict keys of resnet50, densenet121 and pcb are those of layumi's Person_reID_baseline_pytorch
(``model.conv1.weight``, ``classifier.add_block.0.weight``, ``classifier.classifier.0.weight``), so its
``net_last.pth`` files load here with ``strict=True``. ImageNet weights are fetched as torchvision /
timm / pretrainedmodels do; offline with an empty cache, ``build_model`` fails at once with one line.
"""
from dataclasses import dataclass
from typing import Callable, Optional

import torch
from torch import nn
from torch.nn import init

from reid.pretrained import require_url_weights, resnet50_ibn_a, timm_backbone, torchvision_backbone
from utils import UserError


def weights_init_kaiming(module):
    """layumi's initialisation of the bottleneck: kaiming fan_out for Linear, BN weight ~ N(1, 0.02)."""
    if isinstance(module, nn.Linear):
        init.kaiming_normal_(module.weight, a=0, mode="fan_out")
        init.zeros_(module.bias)
    elif isinstance(module, nn.BatchNorm1d):
        init.normal_(module.weight, 1.0, 0.02)
        init.zeros_(module.bias)


def weights_init_classifier(module):
    if isinstance(module, nn.Linear):
        init.normal_(module.weight, std=0.001)
        if module.bias is not None:   # BNNeck's classifier has none
            init.zeros_(module.bias)


class ClassBlock(nn.Module):
    """Linear(in -> linear) -> BatchNorm1d -> [LeakyReLU] -> Dropout -> Linear(-> classes).

    ``linear <= 0`` drops the first Linear (the bottleneck is then ``input_dim`` wide). With
    ``return_f`` the forward also returns the bottleneck feature (for metric losses).
    """

    def __init__(self, input_dim, class_num, droprate, relu=False, bnorm=True, linear=512, return_f=False,
                 bnneck=False):
        super().__init__()
        self.return_f, self.bnneck = return_f, bnneck
        layers = []
        if linear > 0:
            layers.append(nn.Linear(input_dim, linear))
        else:
            linear = input_dim
        if bnorm:
            layers.append(nn.BatchNorm1d(linear))
        if relu:
            layers.append(nn.LeakyReLU(0.1))
        if droprate > 0:
            layers.append(nn.Dropout(p=droprate))
        self.add_block = nn.Sequential(*layers)
        self.add_block.apply(weights_init_kaiming)
        self.classifier = nn.Sequential(nn.Linear(linear, class_num, bias=not bnneck))
        self.classifier.apply(weights_init_classifier)
        if bnneck:   # BoT: the BN only rescales, its shift stays 0
            self.add_block[0].bias.requires_grad_(False)

    def forward(self, x):
        feature = self.add_block(x)
        logits = self.classifier(feature)
        # BNNeck: metric losses see the feature before the BN, the classifier the one after it
        return (logits, x if self.bnneck else feature) if self.return_f else logits


class ReIDNet(nn.Module):
    """A backbone ``self.model`` whose ``pool`` gives one vector per picture, and a ClassBlock head."""

    def __init__(self, backbone, pooled_dim, class_num, droprate=0.5, linear_num=512, circle=False):
        super().__init__()
        self.model = backbone
        self.classifier = ClassBlock(pooled_dim, class_num, droprate, linear=linear_num, return_f=circle)

    def pool(self, x):
        return self.model(x)

    def forward(self, x):
        return self.classifier(self.pool(x))

    neck_feat = "after"   # with a BNNeck head, test on the feature after its BN ("after") or before it

    def features(self, x):
        """The test feature: the head's bottleneck output, before the classifier."""
        pooled = self.pool(x)
        return pooled if self.classifier.bnneck and self.neck_feat == "before" else self.classifier.add_block(pooled)


class ResNetReID(ReIDNet):
    """torchvision ResNet trunk + global average pooling (layumi's ``ft_net``).

    torchvision's ``fc`` stays in the module, unused, because layumi's checkpoints contain it.
    """

    def pool(self, x):
        m = self.model
        x = m.maxpool(m.relu(m.bn1(m.conv1(x))))
        x = m.layer4(m.layer3(m.layer2(m.layer1(x))))
        return torch.flatten(m.avgpool(x), 1)


class DenseNetReID(ReIDNet):
    """torchvision DenseNet-121 (layumi's ``ft_net_dense``): pooled straight after ``norm5``."""

    def pool(self, x):
        return torch.flatten(self.model.features(x), 1)


class PCB(nn.Module):
    """Part-based Convolutional Baseline (Sun et al. 2018): six stripes, one 256-d ClassBlock each.

    ``forward`` gives logits of shape (N, 6, classes); ``features`` the pooled stripes (N, 2048, 6),
    which test.py normalises per part (layumi's PCB test feature).
    """

    parts = 6

    def __init__(self, backbone, class_num, droprate=0.5):
        super().__init__()
        self.model = backbone
        self.avgpool = nn.AdaptiveAvgPool2d((self.parts, 1))
        self.dropout = nn.Dropout(p=0.5)
        for i in range(self.parts):
            setattr(self, f"classifier{i}", ClassBlock(2048, class_num, droprate, linear=256))

    def stripes(self, x):
        m = self.model
        x = m.maxpool(m.relu(m.bn1(m.conv1(x))))
        x = m.layer4(m.layer3(m.layer2(m.layer1(x))))
        return self.avgpool(x).flatten(2)   # (N, 2048, parts)

    def forward(self, x):
        x = self.dropout(self.stripes(x))
        return torch.stack([getattr(self, f"classifier{i}")(x[:, :, i]) for i in range(self.parts)], dim=1)

    def features(self, x):
        return self.stripes(x)


# --- pretrained weights: fetch, or fail at once with one line ---------------------------------------


# --- the registry -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class Backbone:
    """One registry entry: how to build the network, and what it expects and gives."""

    name: str
    build: Callable            # (num_classes, pretrained, droprate, linear_num, stride, circle) -> nn.Module
    input_size: tuple          # (height, width) of the pictures it is trained and tested on
    pooled_dim: int            # width of the pooled backbone vector
    legacy_flag: Optional[str] = None   # layumi's boolean that selects it (e.g. "use_dense")
    supports_stride: bool = False       # --stride 1 removes the last down-sampling
    heavy: bool = False                 # large transformers etc.: slow on CPU
    about: str = ""

    def feature_dim(self, linear_num=512):
        """Length of the test feature before L2 normalisation."""
        if self.name == "pcb":
            return self.pooled_dim * PCB.parts
        return linear_num if linear_num > 0 else self.pooled_dim


def _resnet(builder, weights_name, ibn=False):
    def build(num_classes, pretrained, droprate, linear_num, stride, circle):
        from torchvision import models

        trunk = (resnet50_ibn_a(pretrained) if ibn else
                 torchvision_backbone(builder(models), getattr(models, weights_name).DEFAULT, pretrained))
        trunk.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        if stride == 1:
            set_last_stride_one(trunk)
        return ResNetReID(trunk, trunk.fc.in_features, num_classes, droprate, linear_num, circle)
    return build


def set_last_stride_one(resnet):
    """Keep layer4 at layer3's resolution (a finer feature map; layumi's ``--stride 1``)."""
    block = resnet.layer4[0]
    block.conv1.stride = block.conv2.stride = (1, 1)   # Bottleneck strides in conv2, BasicBlock in conv1
    block.downsample[0].stride = (1, 1)


def _densenet(num_classes, pretrained, droprate, linear_num, stride, circle):
    from torchvision import models

    trunk = torchvision_backbone(models.densenet121, models.DenseNet121_Weights.DEFAULT, pretrained)
    trunk.features.avgpool = nn.AdaptiveAvgPool2d((1, 1))   # appended to ``features``, as layumi does
    if stride == 1:
        trunk.features.transition3.pool.stride = 1
    return DenseNetReID(trunk, 1024, num_classes, droprate, linear_num, circle)


def _pcb(num_classes, pretrained, droprate, linear_num, stride, circle):
    from torchvision import models

    trunk = torchvision_backbone(models.resnet50, models.ResNet50_Weights.DEFAULT, pretrained)
    set_last_stride_one(trunk)   # PCB always uses stride 1
    return PCB(trunk, num_classes, droprate)


def _mobilenet(num_classes, pretrained, droprate, linear_num, stride, circle):
    from torchvision import models

    trunk = torchvision_backbone(models.mobilenet_v3_small, models.MobileNet_V3_Small_Weights.DEFAULT, pretrained)
    trunk.classifier = nn.Flatten()   # features -> avgpool -> flatten: a 576-d vector
    for module in trunk.modules():
        if isinstance(module, nn.BatchNorm2d):
            # torchvision's 0.01 suits long ImageNet runs; in a short re-ID run the running
            # statistics would lag far behind the weights and ruin every evaluation
            module.momentum = 0.1
    return ReIDNet(trunk, 576, num_classes, droprate, linear_num, circle)


def _timm(timm_name, pooled_dim, **kwargs):
    def build(num_classes, pretrained, droprate, linear_num, stride, circle):
        trunk = timm_backbone(timm_name, pretrained, **kwargs)
        return ReIDNet(trunk, pooled_dim, num_classes, droprate, linear_num, circle)
    return build


def _nasnet(num_classes, pretrained, droprate, linear_num, stride, circle):
    import pretrainedmodels

    if pretrained:
        require_url_weights("nasnet", pretrainedmodels.pretrained_settings["nasnetalarge"]["imagenet"]["url"])
    trunk = pretrainedmodels.nasnetalarge(num_classes=1000, pretrained="imagenet" if pretrained else None)
    trunk.avg_pool, trunk.dropout, trunk.last_linear = nn.AdaptiveAvgPool2d((1, 1)), nn.Sequential(), nn.Sequential()
    return ReIDNet(trunk, 4032, num_classes, droprate, linear_num, circle)


BACKBONES = {spec.name: spec for spec in [
    Backbone("resnet50", _resnet(lambda m: m.resnet50, "ResNet50_Weights"), (256, 128), 2048,
             supports_stride=True, about="ResNet-50, layumi's ft_net (the default)"),
    Backbone("resnet50_ibn", _resnet(None, None, ibn=True), (256, 128), 2048, legacy_flag="ibn",
             supports_stride=True, about="ResNet-50-IBN-a"),
    Backbone("densenet121", _densenet, (256, 128), 1024, legacy_flag="use_dense", supports_stride=True,
             about="DenseNet-121, layumi's ft_net_dense"),
    Backbone("pcb", _pcb, (384, 192), 2048, legacy_flag="PCB", about="PCB: ResNet-50, six stripes"),
    Backbone("swin", _timm("swin_base_patch4_window7_224", 1024), (224, 224), 1024, legacy_flag="use_swin",
             heavy=True, about="Swin-B, 224x224"),
    Backbone("swinv2", _timm("swinv2_base_window8_256", 1024, img_size=(256, 128)), (256, 128), 1024,
             legacy_flag="use_swinv2", heavy=True, about="Swin-V2-B at 256x128"),
    Backbone("convnext", _timm("convnext_base", 1024), (256, 128), 1024, legacy_flag="use_convnext",
             heavy=True, about="ConvNeXt-B"),
    Backbone("hrnet18", _timm("hrnet_w18", 2048), (256, 128), 2048, legacy_flag="use_hr", about="HRNet-W18"),
    Backbone("efficientnet_b4", _timm("efficientnet_b4", 1792), (256, 128), 1792, legacy_flag="use_efficient",
             about="EfficientNet-B4 (timm)"),
    Backbone("nasnet", _nasnet, (256, 128), 4032, legacy_flag="use_NAS", heavy=True,
             about="NASNet-A-Large (pretrainedmodels)"),
    Backbone("dino", _timm("vit_base_patch16_224.dino", 768), (224, 224), 768, legacy_flag="use_dino",
             heavy=True, about="ViT-B/16 trained with DINO"),
    Backbone("resnet18", _resnet(lambda m: m.resnet18, "ResNet18_Weights"), (256, 128), 512,
             supports_stride=True, about="ResNet-18: small, for CPU practicals"),
    Backbone("mobilenet_v3", _mobilenet, (256, 128), 576, about="MobileNet-V3-Small: the fastest on CPU"),
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


def get_backbone(name):
    """The registry entry for ``name``; one line listing the valid names when it is unknown."""
    if name not in BACKBONES:
        raise UserError(f"unknown backbone {name!r}", f"choose one of: {', '.join(BACKBONES)}")
    return BACKBONES[name]


def build_model(name, num_classes, pretrained=True, droprate=0.5, linear_num=512, stride=2, circle=False,
                bnneck=False, neck_feat="after"):
    """Build backbone ``name`` with a head for ``num_classes`` identities.

    ``circle`` (layumi's name) makes the forward also return the feature for metric losses.
    ``bnneck`` replaces the head by BoT's BNNeck: pooled feature -> BatchNorm1d -> Linear without bias.
    """
    spec = get_backbone(name)
    net = spec.build(num_classes, pretrained, droprate, linear_num, stride, circle)
    if bnneck:
        if name == "pcb":
            raise UserError("--bnneck needs one feature per picture; PCB has six", "drop --bnneck or --PCB")
        net.classifier = ClassBlock(spec.pooled_dim, num_classes, droprate=0, linear=0, return_f=circle, bnneck=True)
        net.neck_feat = neck_feat
    return net


def ft_net(class_num=751, droprate=0.5, stride=2, circle=False, ibn=False, linear_num=512, pretrained=True):
    """layumi's name and signature for the ResNet-50 model, for course code that imports it."""
    return build_model("resnet50_ibn" if ibn else "resnet50", class_num, pretrained, droprate, linear_num,
                       stride, circle)
