#!/usr/bin/env python3
"""Train the multi-scale shape detector (problem 1).

Usage::

    python problem1/train.py                         # the specified run: SGD 0.001/0.9, 50 epochs, batch 16
    python problem1/train.py --epochs 1 --limit-train 32 --limit-val 16 --results-dir /tmp/p1   # a quick check
    python problem1/train.py --resume                # continue from RESULTS_DIR/last.pth
    python problem1/train.py --lr 0.01 --lr-schedule cosine --warmup-epochs 1   # a stronger optimiser (not the spec)
    torchrun --nproc_per_node=2 problem1/train.py     # DDP (gloo on CPU, nccl on CUDA); --batch-size stays the
                                                    # global batch, see common/distributed.py

Every epoch: train loss by term, validation loss by term, validation AP per class and mAP (the same
``evaluate.evaluate`` that ``evaluate.py`` uses), epoch time. Outputs in ``--results-dir``: ``training_log.json``
(rewritten atomically each epoch), ``last.pth`` (everything needed to resume), ``best_model.pth`` (lowest
validation loss) and ``config.json`` (the config and the command that ran).
"""
from __future__ import annotations

import argparse
import dataclasses
import math
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a file: replace the script's folder with the repo root on sys.path
    sys.path[0] = str(Path(__file__).resolve().parents[1])

import torch  # noqa: E402

from common.cli import command_line, require_output_dir, require_resume_checkpoint  # noqa: E402
from common.config import parse_config  # noqa: E402
from common.data import ensure_data  # noqa: E402
from common.distributed import (  # noqa: E402
    DistInfo,
    all_reduce_mean,
    barrier,
    broadcast_buffers,
    cleanup,
    init_distributed,
    local_batch_size,
    quiet_unless_main,
    wrap_model,
)
from common.errors import run_cli  # noqa: E402
from common.io import atomic_write_json  # noqa: E402
from common.progress import progress  # noqa: E402
from common.report import nan_to_none  # noqa: E402
from common.runtime import (  # noqa: E402
    autocast,
    maybe_compile,
    pick_device,
    resolve_precision,
    set_seed,
    tune_cpu_allocator,
)
from common.training import (  # noqa: E402
    TIMING_KEY,
    build_lr_scheduler,
    check_finite,
    epoch_generator,
    interrupted_message,
    load_checkpoint,
    recorded_precision,
    restore_training,
    resumed_config,
    save_checkpoint,
    write_log,
)
from problem1.config import CLASS_NAMES, PROBLEM, Config  # noqa: E402
from problem1.dataset import ShapeDetectionDataset, iterate_batches, load_split  # noqa: E402
from problem1.evaluate import evaluate  # noqa: E402
from problem1.loss import DetectionLoss, build_criterion  # noqa: E402
from problem1.model import build_model  # noqa: E402
from problem1.utils import default_anchors  # noqa: E402

LOSS_KEYS = ("loss_obj", "loss_cls", "loss_loc", "loss_total")


def build_optimizer(model: torch.nn.Module, cfg: Config) -> torch.optim.SGD:
    """The specified optimiser, SGD with momentum (``--weight-decay`` 0 by default); ``bench.py`` times this one."""
    return torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)


def train_one_epoch(model: torch.nn.Module, criterion: DetectionLoss, optimizer: torch.optim.Optimizer,
                    dataset: ShapeDetectionDataset, anchors: torch.Tensor, cfg: Config, device: torch.device,
                    epoch: int, info: DistInfo | None = None,
                    scheduler: torch.optim.lr_scheduler.LRScheduler | None = None) -> dict[str, float]:
    """One pass over ``dataset`` in the epoch's own shuffled order; returns the mean loss per term (per image).

    ``scheduler``, if any, is stepped after every optimiser step.

    Under torchrun ``model`` is the DDP wrapper and this rank trains on its share of the order; the means are
    averaged over ranks (every rank has the same number of images). The loss is normalised by the positives of
    this rank's images, so the averaged gradient differs slightly from the single-process one.
    """
    info = info or DistInfo()
    model.train()
    batches = list(iterate_batches(len(dataset), local_batch_size(cfg.batch_size, info),
                                   epoch_generator(cfg.seed, epoch), info))
    count = sum(len(idx) for idx in batches)
    sums = {k: torch.zeros((), device=device) for k in LOSS_KEYS}
    # Reading a loss back waits for the device; on CPU that is free, on a GPU it is done every few steps only.
    sync_every = 1 if device.type == "cpu" else 10
    bar = progress(batches, desc=f"epoch {epoch}/{cfg.epochs}", unit="batch")
    for step, idx in enumerate(bar, 1):
        images, boxes, labels = dataset.get_batch(idx)
        with autocast(device, cfg.amp, cfg.CPU_BF16_DEFAULT):
            outputs = model(images)
        losses = criterion(outputs, (boxes, labels), anchors)
        optimizer.zero_grad(set_to_none=True)
        losses["loss_total"].backward()
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
        for k in LOSS_KEYS:
            sums[k] += losses[k].detach() * len(idx)
        if step % sync_every == 0 or step == len(batches):
            check_finite({k: float(v) for k, v in sums.items()}, epoch, step)
            bar.set_postfix(loss=f"{float(losses['loss_total'].detach()):.3f}")
    return all_reduce_mean({k: float(v) / count for k, v in sums.items()}, info, device)


