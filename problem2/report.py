"""``summary.md`` of problem 2, generated from the JSON files the scripts wrote (every number is read from them):
``metrics.json`` (evaluate.py), ``canonical_hands/metrics.json`` (the hypothesis test) and ``ablation.json``
(baseline.py).
"""
from __future__ import annotations

from pathlib import Path

from common.data import load_json
from common.io import atomic_write_text
from common.report import fmt, markdown_table
from problem2.config import METHODS
from problem2.metrics import FAILURE_THRESHOLD, THRESHOLDS

PCK_HEADER = [f"PCK@{t:g}" for t in THRESHOLDS]


def _pck_cells(pck: dict) -> list[str]:
    """The cells of a ``{'0.05': v, ...}`` dict in :data:`THRESHOLDS` order."""
    return [fmt(pck[f"{t:g}"]) for t in THRESHOLDS]


def _pck_table(metrics: dict) -> list[str]:
    rows = []
    for method, res in metrics["methods"].items():
        m = res["metrics"]
        rows.append([method, *_pck_cells(m["pck"]), fmt(m["auc"]), fmt(m["mean_px_error"], 2)])
        if "swap_invariant" in m:
            s = m["swap_invariant"]
            rows.append([f"{method}, hand-swap-invariant", *_pck_cells(s["pck"]), fmt(s["auc"]),
                         fmt(s["mean_px_error"], 2)])
    if metrics.get("ceiling"):
        c = metrics["ceiling"]
        rows.append(["hand-ambiguity ceiling", *_pck_cells(c["pck"]), fmt(c["auc"]), ""])
    return markdown_table(["", *PCK_HEADER, "AUC 0-0.5", "mean px error"], rows)


def _ceiling_section(c: dict) -> list[str]:
    commit, midpoint = c["strategies"]["commit"]["pck"], c["strategies"]["midpoint"]["pck"]
    return ["The ceiling is the Bayes-optimal PCK when the image cannot show which hand is `left_hand` "
            "(both arms are drawn alike): per image, 1 credit per hand if the hands are within 2r of each "
            "other (predict their midpoint), else 1/2 (commit to one assignment); the other keypoints "
            "perfect. Hand-swap-invariant rows score each image with the better hand assignment.", "",
            "The two strategies alone, and what one set of predictions can reach:", "",
            *markdown_table(["", *PCK_HEADER, "sum"], [
                ["always commit (distinct hands)", *_pck_cells(commit), fmt(sum(commit.values()))],
                ["always the midpoint (the MSE optimum of regression)", *_pck_cells(midpoint),
                 fmt(sum(midpoint.values()))],
                ["Bayes ceiling (a different choice per threshold)", *_pck_cells(c["pck"]),
                 fmt(c["sum_over_thresholds"])]]),
            "", f"The Bayes choice depends on the threshold, so no single set of predictions reaches the "
            f"ceiling at every threshold at once: the best any predictor can expect, summed over the four "
            f"thresholds, is {c['best_single_prediction_sum']:.3f} (ceiling: {c['sum_over_thresholds']:.3f}).", ""]


def _main_sections(metrics: dict) -> list[str]:
    lines = [f"Command: `{metrics['command']}`  ", f"Validation images: {metrics['num_images']} "
             f"(`{metrics['data_dir']}`); device {metrics['device']}; hand labelling: {metrics['labelling']}.", ""]
    for method, res in metrics["methods"].items():
        c = res["config"]
        lines.append(f"- {method}: `{res['checkpoint']}` (best validation loss, epoch {res['epoch']} of "
                     f"{c['epochs']}; seed {c['seed']}, lr {c['lr']}, batch {c['batch_size']}"
                     + (f", sigma {c['sigma']}, {c['heatmap_size']}x{c['heatmap_size']}, skip {c['skip']}, "
                        f"decoder {c['decoder']}, hands {'jointly' if c.get('hand_pairs', True) else 'each map alone'}"
                        if method == "heatmap" else "") + f"; evaluated in {res.get('precision', 'fp32')})")
    lines += ["", "PCK normalised by the diagonal of the ground-truth keypoint box:", "", *_pck_table(metrics), ""]
    if metrics.get("ceiling"):
        lines += _ceiling_section(metrics["ceiling"])
    torso = {m: r["metrics"].get("pck_torso") for m, r in metrics["methods"].items()}
    if all(torso.values()):
        lines += ["PCK normalised by torso length (head to the midpoint of the feet, 57 px in this data):", "",
                  *markdown_table(["", *PCK_HEADER], [[m, *_pck_cells(p)] for m, p in torso.items()]), ""]
    names = list(next(iter(metrics["methods"].values()))["metrics"]["per_keypoint"])
    t = f"{FAILURE_THRESHOLD:g}"
    lines += [f"Per keypoint, PCK@{t} / mean pixel error:", "",
              *markdown_table(["keypoint", *metrics["methods"]], [
                  [n, *(f"{fmt(r['metrics']['per_keypoint'][n]['pck'][t])} / "
                        f"{fmt(r['metrics']['per_keypoint'][n]['mean_px_error'], 2)} px"
                        for r in metrics["methods"].values())] for n in names]), ""]
    if metrics.get("decoders"):
        lines += ["Heatmap decoders on the same heatmaps (\"hands jointly\": one prediction per hand, see "
                  "`decode_pair` in problem2/heatmaps.py):", "",
                  *markdown_table(["decoder", *PCK_HEADER, "swap-inv. PCK@0.05", "mean px error"], [
                      [d, *_pck_cells(v["pck"]), fmt(v["swap_invariant_pck"]["0.05"]), fmt(v["mean_px_error"], 2)]
                      for d, v in metrics["decoders"].items()]), ""]
    if metrics.get("failures"):
        lines += [f"Failure cases at PCK@{t} (keypoint instances, of {metrics['num_images']} x {len(names)}; "
                  "images with at least one):", "",
                  *markdown_table(["group", "keypoints", "images", *names], [
                      [g.replace("_", " "), v["count"], v["images"], *(v["per_keypoint"][n] for n in names)]
                      for g, v in metrics["failures"].items()]), ""]
    return lines


