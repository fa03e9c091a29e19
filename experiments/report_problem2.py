"""The problem-2 part of ``REPORT.md``: the methods against the heatmap at a strict and a loose threshold, the
hand-ambiguity ceiling and the hypothesis test, why direct regression loses, where each method puts the hands, the
heatmap ablations and the failure cases. Every experiment's full metric table is in the appendix."""
from __future__ import annotations

from pathlib import Path

from common.report import fmt, markdown_table
from experiments.figures import FIGURES
from experiments.findings import SECTIONS, best_regression
from experiments.report_common import (
    cell,
    comparison,
    exp_cell,
    family,
    figure,
    members,
    run_figure,
    verdict_cell,
    verdict_table,
)
from problem2.metrics import THRESHOLDS

STRICT_LOOSE = ["pck@0.05", "pck@0.2"]
PLACEMENT = ("near_one_hand", "near_midpoint", "crossed", "elsewhere", "one_per_hand")



def _results(study: dict, results_dir: Path) -> list[str]:
    keys = members(study, "p2-methods")
    best = best_regression(study)
    if best and best not in keys:
        keys.append(best)
    if not keys:
        return []
    cfg = next((r["config"] for r in study["runs"] if r["experiment"] == "p2-heatmap"), None)
    method = ("HeatmapNet predicts a Gaussian heatmap per keypoint, decoded to sub-pixel positions; RegressionNet "
              "regresses coordinates; integral (soft-argmax) and SimCC (per-axis classification) use HeatmapNet's "
              "encoder-decoder. Each method decodes to image pixels, and one PCK code scores all (a keypoint within "
              "threshold x its image's keypoint-box diagonal).")
    if cfg:
        method += (f" Training: Adam lr {cfg['lr']:g}, batch {cfg['batch_size']}, {cfg['epochs']} epochs; heatmaps "
                   f"{cfg['heatmap_size']}x{cfg['heatmap_size']}, sigma {cfg['sigma']:g}, decoder {cfg['decoder']}.")
    c = study.get("ceiling")
    bound = [["hand-ambiguity ceiling", fmt(c["pck"]["0.05"]), "", fmt(c["pck"]["0.2"]), "", fmt(c["auc"]), ""]] \
        if c else []
    return [f"### {SECTIONS['p2-results']}", "", method, "",
            *verdict_table(study, keys, "p2-heatmap", STRICT_LOOSE, ["auc", "mean_px_error"], bound), "",
            *figure(results_dir, FIGURES["p2_experiments"], "Every problem-2 experiment at PCK@0.05 and PCK@0.2")]


def _hands(study: dict, results_dir: Path) -> list[str]:
    c = study.get("ceiling")
    fam = family(study, "p2-canonical-hands")
    if not c and fam is None:
        return []
    lines = [f"### {SECTIONS['p2-hands']}", ""]
    if c:
        cells = lambda pck: [fmt(pck[f"{t:g}"]) for t in THRESHOLDS]  # noqa: E731
        rows = [["always commit to one hand assignment", *cells(c["strategies"]["commit"]["pck"])],
                ["always the hands' midpoint", *cells(c["strategies"]["midpoint"]["pck"])],
                ["ceiling (the better of the two per image)", *cells(c["pck"])]]
        lines += ["Both arms are drawn alike, so no image shows which hand is `left_hand`. Per image a predictor can "
                  "at best commit to one assignment (right half the time) or put both hands at their midpoint; the "
                  "better of the two per image and threshold bounds PCK on these labels (other keypoints taken as "
                  "perfect).", "",
                  *markdown_table(["strategy", *(f"PCK@{t:g}" for t in THRESHOLDS)], rows), ""]
    if fam is not None:
        gaps = [("original labels", "p2-regression", "p2-heatmap"),
                ("canonical labels", "p2-canonical-hands-regression", "p2-canonical-hands-heatmap")]
        lines += ["The hypothesis test retrains both models on derived labels (`--canonical-hands`: the hand with the "
                  "smaller x is `left_hand`), scored against those; only scores on the same labels are compared, here "
                  "regression's gap to the heatmap:",
                  "",
                  *markdown_table(["labels", "comparison", "PCK@0.05", "PCK@0.2"],
                                  [[labels, f"`{a}` vs `{b}`", *(verdict_cell(comparison(study, a, b, m))
                                                                 for m in STRICT_LOOSE)]
                                   for labels, a, b in gaps if a in study["experiments"]]),
                  ""]
    return lines


