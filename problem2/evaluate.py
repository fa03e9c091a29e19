#!/usr/bin/env python3
"""The evaluation path of problem 2, shared with training, and the evaluation script.

A method is a model plus a codec (``codec.py``); :func:`evaluate` runs the model, decodes its outputs with the
dataset's codec to image pixels and scores them with the shared metrics (``metrics.py``), so the methods are
compared fairly by construction. ``train.py`` calls :func:`evaluate` every epoch, and this script calls the same
function on the saved models, then draws the figures (``figures.py``) and writes the summary (``report.py``).

Usage::

    python problem2/evaluate.py --data-dir datasets --results-dir results/problem2

writes ``metrics.json``, ``summary.md`` and ``figures/*.png`` into the results directory.
"""
from __future__ import annotations

import dataclasses
import json
import sys
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path

import torch

if __package__ in (None, ""):  # run as a file: replace the script's folder with the repo root on sys.path
    sys.path[0] = str(Path(__file__).resolve().parents[1])

from common.cli import command_line, require_output_dir  # noqa: E402
from common.config import cfg_field, parse_config  # noqa: E402
from common.errors import UserError, run_cli  # noqa: E402
from common.io import atomic_write_json  # noqa: E402
from common.report import nan_to_none  # noqa: E402
from common.runtime import amp_help, autocast, memory_format, pick_device, resolve_precision, tune_cpu_allocator  # noqa: E402
from common.training import load_checkpoint, load_weights  # noqa: E402
from problem2.codec import HeatmapCodec  # noqa: E402
from problem2.codec import extract_keypoints_from_heatmaps as extract_keypoints_from_heatmaps  # noqa: E402  (re-export)
from problem2.config import DECODERS, METHODS, PROBLEM, SPECIFIED_METHODS, Config  # noqa: E402
from problem2.dataset import KeypointDataset, load_split  # noqa: E402
from problem2.figures import (  # noqa: E402
    plot_failures,
    plot_heatmaps,
    plot_pck_curves,
    plot_samples,
    plot_training_log,
    plot_training_stages,
)
from problem2.loss import KeypointMSELoss  # noqa: E402
from problem2.methods import build_codec, build_criterion, build_model  # noqa: E402
from problem2.metrics import (  # noqa: E402
    DENSE_THRESHOLDS,
    THRESHOLDS,
    by_threshold,
    ceiling_metrics,
    compute_pck,
    failure_groups,
    keypoint_errors,
    keypoint_metrics,
    swap_hands_to_best,
)
from problem2.report import write_summary  # noqa: E402

# --- the evaluation path (also run every epoch by train.py) -------------------------------------------------------

@torch.no_grad()
def predict(model: torch.nn.Module, dataset: KeypointDataset, batch_size: int = 64, amp: bool | None = None,
            keep_outputs: int = 0, criterion: torch.nn.Module | None = None) -> dict:
    """Run ``model`` over ``dataset`` in file order:
    ``{'loss', 'losses', 'predictions' Tensor[N, K, 2] px, 'outputs'}``.

    Targets and decoding come from ``dataset.codec``; ``criterion`` is the method's (``methods.build_criterion``;
    None: the specified MSE of heatmap and regression). ``losses`` holds every named term of the criterion, each
    averaged over the images like ``loss``. ``outputs`` holds the raw outputs of the first ``keep_outputs`` images
    (for figures) on the CPU, or None.
    """
    model.eval()
    criterion = criterion if criterion is not None else KeypointMSELoss()
    sums: dict[str, torch.Tensor] = {}
    preds, kept = [], []
    for images, targets, _ in dataset.batches(batch_size):
        with autocast(images.device, amp, Config.CPU_BF16_DEFAULT):
            out = model(images)
        for name, value in criterion(out, targets).items():
            sums[name] = sums.get(name, torch.zeros((), device=dataset.device)) + value * len(images)
        preds.append(dataset.codec.decode(out).cpu())
        if sum(len(o) for o in kept) < keep_outputs:
            kept.append(out.float().cpu())
    outputs = torch.cat(kept)[:keep_outputs] if kept else None
    losses = {name: float(total) / len(dataset) for name, total in sums.items()}
    return {"loss": losses["loss"], "losses": losses, "predictions": torch.cat(preds), "outputs": outputs}


