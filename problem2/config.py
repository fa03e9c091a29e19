"""The configuration of problem 2: defaults equal the specification, CLI flags are generated from it."""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from common.config import cfg_field, config_from_dict
from common.runtime import amp_help

# A method is a model (model.py) plus a codec (codec.py) plus a criterion (loss.py). The first two are the
# specification, what ``--model both`` trains; integral and simcc go beyond it (docs/reference.md,
# "Problem 2 beyond the specification").
SPECIFIED_METHODS = ("heatmap", "regression")
METHODS = (*SPECIFIED_METHODS, "integral", "simcc")
DECODERS = ("dark", "taylor", "quarter", "argmax")  # how a heatmap codec finds a peak: problem2.heatmaps
REGRESSION_HEADS = ("gap", "flatten", "coord")  # how RegressionNet reads the 8x8 encoder map: problem2.model
INTEGRAL_LOSSES = ("l1", "euclidean")  # the coordinate term of the integral criterion: problem2.loss
# baseline.py's families of runs: the heatmap ablations, and the study beyond the specification (report.py gives
# each kind its own section)
HEATMAP_FAMILIES = ("sigma", "resolution", "skip")
STUDY_FAMILIES = ("regression-head", "regression-long", "methods")

PROBLEM = "problem2"  # tag stored in checkpoints, so the other problem's checkpoints are refused


@dataclass
class Config:
    # bf16 stays opt-in (--amp) on CPUs: it scored lower than fp32 in all four validation runs (docs/performance.md,
    # bf16 validation). Not a field: a run records the precision it used instead.
    CPU_BF16_DEFAULT: ClassVar[bool] = False

    data_dir: str = cfg_field("./datasets", "datasets root (with keypoints/) or the keypoints folder itself; "
                                          "the reference data is generated there if the folder is missing or empty")
    results_dir: str = cfg_field("results/problem2", "where models, logs and snapshots are written")
    limit_train: int = cfg_field(0, "use only the first N training images (0: all); for quick checks", min=0)
    limit_val: int = cfg_field(0, "use only the first N validation images (0: all); for quick checks", min=0)
    model: str = cfg_field("both", "which model(s) to train; 'both' is the specified pair, heatmap and regression",
                           choices=[*METHODS, "both"])
    epochs: int = cfg_field(30, "epochs per model", min=1)
    batch_size: int = cfg_field(32, "training batch size", min=1)
    lr: float = cfg_field(1e-3, "Adam learning rate", gt=0)
    seed: int = cfg_field(641, "seed of initialisation, data order and dropout (every model gets the same)")
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
    regression_head: str = cfg_field("gap", "how RegressionNet reads the 8x8x256 encoder map: gap (the "
                                            "specification: global average pooling), flatten (all 8x8x256 values "
                                            "into the FC layers) or coord (x/y coordinate channels and a 1x1 conv "
                                            "before the pooling, CoordConv)", choices=list(REGRESSION_HEADS))
    dropout: float = cfg_field(0.5, "dropout after each hidden FC layer of RegressionNet", min=0, lt=1)
    integral_loss: str = cfg_field("l1", "integral method: coordinate term on the soft-argmax, l1 (Sun et al. "
                                         "2018) or euclidean (DSNT), in unit coordinates (1 px = 1/128)",
                                   choices=list(INTEGRAL_LOSSES))
    integral_divergence: float = cfg_field(1.0, "integral method: weight of the Jensen-Shannon divergence between "
                                                "the softmax map and the Gaussian target of --sigma (DSNT's "
                                                "regulariser); 0 trains on coordinates alone", min=0)
    simcc_split_ratio: float = cfg_field(2.0, "simcc method: bins per image pixel on each axis (2: half-pixel bins)",
                                         min=1)
    simcc_sigma: float = cfg_field(2.0, "simcc method: sigma of the Gaussian-smoothed 1-D labels in image pixels",
                                   gt=0)
    amp: bool | None = cfg_field(None, amp_help(CPU_BF16_DEFAULT))
    channels_last: bool = cfg_field(True, "channels-last memory format (NHWC) for the models: measured faster on CPU "
                                    "(docs/performance.md)")
    compile: bool = cfg_field(False, "torch.compile the models for training (compiles at start-up; see "
                              "docs/performance.md)")


def as_config(config: Config | Mapping[str, Any]) -> Config:
    """A ``Config`` from a ``Config`` or from the config dict a checkpoint holds: keys a checkpoint predates take
    their defaults, which are the specification (and what such a checkpoint was trained with)."""
    return config if isinstance(config, Config) else config_from_dict(Config, dict(config))


def trained_methods(model: str) -> list[str]:
    """The methods ``--model`` trains: ``'both'`` is the specified pair."""
    return list(SPECIFIED_METHODS) if model == "both" else [model]
