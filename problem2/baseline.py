#!/usr/bin/env python3
"""Ablations and variants, each run judged by validation PCK (not by its loss): the heatmap model's sigma,
resolution and skip connections, and the study beyond the specification (regression heads, longer training, the
integral and SimCC methods).

Usage::

    python problem2/baseline.py                                   # the heatmap ablations, 30 epochs per run
    python problem2/baseline.py --ablations sigma skip --epochs 10
    python problem2/baseline.py --ablations regression-head regression-long methods    # beyond the specification
    python problem2/baseline.py --resume                          # finished runs are skipped, an interrupted
                                                                  # one continues from its last epoch

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

Each run is a ``train.py`` run in ``<results-dir>/ablation/<run>/`` (same seed, data order, optimizer), with
its own ``last.pth`` for ``--resume``. Its best-validation-loss checkpoint is then scored by
validation PCK through the same :func:`~problem2.evaluate.evaluate` as the main models: the losses differ between
methods and depend on sigma and resolution, PCK does not. Writes ``ablation.json``, the ablation sections of
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
from problem2.config import HEATMAP_FAMILIES, REGRESSION_HEADS, STUDY_FAMILIES, Config  # noqa: E402
from problem2.evaluate import evaluate, load_model  # noqa: E402
from problem2.figures import plot_ablations, plot_methods  # noqa: E402
from problem2.loss import build_criterion  # noqa: E402
from problem2.metrics import THRESHOLDS, ceiling_metrics  # noqa: E402
from problem2.report import write_summary  # noqa: E402
from problem2.train import VAL_BATCH_SIZE, load_data, train  # noqa: E402

FAMILIES = (*HEATMAP_FAMILIES, *STUDY_FAMILIES)


@dataclass
class AblationConfig(Config):
    model: str = cfg_field("heatmap", "every run sets its own model", cli=False)
    ablations: list[str] = cfg_field(list(HEATMAP_FAMILIES), "which ablations to run: the heatmap ablations "
                                     "(sigma, resolution, skip: the default) and the study beyond the specification "
                                     "(regression-head, regression-long, methods)", choices=list(FAMILIES))
    sigmas: list[float] = cfg_field([1.0, 2.0, 3.0, 4.0], "sigma values of the sigma ablation (heatmap pixels)",
                                    gt=0)
    resolutions: list[int] = cfg_field([32, 64, 128], "heatmap sizes of the resolution ablation",
                                       choices=[16, 32, 64, 128])
    regression_heads: list[str] = cfg_field(list(REGRESSION_HEADS), "RegressionNet heads of the regression-head "
                                            "grid", choices=list(REGRESSION_HEADS))
    dropouts: list[float] = cfg_field([0.5, 0.0], "dropout values of the regression-head grid", min=0, lt=1)
    long_factor: int = cfg_field(3, "regression-long trains the regression model LONG_FACTOR x --epochs epochs",
                                 min=1)


def run_name(run: dict, epochs: int) -> str:
    """The folder name of a run: its method and the settings that make it a variant (``epochs``: the report's)."""
    m = run["model"]
    if m == "heatmap":
        name = f"sigma{run['sigma']:g}_res{run['heatmap_size']}_{'skip' if run['skip'] else 'noskip'}"
    elif m == "regression":
        name = f"regression_{run['regression_head']}_dropout{run['dropout']:g}"
    elif m == "integral":
        name = (f"integral_{run['integral_loss']}_div{run['integral_divergence']:g}_sigma{run['sigma']:g}"
                f"_res{run['heatmap_size']}")
    else:
        name = f"simcc_split{run['simcc_split_ratio']:g}_sigma{run['simcc_sigma']:g}_res{run['heatmap_size']}"
    return name + (f"_epochs{run['epochs']}" if run["epochs"] != epochs else "")


def plan(cfg: AblationConfig) -> tuple[dict[str, list[str]], dict[str, dict]]:
    """``(families: {family: [run names]}, runs: {run name: the Config fields it sets, model and epochs
    included})``, runs deduplicated (the specified heatmap and regression runs serve several families)."""
    e = cfg.epochs
    heat = lambda s, r, k: {"model": "heatmap", "sigma": float(s), "heatmap_size": r, "skip": k, "epochs": e}  # noqa: E731
    reg = lambda h, d, ep: {"model": "regression", "regression_head": h, "dropout": float(d), "epochs": ep}  # noqa: E731
    variants = {
        "sigma": [heat(s, cfg.heatmap_size, cfg.skip) for s in cfg.sigmas],
        "resolution": [heat(cfg.sigma, r, cfg.skip) for r in cfg.resolutions],
        "skip": [heat(cfg.sigma, cfg.heatmap_size, s) for s in (True, False)],
        "regression-head": [reg(h, d, e) for h in cfg.regression_heads for d in cfg.dropouts],
        "regression-long": [reg(cfg.regression_head, cfg.dropout, cfg.long_factor * e)],
        "methods": [heat(cfg.sigma, cfg.heatmap_size, cfg.skip), reg(cfg.regression_head, cfg.dropout, e),
                    {"model": "integral", "integral_loss": cfg.integral_loss,
                     "integral_divergence": float(cfg.integral_divergence), "sigma": float(cfg.sigma),
                     "heatmap_size": cfg.heatmap_size, "skip": cfg.skip, "epochs": e},
                    {"model": "simcc", "simcc_split_ratio": float(cfg.simcc_split_ratio),
                     "simcc_sigma": float(cfg.simcc_sigma), "heatmap_size": cfg.heatmap_size, "skip": cfg.skip,
                     "epochs": e}],
    }
    families, runs = {}, {}
    for family in FAMILIES:
        if family in cfg.ablations:
            families[family] = []
            for v in variants[family]:
                name = run_name(v, e)
                runs.setdefault(name, v)
                if name not in families[family]:
                    families[family].append(name)
    return families, runs


def run_ablations(cfg: AblationConfig, resume: bool, command: str) -> dict:
    results_dir = require_output_dir(cfg.results_dir)
    device = pick_device(cfg.device)
    ensure_data(cfg.data_dir, is_default=Path(cfg.data_dir).resolve() == Path(Config().data_dir).resolve(),
                dataset="keypoints")
    data = load_data(cfg)  # decoded once, shared by every run
    names = data[1].keypoint_names
    families, runs = plan(cfg)
    base = {f.name: getattr(cfg, f.name) for f in dataclasses.fields(Config)}
    out_runs = {}
    for i, (name, v) in enumerate(runs.items(), 1):
        print(f"[{i}/{len(runs)}] {name}")
        run_dir = results_dir / "ablation" / name
        run_cfg = Config(**{**base, **v, "results_dir": str(run_dir)})
        method = v["model"]
        # --resume continues a run that saved an epoch; one that never did (not started yet) starts afresh.
        log = train(run_cfg, resume=resume and (run_dir / "last.pth").is_file(), command=command, data=data,
                    snapshots=False)
        model, ckpt = load_model(run_dir / f"{method}_model.pth", device)
        val = data[1].with_codec(build_codec(method, run_cfg, names)).to(device)
        res = evaluate(model, val, VAL_BATCH_SIZE, cfg.amp, criterion=build_criterion(method, run_cfg))
        cpu = [r["time"].get("cpu_s") for r in log]  # absent in epochs logged before it was recorded
        out_runs[name] = {**v, "dir": str(run_dir), "epoch": ckpt["epoch"], "val_loss": res["loss"],
                          "metrics": res["metrics"], "final_epoch_val_pck": log[-1]["val"]["pck"],
                          "val_pck_by_epoch": [r["val"]["pck"] for r in log],
                          "train_time_s": round(sum(r["time"]["train_s"] + r["time"]["val_s"] for r in log), 1),
                          "cpu_time_s": round(sum(cpu), 1) if None not in cpu else None}
    report = {"command": command, "epochs": cfg.epochs, "seed": cfg.seed, "device": str(device),
              "config": dataclasses.asdict(cfg), "thresholds": list(THRESHOLDS), "families": families,
              "runs": out_runs}
    if data[1].hands is not None and not cfg.canonical_hands:
        report["ceiling"] = ceiling_metrics(data[1].keypoints.cpu(), data[1].hands)
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