def evaluate(model: torch.nn.Module, dataset: KeypointDataset, batch_size: int = 64, amp: bool | None = None,
             keep_outputs: int = 0, criterion: torch.nn.Module | None = None) -> dict:
    """Validation loss and every metric of one method (``model`` + ``dataset.codec`` + ``criterion``):
    ``{'loss', 'losses', 'metrics', 'predictions', 'outputs'}`` (see :func:`predict`,
    :func:`~problem2.metrics.keypoint_metrics`).
    """
    out = predict(model, dataset, batch_size, amp, keep_outputs, criterion)
    out["metrics"] = keypoint_metrics(out["predictions"], dataset.keypoints.cpu(), dataset.keypoint_names,
                                      dataset.hands)
    return out


def load_model(path: str | Path, device: torch.device) -> tuple[torch.nn.Module, dict]:
    """Rebuild a saved model from its checkpoint alone; returns ``(model in eval mode, checkpoint)``."""
    ckpt = load_checkpoint(path, PROBLEM)
    cfg = ckpt.get("config")
    # Settings added later (regression head, dropout, integral and simcc) take their defaults: the specification,
    # which is what a checkpoint written before them was trained with.
    need = ("method", "num_keypoints", "heatmap_size", "skip", "keypoint_names", "canonical_hands", "decoder", "sigma")
    if not isinstance(cfg, dict) or cfg.get("method") not in METHODS or any(k not in cfg for k in need):
        raise UserError(f"{path}: not a model checkpoint of problem2/train.py (its config lacks the method or "
                        "model settings)")
    try:
        model = build_model(cfg["method"], cfg["num_keypoints"], cfg)
    except ValueError as e:
        raise UserError(f"{path}: {e}") from None
    load_weights(model, ckpt["model"], path)
    # checkpoints made before the option existed ran channels-last too (see common.runtime.memory_format)
    return model.to(device, memory_format=memory_format(cfg.get("channels_last", True))).eval(), ckpt


def decoder_comparison(heatmaps: torch.Tensor, gt: torch.Tensor, codec: HeatmapCodec, joint_pairs: tuple,
                       hands: tuple[int, int] | None) -> dict:
    """The same heatmaps ``[N, K, hs, hs]`` through every decoder, hands jointly (``joint_pairs``) and each map alone:
    ``{'<decoder>, hands jointly' | '<decoder>, each map alone': {'pck', 'swap_invariant_pck', 'mean_px_error'}}``."""
    out = {}
    for decoder in DECODERS:
        for pairs in dict.fromkeys([joint_pairs, ()]):
            p = dataclasses.replace(codec, decoder=decoder, hand_pairs=pairs).decode(heatmaps)
            ps = swap_hands_to_best(p, gt, hands) if hands is not None else p
            out[decoder + (", hands jointly" if pairs else ", each map alone")] = {
                "pck": by_threshold(compute_pck(p, gt)), "swap_invariant_pck": by_threshold(compute_pck(ps, gt)),
                "mean_px_error": float(keypoint_errors(p, gt).mean())}
    return out


# --- the script ----------------------------------------------------------------------------------------------------

@dataclass
class EvalConfig:
    data_dir: str = cfg_field("./datasets", "datasets root (with keypoints/) or the keypoints folder itself")
    results_dir: str = cfg_field("results/problem2", "folder with <method>_model.pth (heatmap, regression, integral, "
                                                     "simcc: every one found is evaluated); metrics.json, "
                                                     "summary.md and figures/ are written here")
    device: str = cfg_field("auto", "auto, cpu, cuda, cuda:N or mps")
    batch_size: int = cfg_field(64, "inference batch size", min=1)
    decoder: str = cfg_field("", "heatmap decoder (default: the one the model was trained with)",
                             choices=["", *DECODERS])
    limit_val: int | None = cfg_field(None, "use only the first N validation images (0: all; default: as in the "
                                            "models' training run)", min=0)
    amp: bool | None = cfg_field(None, amp_help(Config.CPU_BF16_DEFAULT) + " (default: each model's training setting)")


