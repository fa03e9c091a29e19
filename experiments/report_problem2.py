"""The problem-2 part of ``REPORT.md``: method, results over seeds, PCK curves, the hand-ambiguity ceiling, the
hypothesis test, the ablations, the regression analysis and the failure cases."""
from __future__ import annotations

from pathlib import Path

from common.report import fmt, markdown_table
from experiments.aggregate import HAND_PLACEMENT
from experiments.figures import FIGURES
from experiments.report_common import (
    command_line,
    comparison_table,
    exp_cell,
    family,
    figure,
    first_run,
    results_table,
    run_figure,
    stat_cell,
)
from problem2.metrics import KEYPOINT_GROUPS, THRESHOLDS

PCK = [f"pck@{t:g}" for t in THRESHOLDS]
MAIN = [*PCK, "auc", "mean_px_error", "swap_invariant_pck@0.05"]
GROUPS = [f"{g}_pck@0.05" for g in KEYPOINT_GROUPS]
ABLATIONS = {"p2-sigma": "Heatmap sigma (heatmap pixels)", "p2-resolution": "Heatmap resolution",
             "p2-skip": "Skip connections"}


def _method(study: dict) -> list[str]:
    cfg = next((r["config"] for r in study["runs"] if r["experiment"] == "p2-heatmap"), None)
    text = ("Two networks locate the keypoints of 128x128 stick figures: HeatmapNet predicts a Gaussian heatmap per "
            "keypoint (decoded to sub-pixel positions), RegressionNet regresses the coordinates. Every method is a "
            "model plus a codec that decodes to image pixels, so PCK, the ceiling and the figures are the same code "
            "for all; PCK counts a keypoint within threshold x the diagonal of the image's keypoint box. Each method "
            "is trained as its own run (`--model <method>`, same seed and data order) and scored at its "
            "best-validation-loss epoch by `problem2/evaluate.py`.")
    if cfg:
        text += (f" Training: Adam lr {cfg['lr']:g}, batch {cfg['batch_size']}, {cfg['epochs']} epochs per run; "
                 f"heatmaps {cfg['heatmap_size']}x{cfg['heatmap_size']}, sigma {cfg['sigma']:g} heatmap px, decoder "
                 f"{cfg['decoder']}.")
    return ["### Method", "", text, ""]


def _results(study: dict, results_dir: Path) -> list[str]:
    fam = family(study, "p2-specified")
    if fam is None:
        return []
    lines = ["### Results", "",
             "Validation PCK of each run's best-validation-loss checkpoint, mean ± sample standard deviation over "
             "seeds (number of seeds in brackets). Swap-invariant: each image scored with the better of its two hand "
             "assignments.", "",
             *results_table(study, "problem2", fam["members"], MAIN), "",
             *results_table(study, "problem2", fam["members"], GROUPS), "",
             *comparison_table(study, fam["key"]), "",
             "### PCK curves", ""]
    pair = next((p for p in study["pairs"]), None)
    if pair is not None:
        lines += figure(results_dir, f"{pair['dir']}/figures/pck_curves.png",
                        f"PCK curves of both models and the ceiling (seed {pair['seed']})")
    lines += figure(results_dir, FIGURES["p2_pck005"], "PCK@0.05 per experiment, mean and seeds")
    return lines


def _ceiling(study: dict) -> list[str]:
    c = study.get("ceiling")
    if not c:
        return []
    cells = lambda pck: [fmt(pck[f"{t:g}"]) for t in THRESHOLDS]  # noqa: E731
    rows = [["always commit to one hand assignment", *cells(c["strategies"]["commit"]["pck"]),
             fmt(c["strategies"]["commit"]["auc"])],
            ["always the hands' midpoint", *cells(c["strategies"]["midpoint"]["pck"]),
             fmt(c["strategies"]["midpoint"]["auc"])],
            ["Bayes ceiling (the better per image and threshold)", *cells(c["pck"]), fmt(c["auc"])]]
    heat = study["experiments"].get("p2-heatmap")
    if heat and heat["n"]:
        rows.append([exp_cell(study, "p2-heatmap"), *(stat_cell(heat["metrics"][m]) for m in PCK),
                     stat_cell(heat["metrics"]["auc"])])
    return ["### The hand-ambiguity ceiling", "",
            "Both arms are drawn alike, so no image shows which hand carries the label `left_hand`. The best any "
            "predictor can do per image is to commit to one assignment (right half the time) or to put both hands at "
            "their midpoint; the better of the two per image and threshold is the Bayes ceiling of PCK on the "
            "validation labels (every other keypoint taken as perfect).", "", command_line(study), "",
            *markdown_table(["", *(f"PCK@{t:g}" for t in THRESHOLDS), "AUC 0-0.5"], rows), "",
            f"The best choice depends on the threshold, so no single set of predictions reaches the ceiling at every "
            f"threshold: summed over the four thresholds, the best one set of predictions can expect is "
            f"{fmt(c['best_single_prediction_sum'])}, the ceiling {fmt(c['sum_over_thresholds'])}.", ""]


