#!/usr/bin/env python3
"""Evaluate a problem-1 checkpoint: the one evaluation path, and the script that writes every result.

Usage::

    python problem1/evaluate.py --data-dir datasets --results-dir results/problem1 [--checkpoint P]

:func:`evaluate` is the one evaluation path (loss by term, AP@0.5 per class, mAP): ``train.py`` calls it every
epoch and :func:`run_evaluation` calls it here, so the script reproduces the numbers logged in training.
:func:`run_evaluation` adds the other AP variants (``metrics.py``), the analysis (``analysis.py``), the figures
(``figures.py``) and the tables (``report.py``), and writes ``R/metrics.json``, ``R/summary.md`` and
``R/visualizations/*.png``. :func:`decode_predictions` turns head outputs into detections; :func:`compute_ap`
(``metrics.py``) stays importable from here.
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from collections.abc import Collection, Sequence
from pathlib import Path

if __package__ in (None, ""):  # run as a file: replace the script's folder with the repo root on sys.path
    sys.path[0] = str(Path(__file__).resolve().parents[1])

import torch  # noqa: E402
from torch import Tensor  # noqa: E402
from torchvision.ops import batched_nms  # noqa: E402

from common.cli import command_line, require_output_dir  # noqa: E402
from common.config import config_from_dict  # noqa: E402
from common.errors import UserError, run_cli  # noqa: E402
from common.io import atomic_write_json  # noqa: E402
from common.progress import progress  # noqa: E402
from common.report import fmt, nan_to_none  # noqa: E402
from common.runtime import amp_help, autocast, pick_device, resolve_precision, tune_cpu_allocator  # noqa: E402
from common.training import load_checkpoint  # noqa: E402
from problem1.analysis import (  # noqa: E402
    CONFUSION_SCORE,
    anchor_coverage,
    false_positive_analysis,
    force_match_effect,
    scale_specialisation,
)
from problem1.config import CLASS_NAMES, IMAGE_SIZE, PROBLEM, Config  # noqa: E402
from problem1.dataset import ShapeDetectionDataset, as_numpy_targets, load_split  # noqa: E402
from problem1.figures import write_figures  # noqa: E402
from problem1.loss import DetectionLoss, build_criterion  # noqa: E402
from problem1.metrics import (  # noqa: E402
    HIDDEN_VISIBILITY,
    ap_50_95,
    ap_hidden_ignored,
    best_f1,
    compute_ap,
    confusion_matrix,
    evaluate_detections,
)
from problem1.model import MultiScaleDetector, build_model  # noqa: E402
from problem1.report import write_summary  # noqa: E402
from problem1.utils import anchor_scale_index, decode_boxes, default_anchor_list, flatten_predictions  # noqa: E402


def decode_predictions(outputs: Sequence[Tensor], anchors: Tensor, num_anchors: int = 3,
                       score_threshold: float = 0.01, nms_iou: float = 0.5, pre_nms_topk: int = 1000,
                       max_detections: int = 100, image_size: int = IMAGE_SIZE,
                       scale_index: Tensor | None = None) -> list[dict[str, Tensor]]:
    """Head outputs -> detections per image.

    score(anchor, class) = sigmoid(objectness) * softmax(class logits); the ``pre_nms_topk`` best (anchor, class)
    pairs above ``score_threshold`` are decoded, clipped to the image, put through class-wise NMS
    (``torchvision.ops.batched_nms``, one call for the whole batch, grouped by image and class so that no box
    suppresses one of another image) and cut to ``max_detections`` per image.

    Args:
        outputs: per scale ``Tensor[B, A*(5+C), H, W]``.
        anchors (Tensor[A_total, 4]): xyxy, in anchor order (``utils.default_anchors()``).
        scale_index (Tensor[A_total]): optional scale of each anchor, returned per detection as ``'scales'``.

    Returns:
        per image ``{'boxes' [N, 4] xyxy, 'scores' [N], 'labels' [N], 'scales' [N]}`` on the CPU, by score.
    """
    pred = flatten_predictions(outputs, num_anchors).float()  # [B, A, 5+C]
    b, a, _ = pred.shape
    anchors = anchors.to(pred.device)
    scores = torch.sigmoid(pred[..., 4:5]) * torch.softmax(pred[..., 5:], dim=-1)  # [B, A, C]
    c = scores.shape[-1]
    top_scores, top = scores.reshape(b, a * c).topk(min(pre_nms_topk, a * c), dim=1)  # [B, k]; index = a*C + c
    batch_idx = torch.arange(b, device=pred.device)[:, None].expand_as(top)
    keep = top_scores > score_threshold
    top_scores, top, batch_idx = top_scores[keep], top[keep], batch_idx[keep]  # [K]
    anchor_idx, labels = top // c, top % c
    boxes = decode_boxes(pred[batch_idx, anchor_idx, :4], anchors[anchor_idx]).clamp_(0, image_size)
    ok = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
    boxes, top_scores, labels, batch_idx, anchor_idx = (t[ok] for t in (boxes, top_scores, labels, batch_idx,
                                                                         anchor_idx))
    kept = batched_nms(boxes, top_scores, batch_idx * c + labels, nms_iou)  # by score, descending
    scales = scale_index.to(pred.device)[anchor_idx] if scale_index is not None else torch.zeros_like(anchor_idx)
    fields = {"boxes": boxes[kept], "scores": top_scores[kept], "labels": labels[kept], "scales": scales[kept]}
    fields = {k: v.cpu() for k, v in fields.items()}
    img = batch_idx[kept].cpu()
    return [{k: v[img == i][:max_detections] for k, v in fields.items()} for i in range(b)]


@torch.no_grad()
def evaluate(model: MultiScaleDetector, dataset: ShapeDetectionDataset, cfg: Config, device: torch.device,
             criterion: DetectionLoss | None = None, desc: str = "val") -> dict:
    """The one evaluation path (every epoch in training, and in this script).

    Returns:
        ``{'loss': {term: mean per image} (empty without criterion), 'mAP': float, 'ap_per_class': [C floats],
        'predictions': per image the output of decode_predictions}``.
    """
    model.eval()
    anchor_list = default_anchor_list()
    anchors, scale_index = torch.cat(anchor_list).to(device), anchor_scale_index(anchor_list)
    predictions: list[dict] = []
    sums: dict[str, Tensor] = {}
    for idx in progress(torch.arange(len(dataset)).split(cfg.eval_batch_size), desc=desc, unit="batch"):
        images, boxes, labels = dataset.get_batch(idx)
        with autocast(device, cfg.amp, cfg.CPU_BF16_DEFAULT):
            outputs = model(images.to(device))
        if criterion is not None:
            losses = criterion(outputs, (boxes.to(device), labels.to(device)), anchors)
            for k, v in losses.items():
                sums[k] = sums.get(k, 0) + v.detach() * len(idx)
        predictions += decode_predictions(outputs, anchors, model.num_anchors, cfg.score_threshold, cfg.nms_iou,
                                          cfg.pre_nms_topk, cfg.max_detections, IMAGE_SIZE, scale_index)
    ap = compute_ap(predictions, dataset.targets, 0.5, cfg.num_classes, cfg.max_detections)
    return {"loss": {k: float(v) / len(dataset) for k, v in sums.items()}, "mAP": ap["mAP"],
            "ap_per_class": ap["ap_per_class"], "predictions": predictions}


def run_evaluation(checkpoint: str | Path, data_dir: str | Path, results_dir: str | Path, device: str = "auto",
                   num_vis: int = 10, command: str = "", limit_val: int | None = None,
                   amp: bool | None = None, figures: bool | Collection[str] = True) -> dict:
    """Everything this script does for one checkpoint: ``metrics.json``, ``summary.md`` and the figures.

    ``limit_val``: validation images to use (0: all); ``None`` keeps the checkpoint's own setting, so the numbers
    reproduce the validation of its training run. ``amp`` likewise: ``None`` keeps the checkpoint's precision
    switch, ``True``/``False`` override it (``--amp``/``--no-amp``). ``figures=False``: the numbers only (as
    ``study.py --run-figures none`` asks); a collection of file names: only those figures (``--run-figures report``:
    the ones the study's report shows of this run).
    """
    out = require_output_dir(results_dir)
    ckpt = load_checkpoint(checkpoint, PROBLEM)
    cfg = config_from_dict(Config, ckpt.get("config", {}))
    if limit_val is not None:
        cfg = dataclasses.replace(cfg, limit_val=limit_val)
    if amp is not None:
        cfg = dataclasses.replace(cfg, amp=amp)
    model = build_model(cfg, ckpt["model"], checkpoint)
    dev = pick_device(device)
    dataset = load_split(data_dir, "val", cfg.limit_val)  # all reading and checking before anything is written
    model.to(dev)
    dataset.to(dev)

    t0 = time.perf_counter()
    res = evaluate(model, dataset, cfg, dev, build_criterion(cfg), desc="evaluate")
    t_infer = time.perf_counter() - t0
    preds, gts = res["predictions"], as_numpy_targets(dataset)
    curves, matches = evaluate_detections(preds, gts, cfg.num_classes, 0.5, cfg.max_detections)
    hidden = ap_hidden_ignored(preds, gts, cfg.num_classes, cfg.max_detections)
    coco = ap_50_95(preds, gts, cfg.num_classes, cfg.max_detections)
    cm = confusion_matrix(preds, gts, cfg.num_classes, CONFUSION_SCORE)
    cov = anchor_coverage(dataset, cfg.pos_threshold)
    forced = force_match_effect(dataset, cfg)
    spec = scale_specialisation(preds, matches, dataset)
    fps = false_positive_analysis(preds, matches, dataset)
    t_metrics = time.perf_counter() - t0 - t_infer

    names = list(CLASS_NAMES)
    metrics = {
        "checkpoint": str(checkpoint), "epoch": ckpt.get("epoch"), "data_dir": str(data_dir), "device": str(dev),
        "precision": resolve_precision(dev, cfg.amp, cfg.CPU_BF16_DEFAULT),
        "command": command, "config": dataclasses.asdict(cfg),
        "num_images": len(dataset), "num_objects": int(sum(len(g["labels"]) for g in gts)),
        "mAP": res["mAP"], "ap_per_class": dict(zip(names, res["ap_per_class"], strict=True)),
        "val_loss": res["loss"],
        "ignore_hidden": {"visibility_below": HIDDEN_VISIBILITY, "mAP": hidden["mAP"],
                          "ap_per_class": dict(zip(names, hidden["ap_per_class"], strict=True)),
                          "num_hidden": hidden["num_hidden"]},
        "coco_ap_50_95": {"mAP": coco["mAP"], "ap_per_class": dict(zip(names, coco["ap_per_class"], strict=True))},
        "best_f1": {n: best_f1(c) for n, c in zip(names, curves, strict=True)},
        "confusion_matrix": {"score_threshold": CONFUSION_SCORE, "rows": names + ["(background)"],
                             "columns": names + ["(missed)"], "matrix": cm.tolist()},
        "anchor_coverage": cov,
        "force_match_effect": forced,
        "scale_specialisation": spec,
        "false_positives": fps,
        "num_detections": int(sum(len(p["scores"]) for p in preds)),
        "time": {"inference_s": t_infer, "metrics_s": t_metrics},
        "figures": figures if isinstance(figures, bool) else sorted(figures),
    }
    if figures:
        write_figures(out, model, dataset, dev, preds, curves, cov, spec, cm, num_vis,
                      only=None if figures is True else figures)
    clean = nan_to_none(metrics, drop_private=True)
    atomic_write_json(out / "metrics.json", clean)
    write_summary(clean, out / "summary.md")
    return metrics


def main(argv: list[str] | None = None) -> None:
    defaults = Config()
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--data-dir", default=defaults.data_dir, help="folder holding detection/")
    p.add_argument("--results-dir", default=defaults.results_dir, help="where metrics.json, summary.md and "
                   "visualizations/ go")
    p.add_argument("--checkpoint", default=None, help="checkpoint to evaluate (default: RESULTS_DIR/best_model.pth)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")
    p.add_argument("--num-vis", type=int, default=10, help="validation images drawn with their detections")
    p.add_argument("--limit-val", type=int, default=None, help="use only the first N validation images (0: all; "
                   "default: as in the checkpoint's training run)")
    p.add_argument("--amp", action=argparse.BooleanOptionalAction, default=None,
                   help=amp_help(Config.CPU_BF16_DEFAULT) + " (default: the checkpoint's setting)")
    args = p.parse_args(argv)
    tune_cpu_allocator()
    for flag, value in (("--num-vis", args.num_vis), ("--limit-val", args.limit_val)):
        if value is not None and value < 0:
            raise UserError(f"{flag} must be >= 0 (got {value})")
    ckpt = args.checkpoint or str(Path(args.results_dir) / "best_model.pth")
    m = run_evaluation(ckpt, args.data_dir, args.results_dir, args.device, args.num_vis,
                       command_line("problem1/evaluate.py", argv), args.limit_val, args.amp)
    per_class = ", ".join(f"{n} {fmt(v)}" for n, v in m["ap_per_class"].items())
    print(f"mAP@0.5 {fmt(m['mAP'])} ({per_class}); hidden ignored {fmt(m['ignore_hidden']['mAP'])}; "
          f"wrote {Path(args.results_dir) / 'metrics.json'}")


if __name__ == "__main__":
    run_cli(main)
