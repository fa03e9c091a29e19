"""The configuration of problem 2: defaults equal the specification, CLI flags are generated from it."""
from __future__ import annotations

from dataclasses import dataclass

from common.config import cfg_field
from common.runtime import AMP_HELP

METHODS = ("heatmap", "regression")  # a method is a model (model.py) plus a codec (codec.py)
DECODERS = ("dark", "taylor", "quarter", "argmax")  # how a heatmap codec finds a peak: problem2.heatmaps

PROBLEM = "problem2"  # tag stored in checkpoints, so the other problem's checkpoints are refused


@dataclass
class Config:
    data_dir: str = cfg_field("./datasets", "datasets root (with keypoints/) or the keypoints folder itself; "
                                          "the reference data is generated there if the folder is missing or empty")
    results_dir: str = cfg_field("results/problem2", "where models, logs and snapshots are written")
    limit_train: int = cfg_field(0, "use only the first N training images (0: all); for quick checks", min=0)
    limit_val: int = cfg_field(0, "use only the first N validation images (0: all); for quick checks", min=0)
    model: str = cfg_field("both", "which model(s) to train", choices=[*METHODS, "both"])
    epochs: int = cfg_field(30, "epochs per model", min=1)
    batch_size: int = cfg_field(32, "training batch size", min=1)
    lr: float = cfg_field(1e-3, "Adam learning rate", gt=0)
    seed: int = cfg_field(641, "seed of initialisation, data order and dropout (both models get the same)")
    device: str = cfg_field("auto", "auto (cuda > mps > cpu), cpu, cuda, cuda:N or mps")
    sigma: float = cfg_field(2.0, "heatmap Gaussian sigma in heatmap pixels", gt=0)
    heatmap_size: int = cfg_field(64, "heatmap resolution (the decoder gets one upsampling stage per doubling)",
                                  choices=[16, 32, 64, 128])
    skip: bool = cfg_field(True, "HeatmapNet skip connections (concatenate conv3/conv2 features)")
    canonical_hands: bool = cfg_field(False, "derived labelling for the ambiguity test: the hand with the "
                                             "smaller x is left_hand (train and validation)")
    decoder: str = cfg_field("dark", "heatmap decoder for validation PCK", choices=list(DECODERS))
    hand_pairs: bool = cfg_field(True, "decode the two hand heatmaps jointly, one prediction per hand "
                                       "(their labels are ambiguous); --no-hand-pairs decodes every map alone")
    amp: bool | None = cfg_field(None, AMP_HELP)
    channels_last: bool = cfg_field(True, "channels-last memory format (NHWC) for the models: measured faster on CPU "
                                    "(README, Performance)")
    compile: bool = cfg_field(False, "torch.compile the models for training (compiles at start-up; see README, "
                              "Performance)")
