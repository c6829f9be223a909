"""Stage 6: look at the rankings -- one query's top-k, a search with your own photo, or a full report.

Usage:
    python demo.py --query_index 7 --test_dir data/Market/pytorch            # -> show.png
    python demo.py --query_index 7 --test_dir data/Market/pytorch --rerank --topk 5 --out q7.png
    python demo.py --query_index 7 --test_dir data/Market/pytorch --heatmap --name toy_mobilenet   # where matches come from
    python demo.py --name toy_mobilenet --query_image me.jpg --gallery_dir crops/   # own photo -> search.png
    python demo.py --name toy_mobilenet --gallery_dir data/Market/pytorch/gallery \
        --query_image "$(ls data/Market/pytorch/query/*/*.jpg | head -1)"          # the same, on the toy set
    python demo.py --report --test_dir data/Market/pytorch --out report/     # HTML error analysis

Reads:  pytorch_result.mat (--mat, written by test.py) and the pictures under TEST_DIR/{query,gallery},
        in the order test.py read them; for own-photo search, model/NAME/ and the pictures given.
Writes: a PNG (--out, default show.png; own-photo search: search.png): the query and its top-k gallery pictures, rank numbers above,
        correct matches framed green, wrong ones red; junk (same person and camera, or pid -1) is
        skipped, as the evaluation does. With --report, a folder with index.html (see report.py).
        Own-photo search frames green the pictures at or above the run's same-person threshold
        (threshold.yaml, written by train.py on --val_ids data) and says "no match above the threshold"
        when none is: retrieval always ranks someone first, a threshold can say "nobody".
Headless: nothing needs a display.

A correct run prints the query and each ranked picture, e.g.
    query 7: person 2 camera 3, AP 0.683, first correct match at rank 1
      1  0.8934  correct  data/Market/pytorch/gallery/0002/0002_c1s1_000551_01.jpg
    wrote show.png
"""
import os

import numpy as np

import utils
from reid import features, files, images, metrics, re_ranking, runs, validation
from reid.datasets import PREPARED_MANIFEST
from reid.pictures import draw_strip, query_strip, query_title
from utils import UserError


def build_parser():
    p = utils.ArgumentParser(prog="demo.py", description="Show rankings, search with your own photo, or write a report (stage 6).")
    p.add_argument("--query_index", type=int, default=0, help="which query to show (0-based, in test.py's order)")
    p.add_argument("--test_dir", default="../Market/pytorch", help="the pytorch/ folder test.py read")
    p.add_argument("--mat", default="pytorch_result.mat", help="features written by test.py")
    p.add_argument("--rerank", nargs="?", const="kreciprocal", default=None, choices=list(re_ranking.METHODS),
                   help="rank after re-ranking: kreciprocal (k1 20, k2 6; a bare --rerank) or gnn (k1 26, k2 7)")
    p.add_argument("--topk", type=int, default=10, help="gallery pictures to show")
    p.add_argument("--out", default=None, help="picture to write (default show.png; own photo: search.png), "
                                               "or the report folder (report/)")
    p.add_argument("--report", action="store_true", help="write an HTML error-analysis report instead")
    p.add_argument("--attacked", default=None, metavar="MAT",
                   help="--report: also show the queries that test.py --attack hurt most (its OUTPUT_odfa.mat)")
    p.add_argument("--heatmap", action="store_true",
                   help="draw over each picture where its similarity to the query comes from (Grad-CAM; needs --name)")
    metrics.add_ap_argument(p)
    p.add_argument("--name", default=None, type=runs.run_name, help="own-photo search: the trained run under model/NAME/")
    p.add_argument("--query_image", default=None, help="own-photo search: your picture of a person")
    p.add_argument("--gallery_dir", default=None, help="own-photo search: a folder of person pictures to rank")
    p.add_argument("--which_epoch", default="last",
                   help="own-photo search: checkpoint to load (last, best, 60); its threshold.yaml entry decides "
                        "'same person' or 'no match'")
    p.add_argument("--gpu_ids", default="-1", help="GPU id, or -1 for the CPU")
    p.add_argument("--batchsize", type=int, default=64, help="own-photo search: pictures per forward pass")
    return p


