"""Stage 5: Rank@k, mAP and mINP of the features in pytorch_result.mat, to the letter of the Market-1501 protocol.

Usage:
    python evaluate_gpu.py                                   # reads ./pytorch_result.mat
    python evaluate_gpu.py --mat pytorch_result.mat --ap standard
    python evaluate_gpu.py --multi                           # Market multi-query, reads multi_query.mat
    python evaluate_gpu.py --rerank --k1 20 --k2 6 --lambda_value 0.3

Reads:  the .mat written by test.py (gallery_f gallery_label gallery_cam query_f query_label query_cam).
Writes: nothing; prints. The first score line is layumi's, for the course and for scripts that parse it.

The protocol (``evaluate`` below): a gallery picture of the query's person seen by the same camera,
and every junk picture (pid -1), is removed from the query's ranking; distractors (pid 0) are ordinary
wrong matches. Two AP conventions: ``trapezoid`` (the Market-1501 authors' code and layumi's,
the default) and ``standard`` (torchreid, fast-reid). A query whose person is absent from the gallery
counts as 0 over all queries in the default (layumi's printed numbers) and is left out with
``--ap standard`` (torchreid's); both counts are printed.

A correct run prints:
    features: model toy_mobilenet, epoch last, made 2026-11-25 11:40:02
    Rank@1:0.683168 Rank@5:0.861386 Rank@10:0.910891 mAP:0.512345
    Rank@20:0.950495 mINP:0.201234 AP:trapezoid queries:303 without a correct match:0
"""
import utils
from reid import features
from reid.metrics import add_ap_argument, evaluate, run, summary_lines  # noqa: F401  (evaluate: course code imports it from here)


def build_parser():
    p = utils.ArgumentParser(prog="evaluate_gpu.py", description="Evaluate re-ID features (stage 5).")
    p.add_argument("--mat", default="pytorch_result.mat", help="features written by test.py")
    add_ap_argument(p)
    p.add_argument("--multi", nargs="?", const="", default=None, metavar="MAT",
                   help="Market multi-query with the features in MAT (written by test.py --multi; "
                        "default: multi_query.mat beside pytorch_result.mat, else MAT-stem_multi_query.mat)")
    p.add_argument("--rerank", action="store_true", help="k-reciprocal re-ranking (Zhong et al. 2017)")
    p.add_argument("--k1", type=int, default=20, help="re-ranking: k of the k-reciprocal neighbours")
    p.add_argument("--k2", type=int, default=6, help="re-ranking: neighbours averaged in query expansion")
    p.add_argument("--lambda_value", type=float, default=0.3, help="re-ranking: weight of the original distance")
    p.add_argument("--gpu_ids", default="0", help="GPU id, or -1 for the CPU (also the fallback)")
    return p


@utils.cli_main
def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.k1 < 1 or args.k2 < 1 or not 0 <= args.lambda_value <= 1:
        parser.error("--k1 and --k2 must be >= 1 and --lambda_value within [0, 1]")
    if args.multi == "":
        args.multi = features.multi_query_path(args.mat)
    result = features.load_features(args.mat)
    print(f"features: {features.provenance_line(result)}")
    if features.camera_rule_line(result):   # an own-pictures set without cameras
        print(features.camera_rule_line(result))
    device, _ = utils.select_device(args.gpu_ids)
    metrics = run(args, result, device)
    for line in summary_lines(metrics):
        print(line)
    return metrics


if __name__ == "__main__":
    main()
