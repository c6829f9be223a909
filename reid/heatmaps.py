"""Where a match comes from: Grad-CAM of the similarity between two pictures (demo.py --heatmap, the report).

The score of a gallery picture is the cosine of its feature with the query's. Its gradient with respect to
the picture's last spatial feature map (the input of the backbone's global pooling) says how much each
channel at each place raises that score; Grad-CAM (Selvaraju et al., ICCV 2017) weights each channel by its
mean gradient, sums them and keeps the positive part. The map of a gallery picture shows what in it makes
it match *this* query; the query's own map shows what makes it match its first-ranked picture (right or wrong).

Why not the plain activation map that layumi's visual_heatmap.py draws (the feature map's mean over
channels)? It shows where the network responds to anything at all: the same map whatever the query, so it
cannot explain one ranking. The gradient of the similarity can.

The feature map is found the same way for every backbone of the registry: the input of the last global
pooling module (torchvision's and timm's, PCB's stripes included), or, for a vision transformer, the patch
tokens entering its last block, laid back on the patch grid. Each picture is taken alone (not with its
mirror image), so a map explains the cosine of that one view, which is close to the test score.
"""
import torch
import torch.nn.functional as F

POOLS = ("AdaptiveAvgPool2d", "FastAdaptiveAvgPool")   # torchvision's, PCB's, nasnet's, timm's (NCHW or NHWC)


def feature_map_point(net):
    """(module, to_nchw): the module whose first input is the last spatial feature map, and a function that
    turns that input into (N, C, H, W)."""
    pools = [module for module in net.modules() if type(module).__name__ in POOLS]
    if pools:
        pool = pools[-1]
        channels_last = tuple(getattr(pool, "dim", (2, 3))) == (1, 2)   # timm's NHWC pooling (swin)
        return pool, (lambda x: x.permute(0, 3, 1, 2)) if channels_last else (lambda x: x)
    vit = getattr(net, "model", None)
    if vit is not None and hasattr(vit, "blocks") and hasattr(vit, "patch_embed"):
        height, width = vit.patch_embed.grid_size
        skip = getattr(vit, "num_prefix_tokens", 1)
        return vit.blocks[-1], lambda x: x[:, skip:].reshape(len(x), height, width, -1).permute(0, 3, 1, 2)
    raise ValueError(f"{type(net).__name__} has no global pooling nor patch tokens to draw a heatmap from")


def similarity_maps(net, images, targets):
    """Grad-CAM maps (N, H, W), each scaled to [0, 1], at the pictures' size: where in ``images[i]`` (normalised
    pictures) the cosine of its feature with ``targets[i]`` (L2-normalised features) comes from."""
    module, to_nchw = feature_map_point(net)
    captured = []
    handle = module.register_forward_pre_hook(lambda _, inputs: captured.append(inputs[0]))
    try:
        with torch.enable_grad():
            features = F.normalize(net.features(images).flatten(1), dim=1)
            score = (features * targets.to(features.dtype)).sum()   # each picture's own cosine, summed
            gradient, = torch.autograd.grad(score, captured[-1])
    finally:
        handle.remove()
    fmap, gradient = to_nchw(captured[-1].detach()), to_nchw(gradient)
    cam = F.relu((gradient.mean((2, 3), keepdim=True) * fmap).sum(1))
    cam = cam / cam.flatten(1).max(1).values.clamp_min(1e-12)[:, None, None]
    return F.interpolate(cam[:, None], size=images.shape[-2:], mode="bilinear", align_corners=False)[:, 0]


def overlay(picture, heat, alpha=0.5):
    """``picture`` (PIL RGB) blended with ``heat`` (2-D, in [0, 1]) through matplotlib's jet colour map."""
    import numpy as np
    from matplotlib import colormaps
    from PIL import Image

    colours = colormaps["jet"](np.asarray(heat, dtype=np.float32))[..., :3]
    heat_picture = Image.fromarray((colours * 255).astype(np.uint8)).resize(picture.size, Image.BILINEAR)
    return Image.blend(picture, heat_picture, alpha)


def strip_maps(net, paths, targets, size, device):
    """Maps for the pictures at ``paths`` (as test.py decodes and resizes them) against ``targets``."""
    from reid import pipeline

    pictures = pipeline.ResizedPictures([(path, 0) for path in paths], size)
    batch = torch.stack([pictures[i][0] for i in range(len(paths))]).to(device)
    net.eval()
    return similarity_maps(net, pipeline.normalise_pixels(batch), torch.as_tensor(targets, device=device)).cpu().numpy()
