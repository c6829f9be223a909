"""The re-ID networks: a backbone that pools a picture into a vector and layumi's head ``ClassBlock``
(Linear -> BatchNorm1d -> Dropout -> Linear(classes)); PCB pools six stripes. model.py's registry builds them."""
import torch
from torch import nn
from torch.nn import init


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


def freeze_unused(backbone, head):
    """Mark the trunk's unused ImageNet classifier ``head`` as not trainable: it keeps its place in the
    state_dict (layumi's checkpoints load strictly), and DistributedDataParallel, which waits for a
    gradient of every trainable parameter, does not wait for it. The optimiser skipped it already."""
    if head is not None and hasattr(backbone, head):
        getattr(backbone, head).requires_grad_(False)


class Renormalising(nn.Module):
    """A network that can take its pictures normalised with a dataset's own colour statistics.

    Every stage feeds pictures normalised with ImageNet's mean and std; after ``set_input_statistics(mean,
    std)`` the network first maps them to (pixel - mean) / std, one multiply-add per channel. The two
    buffers are not saved in the state_dict (its keys stay layumi's): opts.yaml's norm_mean/norm_std are
    the record, and model.load_trained sets them again.
    """

    def __init__(self):
        super().__init__()
        self.register_buffer("input_scale", None, persistent=False)
        self.register_buffer("input_shift", None, persistent=False)

    def set_input_statistics(self, mean, std):
        from reid.images import IMAGENET_MEAN, IMAGENET_STD

        mean, std, imagenet_mean, imagenet_std = (torch.tensor(v, dtype=torch.float32).view(1, 3, 1, 1)
                                                  for v in (mean, std, IMAGENET_MEAN, IMAGENET_STD))
        self.input_scale = imagenet_std / std                   # x = (p - m_I) / s_I  ->  (p - m) / s
        self.input_shift = (imagenet_mean - mean) / std

    def renormalise(self, x):
        return x if self.input_scale is None else torch.addcmul(self.input_shift, x, self.input_scale)


class ReIDNet(Renormalising):
    """A backbone ``self.model`` whose ``pool`` gives one vector per picture, and a ClassBlock head."""

    unused_head = None   # the trunk's own ImageNet classifier, kept for layumi's checkpoints but never run

    def __init__(self, backbone, pooled_dim, class_num, droprate=0.5, linear_num=512, circle=False):
        super().__init__()
        self.model = backbone
        self.classifier = ClassBlock(pooled_dim, class_num, droprate, linear=linear_num, return_f=circle)
        freeze_unused(backbone, self.unused_head)

    def pool(self, x):
        return self.model(x)

    def forward(self, x):
        return self.classifier(self.pool(self.renormalise(x)))

    neck_feat = "after"   # with a BNNeck head, test on the feature after its BN ("after") or before it

    def features(self, x):
        """The test feature: the head's bottleneck output, before the classifier."""
        pooled = self.pool(self.renormalise(x))
        return pooled if self.classifier.bnneck and self.neck_feat == "before" else self.classifier.add_block(pooled)


class ResNetReID(ReIDNet):
    """torchvision ResNet trunk + global average pooling (layumi's ``ft_net``).

    torchvision's ``fc`` stays in the module, unused, because layumi's checkpoints contain it.
    """

    unused_head = "fc"

    def pool(self, x):
        m = self.model
        x = m.maxpool(m.relu(m.bn1(m.conv1(x))))
        x = m.layer4(m.layer3(m.layer2(m.layer1(x))))
        return torch.flatten(m.avgpool(x), 1)


class USAM(nn.Module):
    """The parameter-free spatial attention of layumi's ``--usam``: the channels are summed into one map,
    each position's contrast with its 3x3 neighbourhood (9 x itself minus the 3x3 sum) goes through a
    BatchNorm and a ReLU, and scales the input: ``x + attention * x``. The border gets no attention
    (layumi's ``polish``). The two fixed kernels are frozen parameters, as in layumi's module, so that
    its checkpoints load."""

    def __init__(self):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(1, 1, 3, 3), requires_grad=False)    # the 3x3 sum
        self.weight2 = nn.Parameter(torch.full((1, 1, 1, 1), 9.0), requires_grad=False)   # 9 x itself
        self.bn = nn.BatchNorm2d(1)

    def forward(self, x):
        summed = x.sum(1, keepdim=True)
        contrast = nn.functional.conv2d(summed, self.weight2) - nn.functional.conv2d(summed, self.weight, padding=1)
        attention = nn.functional.pad(torch.relu(self.bn(contrast))[:, :, 1:-1, 1:-1], (1, 1, 1, 1))
        return x + attention * x


class ResNetUSAM(ResNetReID):
    """layumi's ``ft_net`` with ``--usam``: USAM after the stem (before its max-pool) and after layer1."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.usam_1, self.usam_2 = USAM(), USAM()

    def pool(self, x):
        m = self.model
        x = m.maxpool(self.usam_1(m.relu(m.bn1(m.conv1(x)))))
        x = m.layer4(m.layer3(m.layer2(self.usam_2(m.layer1(x)))))
        return torch.flatten(m.avgpool(x), 1)


class DenseNetReID(ReIDNet):
    """torchvision DenseNet-121 (layumi's ``ft_net_dense``): pooled straight after ``norm5``."""

    unused_head = "classifier"

    def pool(self, x):
        return torch.flatten(self.model.features(x), 1)


class PCB(Renormalising):
    """Part-based Convolutional Baseline (Sun et al. 2018): six stripes, one 256-d ClassBlock each.

    ``forward`` gives logits of shape (N, 6, classes); ``features`` the pooled stripes (N, 2048, 6),
    which test.py normalises per part (layumi's PCB test feature).
    """

    parts = 6

    def __init__(self, backbone, class_num, droprate=0.5):
        super().__init__()
        self.model = backbone
        freeze_unused(backbone, "fc")
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
        x = self.dropout(self.stripes(self.renormalise(x)))
        return torch.stack([getattr(self, f"classifier{i}")(x[:, :, i]) for i in range(self.parts)], dim=1)

    def features(self, x):
        return self.stripes(self.renormalise(x))
