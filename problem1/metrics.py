"""Detection metrics with COCO's exact conventions (pure NumPy, no plotting).

:func:`match_detections` reproduces ``pycocotools.cocoeval.COCOeval.evaluateImg`` for one IoU threshold, area
range 'all' and at most ``max_detections`` detections per image and class; :func:`accumulate` reproduces
``COCOeval.accumulate`` (101 recall points, precision made monotone from the right). :func:`compute_ap` is the
public entry point (also importable from ``evaluate.py``); the tests compare it with pycocotools to 1e-6. The two
other AP variants of the evaluation are built on it: :func:`ap_hidden_ignored` and :func:`ap_50_95`.

Ground truths may carry an ``ignore`` mask. An ignored ground truth is handled as COCO handles one outside the
area range: it is not a miss when nothing finds it, a detection matched to it is neither a true nor a false
positive, a detection prefers any regular ground truth to it, and it absorbs at most one detection.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from problem1.config import CLASS_NAMES

REC_THRS = np.linspace(0.0, 1.0, 101)  # COCO's recall thresholds (np.linspace, not arange, as in pycocotools)
COCO_IOU_THRESHOLDS = np.linspace(0.5, 0.95, 10)  # AP@[.5:.95]
HIDDEN_VISIBILITY = 0.1  # objects below this visibility are "ignore" in the hidden-ignored mAP


def _np(x, dtype=None) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.asarray(x, dtype=dtype)


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``a [N, 4]``, ``b [M, 4]`` xyxy (float64) -> ``[N, M]`` IoU, the arithmetic of pycocotools' ``bbIou``."""
    iw = np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0])
    ih = np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1])
    inter = np.clip(iw, 0, None) * np.clip(ih, 0, None)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    union = area_a[:, None] + area_b[None, :] - inter
    return inter / union


@dataclass
class ImageMatches:
    """Matching result of one (image, class): detections in evaluation order (score descending)."""

    det_index: np.ndarray  # [D] index of each evaluated detection in the image's prediction arrays
    scores: np.ndarray  # [D]
    matched_gt: np.ndarray  # [D] index into the image's ground truths, -1 if unmatched
    ignored: np.ndarray  # [D] bool: matched to an ignored ground truth (neither TP nor FP)
    num_gt: int  # regular (not ignored) ground truths of this class in the image


def match_detections(det_boxes: np.ndarray, det_scores: np.ndarray, gt_boxes: np.ndarray, gt_ignore: np.ndarray,
                     iou_threshold: float = 0.5, max_detections: int = 100) -> ImageMatches:
    """COCO's greedy matching of one image and one class.

    Detections are taken by descending score (stable), at most ``max_detections``; each goes to the still
    unmatched ground truth with the highest IoU >= ``iou_threshold``, regular ground truths before ignored
    ones, the later one on an exact IoU tie (all as in pycocotools). Duplicates therefore stay unmatched (FP).

    Args:
        det_boxes [D, 4] xyxy, det_scores [D], gt_boxes [G, 4] xyxy, gt_ignore [G] bool.
    """
    order = np.argsort(-det_scores, kind="mergesort")[:max_detections]
    gt_order = np.argsort(gt_ignore.astype(np.int8), kind="mergesort")  # regular first, as pycocotools sorts
    n_det, n_gt = len(order), len(gt_order)
    matched = np.full(n_det, -1, dtype=np.int64)
    ignored = np.zeros(n_det, dtype=bool)
    if n_det and n_gt:
        ious = iou_matrix(det_boxes[order], gt_boxes[gt_order])  # [D, G], gts in pycocotools' order
        ig = gt_ignore[gt_order]
        thr = min(iou_threshold, 1 - 1e-10)
        taken = np.zeros(n_gt, dtype=bool)
        # Only detections with some IoU >= thr can match; the rest are FPs without a Python step each.
        for d in np.flatnonzero((ious >= thr).any(axis=1)):
            row = np.where(~taken & (ious[d] >= thr), ious[d], -np.inf)
            for group in (~ig, ig):  # a regular match always beats an ignored one
                cand = np.where(group, row, -np.inf)
                if np.isfinite(cand.max()):
                    g = n_gt - 1 - int(np.argmax(cand[::-1]))  # highest IoU, later index on ties
                    taken[g] = True
                    matched[d] = gt_order[g]
                    ignored[d] = ig[g]
                    break
    return ImageMatches(order, det_scores[order], matched, ignored, int((~gt_ignore).sum()))


