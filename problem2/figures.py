"""The figures of problem 2, drawn from decoded predictions (image pixels) and the JSON the scripts write.

Every function takes what it draws and an output path; ``evaluate.py`` and ``baseline.py`` decide what to draw.
"""
from __future__ import annotations

from pathlib import Path

import torch

from common.plotting import image_grid, plot_training_curves, pyplot, save_figure
from problem2.codec import IMAGE_SIZE, Codec, pixels_to_heatmap
from problem2.config import METHODS
from problem2.methods import run_label
from problem2.metrics import DENSE_THRESHOLDS, FAILURE_THRESHOLD, THRESHOLDS, keypoint_errors

COLORS = {"gt": "#2ca02c", "heatmap": "#d62728", "regression": "#1f77b4", "integral": "#ff7f0e", "simcc": "#9467bd",
          "ceiling": "black"}
MARKERS = {"gt": "o", "heatmap": "x", "regression": "+", "integral": "^", "simcc": "d"}
MARKER_NAMES = {"o": "o", "x": "x", "+": "+", "^": "triangle", "d": "diamond"}  # for titles


def _show_points(ax, image, points: dict[str, torch.Tensor], title: str = ""):
    ax.imshow(torch.as_tensor(image).float().numpy(), cmap="gray", vmin=0, vmax=1)  # matplotlib wants NumPy
    for key, p in points.items():
        p = torch.as_tensor(p).float().numpy()
        hollow = key == "gt" or MARKERS[key] in ("^", "d")  # filled shapes would hide the ground truth
        style = {"facecolors": "none", "edgecolors": COLORS[key]} if hollow else {"c": COLORS[key]}
        ax.scatter(p[:, 0], p[:, 1], s=30 if hollow else 45, marker=MARKERS[key], linewidths=1.5, label=key,
                   **style)
    ax.set_title(title, fontsize=8)
    ax.axis("off")


PCK_CURVE_XMAX = 0.25  # the thresholds where methods differ; beyond it every curve is near its plateau


