#!/usr/bin/env python3
"""Evaluate a problem-1 checkpoint: decoding, COCO-exact AP, the scale analysis and every figure.

Usage::

    python problem1/evaluate.py --data-dir datasets --results-dir results/problem1 [--checkpoint P]

Writes ``R/metrics.json`` (every number), ``R/summary.md`` (the tables) and ``R/visualizations/*.png``.
The importable pieces: :func:`decode_predictions`, :func:`compute_ap`, :func:`validate` (the one evaluation
path; ``train.py`` calls it every epoch) and :func:`evaluate` (everything this script writes).
"""
from __future__ import annotations

import argparse
import dataclasses
import math
import sys
import time
from collections.abc import Sequence
from pathlib import Path

if __package__ in (None, ""):  # run as a file: replace the script's folder with the repo root on sys.path
    sys.path[0] = str(Path(__file__).resolve().parents[1])

import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch import Tensor  # noqa: E402
from torchvision.ops import batched_nms  # noqa: E402

from common.config import config_from_dict  # noqa: E402
from common.errors import UserError, run_cli  # noqa: E402
from common.io import atomic_savefig, atomic_write_json, atomic_write_text  # noqa: E402
from common.plotting import pyplot  # noqa: E402
from common.progress import progress  # noqa: E402
from common.runtime import autocast, memory_format, pick_device, tune_cpu_allocator  # noqa: E402
from common.training import load_checkpoint, load_weights  # noqa: E402
from problem1.config import ANCHOR_SCALES, CLASS_NAMES, FEATURE_MAP_SIZES, IMAGE_SIZE, PROBLEM, Config  # noqa: E402
from problem1.dataset import ShapeDetectionDataset, as_numpy_targets, load_split, object_sizes  # noqa: E402
from problem1.loss import DetectionLoss  # noqa: E402
from problem1.metrics import (  # noqa: E402
    ImageMatches,
    best_f1,
    confusion_matrix,
    evaluate_detections,
    iou_matrix,
    mean_ap,
)
from problem1.model import MultiScaleDetector  # noqa: E402
from problem1.utils import (  # noqa: E402
    anchor_scale_index,
    box_iou,
    decode_boxes,
    flatten_predictions,
    generate_anchors,
    match_anchors_batched,
)

HIDDEN_VISIBILITY = 0.1  # objects below this visibility are "ignore" in the second mAP
SIZE_BINS = (0, 32, 64, 128, math.inf)  # object size sqrt(w*h) in pixels
SIZE_LABELS = ("<=32", "33-64", "65-128", ">128")
VIS_SCORE = 0.3  # predictions drawn on the example images
CONFUSION_SCORE = 0.5  # detections counted in the confusion matrix


# ------------------------------------------------------------------------------------------------ decoding
def decode_predictions(outputs: Sequence[Tensor], anchors: Tensor, num_anchors: int = 3,
                       score_threshold: float = 0.01, nms_iou: float = 0.5, pre_nms_topk: int = 1000,
                       max_detections: int = 100, image_size: int = IMAGE_SIZE,
                       scale_index: Tensor | None = None) -> list[dict[str, Tensor]]:
    """Head outputs -> detections per image.

    score(anchor, class) = sigmoid(objectness) * softmax(class logits); the ``pre_nms_topk`` best (anchor, class)
    pairs above ``score_threshold`` are decoded, clipped to the image, put through class-wise NMS
    (``torchvision.ops.batched_nms``, one call for the whole batch) and cut to ``max_detections`` per image.

    Args:
        outputs: per scale ``Tensor[B, A*(5+C), H, W]``.
        anchors (Tensor[A_total, 4]): ``torch.cat(generate_anchors(...))``.
        scale_index (Tensor[A_total]): optional scale of each anchor, returned per detection as ``'scales'``.

    Returns:
        per image ``{'boxes' [N, 4] xyxy, 'scores' [N], 'labels' [N], 'scales' [N]}`` on the CPU, by score.
    """
    pred = flatten_predictions(outputs, num_anchors).float()  # [B, A, 5+C]
    b, a, _ = pred.shape
    anchors = anchors.to(pred.device)
    scores = torch.sigmoid(pred[..., 4:5]) * torch.softmax(pred[..., 5:], dim=-1)  # [B, A, C]
    c = scores.shape[-1]
    top_scores, top = scores.reshape(b, a * c).topk(min(pre_nms_topk, a * c), dim=1)  # [B, k]; index = a*C + c
    batch_idx = torch.arange(b, device=pred.device)[:, None].expand_as(top)
    keep = top_scores > score_threshold
    top_scores, top, batch_idx = top_scores[keep], top[keep], batch_idx[keep]  # [K]
    anchor_idx, labels = top // c, top % c
    boxes = decode_boxes(pred[batch_idx, anchor_idx, :4], anchors[anchor_idx]).clamp_(0, image_size)
    ok = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
    boxes, top_scores, labels, batch_idx, anchor_idx = (t[ok] for t in (boxes, top_scores, labels, batch_idx,
                                                                         anchor_idx))
    kept = batched_nms(boxes, top_scores, batch_idx * c + labels, nms_iou)  # by score, descending
    scales = scale_index.to(pred.device)[anchor_idx] if scale_index is not None else torch.zeros_like(anchor_idx)
    fields = {"boxes": boxes[kept], "scores": top_scores[kept], "labels": labels[kept], "scales": scales[kept]}
    fields = {k: v.cpu() for k, v in fields.items()}
    img = batch_idx[kept].cpu()
    return [{k: v[img == i][:max_detections] for k, v in fields.items()} for i in range(b)]