@dataclass
class ClassCurve:
    """Accumulated results of one class over all images (COCOeval.accumulate)."""

    ap: float  # 101-point interpolated AP; nan when the class has no regular ground truth
    scores: np.ndarray  # [N] scores of all evaluated detections, descending
    tp: np.ndarray  # [N] bool (False for both FPs and detections on ignored ground truths)
    precision: np.ndarray  # [N] raw precision after each detection
    recall: np.ndarray  # [N]
    num_gt: int


def accumulate(matches: Sequence[ImageMatches]) -> ClassCurve:
    """Merge the per-image matches of one class into its PR curve and COCO AP."""
    num_gt = sum(m.num_gt for m in matches)
    scores = np.concatenate([np.zeros(0)] + [m.scores for m in matches])
    inds = np.argsort(-scores, kind="mergesort")  # images in order, then score: as pycocotools
    matched = np.concatenate([np.zeros(0, np.int64)] + [m.matched_gt for m in matches])[inds] >= 0
    ign = np.concatenate([np.zeros(0, bool)] + [m.ignored for m in matches])[inds]
    scores, tps, fps = scores[inds], matched & ~ign, ~matched & ~ign  # ignored entries count as neither
    if num_gt == 0:
        return ClassCurve(float("nan"), scores, tps, np.zeros(0), np.zeros(0), 0)
    tp_sum = np.cumsum(tps).astype(float)
    fp_sum = np.cumsum(fps).astype(float)
    recall = tp_sum / num_gt
    precision = tp_sum / (fp_sum + tp_sum + np.spacing(1))
    q = np.zeros(len(REC_THRS))
    if len(precision):
        envelope = np.maximum.accumulate(precision[::-1])[::-1]  # monotone from the right
        idx = np.searchsorted(recall, REC_THRS, side="left")
        ok = idx < len(envelope)
        q[ok] = envelope[idx[ok]]
    return ClassCurve(float(np.mean(q)), scores, tps, precision, recall, num_gt)


def evaluate_detections(predictions: Sequence[dict], ground_truths: Sequence[dict], num_classes: int,
                        iou_threshold: float = 0.5, max_detections: int = 100
                        ) -> tuple[list[ClassCurve], list[list[ImageMatches]]]:
    """Match every image and class, then accumulate per class.

    Args:
        predictions: per image ``{'boxes' [N, 4] xyxy, 'scores' [N], 'labels' [N]}`` (tensors or arrays).
        ground_truths: per image ``{'boxes' [M, 4] xyxy, 'labels' [M]}``, optionally ``'ignore' [M]`` bool.

    Returns:
        per class a :class:`ClassCurve`; per class and image the :class:`ImageMatches`.
    """
    if len(predictions) != len(ground_truths):
        raise ValueError(f"{len(predictions)} prediction entries for {len(ground_truths)} images")
    per_class: list[list[ImageMatches]] = [[] for _ in range(num_classes)]
    for pred, gt in zip(predictions, ground_truths, strict=True):
        pb, ps, pl = _np(pred["boxes"], np.float64).reshape(-1, 4), _np(pred["scores"], np.float64), _np(pred["labels"])
        gb, gl = _np(gt["boxes"], np.float64).reshape(-1, 4), _np(gt["labels"])
        gi = _np(gt["ignore"], bool) if "ignore" in gt else np.zeros(len(gl), bool)
        for c in range(num_classes):
            d_idx, g_idx = np.flatnonzero(pl == c), np.flatnonzero(gl == c)
            m = match_detections(pb[d_idx], ps[d_idx], gb[g_idx], gi[g_idx], iou_threshold, max_detections)
            # back to the image's own indices
            m.det_index = d_idx[m.det_index]
            hit = m.matched_gt >= 0
            m.matched_gt[hit] = g_idx[m.matched_gt[hit]]
            per_class[c].append(m)
    return [accumulate(ms) for ms in per_class], per_class


def mean_ap(aps: Sequence[float]) -> float:
    """Mean over the classes that have ground truth (COCO skips absent classes); nan if none has any."""
    valid = [a for a in aps if not np.isnan(a)]
    return float(np.mean(valid)) if valid else float("nan")


def compute_ap(predictions: Sequence[dict], ground_truths: Sequence[dict], iou_threshold: float = 0.5,
               num_classes: int = len(CLASS_NAMES), max_detections: int = 100) -> dict:
    """COCO 101-point interpolated AP per class at one IoU threshold (equal to pycocotools, area 'all', 100 dets).

    Args:
        predictions: per image ``{'boxes' [N, 4] xyxy, 'scores' [N], 'labels' [N]}``.
        ground_truths: per image ``{'boxes' [M, 4] xyxy, 'labels' [M]}``; an optional ``'ignore' [M]`` bool marks
            ground truths that are neither missed nor matched as TP (module docstring).

    Returns:
        ``{'ap_per_class': [C floats by class id], 'mAP': float}``; a class without ground truth has AP ``nan``
        and is left out of the mean, as pycocotools leaves it out.
    """
    curves, _ = evaluate_detections(predictions, ground_truths, num_classes, iou_threshold, max_detections)
    aps = [c.ap for c in curves]
    return {"ap_per_class": aps, "mAP": mean_ap(aps)}


