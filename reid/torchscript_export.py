"""The trained network as TorchScript (export.py --format torchscript), and test.py --backend torchscript.

The module computes what the ONNX graph computes (reid/onnx_export.py): uint8 RGB pictures at the run's input
size in, test.py's L2-normalised feature of the picture plus its mirror image out. It is traced, then
frozen: freezing inlines the weights and folds every BatchNorm that directly follows a convolution or a
linear layer into it, so inference runs fewer layers (about half of a DenseNet's stay: those that come
before their convolutions). The file
runs with PyTorch alone, in Python or in C++ (libtorch). PyTorch 2 calls TorchScript deprecated in favour of
torch.export, but loads it still; the parity gate checks every file before it is kept.
"""
import warnings

import numpy as np
import torch

from reid.onnx_export import TestTimeNetwork, features_by_batch
from utils import UserError


def batch_norms(graph):
    return len(graph.findAllNodes("aten::batch_norm"))


def export(net, size, path):
    """Trace, freeze and save ``net``'s test-time module; returns (BatchNorm operations in the traced graph,
    those left after folding). The graph runs the network twice (the picture and its mirror image), so each
    BatchNorm layer counts twice."""
    example = torch.randint(0, 256, (2, 3, *size), dtype=torch.uint8)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")   # the tracer's notes on constants, TorchScript's deprecation notice
        traced = torch.jit.trace(TestTimeNetwork(net).eval(), (example,))
        operations = batch_norms(traced.inlined_graph)
        frozen = torch.jit.freeze(traced)
    frozen.save(path)
    return operations, batch_norms(frozen.graph)


def quiet_load(path, device):
    """torch.jit.load without its deprecation notice (the module docstring says why TorchScript still)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        return torch.jit.load(path, map_location=device)


def load(path, size, device, export_again):
    """The saved module on ``device``, refused in one line unless it maps uint8 pictures of ``size`` to features."""
    try:
        module = quiet_load(path, device)
        with torch.no_grad():
            out = module(torch.zeros(1, 3, *size, dtype=torch.uint8, device=device))
    except Exception as err:   # torch.jit's error types share no base but Exception
        reason = str(err).strip().splitlines()[0][:160] if str(err).strip() else type(err).__name__
        raise UserError(f"{path} is not a TorchScript module export.py wrote for pictures of {size[0]}x{size[1]} "
                        f"({reason})", f"export it again: {export_again}") from None
    if out.dim() != 2 or len(out) != 1:
        raise UserError(f"{path} gives {tuple(out.shape)} for one picture, not one feature vector",
                        f"export it again: {export_again}")
    return module


def extract(module, dataset, batchsize, device, num_workers=0, desc="features"):
    """test.py --backend torchscript: the features of every (uint8) picture of ``dataset``, float32 on the CPU."""
    return features_by_batch(lambda pictures: module(pictures.to(device)), dataset, batchsize, num_workers, desc)


def produce(path):
    """The parity gate's view of a saved module: uint8 pictures -> NumPy features."""
    module = quiet_load(path, "cpu")

    def run(pictures):
        with torch.no_grad():
            return np.asarray(module(pictures).numpy())
    return run
