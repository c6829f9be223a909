"""The HTML error-analysis report of ``python demo.py --report``: one folder that opens from disk.

index.html shows the summary metrics and their AP convention, a CMC curve, a histogram of per-query
AP, open-set verification (ROC, the score distributions of same- and different-person pairs, the run's
held-out threshold applied to the test set), the Rank-1 matrix per camera pair (query camera x gallery camera), the worst queries with their
ranked strips, and a per-query table that sorts when a header is clicked (a few lines of plain
JavaScript; no framework, no network). Every text taken from the data is HTML-escaped, so a crafted
file name cannot inject markup or script.
"""
import html
import os

import numpy as np

from reid import features, files, runs, validation, verification
from reid.metrics import evaluate
from reid.pictures import query_strip, save_plots, save_verification_plots

WORST = 8


def camera_pair_rank1(result):
    """Rank-1 for each (query camera, gallery camera): the gallery restricted to one camera.

    Returns (cameras, matrix); a cell is NaN where no query has a correct match in that camera
    (the diagonal always: same-camera matches are junk).
    """
    cameras = sorted(set(result["query_cam"].tolist()) | set(result["gallery_cam"].tolist()))
    matrix = np.full((len(cameras), len(cameras)), np.nan)
    for column, camera in enumerate(cameras):
        keep = result["gallery_cam"] == camera
        if not keep.any():
            continue
        metrics = evaluate(result["query_f"], result["query_label"], result["query_cam"],
                                        result["gallery_f"][keep], result["gallery_label"][keep],
                                        result["gallery_cam"][keep])
        for row, query_camera in enumerate(cameras):
            chosen = (result["query_cam"] == query_camera) & metrics.valid
            if chosen.any():
                matrix[row, column] = float((metrics.first_correct[chosen] == 0).mean())
    return cameras, matrix


def summary_rows(result, metrics):
    rows = [("Rank@1", metrics.rank(1)), ("Rank@5", metrics.rank(5)), ("Rank@10", metrics.rank(10)),
            ("Rank@20", metrics.rank(20)), ("mAP", metrics.mAP), ("mINP", metrics.mINP)]
    cells = "".join(f'<tr><th>{name}</th><td id="{name}">{value:.6f}</td></tr>' for name, value in rows)
    facts = [("AP convention", metrics.convention), ("queries", metrics.num_queries),
             ("without a correct match", metrics.num_queries - metrics.num_valid),
             ("gallery pictures", len(result["gallery_f"])), ("features", features.provenance_line(result))]
    return cells + "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(str(v))}</td></tr>" for k, v in facts)


def camera_table(cameras, matrix):
    head = "".join(f"<th>gallery c{c}</th>" for c in cameras)
    body = ""
    for row, camera in enumerate(cameras):
        cells = "".join("<td>—</td>" if np.isnan(v) else f'<td style="background:rgba(44,160,44,{v:.2f})">{v:.2f}</td>'
                        for v in matrix[row])
        body += f"<tr><th>query c{camera}</th>{cells}</tr>"
    return f"<table class=matrix><tr><th></th>{head}</tr>{body}</table>"


def worst_queries(folder, result, metrics, topk, explain=None):
    """Strips of the lowest-AP queries, saved as worst_<index>.png; returns their HTML. ``explain``: heatmaps
    over the pictures (pictures.query_strip)."""
    candidates = np.flatnonzero(metrics.valid)
    chosen = candidates[np.argsort(metrics.ap[candidates], kind="stable")][:WORST]
    parts = []
    for index in chosen:
        canvas, _, _ = query_strip(result, int(index), topk, explain)
        canvas.save(os.path.join(folder, f"worst_{index}.png"))
        caption = html.escape(f"query {index} ({os.path.basename(result['query_paths'][index])}): "
                              f"AP {metrics.ap[index]:.3f}")
        parts.append(f'<figure><img src="worst_{index}.png" alt="{caption}"><figcaption>{caption}</figcaption></figure>')
    return "\n".join(parts)


ATTACKED = 3   # queries shown clean and attacked: those whose AP fell most


