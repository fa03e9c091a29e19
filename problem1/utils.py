"""Anchor and box math for problem 1: pure, vectorised functions with the shapes in the docstrings.

Box convention everywhere: ``xyxy`` = ``[x1, y1, x2, y2]`` corners in pixels with ``x1 < x2`` and ``y1 < y2``
(the JSON annotations use the same corners). ``cxcywh`` appears only inside :func:`encode_boxes` /
:func:`decode_boxes`.

Anchor order (the one thing the loss, the decoder and the anchors must agree on): scale by scale, and within a
scale row ``i`` (y), then column ``j`` (x), then anchor ``a`` (size). :func:`flatten_predictions` flattens the
head outputs ``[B, A*(5+C), H, W]`` in exactly that order.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from problem1.config import ANCHOR_SCALES, FEATURE_MAP_SIZES, IMAGE_SIZE

# Box-offset variances (SSD): the regression targets are the offsets divided by these, so that centre and
# size targets both have roughly unit scale. Encoding divides by them and decoding multiplies: exact inverses.
VARIANCES = (0.1, 0.1, 0.2, 0.2)
# exp() in decoding is clamped at this log-ratio (a box 1000x its anchor), so an untrained head cannot overflow.
_MAX_LOG_RATIO = math.log(1000.0)


# --------------------------------------------------------------------------------------------------- boxes
def box_area(boxes: Tensor) -> Tensor:
    """``boxes (Tensor[..., 4])`` xyxy -> ``Tensor[...]`` areas."""
    return (boxes[..., 2] - boxes[..., 0]) * (boxes[..., 3] - boxes[..., 1])


def box_iou(boxes1: Tensor, boxes2: Tensor) -> Tensor:
    """Pairwise IoU with batch broadcasting.

    Args:
        boxes1 (Tensor[..., N, 4]): xyxy boxes with ``x1 < x2``, ``y1 < y2``.
        boxes2 (Tensor[..., M, 4]): xyxy boxes; leading dims broadcast against ``boxes1``'s.

    Returns:
        Tensor[..., N, M]: IoU in [0, 1]. Put the larger set second: the work is a few passes over
        contiguous ``[..., N, M]`` rows (coordinates are unbound first, no ``[..., N, M, 2]`` temporaries).
    """
    # Contiguous coordinate vectors: strided (every 4th float) operands make each broadcast op several times slower.
    x1, y1, x2, y2 = (c.contiguous()[..., :, None] for c in boxes1.unbind(-1))  # [..., N, 1] each
    u1, v1, u2, v2 = (c.contiguous()[..., None, :] for c in boxes2.unbind(-1))  # [..., 1, M] each
    # clamp(min=/max=) with tensor bounds is ~3x faster than torch.maximum/minimum for these broadcasts on CPU
    inter = u2.clamp(max=x2).sub_(u1.clamp(min=x1)).clamp_(min=0)  # [..., N, M] overlap widths
    inter.mul_(v2.clamp(max=y2).sub_(v1.clamp(min=y1)).clamp_(min=0))
    union = ((x2 - x1) * (y2 - y1) + (u2 - u1) * (v2 - v1)).sub_(inter)
    return inter.div_(union)


def compute_iou(boxes1: Tensor, boxes2: Tensor) -> Tensor:
    """IoU matrix of two box sets: ``boxes1 (Tensor[N, 4])``, ``boxes2 (Tensor[M, 4])`` xyxy -> ``Tensor[N, M]``."""
    return box_iou(boxes1, boxes2)


def xyxy_to_cxcywh(boxes: Tensor) -> Tensor:
    """``Tensor[..., 4]`` xyxy -> ``Tensor[..., 4]`` (cx, cy, w, h)."""
    x1, y1, x2, y2 = boxes.unbind(-1)
    return torch.stack(((x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1), dim=-1)


def cxcywh_to_xyxy(boxes: Tensor) -> Tensor:
    """``Tensor[..., 4]`` (cx, cy, w, h) -> ``Tensor[..., 4]`` xyxy."""
    cx, cy, w, h = boxes.unbind(-1)
    return torch.stack((cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2), dim=-1)


def encode_boxes(boxes: Tensor, anchors: Tensor, variances: Sequence[float] = VARIANCES) -> Tensor:
    """Anchor-relative regression targets (SSD / Faster R-CNN parametrisation with variances).

    ``tx = (cx - cxa) / wa / v0``, ``ty = (cy - cya) / ha / v1``, ``tw = log(w / wa) / v2``, ``th = log(h / ha) / v3``.

    Args:
        boxes (Tensor[..., 4]): xyxy ground-truth boxes.
        anchors (Tensor[..., 4]): xyxy anchors, broadcastable to ``boxes``.

    Returns:
        Tensor[..., 4]: offsets ``(tx, ty, tw, th)``; :func:`decode_boxes` is the exact inverse.
    """
    b, a = xyxy_to_cxcywh(boxes), xyxy_to_cxcywh(anchors)
    v = boxes.new_tensor(variances)
    centre = (b[..., :2] - a[..., :2]) / a[..., 2:] / v[:2]
    size = torch.log(b[..., 2:] / a[..., 2:]) / v[2:]
    return torch.cat((centre, size), dim=-1)


def decode_boxes(offsets: Tensor, anchors: Tensor, variances: Sequence[float] = VARIANCES) -> Tensor:
    """Inverse of :func:`encode_boxes`: ``offsets (Tensor[..., 4])`` + xyxy ``anchors`` -> ``Tensor[..., 4]`` xyxy.

    The size log-ratios are clamped at log(1000) so that an untrained head cannot produce ``inf`` boxes.
    """
    a = xyxy_to_cxcywh(anchors)
    v = offsets.new_tensor(variances)
    centre = offsets[..., :2] * v[:2] * a[..., 2:] + a[..., :2]
    size = torch.exp((offsets[..., 2:] * v[2:]).clamp(max=_MAX_LOG_RATIO)) * a[..., 2:]
    return cxcywh_to_xyxy(torch.cat((centre, size), dim=-1))


# ------------------------------------------------------------------------------------------------- anchors
def _hw(size: int | Sequence[int]) -> tuple[int, int]:
    return (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))


def generate_anchors(feature_map_sizes: Sequence[int | Sequence[int]], anchor_scales: Sequence[Sequence[float]],
                     image_size: int = 224) -> list[Tensor]:
    """Square anchors for every cell of every feature map.

    Args:
        feature_map_sizes: one ``(H, W)`` pair per scale (a plain int means a square map).
        anchor_scales: per scale, the anchor sides in pixels (aspect ratio 1:1 only).
        image_size: input side in pixels; the stride of a map is ``image_size / W`` (and ``/ H``).

    Returns:
        list[Tensor[H*W*A, 4]]: xyxy anchors per scale, ordered row ``i``, column ``j``, anchor ``a``, with
        centres ``((j + 0.5) * stride, (i + 0.5) * stride)``. Anchors are not clipped to the image.
    """
    out = []
    for size, scales in zip(feature_map_sizes, anchor_scales, strict=True):
        h, w = _hw(size)
        sy, sx = image_size / h, image_size / w
        cy = (torch.arange(h, dtype=torch.float32) + 0.5) * sy  # [H]
        cx = (torch.arange(w, dtype=torch.float32) + 0.5) * sx  # [W]
        half = torch.tensor(scales, dtype=torch.float32) / 2  # [A]
        cy = cy[:, None, None].expand(h, w, len(scales))  # [H, W, A]
        cx = cx[None, :, None].expand(h, w, len(scales))
        half = half[None, None, :].expand(h, w, len(scales))
        out.append(torch.stack((cx - half, cy - half, cx + half, cy + half), dim=-1).reshape(-1, 4))  # [H*W*A, 4]
    return out


def default_anchor_list() -> list[Tensor]:
    """The specified anchors per scale (``config.FEATURE_MAP_SIZES``, ``ANCHOR_SCALES``, ``IMAGE_SIZE``):
    ``[Tensor[56*56*3, 4], Tensor[28*28*3, 4], Tensor[14*14*3, 4]]`` xyxy."""
    return generate_anchors(FEATURE_MAP_SIZES, ANCHOR_SCALES, IMAGE_SIZE)


def default_anchors() -> Tensor:
    """``Tensor[12348, 4]`` xyxy: the specified anchors of all scales, in anchor order (the order of
    :func:`flatten_predictions`), on the CPU; the one anchor set the loss, the decoder and the analysis share."""
    return torch.cat(default_anchor_list())


def anchor_scale_index(anchors: Sequence[Tensor]) -> Tensor:
    """``Tensor[A_total]`` long: the scale (0, 1, 2, ...) that each anchor of ``torch.cat(anchors)`` belongs to."""
    return torch.cat([torch.full((len(a),), s, dtype=torch.long) for s, a in enumerate(anchors)])


def flatten_predictions(outputs: Sequence[Tensor], num_anchors: int) -> Tensor:
    """Head outputs -> one tensor in anchor order.

    Args:
        outputs: per scale ``Tensor[B, A*(5+C), H, W]``; channel ``a*(5+C) + k`` is field ``k`` of anchor ``a``
            (``k`` = 0..3 box offsets, 4 objectness logit, 5.. class logits).

    Returns:
        Tensor[B, sum(H*W*A), 5+C], rows in the order of ``torch.cat(generate_anchors(...))``.
    """
    b, ch = outputs[0].shape[:2]
    total = sum(o.shape[2] * o.shape[3] for o in outputs) * num_anchors
    flat = outputs[0].new_empty(b, total, ch // num_anchors)
    start = 0
    for out in outputs:  # one copy per scale, straight into its slice
        h, w = out.shape[2:]
        x = out.view(b, num_anchors, ch // num_anchors, h, w).permute(0, 3, 4, 1, 2)  # [B, H, W, A, 5+C]
        flat[:, start:start + h * w * num_anchors].view(b, h, w, num_anchors, -1).copy_(x)
        start += h * w * num_anchors
    return flat  # [B, sum(H*W*A), 5+C]


def flatten_field(outputs: Sequence[Tensor], num_anchors: int, field: int) -> Tensor:
    """One field of every anchor, in anchor order: ``Tensor[B, sum(H*W*A)]``
    (``== flatten_predictions(outputs, num_anchors)[..., field]``, copying only that field)."""
    parts = []
    for out in outputs:
        b, ch, h, w = out.shape
        x = out.view(b, num_anchors, ch // num_anchors, h, w)[:, :, field]  # [B, A, H, W]
        parts.append(x.permute(0, 2, 3, 1).reshape(b, h * w * num_anchors))  # [B, H*W*A]
    return torch.cat(parts, dim=1)


def gather_predictions(outputs: Sequence[Tensor], batch_idx: Tensor, anchor_idx: Tensor, num_anchors: int) -> Tensor:
    """Selected rows of the flattened predictions without flattening everything.

    Args:
        outputs: per scale ``Tensor[B, A*(5+C), H, W]``.
        batch_idx (Tensor[P]), anchor_idx (Tensor[P]): long indices into ``[B, sum(H*W*A)]``.

    Returns:
        Tensor[P, 5+C] equal to ``flatten_predictions(outputs, num_anchors)[batch_idx, anchor_idx]``. Its backward
        writes only the selected cells, where flattening would copy the whole ``[B, A_total, 5+C]`` tensor twice.
    """
    parts, order, start = [], [], 0
    for out in outputs:
        b, ch, h, w = out.shape
        n = h * w * num_anchors
        here = ((anchor_idx >= start) & (anchor_idx < start + n)).nonzero().squeeze(1)  # [P_s]
        local = anchor_idx[here] - start  # = (i * W + j) * A + a
        i, j, a = local // (w * num_anchors), (local // num_anchors) % w, local % num_anchors
        x = out.view(b, num_anchors, ch // num_anchors, h, w)  # [B, A, 5+C, H, W]
        parts.append(x[batch_idx[here], a, :, i, j])  # [P_s, 5+C]
        order.append(here)
        start += n
    rows, order = torch.cat(parts), torch.cat(order)
    return rows.new_zeros(rows.shape).index_copy(0, order, rows)  # back to the input order


# ------------------------------------------------------------------------------------------------ matching
def pad_targets(targets: Sequence[dict], device: torch.device | None = None) -> tuple[Tensor, Tensor]:
    """List of per-image targets -> padded batch.

    Returns:
        boxes (Tensor[B, G, 4]) xyxy, zeros in padding; labels (Tensor[B, G]) long class ids, ``-1`` in padding.
        ``G`` is the largest object count in the batch (may be 0).
    """
    g = max((len(t["labels"]) for t in targets), default=0)
    boxes = torch.zeros(len(targets), g, 4)
    labels = torch.full((len(targets), g), -1, dtype=torch.long)
    for i, t in enumerate(targets):
        n = len(t["labels"])
        boxes[i, :n] = t["boxes"]
        labels[i, :n] = t["labels"]
    return boxes.to(device), labels.to(device)


def _first_argmax(x: Tensor, values: Tensor) -> Tensor:
    """Index of the first maximum along dim 1 of ``x (Tensor[B, G, A])``, given ``values = x.amax(1)``.

    Same result as ``x.argmax(1)``, but that strided reduction is ~50x slower on CPU for a short dim 1; here it is
    one comparison and one ``amax`` over a small integer tensor.
    """
    g = x.shape[1]
    dtype = torch.uint8 if g < 256 else torch.int32
    rev = torch.arange(g - 1, -1, -1, dtype=dtype, device=x.device)[None, :, None]  # [1, G, 1]: later -> smaller
    hits = (x == values[:, None, :]).view(torch.uint8)  # [B, G, A], a free reinterpretation of the bools
    return (g - 1) - (hits.to(dtype) if dtype != torch.uint8 else hits).mul_(rev).amax(dim=1).long()


def match_anchors_batched(anchors: Tensor, boxes: Tensor, labels: Tensor, pos_threshold: float = 0.5,
                          neg_threshold: float = 0.3, force_match: bool = True) -> tuple[Tensor, Tensor, Tensor]:
    """Assign every anchor of every image to a ground truth, a batch at a time (one ``[B, G, A]`` IoU tensor).

    Args:
        anchors (Tensor[A, 4]): xyxy anchors in anchor order.
        boxes (Tensor[B, G, 4]): padded xyxy ground truths.
        labels (Tensor[B, G]): class ids, ``-1`` marks padding.
        pos_threshold: IoU >= this makes an anchor positive.
        neg_threshold: max IoU <= this makes an anchor negative; in between it is ignored.
        force_match: also make each ground truth's best anchor positive, whatever its IoU (SSD), so that no
            object is left without a positive anchor. An anchor that is the best of several ground truths takes
            the one it overlaps most. Ground truths that overlap no anchor at all are skipped.

    Returns:
        matched_idx (Tensor[B, A] long): index of the assigned ground truth (the highest-IoU one; the forced one
        for forced anchors); meaningful where ``pos_mask``.
        pos_mask (Tensor[B, A] bool), neg_mask (Tensor[B, A] bool); neither is set in the ignore band.
    """
    b, g = labels.shape
    a = anchors.shape[0]
    if g == 0:  # no objects anywhere in the batch: every anchor is a negative
        zeros = torch.zeros(b, a, dtype=torch.long, device=anchors.device)
        return zeros, zeros.bool(), torch.ones(b, a, dtype=torch.bool, device=anchors.device)
    valid = labels >= 0  # [B, G]
    iou = box_iou(boxes, anchors).masked_fill_(~valid[:, :, None], -1.0)  # [B, G, A]; padding never wins
    max_iou = iou.amax(dim=1)  # [B, A]
    matched_idx = _first_argmax(iou, max_iou)  # [B, A]
    pos = max_iou >= pos_threshold
    neg = max_iou <= neg_threshold
    if force_match:
        best_iou, best_anchor = iou.max(dim=2)  # [B, G]: each ground truth's best anchor
        best_iou = best_iou.masked_fill(~valid | (best_iou <= 0), -1.0)
        # Per anchor, the highest best-IoU among the ground truths that chose it (-1: none); the ground truths
        # reaching it win, the highest index among exact ties (scatter_reduce keeps this deterministic).
        top = torch.full((b, a), -1.0, device=iou.device).scatter_reduce_(1, best_anchor, best_iou, "amax")
        wins = (best_iou > 0) & (best_iou == top.gather(1, best_anchor))  # [B, G]
        g_idx = torch.arange(g, device=iou.device).expand(b, g)
        forced_idx = torch.full((b, a), -1, dtype=torch.long, device=iou.device).scatter_reduce_(
            1, best_anchor, torch.where(wins, g_idx, -1), "amax")  # [B, A]
        is_forced = forced_idx >= 0
        matched_idx = torch.where(is_forced, forced_idx, matched_idx)
        pos |= is_forced
    neg &= ~pos
    return matched_idx, pos, neg


def match_anchors_to_targets(anchors: Tensor, target_boxes: Tensor, target_labels: Tensor, pos_threshold: float = 0.5,
                             neg_threshold: float = 0.3, force_match: bool = True
                             ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Match the anchors of one image to its ground truths (the single-image view of :func:`match_anchors_batched`).

    Args:
        anchors (Tensor[A, 4]): xyxy anchors.
        target_boxes (Tensor[G, 4]): xyxy ground-truth boxes (``G`` may be 0).
        target_labels (Tensor[G]): class ids ``0..C-1``.

    Returns:
        matched_labels (Tensor[A] long): 0 for background/ignored, ``class_id + 1`` for positives.
        matched_boxes (Tensor[A, 4]): the assigned ground-truth box (zeros where not positive).
        pos_mask (Tensor[A] bool), neg_mask (Tensor[A] bool): positive (IoU >= ``pos_threshold`` or forced),
        negative (max IoU <= ``neg_threshold``); anchors in between are in neither.
    """
    target_boxes = target_boxes.reshape(-1, 4).to(anchors)
    target_labels = target_labels.reshape(-1).long().to(anchors.device)
    idx, pos, neg = match_anchors_batched(anchors, target_boxes[None], target_labels[None], pos_threshold,
                                          neg_threshold, force_match)
    idx, pos, neg = idx[0], pos[0], neg[0]
    if len(target_labels) == 0:
        return (torch.zeros(len(anchors), dtype=torch.long, device=anchors.device), torch.zeros_like(anchors),
                pos, neg)
    matched_labels = torch.where(pos, target_labels[idx] + 1, 0)
    matched_boxes = torch.where(pos[:, None], target_boxes[idx], 0.0)
    return matched_labels, matched_boxes, pos, neg
