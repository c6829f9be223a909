"""ImageNet weights: fetched as torchvision, timm and pretrainedmodels do, or one line at once when offline;
and IBN-Net's ResNet-50-IBN-a, whose weights come from its authors' release."""
import os
import socket
from urllib.parse import urlparse

import torch
from torch import nn

from utils import UserError


def _reachable(url):
    """Can the weights' host be resolved? Offline, timm would retry for about a minute."""
    try:
        socket.getaddrinfo(urlparse(url).hostname, 443)
        return True
    except (socket.gaierror, UnicodeError):
        return False


def _offline_error(name, where):
    return UserError(f"cannot fetch ImageNet weights for {name} (offline?)",
                     f"pass --no_pretrained, or put the weights file in the cache at {where}")


def require_url_weights(name, url):
    """Weights fetched by torch.hub (torchvision, pretrainedmodels, IBN-Net) into its checkpoints dir."""
    cache_dir = os.path.join(torch.hub.get_dir(), "checkpoints")
    if not os.path.exists(os.path.join(cache_dir, os.path.basename(urlparse(url).path))) and not _reachable(url):
        raise _offline_error(name, os.path.join(cache_dir, os.path.basename(urlparse(url).path)))


def timm_backbone(name, pretrained, **kwargs):
    """A timm model without its classifier: ``model(x)`` is the pooled feature."""
    import timm

    if pretrained:
        from huggingface_hub import constants, try_to_load_from_cache

        repo = timm.get_pretrained_cfg(name).hf_hub_id
        cached = any(isinstance(try_to_load_from_cache(repo, f), str)
                     for f in ("model.safetensors", "pytorch_model.bin", "open_clip_pytorch_model.bin"))
        if not cached and not _reachable("https://huggingface.co"):
            raise _offline_error(name, os.path.join(constants.HF_HUB_CACHE, f"models--{repo.replace('/', '--')}"))
    try:
        return timm.create_model(name, pretrained=pretrained, num_classes=0, **kwargs)
    except OSError as err:  # a download that started but failed
        raise UserError(f"cannot fetch ImageNet weights for {name}: {err}", "pass --no_pretrained") from None


def torchvision_backbone(builder, weights, pretrained):
    """A torchvision model with ImageNet ``weights`` (an enum member) or random ones."""
    if pretrained:
        require_url_weights(builder.__name__, weights.url)
    try:
        return builder(weights=weights if pretrained else None)
    except OSError as err:
        raise UserError(f"cannot fetch ImageNet weights for {builder.__name__}: {err}",
                        "pass --no_pretrained") from None


IBN_A_URL = "https://github.com/XingangPan/IBN-Net/releases/download/v1.0/resnet50_ibn_a-d9d0bb7b.pth"


class IBN(nn.Module):
    """Instance-batch normalisation (Pan et al. 2018): InstanceNorm on half the channels, BN on the rest."""

    def __init__(self, planes):
        super().__init__()
        self.half = planes // 2
        self.IN = nn.InstanceNorm2d(self.half, affine=True)
        self.BN = nn.BatchNorm2d(planes - self.half)

    def forward(self, x):
        first, rest = torch.split(x, [self.half, x.size(1) - self.half], dim=1)
        return torch.cat((self.IN(first), self.BN(rest)), dim=1)


def resnet50_ibn_a(pretrained):
    """ResNet-50-IBN-a: IBN in the first norm of every block of layers 1-3 (IBN-Net's key names)."""
    from torchvision import models

    net = models.resnet50(weights=None)
    for layer in (net.layer1, net.layer2, net.layer3):
        for block in layer:
            block.bn1 = IBN(block.bn1.num_features)
    if pretrained:
        require_url_weights("resnet50_ibn_a", IBN_A_URL)
        try:
            net.load_state_dict(torch.hub.load_state_dict_from_url(IBN_A_URL, map_location="cpu"))
        except OSError as err:
            raise UserError(f"cannot fetch ImageNet weights for resnet50_ibn_a: {err}", "pass --no_pretrained") from None
    return net
