"""Problem 2's methods in one table: each is a model (``model.py``), a codec (``codec.py``: targets in, coordinates
out) and a criterion (``loss.py``), with how a run of it is named. Every place that builds or names a method looks it
up here, so a new method is one entry.

``config`` is a problem-2 ``Config`` or the config dict a checkpoint holds (keys it predates take their defaults,
the specification: ``config.as_config``).
"""
from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from torch import nn

from problem2.codec import (
    IMAGE_SIZE,
    Codec,
    HeatmapCodec,
    IntegralCodec,
    RegressionCodec,
    SimCCCodec,
    hand_indices,
    simcc_bins,
)
from problem2.config import Config, as_config
from problem2.loss import IntegralLoss, KeypointMSELoss, SimCCLoss
from problem2.model import HeatmapNet, RegressionNet, SimCCNet


@dataclass(frozen=True)
class Method:
    name: str
    model: Callable[[Config, int], nn.Module]  # (config, number of keypoints)
    codec: Callable[[Config, Sequence[str]], Codec]  # (config, keypoint names)
    criterion: Callable[[Config], nn.Module]
    label: Callable[[Mapping[str, Any]], str]  # a run's settings that make it a variant, in a few words
    settings: Callable[[Mapping[str, Any]], str]  # every setting that shapes the method, for a summary


def _heatmap_codec(c: Config, names: Sequence[str]) -> Codec:
    # The hands are decoded jointly unless --no-hand-pairs or the canonical labelling (which makes their labels a
    # function of the image) is in effect; checkpoints from before hand_pairs existed decoded them jointly.
    hands = hand_indices(names)
    joint = c.hand_pairs and hands is not None and not c.canonical_hands
    return HeatmapCodec(IMAGE_SIZE, c.heatmap_size, c.sigma, c.decoder, (hands,) if joint else ())


def _size(r: Mapping) -> str:
    return f"{r['heatmap_size']}x{r['heatmap_size']}"


METHODS: dict[str, Method] = {m.name: m for m in (
    Method("heatmap",
           model=lambda c, k: HeatmapNet(k, c.heatmap_size, c.skip),
           codec=_heatmap_codec,
           criterion=lambda c: KeypointMSELoss(),  # MSE, as specified, whatever the codec encodes
           label=lambda r: f"heatmap, sigma {r['sigma']:g}, {_size(r)}" + ("" if r["skip"] else ", no skip"),
           settings=lambda r: f", sigma {r['sigma']}, {_size(r)}, skip {r['skip']}, decoder {r['decoder']}, hands "
                              f"{'jointly' if r.get('hand_pairs', True) else 'each map alone'}"),
    Method("regression",
           model=lambda c, k: RegressionNet(k, c.regression_head, c.dropout),
           codec=lambda c, names: RegressionCodec(IMAGE_SIZE),
           criterion=lambda c: KeypointMSELoss(),
           label=lambda r: f"regression, {r['regression_head']} head, dropout {r['dropout']:g}",
           settings=lambda r: f", {r.get('regression_head', 'gap')} head, dropout {r.get('dropout', 0.5):g}"),
    Method("integral",
           model=lambda c, k: HeatmapNet(k, c.heatmap_size, c.skip),
           codec=lambda c, names: IntegralCodec(IMAGE_SIZE, c.heatmap_size, c.sigma),
           criterion=lambda c: IntegralLoss(c.integral_loss, c.integral_divergence),
           label=lambda r: f"integral, {r['integral_loss']} + {r['integral_divergence']:g} x JS",
           settings=lambda r: f", soft-argmax of {_size(r)} maps, {r['integral_loss']} + "
                              f"{r['integral_divergence']:g} x JS divergence to sigma {r['sigma']:g}"),
    Method("simcc",
           model=lambda c, k: SimCCNet(k, c.heatmap_size, c.skip, simcc_bins(c.simcc_split_ratio)),
           codec=lambda c, names: SimCCCodec(IMAGE_SIZE, c.simcc_split_ratio, c.simcc_sigma),
           criterion=lambda c: SimCCLoss(),
           label=lambda r: f"simcc, split {r['simcc_split_ratio']:g}, sigma {r['simcc_sigma']:g} px",
           settings=lambda r: f", {_size(r)} maps, {r['simcc_split_ratio']:g} bins per pixel, label sigma "
                              f"{r['simcc_sigma']:g} px"),
)}


def method(name: str) -> Method:
    if name not in METHODS:
        raise ValueError(f"unknown method {name!r}")
    return METHODS[name]


def build_model(name: str, num_keypoints: int = 5, config: Config | Mapping[str, Any] | None = None) -> nn.Module:
    """The model of method ``name`` with the settings of ``config`` (None: the specification's)."""
    return method(name).model(as_config(config if config is not None else {}), num_keypoints)


def build_codec(name: str, config: Config | Mapping[str, Any], keypoint_names: Sequence[str]) -> Codec:
    return method(name).codec(as_config(config), keypoint_names)


def build_criterion(name: str, config: Config | Mapping[str, Any] | None = None) -> nn.Module:
    return method(name).criterion(as_config(config if config is not None else {}))


def run_label(run: Mapping[str, Any]) -> str:
    """A short name of one run (an ``ablation.json`` entry or a config): its method and what makes it a variant."""
    return method(run.get("model", "heatmap")).label(run)  # runs written before the other methods were heatmaps


def method_settings(name: str, config: Mapping[str, Any]) -> str:
    """Every setting that shapes method ``name``, from a checkpoint's config (keys it predates: the defaults)."""
    return method(name).settings(config)
