"""The problem-1 part of ``REPORT.md``: method, results over seeds, PR curves, detections, anchor coverage, scale
specialisation, the receptive-field analysis and the false-positive causes."""
from __future__ import annotations

from pathlib import Path

from common.report import fmt, markdown_table
from experiments.figures import FIGURES
from experiments.report_common import (
    command_line,
    comparison_table,
    exp_cell,
    figure,
    first_run,
    results_table,
    run_figure,
    stat_cell,
)
from problem1.analysis import FP_KINDS, SIZE_LABELS
from problem1.config import ANCHOR_SCALES, CLASS_NAMES, FEATURE_MAP_SIZES

FAMILY = "p1-main"
LARGE_SQUARES = SIZE_LABELS[2]  # 65-128 px: the squares a 33 px window at scale 2 cannot see whole


def _members(study: dict) -> list[str]:
    fam = next((f for f in study["families"] if f["key"] == FAMILY), None)
    return fam["members"] if fam else []


def _method(study: dict, keys: list[str]) -> list[str]:
    spec = next((r["config"] for r in study["runs"] if r["experiment"] == "p1-spec"), None)
    lines = ["### Method", "",
             "A single-shot detector with the specified 4-block backbone and one head per scale, on feature maps of "
             + ", ".join(f"{h}x{w}" for h, w in FEATURE_MAP_SIZES) + " with square anchors of "
             + " / ".join(str(list(s)) for s in ANCHOR_SCALES) + " px. Each run is scored by validation AP@0.5 "
             "(COCO 101-point interpolation, class-wise NMS) of its best-validation-loss checkpoint, as "
             "`problem1/evaluate.py` does."]
    if spec:
        epochs = f"{spec['epochs']} epoch" + ("s" if spec["epochs"] != 1 else "")
        lines[-1] += (f" Training: SGD lr {spec['lr']:g}, momentum {spec['momentum']:g}, batch {spec['batch_size']}, "
                      f"{epochs} (the specification's settings unless an experiment changes them).")
    lines += ["", "Experiments:", ""]
    for k in keys:
        e = study["experiments"][k]
        lines.append(f"- `{k}`: {e['title']}; `{e['train_command']}`" if e["train_command"] else f"- `{k}`")
    return [*lines, ""]


def _anchor_coverage(study: dict, results_dir: Path, key: str) -> list[str]:
    run = first_run(study, key)
    if run is None:
        return []
    cov = run["details"]["anchor_coverage"]
    names = list(CLASS_NAMES)
    rows = [[sc["scale"], f"{sc['stride']:g}", sc["anchor_sizes"],
             *(f"{fmt(sc['by_class'][n]['share_with_positive_anchor'])} ({fmt(sc['by_class'][n]['mean_best_iou'])})"
               for n in names), fmt(sc["share_with_positive_anchor"])] for sc in cov["scales"]]
    return ["### Anchor coverage", "",
            f"Share of validation objects with an anchor at IoU >= {cov['pos_threshold']:g} on each scale (mean best "
            f"IoU in brackets); a property of the anchors and the data, so the same in every run (`{key}`, seed "
            f"{run['seed']}).", "", command_line(study), "",
            *markdown_table(["scale", "stride (px)", "anchors (px)", *names, "all"], rows), "",
            *run_figure(study, results_dir, key, "visualizations/anchor_coverage.png", "Anchor coverage")]


def _specialisation_table(run: dict) -> list[str]:
    spec = run["details"]["scale_specialisation"]["true_positives"]
    n_scales = len(FEATURE_MAP_SIZES)
    by_class = run["details"]["scale_specialisation"]["by_class"]
    rows = [[c, size, *(row[f"scale{s + 1}"] for s in range(n_scales))] for c in CLASS_NAMES
            for size, row in [*spec[c].items(), ("all", by_class[c])]]
    return markdown_table(["class", "object size (px)", *(f"scale {s + 1}" for s in range(n_scales))], rows)


def _specialisation(study: dict, results_dir: Path, keys: list[str]) -> list[str]:
    lines = ["### Scale specialisation", "",
             "True positives at IoU 0.5 by the scale that produced them, by class and object size (the first seed "
             "of each experiment).", ""]
    for k in keys:
        run = first_run(study, k)
        if run is None:
            continue
        lines += [f"`{k}` (seed {run['seed']}). {command_line(study)}", "", *_specialisation_table(run), "",
                  *run_figure(study, results_dir, k, "visualizations/scale_specialisation.png",
                              "Scale specialisation")]
    return lines


