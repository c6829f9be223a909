"""Stage 4: extract features of the query and gallery pictures with a trained model, then evaluate.

Usage:
    python test.py --gpu_ids 0 --name ft_ResNet50 --test_dir ../Market/pytorch --which_epoch last --batchsize 256
    python test.py --gpu_ids -1 --name toy_mobilenet --test_dir data/Market/pytorch --multi
    python test.py --gpu_ids -1 --name toy_mobilenet --test_dir data/DukeMTMC-reID/pytorch   # cross-dataset

Reads:  model/NAME/opts.yaml and model/NAME/net_<epoch>.pth (written by train.py, or by layumi's
        original train.py), and TEST_DIR/{query,gallery[,multi-query]}/<pid>/*.jpg (written by prepare.py).
Writes: with --attack odfa also OUTPUT_odfa.mat: the same gallery, and the features of the queries after
        the attack (then evaluated like the first);
        pytorch_result.mat (--output): gallery_f float32 [Ng, D], gallery_label / gallery_cam int64 [1, Ng],
        query_f, query_label, query_cam, and provenance (model_name, which_epoch, opts, created, run_id);
        with --multi also the multi-query features (mquery_f mquery_label mquery_cam) beside it:
        multi_query.mat for the default --output, else OUTPUT_multi_query.mat; then evaluates;
        appends the scores to model/NAME/result.txt.
The model is rebuilt through model.py's registry from: defaults <- opts.yaml <- flags typed here.
A feature is the head's bottleneck output summed over the picture and its mirror image (and the
--ms scales), then L2-normalised; PCB: each stripe divided by its norm times sqrt(6), so that the six
concatenated stripes have length 1.

A correct run prints a progress bar per split, then:
    wrote pytorch_result.mat: 303 queries, 996 gallery pictures, 512-d features
    Rank@1:0.567657 Rank@5:0.805281 Rank@10:0.894389 mAP:0.483682
    Rank@20:0.947195 mINP:0.337903 AP:trapezoid queries:303 without a correct match:0
    95% interval over queries (bootstrap, 1000 draws, seed 0): Rank@1 0.505 to 0.627  mAP 0.451 to 0.519
"""
import argparse
import datetime
import os
import tempfile
import uuid

import torch

import model as models
import utils
from reid import (acceleration, attacks, datasets, distributed, extraction, files, intervals, metrics, onnx_export, runs,
                  tensorrt_export, torchscript_export)
from reid.features import (FEATURES_FORMAT, camera_rule_line, feature_store, load_features, multi_query_path,
                           save_features)
from utils import UserError

# --backend: the export.py --format it reads (None: the checkpoint, with PyTorch)
BACKENDS = {"torch": None, "onnxruntime": "onnx", "torchscript": "torchscript", "tensorrt": "tensorrt"}


def build_parser():
    p = utils.ArgumentParser(prog="test.py", description="Extract re-ID features and evaluate them (stage 4).")
    p.add_argument("--gpu_ids", default="0", help="GPU id, or -1 for the CPU (also the fallback)")
    p.add_argument("--name", default="ft_ResNet50", type=runs.run_name, help="run name: reads model/NAME/")
    p.add_argument("--test_dir", default="../Market/pytorch", help="the pytorch/ folder written by prepare.py")
    p.add_argument("--which_epoch", default="last",
                   help="checkpoint to load: last, best (highest mAP on prepare.py --val_ids identities), average "
                        "(train.py --wa), or an epoch such as 60 or 060")
    p.add_argument("--batchsize", type=int, default=256, help="pictures per forward pass")
    p.add_argument("--multi", action="store_true", help="also extract multi-query (Market gt_bbox) features")
    p.add_argument("--ms", default="1", help="comma-separated scales whose features are summed, e.g. 1,1.1")
    p.add_argument("--output", default="pytorch_result.mat", help="where to write the features")
    metrics.add_ap_argument(p)
    p.add_argument("--num_workers", type=int, default=min(4, os.cpu_count() or 1), help="data-loading processes")
    models.add_backbone_arguments(p, default=None)   # None: opts.yaml's backbone
    models.add_head_arguments(p, overrides=True)
    p.add_argument("--backend", choices=list(BACKENDS), default="torch",
                   help="extract with PyTorch from the checkpoint, or from what export.py wrote: the ONNX graph with "
                        "ONNX Runtime, the TorchScript module (export.py --format torchscript), or the TensorRT engine "
                        "(--format tensorrt, on an NVIDIA GPU)")
    p.add_argument("--onnx", default=None, help="--backend onnxruntime, torchscript or tensorrt: the exported file "
                                                "(default model/NAME/model.onnx, model.pt or model.engine)")
    p.add_argument("--attack", choices=["none", "odfa"], default="none",
                   help="odfa: also attack every query (reid/attacks.py, Wang et al., IJCV 2022) and write the "
                        "gallery with the attacked queries' features to OUTPUT_odfa.mat, then evaluate it")
    p.add_argument("--epsilon", type=float, default=attacks.RATE,
                   help="--attack: the most a pixel may move, in levels of 255 (layumi's 16)")
    p.add_argument("--fp16", action="store_true", help="float16 autocast on CUDA (also taken from opts.yaml)")
    p.add_argument("--bf16", action="store_true", help="bfloat16 autocast on CUDA (also taken from opts.yaml)")
    return p


