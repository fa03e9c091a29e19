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
its own ``last_heatmap.pth`` for ``--resume``. Its best-validation-loss checkpoint is then scored by
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

from common.config import cfg_field, parse_config  # noqa: E402
from common.errors import run_cli  # noqa: E402
from common.io import atomic_savefig, atomic_write_json  # noqa: E402
from common.plotting import pyplot  # noqa: E402
from common.runtime import pick_device, tune_cpu_allocator  # noqa: E402
from problem2.config import Config  # noqa: E402
from problem2.evaluate import (  # noqa: E402
    DENSE_THRESHOLDS,
    THRESHOLDS,
    evaluate,
    load_model,
    write_summary,
)
from problem2.train import ensure_data, load_data, train  # noqa: E402

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
    device = pick_device(cfg.device)
    ensure_data(cfg.data_dir, is_default=Path(cfg.data_dir).resolve() == Path(Config().data_dir).resolve())
    data = load_data(cfg)  # decoded once, shared by every run
    results_dir = Path(cfg.results_dir)
    families, runs = plan(cfg)
    base = {f.name: getattr(cfg, f.name) for f in dataclasses.fields(Config)}
    out_runs = {}
    for i, (name, v) in enumerate(runs.items(), 1):
        print(f"[{i}/{len(runs)}] {name}")
        run_dir = results_dir / "ablation" / name
        run_cfg = Config(**{**base, **v, "model": "heatmap", "results_dir": str(run_dir)})
        log = train(run_cfg, resume=resume, command=command, data=data, snapshots=False)
        model, ckpt = load_model(run_dir / "heatmap_model.pth", device)
        val = data[1].with_targets("heatmap", v["heatmap_size"], v["sigma"]).to(device)
        res = evaluate(model, "heatmap", val, 64, cfg.decoder, cfg.amp, hand_pairs=cfg.hand_pairs)
        out_runs[name] = {**v, "dir": str(run_dir), "epoch": ckpt["epoch"], "val_loss": res["loss"],
                          "metrics": res["metrics"], "final_epoch_val_pck": log[-1]["val"]["pck"],
                          "val_pck_by_epoch": [r["val"]["pck"] for r in log],
                          "train_time_s": round(sum(r["time"]["train_s"] + r["time"]["val_s"] for r in log), 1)}
    report = {"command": command, "epochs": cfg.epochs, "seed": cfg.seed, "device": str(device),
              "config": dataclasses.asdict(cfg), "thresholds": list(THRESHOLDS), "families": families,
              "runs": out_runs}
    report = merge_previous(results_dir / "ablation.json", report)
    plot_ablations(report, results_dir / "figures")
    atomic_write_json(results_dir / "ablation.json", report)
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


def _label(family: str, run: dict) -> str:
    return {"sigma": f"sigma {run['sigma']:g}", "resolution": f"{run['heatmap_size']}x{run['heatmap_size']}",
            "skip": "skip" if run["skip"] else "no skip"}[family]


def plot_ablations(report: dict, fig_dir: Path) -> None:
    plt = pyplot()
    fams = report["families"]
    fig, axes = plt.subplots(3, len(fams), figsize=(4.6 * len(fams), 11), squeeze=False)
    for col, (family, names) in enumerate(fams.items()):
        runs = [report["runs"][n] for n in names]
        labels = [_label(family, r) for r in runs]
        ax = axes[0, col]
        for t in THRESHOLDS:
            ax.plot(labels, [r["metrics"]["pck"][f"{t:g}"] for r in runs], marker="o", label=f"PCK@{t:g}")
        ax.plot(labels, [r["metrics"].get("swap_invariant", r["metrics"])["pck"]["0.05"] for r in runs], marker="s",
                ls="--", color="0.4", label="PCK@0.05 hand-swap-invariant")
        ax.set(title=f"{family}: validation PCK (best-val-loss epoch)", ylabel="PCK (bbox)", ylim=(0, 1.01),
               xlabel={"sigma": "target sigma (heatmap pixels)", "resolution": "heatmap size (pixels)",
                       "skip": "decoder skip connections"}[family])
        ax.legend(fontsize=7)
        ax = axes[1, col]
        for r, lab in zip(runs, labels, strict=True):
            ax.plot(DENSE_THRESHOLDS, r["metrics"]["curve"], label=f"{lab} (AUC {r['metrics']['auc']:.3f})")
        ax.set(title=f"{family}: PCK curves", xlabel="threshold (fraction of keypoint box diagonal)", ylabel="PCK",
               xlim=(0, 0.5), ylim=(0, 1.01))
        ax.legend(fontsize=7, loc="lower right")
        ax = axes[2, col]
        for r, lab in zip(runs, labels, strict=True):
            ax.plot(range(1, len(r["val_pck_by_epoch"]) + 1), [p["0.05"] for p in r["val_pck_by_epoch"]], label=lab)
        ax.set(title=f"{family}: validation PCK@0.05 per epoch", xlabel="epoch", ylabel="PCK@0.05", ylim=(0, 1.01))
        ax.legend(fontsize=7)
    fig.suptitle(f"Heatmap ablations ({report['epochs']} epochs per run, seed {report['seed']})")
    fig.tight_layout()
    atomic_savefig(fig, fig_dir / "ablation.png", dpi=100)
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--resume", action="store_true",
                        help="skip finished runs and continue an interrupted one from its last_heatmap.pth")
    cfg, ns = parse_config(AblationConfig, argv, parser=parser)
    tune_cpu_allocator()
    command = "python problem2/baseline.py " + " ".join(sys.argv[1:] if argv is None else argv)
    report = run_ablations(cfg, ns.resume, command.strip())
    for family, names in report["families"].items():
        for n in names:
            p = report["runs"][n]["metrics"]["pck"]
            print(f"{family:>10} {n:>24}: " + "  ".join(f"PCK@{t}={v:.3f}" for t, v in p.items()))
    print(f"wrote {Path(cfg.results_dir) / 'ablation.json'} and the ablation section of summary.md")


if __name__ == "__main__":
    run_cli(main)