def check_args(parser, args):
    if args.query_image and args.report:
        parser.error("--query_image searches your own photo; --report analyses a test run: choose one")
    if args.query_image and not (args.gallery_dir and args.name):
        parser.error("--query_image needs --gallery_dir (pictures to rank) and --name (the trained model)")
    if args.topk < 1:
        parser.error("--topk must be at least 1")
    if args.attacked and (not args.report or args.rerank):
        parser.error("--attacked adds a section to the report, ranked by cosine: pass --report, without --rerank")
    if args.heatmap and (args.query_image or not args.name):
        parser.error("--heatmap draws a test run's ranking with the network that ranked it: pass --name (and the "
                     "--which_epoch test.py used), without --query_image")


def picture_paths(test_dir, split, expected):
    """The pictures of a split in test.py's order (ImageFolder: sorted folders, sorted files)."""
    folder = os.path.join(test_dir, split)
    if not os.path.isdir(folder):
        raise UserError(f"{folder} does not exist", "pass the --test_dir that test.py read")
    paths = [path for path, _ in images.image_folder(folder).samples]
    if len(paths) != expected:
        raise UserError(f"{folder} holds {len(paths)} pictures but the .mat has {expected} {split} features",
                        "pass the --test_dir that test.py read, or run test.py again")
    return paths


def load_run(args):
    """The features, their picture paths, the evaluation and (with --rerank) the re-ranked scores."""
    result = features.load_features(args.mat)
    result["query_paths"] = picture_paths(args.test_dir, "query", len(result["query_f"]))
    result["gallery_paths"] = picture_paths(args.test_dir, "gallery", len(result["gallery_f"]))
    scores = None
    if args.rerank:
        scores = re_ranking.reranked_scores(args.rerank, result["query_f"], result["gallery_f"])
    result["scores"] = scores
    result["metrics"] = metrics.evaluate(result["query_f"], result["query_label"], result["query_cam"],
                                              result["gallery_f"], result["gallery_label"], result["gallery_cam"],
                                              ap=args.ap, scores=scores)
    return result


def explainer(args):
    """With --heatmap, ``explain(paths, targets)`` for pictures.query_strip: the run's network's Grad-CAM maps."""
    if not args.heatmap:
        return None
    import model as models
    from reid import heatmaps

    device, _ = utils.select_device(args.gpu_ids)
    net, options = models.load_trained(runs.run_dir(args.name), args.which_epoch, device)
    size = models.get_backbone(options["backbone"]).input_size
    return lambda paths, targets: heatmaps.strip_maps(net, paths, targets, size, device)


def show_query(args):
    result = load_run(args)
    count = len(result["query_f"])
    if not 0 <= args.query_index < count:
        raise UserError(f"--query_index {args.query_index} is outside this test run's queries",
                        f"pass a number from 0 to {count - 1}")
    canvas, _, ranked = query_strip(result, args.query_index, args.topk, explainer(args))
    print(query_title(result, args.query_index))
    print(f"  query  {result['query_paths'][args.query_index]}")
    for rank, (gallery_index, score, status) in enumerate(ranked, 1):
        print(f"  {rank:>2}  {score:.3f}  {status:<7}  {result['gallery_paths'][gallery_index]}")
    out = args.out or "show.png"
    files.atomic_write(out, lambda temporary: canvas.save(temporary, format="PNG"))
    print(f"wrote {out}")
    return out


def gallery_pictures(folder, query_image):
    """Every picture under ``folder``, sorted: a flat folder of crops, or an ImageFolder-style tree such as
    ROOT/pytorch/gallery (one subfolder per person). The query picture itself is left out."""
    found, copies = [], []
    for top, folders, names in os.walk(folder):
        folders.sort()
        if top != folder and PREPARED_MANIFEST in names:   # prepare.py's tree: copies of pictures found beside it
            copies.append(top)
            folders.clear()
            continue
        found += [os.path.join(top, name) for name in sorted(names) if images.is_image_file(name)]
    if copies and found:
        print(f"note: left out {copies[0]}: prepare.py's copies of the pictures beside it (pass it as --gallery_dir "
              "to search those instead)")
    elif copies:   # only the prepared tree: search it
        return gallery_pictures(copies[0], query_image)
    found.sort()
    gallery = [path for path in found if os.path.abspath(path) != os.path.abspath(query_image)]
    if not gallery:
        raise UserError(f"{folder} holds no pictures (nor its subfolders)", "put .jpg or .png person crops in it")
    return gallery


