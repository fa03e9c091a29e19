"""The training criterion of each method, returning named losses (``{'loss': total, ...terms}``).

* heatmap and regression (the specification): mean squared error. Heatmap: over every pixel of the
  ``[B, K, hs, hs]`` maps against the Gaussian targets; regression: over the ``[B, 2K]`` unit coordinates (so 1e-4
  is an RMS error of 1.28 px). The value depends on sigma and resolution (most heatmap pixels are zero), so it is
  only comparable within one configuration; ablations are compared by validation PCK instead.
* integral: a coordinate term on the soft-argmax of each map, L1 (Sun et al. 2018) or Euclidean (DSNT), in unit
  coordinates (fractions of the image side, as regression), plus ``divergence`` x the Jensen-Shannon divergence
  between the map's softmax and the normalised Gaussian target (DSNT's regulariser, Nibali et al. 2018).
* simcc: the KL divergence from the Gaussian-smoothed label distribution to the softmax of each axis's bin logits
  (Li et al. 2022), summed over bins, averaged over images, keypoints and the two axes.
"""
from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import nn

from problem2.heatmaps import soft_argmax


class KeypointMSELoss(nn.Module):
    """``forward(outputs, targets) -> {'loss': scalar}``; outputs are upcast to float32 (bf16 autocast)."""

    def forward(self, outputs: torch.Tensor, targets: torch.Tensor) -> dict[str, torch.Tensor]:
        if outputs.shape != targets.shape:
            raise ValueError(f"outputs {list(outputs.shape)} and targets {list(targets.shape)} differ in shape")
        return {"loss": F.mse_loss(outputs.float(), targets)}


def js_divergence(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """Jensen-Shannon divergence in nats (0 .. ln 2) of distributions ``p, q (Tensor[B, K, h, w])``, each summing to
    1 per map -> ``Tensor[B, K]``. Zeros in either are fine (``0 log 0 = 0``)."""
    m = 0.5 * (p + q)
    kl = lambda a: (torch.xlogy(a, a) - torch.xlogy(a, m)).sum(dim=(-2, -1))  # noqa: E731  KL(a || m)
    return 0.5 * (kl(p) + kl(q))


class IntegralLoss(nn.Module):
    """``forward(outputs Tensor[B, K, h, w] map logits, targets {'uv', 'heatmaps'} of IntegralCodec)
    -> {'loss', 'coord', 'divergence'}``; ``loss = coord + divergence_weight * divergence``.

    ``coord``: the mean over images and keypoints of ``|dx| + |dy|`` (``'l1'``) or ``sqrt(dx^2 + dy^2)``
    (``'euclidean'``) between the soft-argmax and the target, in unit coordinates (1 image pixel = 1/128).
    ``divergence``: the mean Jensen-Shannon divergence to the target map; logged even at weight 0.
    """

    def __init__(self, coord: str = "l1", divergence_weight: float = 1.0):
        super().__init__()
        if coord not in ("l1", "euclidean"):
            raise ValueError(f"integral coordinate loss must be l1 or euclidean (got {coord!r})")
        self.coord, self.divergence_weight = coord, divergence_weight

    def forward(self, outputs: torch.Tensor, targets: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        h, w = outputs.shape[-2:]
        uv, p = soft_argmax(outputs)  # [B, K, 2] heatmap pixels, [B, K, h, w]
        # A heatmap-pixel difference over the map size is a unit-coordinate difference (the offsets cancel).
        d = (uv - targets["uv"]) / torch.tensor([w, h], dtype=uv.dtype, device=uv.device)
        coord = d.abs().sum(dim=-1).mean() if self.coord == "l1" else d.norm(dim=-1).mean()
        divergence = js_divergence(p, targets["heatmaps"]).mean()
        loss = coord + self.divergence_weight * divergence if self.divergence_weight else coord
        return {"loss": loss, "coord": coord, "divergence": divergence}


class SimCCLoss(nn.Module):
    """``forward(outputs Tensor[B, K, 2, L] logits, targets Tensor[B, K, 2, L] label distributions) -> {'loss'}``:
    ``KL(labels || softmax(logits))`` per keypoint and axis, averaged."""

    def forward(self, outputs: torch.Tensor, targets: torch.Tensor) -> dict[str, torch.Tensor]:
        if outputs.shape != targets.shape:
            raise ValueError(f"outputs {list(outputs.shape)} and targets {list(targets.shape)} differ in shape")
        log_q = outputs.float().log_softmax(dim=-1)
        kl = (torch.xlogy(targets, targets) - targets * log_q).sum(dim=-1)  # [B, K, 2]
        return {"loss": kl.mean()}
