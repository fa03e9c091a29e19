"""HeatmapNet and RegressionNet (the specification), their variants, and SimCCNet: one shared encoder.

Encoder (both models), each block Conv 3x3 + BN + ReLU + MaxPool 2:
    conv1 1->32 (128->64), conv2 32->64 (->32), conv3 64->128 (->16), conv4 128->256 (->8).

HeatmapNet decoder, per stage ConvTranspose 4x4 / stride 2 / pad 1 + BN + ReLU (a 4x4 kernel overlaps
neighbouring outputs, so a 2x upsampling has no checkerboard), then a final 1x1 conv to K maps:

    heatmap_size 64 (default, the specification):
        up1 256->128 (8->16),  concat conv3 (128) -> 256
        up2 256->64  (16->32), concat conv2 (64)  -> 128
        up3 128->32  (32->64)
        final 32->K                                           -> [B, K, 64, 64]
    heatmap_size 32:  up1, up2 (with their concats), final 128->K    -> [B, K, 32, 32]
    heatmap_size 128: up1, up2, up3, then up4 32->32 (64->128), final 32->K -> [B, K, 128, 128]

So the resolution ablation changes the number of upsampling stages and the network really predicts at
that resolution; the stages and their skips are otherwise identical.

``skip=False`` drops the two concatenations and with them their channels: up2 takes 128 channels
instead of 256, up3 64 instead of 128 (and at heatmap_size 32 the final conv 64 instead of 128). Every
deconvolution keeps its output width, so only the skip features are removed.

RegressionNet (the specification, ``head='gap'``): global average pooling of conv4's 8x8x256 map, then
FC 256->128 + ReLU + Dropout, FC 128->64 + ReLU + Dropout, FC 64->2K + Sigmoid. The pooling makes the features
translation-invariant, while the figure moves by +-24 px between images; the variants that isolate that
(``--regression-head``, same FC layers and dropout):

    flatten: no pooling, the 8x8x256 = 16384 values feed FC 16384->128;
    coord:   CoordConv (Liu et al. 2018): x and y channels in [-1, 1] appended to the 8x8x256 map, then
             Conv 1x1 258->256 + BN + ReLU, then the pooling. The conv is what lets position survive the
             pooling: an average of coordinate channels alone is the same constant for every image.

The integral method is HeatmapNet itself (its K maps are read by a soft-argmax). SimCCNet is HeatmapNet with a
SimCC head: each keypoint's hs x hs map flattened and classified by two linear layers, shared by the keypoints,
into L bins per axis (Li et al. 2022), ``-> [B, K, 2, L]``.
"""
from __future__ import annotations

import math

import torch
from torch import nn

ENCODER_CHANNELS = (32, 64, 128, 256)  # conv1..conv4; spatial 64, 32, 16, 8 for a 128 input
ENCODER_MAP_SIZE = 8  # conv4's map for a 128 x 128 input (four 2x2 max-pools)
DECODER_CHANNELS = (128, 64, 32, 32)  # output widths of up1..up4
SKIP_FROM = {0: 2, 1: 1}  # decoder stage -> encoder block whose features it concatenates (conv3, conv2)


def conv_block(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out),
                         nn.ReLU(inplace=True), nn.MaxPool2d(2))