def plot_pck_curves(metrics: dict, path: Path, title: str = "PCK on the validation set") -> None:
    """PCK against threshold per method (solid) and hand-swap-invariant (hollow markers, so it shows where it equals
    the plain curve), with the hand-ambiguity ceiling and its two strategies if known; thresholds up to
    :data:`PCK_CURVE_XMAX`, the legend outside the axes."""
    import numpy as np

    x = np.asarray(DENSE_THRESHOLDS)
    keep = x <= PCK_CURVE_XMAX + 1e-9
    every = max(1, int(keep.sum()) // 10)
    fig, ax = pyplot().subplots(figsize=(9, 4.8))
    for method in METHODS:
        if method in metrics["methods"]:
            m = metrics["methods"][method]["metrics"]
            ax.plot(x[keep], np.asarray(m["curve"])[keep], color=COLORS[method], lw=2,
                    label=f"{method} (AUC 0-0.5 {m['auc']:.3f})")
            if "swap_invariant" in m:
                si = m["swap_invariant"]
                ax.plot(x[keep], np.asarray(si["curve"])[keep], color=COLORS[method], ls="none", marker="o",
                        mfc="none", ms=5, markevery=every,
                        label=f"{method}, either hand assignment ({si['auc']:.3f})")
    if metrics.get("ceiling"):
        c = metrics["ceiling"]
        ax.plot(x[keep], np.asarray(c["curve"])[keep], color=COLORS["ceiling"], ls="--", lw=1.5,
                label=f"hand-ambiguity ceiling ({c['auc']:.3f})")
        for strategy, ls in (("commit", (0, (1, 2))), ("midpoint", "-.")):
            ax.plot(x[keep], np.asarray(c["strategies"][strategy]["curve"])[keep], color="0.55", ls=ls, lw=1,
                    label=f"ceiling of '{strategy}' alone ({c['strategies'][strategy]['auc']:.3f})")
    for t in THRESHOLDS:
        ax.axvline(t, color="0.88", lw=0.8, zorder=0)
    ax.set(xlabel="threshold (fraction of the ground-truth keypoint box diagonal)", ylabel="PCK",
           xlim=(0, PCK_CURVE_XMAX), ylim=(0, 1.01), title=title)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    fig.tight_layout()
    save_figure(fig, path, dpi=120)


def plot_samples(images: torch.Tensor, gt: torch.Tensor, preds: dict[str, torch.Tensor], path: Path) -> None:
    """``images [N, 1, H, W]`` with ground truth and each method's predictions ``[N, K, 2]`` (image pixels)."""
    fig, axes = image_grid(len(images), 4, (2.6, 2.7))
    for i, ax in enumerate(axes):
        pts = {"gt": gt[i], **{m: p[i] for m, p in preds.items()}}
        errs = ", ".join(f"{m[0]} {keypoint_errors(p[i:i + 1], gt[i:i + 1]).mean():.1f}px" for m, p in preds.items())
        _show_points(ax, images[i, 0], pts, f"val #{i}: {errs}")
    axes[0].legend(fontsize=6, loc="upper left")
    keys = ", ".join(f"{MARKER_NAMES[MARKERS[m]]} {'GT' if m == 'gt' else m}" for m in ("gt", *preds))
    fig.suptitle(f"Predictions vs ground truth ({keys}; mean error per image)", fontsize=9)
    fig.tight_layout()
    save_figure(fig, path, dpi=110)


def plot_heatmaps(images: torch.Tensor, heatmaps: torch.Tensor, gt: torch.Tensor, pred: torch.Tensor,
                  names: list[str], path: Path, row_titles: list[str] | None = None, title: str = "") -> None:
    """One row per image: the image, then each keypoint's map (GT o, decoded x, in heatmap pixels)."""
    n, k = heatmaps.shape[:2]
    hs = heatmaps.shape[-1]
    fig, axes = pyplot().subplots(n, k + 1, figsize=(1.9 * (k + 1), 2.0 * n), squeeze=False)
    for i in range(n):
        _show_points(axes[i, 0], images[i, 0], {"gt": gt[i], "heatmap": pred[i]},
                     row_titles[i] if row_titles else f"val #{i}")
        gt_uv, pred_uv = pixels_to_heatmap(gt[i], IMAGE_SIZE, hs), pixels_to_heatmap(pred[i], IMAGE_SIZE, hs)
        for j in range(k):
            ax = axes[i, j + 1]
            ax.imshow(heatmaps[i, j].float().numpy(), cmap="magma", vmin=0, vmax=max(1.0, float(heatmaps[i, j].max())))
            ax.scatter(gt_uv[j, 0], gt_uv[j, 1], s=30, marker="o", facecolors="none", edgecolors=COLORS["gt"])
            ax.scatter(pred_uv[j, 0], pred_uv[j, 1], s=30, marker="x", c="cyan")
            ax.set_title(f"{names[j]} (max {float(heatmaps[i, j].max()):.2f})", fontsize=7)
            ax.axis("off")
    fig.suptitle(title or f"Predicted heatmaps ({hs}x{hs}; colour scale 0..1; o GT, x decoded)", fontsize=9)
    fig.tight_layout()
    save_figure(fig, path, dpi=100)


def plot_training_stages(snaps: dict, images: torch.Tensor, gt: torch.Tensor, names: list[str], codec: Codec,
                         path: Path, image_index: int = 0) -> None:
    """Heatmaps of one fixed validation image at the snapshot epochs (rows) per keypoint (columns), decoded by
    ``codec`` (the heatmap model's)."""
    epochs = sorted(snaps["epochs"])
    i = snaps["val_indices"][image_index]
    maps = torch.stack([snaps["epochs"][e][image_index].float() for e in epochs])  # [E, K, hs, hs]
    hs = maps.shape[-1]
    plot_heatmaps(images[i:i + 1].expand(len(epochs), -1, -1, -1), maps, gt[i:i + 1].expand(len(epochs), -1, -1),
                  codec.decode(maps), names, path, row_titles=[f"epoch {e}" for e in epochs],
                  title=f"Heatmaps of val #{i} during training ({hs}x{hs}; o GT, x decoded)")


def plot_failures(images: torch.Tensor, gt: torch.Tensor, preds: dict[str, torch.Tensor], groups: dict,
                  path: Path, per_group: int = 4) -> None:
    """A row per failure group (:func:`~problem2.metrics.failure_groups`): its images with the most keypoints in it."""
    fig, axes = pyplot().subplots(3, per_group, figsize=(2.6 * per_group, 8.4), squeeze=False)
    for row, (name, g) in enumerate(groups.items()):
        mask = g["mask"]  # [N, K]
        order = sorted(range(len(mask)), key=lambda i: (-int(mask[i].sum()), i))[:per_group]
        order = [i for i in order if mask[i].any()]
        for col in range(per_group):
            ax = axes[row, col]
            if col >= len(order):
                ax.axis("off")
                continue
            i = order[col]
            _show_points(ax, images[i, 0], {"gt": gt[i], **{m: p[i] for m, p in preds.items()}}, f"val #{i}")
            bad = mask[i].nonzero().flatten()
            ax.scatter(gt[i, bad, 0], gt[i, bad, 1], s=260, facecolors="none", edgecolors="orange", linewidths=1.5)
        axes[row, 0].text(-0.08, 0.5, f"{name.replace('_', ' ')}\n{g['count']} keypoints / {g['images']} images",
                          transform=axes[row, 0].transAxes, rotation=90, va="center", ha="right", fontsize=8)
    fig.suptitle(f"Failure cases at PCK@{FAILURE_THRESHOLD:g} (orange rings: the keypoints in the group; "
                 "o GT, x heatmap, + regression)", fontsize=9)
    fig.tight_layout()
    save_figure(fig, path, dpi=100)


def plot_training_log(log: list[dict], path: Path) -> None:
    """Loss and validation PCK@0.05 / @0.2 per epoch of each method in ``training_log.json``."""
    losses, pcks, selected = {}, {}, {}
    for method in METHODS:
        recs = [r for r in log if r.get("model") == method]
        if not recs:
            continue
        ep = [r["epoch"] for r in recs]
        selected[method] = (min(recs, key=lambda r: r["val"]["loss"])["epoch"], COLORS[method])
        losses[method] = (ep, [r["train"]["loss"] for r in recs], [r["val"]["loss"] for r in recs], COLORS[method])
        for t, ls in zip(("0.05", "0.2"), ("-", ":"), strict=True):
            pcks[f"{method} PCK@{t}"] = (ep, [r["val"]["pck"][t] for r in recs], {"color": COLORS[method], "ls": ls})
    plot_training_curves(path, losses, pcks, loss_ylabel="loss (not comparable across methods)",
                         metric_ylabel="validation PCK (bbox)", metric_title="Validation PCK", dpi=110,
                         selected=selected, title="Problem 2 training: " + ", ".join(selected)
                         + " (dotted: the epoch evaluate.py scores, lowest validation loss)")


def _ablation_label(family: str, run: dict) -> str:
    return {"sigma": f"sigma {run['sigma']:g}", "resolution": f"{run['heatmap_size']}x{run['heatmap_size']}",
            "skip": "skip" if run["skip"] else "no skip"}[family]


def plot_ablations(report: dict, path: Path) -> None:
    """One column per ablation family of ``ablation.json``: PCK by variant, PCK curves, PCK@0.05 per epoch."""
    fams = report["families"]
    fig, axes = pyplot().subplots(3, len(fams), figsize=(4.6 * len(fams), 11), squeeze=False)
    for col, (family, names) in enumerate(fams.items()):
        runs = [report["runs"][n] for n in names]
        labels = [_ablation_label(family, r) for r in runs]
        ax = axes[0, col]
        for t in THRESHOLDS:
            ax.plot(labels, [r["metrics"]["pck"][f"{t:g}"] for r in runs], marker="o", label=f"PCK@{t:g}")
        ax.plot(labels, [r["metrics"].get("swap_invariant", r["metrics"])["pck"]["0.05"] for r in runs], marker="s",
                ls="--", color="0.4", label="PCK@0.05 hand-swap-invariant")
        ax.set(title=f"{family}: validation PCK (best-val-loss epoch)", ylabel="PCK (bbox)", ylim=(0, 1.01),
               xlabel={"sigma": "target sigma (heatmap pixels)", "resolution": "heatmap size (pixels)",
                       "skip": "decoder skip connections"}[family])
        ax.legend(fontsize=7, loc="best")
        ax = axes[1, col]
        for r, lab in zip(runs, labels, strict=True):
            ax.plot(DENSE_THRESHOLDS, r["metrics"]["curve"], label=f"{lab} (AUC {r['metrics']['auc']:.3f})")
        ax.set(title=f"{family}: PCK curves", xlabel="threshold (fraction of keypoint box diagonal)", ylabel="PCK",
               xlim=(0, PCK_CURVE_XMAX), ylim=(0, 1.01))
        ax.legend(fontsize=7, loc="lower right")
        ax = axes[2, col]
        for r, lab in zip(runs, labels, strict=True):
            ax.plot(range(1, len(r["val_pck_by_epoch"]) + 1), [p["0.05"] for p in r["val_pck_by_epoch"]], label=lab)
        ax.set(title=f"{family}: validation PCK@0.05 per epoch", xlabel="epoch", ylabel="PCK@0.05", ylim=(0, 1.01))
        ax.legend(fontsize=7, loc="best")
    fig.suptitle(f"Heatmap ablations ({report['epochs']} epochs per run, seed {report['seed']})")
    fig.tight_layout()
    save_figure(fig, path, dpi=100)


REGRESSION_HEAD_COLORS = {"gap": "#1f77b4", "flatten": "#17becf", "coord": "#393b79"}


def plot_methods(report: dict, names: list[str], path: Path) -> None:
    """PCK curves of the runs ``names`` of ``ablation.json`` (every method and variant of the study beyond the
    specification) and the hand-ambiguity ceiling, in one panel: colour by method (regression: by head), dashed
    without dropout, thick for longer training."""
    fig, ax = pyplot().subplots(figsize=(11, 5.5))
    for name in names:
        r = report["runs"][name]
        method, m = r.get("model", "heatmap"), r["metrics"]
        style = {"color": COLORS.get(method, "0.3"), "ls": "-", "lw": 1.5}
        if method == "regression":
            style.update(color=REGRESSION_HEAD_COLORS[r["regression_head"]], ls="-" if r["dropout"] else "--")
        if r.get("epochs", report["epochs"]) > report["epochs"]:
            style["lw"] = 3.0
        ax.plot(DENSE_THRESHOLDS, m["curve"], label=f"{run_label(r)}, {r.get('epochs', report['epochs'])} "
                f"({m['auc']:.3f})", **style)
    if report.get("ceiling"):
        c = report["ceiling"]
        ax.plot(DENSE_THRESHOLDS, c["curve"], color=COLORS["ceiling"], ls=":", lw=1.2,
                label=f"hand-ambiguity ceiling ({c['auc']:.3f})")
    for t in THRESHOLDS:
        ax.axvline(t, color="0.85", lw=0.8, zorder=0)
    ax.set(xlabel="threshold (fraction of the ground-truth keypoint box diagonal)", ylabel="PCK",
           xlim=(0, PCK_CURVE_XMAX), ylim=(0, 1.01),
           title=f"Validation PCK of every method and variant (seed {report['seed']}; each run's "
           "best-validation-loss epoch)")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), title="run, epochs trained (AUC 0-0.5)",
              title_fontsize=7)
    fig.tight_layout()
    save_figure(fig, path, dpi=120)