def decision(best, threshold, name):
    """The sentence under an own-photo search: is the best match above the run's same-person threshold?"""
    if threshold is None:
        return (f"ranking only: model/{name} has no threshold for this checkpoint (train on data prepared with "
                "--val_ids to get one)")
    rule = f"the threshold is chosen for a false-positive rate of {threshold['target_fpr']:g} on held-out people"
    if best < threshold["threshold"]:
        return f"no match above the threshold (best {best:.3f} < {threshold['threshold']:.3f}; {rule})"
    return f"the same person: best {best:.3f} >= {threshold['threshold']:.3f} ({rule})"


def strangers_line(threshold, gallery_size):
    """What the per-pair rate means for one search: the threshold is compared with every gallery picture."""
    expected = threshold["target_fpr"] * gallery_size
    return (f"  per search: {gallery_size:,} pictures x {threshold['target_fpr']:g} per pair = about {expected:.1f} "
            "stranger(s) above the threshold on average: a match can be a stranger")


def search_own_photo(args):
    """Rank a folder of pictures by similarity to one picture, with test.py's feature extraction (reid.extraction)."""
    import model as models
    from reid import extraction, pipeline

    for path, kind in ((args.query_image, "file"), (args.gallery_dir, "folder")):
        if not (os.path.isfile(path) if kind == "file" else os.path.isdir(path)):
            raise UserError(f"{path} is not a {kind}", f"pass an existing {kind}")
    gallery = gallery_pictures(args.gallery_dir, args.query_image)
    images.check_images([args.query_image] + gallery)
    device, _ = utils.select_device(args.gpu_ids)
    net, options = models.load_trained(runs.run_dir(args.name), args.which_epoch, device)
    threshold = validation.read_threshold(runs.run_dir(args.name), args.which_epoch)   # checked before the work
    size = models.get_backbone(options["backbone"]).input_size
    pictures = pipeline.ResizedPictures([(path, 0) for path in [args.query_image] + gallery], size)
    features = extraction.extract_features(net, pictures, device, args.batchsize)
    scores = (features[1:] @ features[0]).numpy()
    order = np.lexsort((np.arange(len(scores)), -scores))[:args.topk]
    cut = threshold["threshold"] if threshold else np.inf   # without one, nobody is called the same person
    items = [(gallery[g], f"{rank}\n{scores[g]:.3f}", "same" if scores[g] >= cut else "unknown")
             for rank, g in enumerate(order, 1)]
    verdict = decision(scores[order[0]], threshold, args.name)
    canvas, _ = draw_strip(args.query_image, items, f"{os.path.basename(args.query_image)} against "
                           f"{len(gallery)} pictures in {args.gallery_dir}: {verdict}")
    for rank, g in enumerate(order, 1):
        print(f"  {rank:>2}  {scores[g]:.4f}  {'same person' if scores[g] >= cut else '':<11}  {gallery[g]}")
    print(verdict)
    if threshold:
        print(strangers_line(threshold, len(gallery)))
    out = args.out or "search.png"
    files.atomic_write(out, lambda temporary: canvas.save(temporary, format="PNG"))
    print(f"wrote {out}")
    return [gallery[g] for g in order]


@utils.cli_main
def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    check_args(parser, args)
    if args.report:
        files.output_folder(args.out or "report", "--out")
    else:
        picture = "search.png" if args.query_image else "show.png"
        files.output_file(args.out or picture, "--out", picture)
    if args.query_image:
        return search_own_photo(args)
    if args.report:
        from reid import report
        result = load_run(args)
        attacked = features.load_features(args.attacked, like=result, pair_flag="--attack odfa") if args.attacked else None
        return report.write_report(result, args.out or "report", args.topk, explainer(args), attacked)
    return show_query(args)


if __name__ == "__main__":
    main()