# ------------------------------------------------------------------------------------------------- metrics
def compute_ap(predictions: Sequence[dict], ground_truths: Sequence[dict], iou_threshold: float = 0.5,
               num_classes: int = len(CLASS_NAMES), max_detections: int = 100) -> dict:
    """COCO 101-point interpolated AP per class at one IoU threshold (equal to pycocotools, area 'all', 100 dets).

    Args:
        predictions: per image ``{'boxes' [N, 4] xyxy, 'scores' [N], 'labels' [N]}``.
        ground_truths: per image ``{'boxes' [M, 4] xyxy, 'labels' [M]}``; an optional ``'ignore' [M]`` bool marks
            ground truths that are neither missed nor matched as TP (see ``metrics.py``).

    Returns:
        ``{'ap_per_class': [C floats by class id], 'mAP': float}``; a class without ground truth has AP ``nan``
        and is left out of the mean, as pycocotools leaves it out.
    """
    curves, _ = evaluate_detections(predictions, ground_truths, num_classes, iou_threshold, max_detections)
    aps = [c.ap for c in curves]
    return {"ap_per_class": aps, "mAP": mean_ap(aps)}


@torch.no_grad()
def run_inference(model: MultiScaleDetector, dataset: ShapeDetectionDataset, cfg: Config, device: torch.device,
                  criterion: DetectionLoss | None = None, desc: str = "eval") -> tuple[list[dict], dict[str, float]]:
    """Detections for every image of ``dataset`` and, with ``criterion``, the mean loss per term (per image)."""
    model.eval()
    anchor_list = generate_anchors(FEATURE_MAP_SIZES, ANCHOR_SCALES, IMAGE_SIZE)
    anchors, scale_index = torch.cat(anchor_list).to(device), anchor_scale_index(anchor_list)
    predictions: list[dict] = []
    sums: dict[str, Tensor] = {}
    for idx in progress(torch.arange(len(dataset)).split(cfg.eval_batch_size), desc=desc, unit="batch"):
        images, boxes, labels = dataset.get_batch(idx)
        with autocast(device, cfg.amp):
            outputs = model(images.to(device))
        if criterion is not None:
            losses = criterion(outputs, (boxes.to(device), labels.to(device)), anchors)
            for k, v in losses.items():
                sums[k] = sums.get(k, 0) + v.detach() * len(idx)
        predictions += decode_predictions(outputs, anchors, model.num_anchors, cfg.score_threshold, cfg.nms_iou,
                                          cfg.pre_nms_topk, cfg.max_detections, IMAGE_SIZE, scale_index)
    return predictions, {k: float(v) / len(dataset) for k, v in sums.items()}


def validate(model: MultiScaleDetector, dataset: ShapeDetectionDataset, cfg: Config, device: torch.device,
             criterion: DetectionLoss | None = None, desc: str = "val") -> dict:
    """The one evaluation path (per epoch in training, and in this script): loss by term, AP per class, mAP."""
    predictions, losses = run_inference(model, dataset, cfg, device, criterion, desc)
    ap = compute_ap(predictions, dataset.targets, 0.5, cfg.num_classes, cfg.max_detections)
    return {"loss": losses, "mAP": ap["mAP"], "ap_per_class": ap["ap_per_class"], "predictions": predictions}


# ------------------------------------------------------------------------------------------------ analysis
def size_bin(sizes: np.ndarray) -> np.ndarray:
    """Object size (pixels) -> index into ``SIZE_LABELS``."""
    return np.digitize(sizes, SIZE_BINS[1:-1], right=True)