def _one_setting(models: dict, key: str, default, results_dir: Path, what: str):
    """The value of config ``key`` that every loaded model was trained with; they must agree."""
    values = {ck["config"].get(key, default) for _, ck in models.values()}
    if len(values) > 1:
        raise UserError(f"{results_dir}: the models were trained with different {what}")
    return values.pop()


def run_evaluation(cfg: EvalConfig, command: str, figures: bool | Collection[str] = True) -> dict:
    """Everything ``evaluate.py`` does for the models in ``cfg.results_dir``: ``metrics.json``, ``summary.md`` and
    the figures (``figures=False``: the numbers only, as ``study.py --run-figures none`` and ``baseline.py
    --no-run-figures`` ask; a collection of file names: only those figures, as ``--run-figures report`` asks)."""
    results_dir = require_output_dir(cfg.results_dir)
    device = pick_device(cfg.device)
    paths = {m: results_dir / f"{m}_model.pth" for m in METHODS if (results_dir / f"{m}_model.pth").is_file()}
    if not paths:
        raise UserError(f"{results_dir}: no {', '.join(f'{m}_model.pth' for m in METHODS)} "
                        "(run problem2/train.py first)")
    # Load and check everything before writing anything.
    models = {m: load_model(p, device) for m, p in paths.items()}
    canonical_hands = _one_setting(models, "canonical_hands", False, results_dir, "hand labellings")
    limit = cfg.limit_val if cfg.limit_val is not None else _one_setting(models, "limit_val", 0, results_dir,
                                                                         "--limit-val; pass --limit-val")
    base = load_split(cfg.data_dir, "val", limit, canonical_hands=canonical_hands).to(device)
    gt = base.keypoints.cpu()
    names = base.keypoint_names
    for m, (_, ck) in models.items():
        if ck["config"]["keypoint_names"] != names:
            raise UserError(f"{paths[m]}: trained on keypoints {ck['config']['keypoint_names']}, the data has {names}")
    log_path, snap_path = results_dir / "training_log.json", results_dir / "heatmap_snapshots.pt"
    log = load_training_log(log_path) if log_path.is_file() else None
    snaps = load_snapshots(snap_path) if snap_path.is_file() and "heatmap" in models else None

    n_fig = min(8, len(base))
    metrics: dict = {"command": command, "data_dir": str(cfg.data_dir), "device": str(device), "num_images": len(base),
                     "labelling": "canonical hands by x order (derived)" if canonical_hands else "as in the file",
                     "thresholds": list(THRESHOLDS), "dense_thresholds": list(DENSE_THRESHOLDS), "methods": {}}
    results, codecs = {}, {}
    for m, (model, ck) in models.items():
        c = {**ck["config"], "decoder": cfg.decoder or ck["config"]["decoder"]}
        amp = c.get("amp") if cfg.amp is None else cfg.amp
        codecs[m] = build_codec(m, c, names)
        res = evaluate(model, base.with_codec(codecs[m]), cfg.batch_size, amp,
                       keep_outputs=len(base) if m == "heatmap" else n_fig, criterion=build_criterion(m, c))
        results[m] = res
        precision = resolve_precision(device, amp, Config.CPU_BF16_DEFAULT)
        metrics["methods"][m] = {"checkpoint": str(paths[m]), "epoch": ck["epoch"], "config": ck["config"],
                                 "decoder": c["decoder"], "precision": precision,
                                 "val_loss": res["loss"], "metrics": res["metrics"]}
        if m == "heatmap":
            joint = build_codec(m, {**c, "hand_pairs": True}, names).hand_pairs
            metrics["decoders"] = decoder_comparison(res["outputs"], gt, codecs[m], joint, base.hands)
    if base.hands is not None and not canonical_hands:
        metrics["ceiling"] = ceiling_metrics(gt, base.hands)
    pair = all(m in results for m in SPECIFIED_METHODS)  # failure groups compare the specified pair
    if pair:
        groups = failure_groups(results["heatmap"]["predictions"], results["regression"]["predictions"], gt, names)
        metrics["failures"] = {g: {k: v for k, v in d.items() if k != "mask"} for g, d in groups.items()}

    # Figures, then the JSON and the summary that point at them.
    if figures:
        _write_figures(results_dir / "figures", base, gt, names, results, codecs, metrics, snaps, log,
                       groups if pair else None, only=None if figures is True else figures)
    atomic_write_json(results_dir / "metrics.json", nan_to_none(metrics))
    write_summary(results_dir)
    if canonical_hands and results_dir.name == "canonical_hands" and (results_dir.parent / "metrics.json").is_file():
        write_summary(results_dir.parent)  # its hypothesis-test section reads this run
    return metrics


