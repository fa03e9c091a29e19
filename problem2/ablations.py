"""The problem-2 ablation families and the runs they need, named as the study names them: ``baseline.py`` runs
them with one seed, ``study.py`` with several (its registry takes every problem-2 ablation from :func:`plan`).

A run is named once, by its place: each method at the plan's defaults is ``p2-<method>`` (the specified
``p2-heatmap`` and ``p2-regression``, ``p2-integral``, ``p2-simcc``); any other run by the first family that varies
it (``p2-sigma1``, ``p2-res32``, ``p2-noskip``, ``p2-regression-flatten-dropout0``, ``p2-regression-long``). The
other families' names of a shared run (``p2-sigma2`` is ``p2-heatmap``) are aliases, accepted wherever the study
takes a name.
"""
from __future__ import annotations

from dataclasses import dataclass

from common.config import cfg_field
from problem2.config import HEATMAP_FAMILIES, REGRESSION_HEADS, STUDY_FAMILIES, Config

FAMILIES = (*HEATMAP_FAMILIES, *STUDY_FAMILIES)


@dataclass
class AblationConfig(Config):
    model: str = cfg_field("heatmap", "every run sets its own model", cli=False)
    ablations: list[str] = cfg_field(list(HEATMAP_FAMILIES), "which ablations to run: the heatmap ablations "
                                     "(sigma, resolution, skip: the default) and the study beyond the specification "
                                     "(regression-head, regression-long, methods)", choices=list(FAMILIES))
    sigmas: list[float] = cfg_field([1.0, 2.0, 3.0, 4.0], "sigma values of the sigma ablation (heatmap pixels)",
                                    gt=0)
    resolutions: list[int] = cfg_field([32, 64, 128], "heatmap sizes of the resolution ablation",
                                       choices=[16, 32, 64, 128])
    regression_heads: list[str] = cfg_field(list(REGRESSION_HEADS), "RegressionNet heads of the regression-head "
                                            "grid", choices=list(REGRESSION_HEADS))
    dropouts: list[float] = cfg_field([0.5, 0.0], "dropout values of the regression-head grid", min=0, lt=1)
    long_factor: int = cfg_field(3, "regression-long trains the regression model LONG_FACTOR x --epochs epochs",
                                 min=1)
    run_figures: bool = cfg_field(True, "each run's own figures when it is evaluated (--no-run-figures: its numbers "
                                  "only, sooner; ablation.png and methods_pck_curves.png are drawn either way)")


def family_key(family: str, v: dict) -> str:
    """The name of run ``v`` (the config fields it sets) in ``family``."""
    if family == "sigma":
        return f"p2-sigma{v['sigma']:g}"
    if family == "resolution":
        return f"p2-res{v['heatmap_size']}"
    if family == "skip":
        return "p2-skip" if v["skip"] else "p2-noskip"
    if family == "regression-head":
        return f"p2-regression-{v['regression_head']}-dropout{v['dropout']:g}"
    if family == "regression-long":
        return "p2-regression-long"
    return f"p2-{v['model']}"


def plan(cfg: AblationConfig) -> tuple[dict[str, list[str]], dict[str, dict], dict[str, str]]:
    """``(families: {family: [run keys]}, runs: {run key: the Config fields it sets, model and epochs included},
    aliases: {every name of a run: its key})`` for the families ``cfg.ablations``; a run shared by several families
    (the default heatmap is in sigma, resolution, skip and methods) is one run under one key."""
    e = cfg.epochs
    heat = lambda s, r, k: {"model": "heatmap", "sigma": float(s), "heatmap_size": r, "skip": k, "epochs": e}  # noqa: E731
    reg = lambda h, d, ep: {"model": "regression", "regression_head": h, "dropout": float(d), "epochs": ep}  # noqa: E731
    methods = [heat(cfg.sigma, cfg.heatmap_size, cfg.skip), reg(cfg.regression_head, cfg.dropout, e),
               {"model": "integral", "integral_loss": cfg.integral_loss,
                "integral_divergence": float(cfg.integral_divergence), "sigma": float(cfg.sigma),
                "heatmap_size": cfg.heatmap_size, "skip": cfg.skip, "epochs": e},
               {"model": "simcc", "simcc_split_ratio": float(cfg.simcc_split_ratio),
                "simcc_sigma": float(cfg.simcc_sigma), "heatmap_size": cfg.heatmap_size, "skip": cfg.skip,
                "epochs": e}]
    variants = {
        "sigma": [heat(s, cfg.heatmap_size, cfg.skip) for s in cfg.sigmas],
        "resolution": [heat(cfg.sigma, r, cfg.skip) for r in cfg.resolutions],
        "skip": [heat(cfg.sigma, cfg.heatmap_size, s) for s in (True, False)],
        "regression-head": [reg(h, d, e) for h in cfg.regression_heads for d in cfg.dropouts],
        "regression-long": [reg(cfg.regression_head, cfg.dropout, cfg.long_factor * e)],
        "methods": methods,
    }
    keys = {repr(sorted(v.items())): family_key("methods", v) for v in methods}  # each method at the defaults
    for family in FAMILIES:
        for v in variants[family]:
            keys.setdefault(repr(sorted(v.items())), family_key(family, v))
    families, runs, aliases = {}, {}, {}
    for family in FAMILIES:
        for v in variants[family]:
            key = keys[repr(sorted(v.items()))]
            aliases.setdefault(family_key(family, v), key)
            if family in cfg.ablations:
                runs.setdefault(key, v)
                families.setdefault(family, [])
                if key not in families[family]:
                    families[family].append(key)
    return families, runs, aliases
