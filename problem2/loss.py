"""The training criterion of both methods: mean squared error, as specified.

* heatmap: MSE over every pixel of the ``[B, K, hs, hs]`` maps against the Gaussian targets;
* regression: MSE over the ``[B, 2K]`` unit coordinates (so 1e-4 is an RMS error of 1.28 px).

The value depends on sigma and resolution (most heatmap pixels are zero), so it is only comparable
within one configuration; ablations are compared by validation PCK instead.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class KeypointMSELoss(nn.Module):
    """``forward(outputs, targets) -> {'loss': scalar}``; outputs are upcast to float32 (bf16 autocast)."""

    def forward(self, outputs: torch.Tensor, targets: torch.Tensor) -> dict[str, torch.Tensor]:
        if outputs.shape != targets.shape:
            raise ValueError(f"outputs {list(outputs.shape)} and targets {list(targets.shape)} differ in shape")
        return {"loss": F.mse_loss(outputs.float(), targets)}


def build_criterion() -> KeypointMSELoss:
    """The criterion of both methods: MSE against whatever their codec encodes (heatmaps or unit coordinates)."""
    return KeypointMSELoss()