def attacked_section(folder, result, attacked, topk):
    """With test.py --attack's .mat: the queries whose AP fell most, each ranked by its clean feature and
    then by its attacked one (the gallery is the same); returns the section's HTML."""
    if attacked is None:
        return ""
    fallen = evaluate(attacked["query_f"], result["query_label"], result["query_cam"], result["gallery_f"],
                      result["gallery_label"], result["gallery_cam"], ap=result["metrics"].convention)
    under_attack = {**result, "query_f": attacked["query_f"], "scores": None, "metrics": fallen}
    drop = result["metrics"].ap - fallen.ap
    parts = []
    for index in np.argsort(-drop, kind="stable")[:ATTACKED]:
        for label, shown in (("clean", result), ("attacked", under_attack)):
            canvas, _, _ = query_strip(shown, int(index), topk)
            canvas.save(os.path.join(folder, f"{label}_{index}.png"))
            caption = html.escape(f"query {index}, {label}: AP {shown['metrics'].ap[index]:.3f}")
            parts.append(f'<figure><img src="{label}_{index}.png" alt="{caption}"><figcaption>{caption}</figcaption></figure>')
    return (f"<h2>Under attack</h2><p>Each query changed by ODFA (test.py --attack), at most a few levels a pixel: mAP "
            f"{result['metrics'].mAP:.4f} clean, {fallen.mAP:.4f} attacked. The {ATTACKED} queries whose AP fell most, "
            f"ranked first by the clean query's feature, then by the attacked one's (the picture shown is the clean one: the "
            f"attacked one looks the same).</p>" + "\n".join(parts))


def query_table(result, metrics):
    rows = []
    for index in range(metrics.num_queries):
        first = metrics.first_correct[index]
        rows.append(f"<tr><td>{index}</td><td>{html.escape(os.path.basename(result['query_paths'][index]))}</td>"
                    f"<td>{result['query_label'][index]}</td><td>{result['query_cam'][index]}</td>"
                    f"<td>{metrics.ap[index]:.4f}</td><td>{first + 1 if first >= 0 else ''}</td></tr>")
    head = "".join(f'<th data-kind="{kind}">{name}</th>' for name, kind in
                   (("#", "number"), ("query picture", "text"), ("person", "number"), ("camera", "number"),
                    ("AP", "number"), ("first correct rank", "number")))
    return f'<table id="queries"><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table>'


SCRIPT = """
window.onerror = function (message) { document.body.dataset.errors = (document.body.dataset.errors || "") + message; };
document.querySelectorAll("#queries th").forEach(function (header, column) {
  header.addEventListener("click", function () {
    var body = document.querySelector("#queries tbody"), rows = Array.from(body.rows);
    var numeric = header.dataset.kind === "number", ascending = header.dataset.order !== "ascending";
    rows.sort(function (a, b) {
      var x = a.cells[column].textContent, y = b.cells[column].textContent;
      if (numeric) { x = x === "" ? Infinity : parseFloat(x); y = y === "" ? Infinity : parseFloat(y); }
      return (x < y ? -1 : x > y ? 1 : 0) * (ascending ? 1 : -1);
    });
    rows.forEach(function (row) { body.appendChild(row); });
    header.dataset.order = ascending ? "ascending" : "descending";
  });
});
document.body.dataset.ready = "yes";
"""
STYLE = """body{font-family:sans-serif;margin:2em;color:#222} table{border-collapse:collapse;margin:1em 0}
td,th{border:1px solid #ccc;padding:3px 8px;text-align:right} #queries th{cursor:pointer;background:#eee}
figure{margin:1em 0} img{max-width:100%} .plots img{margin-right:1em}"""


