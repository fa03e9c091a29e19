"""The study's problem-1 figures, drawn from ``study.json`` (and, for the receptive field, one validation image):
the overview of every experiment's AP per class over its seeds, and what one prediction of each scale sees."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

from common.plotting import framed, pyplot, save_figure
from problem1.config import ANCHOR_SCALES, CLASS_NAMES

# Window colours apart from the shapes' own fills (red circles, green squares, blue triangles) on a dimmed image.
WINDOW_COLORS = ("#ff00ff", "#ff8c00", "#000000")
EXPERIMENT_COLORS = ("#1f77b4", "#d62728", "#7f7f7f", "#2ca02c", "#9467bd")
P1_METRICS = ("map50", *(f"ap50_{c}" for c in CLASS_NAMES))


def _p1_keys(study: dict) -> list[str]:
    return [k for k, e in study["experiments"].items() if e["problem"] == "problem1" and e["n"]]


def plot_p1_overview(study: dict, path: Path) -> Path | None:
    """AP@0.5 per class and mAP@0.5 for every problem-1 experiment: each seed a dot, the mean a bar-free marker
    with its +-1 std whisker, on an axis that starts near the lowest value so the seed spread shows."""
    keys = _p1_keys(study)
    if not keys:
        return None
    plt = pyplot()
    labels = {h["key"]: h["label"] for h in study["headline"]["problem1"]}
    fig, ax = plt.subplots(figsize=(9, 4.6))
    width = 0.8 / len(keys)
    lows = []
    for i, k in enumerate(keys):
        color = EXPERIMENT_COLORS[i % len(EXPERIMENT_COLORS)]
        for j, m in enumerate(P1_METRICS):
            x = j + (i - (len(keys) - 1) / 2) * width
            seeds = [r["metrics"].get(m) for r in study["runs"] if r["experiment"] == k]
            seeds = [v for v in seeds if v is not None]
            stat = study["experiments"][k]["metrics"][m]
            ax.scatter([x] * len(seeds), seeds, s=14, color=color, alpha=0.55, zorder=2)
            ax.errorbar([x], [stat["mean"]], yerr=[stat["std"] or 0.0], fmt="_", markersize=16, mew=2.5,
                        color=color, capsize=4, zorder=3,
                        label=f"{k} (n={stat['n']})" if j == 0 else None)
            lows += seeds
    ax.set_xticks(range(len(P1_METRICS)), [labels[m] for m in P1_METRICS])
    lo = max(0.0, np.floor((min(lows) - 0.05) * 20) / 20)
    ax.set(ylim=(lo, 1.0), ylabel="validation AP@0.5 (best-validation-loss checkpoint)",
           title="Problem 1: AP@0.5 per class, every experiment (dots: seeds; bar: mean ± 1 std)")
    ax.grid(axis="y", alpha=0.3)
    for j in range(1, len(P1_METRICS)):
        ax.axvline(j - 0.5, color="0.85", lw=0.8)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, title="experiment", borderaxespad=0)
    fig.tight_layout()
    return save_figure(fig, path)


def typical_square(data_dir: Path) -> tuple[Path, list[float]] | None:
    """The fully visible validation square of median size: ``(image path, xyxy box)``."""
    ann = data_dir / "detection" / "val_annotations.json"
    if not ann.is_file():
        return None
    doc = json.loads(ann.read_text())
    square = CLASS_NAMES.index("square")
    cands = [a for a in doc["annotations"] if a["category_id"] == square and a.get("visibility", 1.0) >= 1.0]
    if not cands:
        return None
    cands.sort(key=lambda a: (a["bbox"][2] - a["bbox"][0], a["id"]))
    a = cands[len(cands) // 2]
    name = next(im["file_name"] for im in doc["images"] if im["id"] == a["image_id"])
    return data_dir / "detection" / "val" / name, [float(v) for v in a["bbox"]]


def plot_receptive_field(study: dict, data_dir: Path, path: Path,
                         keys: tuple[str, str] = ("p1-spec", "p1-dilation3")) -> Path | None:
    """What one prediction of each scale sees: the receptive field of the cell at a typical square's centre, per
    scale, for the specification and ``--head-dilation 3`` side by side (windows from the models' definitions, as
    the runs recorded them)."""
    runs = {k: next((r for r in study["runs"] if r["experiment"] == k and r.get("details")), None) for k in keys}
    found = typical_square(data_dir)
    if found is None or not all(runs.values()):
        return None
    image_path, (x1, y1, x2, y2) = found
    # dimmed towards white, so the windows stand out from the shapes
    image = (0.45 * np.asarray(Image.open(image_path).convert("RGB")) + 0.55 * 255).astype(np.uint8)
    cx, cy, side = (x1 + x2) / 2, (y1 + y2) / 2, x2 - x1
    plt = pyplot()
    fig, axes = plt.subplots(1, len(keys), figsize=(5.4 * len(keys), 6.4))
    for ax, k in zip(axes, keys, strict=True):
        rf = runs[k]["details"]["receptive_fields"]
        ax.imshow(image)
        framed(ax)
        ax.add_patch(plt.Rectangle((x1, y1), side, y2 - y1, facecolor="#00c000", alpha=0.35, edgecolor="none",
                                   label=f"the square ({side:.0f} px)"))
        for s, size in enumerate(rf):
            ax.add_patch(plt.Rectangle((cx - size / 2, cy - size / 2), size, size, fill=False,
                                       color=WINDOW_COLORS[s], lw=2.0, ls=("-", "--", "-.")[s],
                                       label=f"scale {s + 1} (anchors {'/'.join(str(a) for a in ANCHOR_SCALES[s])}): "
                                       f"{size} px window, " + ("larger than" if size > side else "inside")
                                       + " the square"))
        ax.set(xlim=(0, image.shape[1]), ylim=(image.shape[0], 0))
        title = study["experiments"][k]["title"].replace("`", "")
        ax.set_title(f"{k}: {title}", fontsize=9)
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.02), fontsize=8, ncol=1, frameon=False)
    fig.suptitle(f"What one prediction sees: the receptive field at the centre of a typical validation square "
                 f"({image_path.name}, 224x224 px)", fontsize=10)
    fig.tight_layout()
    return save_figure(fig, path)
