"""The one configuration of problem 1: defaults equal the specification; CLI flags are generated from it.

It is saved into every checkpoint and next to every result, so ``evaluate.py`` rebuilds the model and the
decoder from a checkpoint alone.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import ClassVar

from common.config import cfg_field
from common.runtime import amp_help
from common.training import LR_SCHEDULES

PROBLEM = "problem1"  # tag stored in checkpoints, so the other problem's checkpoints are refused

IMAGE_SIZE = 224
CLASS_NAMES = ("circle", "square", "triangle")  # index == category id in the JSON
FEATURE_MAP_SIZES = ((56, 56), (28, 28), (14, 14))  # outputs of blocks 2, 3, 4 for a 224x224 input
ANCHOR_SCALES = ((16, 24, 32), (48, 64, 96), (96, 128, 192))  # square anchors (side in pixels) per scale


@dataclasses.dataclass
class Config:
    # bf16 is problem 1's default on CPUs with native bf16: full runs at two seeds in both precisions differ by less
    # than the seeds do (bf16 validation in docs/performance.md). Not a field: a run records the precision it used
    # instead.
    CPU_BF16_DEFAULT: ClassVar[bool] = True

    # -- data and outputs
    data_dir: str = cfg_field("./datasets", "folder holding detection/ (the reference data is generated there if "
                              "the folder is missing or empty)")
    results_dir: str = cfg_field("results/problem1", "where checkpoints, logs and figures go")
    limit_train: int = cfg_field(0, "use only the first N training images (0: all); for quick checks", min=0)
    limit_val: int = cfg_field(0, "use only the first N validation images (0: all); for quick checks", min=0)
    # -- optimisation (specification: SGD lr 0.001 momentum 0.9, 50 epochs, batch 16)
    epochs: int = cfg_field(50, "number of training epochs", min=1)
    batch_size: int = cfg_field(16, "training batch size", min=1)
    lr: float = cfg_field(0.001, "SGD learning rate", gt=0)
    momentum: float = cfg_field(0.9, "SGD momentum", min=0)
    weight_decay: float = cfg_field(0.0, "SGD weight decay (not in the specification, so off)", min=0)
    lr_schedule: str = cfg_field("constant", "learning-rate schedule over the run, stepped every batch: constant "
                                 "(the specification) or cosine (half a cosine from --lr down to 0 at the last epoch)",
                                 choices=LR_SCHEDULES)
    warmup_epochs: int = cfg_field(0, "epochs of linear learning-rate warm-up before the schedule (0: none, the "
                                   "specification)", min=0)
    seed: int = cfg_field(641, "seed of model initialisation and shuffling")
    device: str = cfg_field("auto", "auto, cpu, cuda, cuda:N or mps")
    amp: bool | None = cfg_field(None, amp_help(CPU_BF16_DEFAULT))
    # -- model
    num_classes: int = cfg_field(3, "number of object classes", min=1, cli=False)
    num_anchors: int = cfg_field(3, "anchors per location and scale", min=1, cli=False)
    head_dilation: int = cfg_field(1, "dilation of each head's 3x3 conv; 1 is the specification, 3 widens what a "
                                   "prediction sees from 17/33/65 to 33/65/129 px (see model.py)", min=1)
    channels_last: bool = cfg_field(True, "channels-last memory format (NHWC) for the model: measured faster for "
                                    "this model on CPU (docs/performance.md)")
    compile: bool = cfg_field(False, "torch.compile the training model (compiles at start-up; see "
                              "docs/performance.md)")
    # -- anchor matching and loss
    pos_threshold: float = cfg_field(0.5, "IoU at or above which an anchor is positive", gt=0)
    neg_threshold: float = cfg_field(0.3, "max IoU at or below which an anchor is negative", min=0)
    force_match: bool = cfg_field(True, "also make each ground truth's best anchor positive (SSD convention)")
    neg_pos_ratio: int = cfg_field(3, "hard negatives per positive in the objectness loss", min=0)
    min_negatives: int = cfg_field(3, "hard negatives an image contributes even without positives", min=0)
    # -- decoding and evaluation
    eval_batch_size: int = cfg_field(32, "batch size for validation/evaluation inference", min=1)
    score_threshold: float = cfg_field(0.01, "minimum detection score kept before NMS (low, so AP sees the curve)",
                                       min=0)
    nms_iou: float = cfg_field(0.5, "IoU threshold of class-wise NMS", gt=0)
    pre_nms_topk: int = cfg_field(1000, "candidates (anchor, class) kept per image before NMS", min=1)
    max_detections: int = cfg_field(100, "detections kept per image after NMS (pycocotools uses 100)", min=1)


def detection_dir(data_dir: str | Path) -> Path:
    return Path(data_dir) / "detection"
