"""Stage 7: export a trained run to ONNX, TorchScript or TensorRT, checked against PyTorch before it is kept.

Usage:
    pip install -r requirements-export.txt          # onnx, onnxscript, onnxruntime (optional extras)
    python export.py --name toy_mobilenet
    python export.py --name ft_ResNet50 --which_epoch 60 --output deploy/reid.onnx
    python export.py --name toy_mobilenet --format torchscript     # model.pt: PyTorch or libtorch alone
    python export.py --name toy_mobilenet --format tensorrt        # model.engine: on an NVIDIA GPU with TensorRT

Reads:  model/NAME/opts.yaml and net_<epoch>.pth (written by train.py); a few pictures of the run's own
        data_dir/query (else generated ones) for the parity gate.
Writes: model/NAME/model.onnx (--output): input "pictures" uint8 [N, 3, H, W] (RGB, resized to the run's
        input size), output "features" float32 [N, D], L2-normalised: test.py's feature at --ms 1 (the
        mirror image and the normalisation are inside the graph); N is dynamic.
--format torchscript writes model/NAME/model.pt instead: the same computation, traced and frozen (each
BatchNorm after a convolution folded into it). --format tensorrt writes model/NAME/model.engine: the ONNX graph
compiled by TensorRT for this machine's GPU (it needs an NVIDIA GPU and TensorRT 10 or newer).
The parity gate: the exported file's feature of each picture must match PyTorch's (cosine >= 0.9999) and
different pictures must not give the same feature; a file that fails is not kept.

A correct run prints:
    exported model/toy_mobilenet/model.onnx (opset 18, 512-d features, input 256x128, 4.3 MB)
    parity on 8 pictures of data/Market/pytorch/query: lowest cosine 1.000000 (>= 0.9999); different
    pictures at most 0.753915 alike in cosine (< 0.99999)
"""
import os

import numpy as np
import torch

import model as models
import utils
from reid import files, images, onnx_export, runs, tensorrt_export, torchscript_export
from reid.pipeline import ResizedPictures
from utils import UserError

GATE_PICTURES = 8


def build_parser():
    p = utils.ArgumentParser(prog="export.py", description="Export a trained run to ONNX (stage 7).")
    p.add_argument("--name", default="ft_ResNet50", type=runs.run_name, help="run name: reads model/NAME/")
    p.add_argument("--which_epoch", default="last", help="checkpoint: last, average, or an epoch such as 60")
    p.add_argument("--format", choices=list(runs.EXPORT_FILES), default="onnx",
                   help="onnx: a graph for ONNX Runtime; torchscript: a frozen TorchScript module with each BatchNorm "
                        "after a convolution folded into it, for PyTorch or libtorch alone; tensorrt: the ONNX graph "
                        "compiled by TensorRT for this machine's NVIDIA GPU")
    p.add_argument("--output", default=None,
                   help="where to write it (default: model/NAME/model.onnx, model.pt or model.engine)")
    p.add_argument("--opset", type=int, default=18, help="ONNX opset version (onnx and tensorrt)")
    return p


def gate_pictures(options, size):
    """A few uint8 pictures of the run's own query folder, or generated ones when it is gone: (tensor, where)."""
    query = os.path.join(str(options.get("data_dir", "")), "query")
    if os.path.isdir(query):
        samples = images.image_folder(query).samples
        dataset = ResizedPictures(samples[::max(1, len(samples) // GATE_PICTURES)][:GATE_PICTURES], size)
        return torch.stack([dataset[i][0] for i in range(len(dataset))]), query
    rng = np.random.default_rng(0)   # smooth colour fields with noise: each picture its own
    ramps = np.linspace(0, 1, size[0])[:, None] * np.linspace(0, 1, size[1])[None, :]
    pictures = [np.clip(255 * (rng.random((3, 1, 1)) * ramps + rng.random((3, *size)) * 0.3), 0, 255)
                for _ in range(GATE_PICTURES)]
    return torch.from_numpy(np.stack(pictures).astype(np.uint8)), "generated pictures"


PRODUCERS = {"onnx": onnx_export.produce, "torchscript": torchscript_export.produce,
             "tensorrt": tensorrt_export.produce}


def write_file(args, net, backbone, size, path):
    """Export in --format to ``path``; returns what to say about the file (a line's middle), None for ONNX."""
    try:
        if args.format == "torchscript":
            operations, left = torchscript_export.export(net, size, path)
            return f"TorchScript, {operations - left} of {operations} BatchNorm operations folded into the layer before"
        if args.format == "tensorrt":
            tensorrt_export.export(net, size, path, args.opset)
            return (f"TensorRT engine for {torch.cuda.get_device_name()}, float32, batches of 1 to "
                    f"{tensorrt_export.MAX_BATCH}")
        onnx_export.export(net, size, path, args.opset)
    except Exception as err:   # the exporters' many error types: a backbone they cannot trace
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise UserError(f"backbone {backbone} cannot be exported to {args.format} ({reason})",
                        "use test.py with PyTorch for this backbone") from None
    return None   # said once the graph has passed the gate


@utils.cli_main
def main(argv=None):
    args = build_parser().parse_args(argv)
    if not 7 <= args.opset <= 23:
        raise UserError(f"--opset {args.opset} is not an ONNX opset this exporter writes", "pass e.g. --opset 18")
    if args.format in ("onnx", "tensorrt"):   # TensorRT builds from the ONNX graph
        onnx_export.require_onnx()
    if args.format == "tensorrt":
        tensorrt_export.require_tensorrt()
    run_dir = runs.run_dir(args.name)
    output = args.output or os.path.join(run_dir, runs.EXPORT_FILES[args.format])
    files.output_file(output, "--output", runs.EXPORT_FILES[args.format])
    net, options = models.load_trained(run_dir, args.which_epoch, torch.device("cpu"))
    size = tuple(models.get_backbone(options["backbone"]).input_size)
    pictures, where = gate_pictures(files.load_yaml(os.path.join(run_dir, "opts.yaml"), "train.py"), size)
    temporary = f"{output}.tmp-{os.getpid()}"
    try:
        written = write_file(args, net, options["backbone"], size, temporary)
        agreement, similar = onnx_export.parity(PRODUCERS[args.format](temporary), net, pictures)
        os.replace(temporary, output)
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)
    if written is None:   # ONNX: the graph's own feature width
        written = f"opset {args.opset}, {onnx_export.session(output).get_outputs()[0].shape[1]}-d features"
    print(f"exported {output} ({written}, input {size[0]}x{size[1]}, {os.path.getsize(output) / 2**20:.1f} MB)")
    print(f"parity on {len(pictures)} pictures of {where}: lowest cosine {agreement:.6f} (>= {onnx_export.MIN_COSINE}); "
          f"different pictures at most {similar:.6f} alike in cosine (< {onnx_export.MAX_SIMILAR})")
    return output


if __name__ == "__main__":
    main()