def up_block(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(nn.ConvTranspose2d(c_in, c_out, 4, stride=2, padding=1, bias=False), nn.BatchNorm2d(c_out),
                         nn.ReLU(inplace=True))


class Encoder(nn.Module):
    def __init__(self):
        super().__init__()
        widths = (1, *ENCODER_CHANNELS)
        self.blocks = nn.ModuleList(conv_block(a, b) for a, b in zip(widths[:-1], widths[1:], strict=True))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """``x (Tensor[B, 1, 128, 128])`` -> features of conv1..conv4: ``[B, 32, 64, 64] ... [B, 256, 8, 8]``."""
        feats = []
        for block in self.blocks:
            x = block(x)
            feats.append(x)
        return feats


class HeatmapNet(nn.Module):
    """U-Net-style heatmap regressor: ``Tensor[B, 1, 128, 128] -> Tensor[B, K, hs, hs]`` (raw, no activation)."""

    def __init__(self, num_keypoints: int = 5, heatmap_size: int = 64, skip: bool = True):
        super().__init__()
        stages = math.log2(heatmap_size / 8) if heatmap_size > 0 else -1
        if stages not in (1, 2, 3, 4):
            raise ValueError(f"heatmap_size must be 16, 32, 64 or 128 (got {heatmap_size})")
        self.num_keypoints, self.heatmap_size, self.skip = num_keypoints, heatmap_size, skip
        self.encoder = Encoder()
        self.skip_from = {s: b for s, b in SKIP_FROM.items() if skip and s < stages}
        ups, c = [], ENCODER_CHANNELS[-1]
        for s in range(int(stages)):
            ups.append(up_block(c, DECODER_CHANNELS[s]))
            c = DECODER_CHANNELS[s] + (ENCODER_CHANNELS[self.skip_from[s]] if s in self.skip_from else 0)
        self.ups = nn.ModuleList(ups)
        self.final = nn.Conv2d(c, num_keypoints, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feats = self.encoder(x)
        y = feats[-1]  # [B, 256, 8, 8]
        for s, up in enumerate(self.ups):
            y = up(y)  # [B, C_s, 2h, 2w]
            if s in self.skip_from:
                y = torch.cat([y, feats[self.skip_from[s]]], dim=1)
        return self.final(y)  # [B, K, hs, hs]


class CoordConv(nn.Module):
    """Append x and y coordinate channels in ``[-1, 1]``, then Conv 1x1 + BN + ReLU:
    ``Tensor[B, C, h, w] -> Tensor[B, C_out, h, w]``."""

    def __init__(self, c_in: int, c_out: int):
        super().__init__()
        self.conv = nn.Sequential(nn.Conv2d(c_in + 2, c_out, 1, bias=False), nn.BatchNorm2d(c_out),
                                  nn.ReLU(inplace=True))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, h, w = x.shape
        xs = torch.linspace(-1.0, 1.0, w, dtype=x.dtype, device=x.device).view(1, 1, 1, w).expand(b, 1, h, w)
        ys = torch.linspace(-1.0, 1.0, h, dtype=x.dtype, device=x.device).view(1, 1, h, 1).expand(b, 1, h, w)
        return self.conv(torch.cat([x, xs, ys], dim=1))  # [B, C + 2, h, w] -> [B, C_out, h, w]


class RegressionNet(nn.Module):
    """Direct regression: ``Tensor[B, 1, 128, 128] -> Tensor[B, 2K]`` unit coordinates (x0, y0, x1, ...).

    ``head``: ``'gap'`` (the specification), ``'flatten'`` or ``'coord'`` (see the module docstring); ``dropout``:
    after each hidden FC layer (0.5 in the specification). The specified model's parameter names are those of
    checkpoints written before the variants existed.
    """

    def __init__(self, num_keypoints: int = 5, head: str = "gap", dropout: float = 0.5):
        super().__init__()
        if head not in ("gap", "flatten", "coord"):
            raise ValueError(f"regression head must be gap, flatten or coord (got {head!r})")
        self.num_keypoints, self.head_kind = num_keypoints, head
        c = ENCODER_CHANNELS[-1]
        self.encoder = Encoder()
        self.coord = CoordConv(c, c) if head == "coord" else None
        # Identity in the pooling's place keeps the FC layers at the same indices (and parameter names) in every head.
        pool, width = (nn.Identity(), c * ENCODER_MAP_SIZE ** 2) if head == "flatten" else (nn.AdaptiveAvgPool2d(1), c)
        self.head = nn.Sequential(
            pool, nn.Flatten(1),  # [B, 256] pooled, or [B, 16384] flattened
            nn.Linear(width, 128), nn.ReLU(inplace=True), nn.Dropout(dropout),
            nn.Linear(128, 64), nn.ReLU(inplace=True), nn.Dropout(dropout),
            nn.Linear(64, 2 * num_keypoints), nn.Sigmoid(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.encoder(x)[-1]  # [B, 256, 8, 8]
        if self.coord is not None:
            f = self.coord(f)
        return self.head(f)


class SimCCNet(HeatmapNet):
    """HeatmapNet with a SimCC head: ``Tensor[B, 1, 128, 128] -> Tensor[B, K, 2, L]`` logits of the x bins
    (``[:, :, 0]``) and the y bins (``[:, :, 1]``)."""

    def __init__(self, num_keypoints: int = 5, heatmap_size: int = 64, skip: bool = True, bins: int = 256):
        super().__init__(num_keypoints, heatmap_size, skip)
        self.bins = bins
        self.to_x = nn.Linear(heatmap_size * heatmap_size, bins)
        self.to_y = nn.Linear(heatmap_size * heatmap_size, bins)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = super().forward(x).flatten(2)  # [B, K, hs, hs] -> [B, K, hs * hs]
        return torch.stack([self.to_x(f), self.to_y(f)], dim=2)  # [B, K, 2, L]
