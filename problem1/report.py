"""Problem-1 ``summary.md``: generated from the ``metrics.json`` dict alone, tables through one helper.

Every number printed here comes from ``metrics.json``, so the summary can be rebuilt from that file without
re-running the evaluation.
"""
from __future__ import annotations

from pathlib import Path

from common.io import atomic_write_text
from common.report import fmt, markdown_table
from problem1.analysis import FP_KINDS
from problem1.config import CLASS_NAMES, FEATURE_MAP_SIZES


def _ap_lines(m: dict) -> list[str]:
    names = list(CLASS_NAMES)
    hidden = m["ignore_hidden"]
    rows = [["AP@0.5", *(fmt(m["ap_per_class"][n]) for n in names), f"**{fmt(m['mAP'])}**"],
            [f"AP@0.5, hidden objects (visibility < {hidden['visibility_below']}) ignored",
             *(fmt(hidden["ap_per_class"][n]) for n in names), fmt(hidden["mAP"])],
            ["AP@[0.5:0.95]", *(fmt(m["coco_ap_50_95"]["ap_per_class"][n]) for n in names),
             fmt(m["coco_ap_50_95"]["mAP"])]]
    return (["## Average precision (COCO 101-point, IoU 0.5, up to 100 detections per image)", ""]
            + markdown_table(["metric", *names, "mean"], rows)
            + ["", f"{hidden['num_hidden']} of {m['num_objects']} validation objects are hidden "
                   f"(visibility < {hidden['visibility_below']})."])


def _best_f1_lines(m: dict) -> list[str]:
    rows = [[n, *(fmt(m["best_f1"][n][k]) for k in ("precision", "recall", "f1", "score_threshold"))]
            for n in CLASS_NAMES]
    return (["## Operating point at the best F1 per class", ""]
            + markdown_table(["class", "precision", "recall", "F1", "score threshold"], rows))


def _confusion_lines(cm: dict) -> list[str]:
    rows = [[name, *row] for name, row in zip(cm["rows"], cm["matrix"], strict=True)]
    return ([f"## Confusion matrix (score >= {cm['score_threshold']}, IoU >= 0.5; rows true, columns predicted)", ""]
            + markdown_table(["true \\ predicted", *cm["columns"]], rows))


def _false_positive_lines(f: dict) -> list[str]:
    scales = [f"from scale {s + 1}" for s in range(len(FEATURE_MAP_SIZES))]
    header = ["class", "false positives", *FP_KINDS, *scales, "mislocalised: median centre offset / width, width ratio"]
    rows = [[name, r["total"], *(r["by_kind"][k] for k in FP_KINDS), *r["by_scale"].values(),
             f"{fmt(r['mislocalised_median_centre_offset'])}, {fmt(r['mislocalised_median_width_ratio'])}"]
            for name, r in f["per_class"].items()]
    return ([f"## Why the false positives at score >= {f['min_score']} are false (IoU 0.5 matching)", ""]
            + markdown_table(header, rows)
            + ["", "Duplicate: IoU >= 0.5 with an object of its class that a higher-scored detection already found; "
                   "mislocalised: IoU 0.1-0.5 with one; wrong class: IoU >= 0.5 only with an object of another class."])


def _coverage_lines(cov: dict) -> list[str]:
    names = list(CLASS_NAMES)
    rows = [[sc["scale"], f"{sc['stride']:g}", sc["anchor_sizes"],
             *(f"{fmt(sc['by_class'][n]['share_with_positive_anchor'])} ({fmt(sc['by_class'][n]['mean_best_iou'])})"
               for n in names), fmt(sc["share_with_positive_anchor"])] for sc in cov["scales"]]
    return ([f"## Anchor coverage per scale (share of ground truths with an anchor IoU >= {cov['pos_threshold']}; "
             "mean best IoU in brackets)", ""]
            + markdown_table(["scale", "stride", "anchors", *names, "all"], rows)
            + ["", f"Ground truths with no anchor at IoU >= {cov['pos_threshold']} on any scale (matched only by "
                   f"the forced best-anchor match): {fmt(cov['share_without_any_positive_anchor'])} "
                   f"({cov['without_any_positive_anchor_by_class']})."])


def _force_match_line(f: dict) -> str:
    return (f"Effect of the forced best-anchor match (`--force-match`) on the matching of the {f['split']} set: "
            f"{f['positives_with']} positive anchors with it, {f['positives_without']} without; "
            f"{f['made_positive_by_force']} anchors are positive only because of it and {f['reassigned_by_force']} "
            f"positives change their object; without it {f['objects_without_positive_unforced']} of "
            f"{f['objects']} objects would get no positive anchor.")


def _specialisation_lines(spec: dict) -> list[str]:
    n_scales = len(FEATURE_MAP_SIZES)
    rows = [[n, size, *(row[f"scale{s + 1}"] for s in range(n_scales))]
            for n in CLASS_NAMES for size, row in spec["true_positives"][n].items()]
    return (["## Scale specialisation (true positives at IoU 0.5 by the scale that produced them)", ""]
            + markdown_table(["class", "object size (px)", *(f"scale {s + 1}" for s in range(n_scales))], rows))


def summary_markdown(m: dict) -> str:
    """The whole ``summary.md`` of one evaluation, from its ``metrics.json`` dict (NaN already ``None``)."""
    lines = ["# Problem 1: evaluation summary", "",
             f"Checkpoint `{m['checkpoint']}` (epoch {m['epoch']}), {m['num_images']} validation images from "
             f"`{m['data_dir']}`, device {m['device']}, precision {m.get('precision', 'fp32')}.",
             f"Command: `{m['command']}`", ""]
    lines += _ap_lines(m) + [""] + _best_f1_lines(m) + [""] + _confusion_lines(m["confusion_matrix"]) + [""]
    lines += _false_positive_lines(m["false_positives"]) + [""] + _coverage_lines(m["anchor_coverage"])
    lines += ["", _force_match_line(m["force_match_effect"]), ""] + _specialisation_lines(m["scale_specialisation"])
    if isinstance(m.get("figures"), list) and m["figures"]:  # only those a study's report shows
        lines += ["", f"Figures: `visualizations/` ({', '.join(m['figures'])}).", ""]
    elif m.get("figures", True) is True:
        lines += ["", "Figures: `visualizations/` (detections, PR curves, anchor coverage, scale specialisation, "
                      "feature maps, confusion matrix, training curves).", ""]
    return "\n".join(lines)


def write_summary(m: dict, path: Path) -> Path:
    return atomic_write_text(path, summary_markdown(m))