def anchor_coverage(dataset: ShapeDetectionDataset, pos_threshold: float = 0.5) -> dict:
    """For every ground truth: the best IoU with each scale's anchors, and whether any anchor there is positive."""
    anchor_list = generate_anchors(FEATURE_MAP_SIZES, ANCHOR_SCALES, IMAGE_SIZE)
    boxes = torch.cat([t["boxes"] for t in dataset.targets])  # [G, 4]
    labels = torch.cat([t["labels"] for t in dataset.targets]).numpy()
    best = np.stack([box_iou(boxes, a).amax(dim=1).numpy() if len(boxes) else np.zeros(0) for a in anchor_list],
                    axis=1)  # [G, S]
    sizes = object_sizes(boxes).numpy()
    bins = size_bin(sizes)
    scales = []
    for s, (fm, sc) in enumerate(zip(FEATURE_MAP_SIZES, ANCHOR_SCALES, strict=True)):
        by_class = {}
        for c, name in enumerate(CLASS_NAMES):
            m = labels == c
            by_class[name] = {"num_gt": int(m.sum()),
                              "mean_best_iou": float(best[m, s].mean()) if m.any() else None,
                              "share_with_positive_anchor": float((best[m, s] >= pos_threshold).mean())
                              if m.any() else None}
        by_size = {lab: {"num_gt": int((bins == i).sum()),
                         "share_with_positive_anchor": float((best[bins == i, s] >= pos_threshold).mean())
                         if (bins == i).any() else None} for i, lab in enumerate(SIZE_LABELS)}
        scales.append({"scale": s + 1, "feature_map": list(fm), "stride": IMAGE_SIZE / fm[1],
                       "anchor_sizes": list(sc), "by_class": by_class, "by_size": by_size,
                       "share_with_positive_anchor": float((best[:, s] >= pos_threshold).mean()) if len(best)
                       else None})
    no_pos = best.max(axis=1) < pos_threshold if len(best) else np.zeros(0, bool)
    return {
        "pos_threshold": pos_threshold,
        "scales": scales,
        # Without the forced match these objects would have no positive anchor at all.
        "share_without_any_positive_anchor": float(no_pos.mean()) if len(no_pos) else None,
        "without_any_positive_anchor_by_class": {n: int(no_pos[labels == c].sum()) for c, n in enumerate(CLASS_NAMES)},
        "_best_iou": best, "_sizes": sizes, "_labels": labels,  # for the figure; dropped from metrics.json
    }


def force_match_effect(dataset: ShapeDetectionDataset, cfg: Config, split: str = "validation",
                       batch_size: int = 64) -> dict:
    """What ``force_match`` changes in the matching of ``dataset``: anchors made positive only by it, positives
    whose assigned ground truth it changes, and objects that would have no positive anchor without it."""
    anchors = torch.cat(generate_anchors(FEATURE_MAP_SIZES, ANCHOR_SCALES, IMAGE_SIZE))
    counts = {"positives_with": 0, "positives_without": 0, "made_positive_by_force": 0, "reassigned_by_force": 0,
              "objects_without_positive_unforced": 0, "objects": 0}
    for idx in torch.arange(len(dataset)).split(batch_size):
        _, boxes, labels = dataset.get_batch(idx)
        boxes, labels = boxes.cpu(), labels.cpu()
        runs = [match_anchors_batched(anchors, boxes, labels, cfg.pos_threshold, cfg.neg_threshold, force)
                for force in (True, False)]
        (idx_f, pos_f, _), (idx_u, pos_u, _) = runs
        counts["positives_with"] += int(pos_f.sum())
        counts["positives_without"] += int(pos_u.sum())
        counts["made_positive_by_force"] += int((pos_f & ~pos_u).sum())
        counts["reassigned_by_force"] += int((pos_f & pos_u & (idx_f != idx_u)).sum())
        if labels.shape[1]:
            hit = torch.zeros(labels.shape, dtype=torch.long).scatter_reduce_(1, idx_u, pos_u.long(), "amax") > 0
            valid = labels >= 0
            counts["objects"] += int(valid.sum())
            counts["objects_without_positive_unforced"] += int((valid & ~hit).sum())
    return {"split": split, **counts}


def scale_specialisation(predictions: Sequence[dict], matches: Sequence[Sequence[ImageMatches]],
                         dataset: ShapeDetectionDataset) -> dict:
    """Which scale produced each true positive (IoU 0.5), by the class and size of the object it found."""
    n_scales = len(FEATURE_MAP_SIZES)
    counts = np.zeros((len(CLASS_NAMES), len(SIZE_LABELS), n_scales), dtype=np.int64)
    for c, per_image in enumerate(matches):
        for pred, target, m in zip(predictions, dataset.targets, per_image, strict=True):
            tp = (m.matched_gt >= 0) & ~m.ignored
            if not tp.any():
                continue
            det_scales = pred["scales"].numpy()[m.det_index[tp]]
            gt_bins = size_bin(object_sizes(target["boxes"][m.matched_gt[tp]]).numpy())
            np.add.at(counts, (c, gt_bins, det_scales), 1)
    table = {name: {lab: {f"scale{s + 1}": int(counts[c, i, s]) for s in range(n_scales)}
                    for i, lab in enumerate(SIZE_LABELS) if counts[c, i].sum()}
             for c, name in enumerate(CLASS_NAMES)}
    by_class = {name: {f"scale{s + 1}": int(counts[c, :, s].sum()) for s in range(n_scales)}
                for c, name in enumerate(CLASS_NAMES)}
    return {"true_positives": table, "by_class": by_class, "_counts": counts}


FP_KINDS = ("duplicate", "mislocalised", "wrong class", "background")


