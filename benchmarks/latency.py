"""CPU latency and throughput of the test-time network: PyTorch against its frozen TorchScript module and ONNX
Runtime (export.py's two formats), at batch 1 (milliseconds a picture) and batch 64 (pictures a second),
measured in one run; optionally ONNX Runtime's dynamic int8 quantisation and what it does to the toy run's mAP.

Usage:
    pip install -r requirements-export.txt
    python benchmarks/latency.py                                   # mobilenet_v3 (the toy's) and resnet50
    python benchmarks/latency.py --name toy_mobilenet --test_dir data/Market/pytorch --quantize

Networks are built with random weights unless --name gives a trained run (then its backbone is used and
--quantize can compare mAP on --test_dir). A correct run prints a table like:
    backbone      batch  pytorch        onnxruntime    ratio
    mobilenet_v3      1  9.1 ms         4.2 ms         2.17x
"""
import argparse
import os
import statistics
import sys
import tempfile
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import model as models  # noqa: E402
import utils  # noqa: E402
from reid import onnx_export, runs, torchscript_export  # noqa: E402


def build_parser():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--backbones", nargs="+", default=["mobilenet_v3", "resnet50"], help="networks (random weights)")
    p.add_argument("--name", default=None, help="a trained run instead (model/NAME/)")
    p.add_argument("--repeats", type=int, default=20, help="timed calls at batch 1 (batch 64: a quarter of them)")
    p.add_argument("--quantize", action="store_true", help="also ONNX Runtime's dynamic int8 quantisation")
    p.add_argument("--test_dir", default=None, help="with --name --quantize: the prepared set whose mAP is compared")
    return p


def median_seconds(call, repeats):
    call()   # warm-up
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        call()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def rows_for(label, net, size, graphs, repeats, scripted=None):
    """One row per batch size: PyTorch, the TorchScript module (``scripted``: a path, export.py --format
    torchscript's file), then each ONNX graph ({name: path})."""
    head = onnx_export.TestTimeNetwork(net).eval()
    sessions = {name: onnx_export.session(path) for name, path in graphs.items()}
    frozen = torchscript_export.quiet_load(scripted, "cpu") if scripted else None
    rows = []
    for batch in (1, 64):
        pictures = torch.randint(0, 256, (batch, 3, *size), dtype=torch.uint8)
        times = repeats if batch == 1 else max(2, repeats // 4)
        with torch.inference_mode():
            timings = {"pytorch": median_seconds(lambda: head(pictures), times)}
            if frozen is not None:
                timings["torchscript"] = median_seconds(lambda: frozen(pictures), times)
        for name, runner in sessions.items():
            timings[name] = median_seconds(lambda: runner.run(None, {"pictures": pictures.numpy()}), times)
        rows.append((label, batch, timings))
    return rows


def quantized_map(graphs, name, test_dir):
    """mAP on ``test_dir`` through each graph (the toy run's fp32 and int8 graphs)."""
    import numpy as np

    from reid import extraction, metrics

    options = models.trained_options(runs.run_dir(name), {})[0]
    size = models.get_backbone(options["backbone"]).input_size
    data = {split: extraction.split_pictures(test_dir, split, size) for split in ("gallery", "query")}
    scores = {}
    for label, path in graphs.items():
        runner, result = onnx_export.open_graph(path, size, f"python export.py --name {name}"), {}
        for split, (dataset, pids, cams) in data.items():
            result.update({f"{split}_f": onnx_export.extract(runner, dataset, 64).numpy(),
                           f"{split}_label": np.asarray(pids), f"{split}_cam": np.asarray(cams)})
        scores[label] = metrics.run(argparse.Namespace(multi=None, rerank=False, ap="trapezoid"), result,
                                    torch.device("cpu")).mAP
    return scores


@utils.cli_main
def main(argv=None):
    args = build_parser().parse_args(argv)
    onnx_export.require_onnx()
    torch.set_num_threads(os.cpu_count() or 1)
    nets = {}
    if args.name:
        net, options = models.load_trained(runs.run_dir(args.name), "last", torch.device("cpu"))
        nets[f"{options['backbone']} ({args.name})"] = (net, models.get_backbone(options["backbone"]).input_size)
    else:
        for backbone in args.backbones:
            nets[backbone] = (models.build_model(backbone, 751, False).eval(), models.get_backbone(backbone).input_size)
    rows, maps = [], {}
    with tempfile.TemporaryDirectory() as folder:
        for label, (net, size) in nets.items():
            graphs = {"onnxruntime": os.path.join(folder, "model.onnx")}
            onnx_export.export(net, size, graphs["onnxruntime"])
            scripted = os.path.join(folder, "model.pt")
            torchscript_export.export(net, size, scripted)
            if args.quantize:
                from onnxruntime.quantization import QuantType, quantize_dynamic

                graphs["onnxruntime int8"] = os.path.join(folder, "model_int8.onnx")
                quantize_dynamic(graphs["onnxruntime"], graphs["onnxruntime int8"], weight_type=QuantType.QInt8)
            rows += rows_for(label, net, size, graphs, args.repeats, scripted)
            if args.quantize and args.name and args.test_dir:
                maps = quantized_map(graphs, args.name, args.test_dir)
    print(f"cpu ({os.cpu_count()} cores), torch {torch.__version__}; batch 1: ms a call, batch 64: pictures a second")
    names = list(rows[0][2])
    print(f"{'network':<28}{'batch':>6}" + "".join(f"{name:>20}" for name in names) + "   ratio to pytorch")
    for label, batch, timings in rows:
        shown = [f"{1000 * t:.1f} ms" if batch == 1 else f"{batch / t:.1f} img/s" for t in timings.values()]
        ratios = "  ".join(f"{timings['pytorch'] / t:.2f}x" for name, t in timings.items() if name != "pytorch")
        print(f"{label:<28}{batch:>6}" + "".join(f"{text:>20}" for text in shown) + f"   {ratios}")
    for label, value in maps.items():
        print(f"mAP on {args.test_dir} through {label}: {value:.4f}")


if __name__ == "__main__":
    main()