def ap_hidden_ignored(predictions: Sequence[dict], ground_truths: Sequence[dict], num_classes: int = len(CLASS_NAMES),
                      max_detections: int = 100, min_visibility: float = HIDDEN_VISIBILITY) -> dict:
    """AP@0.5 with the objects of visibility < ``min_visibility`` as "ignore": nobody can be asked to find an object
    that is fully covered, and a detection on it is no false positive either.

    Args:
        ground_truths: per image ``{'boxes' [M, 4], 'labels' [M], 'visibility' [M]}``.

    Returns:
        :func:`compute_ap`'s dict plus ``'num_hidden'``, the number of ignored objects.
    """
    hidden = [{**g, "ignore": _np(g["visibility"]) < min_visibility} for g in ground_truths]
    return {**compute_ap(predictions, hidden, 0.5, num_classes, max_detections),
            "num_hidden": int(sum(int(h["ignore"].sum()) for h in hidden))}


def ap_50_95(predictions: Sequence[dict], ground_truths: Sequence[dict], num_classes: int = len(CLASS_NAMES),
             max_detections: int = 100) -> dict:
    """COCO's AP@[.5:.95]: per class the mean of the AP at IoU 0.50, 0.55, ..., 0.95 (nan without ground truth).

    Returns:
        ``{'ap_per_class': [C floats], 'mAP': float}`` like :func:`compute_ap`.
    """
    per_threshold = [compute_ap(predictions, ground_truths, t, num_classes, max_detections)["ap_per_class"]
                     for t in COCO_IOU_THRESHOLDS]  # [T][C]
    per_class = [float(np.mean(col)) if not np.isnan(col).any() else float("nan")
                 for col in zip(*per_threshold, strict=True)]
    return {"ap_per_class": per_class, "mAP": mean_ap(per_class)}


def best_f1(curve: ClassCurve) -> dict:
    """Precision, recall and score threshold where F1 is highest along the ranked detections of one class."""
    if curve.num_gt == 0 or len(curve.precision) == 0:
        return {"precision": 0.0, "recall": 0.0, "f1": 0.0, "score_threshold": None}
    p, r = curve.precision, curve.recall
    f1 = np.where(p + r > 0, 2 * p * r / np.maximum(p + r, 1e-12), 0.0)
    i = int(np.argmax(f1))
    return {"precision": float(p[i]), "recall": float(r[i]), "f1": float(f1[i]),
            "score_threshold": float(curve.scores[i])}


def confusion_matrix(predictions: Sequence[dict], ground_truths: Sequence[dict], num_classes: int,
                     score_threshold: float = 0.5, iou_threshold: float = 0.5) -> np.ndarray:
    """Class-agnostic confusion matrix ``[C+1, C+1]``: rows true class, columns predicted class.

    Detections with score >= ``score_threshold`` are matched greedily (highest score first) to the unmatched
    ground truth of any class with the highest IoU >= ``iou_threshold``. Row ``C`` (background) counts
    detections that match nothing; column ``C`` (missed) counts ground truths that nothing matched.
    """
    cm = np.zeros((num_classes + 1, num_classes + 1), dtype=np.int64)
    for pred, gt in zip(predictions, ground_truths, strict=True):
        keep = _np(pred["scores"], np.float64) >= score_threshold
        pb = _np(pred["boxes"], np.float64).reshape(-1, 4)[keep]
        pl, ps = _np(pred["labels"])[keep], _np(pred["scores"], np.float64)[keep]
        gb, gl = _np(gt["boxes"], np.float64).reshape(-1, 4), _np(gt["labels"])
        taken = np.zeros(len(gl), bool)
        if len(pb) and len(gb):
            ious = iou_matrix(pb, gb)
            for d in np.argsort(-ps, kind="mergesort"):
                row = np.where(~taken & (ious[d] >= iou_threshold), ious[d], -np.inf)
                g = int(np.argmax(row))
                if np.isfinite(row[g]):
                    taken[g] = True
                    cm[gl[g], pl[d]] += 1
                else:
                    cm[num_classes, pl[d]] += 1
        else:
            np.add.at(cm, (num_classes, pl), 1)
        np.add.at(cm, (gl[~taken], num_classes), 1)
    return cm