def model_overrides(parser, argv):
    """What was typed here to build the network otherwise than opts.yaml says (backbone, head options)."""
    typed = utils.explicit_options(parser, argv)
    overrides = {key: value for key, value in typed.items() if key in models.HEAD_OPTIONS}
    backbone = typed.get("backbone") or models.backbone_from_legacy(typed)
    return {**overrides, "backbone": backbone} if backbone else overrides


def exported_file(args, world, size, device):
    """What --backend onnxruntime, torchscript or tensorrt reads, checked before any work: (run(dataset, split) ->
    features as NumPy, its path)."""
    export_format = BACKENDS[args.backend]
    if args.backend == "onnxruntime":
        onnx_export.require_onnx()
    elif args.backend == "tensorrt":
        tensorrt_export.require_tensorrt()
    path = args.onnx or os.path.join(runs.run_dir(args.name), runs.EXPORT_FILES[export_format])
    again = f"python export.py --name {args.name}" + (f" --format {export_format}" if export_format != "onnx" else "")
    if world.distributed:
        raise UserError(f"--backend {args.backend} runs in one process", "start test.py without torchrun")
    if not os.path.isfile(path):
        raise UserError(f"{path} does not exist", f"export the run first with {again}")
    if args.backend == "tensorrt":
        if device.type != "cuda":
            raise UserError("--backend tensorrt runs its engine on a GPU, not with --gpu_ids -1",
                            "give the GPU it was built on, e.g. --gpu_ids 0")
        engine = tensorrt_export.load(path, size, again)
        return lambda data, split: tensorrt_export.extract(engine, data, args.batchsize, args.num_workers,
                                                           split).numpy(), path
    if args.backend == "torchscript":
        module = torchscript_export.load(path, size, device, again)
        return lambda data, split: torchscript_export.extract(module, data, args.batchsize, device, args.num_workers,
                                                              split).numpy(), path
    runner = onnx_export.open_graph(path, size, again)
    return lambda data, split: onnx_export.extract(runner, data, args.batchsize, args.num_workers, split).numpy(), path


def camera_rule(test_dir):
    """How prepare.py decided the cameras of an own-pictures set (its manifest's ``cameras``), else ''."""
    manifest = files.read_json(os.path.join(test_dir, datasets.PREPARED_MANIFEST))
    return str(manifest.get("cameras", "")) if isinstance(manifest, dict) else ""


def record_result(args, lines):
    """Append the scores to model/NAME/result.txt, with what produced them."""
    with open(os.path.join(runs.run_dir(args.name), "result.txt"), "a") as handle:
        handle.write(f"{datetime.datetime.now():%Y-%m-%d %H:%M:%S} epoch {args.which_epoch} test_dir {args.test_dir}"
                     f" ms {args.ms}{' multi' if args.multi else ''}"
                     f"{f' queries attacked by odfa {args.epsilon:g}' if getattr(args, 'attacked', False) else ''}\n"
                     + "\n".join(lines) + "\n")


