"""Problem-1 figures: every PNG that ``evaluate.py`` writes into ``visualizations/``, one function each.

Each takes numbers the evaluation already computed (nothing is re-evaluated here) and saves through
``common.plotting.save_figure`` (atomic write, figure closed).
"""
from __future__ import annotations

import json
import sys
from collections.abc import Collection, Sequence
from pathlib import Path

import numpy as np
import torch

from common.plotting import framed, image_grid, plot_training_curves, pyplot, save_figure
from problem1.analysis import CONFUSION_SCORE
from problem1.config import CLASS_NAMES, IMAGE_SIZE
from problem1.dataset import ShapeDetectionDataset
from problem1.metrics import ClassCurve, match_detections
from problem1.model import MultiScaleDetector

SCALE_COLORS = ("tab:blue", "tab:orange", "tab:green")
LOSS_COLORS = {"loss_total": "k", "loss_obj": "tab:blue", "loss_cls": "tab:orange", "loss_loc": "tab:green"}


def detection_outcomes(pred: dict, target: dict, min_score: float = CONFUSION_SCORE) -> dict:
    """One image's detections scoring >= ``min_score``, split as the false-positive analysis splits them: COCO's
    greedy matching per class at IoU 0.5 (:func:`~problem1.metrics.match_detections`).

    Returns ``{'tp': [(box, label, score)], 'fp': [...], 'missed': [(box, label)]}``, boxes xyxy in pixels.
    """
    boxes, scores, labels = pred["boxes"].float().numpy(), pred["scores"].float().numpy(), pred["labels"].numpy()
    gt_boxes, gt_labels = target["boxes"].float().numpy(), target["labels"].numpy()
    out: dict[str, list] = {"tp": [], "fp": [], "missed": []}
    for c in range(len(CLASS_NAMES)):
        keep = (labels == c) & (scores >= min_score)
        gts = gt_boxes[gt_labels == c]
        m = match_detections(boxes[keep].astype(np.float64), scores[keep].astype(np.float64),
                             gts.astype(np.float64), np.zeros(len(gts), bool))
        kept = np.flatnonzero(keep)
        for d, g in zip(m.det_index, m.matched_gt, strict=True):
            out["tp" if g >= 0 else "fp"].append((boxes[kept[d]], c, float(scores[kept[d]])))
        found = set(m.matched_gt[m.matched_gt >= 0].tolist())
        out["missed"] += [(gts[g], c) for g in range(len(gts)) if g not in found]
    return out


# Three styles a reader tells apart at a glance, none of them the shapes' own colours (red, green, blue fills).
OUTCOME_STYLE = {"tp": {"color": "black", "ls": "-", "lw": 1.6},
                 "fp": {"color": "#ff00ff", "ls": "-", "lw": 1.3},
                 "missed": {"color": "#ff8c00", "ls": (0, (3, 2)), "lw": 2.0}}


def _label(ax, box, text: str, color: str) -> None:
    """One label at the box's top-left corner, moved inside the image where the box touches an edge."""
    x = min(max(box[0], 1.0), IMAGE_SIZE - 60)
    y = box[1] - 2 if box[1] > 12 else box[1] + 10
    ax.text(x, y, text, color=color, fontsize=6.5, clip_on=True,
            bbox={"facecolor": "white", "alpha": 0.75, "pad": 0.4, "lw": 0})


def plot_detections(dataset: ShapeDetectionDataset, predictions: Sequence[dict], path: Path, n: int = 10,
                    min_score: float = CONFUSION_SCORE) -> None:
    """The first ``n`` validation images with their outcomes at ``min_score`` (the false-positive analysis's
    threshold): true positives, false positives and missed objects in three styles, the counts in each title, and
    one label per detection (class and score), inside the image."""
    plt = pyplot()
    fig, axes = image_grid(min(n, len(dataset)), 5, (3.2, 3.5))
    for k, ax in enumerate(axes):
        framed(ax)
        ax.imshow(dataset.images[k].permute(1, 2, 0).cpu().numpy())
        outcome = detection_outcomes(predictions[k], dataset.targets[k], min_score)
        for kind in ("missed", "fp", "tp"):  # true positives drawn last: on top
            for item in outcome[kind]:
                box = item[0]
                ax.add_patch(plt.Rectangle(box[:2], box[2] - box[0], box[3] - box[1], fill=False,
                                           **OUTCOME_STYLE[kind]))
                if kind != "missed":
                    _label(ax, box, f"{CLASS_NAMES[item[1]]} {item[2]:.2f}", OUTCOME_STYLE[kind]["color"])
        ax.set(xlim=(0, IMAGE_SIZE), ylim=(IMAGE_SIZE, 0))
        ax.set_title(f"{dataset.file_names[k]}: {len(outcome['tp'])} TP, {len(outcome['fp'])} FP, "
                     f"{len(outcome['missed'])} missed", fontsize=8)
    handles = [plt.Line2D([], [], **OUTCOME_STYLE[k], label=t) for k, t in
               (("tp", "true positive"), ("fp", "false positive"), ("missed", "missed object"))]
    fig.legend(handles=handles, loc="lower center", ncol=3, fontsize=9, frameon=False)
    fig.suptitle(f"Validation detections with score >= {min_score:g} (IoU 0.5 matching, as the false-positive "
                 "analysis); 224x224 px")
    fig.tight_layout(rect=(0, 0.04, 1, 0.95))
    save_figure(fig, path)


