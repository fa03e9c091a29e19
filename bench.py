#!/usr/bin/env python3
"""Benchmark the real code paths of both problems: pure model step, real training step, evaluation.

For each problem, in one process:

1. pure model step: forward + backward + optimizer step on random tensors of the specified batch (or --batch-size);
2. real training step: the actual dataset batch, target building (matching / heatmaps), loss (with hard
   negative mining), backward and optimizer step;
3. non-model time: step 2 without the model (batch fetch, targets, loss and its backward on random head
   outputs of the right shape);
4. evaluation over the validation set (problem 1: inference + decode + NMS + AP; problem 2: inference +
   decoding + PCK) against pure inference over the same images.

Usage::

    python bench.py                          # both problems, auto device, 5 timed steps after 2 warm-up steps
    python bench.py --problem 1 --device cpu --steps 10 --json results/bench_cpu.json
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

if __package__ in (None, ""):
    sys.path[0] = str(Path(__file__).resolve().parent)

from common.cli import command_line, require_output_dir  # noqa: E402
from common.data import ensure_data  # noqa: E402
from common.errors import UserError, run_cli  # noqa: E402
from common.io import atomic_write_json  # noqa: E402
from common.machine import run_machine  # noqa: E402
from common.runtime import (  # noqa: E402
    STUDY_AMP_HELP,
    autocast,
    maybe_compile,
    memory_format,
    pick_device,
    resolve_precision,
    set_seed,
    tune_cpu_allocator,
)
from common.timing import peak_memory_mb, reset_peak_memory, sync, time_steps  # noqa: E402


def _rates(batch: int, seconds: float) -> dict:
    return {"s_per_step": seconds, "images_per_s": batch / seconds}


def bench_case(model, opt, amp_ctx, batch_size: int, fake_input, fake_loss, real_batch, real_loss, non_model,
               infer_batches, full_eval, n_val: int, device: torch.device, steps: int, warmup: int) -> dict:
    """Time one model's four paths; the callables differ per problem, the measurement does not.

    ``fake_loss(out)`` / ``real_loss(out, batch)`` give the loss to backpropagate; ``real_batch(i)`` fetches a
    real batch (images first); ``non_model(i)`` runs everything of a real step but the model;
    ``infer_batches()`` yields validation image batches; ``full_eval()`` is the real evaluation path.
    """
    reset_peak_memory(device)

    def step(images, loss_of):
        model.train()
        with amp_ctx():
            out = model(images)
        loss = loss_of(out)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    def real(i):
        batch = real_batch(i)
        step(batch[0], lambda out: real_loss(out, batch))

    @torch.no_grad()
    def infer_only(_):
        model.eval()
        for images in infer_batches():
            with amp_ctx():
                model(images)

    t_pure = time_steps(lambda i: step(fake_input, fake_loss), steps, warmup, device)
    t_real = time_steps(real, steps, warmup, device)
    t_nm = time_steps(non_model, max(steps, 20), warmup, device)
    eval_reps = max(1, steps // 5)
    t_inf = time_steps(infer_only, eval_reps, 1, device)
    t_eval = time_steps(lambda _: full_eval(), eval_reps, 1, device)
    return {
        "batch_size": batch_size,
        "pure_model_step": _rates(batch_size, t_pure),
        "real_training_step": _rates(batch_size, t_real),
        "real_over_pure": t_real / t_pure,
        "non_model_ms_per_step": t_nm * 1000,
        "pure_inference_val": _rates(n_val, t_inf),
        "evaluation_val": _rates(n_val, t_eval),
        "evaluation_over_inference": t_eval / t_inf,
        "peak_memory_mb": peak_memory_mb(device),
    }


def _full_batches(n: int, b: int) -> list[torch.Tensor]:
    """Fixed shuffled index batches of exactly ``b`` items (a short last batch would skew per-step time).

    A dataset smaller than one batch is cycled, so tiny test data still gives full batches.
    """
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(0))
    perm = perm.repeat(-(-b // n)) if n < b else perm
    return [idx for idx in perm.split(b) if len(idx) == b]


def bench_problem1(data_dir: Path, device: torch.device, steps: int, warmup: int,
                   channels_last: bool | None = None, compile: bool = False, amp: bool | None = None,
                   batch_size: int | None = None) -> dict:
    """``channels_last``: the model's memory format (``None``: the config default); ``compile``: time the
    training and inference steps through ``torch.compile`` (evaluation stays eager, as in the trainers);
    ``amp``: the ``--amp`` switch (``None``: the default precision of ``device``); ``batch_size``: the training
    batch (``None``: the specification's)."""
    from problem1.config import IMAGE_SIZE, Config
    from problem1.dataset import load_split
    from problem1.evaluate import evaluate
    from problem1.loss import build_criterion
    from problem1.model import build_model
    from problem1.train import build_optimizer
    from problem1.utils import default_anchors

    cfg = Config(data_dir=str(data_dir), amp=amp,
                 **({} if channels_last is None else {"channels_last": channels_last}))
    ensure_data(data_dir, is_default=False, dataset="detection")
    train_set, val_set = load_split(data_dir, "train").to(device), load_split(data_dir, "val").to(device)
    set_seed(cfg.seed)
    model = build_model(cfg).to(device)
    opt = build_optimizer(model, cfg)
    criterion = build_criterion(cfg)
    anchors = default_anchors().to(device)
    b = batch_size or cfg.batch_size
    batches = _full_batches(len(train_set), b)
    fake_images = torch.rand(b, 3, IMAGE_SIZE, IMAGE_SIZE, device=device)
    with torch.no_grad():
        fake_heads = [torch.randn_like(o).requires_grad_() for o in model(fake_images)]

    def non_model(i):
        _, boxes, labels = train_set.get_batch(batches[i % len(batches)])
        criterion(fake_heads, (boxes, labels), anchors)["loss_total"].backward()

    return {"precision": resolve_precision(device, cfg.amp, cfg.CPU_BF16_DEFAULT)} | bench_case(
        maybe_compile(model, compile), opt, lambda: autocast(device, cfg.amp, cfg.CPU_BF16_DEFAULT), b, fake_images,
        fake_loss=lambda out: sum(o.float().square().mean() for o in out),
        real_batch=lambda i: train_set.get_batch(batches[i % len(batches)]),
        real_loss=lambda out, batch: criterion(out, batch[1:], anchors)["loss_total"],
        non_model=non_model,
        infer_batches=lambda: (val_set.get_batch(idx)[0] for idx in torch.arange(len(val_set)).split(
            cfg.eval_batch_size)),
        full_eval=lambda: evaluate(model, val_set, cfg, device),
        n_val=len(val_set), device=device, steps=steps, warmup=warmup)


def bench_problem2(data_dir: Path, device: torch.device, steps: int, warmup: int, compile: bool = False,
                   channels_last: bool | None = None, amp: bool | None = None, batch_size: int | None = None) -> dict:
    """Both models; ``channels_last``, ``compile``, ``amp`` and ``batch_size`` as in :func:`bench_problem1`."""
    from problem2.config import Config
    from problem2.evaluate import evaluate
    from problem2.methods import build_codec, build_criterion, build_model
    from problem2.train import VAL_BATCH_SIZE, build_optimizer, load_data

    cfg = Config(data_dir=str(data_dir), amp=amp)
    ensure_data(data_dir, is_default=False, dataset="keypoints")
    train_all, val_all = (d.to(device) for d in load_data(cfg))
    b = batch_size or cfg.batch_size
    batches = _full_batches(len(train_all), b)
    fake_images = torch.rand(b, 1, 128, 128, device=device)
    results = {}
    for method in ("heatmap", "regression"):
        codec, criterion = build_codec(method, cfg, train_all.keypoint_names), build_criterion(method, cfg)
        train_set, val_set = train_all.with_codec(codec), val_all.with_codec(codec)
        set_seed(cfg.seed)
        model = build_model(method, train_set.num_keypoints, cfg).to(
            device, memory_format=memory_format(cfg.channels_last if channels_last is None else channels_last))
        opt = build_optimizer(model, cfg)
        _, fake_targets, _ = train_set.get_batch(batches[0])
        fake_out = torch.rand_like(fake_targets, requires_grad=True)

        def non_model(i, train_set=train_set, fake_out=fake_out, criterion=criterion):
            _, targets, _ = train_set.get_batch(batches[i % len(batches)])
            criterion(fake_out, targets)["loss"].backward()

        results[method] = {"precision": resolve_precision(device, cfg.amp)} | bench_case(
            maybe_compile(model, compile), opt, lambda: autocast(device, cfg.amp), b, fake_images,
            fake_loss=lambda out, t=fake_targets: (out.float() - t).square().mean(),
            real_batch=lambda i, ts=train_set: ts.get_batch(batches[i % len(batches)]),
            real_loss=lambda out, batch, criterion=criterion: criterion(out, batch[1])["loss"],
            non_model=non_model,
            infer_batches=lambda vs=val_set: (vs.get_batch(idx)[0] for idx in torch.arange(len(vs)).split(
                VAL_BATCH_SIZE)),
            full_eval=lambda m=model, vs=val_set: evaluate(m, vs, VAL_BATCH_SIZE, cfg.amp),
            n_val=len(val_set), device=device, steps=steps, warmup=warmup)
    return results


def amp_speedups(rows: dict[str, dict]) -> dict[str, dict]:
    """For each run timed in both precisions (rows ``'<run> fp32'`` and ``'<run> bf16'``): bf16 over fp32 in
    images per second, for the real training step and the evaluation."""
    out = {}
    for name, r in rows.items():
        base = name.removesuffix(" bf16")
        fp32 = rows.get(base + " fp32")
        if name.endswith(" bf16") and fp32 is not None and r["precision"] == "bf16":
            out[base] = {k: r[k]["images_per_s"] / fp32[k]["images_per_s"]
                         for k in ("real_training_step", "evaluation_val")}
    return out


def format_table(rows: dict[str, dict]) -> str:
    head = ("run", "precision", "pure img/s", "real img/s", "real/pure", "non-model ms", "eval img/s", "eval/infer",
            "peak MB")
    lines = [" | ".join(head), " | ".join("---" for _ in head)]
    for name, r in rows.items():
        lines.append(" | ".join([
            name, r["precision"], f"{r['pure_model_step']['images_per_s']:.1f}",
            f"{r['real_training_step']['images_per_s']:.1f}",
            f"{r['real_over_pure']:.3f}", f"{r['non_model_ms_per_step']:.2f}",
            f"{r['evaluation_val']['images_per_s']:.1f}", f"{r['evaluation_over_inference']:.3f}",
            f"{r['peak_memory_mb']:.0f}"]))
    return "\n".join("| " + line + " |" for line in lines)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--problem", choices=["1", "2", "all"], default="all")
    p.add_argument("--device", default="auto", help="auto (cuda > mps > cpu), cpu, cuda, cuda:N or mps")
    p.add_argument("--steps", type=int, default=5, help="timed training steps per measurement")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps before each measurement")
    p.add_argument("--batch-size", type=int, default=None,
                   help="training batch of every row (default: each problem's specified batch, 16 and 32)")
    p.add_argument("--data-dir", default="./datasets", help="reference data (generated there if missing)")
    p.add_argument("--json", default=None, help="also write the results to this JSON file")
    p.add_argument("--compare-layouts", action="store_true",
                   help="time both memory formats (channels-last and contiguous), not just the configured one")
    p.add_argument("--compile", action="store_true", help="time the training and inference steps under torch.compile")
    p.add_argument("--amp", action=argparse.BooleanOptionalAction, default=None, help=STUDY_AMP_HELP)
    p.add_argument("--compare-amp", action="store_true",
                   help="time every run in fp32 (--no-amp) and in bf16 (--amp) side by side; where bf16 is not "
                        "available (a CPU without native bf16) both rows are fp32 and no speed-up is reported")
    args = p.parse_args(argv)
    if args.steps < 1 or args.warmup < 0:
        raise UserError(f"--steps must be >= 1 and --warmup >= 0 (got {args.steps}, {args.warmup})")
    if args.batch_size is not None and args.batch_size < 1:
        raise UserError(f"--batch-size must be >= 1 (got {args.batch_size})")
    if args.json:
        if Path(args.json).is_dir():
            raise UserError(f"--json {args.json}: is a folder, not a file")
        require_output_dir(Path(args.json).parent, "--json")
    device = pick_device(args.device)
    tune_cpu_allocator()
    rows = {}
    layouts = [(" channels_last", True), (" contiguous", False)] if args.compare_layouts else [("", None)]
    precisions = [(" fp32", False), (" bf16", True)] if args.compare_amp else [("", args.amp)]
    for suffix, cl in layouts:
        for amp_suffix, amp in precisions:
            if args.problem in ("1", "all"):
                rows["problem1" + suffix + amp_suffix] = bench_problem1(
                    Path(args.data_dir), device, args.steps, args.warmup, cl, args.compile, amp, args.batch_size)
            if args.problem in ("2", "all"):
                for method, r in bench_problem2(Path(args.data_dir), device, args.steps, args.warmup, args.compile,
                                                cl, amp, args.batch_size).items():
                    rows[f"problem2 {method}{suffix}{amp_suffix}"] = r
    sync(device)
    meta = {"device": str(device), "torch": torch.__version__, "threads": torch.get_num_threads(),
            "machine": run_machine(str(device)), "steps": args.steps, "warmup": args.warmup, "compile": args.compile,
            "command": command_line("bench.py", argv)}
    print(format_table(rows))
    speedups = amp_speedups(rows)
    for name, s in speedups.items():
        print(f"{name}: bf16 / fp32 images per second: training step {s['real_training_step']:.2f}x, "
              f"evaluation {s['evaluation_val']:.2f}x")
    if args.compare_amp and not speedups:
        print(f"bf16 is not available on {device} here (no native bf16), so both precisions ran in fp32")
    print(json.dumps(meta))
    if args.json:
        atomic_write_json(args.json, {"meta": meta, "results": rows, "amp_speedups": speedups})


if __name__ == "__main__":
    run_cli(main)
