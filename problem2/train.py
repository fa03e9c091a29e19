#!/usr/bin/env python3
"""Train the heatmap and the regression model of problem 2 on the same data, seed and data order.

Usage::

    python problem2/train.py                               # both models, 30 epochs each (the specification)
    python problem2/train.py --model heatmap --epochs 5 --device cpu
    python problem2/train.py --model regression --regression-head coord --dropout 0 --results-dir R   # a variant
    python problem2/train.py --model integral --results-dir R    # beyond the specification: soft-argmax, or
    python problem2/train.py --model simcc --results-dir R       # per-axis classification (see config.py)
    python problem2/train.py --epochs 1 --limit-train 64 --limit-val 32 --results-dir /tmp/p2   # a quick check
    python problem2/train.py --resume                      # continue an interrupted run from RESULTS_DIR/last.pth
    torchrun --nproc_per_node=2 problem2/train.py     # DDP (gloo on CPU, nccl on CUDA); --batch-size stays the
                                                    # global batch, see common/distributed.py
    python problem2/train.py --canonical-hands --results-dir results/problem2/canonical_hands   # hypothesis test

``--model both`` (the default) trains the specified pair, heatmap and regression, in turns, one epoch each, each
from ``set_seed(seed)`` with the same per-epoch shuffling and its own RNG stream, so ``--model regression`` alone
trains the same regression model. Writes into ``--results-dir``:

* ``<method>_model.pth`` (``heatmap_model.pth``, ``regression_model.pth``, ...): the epoch with the lowest
  validation loss, config included;
* ``last.pth``: after every epoch, each model with its optimizer and RNG state, and the log so far;
  ``--resume`` continues from it (also to more ``--epochs`` than before);
* ``training_log.json``: one record per model and epoch, ``{"model", "epoch", "train": {"loss", ...}, "val":
  {"loss", ..., "pck", "pck_swap_invariant", "auc", "mean_px_error"}, "best", "time": {"train_s", "val_s",
  "cpu_s"}}`` (the criterion's other named terms beside ``loss``; timing only under ``time``, ``cpu_s`` being
  the process's CPU time for the epoch's training and validation); ``config.json``;
* ``heatmap_snapshots.pt``: the heatmap model's outputs for the first 4 validation images at epochs 1, 5, 10,
  20 and 30 (and the last), for the figure of heatmaps during training.

Determinism: on CPU the same seed gives the same ``training_log.json`` apart from ``time``, also across an
interruption and ``--resume``: each epoch shuffles with a generator seeded by ``(seed, epoch)`` and
``last.pth`` restores the RNG states (dropout). On CUDA, cuDNN picks convolution algorithms per run and
the backward of ConvTranspose accumulates with atomics, so two runs agree only up to rounding, and bf16
autocast (on by default there) changes the numbers again. On a CPU with native bf16, ``--amp`` runs the model
in bf16; such runs are deterministic on one machine too (tests/test_amp.py).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
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
from common.errors import UserError, run_cli  # noqa: E402
from common.io import atomic_torch_save, atomic_write_json  # noqa: E402
from common.progress import progress  # noqa: E402
from common.runtime import (  # noqa: E402
    autocast,
    maybe_compile,
    memory_format,
    pick_device,
    resolve_precision,
    rng_state,
    set_rng_state,
    set_seed,
    tune_cpu_allocator,
)
from common.training import (  # noqa: E402
    CHECKPOINT_FORMAT,
    TIMING_KEY,
    check_finite,
    epoch_generator,
    interrupted_message,
    load_checkpoint,
    load_weights,
    recorded_precision,
    resumed_config,
    save_checkpoint,
    write_log,
)
from problem2.codec import Codec  # noqa: E402
from problem2.config import METHODS, PROBLEM, Config, trained_methods  # noqa: E402
from problem2.dataset import KeypointDataset, load_split, split_paths  # noqa: E402
from problem2.evaluate import evaluate, load_snapshots  # noqa: E402
from problem2.methods import build_codec, build_criterion, build_model  # noqa: E402

SNAPSHOT_EPOCHS = (1, 5, 10, 20, 30)
SNAPSHOT_IMAGES = 4
VAL_BATCH_SIZE = 64
LOG_EVERY = 10  # steps between progress-bar loss updates (a host sync on GPU)


def load_data(cfg: Config) -> tuple[KeypointDataset, KeypointDataset]:
    """Both splits (``--limit-train/--limit-val`` images), validated and decoded once; each method trains on a
    :meth:`~problem2.dataset.KeypointDataset.with_codec` view with its own targets."""
    train_set = load_split(cfg.data_dir, "train", cfg.limit_train, canonical_hands=cfg.canonical_hands)
    val_set = load_split(cfg.data_dir, "val", cfg.limit_val, canonical_hands=cfg.canonical_hands)
    if train_set.keypoint_names != val_set.keypoint_names:
        raise UserError(f"{split_paths(cfg.data_dir, 'val')[1]}: keypoint_names {val_set.keypoint_names} differ "
                        f"from the training split's {train_set.keypoint_names}")
    return train_set, val_set


def snapshot_epochs(epochs: int) -> set[int]:
    return {e for e in SNAPSHOT_EPOCHS if e <= epochs} | {epochs}


def build_optimizer(model: torch.nn.Module, cfg: Config) -> torch.optim.Adam:
    """The specified optimiser, Adam at ``--lr``, for either method; ``bench.py`` times this one."""
    return torch.optim.Adam(model.parameters(), lr=cfg.lr)


@dataclasses.dataclass
class Run:
    """One method's training state: its model, codec and criterion. Each model has its own RNG stream (dropout),
    swapped in while it trains, so ``--model regression`` alone trains exactly the regression model of
    ``--model both``."""
    method: str
    model: torch.nn.Module
    codec: Codec
    criterion: torch.nn.Module
    optimizer: torch.optim.Optimizer
    rng: dict
    config: dict  # the run's config plus method and keypoints: saved in every checkpoint of this model
    best: float = math.inf
    step_model: torch.nn.Module | None = None  # what training steps go through: DDP and/or compiled; None: model
    dist: DistInfo = dataclasses.field(default_factory=DistInfo)


def build_runs(cfg: Config, methods: list[str], names: list[str], device: torch.device) -> list[Run]:
    runs = []
    for method in methods:
        set_seed(cfg.seed)  # every model starts from the same initialisation stream
        model = build_model(method, len(names), cfg).to(device, memory_format=memory_format(cfg.channels_last))
        config = {**dataclasses.asdict(cfg), "method": method, "num_keypoints": len(names), "keypoint_names": names}
        runs.append(Run(method, model, build_codec(method, cfg, names), build_criterion(method, cfg),
                        build_optimizer(model, cfg), rng_state(), config))
    return runs


def save_last(path: Path, cfg: Config, runs: list[Run], epoch: int, log: list[dict]) -> None:
    """``last.pth``: every model with its optimizer and RNG stream after ``epoch``, and the log so far."""
    atomic_torch_save(path, {
        "format": CHECKPOINT_FORMAT, "problem": PROBLEM, "config": dataclasses.asdict(cfg), "epoch": epoch, "log": log,
        "model": {r.method: r.model.state_dict() for r in runs},
        "optimizer": {r.method: r.optimizer.state_dict() for r in runs},
        "rng": {r.method: r.rng for r in runs},
    })


def restore_last(ckpt: dict, runs: list[Run], path: Path) -> tuple[int, list[dict]]:
    """Load :func:`save_last`'s state into ``runs``; returns ``(last completed epoch, log)``."""
    if not isinstance(ckpt["model"], dict) or set(ckpt["model"]) != {r.method for r in runs}:
        raise UserError(f"{path}: not a problem 2 training checkpoint for {', '.join(r.method for r in runs)}")
    for r in runs:
        load_weights(r.model, ckpt["model"][r.method], path)
        r.optimizer.load_state_dict(ckpt["optimizer"][r.method])
        r.rng = ckpt["rng"][r.method]
    log = list(ckpt.get("log", []))
    for r in runs:
        r.best = min((x["val"]["loss"] for x in log if x["model"] == r.method), default=math.inf)
    return int(ckpt["epoch"]), log