def plot_pr_curves(curves: Sequence[ClassCurve], path: Path) -> None:
    """Interpolated precision against recall per class at IoU 0.5, each labelled with its AP."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 5))
    for name, cur in zip(CLASS_NAMES, curves, strict=True):
        if cur.num_gt and len(cur.recall):
            ax.plot(cur.recall, np.maximum.accumulate(cur.precision[::-1])[::-1], label=f"{name} (AP {cur.ap:.3f})")
        else:  # a class without a curve says why in the legend, instead of looking like a drawing error
            ax.plot([], [], " ", label=f"{name}: " + ("no objects" if not cur.num_gt else "no detections (AP 0)"))
    ax.set(xlabel="recall", ylabel="precision (interpolated)", xlim=(0, 1.01), ylim=(0, 1.02),
           title="Precision-recall per class, IoU 0.5")
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="lower left")
    fig.tight_layout()
    save_figure(fig, path)


def plot_anchor_coverage(cov: dict, path: Path) -> None:
    """Best anchor IoU of every ground truth by object size, and the share with a positive anchor per scale."""
    plt = pyplot()
    best, sizes, labels = cov["_best_iou"], cov["_larger_side"], cov["_labels"]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 5.4))
    for s, sc in enumerate(cov["scales"]):
        ax1.scatter(sizes, best[:, s], s=8, alpha=0.5, color=SCALE_COLORS[s],
                    label=f"scale {s + 1} (stride {sc['stride']:g}, anchors {sc['anchor_sizes']})")
    ax1.axhline(cov["pos_threshold"], color="k", ls="--", lw=1, label="positive threshold")
    ax1.set(xlabel="object size, larger side (px)", ylabel="best IoU with this scale's anchors",
            title="Best anchor IoU per validation object", ylim=(0, 1))
    # below the axes: the points fill every corner of this panel
    ax1.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=2, frameon=False)
    width = 0.25
    x = np.arange(len(CLASS_NAMES))
    for s, sc in enumerate(cov["scales"]):
        vals = [sc["by_class"][n]["share_with_positive_anchor"] or 0 for n in CLASS_NAMES]
        ax2.bar(x + (s - 1) * width, vals, width, color=SCALE_COLORS[s], label=f"scale {s + 1}")
    ax2.set_xticks(x, [f"{n}\n(n={int((labels == c).sum())})" for c, n in enumerate(CLASS_NAMES)])
    # headroom above the bars, so the legend never hides a bar at 1.0
    ax2.set(ylabel=f"share of ground truths with an anchor IoU >= {cov['pos_threshold']}", ylim=(0, 1.2),
            yticks=np.linspace(0, 1, 6), title="Anchor coverage per scale")
    ax2.legend(loc="upper center", ncol=3)
    fig.tight_layout()
    fig.subplots_adjust(bottom=0.3)
    save_figure(fig, path)


def plot_scale_specialisation(spec: dict, path: Path) -> None:
    """Per class and object size, the share of true positives that each scale produced."""
    plt = pyplot()
    counts = spec["_counts"]  # [C, bins, S]
    rows = [(c, i) for c in range(counts.shape[0]) for i in range(counts.shape[1]) if counts[c, i].sum()]
    fig, ax = plt.subplots(figsize=(9, 0.5 * max(len(rows), 1) + 1.5))
    left = np.zeros(len(rows))
    for s in range(counts.shape[2]):
        share = np.array([counts[c, i, s] / counts[c, i].sum() for c, i in rows]) if rows else np.zeros(0)
        ax.barh(np.arange(len(rows)), share, left=left, color=SCALE_COLORS[s], label=f"scale {s + 1}")
        left += share
    rng = spec["_ranges"]  # the sizes that occur in each bin: "65-96 px", not the bin's "65-128"
    ax.set_yticks(np.arange(len(rows)),
                  [f"{CLASS_NAMES[c]}, {rng[c, i, 0]:.0f}-{rng[c, i, 1]:.0f} px (TP={counts[c, i].sum()})"
                   for c, i in rows])
    ax.invert_yaxis()
    ax.set(xlabel="share of true positives (IoU 0.5) produced by each scale", xlim=(0, 1),
           title="Scale specialisation: which head finds which objects (size: sqrt(w*h))")
    ax.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=8)  # outside: the bars fill the axes
    fig.tight_layout()
    save_figure(fig, path)


@torch.no_grad()
def plot_feature_maps(model: MultiScaleDetector, dataset: ShapeDetectionDataset, device: torch.device, path: Path,
                      n: int = 4) -> None:
    """The first ``n`` validation images and the channel-mean activation of each scale's feature map."""
    plt = pyplot()
    n = min(n, len(dataset))
    model.eval()
    images, _, _ = dataset.get_batch(torch.arange(n))
    feats = [f.float().mean(dim=1).cpu() for f in model.features(images.to(device))]  # 3 x [n, H, W]
    fig, axes = plt.subplots(n, 4, figsize=(12, 3 * n), squeeze=False)
    for k in range(n):
        framed(axes[k, 0])
        axes[k, 0].imshow(images[k].permute(1, 2, 0).cpu().numpy())
        axes[k, 0].set_title(dataset.file_names[k], fontsize=9)
        for s, f in enumerate(feats):
            im = axes[k, s + 1].imshow(f[k].numpy(), cmap="viridis")
            axes[k, s + 1].set_title(f"scale {s + 1}: mean activation {tuple(f.shape[1:])}", fontsize=9)
            fig.colorbar(im, ax=axes[k, s + 1], fraction=0.046)
        for ax in axes[k, 1:]:
            ax.axis("off")
    fig.suptitle("Mean feature activation (over channels) at each detection scale")
    fig.tight_layout(rect=(0, 0, 1, 0.97))
    save_figure(fig, path)


