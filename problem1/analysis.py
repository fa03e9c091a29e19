"""Problem-1 analysis beyond AP: anchor coverage, what the forced match changes, scale specialisation and why
the confident false positives are false.

Every function returns a JSON-ready dict for ``metrics.json``; keys starting with ``_`` hold arrays kept only for
the figures (``report.nan_to_none(..., drop_private=True)`` leaves them out of the JSON).
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch

from problem1.config import ANCHOR_SCALES, CLASS_NAMES, FEATURE_MAP_SIZES, IMAGE_SIZE, Config
from problem1.dataset import ShapeDetectionDataset, object_sizes
from problem1.metrics import ImageMatches, iou_matrix
from problem1.utils import box_iou, default_anchor_list, default_anchors, match_anchors_batched

SIZE_BINS = (0, 32, 64, 128, math.inf)  # object size sqrt(w*h) in pixels
SIZE_LABELS = ("<=32", "33-64", "65-128", ">128")
CONFUSION_SCORE = 0.5  # "confident": detections counted in the confusion matrix and the false-positive analysis


def size_bin(sizes: np.ndarray) -> np.ndarray:
    """Object size (pixels) -> index into ``SIZE_LABELS``."""
    return np.digitize(sizes, SIZE_BINS[1:-1], right=True)


def anchor_coverage(dataset: ShapeDetectionDataset, pos_threshold: float = 0.5) -> dict:
    """For every ground truth: the best IoU with each scale's anchors, and whether any anchor there is positive."""
    anchor_list = default_anchor_list()
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
        # for the figure; dropped from metrics.json. The figure's x is the larger side, the unit of the data tables.
        "_best_iou": best, "_larger_side": (boxes[:, 2:] - boxes[:, :2]).amax(dim=1).numpy(), "_labels": labels,
    }


def force_match_effect(dataset: ShapeDetectionDataset, cfg: Config, split: str = "validation",
                       batch_size: int = 64) -> dict:
    """What ``force_match`` changes in the matching of ``dataset``: anchors made positive only by it, positives
    whose assigned ground truth it changes, and objects that would have no positive anchor without it."""
    anchors = default_anchors()
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
    # The sizes that occur in each (class, size bin), so a figure can say "65-96 px" where the bin is 65-128.
    ranges = np.full((len(CLASS_NAMES), len(SIZE_LABELS), 2), [np.inf, -np.inf])
    for target in dataset.targets:
        sizes = object_sizes(target["boxes"]).numpy()
        for c, b, v in zip(target["labels"].numpy(), size_bin(sizes), sizes, strict=True):
            ranges[c, b] = min(ranges[c, b, 0], v), max(ranges[c, b, 1], v)
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
    return {"true_positives": table, "by_class": by_class, "_counts": counts, "_ranges": ranges}


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
