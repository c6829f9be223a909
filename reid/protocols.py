"""Why do the numbers differ? The same features scored under each convention a student will meet.

Papers and repositories print "Rank@1" and "mAP" for numbers computed under different rules:

* the AP formula: ``trapezoid`` (the Market-1501 authors' code, layumi's) or ``standard`` (precision at
  each hit, torchreid, fast-reid);
* the denominator: all queries, or only those whose person is in the gallery from another camera;
* the same-camera junk rule: the protocol removes the query's person seen by the query's own camera;
  retrieval code written without it counts those pictures as (easy) correct matches;
* re-ranking (k-reciprocal or GNN) and its (k1, k2, lambda).

``protocol_table`` scores one set of features under each row of PROTOCOLS, so that a student sees how
far apart the conventions put the same model.
"""
from dataclasses import dataclass
from typing import Optional, Tuple

import numpy as np

from reid.metrics import evaluate


@dataclass(frozen=True)
class Protocol:
    ap: str                                            # the AP formula: trapezoid or standard
    denominator: str                                   # "all" queries, or "valid" ones (with a correct match)
    same_camera_junk: bool                             # the query's person seen by its own camera is removed
    rerank: Optional[Tuple[str, int, int, float]]      # (method, k1, k2, lambda) of re-ranking, or None
    used_by: str


PROTOCOLS = (
    Protocol("trapezoid", "all", True, None, "Market-1501's authors, layumi; this project's default"),
    Protocol("standard", "all", True, None, "(the AP formula alone changed)"),
    Protocol("trapezoid", "valid", True, None, "(the denominator alone changed)"),
    Protocol("standard", "valid", True, None, "torchreid, fast-reid, reid-strong-baseline; --ap standard"),
    Protocol("standard", "valid", False, None, "retrieval code written without the re-ID protocol"),
    Protocol("trapezoid", "all", True, ("kreciprocal", 20, 6, 0.3), "the re-ranking paper's code, layumi; --rerank"),
    Protocol("standard", "valid", True, ("kreciprocal", 20, 6, 0.3), "reid-strong-baseline, torchreid, fast-reid re-ranking"),
    Protocol("standard", "valid", True, ("kreciprocal", 50, 15, 0.3), "TransReID's evaluator (R1_mAP_eval)"),
    Protocol("trapezoid", "all", True, ("gnn", 26, 7, 0.3), "the GNN re-ranking paper's code, layumi; --rerank gnn"),
)


def scores_under(protocol, per_query):
    """Rank@1 and mAP (fractions) from one evaluation's per-query results under the row's denominator."""
    denominator = per_query.num_queries if protocol.denominator == "all" else max(1, per_query.num_valid)
    hits = ((per_query.first_correct == 0) & per_query.valid).sum()
    return float(hits / denominator), float(per_query.ap[per_query.valid].sum() / denominator)


def protocol_table(query, result, device="cpu"):
    """[(Protocol, Rank@1, mAP)] for every row of PROTOCOLS; a re-ranking row whose k1 does not fit the
    gallery gets NaN. ``query``: the query features to score (multi-query ones, if asked)."""
    from reid.re_ranking import reranked_scores

    gallery = result["gallery_f"]
    evaluations, reranked, rows = {}, {}, []
    for protocol in PROTOCOLS:
        if protocol.rerank and protocol.rerank[1] >= len(gallery):
            rows.append((protocol, float("nan"), float("nan")))
            continue
        if protocol.rerank and protocol.rerank not in reranked:
            reranked[protocol.rerank] = reranked_scores(*protocol.rerank[:1], query, gallery, *protocol.rerank[1:],
                                                        device=device)
        key = (protocol.ap, protocol.same_camera_junk, protocol.rerank)
        if key not in evaluations:
            evaluations[key] = evaluate(query, result["query_label"], result["query_cam"], gallery,
                                        result["gallery_label"], result["gallery_cam"], ap=protocol.ap,
                                        scores=reranked.get(protocol.rerank), device=device,
                                        same_camera_junk=protocol.same_camera_junk)
        rows.append((protocol, *scores_under(protocol, evaluations[key])))
    return rows


def table_lines(rows):
    """The printed table, in percent, with a header and the sentence that says how to read it."""
    lines = ["the same features under each convention (Rank@1 and mAP in %):",
             f"{'AP':<10}{'queries':<9}{'same-camera':<13}{'re-ranking':<22}{'Rank@1':>7}{'mAP':>7}   used by"]
    for protocol, rank1, mAP in rows:
        rerank = "none" if protocol.rerank is None else "%s k1 %d k2 %d λ %.1f" % (
            ("gnn" if protocol.rerank[0] == "gnn" else "k-rec"), *protocol.rerank[1:])
        junk = "junk" if protocol.same_camera_junk else "correct"
        figures = "".join("%7s" % ("n/a" if np.isnan(v) else f"{100 * v:.1f}") for v in (rank1, mAP))
        lines.append(f"{protocol.ap:<10}{protocol.denominator:<9}{junk:<13}{rerank:<22}{figures}   {protocol.used_by}")
    lines.append("rows differ by convention, not by model: compare a number only with one from the same row")
    return lines