@utils.cli_main
def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    scales = extraction.parse_scales(args.ms)
    if args.batchsize < 1 or args.num_workers < 0:
        parser.error("--batchsize must be at least 1 and --num_workers at least 0")
    if args.backend != "torch" and scales != [1.0]:
        parser.error(f"--backend {args.backend} extracts at --ms 1 only (the exported file's scale)")
    if args.attack != "none" and (args.backend != "torch" or args.epsilon <= 0):
        parser.error("--attack needs --backend torch (the gradient of the network) and a positive --epsilon")
    files.output_file(args.output, "--output", "pytorch_result.mat")   # before any work, not after the features are extracted
    run_dir, overrides = runs.run_dir(args.name), model_overrides(parser, argv)
    options, saved = models.trained_options(run_dir, overrides)
    spec = models.get_backbone(options["backbone"])
    world = distributed.from_environment()   # under torchrun each process extracts its share of every split
    device, _ = distributed.choose_device(world, args.gpu_ids)
    graph = exported_file(args, world, spec.input_size, device) if args.backend != "torch" else None   # before any work
    splits = ["gallery", "query"] + (["multi-query"] if args.multi else [])
    data = {split: extraction.split_pictures(args.test_dir, split, spec.input_size) for split in splits}
    options.update({key: bool(getattr(args, key) or saved.get(key)) for key in ("fp16", "bf16")})  # opts.yaml's too
    if graph:   # the exported file holds the network: no checkpoint to load
        run, exported_path = graph
        features = {split: run(data[split][0], split) for split in splits}
        return write_and_evaluate(args, {**options, "backend": f"{args.backend} {exported_path}"}, data, features,
                                  device, args.backend)
    net, _ = models.load_trained(run_dir, args.which_epoch, device, overrides)   # built from the same options
    net = acceleration.on_cuda(net, device)   # as train.py runs it: channels_last, cuDNN autotuner, TF32
    amp_dtype = torch.float16 if options["fp16"] else torch.bfloat16 if options["bf16"] else None
    distributed.start(world, device)
    # the features go to a column-major file beside --output as they are extracted: a gallery of any size
    # is paged to disk, not held twice in memory (reid/features.py); the folder goes when test.py ends
    with tempfile.TemporaryDirectory(dir=os.path.dirname(os.path.abspath(args.output)), prefix=".features-") as scratch:
        try:
            features = {split: extraction.extract_features(
                net, data[split][0], device, args.batchsize, scales, args.num_workers, amp_dtype, split, world,
                feature_store(scratch)).numpy() for split in splits}
        finally:
            distributed.stop(world)
        if not world.main:   # one process writes and evaluates
            return None
        run_id = uuid.uuid4().hex   # the attacked file, if any, comes from this run too
        written = write_and_evaluate(args, options, data, features, device, acceleration.kernel_set(device), run_id)
        if args.attack == "odfa":
            attack_and_evaluate(args, options, net, data, features, device, scales, run_id)
        return written


def attack_and_evaluate(args, options, net, data, features, device, scales, run_id):
    """--attack odfa: the queries' features after the attack, with the same gallery, to OUTPUT_odfa.mat; evaluated."""
    attacked = {**features, "query": attacks.attacked_features(
        net, data["query"][0], device, args.batchsize, args.epsilon, scales, args.num_workers).numpy()}
    attacked_args = argparse.Namespace(**{**vars(args), "output": attacks.attacked_path(args.output), "multi": False,
                                          "attacked": True})
    print(f"queries attacked by ODFA, each pixel within {args.epsilon:g} levels:")
    write_and_evaluate(attacked_args, {**options, "attack": f"odfa {args.epsilon:g}"}, data, attacked, device,
                       acceleration.kernel_set(device), run_id)
    print(f"how far the ranking fell: python evaluate_gpu.py --mat {args.output} --compare {attacked_args.output}")


def write_and_evaluate(args, options, data, features, device, extracted_with, run_id=None):
    """pytorch_result.mat (and the multi-query file), the layumi summary lines, result.txt. ``extracted_with``:
    the arithmetic of the extraction (acceleration.kernel_set), kept in the .mat."""
    provenance = {"model_name": args.name, "which_epoch": str(args.which_epoch), "format_version": FEATURES_FORMAT,
                  "extracted_with": extracted_with,
                  "opts": repr(options), "created": f"{datetime.datetime.now():%Y-%m-%d %H:%M:%S}",
                  "run_id": run_id or uuid.uuid4().hex, "camera_rule": camera_rule(args.test_dir)}
    arrays = {f"{prefix}_{key}": value for split, prefix in (("gallery", "gallery"), ("query", "query"))
              for key, value in zip(("f", "label", "cam"), (features[split], *data[split][1:]))}
    save_features(args.output, arrays, provenance)
    multi_path = None
    if args.multi:
        multi_path = multi_query_path(args.output)
        save_features(multi_path, {"mquery_f": features["multi-query"], "mquery_label": data["multi-query"][1],
                                   "mquery_cam": data["multi-query"][2]}, provenance)
    print(f"wrote {args.output}: {len(features['query'])} queries, {len(features['gallery'])} gallery pictures, "
          f"{features['query'].shape[1]}-d features" + (f"; and {multi_path}" if multi_path else ""))
    result = load_features(args.output)
    lines = [line for line in [camera_rule_line(result)] if line]
    for multi in ([None, multi_path] if multi_path else [None]):
        scores = metrics.run(argparse.Namespace(multi=multi, rerank=False, ap=args.ap), result, device)
        lines += ([f"multi-query ({multi_path}):"] if multi else []) + metrics.summary_lines(scores)
        lines += [] if multi else [intervals.interval_line(scores)]   # how much the score depends on the queries
    print("\n".join(lines))
    record_result(args, lines)
    return args.output


if __name__ == "__main__":
    main()
