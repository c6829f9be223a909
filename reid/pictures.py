"""Pictures for people to look at: ranking strips, training curves and the report's plots (all headless)."""
import os

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from reid.datasets import match_masks
from reid.files import atomic_write
from reid.images import open_rgb


def plot_training_curves(path, history):
    """train.jpg: loss and top-1 error per epoch, train and val, and (with prepare.py --val_ids) the
    unseen identities' Rank@1 and mAP (headless)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    unseen = [row for row in history if "unseen_mAP" in row]
    figure, axes = plt.subplots(1, 3 if unseen else 2, figsize=(15 if unseen else 10, 4))
    loss_axis, error_axis = axes[:2]
    epochs = [row["epoch"] for row in history]
    for phase, style in (("train", "o-"), ("val", "s-")):
        loss_axis.plot(epochs, [row[f"{phase}_loss"] for row in history], style, label=phase)
        error_axis.plot(epochs, [1 - row[f"{phase}_acc"] for row in history], style, label=phase)
    loss_axis.set_yscale("log")   # an early spike in val loss would otherwise flatten the rest
    titles = [(loss_axis, "loss (log scale)"), (error_axis, "top-1 error (classification of training people)")]
    if unseen:
        for key, label, style in (("unseen_rank1", "Rank@1", "o-"), ("unseen_mAP", "mAP", "s-")):
            axes[2].plot([row["epoch"] for row in unseen], [row[key] for row in unseen], style, label=label)
        titles.append((axes[2], "retrieval of unseen people (val_query)"))
    for axis, title in titles:
        axis.set_title(title, fontsize=10)
        axis.set_xlabel("epoch")
        axis.legend()
    figure.tight_layout()
    atomic_write(path, lambda temporary: figure.savefig(temporary, format="jpg"))
    plt.close(figure)


TILE = (128, 256)          # width, height of every picture in a strip
GAP, LABEL, TITLE = 10, 40, 44
COLOURS = {"correct": (44, 160, 44), "wrong": (214, 39, 40), "query": (31, 119, 180), "unknown": (120, 120, 120),
           "same": (44, 160, 44)}   # own-photo search: at or above the run's same-person threshold


def ranked_gallery(result, index):
    """Gallery indices for query ``index``, best first, junk removed, with 'correct'/'wrong' statuses.

    Ties put a wrong match first, as evaluate_gpu.evaluate does, so the picture agrees with the scores.
    """
    scores = result["gallery_f"] @ result["query_f"][index] if result["scores"] is None else result["scores"][index]
    good, junk = match_masks(result["query_label"][index:index + 1], result["query_cam"][index:index + 1],
                             result["gallery_label"], result["gallery_cam"])
    correct, junk = good[0] & ~junk[0], junk[0]
    order = np.lexsort((correct, -scores))
    order = order[~junk[order]]
    return [(int(g), float(scores[g]), "correct" if correct[g] else "wrong") for g in order]


def query_title(result, index):
    metrics = result["metrics"]
    first = metrics.first_correct[index]
    found = f"first correct match at rank {first + 1}" if first >= 0 else "no correct match in the gallery"
    return (f"query {index}: person {result['query_label'][index]} camera {result['query_cam'][index]}, "
            f"AP {metrics.ap[index]:.3f}, {found}")


def font(size):
    return ImageFont.load_default(size=size)


def draw_strip(query_path, items, title, query_caption="query", heat=None):
    """One row: the query, then (path, caption, status) items; returns the image and each tile's box.
    ``heat``: a map in [0, 1] per tile (reid.heatmaps), drawn over the pictures."""
    width = GAP + (len(items) + 1) * (TILE[0] + GAP) + GAP
    canvas = Image.new("RGB", (width, TITLE + LABEL + TILE[1] + GAP), "white")
    draw = ImageDraw.Draw(canvas)
    draw.text((GAP, 10), title, fill="black", font=font(16))
    boxes = []
    tiles = [(query_path, query_caption, "query")] + list(items)
    for slot, (path, caption, status) in enumerate(tiles):
        left = GAP + slot * (TILE[0] + GAP) + (GAP if slot else 0)
        top = TITLE + LABEL
        picture = open_rgb(path).resize(TILE, Image.BICUBIC)
        if heat is not None:
            from reid.heatmaps import overlay
            picture = overlay(picture, heat[slot])
        canvas.paste(picture, (left, top))
        box = (left - 4, top - 4, left + TILE[0] + 3, top + TILE[1] + 3)
        draw.rectangle(box, outline=COLOURS[status], width=4)
        for line, text in enumerate(caption.split("\n")[:2]):
            draw.text((left, TITLE + 2 + 18 * line), text, fill=COLOURS[status], font=font(14))
        boxes.append((box, status))
    return canvas, boxes


def query_strip(result, index, topk, explain=None):
    """The strip for one query of the test run, and the ranked items it shows. ``explain(paths, targets)``:
    heatmaps of those pictures against those features (reid.heatmaps): each gallery picture's against the
    query's feature, the query's against its first-ranked picture's."""
    ranked = ranked_gallery(result, index)[:topk]
    items = [(result["gallery_paths"][g], f"{rank}  {status}\n{score:.3f}", status)
             for rank, (g, score, status) in enumerate(ranked, 1)]
    heat = None
    if explain is not None:
        paths = [result["query_paths"][index]] + [result["gallery_paths"][g] for g, _, _ in ranked]
        targets = np.stack([result["gallery_f"][ranked[0][0]]] + [result["query_f"][index]] * len(ranked))
        heat = explain(paths, targets)
    canvas, boxes = draw_strip(result["query_paths"][index], items, query_title(result, index),
                               query_caption=f"query\nperson {result['query_label'][index]}", heat=heat)
    return canvas, boxes, ranked


