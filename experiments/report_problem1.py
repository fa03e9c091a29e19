"""The problem-1 part of ``REPORT.md``: results over seeds, which scale finds which shape, why squares fail (the
receptive field), whether the specification is under-trained, and the runs' figures side by side. The per-run
tables (false positives, AP@[.5:.95]) are in the appendix."""
from __future__ import annotations

from pathlib import Path

from common.report import markdown_table
from experiments.figures import FIGURES
from experiments.findings import SECTIONS
from experiments.report_appendix import APPENDIX
from experiments.report_common import anchor, cell, figure, first_run, members, run_figure, verdict_table
from problem1.config import ANCHOR_SCALES, CLASS_NAMES, FEATURE_MAP_SIZES

FAMILY = "p1-main"
N_SCALES = len(FEATURE_MAP_SIZES)



def _results(study: dict, keys: list[str]) -> list[str]:
    spec = next((r["config"] for r in study["runs"] if r["experiment"] == "p1-spec"), None)
    # the anchors' sizes are in the next section's table, beside what each scale finds
    method = ("A single-shot detector with the specified 4-block backbone and one head per scale, on feature maps "
              + ", ".join(f"{h}x{w}" for h, w in FEATURE_MAP_SIZES) + f" with {len(ANCHOR_SCALES[0])} square anchors "
              "per position; validation AP@0.5 with COCO's 101-point interpolation after class-wise NMS.")
    if spec:
        method += (f" Training: SGD lr {spec['lr']:g}, momentum {spec['momentum']:g}, batch {spec['batch_size']}, "
                   f"{spec['epochs']} epochs unless an experiment changes them.")
    return [f"### {SECTIONS['p1-results']}", "", method, "",
            *verdict_table(study, keys, "p1-spec", ["map50", "ap50_square"],
                           ["ap50_circle", "ap50_triangle", "map50_95"]), ""]


def _scales(study: dict, results_dir: Path, keys: list[str]) -> list[str]:
    keys = [k for k in keys if k in ("p1-spec", "p1-dilation3")] or keys[:1]  # the receptive-field contrast
    runs = [(k, r) for k in keys if (r := first_run(study, k)) is not None and r.get("details")]
    if not runs:
        return []
    k0, r0 = runs[0]
    cov = r0["details"]["anchor_coverage"]
    rows = [[sc["scale"], f"{sc['stride']:g}", sc["anchor_sizes"],
             *(f"{sc['by_class'][n]['share_with_positive_anchor']:.2f}" for n in CLASS_NAMES)] for sc in cov["scales"]]
    lines = [f"### {SECTIONS['p1-scales']}", "", "",
             f"Share of validation objects with an anchor at IoU >= {cov['pos_threshold']:g}, per scale (a property of "
             "anchors and data):", "",
             *markdown_table(["scale", "stride (px)", "anchors (px)", *CLASS_NAMES], rows), "",
             f"True positives (IoU 0.5) by the scale that produced them (scale 1/2/3), seed {r0['seed']}; size is "
             "sqrt(w*h):", ""]
    header = ["class", "size (px)", *(f"`{k}`" for k, _ in runs)]
    spec = {k: r["details"]["scale_specialisation"]["true_positives"] for k, r in runs}
    body = [[c, size, *("/".join(str(spec[k][c].get(size, {}).get(f"scale{s + 1}", 0)) for s in range(N_SCALES))
                        for k, _ in runs)] for c in CLASS_NAMES for size in spec[k0][c]]
    return [*lines, *markdown_table(header, body), "",
            *run_figure(study, results_dir, k0, "visualizations/scale_specialisation.png", "Scale specialisation")]


def _receptive_field(study: dict, results_dir: Path, keys: list[str]) -> list[str]:
    rows = []
    for k in keys:
        run = first_run(study, k)
        if run is None or not run.get("details"):
            continue
        # square AP is the results table's, just above: this table sets the window beside the false squares
        rows.append([f"`{k}`", "/".join(str(x) for x in run["details"]["receptive_fields"]),
                     cell(study, k, "false_positives_square")])
    if not rows:
        return []
    return [f"### {SECTIONS['p1-squares']}", "", "",
            "The network has only 3x3 convolutions, so one prediction of each scale sees a bounded window of the "
            "image (computed from the model by `MultiScaleDetector.receptive_fields()`); dilating each head's 3x3 "
            f"conv widens it. Per-class false positives by cause and scale: [appendix]({anchor(APPENDIX['fp'])}).", "",
            *markdown_table(["experiment", "window per scale (px)", "false squares, score >= 0.5"], rows), "",
            *figure(results_dir, FIGURES["p1_receptive_field"], "Receptive field per scale over a typical square")]


def problem1_sections(study: dict, results_dir: Path) -> list[str]:
    keys = members(study, FAMILY)
    if not keys:
        return []
    lines = ["## Problem 1: multi-scale detection", "", *_results(study, keys), *_scales(study, results_dir, keys),
             *_receptive_field(study, results_dir, keys), "### Problem 1 figures", ""]
    for name, caption in (("p1_pr_curves", "Precision-recall curves"), ("p1_detections", "Validation detections"),
                          ("p1_training_curves", "Training curves")):
        lines += figure(results_dir, FIGURES[name], caption)
    lines += run_figure(study, results_dir, keys[0], "visualizations/feature_maps.png",
                        "Backbone activations per scale (channel mean)")
    return lines
