"""The trained network as an ONNX graph that computes test.py's feature, the parity gate every export
passes, and ONNX Runtime extraction for test.py --backend onnxruntime.

Inside the graph: uint8 RGB pictures (N, 3, H, W) at the run's input size -> ImageNet normalisation ->
the feature of the picture plus that of its mirror image -> L2 normalisation (PCB: each stripe divided
by its norm times sqrt(6), then concatenated). So the caller only decodes and resizes, and the graph's output is test.py's
feature at --ms 1. onnx, onnxscript and onnxruntime are optional (requirements-export.txt).
"""
import importlib.util

import numpy as np
import torch

from reid.extraction import normalise
from reid.pipeline import normalise_pixels
from utils import UserError

PACKAGES = ("onnx", "onnxscript", "onnxruntime")
MIN_COSINE = 0.9999        # each picture's feature, ONNX Runtime against PyTorch
# different pictures must not give the same feature (torchreid #316's graph returned one vector for every
# input); an untrained ResNet-50 puts random pictures 0.9999 apart, so only near-identity fails
MAX_SIMILAR = 0.99999


def require_onnx():
    """One line saying what to install when the optional packages are missing."""
    missing = [name for name in PACKAGES if importlib.util.find_spec(name) is None]
    if missing:
        raise UserError(f"{', '.join(missing)} not installed (ONNX export and ONNX Runtime are optional)",
                        "pip install -r requirements-export.txt")


class TestTimeNetwork(torch.nn.Module):
    """test.py's feature as one module: uint8 pictures in, L2-normalised flip-summed features out."""

    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, pictures):
        images = normalise_pixels(pictures)
        return normalise(self.net.features(images) + self.net.features(images.flip(3)))


def export(net, size, path, opset=18):
    """Write ``net``'s test-time graph to ``path`` with a dynamic batch (the dynamo exporter)."""
    import warnings

    example = torch.randint(0, 256, (2, 3, *size), dtype=torch.uint8)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(TestTimeNetwork(net).eval(), (example,), dynamo=True, opset_version=opset,
                                    input_names=["pictures"], output_names=["features"], verbose=False,
                                    dynamic_shapes=({0: torch.export.Dim("batch", min=1, max=4096)},))
    program.save(path)


def session(path):
    """An ONNX Runtime session on the CPU (CUDA when onnxruntime-gpu offers it)."""
    import onnxruntime

    providers = [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in onnxruntime.get_available_providers()]
    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3
    return onnxruntime.InferenceSession(path, options, providers=providers)


def open_graph(path, size, export_again):
    """An ONNX Runtime session on ``path``, refused in one line unless it is a graph export.py writes for
    pictures of ``size`` (H, W): one uint8 input ``pictures`` [batch, 3, H, W] with a free batch dimension.
    ``export_again``: the command that writes a right one."""
    try:
        runner = session(path)
    except Exception as err:   # onnxruntime's own classes (InvalidProtobuf, Fail, ...) share no base but Exception
        raise UserError(f"{path} is not an ONNX graph ONNX Runtime can load ({str(err).splitlines()[0][:160]})",
                        f"export it again: {export_again}") from None
    inputs = runner.get_inputs()
    only = inputs[0] if len(inputs) == 1 else None
    fits = only is not None and len(only.shape) == 4 and not isinstance(only.shape[0], int) and \
        [only.name, only.type, *only.shape[1:]] == ["pictures", "tensor(uint8)", 3, *size]   # a free batch dimension
    if not fits:
        seen = "; ".join(f"{i.name} {i.type} {i.shape}" for i in inputs)
        raise UserError(f"{path} is not a graph export.py wrote for this run (inputs: {seen}; expected pictures "
                        f"tensor(uint8) [batch, 3, {size[0]}, {size[1]}])", f"export it again: {export_again}")
    return runner


def produce(path):
    """The parity gate's view of an ONNX graph: uint8 pictures -> NumPy features, by ONNX Runtime."""
    runner = session(path)
    return lambda pictures: runner.run(None, {"pictures": pictures.numpy()})[0]


def parity(produced_by, net, pictures):
    """The gate: (lowest per-picture cosine, highest cosine between different pictures) of an exported file's
    features (``produced_by(pictures)``: ``produce`` here, or reid.torchscript_export's) against PyTorch's for
    uint8 ``pictures``; a UserError when either is off."""
    with torch.no_grad():
        expected = TestTimeNetwork(net).eval()(pictures).numpy()
    produced = produced_by(pictures)
    agreement = float((expected * produced).sum(1).min())
    between = produced @ produced.T
    similar = float(between[~np.eye(len(produced), dtype=bool)].max()) if len(produced) > 1 else 0.0
    if not similar < MAX_SIMILAR:
        own = expected @ expected.T
        raise UserError(f"the exported graph gives different pictures the same feature (cosine {similar:.6f}; "
                        f"PyTorch's {float(own[~np.eye(len(own), dtype=bool)].max()):.6f}); nothing was kept",
                        "check the checkpoint (test.py) before exporting it")
    if not agreement >= MIN_COSINE:
        raise UserError(f"the exported graph disagrees with PyTorch (lowest cosine {agreement:.6f} < {MIN_COSINE}); "
                        "nothing was kept", "export with another --opset or --format, or report the backbone")
    return agreement, similar


def features_by_batch(run, dataset, batchsize, num_workers=0, desc="features"):
    """The features of every (uint8) picture of ``dataset`` as a float32 tensor, ``run(pictures)`` giving each
    batch's (an exported file's: this graph's, or reid.torchscript_export's module's)."""
    from tqdm import tqdm

    loader = torch.utils.data.DataLoader(dataset, batchsize, shuffle=False, num_workers=num_workers)
    rows = []
    with torch.no_grad(), tqdm(total=len(dataset), desc=desc, unit="img", leave=False) as bar:
        for pictures, _ in loader:
            rows.append(torch.as_tensor(run(pictures)).float().cpu())
            bar.update(len(pictures))
    return torch.cat(rows)


def extract(runner, dataset, batchsize, num_workers=0, desc="features"):
    """test.py --backend onnxruntime: the features of every (uint8) picture of ``dataset``, float32, from the
    session ``runner`` (``open_graph``)."""
    return features_by_batch(lambda pictures: runner.run(None, {"pictures": pictures.numpy()})[0], dataset,
                             batchsize, num_workers, desc)