def _regression(study: dict) -> list[str]:
    keys = [*members(study, "p2-regression-head"), *members(study, "p2-regression-long")]
    keys = list(dict.fromkeys(keys))
    if not keys:
        return []
    return [f"### {SECTIONS['p2-regression']}", "",
            "The specified RegressionNet reads the 8x8 encoder map through global average pooling (`gap`); `flatten` "
            "keeps every position, `coord` adds coordinate channels before pooling; each with the specified dropout "
            "0.5 and without it; and the specified regression trained 3x longer.", "",
            *verdict_table(study, keys, "p2-regression", STRICT_LOOSE, ["mean_px_error"]), ""]


def placement_keys(study: dict) -> list[str]:
    """The experiments whose hand placement the report shows (``study.json`` has every experiment's)."""
    return [k for k in ("p2-heatmap", "p2-integral", "p2-simcc", best_regression(study), "p2-regression")
            if k and k in study["experiments"] and study["experiments"][k]["n"]]


def _placement(study: dict) -> list[str]:
    keys = placement_keys(study)
    if not keys:
        return []
    rows = [[exp_cell(study, k), *(cell(study, k, f"hands_apart_{p}") for p in PLACEMENT)] for k in keys]
    c = study.get("ceiling")
    if c and "hand_placement" in c["strategies"]["commit"]:
        rows += [[f"ceiling's '{s}'", *(fmt(c["strategies"][s]["hand_placement"][p]) for p in PLACEMENT)]
                 for s in ("commit", "midpoint")]
    return [f"### {SECTIONS['p2-methods']}", "",
            "Validation images whose hands are more than 2 PCK@0.05 radii apart: where the hand predictions land "
            "(crossed: the x of one hand, the y of the other), and the share of images with one on each hand.", "",
            *markdown_table(["experiment", *(p.replace("_", " ") for p in PLACEMENT)], rows), ""]


def _ablations(study: dict) -> list[str]:
    keys = ["p2-heatmap", *(m for f in ("p2-sigma", "p2-resolution", "p2-skip") for m in members(study, f)
                            if m != "p2-heatmap")]
    keys = list(dict.fromkeys(keys))
    if len(keys) < 2:
        return []
    return [f"### {SECTIONS['p2-ablations']}", "",
            "Sigma in heatmap pixels; resolution of the heatmap; the decoder's skip connections. Judged by PCK, "
            "since validation loss is not comparable across sigmas or resolutions.", "",
            *verdict_table(study, keys, "p2-heatmap", STRICT_LOOSE, ["mean_px_error"]), ""]


def _failures(study: dict, results_dir: Path) -> list[str]:
    pair = next(iter(study["pairs"]), None)
    if pair is None or not pair.get("failures"):
        return []
    names = list(next(iter(pair["failures"].values()))["per_keypoint"])
    rows = [[g.replace("_", " "), v["count"], v["images"], *(v["per_keypoint"][n] for n in names)]
            for g, v in pair["failures"].items()]
    return ["### Failure cases", "",
            f"Keypoints of the specified pair at PCK@0.1 (seed {pair['seed']}, {pair['num_images']} validation "
            f"images, both models evaluated together by `{pair['evaluate_command']}`):", "",
            *markdown_table(["group", "keypoints", "images", *names], rows), "",
            *figure(results_dir, f"{pair['dir']}/figures/failure_cases.png", "Failure cases"),
            *figure(results_dir, f"{pair['dir']}/figures/sample_predictions.png", "Sample predictions of both models"),
            *figure(results_dir, f"{pair['dir']}/figures/pck_curves.png",
                    f"PCK curves of the specified pair (seed {pair['seed']})")]


def problem2_sections(study: dict, results_dir: Path) -> list[str]:
    if not any(e["problem"] == "problem2" for e in study["experiments"].values()):
        return []
    lines = ["## Problem 2: heatmap against direct regression", "", *_results(study, results_dir),
             *_hands(study, results_dir), *_regression(study), *_placement(study), *_ablations(study),
             *_failures(study, results_dir)]
    if "p2-heatmap" in study["experiments"]:
        lines += ["### Problem 2 figures", "",
                  *run_figure(study, results_dir, "p2-heatmap", "figures/predicted_heatmaps.png", "Predicted heatmaps"),
                  *run_figure(study, results_dir, "p2-heatmap", "figures/heatmaps_during_training.png",
                              "Heatmaps during training"),
                  *figure(results_dir, FIGURES["p2_training_curves"], "Training curves of each method")]
    return lines