def _hypothesis_section(main: dict, canon: dict, canon_dir: Path) -> list[str]:
    rows, pck05 = [], {}
    for label, m in (("original labels", main), ("canonical hands (derived)", canon)):
        for method, res in m["methods"].items():
            x = res["metrics"]
            pck05[method, label] = x["pck"]["0.05"]
            rows.append([f"{method}, {label}", *_pck_cells(x["pck"]), fmt(x["auc"]), fmt(x["mean_px_error"], 2)])
            if label == "original labels" and "swap_invariant" in x:
                s = x["swap_invariant"]
                rows.append([f"{method}, original labels, hand-swap-invariant", *_pck_cells(s["pck"]), fmt(s["auc"]),
                             fmt(s["mean_px_error"], 2)])
    lines = ["## Hypothesis test: is regression's deficit the hand ambiguity?", "",
             f"Both models retrained on a **derived labelling** (`--canonical-hands`, results in `{canon_dir}`): "
             "the hand with the smaller x is labelled `left_hand`, so the label is a function of the image and "
             "the ambiguity is gone (ceiling 1). Scores there are against the derived labels.", "",
             *markdown_table(["", *PCK_HEADER, "AUC", "mean px error"], rows)]
    keys = [(m, lab) for m in METHODS for lab in ("original labels", "canonical hands (derived)")]
    if all(k in pck05 for k in keys):
        before = pck05["heatmap", "original labels"] - pck05["regression", "original labels"]
        after = pck05["heatmap", "canonical hands (derived)"] - pck05["regression", "canonical hands (derived)"]
        share = f" (the ambiguity accounts for {1 - after / before:.0%} of it)" if before > 0 else ""
        lines += ["", f"Regression's deficit to the heatmap at PCK@0.05: {before:.3f} with the original labels, "
                  f"{after:.3f} with the canonical ones{share}."]
    lines += ["", f"Command: `{canon['command']}`", ""]
    return lines


def _ablation_section(abl: dict) -> list[str]:
    rows = []
    for family, names in abl["families"].items():
        for name in names:
            r = abl["runs"][name]
            m = r["metrics"]
            rows.append([family, name, f"{r['sigma']:g}", r["heatmap_size"], r["skip"], *_pck_cells(m["pck"]),
                         fmt(m["auc"]), fmt(m.get("swap_invariant", m)["pck"]["0.05"]), fmt(m["mean_px_error"], 2),
                         r["epoch"], f"{r['train_time_s'] / 60:.1f} min"])
    return ["## Ablations (heatmap model, judged by validation PCK)", "",
            f"Command: `{abl['command']}`  ",
            f"{abl['epochs']} epochs per run, seed {abl['seed']}; each run's best-validation-loss checkpoint "
            "(validation loss is only compared within a run). Sigma is in heatmap pixels, so at other "
            "resolutions sigma 2 is a different width in image pixels (8 px at 32x32, 2 px at 128x128).", "",
            *markdown_table(["ablation", "run", "sigma", "heatmap", "skip", *PCK_HEADER, "AUC", "swap-inv. PCK@0.05",
                             "mean px error", "epoch", "train time"], rows), ""]


def write_summary(results_dir: str | Path) -> Path:
    """(Re)write ``summary.md`` from whatever the scripts left in ``results_dir``: ``metrics.json``,
    ``ablation.json`` and the hypothesis test's ``canonical_hands/metrics.json``."""
    results_dir = Path(results_dir)
    lines = ["# Problem 2: heatmap vs direct regression", "",
             "Every number below is read from the JSON files next to this summary.", ""]
    metrics_path = results_dir / "metrics.json"
    main = load_json(metrics_path) if metrics_path.is_file() else None
    if main:
        lines += ["## Evaluation", "", *_main_sections(main)]
        fig_dir = results_dir / "figures"
        figs = sorted(p.name for p in fig_dir.glob("*.png")) if fig_dir.is_dir() else []
        if figs:
            lines += ["Figures: " + ", ".join(f"[{f}](figures/{f})" for f in figs), ""]
    canon_path = results_dir / "canonical_hands" / "metrics.json"
    if main and canon_path.is_file():
        lines += _hypothesis_section(main, load_json(canon_path), canon_path.parent)
    abl_path = results_dir / "ablation.json"
    if abl_path.is_file():
        lines += _ablation_section(load_json(abl_path))
    return atomic_write_text(results_dir / "summary.md", "\n".join(lines))
