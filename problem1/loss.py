"""DetectionLoss: objectness BCE with hard negatives, class cross-entropy and Smooth L1 on box offsets.

The whole batch is matched at once (one ``[B, G, A]`` IoU tensor, targets padded to the batch's largest object
count). Negatives are ranked without gradients; only the anchors that enter a loss term (positives and hard
negatives, a few thousand of the B*12348) are gathered from the head outputs, so neither the forward nor the
backward pass touches a full ``[B, A, 5+C]`` copy.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from problem1.config import Config
from problem1.utils import (
    VARIANCES,
    encode_boxes,
    flatten_field,
    gather_predictions,
    match_anchors_batched,
    pad_targets,
)


def hard_negative_mining(loss: Tensor, pos_mask: Tensor, neg_mask: Tensor, ratio: int = 3,
                         min_negatives: int = 3) -> Tensor:
    """Pick, per image, the negatives with the highest loss: ``ratio`` per positive, at least ``min_negatives``.

    Args:
        loss (Tensor[B, A]): per-anchor objectness loss (no gradient needed).
        pos_mask (Tensor[B, A] bool): positive anchors.
        neg_mask (Tensor[B, A] bool): candidate negatives (ignored anchors are in neither mask).
        ratio: negatives per positive.
        min_negatives: negatives an image contributes even without any positive, so that images without objects
            still teach the detector that background is background.

    Returns:
        Tensor[B, A] bool: the selected negatives (a subset of ``neg_mask``).
    """
    num_neg = (pos_mask.sum(dim=1) * ratio).clamp(min=min_negatives)  # [B]
    num_neg = torch.minimum(num_neg, neg_mask.sum(dim=1))
    cand = loss.detach().masked_fill(~neg_mask, float("-inf"))  # [B, A]
    return _top_per_row(cand, num_neg, full_sort=cand.is_cuda)


def _top_per_row(values: Tensor, counts: Tensor, full_sort: bool) -> Tensor:
    """``Tensor[B, A]`` bool marking the ``counts[b]`` largest ``values[b]`` of each row.

    ``topk`` needs one ``k`` for the batch, read back to the host (free on CPU, where it is ~10x faster than a
    sort); on a GPU a full sort avoids that sync on every step. Both give the same selection.
    """
    if full_sort:
        order = values.argsort(dim=1, descending=True)
        rank = torch.empty_like(order).scatter_(1, order, torch.arange(values.shape[1], device=values.device)
                                               .expand_as(order))
        return rank < counts[:, None]
    selected = torch.zeros(values.shape, dtype=torch.bool, device=values.device)
    k = int(counts.max()) if counts.numel() else 0
    if k == 0:
        return selected
    top = values.topk(k, dim=1).indices  # [B, k], largest first
    keep = torch.arange(k, device=values.device)[None, :] < counts[:, None]  # [B, k]
    return selected.scatter_(1, top, keep)


class DetectionLoss(nn.Module):
    """``forward(predictions, targets, anchors) -> {loss_obj, loss_cls, loss_loc, loss_total}``.

    * objectness: BCE over positives plus hard negatives (``neg_pos_ratio`` per positive, per image);
    * classification: cross-entropy over the ``C`` classes, positives only;
    * localisation: Smooth L1 (beta 1) on the encoded offsets (``utils.encode_boxes``), positives only;
    * ``loss_total = 1.0 * obj + 1.0 * cls + 2.0 * loc``; every term is a sum divided by the number of
      positives in the batch (at least 1).
    """

    def __init__(self, num_classes: int = 3, num_anchors: int = 3, pos_threshold: float = 0.5,
                 neg_threshold: float = 0.3, force_match: bool = True, neg_pos_ratio: int = 3, min_negatives: int = 3,
                 weights: tuple[float, float, float] = (1.0, 1.0, 2.0), variances: Sequence[float] = VARIANCES):
        super().__init__()
        self.num_classes, self.num_anchors = num_classes, num_anchors
        self.pos_threshold, self.neg_threshold, self.force_match = pos_threshold, neg_threshold, force_match
        self.neg_pos_ratio, self.min_negatives = neg_pos_ratio, min_negatives
        self.weights, self.variances = weights, tuple(variances)

    def forward(self, predictions: Sequence[Tensor] | Tensor, targets: Sequence[dict] | tuple[Tensor, Tensor],
                anchors: Sequence[Tensor] | Tensor) -> dict[str, Tensor]:
        """
        Args:
            predictions: the model's list of ``Tensor[B, A*(5+C), H, W]``, or already ``Tensor[B, A_total, 5+C]``
                (``utils.flatten_predictions``).
            targets: a list of per-image dicts with ``boxes [G, 4]`` xyxy and ``labels [G]`` (the collate output),
                or the padded pair ``(boxes [B, G, 4], labels [B, G] with -1 padding)``.
            anchors: ``generate_anchors`` output (list per scale) or their concatenation ``Tensor[A_total, 4]``.
        """
        flat = isinstance(predictions, Tensor)
        device = predictions.device if flat else predictions[0].device
        anchors = (anchors if isinstance(anchors, Tensor) else torch.cat(list(anchors))).to(device)
        if isinstance(targets, tuple) and len(targets) == 2 and isinstance(targets[0], Tensor):
            boxes, labels = targets
        else:
            boxes, labels = pad_targets(targets, device)
        matched_idx, pos, neg = match_anchors_batched(anchors, boxes, labels, self.pos_threshold,
                                                      self.neg_threshold, self.force_match)  # [B, A] each
        num_pos = pos.sum().clamp(min=1).float()

        # Rank negatives by their objectness loss without building a graph over all B*A anchors; only the anchors
        # that enter a loss term (positives + hard negatives) are gathered with gradients.
        with torch.no_grad():
            obj_logits = predictions[..., 4] if flat else flatten_field(predictions, self.num_anchors, 4)  # [B, A]
            neg_loss = F.binary_cross_entropy_with_logits(obj_logits.float(), torch.zeros_like(obj_logits.float()),
                                                          reduction="none")
        hard_neg = hard_negative_mining(neg_loss, pos, neg, self.neg_pos_ratio, self.min_negatives)
        a_idx, b_idx = (pos | hard_neg).T.nonzero(as_tuple=True)  # [S] each, scale-major order
        rows = (predictions[b_idx, a_idx] if flat
                else gather_predictions(predictions, b_idx, a_idx, self.num_anchors)).float()  # [S, 5+C]
        is_pos = pos[b_idx, a_idx]  # [S]
        loss_obj = F.binary_cross_entropy_with_logits(rows[:, 4], is_pos.float(), reduction="sum") / num_pos

        rows, b_idx, a_idx = rows[is_pos], b_idx[is_pos], a_idx[is_pos]  # [P, ...]: positives only
        gt_idx = matched_idx[b_idx, a_idx]
        loss_cls = F.cross_entropy(rows[:, 5:], labels[b_idx, gt_idx], reduction="sum") / num_pos
        offsets = encode_boxes(boxes[b_idx, gt_idx], anchors[a_idx], self.variances)  # [P, 4]
        loss_loc = F.smooth_l1_loss(rows[:, :4], offsets, reduction="sum", beta=1.0) / num_pos

        w_obj, w_cls, w_loc = self.weights
        total = w_obj * loss_obj + w_cls * loss_cls + w_loc * loss_loc
        return {"loss_obj": loss_obj, "loss_cls": loss_cls, "loss_loc": loss_loc, "loss_total": total}


def build_criterion(cfg: Config) -> DetectionLoss:
    """The configured criterion (matching thresholds, forced match, hard-negative counts)."""
    return DetectionLoss(cfg.num_classes, cfg.num_anchors, cfg.pos_threshold, cfg.neg_threshold, cfg.force_match,
                         cfg.neg_pos_ratio, cfg.min_negatives)