def train_one_epoch(run: Run, train_set: KeypointDataset, cfg: Config, epoch: int, bar) -> dict[str, float]:
    """One pass in the epoch's own shuffled order; returns each named loss of the criterion, mean per image.

    Under torchrun this rank trains on its share of the order with ``batch_size / world_size`` images per step; the
    means are averaged over ranks (every rank has the same number of images).
    """
    model, info = (run.model if run.step_model is None else run.step_model), run.dist
    model.train()
    totals: dict[str, torch.Tensor] = {}
    batch_size = local_batch_size(cfg.batch_size, info)
    steps = train_set.num_batches(batch_size, info)
    count = 0
    for step, (images, targets, _) in enumerate(train_set.batches(batch_size, epoch_generator(cfg.seed, epoch), info),
                                                1):
        with autocast(images.device, cfg.amp, cfg.CPU_BF16_DEFAULT):
            outputs = model(images)
        losses = run.criterion(outputs, targets)
        loss = losses["loss"]
        run.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        run.optimizer.step()
        for name, value in losses.items():  # on the device: no host sync per step
            if name not in totals:
                totals[name] = torch.zeros((), dtype=torch.float64, device=train_set.device)
            totals[name] += value.detach() * len(images)
        count += len(images)
        bar.update(1)
        if step % LOG_EVERY == 0 or step == steps:
            check_finite({f"{run.method} loss": float(totals["loss"])}, epoch, step)
            bar.set_postfix(model=run.method, epoch=epoch, loss=f"{float(loss.detach()):.3g}")
    return all_reduce_mean({name: float(total) / count for name, total in totals.items()}, info, train_set.device)