def false_positive_analysis(predictions: Sequence[dict], matches: Sequence[Sequence[ImageMatches]],
                            dataset: ShapeDetectionDataset, min_score: float = CONFUSION_SCORE) -> dict:
    """Why the confident false positives (score >= ``min_score``, IoU 0.5 matching) are false, and which scale
    made them.

    Kinds, by the detection's best IoU with the image's ground truths: ``duplicate`` (>= 0.5 with an object of its
    class that a higher-scored detection already took), ``mislocalised`` (0.1-0.5 with an object of its class),
    ``wrong class`` (>= 0.5 with an object of another class only), ``background``. For the mislocalised ones also
    the median of |centre offset| / object width and of predicted / true width (on the closest object).
    """
    n_scales = len(FEATURE_MAP_SIZES)
    out = {}
    for c, name in enumerate(CLASS_NAMES):
        kinds = np.zeros((len(FP_KINDS), n_scales), dtype=np.int64)
        offsets, ratios = [], []
        for pred, target, m in zip(predictions, dataset.targets, matches[c], strict=True):
            fp = (m.matched_gt < 0) & ~m.ignored & (m.scores >= min_score)
            if not fp.any():
                continue
            det = m.det_index[fp]
            boxes = pred["boxes"].numpy()[det].astype(np.float64)
            scales = pred["scales"].numpy()[det]
            gt_boxes, gt_labels = target["boxes"].numpy().astype(np.float64), target["labels"].numpy()
            same, other = gt_boxes[gt_labels == c], gt_boxes[gt_labels != c]
            iou_same = iou_matrix(boxes, same) if len(same) else np.zeros((len(boxes), 1))
            best_same = iou_same.max(axis=1)
            best_other = iou_matrix(boxes, other).max(axis=1) if len(other) else np.zeros(len(boxes))
            kind = np.select([best_same >= 0.5, best_same >= 0.1, best_other >= 0.5], [0, 1, 2], default=3)
            np.add.at(kinds, (kind, scales), 1)
            mis = kind == 1
            if mis.any():
                g = same[iou_same[mis].argmax(axis=1)]
                b = boxes[mis]
                gw, gh = g[:, 2] - g[:, 0], g[:, 3] - g[:, 1]
                dx = np.abs((b[:, 0] + b[:, 2]) - (g[:, 0] + g[:, 2])) / 2 / gw
                dy = np.abs((b[:, 1] + b[:, 3]) - (g[:, 1] + g[:, 3])) / 2 / gh
                offsets += np.maximum(dx, dy).tolist()
                ratios += ((b[:, 2] - b[:, 0]) / gw).tolist()
        out[name] = {
            "total": int(kinds.sum()),
            "by_kind": {k: int(kinds[i].sum()) for i, k in enumerate(FP_KINDS)},
            "by_scale": {f"scale{s + 1}": int(kinds[:, s].sum()) for s in range(n_scales)},
            "mislocalised_by_scale": {f"scale{s + 1}": int(kinds[1, s]) for s in range(n_scales)},
            "mislocalised_median_centre_offset": float(np.median(offsets)) if offsets else None,
            "mislocalised_median_width_ratio": float(np.median(ratios)) if ratios else None,
        }
    return {"min_score": min_score, "iou_threshold": 0.5, "per_class": out}


# ------------------------------------------------------------------------------------------------- figures
def plot_detections(dataset: ShapeDetectionDataset, predictions: Sequence[dict], path: Path, n: int = 10) -> None:
    plt = pyplot()
    n = min(n, len(dataset))
    cols = min(5, n)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 3.4 * rows), squeeze=False)
    for k, ax in enumerate(axes.flat):
        ax.axis("off")
        if k >= n:
            continue
        ax.imshow(dataset.images[k].permute(1, 2, 0).cpu().numpy())
        for box in dataset.targets[k]["boxes"].tolist():
            # dark green, dashed: the squares themselves are bright green
            ax.add_patch(plt.Rectangle(box[:2], box[2] - box[0], box[3] - box[1], fill=False, color="darkgreen",
                                       lw=2, ls="--"))
        p = predictions[k]
        for box, s, lab in zip(p["boxes"].tolist(), p["scores"].tolist(), p["labels"].tolist(), strict=True):
            if s < VIS_SCORE:
                continue
            ax.add_patch(plt.Rectangle(box[:2], box[2] - box[0], box[3] - box[1], fill=False, color="red", lw=1.2))
            ax.text(box[0], box[1] - 2, f"{CLASS_NAMES[lab]} {s:.2f}", color="red", fontsize=7,
                    bbox={"facecolor": "white", "alpha": 0.6, "pad": 0.5, "lw": 0})
        ax.set(xlim=(0, IMAGE_SIZE), ylim=(IMAGE_SIZE, 0))
        ax.set_title(dataset.file_names[k], fontsize=8)
    fig.suptitle(f"Validation detections: ground truth green (dashed), predictions red (score >= {VIS_SCORE}); "
                 "224x224 px")
    fig.tight_layout(rect=(0, 0, 1, 0.95))
    atomic_savefig(fig, path, dpi=120)
    plt.close(fig)


