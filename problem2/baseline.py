#!/usr/bin/env python3
"""Ablations and variants, each run judged by validation PCK (not by its loss): the heatmap model's sigma,
resolution and skip connections, and the study beyond the specification (regression heads, longer training, the
integral and SimCC methods).

Usage::

    python problem2/baseline.py                                   # the heatmap ablations, 30 epochs per run
    python problem2/baseline.py --ablations sigma skip --epochs 10
    python problem2/baseline.py --ablations regression-head regression-long methods    # beyond the specification
    python problem2/baseline.py                                   # again: finished runs are skipped, an
                                                                  # interrupted one continues from its last epoch

Heatmap ablations (the default; the default sigma 2 / 64x64 / skip run is shared by the three, so 7 runs in all):

* ``sigma``: sigma in {1, 2, 3, 4} heatmap pixels at 64x64 with skips;
* ``resolution``: heatmaps of 32, 64 and 128 pixels (the decoder gets one upsampling stage per doubling) at
  sigma 2 heatmap pixels, i.e. 8, 4 and 2 image pixels: the resolution and the target width in image
  pixels change together, as they do when only ``--heatmap-size`` changes;
* ``skip``: with and without the skip concatenations at sigma 2, 64x64.

Beyond the specification (why direct regression loses, and the coordinate heads that close the gap; 10 runs):

* ``regression-head``: the RegressionNet grid ``--regression-heads`` (gap = the specification, flatten, coord) x
  ``--dropouts`` (0.5 = the specification, 0), 6 regression-only runs;
* ``regression-long``: the specified regression trained ``--long-factor`` (3) times ``--epochs``: is it only
  unconverged?
* ``methods``: the four methods at their defaults: heatmap and regression (the specified runs, shared with the
  families above) and the integral and SimCC methods.

This is the study's problem-2 part with one seed: the runs, their names and their folders are the study's
(:func:`problem2.ablations.plan`, ``experiments/``). Each run is a ``train.py`` run in
``<results-dir>/study/<run>/seed<seed>/`` (same seed, data order, optimizer), evaluated there by ``evaluate.py``'s
own code (its best-validation-loss checkpoint scored by validation PCK: the losses differ between methods and depend
on sigma and resolution, PCK does not). As in the study, a finished run is skipped and an interrupted one continues
from its ``last.pth``, so a ``study.py`` on the same results folder reuses these runs as its seed-641 runs and the
other way round. Writes ``ablation.json``, the ablation sections of
``summary.md`` (for the study beyond the specification: one table, where the hand predictions land, and a
conclusion generated from the numbers), ``figures/ablation.png`` (heatmap ablations) and
``figures/methods_pck_curves.png`` (every method and variant). An earlier ``ablation.json`` of the same epochs and
seed keeps the families this command did not run.

Time on the 2-core CPU: a 64x64 heatmap run trained at 14 s per epoch plus 1 s of validation (7.5 min for 30
epochs) with nothing else running, up to 10 min in a microbenchmark; per training step the 32x32 model
takes about 0.8x, the no-skip model 0.85x and the 128x128 model 1.4x the time of the 64x64 one. All 7 heatmap
runs take about 1 h. The specified regression trains at about 5-6 s per epoch; integral and simcc run the
heatmap network (about its time). ``train_time_s`` (wall) and ``cpu_time_s`` (process CPU time) in
``ablation.json`` hold each run's measured time.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a file: replace the script's folder with the repo root on sys.path
    sys.path[0] = str(Path(__file__).resolve().parents[1])

from common.cli import command_line, require_output_dir  # noqa: E402
from common.config import parse_config  # noqa: E402
from common.data import load_json  # noqa: E402
from common.errors import run_cli  # noqa: E402
from common.io import atomic_write_json  # noqa: E402
from common.report import nan_to_none  # noqa: E402
from common.runtime import pick_device, tune_cpu_allocator  # noqa: E402
from experiments.registry import STUDY_DIR, Run  # noqa: E402
from experiments.runner import read_timing, run_log, run_study  # noqa: E402
from problem2.ablations import FAMILIES, AblationConfig, plan  # noqa: E402
from problem2.config import HEATMAP_FAMILIES, STUDY_FAMILIES, Config  # noqa: E402
from problem2.figures import plot_ablations, plot_methods  # noqa: E402
from problem2.metrics import THRESHOLDS  # noqa: E402
from problem2.report import write_summary  # noqa: E402

__all__ = ["FAMILIES", "AblationConfig", "plan", "main"]


def plan_runs(cfg: AblationConfig, results_dir: Path) -> tuple[dict[str, list[str]], list[Run]]:
    """The families and the study's runs of ``cfg`` (seed ``cfg.seed``): every other setting is ``cfg``'s."""
    families, variants, _ = plan(cfg)
    base = {f.name: getattr(cfg, f.name) for f in dataclasses.fields(Config)}
    runs = []
    for key, v in variants.items():
        run_dir = results_dir / STUDY_DIR / key / f"seed{cfg.seed}"
        runs.append(Run(key, "problem2", cfg.seed, Config(**{**base, **v, "results_dir": str(run_dir)}), run_dir,
                        figures=cfg.run_figures))
    return families, runs


def run_entry(run: Run, variant: dict) -> dict:
    """A finished run's ``ablation.json`` entry, from what its folder holds (``metrics.json``, the training log)."""
    result = load_json(run.dir / "metrics.json", ("methods",))["methods"][run.method]
    log = run_log(run)
    cpu = [r["time"].get("cpu_s") for r in log]  # absent in epochs logged before it was recorded
    return {**variant, "dir": str(run.dir), "epoch": result["epoch"], "val_loss": result["val_loss"],
            "metrics": result["metrics"], "final_epoch_val_pck": log[-1]["val"]["pck"],
            "val_pck_by_epoch": [r["val"]["pck"] for r in log],
            "train_time_s": round(sum(r["time"]["train_s"] + r["time"]["val_s"] for r in log), 1),
            "cpu_time_s": round(sum(cpu), 1) if None not in cpu else None,
            "evaluate_s": (read_timing(run.dir) or {}).get("evaluate_s")}


