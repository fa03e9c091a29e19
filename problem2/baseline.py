#!/usr/bin/env python3
"""Ablations of the heatmap model, judged by validation PCK (not MSE): sigma, heatmap resolution, skip connections.

Usage::

    python problem2/baseline.py                                   # all three ablations, 30 epochs per run
    python problem2/baseline.py --ablations sigma skip --epochs 10
    python problem2/baseline.py --resume                          # finished runs are skipped, an interrupted
                                                                  # one continues from its last epoch

Runs (the default sigma 2 / 64x64 / skip run is shared by the three families, so 7 runs in all):

* ``sigma``: sigma in {1, 2, 3, 4} heatmap pixels at 64x64 with skips;
* ``resolution``: heatmaps of 32, 64 and 128 pixels (the decoder gets one upsampling stage per doubling) at
  sigma 2 heatmap pixels, i.e. 8, 4 and 2 image pixels: the resolution and the target width in image
  pixels change together, as they do when only ``--heatmap-size`` changes;
* ``skip``: with and without the skip concatenations at sigma 2, 64x64.

Each run is a ``train.py`` run in ``<results-dir>/ablation/<run>/`` (same seed, data order, optimizer), with
its own ``last.pth`` for ``--resume``. Its best-validation-loss checkpoint is then scored by
validation PCK through the same :func:`~problem2.evaluate.evaluate` as the main models: MSE depends on sigma
and resolution, PCK does not. Writes ``ablation.json``, the ablation section of ``summary.md`` and
``figures/ablation_*.png``.

Time on the 2-core CPU: a 64x64 run trained at 14 s per epoch plus 1 s of validation (7.5 min for 30
epochs) with nothing else running, up to 10 min in a microbenchmark; per training step the 32x32 model
takes about 0.8x, the no-skip model 0.85x and the 128x128 model 1.4x the time of the 64x64 one. All 7
runs take about 1 h (``train_time_s`` in ``ablation.json`` has each run's measured time).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from dataclasses import dataclass
from pathlib import Path

if __package__ in (None, ""):  # run as a file: replace the script's folder with the repo root on sys.path
    sys.path[0] = str(Path(__file__).resolve().parents[1])

from common.cli import command_line, require_output_dir  # noqa: E402
from common.config import cfg_field, parse_config  # noqa: E402
from common.data import ensure_data  # noqa: E402
from common.errors import run_cli  # noqa: E402
from common.io import atomic_write_json  # noqa: E402
from common.report import nan_to_none  # noqa: E402
from common.runtime import pick_device, tune_cpu_allocator  # noqa: E402
from problem2.codec import build_codec  # noqa: E402
from problem2.config import Config  # noqa: E402
from problem2.evaluate import evaluate, load_model  # noqa: E402
from problem2.figures import plot_ablations  # noqa: E402
from problem2.metrics import THRESHOLDS  # noqa: E402
from problem2.report import write_summary  # noqa: E402
from problem2.train import VAL_BATCH_SIZE, load_data, train  # noqa: E402

FAMILIES = ("sigma", "resolution", "skip")


@dataclass
class AblationConfig(Config):
    model: str = cfg_field("heatmap", "ablations train the heatmap model only", cli=False)
    ablations: list[str] = cfg_field(list(FAMILIES), "which ablations to run", choices=list(FAMILIES))
    sigmas: list[float] = cfg_field([1.0, 2.0, 3.0, 4.0], "sigma values of the sigma ablation (heatmap pixels)",
                                    gt=0)
    resolutions: list[int] = cfg_field([32, 64, 128], "heatmap sizes of the resolution ablation",
                                       choices=[16, 32, 64, 128])


def run_name(sigma: float, heatmap_size: int, skip: bool) -> str:
    return f"sigma{sigma:g}_res{heatmap_size}_{'skip' if skip else 'noskip'}"


def plan(cfg: AblationConfig) -> tuple[dict[str, list[str]], dict[str, dict]]:
    """``(families: {family: [run names]}, runs: {run name: {sigma, heatmap_size, skip}})``, runs deduplicated."""
    variants = {
        "sigma": [(s, cfg.heatmap_size, cfg.skip) for s in cfg.sigmas],
        "resolution": [(cfg.sigma, r, cfg.skip) for r in cfg.resolutions],
        "skip": [(cfg.sigma, cfg.heatmap_size, s) for s in (True, False)],
    }
    families, runs = {}, {}
    for family in FAMILIES:
        if family in cfg.ablations:
            families[family] = []
            for sigma, hs, skip in variants[family]:
                name = run_name(sigma, hs, skip)
                runs.setdefault(name, {"sigma": float(sigma), "heatmap_size": hs, "skip": skip})
                if name not in families[family]:
                    families[family].append(name)
    return families, runs


def run_ablations(cfg: AblationConfig, resume: bool, command: str) -> dict:
    results_dir = require_output_dir(cfg.results_dir)
    device = pick_device(cfg.device)
    ensure_data(cfg.data_dir, is_default=Path(cfg.data_dir).resolve() == Path(Config().data_dir).resolve(),
                dataset="keypoints")
    data = load_data(cfg)  # decoded once, shared by every run
    families, runs = plan(cfg)
    base = {f.name: getattr(cfg, f.name) for f in dataclasses.fields(Config)}
    out_runs = {}
    for i, (name, v) in enumerate(runs.items(), 1):
        print(f"[{i}/{len(runs)}] {name}")
        run_dir = results_dir / "ablation" / name
        run_cfg = Config(**{**base, **v, "model": "heatmap", "results_dir": str(run_dir)})
        log = train(run_cfg, resume=resume, command=command, data=data, snapshots=False)
        model, ckpt = load_model(run_dir / "heatmap_model.pth", device)
        val = data[1].with_codec(build_codec("heatmap", run_cfg, data[1].keypoint_names)).to(device)
        res = evaluate(model, val, VAL_BATCH_SIZE, cfg.amp)
        out_runs[name] = {**v, "dir": str(run_dir), "epoch": ckpt["epoch"], "val_loss": res["loss"],
                          "metrics": res["metrics"], "final_epoch_val_pck": log[-1]["val"]["pck"],
                          "val_pck_by_epoch": [r["val"]["pck"] for r in log],
                          "train_time_s": round(sum(r["time"]["train_s"] + r["time"]["val_s"] for r in log), 1)}
    report = {"command": command, "epochs": cfg.epochs, "seed": cfg.seed, "device": str(device),
              "config": dataclasses.asdict(cfg), "thresholds": list(THRESHOLDS), "families": families,
              "runs": out_runs}
    report = merge_previous(results_dir / "ablation.json", report)
    plot_ablations(report, results_dir / "figures" / "ablation.png")
    atomic_write_json(results_dir / "ablation.json", nan_to_none(report))
    write_summary(results_dir)
    return report


def merge_previous(path: Path, report: dict) -> dict:
    """Keep the families of an earlier ``ablation.json`` that this run did not redo, if epochs and seed match."""
    try:
        old = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError, UnicodeDecodeError):
        return report
    if not isinstance(old, dict) or (old.get("epochs"), old.get("seed")) != (report["epochs"], report["seed"]):
        return report
    for family, names in old.get("families", {}).items():
        if family not in report["families"] and all(n in old.get("runs", {}) for n in names):
            report["families"][family] = names
            for n in names:
                report["runs"].setdefault(n, old["runs"][n])
    report["families"] = {f: report["families"][f] for f in FAMILIES if f in report["families"]}
    return report


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--resume", action="store_true",
                        help="skip finished runs and continue an interrupted one from its last.pth")
    cfg, ns = parse_config(AblationConfig, argv, parser=parser)
    tune_cpu_allocator()
    report = run_ablations(cfg, ns.resume, command_line("problem2/baseline.py", argv))
    for family, names in report["families"].items():
        for n in names:
            p = report["runs"][n]["metrics"]["pck"]
            print(f"{family:>10} {n:>24}: " + "  ".join(f"PCK@{t}={v:.3f}" for t, v in p.items()))
    print(f"wrote {Path(cfg.results_dir) / 'ablation.json'} and the ablation section of summary.md")


if __name__ == "__main__":
    run_cli(main)