def plot_pr_curves(curves, path: Path) -> None:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 5))
    for name, cur in zip(CLASS_NAMES, curves, strict=True):
        if cur.num_gt and len(cur.recall):
            ax.plot(cur.recall, np.maximum.accumulate(cur.precision[::-1])[::-1], label=f"{name} (AP {cur.ap:.3f})")
    ax.set(xlabel="recall", ylabel="precision (interpolated)", xlim=(0, 1.01), ylim=(0, 1.02),
           title="Precision-recall per class, IoU 0.5")
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="lower left")
    fig.tight_layout()
    atomic_savefig(fig, path, dpi=120)
    plt.close(fig)


def plot_anchor_coverage(cov: dict, path: Path) -> None:
    plt = pyplot()
    best, sizes, labels = cov["_best_iou"], cov["_sizes"], cov["_labels"]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.6))
    colors = ("tab:blue", "tab:orange", "tab:green")
    for s, sc in enumerate(cov["scales"]):
        ax1.scatter(sizes, best[:, s], s=8, alpha=0.5, color=colors[s],
                    label=f"scale {s + 1} (stride {sc['stride']:g}, anchors {sc['anchor_sizes']})")
    ax1.axhline(cov["pos_threshold"], color="k", ls="--", lw=1, label="positive threshold")
    ax1.set(xlabel="object size sqrt(w*h) (pixels)", ylabel="best IoU with this scale's anchors",
            title="Best anchor IoU per ground truth", ylim=(0, 1))
    ax1.legend(fontsize=8, loc="lower right")
    width = 0.25
    x = np.arange(len(CLASS_NAMES))
    for s, sc in enumerate(cov["scales"]):
        vals = [sc["by_class"][n]["share_with_positive_anchor"] or 0 for n in CLASS_NAMES]
        ax2.bar(x + (s - 1) * width, vals, width, color=colors[s], label=f"scale {s + 1}")
    ax2.set_xticks(x, [f"{n}\n(n={int((labels == c).sum())})" for c, n in enumerate(CLASS_NAMES)])
    # headroom above the bars, so the legend never hides a bar at 1.0
    ax2.set(ylabel=f"share of ground truths with an anchor IoU >= {cov['pos_threshold']}", ylim=(0, 1.2),
            yticks=np.linspace(0, 1, 6), title="Anchor coverage per scale")
    ax2.legend(loc="upper center", ncol=3)
    fig.tight_layout()
    atomic_savefig(fig, path, dpi=120)
    plt.close(fig)


def plot_scale_specialisation(spec: dict, path: Path) -> None:
    plt = pyplot()
    counts = spec["_counts"]  # [C, bins, S]
    rows = [(c, i) for c in range(counts.shape[0]) for i in range(counts.shape[1]) if counts[c, i].sum()]
    fig, ax = plt.subplots(figsize=(9, 0.5 * max(len(rows), 1) + 1.5))
    colors = ("tab:blue", "tab:orange", "tab:green")
    left = np.zeros(len(rows))
    for s in range(counts.shape[2]):
        share = np.array([counts[c, i, s] / counts[c, i].sum() for c, i in rows]) if rows else np.zeros(0)
        ax.barh(np.arange(len(rows)), share, left=left, color=colors[s], label=f"scale {s + 1}")
        left += share
    ax.set_yticks(np.arange(len(rows)),
                  [f"{CLASS_NAMES[c]}, {SIZE_LABELS[i]} px (TP={counts[c, i].sum()})" for c, i in rows])
    ax.invert_yaxis()
    ax.set(xlabel="share of true positives (IoU 0.5) produced by each scale", xlim=(0, 1),
           title="Scale specialisation: which head finds which objects")
    ax.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=8)  # outside: the bars fill the axes
    fig.tight_layout()
    atomic_savefig(fig, path, dpi=120)
    plt.close(fig)


@torch.no_grad()
def plot_feature_maps(model: MultiScaleDetector, dataset: ShapeDetectionDataset, device: torch.device, path: Path,
                      n: int = 4) -> None:
    plt = pyplot()
    n = min(n, len(dataset))
    model.eval()
    images, _, _ = dataset.get_batch(torch.arange(n))
    feats = [f.float().mean(dim=1).cpu() for f in model.features(images.to(device))]  # 3 x [n, H, W]
    fig, axes = plt.subplots(n, 4, figsize=(12, 3 * n), squeeze=False)
    for k in range(n):
        axes[k, 0].imshow(images[k].permute(1, 2, 0).cpu().numpy())
        axes[k, 0].set_title(dataset.file_names[k], fontsize=9)
        for s, f in enumerate(feats):
            im = axes[k, s + 1].imshow(f[k].numpy(), cmap="viridis")
            axes[k, s + 1].set_title(f"scale {s + 1}: mean activation {tuple(f.shape[1:])}", fontsize=9)
            fig.colorbar(im, ax=axes[k, s + 1], fraction=0.046)
        for ax in axes[k]:
            ax.axis("off")
    fig.suptitle("Mean feature activation (over channels) at each detection scale")
    fig.tight_layout(rect=(0, 0, 1, 0.97))
    atomic_savefig(fig, path, dpi=120)
    plt.close(fig)