def run_epoch(run: Run, cfg: Config, train_set: KeypointDataset, val_set: KeypointDataset, epoch: int, bar,
              snapshots: dict | None) -> dict:
    """Train and validate one model for one epoch on datasets that carry its codec; saves its best model; returns
    the log record."""
    set_rng_state(run.rng)
    t0, cpu0 = time.perf_counter(), time.process_time()
    train_losses = train_one_epoch(run, train_set, cfg, epoch, bar)
    t1 = time.perf_counter()
    keep = len(snapshots["val_indices"]) if snapshots is not None else 0
    # Every rank validates the same model (rank 0's) on the full set, so all ranks get rank 0's metrics.
    broadcast_buffers(run.model, run.dist)
    val = evaluate(run.model, val_set, VAL_BATCH_SIZE, cfg.amp, keep, run.criterion)
    check_finite({f"{run.method} validation loss": val["loss"]}, epoch, "validation")
    run.rng = rng_state()
    m = val["metrics"]
    is_best = val["loss"] < run.best
    if is_best:
        run.best = val["loss"]
    if is_best and run.dist.is_main:
        save_checkpoint(Path(cfg.results_dir) / f"{run.method}_model.pth", problem=PROBLEM, config=run.config,
                        model=run.model, epoch=epoch)
    if snapshots is not None:
        snapshots["epochs"][epoch] = val["outputs"].half()
    return {"model": run.method, "epoch": epoch, "train": train_losses,
            "val": {**val["losses"], "pck": m["pck"], "pck_swap_invariant": m.get("swap_invariant", m)["pck"],
                    "auc": m["auc"], "mean_px_error": m["mean_px_error"]},
            "best": is_best, TIMING_KEY: {"train_s": round(t1 - t0, 3), "val_s": round(time.perf_counter() - t1, 3),
                                          "cpu_s": round(time.process_time() - cpu0, 3)}}


