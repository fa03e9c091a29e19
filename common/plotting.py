"""Matplotlib without a display, and the figure pieces both problems draw: every figure is drawn off-screen (Agg)."""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from common.io import atomic_savefig


def pyplot():
    """``matplotlib.pyplot`` on the Agg backend, imported only when a figure is drawn (keeps imports fast)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path: str | Path, dpi: int = 120, **kwargs) -> Path:
    """Write ``fig`` atomically and close it: pyplot keeps every open figure alive until it is closed, so a script
    drawing dozens of them would otherwise grow without bound (and warn after 20)."""
    try:
        return atomic_savefig(fig, path, dpi=dpi, **kwargs)
    finally:
        pyplot().close(fig)


def framed(ax: Any) -> None:
    """An image panel with a thin frame and no ticks. Unlike ``axis("off")`` the frame shows where an image with a
    white background (the detection data) ends and which panel a box or label belongs to."""
    ax.set_xticks([])
    ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_color("0.6")


def image_grid(n: int, max_cols: int, cell_inches: tuple[float, float]) -> tuple[Any, list[Any]]:
    """A figure with ``n`` image panels in rows of at most ``max_cols``.

    Returns:
        the figure and its first ``n`` axes in reading order; the unused panels of the last row are switched off.
    """
    cols = max(1, min(max_cols, n))
    rows = max(1, math.ceil(n / cols))
    fig, axes = pyplot().subplots(rows, cols, figsize=(cell_inches[0] * cols, cell_inches[1] * rows), squeeze=False)
    flat = list(axes.flat)
    for ax in flat[n:]:
        ax.axis("off")
    return fig, flat[:n]


def plot_training_curves(path: str | Path, losses: Mapping[str, tuple[Sequence, Sequence, Sequence, str | None]],
                         metrics: Mapping[str, tuple[Sequence, Sequence, dict]], *, loss_ylabel: str,
                         metric_ylabel: str, metric_title: str, metric_ylim: tuple[float, float] = (0, 1.01),
                         figsize: tuple[float, float] = (12, 4.5), dpi: int = 120, legend_fontsize: float = 7,
                         loss_legend_cols: int = 1) -> Path:
    """The ``training_curves`` figure of both problems: loss per epoch (left, log scale) and a validation metric.

    Args:
        losses: per series label ``(epochs, train_loss, val_loss, color)``; train solid, validation dashed in the
            same colour, so each series reads as one pair.
        metrics: per curve label ``(epochs, values, plot_kwargs)``.
    """
    plt = pyplot()
    from matplotlib.ticker import MaxNLocator

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=figsize)
    for label, (epochs, train, val, color) in losses.items():
        ax1.plot(epochs, train, color=color, label=f"train {label}")
        ax1.plot(epochs, val, color=color, ls="--", label=f"val {label}")
    ax1.set(xlabel="epoch", ylabel=loss_ylabel, title="Loss by epoch (solid train, dashed validation)", yscale="log")
    ax1.legend(fontsize=legend_fontsize, ncol=loss_legend_cols)
    for label, (epochs, values, kwargs) in metrics.items():
        ax2.plot(epochs, values, label=label, **kwargs)
    ax2.set(xlabel="epoch", ylabel=metric_ylabel, ylim=metric_ylim, title=metric_title)
    ax2.legend(fontsize=legend_fontsize)
    for ax in (ax1, ax2):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # epochs are whole numbers; no "2.5" ticks
    fig.tight_layout()
    return save_figure(fig, path, dpi=dpi)