def plot_confusion(cm: np.ndarray, path: Path) -> None:
    plt = pyplot()
    names = list(CLASS_NAMES)
    fig, ax = plt.subplots(figsize=(5.5, 4.8))
    ax.imshow(cm, cmap="Blues")
    for (i, j), v in np.ndenumerate(cm):
        ax.text(j, i, str(v), ha="center", va="center", color="white" if v > cm.max() / 2 else "black")
    ax.set_xticks(range(len(names) + 1), names + ["(missed)"])
    ax.set_yticks(range(len(names) + 1), names + ["(background)"])
    ax.set(xlabel="predicted class", ylabel="true class",
           title=f"Confusion matrix (score >= {CONFUSION_SCORE}, IoU >= 0.5)")
    fig.tight_layout()
    atomic_savefig(fig, path, dpi=120)
    plt.close(fig)


def plot_training_curves(log: list[dict], path: Path) -> None:
    plt = pyplot()
    epochs = [r["epoch"] for r in log]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.5))
    for key, color in zip(("loss_total", "loss_obj", "loss_cls", "loss_loc"), ("k", "tab:blue", "tab:orange",
                                                                                "tab:green"), strict=True):
        ax1.plot(epochs, [r["train"][key] for r in log], color=color, label=f"train {key}")
        ax1.plot(epochs, [r["val"][key] for r in log], color=color, ls="--", label=f"val {key}")
    ax1.set(xlabel="epoch", ylabel="loss (per positive anchor)", title="Loss by term", yscale="log")
    ax1.legend(fontsize=7, ncol=2)
    ax2.plot(epochs, [r["val"]["mAP"] for r in log], "k", label="mAP")
    for name in CLASS_NAMES:
        ax2.plot(epochs, [r["val"]["ap_per_class"][name] for r in log], label=name)
    ax2.set(xlabel="epoch", ylabel="validation AP@0.5", ylim=(0, 1), title="Validation AP")
    ax2.legend()
    fig.tight_layout()
    atomic_savefig(fig, path, dpi=120)
    plt.close(fig)


# -------------------------------------------------------------------------------------------------- report
def _nan_to_none(x):
    if isinstance(x, float) and math.isnan(x):
        return None
    if isinstance(x, dict):
        return {k: _nan_to_none(v) for k, v in x.items() if not str(k).startswith("_")}
    if isinstance(x, (list, tuple)):
        return [_nan_to_none(v) for v in x]
    return x


def _fmt(x) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.3f}"


def _false_positive_lines(f: dict) -> list[str]:
    head = ["false positives"] + list(FP_KINDS) + [f"from scale {s + 1}" for s in range(len(FEATURE_MAP_SIZES))]
    lines = ["", f"## Why the false positives at score >= {f['min_score']} are false (IoU 0.5 matching)", "",
             "| class | " + " | ".join(head) + " | mislocalised: median centre offset / width, width ratio |",
             "|---|" + "---|" * (len(head) + 1)]
    for name, r in f["per_class"].items():
        cells = [str(r["total"])] + [str(r["by_kind"][k]) for k in FP_KINDS] + [str(v) for v in r["by_scale"].values()]
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {_fmt(r['mislocalised_median_centre_offset'])}, "
                     f"{_fmt(r['mislocalised_median_width_ratio'])} |")
    lines += ["", "Duplicate: IoU >= 0.5 with an object of its class that a higher-scored detection already found; "
                  "mislocalised: IoU 0.1-0.5 with one; wrong class: IoU >= 0.5 only with an object of another class."]
    return lines


def _force_match_line(f: dict) -> str:
    return (f"Effect of the forced best-anchor match (`--force-match`) on the matching of the {f['split']} set: "
            f"{f['positives_with']} positive anchors with it, {f['positives_without']} without; "
            f"{f['made_positive_by_force']} anchors are positive only because of it and {f['reassigned_by_force']} "
            f"positives change their object; without it {f['objects_without_positive_unforced']} of "
            f"{f['objects']} objects would get no positive anchor.")