def train(cfg: Config, resume: bool = False, command: str = "python problem2/train.py", data: tuple | None = None,
          snapshots: bool = True) -> list[dict]:
    """The whole run; returns the log of the models it trained (one record per model and epoch).

    The models take turns, one epoch each, and ``last.pth`` holds all of them after every epoch. Every input
    (data, checkpoint to resume) is read and checked before the first file is written. ``data`` may pass
    preloaded ``(train, val)`` datasets (the ablations reuse them).
    """
    results = require_output_dir(cfg.results_dir)
    last = results / "last.pth"
    ckpt = None
    if resume:
        ckpt = load_checkpoint(require_resume_checkpoint(results), PROBLEM)
        cfg = resumed_config(Config, ckpt.get("config", {}), cfg, recorded_precision(results))
    info, device = init_distributed(pick_device(cfg.device))
    quiet_unless_main(info)
    local_batch_size(cfg.batch_size, info)
    if data is None:
        if info.is_main:
            ensure_data(cfg.data_dir, is_default=Path(cfg.data_dir).resolve() == Path(Config().data_dir).resolve(),
                        dataset="keypoints")
        barrier(info)
        data = load_data(cfg)
    train_set, val_set = (d.to(device) for d in data)
    names = train_set.keypoint_names
    methods = trained_methods(cfg.model)
    runs = build_runs(cfg, methods, names, device)
    start, log = restore_last(ckpt, runs, last) if ckpt is not None else (0, [])
    for r in runs:  # the module that training steps go through: DDP wrapper and/or compiled, else the model
        if info.enabled:
            r.step_model, r.dist = wrap_model(r.model, info, device), info
        if cfg.compile:
            r.step_model = maybe_compile(r.model if r.step_model is None else r.step_model, True)

    snap_path = results / "heatmap_snapshots.pt"
    snap_at = snapshot_epochs(cfg.epochs) if (snapshots and "heatmap" in methods) else set()
    snaps = {"val_indices": list(range(min(SNAPSHOT_IMAGES, len(val_set)))), "epochs": {}}
    if snap_at and start > 0 and snap_path.is_file():
        snaps["epochs"] = {e: v for e, v in load_snapshots(snap_path)["epochs"].items() if e <= start}
    # Records of a model this run does not train stay in the log file.
    log_path = results / "training_log.json"
    kept = []
    if log_path.is_file():
        try:
            old = json.loads(log_path.read_text())
            kept = [r for r in old if isinstance(r, dict) and r.get("model") in METHODS and r["model"] not in methods]
        except (json.JSONDecodeError, UnicodeDecodeError, TypeError):
            pass  # rewritten below
    save_log = lambda: write_log(log_path, [r for m in METHODS for r in kept + log if r["model"] == m])  # noqa: E731

    if start >= cfg.epochs:
        print(f"nothing to do: {last} already holds epoch {start} of {cfg.epochs}")
        if info.is_main:
            save_log()
        return log
    if info.is_main:
        extra = {"world_size": info.world_size} if info.enabled else {}
        precision = resolve_precision(device, cfg.amp, cfg.CPU_BF16_DEFAULT)
        atomic_write_json(results / "config.json", {**dataclasses.asdict(cfg), "resolved_device": str(device),
                                                    "precision": precision,
                                                    "command": command, **extra})
    print(f"training {' and '.join(methods)} on {device}: {len(train_set)} train / {len(val_set)} val images, "
          f"epochs {start + 1}..{cfg.epochs}, results in {results}{info.describe()}")
    steps = train_set.num_batches(local_batch_size(cfg.batch_size, info), info)
    bar = progress(None, desc="train", total=steps * len(runs) * (cfg.epochs - start), unit="step")
    saved = start  # last epoch whose last.pth is on disk
    try:
        for epoch in range(start + 1, cfg.epochs + 1):
            for run in runs:
                snap = snaps if (run.method == "heatmap" and epoch in snap_at) else None
                record = run_epoch(run, cfg, train_set.with_codec(run.codec), val_set.with_codec(run.codec),
                                   epoch, bar, snap)
                log.append(record)
                bar.write(f"{run.method} epoch {epoch}/{cfg.epochs}: train {record['train']['loss']:.4g}  val "
                          f"{record['val']['loss']:.4g}  "
                          + "  ".join(f"PCK@{t} {v:.3f}" for t, v in record["val"]["pck"].items())
                          + f"  ({record['time']['train_s']:.1f} s + {record['time']['val_s']:.1f} s)"
                          + ("  *best*" if record["best"] else ""), file=sys.stdout)
            # Best models and snapshots are on disk before last.pth: a run killed in between redoes this epoch.
            if info.is_main:
                if epoch in snap_at:
                    atomic_torch_save(snap_path, snaps)
                save_last(last, cfg, runs, epoch, log)
                save_log()
            saved = epoch
    except KeyboardInterrupt:
        bar.close()
        if info.is_main:
            print("\n" + interrupted_message(results, saved, command), file=sys.stderr)
        raise SystemExit(130) from None
    bar.close()
    return log


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--resume", action="store_true", help="continue from RESULTS_DIR/last.pth")
    cfg, ns = parse_config(Config, argv, parser=parser)
    tune_cpu_allocator()  # conv1's activations at batch 32 (64 MB) would be mmap-ed afresh every step
    try:
        log = train(cfg, resume=ns.resume, command=command_line("problem2/train.py", argv, drop=("--resume",)))
    finally:
        cleanup()
    for method in METHODS:
        recs = [r for r in log if r["model"] == method]
        if recs:
            best = min(recs, key=lambda r: r["val"]["loss"])
            print(f"{method}: best validation loss {best['val']['loss']:.4g} at epoch {best['epoch']} "
                  f"(PCK@0.05 {best['val']['pck']['0.05']:.3f}); saved {Path(cfg.results_dir) / f'{method}_model.pth'}")


if __name__ == "__main__":
    run_cli(main)