def _hypothesis(study: dict) -> list[str]:
    fam = family(study, "p2-canonical-hands")
    if fam is None:
        return []
    comps = {(c["a"], c["b"], c["metric"]): c for c in study["comparisons"]}
    lines = ["### Hypothesis test: is regression's deficit the hand ambiguity?", "",
             "Both models retrained on a derived labelling (`--canonical-hands`): the hand with the smaller x is "
             "`left_hand`, so the label is a function of the image and the ambiguity is gone. Those runs are scored "
             "against the derived labels.", "",
             *results_table(study, "problem2", fam["members"], [*PCK, "mean_px_error"]), "",
             *comparison_table(study, fam["key"], PCK), ""]
    before = comps.get(("p2-regression", "p2-heatmap", "pck@0.05"))
    after = comps.get(("p2-canonical-hands-regression", "p2-canonical-hands-heatmap", "pck@0.05"))
    if before and after and before["diff"] is not None and after["diff"] is not None:
        lines += [f"Regression minus heatmap at PCK@0.05: {fmt(before['diff'])} with the original labels "
                  f"(verdict: {before['verdict']}), {fmt(after['diff'])} with the canonical ones (verdict: "
                  f"{after['verdict']}). If the hand ambiguity were regression's deficit, the gap would close with "
                  "the canonical labels.", ""]
    return lines


def _ablations(study: dict) -> list[str]:
    lines = ["### Ablations of the heatmap model", "",
             "`problem2/baseline.py`'s ablations, each judged by validation PCK (validation loss is not comparable "
             "across sigmas or resolutions), each against the default heatmap run.", ""]
    found = False
    for key, title in ABLATIONS.items():
        fam = family(study, key)
        if fam is None:
            continue
        found = True
        lines += [f"#### {title}", "", *results_table(study, "problem2", fam["members"], MAIN), "",
                  *comparison_table(study, key, ["pck@0.05", "pck@0.2", "mean_px_error"]), ""]
    return lines if found else []


def _regression(study: dict) -> list[str]:
    keys = []
    for fam_key in ("p2-regression-head", "p2-regression-long", "p2-methods"):
        fam = family(study, fam_key)
        keys += fam["members"] if fam else []
    keys = list(dict.fromkeys(keys))
    if not keys:
        return []
    lines = ["### Why direct regression loses: regression heads, longer training, integral and SimCC", "",
             "The specified RegressionNet reads the 8x8 encoder map through global average pooling (`gap`); "
             "`flatten` keeps every position, `coord` adds coordinate channels before the pooling; each with the "
             "specified dropout 0.5 and without it; the specified regression trained 3x longer; and two more methods "
             "on the HeatmapNet encoder-decoder: integral (soft-argmax) and SimCC (per-axis classification).", "",
             *results_table(study, "problem2", keys, [*PCK, "mean_px_error", *GROUPS, "spread"]), ""]
    for fam_key in ("p2-regression-head", "p2-regression-long", "p2-methods"):
        lines += [*comparison_table(study, fam_key, ["pck@0.05", "mean_px_error"]), ""]
    placement = [f"hands_apart_{k}" for k in HAND_PLACEMENT]
    lines += ["Where the hand predictions land in the validation images whose hands are more than 2 PCK@0.05 radii "
              "apart (fractions of those hand predictions; \"one per hand\": of the images; hand PCK: within the "
              "radius of their own label):", "",
              *results_table(study, "problem2", keys, placement), ""]
    c = study.get("ceiling")
    if c and "hand_placement" in c["strategies"]["commit"]:
        rows = [[f"ceiling's '{s}'", *(fmt(c["strategies"][s]["hand_placement"][k]) for k in HAND_PLACEMENT)]
                for s in ("commit", "midpoint")]
        lines += ["The ceiling's two strategies, placed the same way:", "",
                  *markdown_table(["strategy", *(k.replace("_", " ") for k in HAND_PLACEMENT)], rows), ""]
    return lines


def _failures(study: dict, results_dir: Path) -> list[str]:
    pair = next((p for p in study["pairs"]), None)
    if pair is None or not pair.get("failures"):
        return []
    t = "0.1"
    names = list(next(iter(pair["failures"].values()))["per_keypoint"])
    rows = [[g.replace("_", " "), v["count"], v["images"], *(v["per_keypoint"][n] for n in names)]
            for g, v in pair["failures"].items()]
    return ["### Failure cases", "",
            f"Keypoints of the specified pair at PCK@{t}: the heatmap right and regression wrong, the reverse, and "
            f"both wrong (keypoint instances of {pair['num_images']} validation images; seed {pair['seed']}; a "
            f"folder linking both models, evaluated by `{pair['evaluate_command']}`).", "",
            *markdown_table(["group", "keypoints", "images", *names], rows), "",
            *figure(results_dir, f"{pair['dir']}/figures/failure_cases.png", "Failure cases"),
            *figure(results_dir, f"{pair['dir']}/figures/sample_predictions.png", "Sample predictions of both models")]


def problem2_sections(study: dict, results_dir: Path) -> list[str]:
    if not any(e["problem"] == "problem2" for e in study["experiments"].values()):
        return []
    lines = ["## Problem 2: heatmap against direct regression", "", *_method(study),
             *_results(study, results_dir), *_ceiling(study), *_hypothesis(study),
             *_ablations(study), *_regression(study), *_failures(study, results_dir)]
    heat = first_run(study, "p2-heatmap")
    if heat is not None:
        lines += ["### Heatmaps", "",
                  *run_figure(study, results_dir, "p2-heatmap", "figures/predicted_heatmaps.png", "Predicted heatmaps"),
                  *run_figure(study, results_dir, "p2-heatmap", "figures/heatmaps_during_training.png",
                              "Heatmaps during training")]
    lines += ["### Training curves", ""]
    for k in ("p2-heatmap", "p2-regression"):
        if k in study["experiments"]:
            lines += run_figure(study, results_dir, k, "figures/training_curves.png", "Loss and validation PCK")
    return lines

