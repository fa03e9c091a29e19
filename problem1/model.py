"""MultiScaleDetector: a 4-block conv backbone with one single-shot head on each of its last three feature maps.

Output channel layout of every head (``A`` anchors, ``C`` classes, ``5 + C`` channels per anchor)::

    channel a*(5+C) + 0..3   box offsets (tx, ty, tw, th) of anchor a, see utils.encode_boxes
    channel a*(5+C) + 4      objectness logit of anchor a
    channel a*(5+C) + 5..    class logits of anchor a (C of them)

``utils.flatten_predictions`` turns the three outputs into ``[B, sum(H*W*A), 5+C]`` in anchor order
(scale, row, column, anchor), the order of ``utils.generate_anchors``.
"""
from __future__ import annotations

import math
from pathlib import Path

import torch
from torch import Tensor, nn

from common.runtime import memory_format
from common.training import load_weights
from problem1.config import Config

# Objectness bias prior (RetinaNet, Lin et al. 2017): start every anchor at p(object) = 0.01, the rough share of
# positive anchors, so the first steps are not swamped by the loss of ~12k confident "object" predictions.
OBJECTNESS_PRIOR = 0.01


def conv_bn_relu(c_in: int, c_out: int, stride: int) -> nn.Sequential:
    """3x3 conv (padding 1, no bias: BN has one) -> BatchNorm -> ReLU."""
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True))


class DetectionHead(nn.Module):
    """3x3 conv keeping the channels -> ReLU -> 1x1 conv to ``A * (5 + C)`` channels.

    ``dilation`` > 1 (not in the specification, see ``MultiScaleDetector``) spreads the 3x3 taps ``dilation``
    cells apart: same weights and FLOPs, a wider view.
    """

    def __init__(self, channels: int, num_anchors: int, num_classes: int, dilation: int = 1):
        super().__init__()
        self.num_anchors, self.num_classes = num_anchors, num_classes
        self.conv = nn.Conv2d(channels, channels, 3, 1, padding=dilation, dilation=dilation)
        self.relu = nn.ReLU(inplace=True)
        self.pred = nn.Conv2d(channels, num_anchors * (5 + num_classes), 1)
        nn.init.normal_(self.pred.weight, std=0.01)
        bias = torch.zeros(num_anchors, 5 + num_classes)
        bias[:, 4] = -math.log((1 - OBJECTNESS_PRIOR) / OBJECTNESS_PRIOR)  # sigmoid(bias) == prior
        with torch.no_grad():
            self.pred.bias.copy_(bias.flatten())

    def forward(self, x: Tensor) -> Tensor:
        return self.pred(self.relu(self.conv(x)))  # [B, A*(5+C), H, W]


class MultiScaleDetector(nn.Module):
    """The specified detector: 224 -> 112 (block 1) -> 56 (scale 1) -> 28 (scale 2) -> 14 (scale 3).

    Receptive field of one prediction (3x3 convs only, so a hard bound): 17 px at scale 1, 33 px at scale 2 and
    65 px at scale 3 (``receptive_fields``). Squares are 48-96 px and triangles 96-192 px, so an anchor inside a
    large object sees only flat colour and cannot tell how far its box is off; such anchors give confident,
    misplaced boxes (measured in docs/report/REPORT.md, "Why the false positives are false": most confident
    false-positive squares are right-sized boxes of real squares, centred off, from scale 2).
    ``head_dilation`` (default 1, the specification) dilates the head's 3x3 conv: with 3 the fields become 33 /
    65 / 129 px at no extra cost.
    """

    def __init__(self, num_classes: int = 3, num_anchors: int = 3, head_dilation: int = 1):
        super().__init__()
        self.num_classes, self.num_anchors, self.head_dilation = num_classes, num_anchors, head_dilation
        self.block1 = nn.Sequential(conv_bn_relu(3, 32, 1), conv_bn_relu(32, 64, 2))  # 224 -> 112
        self.block2 = conv_bn_relu(64, 128, 2)  # 56x56, scale 1
        self.block3 = conv_bn_relu(128, 256, 2)  # 28x28, scale 2
        self.block4 = conv_bn_relu(256, 512, 2)  # 14x14, scale 3
        self.heads = nn.ModuleList(DetectionHead(c, num_anchors, num_classes, head_dilation) for c in (128, 256, 512))

    def features(self, x: Tensor) -> list[Tensor]:
        """``x (Tensor[B, 3, 224, 224])`` -> the three feature maps ``[B, 128, 56, 56]``, ``[B, 256, 28, 28]``,
        ``[B, 512, 14, 14]``."""
        f1 = self.block2(self.block1(x))
        f2 = self.block3(f1)
        f3 = self.block4(f2)
        return [f1, f2, f3]

    def receptive_fields(self) -> list[int]:
        """Side in input pixels of the window that one prediction of each scale sees."""
        rf, jump, fields = 1, 1, []
        convs = [m for m in self.modules() if isinstance(m, nn.Conv2d) and m.kernel_size == (3, 3)]
        backbone, heads = convs[:5], convs[5:]
        for i, conv in enumerate(backbone):
            rf, jump = rf + (conv.kernel_size[0] - 1) * conv.dilation[0] * jump, jump * conv.stride[0]
            if i >= 2:  # blocks 2, 3, 4: one feature scale each
                head = heads[i - 2]
                fields.append(rf + (head.kernel_size[0] - 1) * head.dilation[0] * jump)
        return fields

    def forward(self, x: Tensor) -> list[Tensor]:
        """``x (Tensor[B, 3, 224, 224])`` in [0, 1] -> list of 3 ``Tensor[B, A*(5+C), H, W]`` (layout: module doc)."""
        return [head(f) for head, f in zip(self.heads, self.features(x), strict=True)]


def build_model(cfg: Config, state_dict: dict | None = None, path: str | Path = "") -> MultiScaleDetector:
    """The configured detector (weights from ``state_dict``, read from ``path``, if given) in the configured memory
    format; a checkpoint that does not fit is a one-line error naming ``path``."""
    model = MultiScaleDetector(cfg.num_classes, cfg.num_anchors, cfg.head_dilation)
    if state_dict is not None:
        load_weights(model, state_dict, path)
    return model.to(memory_format=memory_format(cfg.channels_last))