def save_plots(folder, metrics):
    """cmc.png and ap.png, drawn headless."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(5, 3.5))
    shown = min(50, len(metrics.cmc))
    axis.plot(np.arange(1, shown + 1), metrics.cmc[:shown], "o-", markersize=3)
    axis.set(xlabel="rank", ylabel="share of queries matched", title="CMC curve", ylim=(0, 1.02))
    axis.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(os.path.join(folder, "cmc.png"), dpi=100)
    plt.close(figure)
    figure, axis = plt.subplots(figsize=(5, 3.5))
    axis.hist(metrics.ap[metrics.valid], bins=20, range=(0, 1), color="#1f77b4")
    axis.set(xlabel="average precision", ylabel="queries", title=f"AP per query ({metrics.convention})")
    figure.tight_layout()
    figure.savefig(os.path.join(folder, "ap.png"), dpi=100)
    plt.close(figure)


def save_verification_plots(folder, counts, marks):
    """roc.png (TPR against FPR, log scale) and scores.png (how same-person and different-person pairs
    score), each with ``marks`` -- [(label, threshold)] -- drawn in; headless."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from reid import verification

    fpr, tpr, _ = verification.roc(counts)
    shown = fpr > 0
    figure, axis = plt.subplots(figsize=(5, 3.5))
    axis.plot(fpr[shown], tpr[shown], "-", color="#1f77b4", label="every threshold")
    for (label, threshold), colour in zip(marks, ("#d62728", "#ff7f0e", "#2ca02c", "#9467bd")):
        marked_fpr, marked_tpr = verification.rates_at(counts, threshold)
        if marked_fpr > 0:   # a log axis has no 0
            axis.plot(marked_fpr, marked_tpr, "o", color=colour, label=f"{label}: {threshold:.3f}")
    axis.set(xscale="log", xlabel="false-positive rate (different people accepted)", ylim=(0, 1.02),
             ylabel="true-positive rate", title="ROC of query-gallery pairs")
    axis.grid(alpha=0.3, which="both")
    axis.legend(fontsize=8, loc="lower right")
    figure.tight_layout()
    figure.savefig(os.path.join(folder, "roc.png"), dpi=100)
    plt.close(figure)
    occupied = np.flatnonzero(counts.same + counts.different)
    group = max(1, (occupied[-1] - occupied[0] + 1) // 80)   # about 80 bars over the scores that occur
    start = occupied[0] - occupied[0] % group
    edges = verification.threshold(np.arange(start, occupied[-1] + group + 1, group))
    figure, axis = plt.subplots(figsize=(5, 3.5))
    for values, label, colour in ((counts.different, "different person", "#d62728"),
                                  (counts.same, "same person", "#2ca02c")):
        summed = np.add.reduceat(values[start:], np.arange(0, len(values) - start, group))[:len(edges) - 1]
        axis.stairs(summed / max(1, summed.sum()), edges, fill=True, alpha=0.45, color=colour, label=label)
    for (label, threshold), style in zip(marks, ("--", ":", "-.", "-")):
        axis.axvline(threshold, color="black", linestyle=style, linewidth=1, label=f"{label}: {threshold:.3f}")
    axis.set(xlabel="cosine similarity", ylabel="share of pairs", title="scores of same / different people")
    axis.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(os.path.join(folder, "scores.png"), dpi=100)
    plt.close(figure)


def plot_dataset_counts(path, table):
    """audit.py's counts.png: pictures per identity (histogram) and per camera (bars), for each split."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (identities, cameras) = plt.subplots(1, 2, figsize=(11, 3.8))
    splits = [split for split, (per_identity, _) in table.items() if per_identity]
    most = max(max(per_identity.values()) for per_identity, _ in table.values() if per_identity)
    identities.hist([list(table[split][0].values()) for split in splits], bins=np.arange(1, most + 2) - 0.5,
                    label=splits)
    identities.set(xlabel="pictures of one identity", ylabel="identities", title="pictures per identity")
    all_cameras = sorted({camera for _, per_camera in table.values() for camera in per_camera})
    width = 0.8 / max(len(splits), 1)
    for offset, split in enumerate(splits):
        cameras.bar(np.arange(len(all_cameras)) + offset * width, [table[split][1][c] for c in all_cameras],
                    width, label=split)
    cameras.set_xticks(np.arange(len(all_cameras)) + width * (len(splits) - 1) / 2, [str(c) for c in all_cameras])
    cameras.set(xlabel="camera", ylabel="pictures", title="pictures per camera")
    for axis in (identities, cameras):
        axis.legend()
        axis.grid(alpha=0.3, axis="y")
    figure.tight_layout()
    atomic_write(path, lambda temporary: figure.savefig(temporary, format="png", dpi=100))
    plt.close(figure)
