"""The study's own figures, written into ``RESULTS/figures/``: samples of the data, the two overview figures, the
receptive field, the per-experiment figure of problem 2, and multi-panel figures that put the same figure of several
runs side by side (so the report shows one figure where it would show one per experiment)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

from common.plotting import framed, image_grid, pyplot, save_figure
from experiments.figures_problem1 import plot_p1_overview, plot_receptive_field
from experiments.figures_problem2 import plot_p2_experiments, plot_p2_overview
from experiments.findings import best_regression
from experiments.report_common import first_run
from problem1.config import CLASS_NAMES

FIGURES_DIR = "figures"  # RESULTS/figures/
CLASS_COLORS = {"circle": "#8c0000", "square": "#005c00", "triangle": "#00008c"}  # darker than the shapes' fills
SAMPLES = 8
# The runs' own figures that the report shows as one multi-panel figure: name -> (experiments, file in each
# seed-641 run folder, panel layout rows x cols per run, caption).
PANELS = {
    "p1_pr_curves": (("p1-spec", "p1-dilation3", "p1-cosine"), "visualizations/pr_curves.png", "row",
                     "Precision-recall per class at IoU 0.5"),
    "p1_detections": (("p1-spec", "p1-dilation3"), "visualizations/detections.png", "column",
                      "Validation detections"),
    "p1_training_curves": (("p1-spec", "p1-dilation3", "p1-cosine"), "visualizations/training_curves.png",
                           "column", "Loss and validation AP by epoch"),
    "p2_training_curves": (("p2-heatmap", "p2-regression", "p2-integral", "p2-simcc"), "figures/training_curves.png",
                           "column", "Loss and validation PCK by epoch"),
}
# The runs' own figures that the report links one by one: experiment (or pair) -> files in its seed-641 folder.
LINKED = {"p1-spec": ("visualizations/scale_specialisation.png", "visualizations/feature_maps.png"),
          "p2-heatmap": ("figures/predicted_heatmaps.png", "figures/heatmaps_during_training.png"),
          "p2-pair": ("figures/failure_cases.png", "figures/sample_predictions.png", "figures/pck_curves.png")}
FIGURES = {name: f"{FIGURES_DIR}/{name}.png" for name in ("data_detection", "data_keypoints", "p1_overview",
                                                          "p1_receptive_field", "p2_overview", "p2_experiments",
                                                          *PANELS)}


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


def compose(images: list[tuple[Path, str]], path: Path, layout: str, title: str) -> Path | None:
    """The PNGs ``images`` (path, panel title) in one figure, side by side (``layout='row'``) or one above the other
    (``'column'``), each at its own pixel size (no resampling), under ``title``."""
    images = [(p, t) for p, t in images if p.is_file()]
    if not images:
        return None
    arrays = [np.asarray(Image.open(p).convert("RGB")) for p, _ in images]
    dpi, title_px = 100, 40
    if layout == "row":
        w, h = sum(a.shape[1] for a in arrays), max(a.shape[0] for a in arrays) + title_px
    else:
        w, h = max(a.shape[1] for a in arrays), sum(a.shape[0] + title_px for a in arrays)
    plt = pyplot()
    fig = plt.figure(figsize=(w / dpi, (h + title_px) / dpi), dpi=dpi)
    x = y = 0
    for a, (_, t) in zip(arrays, images, strict=True):
        ah, aw = a.shape[:2]
        top = y + title_px
        ax = fig.add_axes((x / w, 1 - (top + ah) / (h + title_px) - title_px / (h + title_px), aw / w,
                           ah / (h + title_px)))
        ax.imshow(a)
        ax.axis("off")
        ax.set_title(t, fontsize=11, fontweight="bold", loc="left")
        if layout == "row":
            x += aw
        else:
            y += ah + title_px
    fig.suptitle(title, fontsize=13, y=1 - 8 / (h + title_px), va="top")
    return save_figure(fig, path, dpi=dpi, bbox_inches=None)  # the exact canvas: every panel at its own pixels


def panel_sources(study: dict, name: str | None = None) -> list[tuple[str, str]]:
    """The runs' own figures that the multi-panel figure ``name`` (every one: ``None``) is drawn from, as
    ``(path relative to the results folder, panel title)``. An export keeps them beside the report, so that a study
    continued from it (``--continue-from``) can draw the same panels again."""
    out = []
    for key, (keys, rel, _, _) in PANELS.items():
        if name in (None, key):
            out += [(f"{r['dir']}/{rel}", f"{r['experiment']} (seed {r['seed']})")
                    for k in keys if (r := first_run(study, k)) is not None]
    return out


def report_run_figures() -> dict[str, tuple[str, ...]]:
    """Experiment (or pair) -> the file names of its own figures that the report shows, from its seed-641 run:
    what such a run draws with ``study.py --run-figures report``."""
    shown: dict[str, set[str]] = {}
    for keys, rel, _, _ in PANELS.values():
        for key in keys:
            shown.setdefault(key, set()).add(Path(rel).name)
    for key, rels in LINKED.items():
        shown.setdefault(key, set()).update(Path(rel).name for rel in rels)
    return {key: tuple(sorted(names)) for key, names in shown.items()}


def write_figures(study: dict, results_dir: Path, data_dir: Path) -> list[str]:
    """Every study figure (:data:`FIGURES`, under ``results_dir``) that its data allows; returns the names drawn."""
    best = best_regression(study)
    draws = {"data_detection": lambda p: plot_detection_samples(data_dir, p),
             "data_keypoints": lambda p: plot_keypoint_samples(data_dir, p),
             "p1_overview": lambda p: plot_p1_overview(study, p),
             "p1_receptive_field": lambda p: plot_receptive_field(study, data_dir, p),
             "p2_overview": lambda p: plot_p2_overview(study, best, p),
             "p2_experiments": lambda p: plot_p2_experiments(study, p)}
    for name, (_, _, layout, title) in PANELS.items():
        panels = [(results_dir / rel, caption) for rel, caption in panel_sources(study, name)]
        draws[name] = lambda p, panels=panels, layout=layout, title=title: compose(panels, p, layout, title)
    made = []
    for name, draw in draws.items():
        if draw(results_dir / FIGURES[name]) is not None:
            made.append(name)
    return made