def run_ablations(cfg: AblationConfig, command: str) -> dict:
    results_dir = require_output_dir(cfg.results_dir)
    device = pick_device(cfg.device)
    if (results_dir / "ablation").is_dir():
        print(f"note: {results_dir / 'ablation'} holds runs of baseline.py's earlier layout, which are not reused: "
              f"runs now live in {results_dir / STUDY_DIR}/<run>/seed<S>/, as in study.py", file=sys.stderr)
    families, runs = plan_runs(cfg, results_dir)
    variants = plan(cfg)[1]
    run_study(runs, [], results_dir, cfg.device)  # trains, resumes or skips each run, then evaluates it
    out_runs = {r.experiment: run_entry(r, variants[r.experiment]) for r in runs}
    report = {"command": command, "epochs": cfg.epochs, "seed": cfg.seed, "device": str(device),
              "config": dataclasses.asdict(cfg), "thresholds": list(THRESHOLDS), "families": families,
              "runs": out_runs}
    ceiling = load_json(runs[0].dir / "metrics.json").get("ceiling")  # the validation set's, as evaluate.py wrote it
    if ceiling and not cfg.canonical_hands:
        report["ceiling"] = ceiling
    report = merge_previous(results_dir / "ablation.json", report)
    heatmap_families = {f: n for f, n in report["families"].items() if f in HEATMAP_FAMILIES}
    if heatmap_families:
        plot_ablations({**report, "families": heatmap_families}, results_dir / "figures" / "ablation.png")
    study = study_runs(report)
    if study:
        plot_methods(report, study, results_dir / "figures" / "methods_pck_curves.png")
    atomic_write_json(results_dir / "ablation.json", nan_to_none(report))
    write_summary(results_dir)
    return report


def study_runs(report: dict) -> list[str]:
    """The runs of the study beyond the specification, each once, in the order of its families."""
    return list(dict.fromkeys(n for f, names in report["families"].items() if f in STUDY_FAMILIES for n in names))


def merge_previous(path: Path, report: dict) -> dict:
    """Keep the families of an earlier ``ablation.json`` that this run did not redo, if epochs and seed match."""
    try:
        old = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError, UnicodeDecodeError):
        return report
    if not isinstance(old, dict) or (old.get("epochs"), old.get("seed")) != (report["epochs"], report["seed"]):
        return report
    if "ceiling" not in report and old.get("ceiling"):
        report["ceiling"] = old["ceiling"]
    for family, names in old.get("families", {}).items():
        # families of the earlier layout (folder names like sigma2_res64_skip) would show a run twice: left out
        if family not in report["families"] and all(n in old.get("runs", {}) and n.startswith("p2-") for n in names):
            report["families"][family] = names
            for n in names:
                report["runs"].setdefault(n, old["runs"][n])
    report["families"] = {f: report["families"][f] for f in FAMILIES if f in report["families"]}
    return report


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--resume", action="store_true",
                        help="always on, as in the study: finished runs are skipped and an interrupted one continues "
                        "from its last.pth (the flag is kept so that earlier commands still work)")
    cfg, ns = parse_config(AblationConfig, argv, parser=parser)
    tune_cpu_allocator()
    report = run_ablations(cfg, command_line("problem2/baseline.py", argv))
    for family, names in report["families"].items():
        for n in names:
            p = report["runs"][n]["metrics"]["pck"]
            print(f"{family:>15} {n:>32}: " + "  ".join(f"PCK@{t}={v:.3f}" for t, v in p.items()))
    print(f"wrote {Path(cfg.results_dir) / 'ablation.json'} and the ablation section of summary.md")


if __name__ == "__main__":
    run_cli(main)
