"""Stage 5: Rank@k, mAP and mINP of the features in pytorch_result.mat, to the letter of the Market-1501 protocol.

Usage:
    python evaluate_gpu.py                                   # reads ./pytorch_result.mat
    python evaluate_gpu.py --mat pytorch_result.mat --ap standard
    python evaluate_gpu.py --multi                           # Market multi-query, reads multi_query.mat
    python evaluate_gpu.py --rerank --k1 20 --k2 6 --lambda_value 0.3
    python evaluate_gpu.py --rerank gnn                        # GNN re-ranking (k1 26, k2 7)
    python evaluate_gpu.py --mat a.mat --compare b.mat        # is run B better than run A, beyond noise?
    python evaluate_gpu.py --protocols                       # the same features under every convention

Reads:  the .mat written by test.py (gallery_f gallery_label gallery_cam query_f query_label query_cam).
Writes: nothing; prints. The first score line is layumi's, for the course and for scripts that parse it.

The protocol (``evaluate`` below): a gallery picture of the query's person seen by the same camera,
and every junk picture (pid -1), is removed from the query's ranking; distractors (pid 0) are ordinary
wrong matches. Two AP conventions: ``trapezoid`` (the Market-1501 authors' code and layumi's,
the default) and ``standard`` (torchreid, fast-reid). A query whose person is absent from the gallery
counts as 0 over all queries in the default (layumi's printed numbers) and is left out with
``--ap standard`` (torchreid's); both counts are printed.

Also printed: a 95 % bootstrap interval over queries for Rank@1 and mAP (reid/intervals.py) and
open-set verification over the query-gallery pairs -- TPR at FPR 1e-2/1e-3/1e-4, EER and AUC
(reid/verification.py). ``--compare`` scores a second run on the same queries and says whether the
difference is beyond noise (paired bootstrap); ``--protocols`` prints reid/protocols.py's table.

A correct run prints:
    features: model toy_mobilenet, epoch last, made 2026-12-03 18:04:11
    Rank@1:0.567657 Rank@5:0.805281 Rank@10:0.894389 mAP:0.483682
    Rank@20:0.947195 mINP:0.337903 AP:trapezoid queries:303 without a correct match:0
    95% interval over queries (bootstrap, 1000 draws, seed 0): Rank@1 0.505 to 0.627  mAP 0.451 to 0.519
    verification by cosine similarity over query-gallery pairs (junk left out): 2,050 same-person, 286,702 different-person
      FPR 1e-02: TPR 0.588 at threshold 0.7955  FPR 1e-03: TPR 0.171 at threshold 0.9174  FPR 1e-04: TPR 0.032 at threshold 0.9624
      EER 0.075 at threshold 0.5139  AUC 0.9764
"""
import utils
from reid import features, intervals, protocols, re_ranking, verification
from reid.metrics import add_ap_argument, evaluate, query_features, run, summary_lines  # noqa: F401  (evaluate: course code imports it from here)


def build_parser():
    p = utils.ArgumentParser(prog="evaluate_gpu.py", description="Evaluate re-ID features (stage 5).")
    p.add_argument("--mat", default="pytorch_result.mat", help="features written by test.py")
    add_ap_argument(p)
    p.add_argument("--multi", nargs="?", const="", default=None, metavar="MAT",
                   help="Market multi-query with the features in MAT (written by test.py --multi; "
                        "default: multi_query.mat beside pytorch_result.mat, else MAT-stem_multi_query.mat)")
    re_ranking.add_arguments(p)
    p.add_argument("--bootstrap", type=int, default=intervals.DRAWS,
                   help="resamples of the queries for the 95%% intervals (0: no interval)")
    p.add_argument("--seed", type=int, default=0, help="random seed of the bootstrap")
    p.add_argument("--compare", default=None, metavar="B_MAT",
                   help="a second run's features of the same queries and gallery: prints B minus A with its "
                        "paired-bootstrap interval and whether it is beyond noise")
    p.add_argument("--protocols", action="store_true",
                   help="also score the features under each convention in use (AP formula, denominator, "
                        "junk rule, re-ranking settings), as one table")
    p.add_argument("--gpu_ids", default="0", help="GPU id, or -1 for the CPU (also the fallback)")
    return p


def check_args(parser, args):
    if (args.k1 or 1) < 1 or (args.k2 or 1) < 1 or not 0 <= args.lambda_value <= 1:
        parser.error("--k1 and --k2 must be >= 1 and --lambda_value within [0, 1]")
    if args.bootstrap < 0 or args.bootstrap == 1:
        parser.error("--bootstrap must be 0 (no interval) or at least 2 resamples")
    if args.compare and args.bootstrap == 0:
        parser.error("--compare judges the difference by its bootstrap interval: keep --bootstrap above 0")
    if args.compare and args.multi is not None:
        parser.error("--compare scores single queries: drop --multi")


def compare_lines(args, result_a, metrics_a, device):
    """Run B on the same queries and gallery: both results, B minus A, and the verdict."""
    metrics_b, result_b, differences = intervals.compare_with(result_a, metrics_a, args.mat, args.compare, args,
                                                              device, args.bootstrap, args.seed)
    return [f"A = {args.mat}: Rank@1 {metrics_a.rank(1):.4f}  mAP {metrics_a.mAP:.4f}",
            f"B = {args.compare}: Rank@1 {metrics_b.rank(1):.4f}  mAP {metrics_b.mAP:.4f}"
            f"  ({features.provenance_line(result_b)})"] + [f"{name}: {differences[name].sentence()}"
                                                           for name in ("mAP", "Rank@1")]


@utils.cli_main
def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    check_args(parser, args)
    if args.multi == "":
        args.multi = features.multi_query_path(args.mat)
    result = features.load_features(args.mat)
    print(f"features: {features.provenance_line(result)}")
    if features.camera_rule_line(result):   # an own-pictures set without cameras
        print(features.camera_rule_line(result))
    device, _ = utils.select_device(args.gpu_ids)
    metrics = run(args, result, device, pairs=True)   # verification from the ranking's own pass
    lines = summary_lines(metrics)
    if args.bootstrap:
        lines.append(intervals.interval_line(metrics, args.bootstrap, args.seed))
    lines += verification.summary_lines(metrics.pairs)
    if args.protocols:
        lines += protocols.table_lines(protocols.protocol_table(query_features(args, result), result, device))
    if args.compare:
        lines += compare_lines(args, result, metrics, device)
    print("\n".join(lines))
    return metrics


if __name__ == "__main__":
    main()