def write_summary(m: dict, path: Path) -> None:
    names = list(CLASS_NAMES)
    lines = [
        "# Problem 1: evaluation summary",
        "",
        f"Checkpoint `{m['checkpoint']}` (epoch {m['epoch']}), {m['num_images']} validation images from "
        f"`{m['data_dir']}`, device {m['device']}.",
        f"Command: `{m['command']}`",
        "",
        "## Average precision (COCO 101-point, IoU 0.5, up to 100 detections per image)",
        "",
        "| metric | " + " | ".join(names) + " | mean |",
        "|---|" + "---|" * (len(names) + 1),
        "| AP@0.5 | " + " | ".join(_fmt(m["ap_per_class"][n]) for n in names) + f" | **{_fmt(m['mAP'])}** |",
        f"| AP@0.5, hidden objects (visibility < {HIDDEN_VISIBILITY}) ignored | "
        + " | ".join(_fmt(m["ignore_hidden"]["ap_per_class"][n]) for n in names)
        + f" | {_fmt(m['ignore_hidden']['mAP'])} |",
        "| AP@[0.5:0.95] | " + " | ".join(_fmt(m["coco_ap_50_95"]["ap_per_class"][n]) for n in names)
        + f" | {_fmt(m['coco_ap_50_95']['mAP'])} |",
        "",
        f"{m['ignore_hidden']['num_hidden']} of {m['num_objects']} validation objects are hidden "
        f"(visibility < {HIDDEN_VISIBILITY}).",
        "",
        "## Operating point at the best F1 per class",
        "",
        "| class | precision | recall | F1 | score threshold |",
        "|---|---|---|---|---|",
    ]
    for n in names:
        f = m["best_f1"][n]
        lines.append(f"| {n} | {_fmt(f['precision'])} | {_fmt(f['recall'])} | {_fmt(f['f1'])} | "
                     f"{_fmt(f['score_threshold'])} |")
    cm = m["confusion_matrix"]
    lines += ["", f"## Confusion matrix (score >= {cm['score_threshold']}, IoU >= 0.5; rows true, columns "
                  "predicted)", "", "| true \\ predicted | " + " | ".join(cm["columns"]) + " |",
              "|---|" + "---|" * len(cm["columns"])]
    for name, row in zip(cm["rows"], cm["matrix"], strict=True):
        lines.append(f"| {name} | " + " | ".join(str(v) for v in row) + " |")
    lines += _false_positive_lines(m["false_positives"])
    cov = m["anchor_coverage"]
    lines += ["", f"## Anchor coverage per scale (share of ground truths with an anchor IoU >= "
                  f"{cov['pos_threshold']}; mean best IoU in brackets)", "",
              "| scale | stride | anchors | " + " | ".join(names) + " | all |", "|---|---|---|" + "---|" *
              (len(names) + 1)]
    for sc in cov["scales"]:
        cells = [f"{_fmt(sc['by_class'][n]['share_with_positive_anchor'])} "
                 f"({_fmt(sc['by_class'][n]['mean_best_iou'])})" for n in names]
        lines.append(f"| {sc['scale']} | {sc['stride']:g} | {sc['anchor_sizes']} | " + " | ".join(cells)
                     + f" | {_fmt(sc['share_with_positive_anchor'])} |")
    lines += ["", f"Ground truths with no anchor at IoU >= {cov['pos_threshold']} on any scale (matched only by "
                  f"the forced best-anchor match): {_fmt(cov['share_without_any_positive_anchor'])} "
                  f"({cov['without_any_positive_anchor_by_class']}).",
              "", _force_match_line(m["force_match_effect"]),
              "", "## Scale specialisation (true positives at IoU 0.5 by the scale that produced them)", "",
              "| class | object size (px) | scale 1 | scale 2 | scale 3 |", "|---|---|---|---|---|"]
    for n in names:
        for lab, row in m["scale_specialisation"]["true_positives"][n].items():
            lines.append(f"| {n} | {lab} | " + " | ".join(str(row[f"scale{s}"]) for s in (1, 2, 3)) + " |")
    lines += ["", "Figures: `visualizations/` (detections, PR curves, anchor coverage, scale specialisation, feature "
                  "maps, confusion matrix, training curves).", ""]
    atomic_write_text(path, "\n".join(lines))


def build_model(cfg: Config, state_dict: dict | None = None, path: str | Path = "") -> MultiScaleDetector:
    """The configured detector (weights from ``state_dict`` if given), in the configured memory format."""
    model = MultiScaleDetector(cfg.num_classes, cfg.num_anchors, cfg.head_dilation)
    if state_dict is not None:
        load_weights(model, state_dict, path)
    return model.to(memory_format=memory_format(cfg.channels_last))


