"""Random Erasing data augmentation (Zhong et al., AAAI 2020), as train.py's ``--erasing_p``.

With probability ``probability`` a rectangle of the (normalised) image tensor, covering between
``sl`` and ``sh`` of its area with aspect ratio in [r1, 1/r1], is filled with ``mean``. It teaches
the model to cope with occlusion. Random numbers come from torch, so DataLoader seeding covers them.
"""
import math

import torch


class RandomErasing:
    """Erase one random rectangle of a CxHxW tensor with probability ``probability``."""

    def __init__(self, probability=0.5, sl=0.02, sh=0.4, r1=0.3, mean=(0.4914, 0.4822, 0.4465), attempts=100):
        self.probability, self.sl, self.sh, self.r1 = probability, sl, sh, r1
        self.mean = torch.tensor(mean, dtype=torch.float32)
        self.attempts = attempts

    def __call__(self, image):
        if torch.rand(1).item() >= self.probability:
            return image
        channels, height, width = image.shape
        for _ in range(self.attempts):
            area = height * width * (self.sl + (self.sh - self.sl) * torch.rand(1).item())
            log_ratio = math.log(self.r1) + (math.log(1 / self.r1) - math.log(self.r1)) * torch.rand(1).item()
            h = int(round(math.sqrt(area * math.exp(log_ratio))))
            w = int(round(math.sqrt(area / math.exp(log_ratio))))
            if 0 < h < height and 0 < w < width:
                top = int(torch.randint(0, height - h + 1, (1,)))
                left = int(torch.randint(0, width - w + 1, (1,)))
                image = image.clone()
                image[:, top:top + h, left:left + w] = self.mean[:channels].view(-1, 1, 1)
                return image
        return image

    def __repr__(self):
        return f"RandomErasing(probability={self.probability}, area=[{self.sl}, {self.sh}], r1={self.r1})"