def train(cfg: Config, resume: bool = False, command: str = "python problem1/train.py") -> list[dict]:
    """The whole run; returns the training log (one record per epoch)."""
    results = require_output_dir(cfg.results_dir)
    ckpt = None
    if resume:
        ckpt = load_checkpoint(require_resume_checkpoint(results), PROBLEM)
        cfg = resumed_config(Config, ckpt.get("config", {}), cfg, recorded_precision(results))
    info, device = init_distributed(pick_device(cfg.device))
    quiet_unless_main(info)
    local_batch_size(cfg.batch_size, info)
    if info.is_main:
        ensure_data(cfg.data_dir, is_default=Path(cfg.data_dir).resolve() == Path(Config().data_dir).resolve(),
                    dataset="detection")
    barrier(info)
    # Read and check all input before anything is written, so bad data leaves the results folder untouched.
    train_set = load_split(cfg.data_dir, "train", cfg.limit_train)
    val_set = load_split(cfg.data_dir, "val", cfg.limit_val)

    set_seed(cfg.seed)
    model = build_model(cfg).to(device)
    optimizer = build_optimizer(model, cfg)
    steps_per_epoch = sum(1 for _ in iterate_batches(len(train_set), local_batch_size(cfg.batch_size, info),
                                                     None, info))
    scheduler = build_lr_scheduler(optimizer, cfg.lr_schedule, cfg.epochs * steps_per_epoch,
                                   cfg.warmup_epochs * steps_per_epoch)
    start, log = 0, []
    if ckpt is not None:
        start, log = restore_training(ckpt, model, optimizer, scheduler, path=results / "last.pth")
        print(f"resuming after epoch {start} from {results / 'last.pth'}")
    if start >= cfg.epochs:
        print(f"nothing to do: {results / 'last.pth'} already holds epoch {start} of {cfg.epochs}")
        return log
    train_set.to(device)
    val_set.to(device)
    step_model = maybe_compile(wrap_model(model, info, device), cfg.compile)  # what training steps run through
    criterion = build_criterion(cfg)
    anchors = default_anchors().to(device)
    if info.is_main:
        extra = {"world_size": info.world_size} if info.enabled else {}
        precision = resolve_precision(device, cfg.amp, cfg.CPU_BF16_DEFAULT)
        atomic_write_json(results / "config.json", {**dataclasses.asdict(cfg), "resolved_device": str(device),
                                                    "precision": precision,
                                                    "command": command, **extra})
    print(f"training on {device}: {len(train_set)} train / {len(val_set)} val images, epochs {start + 1}.."
          f"{cfg.epochs}, results in {results}{info.describe()}")

    best = min((r["val"]["loss_total"] for r in log), default=math.inf)
    saved = start  # last epoch whose last.pth is on disk
    try:
        for epoch in range(start + 1, cfg.epochs + 1):
            t0, cpu0 = time.perf_counter(), time.process_time()
            train_losses = train_one_epoch(step_model, criterion, optimizer, train_set, anchors, cfg, device, epoch,
                                           info, scheduler)
            t1 = time.perf_counter()
            # Every rank validates the same model (rank 0's) on the full set, so all ranks get rank 0's metrics.
            broadcast_buffers(model, info)
            val = evaluate(model, val_set, cfg, device, criterion, desc=f"val {epoch}")
            check_finite({f"val {k}": v for k, v in val["loss"].items()}, epoch, "validation")
            t2 = time.perf_counter()
            is_best = val["loss"]["loss_total"] < best
            record = {
                "epoch": epoch, "lr": optimizer.param_groups[0]["lr"], "train": train_losses,
                # AP is nan for a class without validation objects: null in JSON
                "val": {**val["loss"], **nan_to_none({"mAP": val["mAP"],
                                                      "ap_per_class": dict(zip(CLASS_NAMES, val["ap_per_class"],
                                                                               strict=True))})},
                "best": is_best,
                TIMING_KEY: {"epoch_s": t2 - t0, "train_s": t1 - t0, "val_s": t2 - t1,
                             "cpu_s": time.process_time() - cpu0},
            }
            log.append(record)
            if is_best:
                best = val["loss"]["loss_total"]
                if info.is_main:
                    save_checkpoint(results / "best_model.pth", problem=PROBLEM, config=cfg, model=model, epoch=epoch,
                                    log=log)
            if info.is_main:
                save_checkpoint(results / "last.pth", problem=PROBLEM, config=cfg, model=model, optimizer=optimizer,
                                scheduler=scheduler, epoch=epoch, log=log)
                write_log(results / "training_log.json", log)
            saved = epoch
            print(f"epoch {epoch}/{cfg.epochs}  train {train_losses['loss_total']:.4f} "
                  f"(obj {train_losses['loss_obj']:.3f} cls {train_losses['loss_cls']:.3f} "
                  f"loc {train_losses['loss_loc']:.3f})  val {val['loss']['loss_total']:.4f}  "
                  f"mAP {val['mAP']:.4f}  {t2 - t0:.1f}s{'  *best*' if is_best else ''}", flush=True)
    except KeyboardInterrupt:
        if info.is_main:
            print("\n" + interrupted_message(results, saved, command), file=sys.stderr)
        raise SystemExit(130) from None
    return log


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--resume", action="store_true", help="continue from RESULTS_DIR/last.pth")
    cfg, ns = parse_config(Config, argv, parser=parser)
    tune_cpu_allocator()
    try:
        train(cfg, resume=ns.resume, command=command_line("problem1/train.py", argv, drop=("--resume",)))
    finally:
        cleanup()


if __name__ == "__main__":
    run_cli(main)
