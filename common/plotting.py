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
    drawing dozens of them would otherwise grow without bound (and warn after 20). The saved area grows to hold
    legends placed outside the axes (``bbox_inches='tight'``), so none is cut off."""
    kwargs.setdefault("bbox_inches", "tight")
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
                         figsize: tuple[float, float] = (12, 5.2), dpi: int = 120, legend_fontsize: float = 7,
                         loss_legend_cols: int = 1, selected: Mapping[str, tuple[int, str | None]] | None = None,
                         title: str = "") -> Path:
    """The ``training_curves`` figure of both problems: loss per epoch (left) and a validation metric (right).

    Args:
        losses: per series label ``(epochs, train_loss, val_loss, color)``; train solid, validation dashed in the
            same colour, so each series reads as one pair.
        metrics: per curve label ``(epochs, values, plot_kwargs)``.
        selected: per label ``(epoch, color)``: the checkpoint the evaluation scores (lowest validation loss),
            marked by a dotted vertical line in both panels.
    """
    plt = pyplot()
    from matplotlib.ticker import MaxNLocator

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=figsize)
    values, epochs_seen = [], set()
    # a few epochs (a smoke run): markers, since a line through one or two points does not show
    few = max((len(e) for e, *_ in losses.values()), default=0) <= 3
    mark = {"marker": "o", "ms": 4} if few else {}
    for label, (epochs, train, val, color) in losses.items():
        ax1.plot(epochs, train, color=color, label=f"train {label}", **mark)
        ax1.plot(epochs, val, color=color, ls="--", label=f"val {label}", **mark)
        epochs_seen.update(epochs)
        values += [v for v in (*train, *val) if v is not None and v > 0]
    # Log scale only where the losses span more than a decade; inside one, a log axis shows one or two tick labels.
    log = bool(values) and max(values) / min(values) > 10
    ax1.set(xlabel="epoch", ylabel=loss_ylabel, title="Loss by epoch (solid train, dashed validation)",
            yscale="log" if log else "linear")
    for label, (epochs, vals, kwargs) in metrics.items():
        ax2.plot(epochs, vals, label=label, **{**mark, **kwargs})
    ax2.set(xlabel="epoch", ylabel=metric_ylabel, ylim=metric_ylim, title=metric_title)
    for label, (epoch, color) in (selected or {}).items():
        for ax in (ax1, ax2):
            ax.axvline(epoch, color=color or "0.3", ls=":", lw=1.2,
                       label=f"selected: epoch {epoch}" + (f" ({label})" if len(selected) > 1 else "")
                       if ax is ax2 else None)
    for ax in (ax1, ax2):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # epochs are whole numbers; no "2.5" ticks
        if epochs_seen:  # half an epoch either side of the data; a smoke run's few epochs are its ticks
            ax.set_xlim(min(epochs_seen) - 0.5, max(epochs_seen) + 0.5)
            if few:
                ax.set_xticks(sorted(epochs_seen))
        ax.grid(alpha=0.25)
        # below the panel: curves fill the corners of both axes, so no inside position is free everywhere
        ax.legend(fontsize=legend_fontsize, loc="upper center", bbox_to_anchor=(0.5, -0.14), frameon=False,
                  ncol=max(loss_legend_cols, 2) if ax is ax1 else 3)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return save_figure(fig, path, dpi=dpi)
