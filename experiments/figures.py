"""The study's own figures: samples of the data, and each experiment's headline metric over its seeds."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

from common.plotting import framed, image_grid, pyplot, save_figure
from problem1.config import CLASS_NAMES

FIGURES_DIR = "figures"  # RESULTS/figures/
CLASS_COLORS = {"circle": "#8c0000", "square": "#005c00", "triangle": "#00008c"}  # darker than the shapes' fills
SAMPLES = 8
FIGURES = {name: f"{FIGURES_DIR}/{name}.png" for name in ("data_detection", "data_keypoints", "p1_map50", "p2_pck005")}


def _annotations(path: Path) -> dict:
    return json.loads(path.read_text())


def plot_detection_samples(data_dir: Path, path: Path, n: int = SAMPLES) -> Path | None:
    """The first ``n`` training images with their boxes and class names."""
    ann_path = data_dir / "detection" / "train_annotations.json"
    if not ann_path.is_file():
        return None
    doc = _annotations(ann_path)
    images = doc["images"][:n]
    boxes: dict[int, list] = {}
    for a in doc["annotations"]:
        boxes.setdefault(a["image_id"], []).append(a)
    plt = pyplot()
    fig, axes = image_grid(len(images), 4, (3.0, 3.2))
    for ax, im in zip(axes, images, strict=True):
        pixels = np.asarray(Image.open(data_dir / "detection" / "train" / im["file_name"]).convert("RGB"))
        ax.imshow(pixels)
        for a in boxes.get(im["id"], []):
            x1, y1, x2, y2 = a["bbox"]
            name = CLASS_NAMES[a["category_id"]]
            ax.add_patch(plt.Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, color=CLASS_COLORS[name], lw=1.5,
                                       ls="--"))
            ax.text(x1, y1 - 2, f"{name} (vis. {a.get('visibility', 1.0):.2f})", fontsize=6,
                    color=CLASS_COLORS[name], clip_on=True)
        ax.set(xlim=(0, pixels.shape[1]), ylim=(pixels.shape[0], 0))  # boxes past the border do not widen the panel
        ax.set_title(im["file_name"], fontsize=8)
        framed(ax)
    fig.suptitle("Detection data: training images with their boxes (dashed) and visibility; 224x224 px")
    fig.tight_layout(rect=(0, 0, 1, 0.95))
    return save_figure(fig, path)


def plot_keypoint_samples(data_dir: Path, path: Path, n: int = SAMPLES) -> Path | None:
    """The first ``n`` training images with their labelled keypoints."""
    ann_path = data_dir / "keypoints" / "train_annotations.json"
    if not ann_path.is_file():
        return None
    doc = _annotations(ann_path)
    names = doc.get("keypoint_names", [])
    images = doc["images"][:n]
    plt = pyplot()
    colors = plt.get_cmap("tab10").colors
    fig, axes = image_grid(len(images), 4, (2.6, 2.9))
    for ax, im in zip(axes, images, strict=True):
        ax.imshow(np.asarray(Image.open(data_dir / "keypoints" / "train" / im["file_name"]).convert("L")),
                  cmap="gray", vmin=0, vmax=255)
        for k, (x, y) in enumerate(im["keypoints"]):
            ax.scatter([x], [y], s=28, color=colors[k % len(colors)], label=names[k] if k < len(names) else str(k))
        ax.set_title(im["file_name"], fontsize=8)
        ax.axis("off")
    if axes:
        axes[0].legend(fontsize=6, loc="lower left", framealpha=0.7)
    fig.suptitle("Keypoint data: training images with their labelled keypoints; 128x128 px")
    fig.tight_layout(rect=(0, 0, 1, 0.93))
    return save_figure(fig, path)


def plot_experiment_metric(study: dict, problem: str, metric: str, path: Path) -> Path | None:
    """One bar per experiment of ``problem``: the mean of ``metric`` over seeds, the seed spread (+-1 std) and each
    seed's value as a dot."""
    keys = [k for k, e in study["experiments"].items() if e["problem"] == problem and e["metrics"][metric]["n"]]
    if not keys:
        return None
    label = next(h["label"] for h in study["headline"][problem] if h["key"] == metric)
    values = {k: [r["metrics"].get(metric) for r in study["runs"] if r["experiment"] == k] for k in keys}
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(8, 0.42 * len(keys) + 1.4))
    y = np.arange(len(keys))
    means = [study["experiments"][k]["metrics"][metric]["mean"] for k in keys]
    stds = [study["experiments"][k]["metrics"][metric]["std"] or 0.0 for k in keys]
    ax.barh(y, means, xerr=stds, color="#9ecae1", edgecolor="#3182bd", capsize=3, label="mean +- 1 std over seeds")
    for i, k in enumerate(keys):
        v = [x for x in values[k] if x is not None]
        ax.scatter(v, [i] * len(v), color="black", s=12, zorder=3, label="one seed" if i == 0 else None)
    ceiling = (study.get("ceiling") or {}).get("pck", {}).get(metric.removeprefix("pck@")) \
        if metric.startswith("pck@") else None
    if ceiling is not None:  # the bound every method shares: no labelling of the hands can be learnt beyond it
        ax.axvline(ceiling, color="black", ls="--", lw=1, label=f"hand-ambiguity ceiling ({ceiling:.3f})")
    for i, (m, s) in enumerate(zip(means, stds, strict=True)):  # the value itself, so no one reads it off the axis
        ax.text(m + s + 0.01, i, f"{m:.3f}", va="center", fontsize=8)
    ax.set_yticks(y, [f"{k} (n={study['experiments'][k]['metrics'][metric]['n']})" for k in keys], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlim(0, 1.08)  # both plotted metrics are fractions; the margin holds the value labels
    which = "problem 1" if problem == "problem1" else "problem 2"
    ax.set(xlabel=f"validation {label}", title=f"{label} per experiment ({which}; best-validation-loss epoch)")
    # outside the axes: bars start at 0 and reach across most of the plot, so any inside corner hides one
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    fig.tight_layout()
    return save_figure(fig, path)


def write_figures(study: dict, results_dir: Path, data_dir: Path) -> list[str]:
    """Every study figure (:data:`FIGURES`, under ``results_dir``) that its data allows; returns the names drawn."""
    made = []
    for name, draw in (("data_detection", lambda p: plot_detection_samples(data_dir, p)),
                       ("data_keypoints", lambda p: plot_keypoint_samples(data_dir, p)),
                       ("p1_map50", lambda p: plot_experiment_metric(study, "problem1", "map50", p)),
                       ("p2_pck005", lambda p: plot_experiment_metric(study, "problem2", "pck@0.05", p))):
        if draw(results_dir / FIGURES[name]) is not None:
            made.append(name)
    return made
