"""Validation on people training never sees: retrieval of val_query in val_gallery after every epoch.

``prepare.py --val_ids K`` holds K training identities out of every training split (reid/sources.py).
Ranking their pictures measures what the test measures -- retrieval of unseen people -- where the
classic val split (one picture of each *training* identity) measures classification of people the
network has already seen. train.py reports the held-out Rank@1 and mAP each epoch, keeps the best
epoch's weights as net_best.pth (by mAP: it moves less from epoch to epoch than Rank@1) and writes
threshold.yaml: the similarity above which two pictures are called the same person, chosen on these
held-out pairs for a target false-positive rate. The test set is never used to choose anything.
"""
import math
import os
from dataclasses import dataclass

import numpy as np

from reid import files, verification
from reid.extraction import extract_features, split_pictures
from reid.metrics import evaluate
from reid.runs import checkpoint_label
from utils import UserError

QUERY, GALLERY = "val_query", "val_gallery"
THRESHOLDS = "threshold.yaml"


@dataclass
class HeldOut:
    """The held-out identities' pictures: (ResizedPictures, pids, camera ids) for queries and gallery."""

    query: tuple
    gallery: tuple


def held_out_sets(data_dir, size):
    """The val_query / val_gallery pictures under ``data_dir``, or None when prepare.py made none."""
    if not all(os.path.isdir(os.path.join(data_dir, split)) for split in (QUERY, GALLERY)):
        return None
    return HeldOut(split_pictures(data_dir, QUERY, size), split_pictures(data_dir, GALLERY, size))


def score_held_out(net, held_out, device, batchsize, num_workers, target_fpr):
    """Rank@1, mAP (trapezoid, all queries) and the threshold for ``target_fpr`` of ``net`` (eval mode)."""
    net.eval()
    query, q_pids, q_cams = held_out.query
    gallery, g_pids, g_cams = held_out.gallery
    q_feats = extract_features(net, query, device, batchsize, num_workers=num_workers, desc="unseen q").numpy()
    g_feats = extract_features(net, gallery, device, batchsize, num_workers=num_workers, desc="unseen g").numpy()
    metrics = evaluate(q_feats, q_pids, q_cams, g_feats, g_pids, g_cams, pairs=True)
    counts = metrics.pairs
    point = verification.operating_point(counts, target_fpr)
    threshold, tpr, fpr = point if point else (math.nan, math.nan, math.nan)
    return {"rank1": metrics.rank(1), "mAP": metrics.mAP, "threshold": threshold, "tpr": tpr, "fpr": fpr,
            "pairs": counts.num_different}


def best_epoch(history):
    """The epoch with the highest held-out mAP (the earliest on a tie), or None before any was scored."""
    scored = [row for row in history if not math.isnan(float(row.get("unseen_mAP", math.nan)))]
    return max(scored, key=lambda row: (row["unseen_mAP"], -row["epoch"]))["epoch"] if scored else None


def is_best(history):
    """Whether the newest epoch is the best so far."""
    return bool(history) and best_epoch(history) == history[-1]["epoch"]


def threshold_entry(row):
    """One checkpoint's entry in threshold.yaml, from its summary row."""
    return {"epoch": row["epoch"], **{key: float(row[f"unseen_{key}"]) for key in ("threshold", "tpr", "fpr", "rank1", "mAP")}}


def write_thresholds(run_dir, history, target_fpr):
    """threshold.yaml: for each checkpoint train.py keeps (last, best, every 10th epoch) the epoch it holds
    and its threshold, TPR and FPR on the held-out pairs."""
    rows = {row["epoch"]: row for row in history if "unseen_threshold" in row}
    if not rows:
        return None
    chosen = {"last": history[-1]["epoch"], "best": best_epoch(history),
              **{checkpoint_label(epoch): epoch for epoch in rows if epoch % 10 == 0}}
    data = {"target_fpr": target_fpr, "different_person_pairs": int(history[-1]["unseen_pairs"]),
            "chosen_on": "the held-out identities (val_query x val_gallery), never the test set",
            "checkpoints": {key: threshold_entry(rows[epoch]) for key, epoch in chosen.items() if epoch in rows}}
    files.save_yaml(os.path.join(run_dir, THRESHOLDS), data)
    return data


def read_threshold(run_dir, which_epoch):
    """The threshold stored for the checkpoint ``which_epoch`` (last, best, 10 or 010), or None. A value edited
    by hand into something that is not a cosine (or a rate) is one error line, not a silent "nobody matches"."""
    path = os.path.join(run_dir, THRESHOLDS)
    if not os.path.isfile(path):
        return None
    saved = files.load_yaml(path, "train.py on data prepared with --val_ids")
    checkpoints = saved.get("checkpoints") or {}
    try:
        entry = checkpoints.get(checkpoint_label(which_epoch)) if isinstance(checkpoints, dict) else None
    except ValueError:   # an epoch name no checkpoint has (e.g. from a hand-made .mat)
        return None
    stored = entry.get("threshold") if isinstance(entry, dict) else None
    if stored is None or (isinstance(stored, float) and math.isnan(stored)):
        return None   # none stored, or nan: the held-out pairs could not set one
    where = f"{path}: checkpoints.{checkpoint_label(which_epoch)}"
    # scores are cosines in [-1, 1]; a threshold just outside (1 + a bin) or well outside (a test's 1.5) means
    # "everybody" or "nobody", while 70 or '0.7' is a hand edit gone wrong
    check_number(entry["threshold"], -2, 2, f"{where}.threshold", "a threshold on cosine similarity")
    check_number(saved.get("target_fpr"), 0, 1, f"{path}: target_fpr", "a rate per pair")
    return {**entry, "target_fpr": saved.get("target_fpr")}


def check_number(value, low, high, where, meaning):
    """Refuse a hand-edited ``value`` that is not a number in [low, high]."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
        raise UserError(f"{where} is {value!r}, not {meaning} between {low:g} and {high:g}",
                        f"correct it by hand, or delete {THRESHOLDS} to rank without a same-person threshold")