def _write_figures(fig_dir: Path, base, gt: torch.Tensor, names: list[str], results: dict, codecs: dict,
                   metrics: dict, snaps: dict | None, log: list[dict] | None, groups: dict | None,
                   only: Collection[str] | None = None) -> None:
    """The figures of :func:`run_evaluation` (``groups``: the specified pair's failure groups, if both were run;
    ``only``: just these file names)."""
    n_fig = min(8, len(base))
    images = base.images.cpu().float() / 255.0
    preds = {m: r["predictions"] for m, r in results.items()}
    want = lambda name: only is None or name in only  # noqa: E731
    if want("pck_curves.png"):
        plot_pck_curves(metrics, fig_dir / "pck_curves.png")
    if want("sample_predictions.png"):
        plot_samples(images[:n_fig], gt[:n_fig], {m: p[:n_fig] for m, p in preds.items()},
                     fig_dir / "sample_predictions.png")
    if "heatmap" in results:
        k = min(3, n_fig)
        if want("predicted_heatmaps.png"):
            plot_heatmaps(images[:k], results["heatmap"]["outputs"][:k], gt[:k], preds["heatmap"][:k], names,
                          fig_dir / "predicted_heatmaps.png")
        if snaps is not None and want("heatmaps_during_training.png"):
            plot_training_stages(snaps, images, gt, names, codecs["heatmap"], fig_dir / "heatmaps_during_training.png")
    if groups is not None and want("failure_cases.png"):
        plot_failures(images, gt, {m: preds[m] for m in SPECIFIED_METHODS}, groups, fig_dir / "failure_cases.png")
    if log is not None and want("training_curves.png"):
        plot_training_log(log, fig_dir / "training_curves.png")


def load_training_log(path: Path) -> list[dict]:
    """``training_log.json`` as written by ``problem2/train.py``; anything else is a one-line error."""
    try:
        obj = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UserError(f"{path}: invalid JSON ({e})") from None
    if not isinstance(obj, list) or not all(isinstance(r, dict) and {"model", "epoch", "train", "val"} <= set(r)
                                            for r in obj):
        raise UserError(f"{path}: expected a list of per-epoch records written by problem2/train.py")
    return obj


def load_snapshots(path: Path) -> dict:
    """``heatmap_snapshots.pt``: ``{'val_indices': [...], 'epochs': {epoch: Tensor[n, K, hs, hs] half}}``."""
    try:
        snaps = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many types for corrupt files
        raise UserError(f"{path}: not a readable snapshot file ({type(e).__name__})") from None
    if not isinstance(snaps, dict) or not {"epochs", "val_indices"} <= set(snaps):
        raise UserError(f"{path}: not a heatmap snapshot file written by problem2/train.py")
    return snaps


def main(argv: list[str] | None = None) -> None:
    cfg, _ = parse_config(EvalConfig, argv, description=__doc__.split("\n\n")[0])
    tune_cpu_allocator()
    metrics = run_evaluation(cfg, command_line("problem2/evaluate.py", argv))
    for m, r in metrics["methods"].items():
        p = r["metrics"]["pck"]
        print(f"{m:>10}: " + "  ".join(f"PCK@{t}={v:.3f}" for t, v in p.items())
              + f"  mean error {r['metrics']['mean_px_error']:.2f} px")
    if metrics.get("ceiling"):
        print(f"{'ceiling':>10}: " + "  ".join(f"PCK@{t}={v:.3f}" for t, v in metrics["ceiling"]["pck"].items()))
    print(f"wrote {Path(cfg.results_dir) / 'metrics.json'}, summary.md and figures/")


if __name__ == "__main__":
    run_cli(main)