def _receptive_field(study: dict, results_dir: Path, keys: list[str]) -> list[str]:
    """Specification against ``--head-dilation 3``: what each scale sees, and what that does to the squares."""
    n_scales = len(FEATURE_MAP_SIZES)
    rows = []
    for k in keys:
        run = first_run(study, k)
        if run is None:
            continue
        m = study["experiments"][k]["metrics"]
        large = run["details"]["scale_specialisation"]["true_positives"]["square"].get(LARGE_SQUARES, {})
        by_scale = " / ".join(str(large.get(f"scale{s + 1}", 0)) for s in range(n_scales))
        rows.append([exp_cell(study, k), " / ".join(str(x) for x in run["details"]["receptive_fields"]),
                     stat_cell(m["ap50_square"]), stat_cell(m["false_positives_square"], 1),
                     f"{by_scale} (seed {run['seed']})"])
    if not rows:
        return []
    lines = ["### Receptive field: specification against `--head-dilation 3`", "",
             "The specified network has only 3x3 convolutions, so one prediction of each scale sees a bounded window "
             "of the image (receptive field, computed from the model by `MultiScaleDetector.receptive_fields()`). "
             "Dilating each head's 3x3 conv widens the windows at no extra cost. Large squares are "
             f"{LARGE_SQUARES} px.", "", command_line(study), "",
             *markdown_table(["experiment", "receptive field per scale (px)", "AP@0.5 square",
                              "false squares at score >= 0.5", f"true positives, squares {LARGE_SQUARES} px, by "
                              "scale 1 / 2 / 3"], rows), ""]
    comps = [c for c in study["comparisons"] if c["family"] == FAMILY and c["metric"] == "ap50_square"]
    for c in comps:
        lines.append(f"- AP@0.5 square, `{c['a']}` - `{c['b']}`: {fmt(c['diff'])} (threshold {fmt(c['threshold'])}): "
                     f"{c['verdict']}.")
    lines.append("")
    for k in keys:
        lines += run_figure(study, results_dir, k, "visualizations/feature_maps.png",
                            "Mean feature activation per scale")
    return lines


def _false_positives(study: dict, keys: list[str]) -> list[str]:
    lines = ["### Why the false positives are false", "",
             "Confident detections (score >= 0.5) that match no object at IoU 0.5: duplicate (IoU >= 0.5 with an "
             "object of its class already found), mislocalised (IoU 0.1-0.5 with one), wrong class (IoU >= 0.5 only "
             "with an object of another class) or background; and the scale that produced them (first seed of each "
             "experiment). Mislocalised boxes: median centre offset in object widths, and median width ratio.", ""]
    n_scales = len(FEATURE_MAP_SIZES)
    for k in keys:
        run = first_run(study, k)
        if run is None:
            continue
        fp = run["details"]["false_positives"]["per_class"]
        rows = [[c, r["total"], *(r["by_kind"][kind] for kind in FP_KINDS),
                 *(r["by_scale"][f"scale{s + 1}"] for s in range(n_scales)),
                 fmt(r["mislocalised_median_centre_offset"]), fmt(r["mislocalised_median_width_ratio"])]
                for c, r in fp.items()]
        lines += [f"`{k}` (seed {run['seed']}). {command_line(study)}", "",
                  *markdown_table(["class", "false positives", *FP_KINDS, *(f"scale {s + 1}" for s in range(n_scales)),
                                   "centre offset", "width ratio"], rows), ""]
    return lines


def problem1_sections(study: dict, results_dir: Path) -> list[str]:
    keys = _members(study)
    if not keys:
        return []
    ap = ["map50", *(f"ap50_{c}" for c in CLASS_NAMES), "map50_hidden_ignored", "map50_95"]
    more = [*(f"ap50_95_{c}" for c in CLASS_NAMES), *(f"false_positives_{c}" for c in CLASS_NAMES), "best_epoch"]
    lines = ["## Problem 1: multi-scale detection", "", *_method(study, keys),
             "### Results", "",
             "Validation AP of each run's best-validation-loss checkpoint, mean ± sample standard deviation over "
             "seeds (number of seeds in brackets). \"Hidden ignored\": objects with visibility below the threshold in "
             "the data section count as neither found nor missed.", "",
             *results_table(study, "problem1", keys, ap), "",
             *results_table(study, "problem1", keys, more), "",
             *comparison_table(study, FAMILY), ""]
    lines += figure(results_dir, FIGURES["p1_map50"], "mAP@0.5 per experiment, mean and seeds")
    lines += ["### Precision-recall curves", ""]
    for k in keys:
        lines += run_figure(study, results_dir, k, "visualizations/pr_curves.png", "PR curves per class")
    lines += ["### Detections", ""]
    for k in keys:
        lines += run_figure(study, results_dir, k, "visualizations/detections.png", "Validation detections")
    lines += _anchor_coverage(study, results_dir, keys[0])
    lines += _specialisation(study, results_dir, [k for k in keys if k in ("p1-spec", "p1-dilation3")] or keys[:1])
    lines += _receptive_field(study, results_dir, keys)
    lines += _false_positives(study, keys)
    lines += ["### Training curves", ""]
    for k in keys:
        lines += run_figure(study, results_dir, k, "visualizations/training_curves.png", "Loss and validation AP")
    return lines