def evaluate(checkpoint: str | Path, data_dir: str | Path, results_dir: str | Path, device: str = "auto",
             num_vis: int = 10, command: str = "", limit_val: int | None = None) -> dict:
    """Everything this script does: metrics.json, summary.md and the figures for one checkpoint.

    ``limit_val``: validation images to use (0: all); ``None`` keeps the checkpoint's own setting, so the numbers
    reproduce the validation of its training run.
    """
    ckpt = load_checkpoint(checkpoint, PROBLEM)
    cfg = config_from_dict(Config, ckpt.get("config", {}))
    if limit_val is not None:
        cfg = dataclasses.replace(cfg, limit_val=limit_val)
    model = build_model(cfg, ckpt["model"], checkpoint)
    dev = pick_device(device)
    dataset = load_split(data_dir, "val", cfg.limit_val)  # all reading and checking before anything is written
    model.to(dev)
    dataset.to(dev)
    criterion = DetectionLoss(cfg.num_classes, cfg.num_anchors, cfg.pos_threshold, cfg.neg_threshold,
                              cfg.force_match, cfg.neg_pos_ratio, cfg.min_negatives)

    t0 = time.perf_counter()
    res = validate(model, dataset, cfg, dev, criterion, desc="evaluate")
    t_infer = time.perf_counter() - t0
    preds, gts = res["predictions"], as_numpy_targets(dataset)
    curves, matches = evaluate_detections(preds, gts, cfg.num_classes, 0.5, cfg.max_detections)
    hidden = [{**g, "ignore": g["visibility"] < HIDDEN_VISIBILITY} for g in gts]
    ign = compute_ap(preds, hidden, 0.5, cfg.num_classes, cfg.max_detections)
    coco = [compute_ap(preds, gts, t, cfg.num_classes, cfg.max_detections)["ap_per_class"]
            for t in np.linspace(0.5, 0.95, 10)]
    coco_cls = [float(np.mean(col)) if not np.isnan(col).any() else float("nan") for col in zip(*coco, strict=True)]
    cm = confusion_matrix(preds, gts, cfg.num_classes, CONFUSION_SCORE)
    cov = anchor_coverage(dataset, cfg.pos_threshold)
    forced = force_match_effect(dataset, cfg)
    spec = scale_specialisation(preds, matches, dataset)
    fps = false_positive_analysis(preds, matches, dataset)
    t_metrics = time.perf_counter() - t0 - t_infer

    names = list(CLASS_NAMES)
    metrics = {
        "checkpoint": str(checkpoint), "epoch": ckpt.get("epoch"), "data_dir": str(data_dir), "device": str(dev),
        "command": command, "config": dataclasses.asdict(cfg),
        "num_images": len(dataset), "num_objects": int(sum(len(g["labels"]) for g in gts)),
        "mAP": res["mAP"], "ap_per_class": dict(zip(names, res["ap_per_class"], strict=True)),
        "val_loss": res["loss"],
        "ignore_hidden": {"visibility_below": HIDDEN_VISIBILITY, "mAP": ign["mAP"],
                          "ap_per_class": dict(zip(names, ign["ap_per_class"], strict=True)),
                          "num_hidden": int(sum(int(h["ignore"].sum()) for h in hidden))},
        "coco_ap_50_95": {"mAP": mean_ap(coco_cls), "ap_per_class": dict(zip(names, coco_cls, strict=True))},
        "best_f1": {n: best_f1(c) for n, c in zip(names, curves, strict=True)},
        "confusion_matrix": {"score_threshold": CONFUSION_SCORE, "rows": names + ["(background)"],
                             "columns": names + ["(missed)"], "matrix": cm.tolist()},
        "anchor_coverage": cov,
        "force_match_effect": forced,
        "scale_specialisation": spec,
        "false_positives": fps,
        "num_detections": int(sum(len(p["scores"]) for p in preds)),
        "time": {"inference_s": t_infer, "metrics_s": t_metrics},
    }

    out = Path(results_dir)
    vis = out / "visualizations"
    plot_detections(dataset, preds, vis / "detections.png", num_vis)
    plot_pr_curves(curves, vis / "pr_curves.png")
    plot_anchor_coverage(cov, vis / "anchor_coverage.png")
    plot_scale_specialisation(spec, vis / "scale_specialisation.png")
    plot_feature_maps(model, dataset, dev, vis / "feature_maps.png")
    plot_confusion(cm, vis / "confusion_matrix.png")
    log_path = out / "training_log.json"
    if log_path.is_file():
        import json

        try:
            plot_training_curves(json.loads(log_path.read_text()), vis / "training_curves.png")
        except (ValueError, KeyError, TypeError):
            print(f"note: {log_path} is not a problem-1 training log; no training curves", file=sys.stderr)
    clean = _nan_to_none(metrics)
    atomic_write_json(out / "metrics.json", clean)
    write_summary(clean, out / "summary.md")
    return metrics


def main(argv: list[str] | None = None) -> None:
    defaults = Config()
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--data-dir", default=defaults.data_dir, help="folder holding detection/")
    p.add_argument("--results-dir", default=defaults.results_dir, help="where metrics.json, summary.md and "
                   "visualizations/ go")
    p.add_argument("--checkpoint", default=None, help="checkpoint to evaluate (default: RESULTS_DIR/best_model.pth)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")
    p.add_argument("--num-vis", type=int, default=10, help="validation images drawn with their detections")
    p.add_argument("--limit-val", type=int, default=None, help="use only the first N validation images (0: all; "
                   "default: as in the checkpoint's training run)")
    args = p.parse_args(argv)
    tune_cpu_allocator()
    for flag, value in (("--num-vis", args.num_vis), ("--limit-val", args.limit_val)):
        if value is not None and value < 0:
            raise UserError(f"{flag} must be >= 0 (got {value})")
    ckpt = args.checkpoint or str(Path(args.results_dir) / "best_model.pth")
    command = "python problem1/evaluate.py " + " ".join(sys.argv[1:] if argv is None else argv)
    m = evaluate(ckpt, args.data_dir, args.results_dir, args.device, args.num_vis, command.strip(), args.limit_val)
    per_class = ", ".join(f"{n} {_fmt(v)}" for n, v in m["ap_per_class"].items())
    print(f"mAP@0.5 {_fmt(m['mAP'])} ({per_class}); hidden ignored {_fmt(m['ignore_hidden']['mAP'])}; "
          f"wrote {Path(args.results_dir) / 'metrics.json'}")


if __name__ == "__main__":
    run_cli(main)
