"""The study's problem-2 figures, drawn from ``study.json``: PCK against threshold of every method over its seeds
(the overview), and every experiment's PCK at a strict and a loose threshold, grouped by what it varies."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from common.plotting import pyplot, save_figure
from problem2.figures import COLORS
from problem2.metrics import THRESHOLDS

OVERVIEW_XMAX = 0.25
GROUPS = (  # (title, experiment-key test, colour): the rows of the per-experiment figure, in this order
    ("specified pair", lambda k: k in ("p2-heatmap", "p2-regression"), "#444444"),
    ("other methods", lambda k: k in ("p2-integral", "p2-simcc"), "#ff7f0e"),
    ("heatmap ablations", lambda k: k.startswith(("p2-sigma", "p2-res", "p2-noskip", "p2-skip")), "#d62728"),
    ("regression variants", lambda k: k.startswith("p2-regression-"), "#1f77b4"),
    ("canonical hand labels (other labels: no ceiling)", lambda k: k.startswith("p2-canonical-hands"), "#2ca02c"),
)


def _curve(run: dict) -> tuple[list[float], list[float]]:
    """A run's PCK curve: the dense one it recorded, or its PCK at the report's thresholds."""
    c = (run.get("details") or {}).get("pck_curve")
    if c:
        return c["thresholds"], c["pck"]
    return list(THRESHOLDS), [run["metrics"][f"pck@{t:g}"] for t in THRESHOLDS]


def plot_p2_overview(study: dict, best_regression: str | None, path: Path) -> Path | None:
    """PCK against threshold for every method (and the best regression variant): the mean over seeds as a line,
    the seeds' range as a band, and the hand-ambiguity ceiling. Experiments whose runs all recorded a dense curve are
    drawn densely; the others at the four thresholds every run records (markers)."""
    keys = [k for k in ("p2-heatmap", "p2-integral", "p2-simcc", best_regression, "p2-regression")
            if k and k in study["experiments"] and study["experiments"][k]["n"]]
    if not keys:
        return None
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(9.5, 5))
    colors = {"p2-heatmap": COLORS["heatmap"], "p2-regression": COLORS["regression"], "p2-integral":
              COLORS["integral"], "p2-simcc": COLORS["simcc"]}
    sparse = False
    for k in keys:
        curves = [_curve(r) for r in study["runs"] if r["experiment"] == k]
        grids = {tuple(c[0]) for c in curves}
        if len(grids) > 1:  # seeds recorded at different resolutions: use the thresholds all of them have
            curves = [(list(THRESHOLDS), [r["metrics"][f"pck@{t:g}"] for t in THRESHOLDS])
                      for r in study["runs"] if r["experiment"] == k]
        x = np.asarray(curves[0][0])
        ys = np.asarray([c[1] for c in curves], dtype=float)  # [seeds, thresholds]
        keep = x <= OVERVIEW_XMAX + 1e-9
        dense = keep.sum() > len(THRESHOLDS)
        sparse |= not dense
        color = colors.get(k, "#17becf")
        n = len(curves)
        ax.plot(x[keep], ys.mean(0)[keep], color=color, lw=2, marker=None if dense else "o",
                label=f"{k} (n={n})")
        if n > 1:
            ax.fill_between(x[keep], ys.min(0)[keep], ys.max(0)[keep], color=color, alpha=0.18, lw=0)
    c = study.get("ceiling")
    if c:
        if c.get("curve"):
            cx = np.asarray(c["curve"]["thresholds"])
            keep = cx <= OVERVIEW_XMAX + 1e-9
            ax.plot(cx[keep], np.asarray(c["curve"]["pck"])[keep], color="black", ls="--", lw=1.3,
                    label="hand-ambiguity ceiling")
        else:
            ax.plot(list(THRESHOLDS), [c["pck"][f"{t:g}"] for t in THRESHOLDS], color="black", ls="--", marker="s",
                    ms=4, lw=1.3, label="hand-ambiguity ceiling")
    for t in THRESHOLDS:
        ax.axvline(t, color="0.88", lw=0.8, zorder=0)
    ax.set(xlim=(0, OVERVIEW_XMAX), ylim=(0, 1.01), xlabel="PCK threshold (fraction of the keypoint box diagonal)",
           ylabel="validation PCK",
           title="Problem 2: PCK against threshold, every method (line: mean over seeds; band: the seeds' range)")
    ax.title.set_fontsize(10)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, borderaxespad=0,
              title="experiment (seeds)", title_fontsize=8)
    if sparse:  # say why some curves are four points joined, not a curve
        ax.text(0.99, 0.02, "markers: the four thresholds every run of that experiment recorded",
                transform=ax.transAxes, ha="right", va="bottom", fontsize=7, color="0.35")
    fig.tight_layout()
    return save_figure(fig, path)


def _group(key: str) -> int | None:
    return next((i for i, (_, test, _) in enumerate(GROUPS) if test(key)), None)


def plot_p2_experiments(study: dict, path: Path, metrics: tuple[str, ...] = ("pck@0.05", "pck@0.2")) -> Path | None:
    """Every problem-2 experiment at a strict and a loose threshold, one panel each: rows grouped (and coloured) by
    what they vary; each seed a dot, the mean a tick with +-1 std, its value printed in the right margin; the
    hand-ambiguity ceiling drawn only across the rows scored on the original labels."""
    keys = [k for k, e in study["experiments"].items() if e["problem"] == "problem2" and e["n"]
            and _group(k) is not None]
    if not keys:
        return None
    keys.sort(key=lambda k: (_group(k), list(study["experiments"]).index(k)))
    y, pos, last = [], 0.0, None
    for k in keys:  # a gap between groups
        g = _group(k)
        pos += 1.0 if last is None or g == last else 1.8
        y.append(pos)
        last = g
    plt = pyplot()
    fig, axes = plt.subplots(1, len(metrics), figsize=(6.2 * len(metrics), 0.36 * pos + 1.8), sharey=True)
    labels = {h["key"]: h["label"] for h in study["headline"]["problem2"]}
    ceiling = (study.get("ceiling") or {}).get("pck", {})
    for ax, m in zip(np.atleast_1d(axes), metrics, strict=True):
        for yi, k in zip(y, keys, strict=True):
            color = GROUPS[_group(k)][2]
            stat = study["experiments"][k]["metrics"][m]
            seeds = [r["metrics"].get(m) for r in study["runs"] if r["experiment"] == k]
            ax.scatter([v for v in seeds if v is not None], [yi] * sum(v is not None for v in seeds), s=12,
                       color=color, alpha=0.5, zorder=2)
            ax.errorbar([stat["mean"]], [yi], xerr=[stat["std"] or 0.0], fmt="|", markersize=12, mew=2.5,
                        color=color, capsize=3, zorder=3)
            # in the margin right of the axes, so a value never sits on a seed dot
            ax.annotate(f"{stat['mean']:.3f}", (1.0, yi), xycoords=("axes fraction", "data"), xytext=(4, 0),
                        textcoords="offset points", va="center", fontsize=7, color=color)
        t = m.removeprefix("pck@")
        original = [yi for yi, k in zip(y, keys, strict=True) if not k.startswith("p2-canonical-hands")]
        if t in ceiling and original:
            ax.vlines(ceiling[t], min(original) - 0.5, max(original) + 0.5, color="black", ls="--", lw=1,
                      label=f"hand-ambiguity ceiling ({ceiling[t]:.3f})")
            ax.legend(loc="lower left", fontsize=7, framealpha=0.9)
        ax.set(xlim=(0, 1.0), xlabel=f"validation {labels[m]}", title=labels[m])
        ax.grid(axis="x", alpha=0.3)
    ax0 = np.atleast_1d(axes)[0]
    ax0.set_yticks(y, [k.removeprefix("p2-") for k in keys], fontsize=8)
    for tick, k in zip(ax0.get_yticklabels(), keys, strict=True):
        tick.set_color(GROUPS[_group(k)][2])
    ax0.invert_yaxis()
    handles = [plt.Line2D([], [], color=c, marker="|", ls="", mew=2.5, markersize=10, label=t) for t, _, c in GROUPS]
    fig.legend(handles=handles, loc="lower center", ncol=len(GROUPS), fontsize=7, frameon=False)
    fig.suptitle("Problem 2: every experiment at a strict and a loose threshold (dots: seeds; tick: mean ± 1 std; "
                 "best-validation-loss epoch)", fontsize=10)
    fig.tight_layout(rect=(0, 0.05, 1, 0.97))
    return save_figure(fig, path)
