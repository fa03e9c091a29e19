#!/usr/bin/env python3
"""The whole study in one command: every experiment the report shows, each trained with several seeds (3 per
problem-1 experiment, 5 per problem-2 experiment), then ``RESULTS/study.json`` and ``RESULTS/REPORT.md``.

Usage::

    python study.py                                  # every experiment, 3 (problem 1) / 5 seeds, into results/
    python study.py --quick --results-dir /tmp/q     # the same pipeline on a small generated dataset, 1-2 epochs
    python study.py --only p1 --seeds 2              # problem 1 only (the report still shows what else is done)
    python study.py --seeds-for p1-cosine=1          # fewer (or more) seeds for one experiment; repeatable
    python study.py --report-only                    # rebuild study.json and REPORT.md from the results
    python study.py --export docs/report             # REPORT.md, study.json and the PNGs it links (<= 1 MB each)
    python study.py --export docs/report --readme README.md   # ... and README's headline block from that study.json
    python study.py --list                           # the experiments, their runs and each run's state
    python study.py --continue-from docs/report      # a new machine: carry the committed report's runs over, go on

Experiments (``--list`` names them all): problem 1's specification, ``--head-dilation 3`` and the cosine/10x-lr
run; problem 2's specified heatmap and regression, both on canonical hand labels, every ablation of
``problem2/baseline.py`` (sigma, resolution, skip; the regression-head grid, the 3x-longer regression, integral and
SimCC). Each run lives in ``RESULTS/study/<experiment>/seed<S>/``; seeds are 641 (the specification's), 1, 2, ...

Resumable at every level: a finished run (same config, evaluated) is skipped; an interrupted one continues from its
``last.pth`` (Ctrl-C or ``kill -9`` lose at most the epoch in progress); a folder holding a different run is an
error, never overwritten. Run the same command again to continue. On a new machine whose results folder is empty,
``--continue-from docs/report`` carries the finished runs of the committed report over first (those whose config
equals this study's), so the study goes on where the last export left it.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import subprocess
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a file: the repository root is this file's folder
    sys.path[0] = str(Path(__file__).resolve().parent)

from common.cli import command_line, require_output_dir  # noqa: E402
from common.data import ensure_data, load_json  # noqa: E402
from common.errors import UserError, run_cli  # noqa: E402
from common.lock import FolderLock  # noqa: E402
from common.machine import machine_info  # noqa: E402
from common.runtime import STUDY_AMP_HELP, pick_device, tune_cpu_allocator  # noqa: E402
from experiments.aggregate import build_study, refuse_fewer, write_study  # noqa: E402
from experiments.carry import carry_over  # noqa: E402
from experiments.data_summary import data_summary  # noqa: E402
from experiments.export import export  # noqa: E402
from experiments.figures import report_run_figures, write_figures  # noqa: E402
from experiments.parallel import default_threads, run_study_parallel  # noqa: E402
from experiments.readme import check_readme, update_readme  # noqa: E402
from experiments.registry import (  # noqa: E402
    MAX_SEEDS,
    PROBLEMS,
    Settings,
    build_registry,
    parse_seeds_for,
    plan,
    seeds_per_problem,
    study_seeds,
)
from experiments.report import write_report  # noqa: E402
from experiments.runner import (  # noqa: E402
    compared_experiments,
    is_carried,
    precision_conflicts,
    remove_stale_temps,
    run_state,
    run_study,
    set_remote,
)
from experiments.slurm import JOBS_FILE, SlurmOptions, queued_runs, require_submitit, run_study_slurm  # noqa: E402

# Seeds per experiment. Problem 2 has five: its runs are cheap (6-40 min on a 2-core CPU) and at three seeds Welch's
# test has 2-4 degrees of freedom; problem 1's runs take an hour or more on a CPU, so three.
SEEDS, QUICK_SEEDS = {"problem1": 3, "problem2": 5}, 2
# The default --data-dir, where the reference data is generated if missing (the same in both problems' configs)
DEFAULT_DATA_DIR = PROBLEMS["problem1"]().data_dir
DATASETS = {"problem1": "detection", "problem2": "keypoints"}
QUICK_IMAGES = (64, 32)  # train / val images of the quick dataset, in both detection/ and keypoints/
QUICK_EPOCHS = (1, 2)  # problem 1 / problem 2 epochs per run in --quick


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--quick", action="store_true", help="the same pipeline on a small generated dataset "
                   f"({QUICK_IMAGES[0]}/{QUICK_IMAGES[1]} images) with {QUICK_EPOCHS[0]} (problem 1) / "
                   f"{QUICK_EPOCHS[1]} (problem 2) epochs and {QUICK_SEEDS} seeds")
    p.add_argument("--seeds", type=int, default=None, help="seeds per experiment, of both problems (default "
                   f"{SEEDS['problem1']} per problem-1 and {SEEDS['problem2']} per problem-2 experiment; --quick: "
                   f"{QUICK_SEEDS})")
    p.add_argument("--seeds-for", action="append", default=[], metavar="EXPERIMENT=N",
                   help="another number of seeds for one experiment, e.g. p1-cosine=1, or for a pattern, e.g. "
                   "'p2-regression-*=1' (repeatable; a later one wins)")
    p.add_argument("--only", choices=["p1", "p2"], default=None, help="train only this problem's experiments")
    p.add_argument("--experiments", nargs="+", default=None, metavar="EXPERIMENT",
                   help="train only these experiments (see --list)")
    p.add_argument("--results-dir", default=None, help="where study/, study.json and REPORT.md go (default: results; "
                   "--quick: results/quick)")
    p.add_argument("--data-dir", default=None, help="the datasets (default ./datasets, generated there if missing; "
                   "--quick generates its own into RESULTS/quick_data)")
    p.add_argument("--device", default="auto", help="auto (cuda > mps > cpu), cpu, cuda, cuda:N or mps")
    p.add_argument("--amp", action=argparse.BooleanOptionalAction, default=None, help=STUDY_AMP_HELP)
    p.add_argument("--report-only", action="store_true", help="rebuild study.json and REPORT.md from the results, "
                   "without training (with the seeds of the study that ran unless --seeds/--seeds-for are given)")
    p.add_argument("--bench-json", nargs="+", default=None, metavar="PATH", help="bench.py results for the "
                   "performance section, one table each: a study continued on other machines can show each one's "
                   "(default RESULTS/bench.json; a file that is missing after training is written by running "
                   "bench.py on this machine)")
    p.add_argument("--no-bench", action="store_true", help="do not run bench.py when its results are missing (the "
                   "performance section then says so)")
    p.add_argument("--export", default=None, metavar="DIR", help="copy REPORT.md, study.json and exactly the figures "
                   "REPORT.md links (downscaled to <= 1 MB each) into DIR, and do nothing else")
    p.add_argument("--readme", default=None, metavar="PATH", help="with --export DIR: also render the study's "
                   "headline block (results tables and key figures from DIR/study.json) into PATH between its "
                   "'<!-- study:begin -->' and '<!-- study:end -->' lines, e.g. --readme README.md")
    p.add_argument("--continue-from", default=None, metavar="DIR", help="carry the finished runs of a committed "
                   "study (e.g. docs/report, written by --export) into this results folder, so a study continues on "
                   "a new machine: a run counts as finished there with its recorded numbers, precision and figures "
                   "when its folder here is empty and its config equals this study's; everything else is trained here")
    p.add_argument("--run-figures", choices=["all", "report", "none"], default="all",
                   help="which of their own figures the runs and pair evaluations draw: all, only those the report "
                        "shows (of the seed-641 runs), or none (and so none of the report's multi-panel figures, which "
                        "are made of them; the study's other figures are drawn either way): the same numbers, sooner, "
                        "and evaluation times without the figures left out; a run's problem's evaluate.py draws them "
                        "later, then --report-only the panels")
    p.add_argument("--jobs", type=int, default=1, metavar="N", help="runs at once, each in its own process (on a "
                   "CUDA machine: N runs packed onto the GPU); 1 runs them one after the other in this process")
    p.add_argument("--threads-per-run", type=int, default=None, metavar="T", help="CPU threads of each run "
                   "(default: all of them with --jobs 1, else the cores shared out among the jobs)")
    p.add_argument("--executor", choices=["local", "slurm"], default="local", help="local: the runs on this machine "
                   "(--jobs at once); slurm: the unfinished runs as one Slurm job array through submitit, on a results "
                   "folder every node shares; a preempted or timed-out job is requeued and resumes from last.pth")
    p.add_argument("--slurm-partition", default=None, help="the partition (default: the cluster's default)")
    p.add_argument("--slurm-time", type=int, default=SlurmOptions.time_min, metavar="MINUTES",
                   help="each job's time limit; a run that needs longer is requeued and resumes")
    p.add_argument("--slurm-cpus-per-task", type=int, default=SlurmOptions.cpus_per_task, metavar="N",
                   help="CPUs of each job, and its run's threads")
    p.add_argument("--slurm-gpus-per-task", type=int, default=SlurmOptions.gpus_per_task, metavar="N",
                   help="GPUs of each job (0: none)")
    p.add_argument("--no-wait", action="store_true", help="with --executor slurm: submit and return; the same "
                   "command with --report-only writes the report once the jobs are done")
    p.add_argument("--replace", action="store_true", help="write study.json (or, with --export, the exported copy) "
                   "even where it would hold fewer finished runs than the file it replaces")
    p.add_argument("--list", action="store_true", help="print the experiments and every run's state; run nothing")
    # For tests: an even smaller --quick.
    p.add_argument("--quick-images", type=int, nargs=2, default=QUICK_IMAGES, metavar=("TRAIN", "VAL"),
                   help=argparse.SUPPRESS)
    p.add_argument("--quick-epochs", type=int, nargs=2, default=QUICK_EPOCHS, metavar=("P1", "P2"),
                   help=argparse.SUPPRESS)
    return p


def ensure_quick_data(data_dir: Path, num_train: int, num_val: int) -> None:
    """The quick dataset: generated once; a folder holding another size is an error (its runs would mix data)."""
    from common.synthetic import generate

    files = [data_dir / d / f"{s}_annotations.json" for d in ("detection", "keypoints") for s in ("train", "val")]
    try:
        sizes = [len(load_json(f, ("images",))["images"]) for f in files]
    except UserError:
        sizes = None  # missing, or cut short by a kill: the annotation files are written last, so generate again
    if sizes is not None:
        if sizes != [num_train, num_val] * 2:
            raise UserError(f"{data_dir}: holds a quick dataset of {sizes[0]}/{sizes[1]} images, not "
                            f"{num_train}/{num_val}; pass another --results-dir")
        return
    print(f"generating the quick dataset ({num_train}/{num_val} images) in {data_dir}", flush=True)
    generate(data_dir, num_train=num_train, num_val=num_val)


def run_bench(path: Path, data_dir: str, device: str, amp: bool | None, only: str | None, quick: bool) -> None:
    """``bench.py`` on this machine, as its own process (the study reads only the JSON it writes)."""
    argv = ["--problem", {"p1": "1", "p2": "2", None: "all"}[only], "--device", device, "--data-dir", data_dir,
            "--json", str(path)]
    argv += ["--steps", "1", "--warmup", "0", "--batch-size", "4"] if quick else []  # a smoke test of the path
    argv += [] if amp is None else ["--amp" if amp else "--no-amp"]
    print(f"benchmark: python bench.py {' '.join(argv)}", flush=True)
    done = subprocess.run([sys.executable, str(Path(__file__).resolve().parent / "bench.py"), *argv])
    if done.returncode != 0:
        raise UserError(f"bench.py failed (exit status {done.returncode}); pass --no-bench to write the report "
                        "without it")


def read_bench(path: Path) -> dict | None:
    if path.exists() and not path.is_file():
        raise UserError(f"--bench-json {path}: is not a file")
    if not path.is_file():
        return None
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError) as e:
        raise UserError(f"--bench-json {path}: not readable JSON ({type(e).__name__})") from None
    if not isinstance(doc, dict) or not {"meta", "results"} <= set(doc):
        raise UserError(f"--bench-json {path}: not a bench.py --json file")
    # the performance section reads these: checked here so that a file of the wrong shape is one line, not a traceback
    rows = doc["results"]
    bad = ("meta" if not isinstance(doc["meta"], dict) else "results" if not isinstance(rows, dict) else
           next((f"results.{k}" for k, v in rows.items() if not isinstance(v, dict)), None))
    if bad is None:
        bad = next((f"meta.{k}" for k in ("command", "device", "threads", "steps") if k not in doc["meta"]), None)
    if bad is None:
        numbers = ("pure_model_step", "real_training_step", "evaluation_val")
        bad = next((f"results.{k}.{n}" for k, v in rows.items() for n in numbers
                    if not (isinstance(v.get(n), dict) and isinstance(v[n].get("images_per_s"), (int, float)))),
                   None) or next((f"results.{k}.{n}" for k, v in rows.items() for n in ("precision", "batch_size")
                                  if n not in v), None)
    if bad is not None:
        raise UserError(f"--bench-json {path}: field '{bad}' is not what bench.py writes")
    return doc


def previous_plan(path: Path) -> dict | None:
    """The seeds and command of the study whose ``study.json`` is at ``path`` (``None``: none readable), so that
    ``--report-only`` without ``--seeds``/``--seeds-for`` rebuilds the report of the study that ran."""
    try:
        meta = json.loads(path.read_text())["meta"]
        plan_ = {"seeds": seeds_per_problem(meta["seeds"]), "seeds_for": dict(meta["seeds_for"]),
                 "command": str(meta["command"])}
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return plan_ if min(plan_["seeds"].values()) >= 1 else None


# Options that say where inputs come from or how the runs are scheduled, not what the study computes: the earlier
# runs (``--continue-from DIR``), the benchmark files (``--bench-json PATH...``, whose tables print their own
# commands) and where the runs execute (``--jobs``, ``--threads-per-run``, ``--executor`` and the ``--slurm-*``
# options: each run records its own thread count), and which runs draw their own figures (``--run-figures``).
# Values each takes: a count, or None for all up to the next flag.
INPUT_OPTIONS = {"--continue-from": 1, "--bench-json": None, "--jobs": 1, "--threads-per-run": 1, "--executor": 1,
                 "--run-figures": 1, "--slurm-partition": 1, "--slurm-time": 1, "--slurm-cpus-per-task": 1,
                 "--slurm-gpus-per-task": 1, "--no-wait": 0, "--replace": 0}


def study_command_args(argv: list[str]) -> list[str]:
    """``argv`` without the :data:`INPUT_OPTIONS`, so the recorded command is the one that runs the whole study from
    scratch."""
    out, drop = [], 0  # drop: values still to leave out; -1: every value up to the next flag
    for a in argv:
        if drop > 0 or (drop < 0 and not a.startswith("-")):
            drop -= drop > 0
            continue
        name, eq, _ = a.partition("=")
        count = INPUT_OPTIONS.get(name, 0)
        drop = (-1 if count is None else count) if not eq else 0
        if name not in INPUT_OPTIONS:
            out.append(a)
    return out


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    if args.seeds is not None and not 1 <= args.seeds <= MAX_SEEDS:
        raise UserError(f"--seeds must be between 1 and {MAX_SEEDS} (got {args.seeds})")
    seeds = seeds_per_problem(args.seeds if args.seeds is not None else (QUICK_SEEDS if args.quick else SEEDS))
    if not 1 <= args.jobs <= 64:
        raise UserError(f"--jobs must be between 1 and 64 (got {args.jobs})")
    if args.threads_per_run is not None and not 1 <= args.threads_per_run <= 256:
        raise UserError(f"--threads-per-run must be between 1 and 256 (got {args.threads_per_run})")
    if args.executor == "slurm" and not (1 <= args.slurm_time and 1 <= args.slurm_cpus_per_task <= 1024
                                         and 0 <= args.slurm_gpus_per_task <= 64):
        raise UserError("--slurm-time and --slurm-cpus-per-task must be >= 1, --slurm-gpus-per-task >= 0")
    if args.executor == "slurm":
        require_submitit()  # before any work
    if args.executor == "slurm" and args.jobs > 1:
        raise UserError("--jobs is for --executor local; on Slurm every run is its own job")
    if args.no_wait and args.executor != "slurm":
        raise UserError("--no-wait is for --executor slurm")
    if min(args.quick_images) < 1 or min(args.quick_epochs) < 1:
        raise UserError("--quick-images and --quick-epochs must be >= 1")
    if args.quick and args.data_dir is not None:
        raise UserError("--quick generates its own data into RESULTS/quick_data; leave out --data-dir")
    if args.readme is not None and args.export is None:
        raise UserError("--readme needs --export DIR: the block is rendered from the exported study.json")
    # --list and --export only read the results folder: a read-only one (a colleague's) must do
    results = require_output_dir(args.results_dir or ("results/quick" if args.quick else "results"),
                                 writable=not (args.list or args.export is not None))
    if args.export is not None:
        if args.readme is not None:
            check_readme(Path(args.readme))  # a README without the block's markers: refused before the export
        out = require_output_dir(args.export, "--export")
        done = export(results, out, replace=args.replace)
        print(f"exported {len(done['files'])} files ({done['bytes'] / 1e6:.2f} MB) to {out}"
              + ("; over the 5 MB budget" if done["over_budget"] else ""))
        if done["stale"]:
            print(f"note: {out} also holds files this export did not write: {', '.join(done['stale'][:5])}"
                  + (" ..." if len(done["stale"]) > 5 else ""), file=sys.stderr)
        if args.readme is not None:
            changed = update_readme(Path(args.readme), out)
            print(f"{args.readme}: study block {'updated' if changed else 'already up to date'}")
        return
    if args.executor == "slurm":
        set_remote()  # the runs train on the cluster's nodes, whose devices this machine may not have
    device = pick_device(args.device if args.executor == "local" else "auto")  # slurm: this host, for the record
    data_dir = str(results / "quick_data") if args.quick else (args.data_dir or DEFAULT_DATA_DIR)
    settings = Settings(results, data_dir, args.device, args.amp, args.quick,
                        args.quick_epochs[0] if args.quick else None, args.quick_epochs[1] if args.quick else None)
    registry = build_registry(settings.p1_epochs, settings.p2_epochs)
    seeds_for = parse_seeds_for(args.seeds_for, registry)
    command = command_line("study.py", study_command_args(sys.argv[1:] if argv is None else argv),
                           drop=("--report-only",))
    previous = previous_plan(results / "study.json") if args.report_only and args.seeds is None and \
        not args.seeds_for else None
    if previous is not None:  # the report of the study that ran, not of a plan with the default seeds
        seeds, seeds_for, command = previous["seeds"], previous["seeds_for"], previous["command"]
    _, runs, _ = plan(settings, seeds, args.only, seeds_for, args.experiments)
    _, all_runs, all_pairs = plan(settings, seeds, None, seeds_for, None)  # what the report covers
    if args.run_figures != "all":  # each run and pair evaluation draws what the report shows of it, or nothing
        shown = report_run_figures() if args.run_figures == "report" else {}
        first = study_seeds(1)[0]
        runs = [dataclasses.replace(r, figures=shown.get(r.experiment, False) if r.seed == first else False)
                for r in runs]
        all_pairs = [dataclasses.replace(p, figures=shown.get(p.pair, False) if p.seed == first else False)
                     for p in all_pairs]
    if args.list:
        for r in all_runs:
            notes = [*(["carried over"] if is_carried(r.dir) else []), *([] if r in runs else ["not selected"])]
            print(f"{r.name:<48} {r.problem}  {run_state(r):<9} {'(' + ', '.join(notes) + ')' if notes else ''}")
        return
    with FolderLock(results, "study.py"):  # one study per results folder, from the first write on
        _work(args, results, data_dir, device, command, seeds, seeds_for, registry, runs, all_runs, all_pairs)



def _work(args, results: Path, data_dir: str, device, command: str, seeds: dict, seeds_for: dict, registry, runs: list,
          all_runs: list, all_pairs: list) -> None:
    """Everything that writes into the results folder: carry over, train, benchmark, aggregate, report."""
    remove_stale_temps(results)  # of an earlier study.py killed while writing study.json or REPORT.md
    if args.continue_from is not None:
        carried = carry_over(Path(args.continue_from), all_runs, all_pairs)
        print(f"carried over from {args.continue_from}: {len(carried['runs'])} runs, {len(carried['pairs'])} pair "
              "evaluations", flush=True)
        for why in carried["refused"]:
            print(f"not carried over, trained here instead: {why}", flush=True)
    tune_cpu_allocator()
    bench_paths = [Path(b) for b in args.bench_json] if args.bench_json else [results / "bench.json"]
    for path in bench_paths:
        read_bench(path)  # a file of the wrong shape is one line now, not after hours of training
    if not args.report_only:
        for r in runs:
            run_state(r)  # a folder holding another run is an error before anything is generated or trained
        conflicts = precision_conflicts(runs, all_runs, compared_experiments(registry.families))
        if conflicts:
            raise UserError(f"{conflicts[0]}" + (f" (and {len(conflicts) - 1} more)" if len(conflicts) > 1 else "")
                            + "; pass --amp/--no-amp to match where this device allows it, or train other experiments "
                            "(--only, --experiments)")
        if args.quick:
            ensure_quick_data(Path(data_dir), *args.quick_images)
        else:
            # Once, before any run starts: runs in worker processes (--jobs) or Slurm jobs that each found no data
            # would generate it into one folder at the same time, and read each other's half-written files.
            default = Path(data_dir).resolve() == Path(DEFAULT_DATA_DIR).resolve()
            for dataset in sorted({DATASETS[r.problem] for r in runs}):
                ensure_data(data_dir, is_default=default, dataset=dataset)
                if not any((Path(data_dir) / name).exists() for name in (dataset, "train_annotations.json")):
                    raise UserError(f"--data-dir {data_dir}: holds no {dataset}/ folder (nothing is generated into a "
                                    "folder that holds other files); pass the folder that holds it")
        if args.executor == "slurm":
            options = SlurmOptions(args.slurm_partition, args.slurm_time, args.slurm_cpus_per_task,
                                   args.slurm_gpus_per_task, wait=not args.no_wait)
            counts = run_study_slurm(runs, all_pairs, results, args.device, options)
            if counts is None:
                return
        elif args.jobs > 1:
            threads = args.threads_per_run or default_threads(args.jobs)
            counts = run_study_parallel(runs, all_pairs, results, args.device, args.jobs, threads)
        else:
            if args.threads_per_run:
                import torch

                torch.set_num_threads(args.threads_per_run)
            counts = run_study(runs, all_pairs, results, args.device)
        print("runs: " + ", ".join(f"{v} {k}" for k, v in counts.items()), flush=True)
        for path in bench_paths:
            if not path.is_file() and not args.no_bench:
                run_bench(path, data_dir, args.device, args.amp, args.only, args.quick)
    elif args.executor == "slurm" or (results / JOBS_FILE).is_file():
        try:
            queued = queued_runs(results) if shutil.which("squeue") else {}
        except UserError as e:  # the controller down: the report can still be written from what is on disk
            print(f"note: cannot ask Slurm which runs are still queued ({e})", file=sys.stderr)
            queued = {}
        if queued:
            print(f"note: {len(queued)} run(s) still queued or running on Slurm ({', '.join(list(queued)[:3])}"
                  f"{' ...' if len(queued) > 3 else ''}); the report shows them as not run yet", flush=True)
    meta = {"command": command, "quick": args.quick, "seeds": seeds,
            "seed_list": {p: study_seeds(n) for p, n in seeds.items()},
            "seeds_for": seeds_for, "data_dir": data_dir, "device": str(device), "machine": machine_info(device)}
    study = build_study(meta, registry, all_runs, all_pairs, results, data_summary(data_dir),
                        [b for path in bench_paths if (b := read_bench(path)) is not None])
    refuse_fewer(results / "study.json", study, args.replace, "")  # before the study, report or figures is written
    write_study(results / "study.json", study)
    write_figures(study, results, Path(data_dir))
    report = write_report(study, results)
    print(f"wrote {results / 'study.json'} and {report}")


if __name__ == "__main__":
    run_cli(main)