def verification_section(folder, result):
    """Same person or not: the rates table, roc.png and scores.png, and how the threshold train.py chose
    on the held-out identities (threshold.yaml of the .mat's run, when it is here) does on this test set."""
    counts = verification.result_pair_counts(result)
    if counts.num_same == 0 or counts.num_different == 0:
        return "<p>This test set lacks same-person or different-person pairs: no verification.</p>"
    marks, rows = [], []
    for target in verification.TARGET_FPRS:
        point = verification.operating_point(counts, target)
        if point is None:
            rows.append((f"TPR at FPR {target:g}", f"n/a (fewer than {int(1 / target):,} different-person pairs)"))
            continue
        rows.append((f"TPR at FPR {target:g}", f"{point[1]:.3f} (threshold {point[0]:.4f})"))
        if point[1] > 0 and target == verification.TARGET_FPRS[0]:
            marks.append((f"test FPR {target:g}", point[0]))
    eer, eer_threshold = verification.equal_error_rate(counts)
    rows += [("EER", f"{eer:.3f} (threshold {eer_threshold:.4f})"), ("AUC", f"{verification.area_under_roc(counts):.4f}"),
             ("pairs", f"{counts.num_same:,} same-person, {counts.num_different:,} different-person (junk left out)")]
    chosen = validation.read_threshold(runs.run_dir(str(result.get("model_name", ""))),
                                       str(result.get("which_epoch", "last"))) if result.get("model_name") else None
    sentence = "No threshold.yaml of this run was found here (prepare.py --val_ids, then train.py, writes one)."
    if chosen:
        fpr, tpr = verification.rates_at(counts, chosen["threshold"])
        marks.append((f"held-out FPR {chosen['target_fpr']:g}", chosen["threshold"]))
        sentence = (f"The threshold train.py chose on the held-out identities for FPR {chosen['target_fpr']:g}, "
                    f"{chosen['threshold']:.4f}, gives FPR {fpr:.4f} and TPR {tpr:.3f} on this test set.")
    save_verification_plots(folder, counts, marks)
    cells = "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>" for k, v in rows)
    return (f"<table>{cells}</table><p id=threshold>{html.escape(sentence)}</p>"
            '<div class=plots><img src="roc.png" alt="ROC curve"><img src="scores.png" alt="score distributions"></div>')


HEAT_NOTE = (" Over each picture, Grad-CAM of its similarity to the query (the query's: to its first-ranked picture); red"
             " marks what makes the pair alike (reid/heatmaps.py).")
MATRIX_CAMERAS = 32   # more cameras than this get no camera-pair table (a set without real cameras)


def write_report(result, folder, topk=10, explain=None, attacked=None):
    """Write ``folder``/index.html and its pictures; returns the page's path. ``explain``: heatmaps for the
    worst queries' strips (demo.py --heatmap); ``attacked``: test.py --attack's result, for a section of its own."""
    metrics = result["metrics"]
    os.makedirs(folder, exist_ok=True)
    save_plots(folder, metrics)
    cameras = sorted(set(result["query_cam"].tolist()) | set(result["gallery_cam"].tolist()))
    matrix_section = (camera_table(*camera_pair_rank1(result)) if len(cameras) <= MATRIX_CAMERAS else
                      f"<p>{len(cameras)} cameras: too many for a table (CUB-200-2011's pictures are each their own "
                      "camera; reid/drawn_sets.py says why).</p>")
    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>re-ID report</title><style>{STYLE}</style></head>
<body>
<h1>Re-ID error analysis</h1>
<h2>Summary</h2><table>{summary_rows(result, metrics)}</table>
<div class=plots><img src="cmc.png" alt="CMC curve"><img src="ap.png" alt="AP histogram"></div>
<h2>Same person or not?</h2>
<p>Every query-gallery pair is a decision: the same person when the cosine similarity reaches a threshold.
A higher threshold lets fewer different people through (false positives) and misses more of the same person.</p>
{verification_section(folder, result)}
<h2>Rank-1 by camera pair</h2>
<p>Each cell ranks only the gallery pictures of one camera. Same-camera matches are junk, hence the empty diagonal.</p>
{matrix_section}
<h2>The {WORST} worst queries</h2>
<p>Green: the same person seen by another camera; red: someone else; junk is skipped, as in the evaluation.{HEAT_NOTE if explain else ""}</p>
{worst_queries(folder, result, metrics, topk, explain)}
{attacked_section(folder, result, attacked, topk)}
<h2>Every query</h2><p>Click a column header to sort.</p>
{query_table(result, metrics)}
<script>{SCRIPT}</script>
</body></html>
"""
    path = os.path.join(folder, "index.html")
    def write(temporary):
        with open(temporary, "w", encoding="utf-8") as handle:
            handle.write(page)
    files.atomic_write(path, write)
    print(f"wrote {path}: {metrics.num_queries} queries, {len(cameras)} cameras, {WORST} worst queries shown")
    return path
