"""HeatmapNet and RegressionNet: one shared encoder, two heads.

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
"""
from __future__ import annotations

import math

import torch
from torch import nn

ENCODER_CHANNELS = (32, 64, 128, 256)  # conv1..conv4; spatial 64, 32, 16, 8 for a 128 input
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


class RegressionNet(nn.Module):
    """Direct regression: ``Tensor[B, 1, 128, 128] -> Tensor[B, 2K]`` unit coordinates (x0, y0, x1, ...)."""

    def __init__(self, num_keypoints: int = 5):
        super().__init__()
        self.num_keypoints = num_keypoints
        self.encoder = Encoder()
        self.head = nn.Sequential(
            nn.AdaptiveAvgPool2d(1), nn.Flatten(1),  # [B, 256]
            nn.Linear(ENCODER_CHANNELS[-1], 128), nn.ReLU(inplace=True), nn.Dropout(0.5),
            nn.Linear(128, 64), nn.ReLU(inplace=True), nn.Dropout(0.5),
            nn.Linear(64, 2 * num_keypoints), nn.Sigmoid(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(x)[-1])


def build_model(method: str, num_keypoints: int = 5, heatmap_size: int = 64, skip: bool = True) -> nn.Module:
    """The model of ``method`` ('heatmap' or 'regression'); heatmap_size and skip only matter for heatmaps."""
    if method == "heatmap":
        return HeatmapNet(num_keypoints, heatmap_size, skip)
    if method == "regression":
        return RegressionNet(num_keypoints)
    raise ValueError(f"unknown method {method!r}")