def plot_confusion(cm: np.ndarray, path: Path) -> None:
    """The ``[C+1, C+1]`` confusion matrix of ``metrics.confusion_matrix`` with its counts written in."""
    plt = pyplot()
    names = list(CLASS_NAMES)
    fig, ax = plt.subplots(figsize=(5.5, 4.8))
    ax.imshow(cm, cmap="Blues")
    for (i, j), v in np.ndenumerate(cm):
        ax.text(j, i, str(v), ha="center", va="center", color="white" if v > cm.max() / 2 else "black")
    ax.set_xticks(range(len(names) + 1), names + ["(missed)"])
    ax.set_yticks(range(len(names) + 1), names + ["(background)"])
    ax.set(xlabel="predicted class", ylabel="true class",
           title=f"Confusion matrix (score >= {CONFUSION_SCORE}, IoU >= 0.5)")
    fig.tight_layout()
    save_figure(fig, path)


def plot_loss_and_ap(log: list[dict], path: Path) -> None:
    """``training_curves.png``: loss by term (train and validation) and validation AP per epoch."""
    epochs = [r["epoch"] for r in log]
    losses = {key: (epochs, [r["train"][key] for r in log], [r["val"][key] for r in log], color)
              for key, color in LOSS_COLORS.items()}
    aps = {"mAP": (epochs, [r["val"]["mAP"] for r in log], {"color": "k"}),
           **{name: (epochs, [r["val"]["ap_per_class"][name] for r in log], {}) for name in CLASS_NAMES}}
    best = min(log, key=lambda r: r["val"]["loss_total"])["epoch"]  # the checkpoint evaluate.py scores
    plot_training_curves(path, losses, aps, loss_ylabel="loss (per positive anchor)", metric_ylabel="validation AP@0.5",
                         metric_title="Validation AP", metric_ylim=(0, 1), loss_legend_cols=4,
                         selected={"best validation loss": (best, "0.3")},
                         title="Problem 1 training: loss and validation AP per epoch")


def write_figures(out_dir: Path, model: MultiScaleDetector, dataset: ShapeDetectionDataset, device: torch.device,
                  predictions: Sequence[dict], curves: Sequence[ClassCurve], coverage: dict, specialisation: dict,
                  confusion: np.ndarray, num_vis: int = 10, only: Collection[str] | None = None) -> None:
    """Every figure into ``out_dir/visualizations``; training curves when ``out_dir`` has a problem-1 training log.
    ``only``: just these file names (e.g. ``{"pr_curves.png"}``, the ones a study's report shows)."""
    vis = out_dir / "visualizations"
    want = lambda name: only is None or name in only  # noqa: E731
    if num_vis and want("detections.png"):
        plot_detections(dataset, predictions, vis / "detections.png", num_vis)
    if want("pr_curves.png"):
        plot_pr_curves(curves, vis / "pr_curves.png")
    if want("anchor_coverage.png"):
        plot_anchor_coverage(coverage, vis / "anchor_coverage.png")
    if want("scale_specialisation.png"):
        plot_scale_specialisation(specialisation, vis / "scale_specialisation.png")
    if want("feature_maps.png"):
        plot_feature_maps(model, dataset, device, vis / "feature_maps.png")
    if want("confusion_matrix.png"):
        plot_confusion(confusion, vis / "confusion_matrix.png")
    log_path = out_dir / "training_log.json"
    if log_path.is_file() and want("training_curves.png"):
        try:
            plot_loss_and_ap(json.loads(log_path.read_text()), vis / "training_curves.png")
        except (ValueError, KeyError, TypeError):
            print(f"note: {log_path} is not a problem-1 training log; no training curves", file=sys.stderr)
