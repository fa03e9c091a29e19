"""Running the study's runs in this process: each run is skipped, evaluated, resumed or trained, then evaluated.

A run folder is the run whose ``config.json`` it holds (:func:`~experiments.registry.identity`). Its state:

* ``finished``: the configs agree, training logged every epoch and ``metrics.json`` exists: skipped;
* ``evaluate``: training is complete but the evaluation is missing (killed during it): evaluated only;
* ``resume``: ``last.pth`` exists: training continues from it (the trainers' ``--resume``), so a kill, even
  ``kill -9``, costs at most the epoch in progress;
* ``train``: nothing trained yet.

A folder holding only ``carried.json`` is a run carried over from a committed study (``--continue-from``,
:mod:`experiments.carry`): finished, with the numbers and figures it had there.

A folder whose ``config.json`` describes another run is never overwritten: that is a one-line error, raised for
every run of the plan before any work starts.

Problem 2 trains every method as its own run (``--model <method>``), so identical configs are one run. The failure
cases of heatmap against regression and the PCK curves of both need the two models in one folder, which a *pair*
evaluation gives: a folder with links to both models, evaluated by ``problem2/evaluate.py`` like a ``--model both``
run.
"""
from __future__ import annotations

import dataclasses
import hashlib
import os
import shlex
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from common.data import ensure_data, load_json
from common.errors import UserError
from common.io import atomic_write_json
from common.machine import run_machine
from common.runtime import pick_device, resolve_precision
from common.training import write_log
from experiments.progress import StudyProgress, epoch_seconds, read_log, run_kind
from experiments.registry import NOT_IDENTITY, Family, PairRun, Run, identity

TRAIN, RESUME, EVALUATE, FINISHED = "train", "resume", "evaluate", "finished"
TIMING_FILE = "study_timing.json"  # the run's evaluation wall time, which no trainer or evaluator logs
PAIR_FILE = "pair.json"  # which models a pair folder evaluated (their checkpoints' digests)
CARRIED_FILE = "carried.json"  # a run or pair carried over from a committed study (experiments.carry)
SCRIPTS = {"problem1": ("problem1/train.py", "problem1/evaluate.py"),
           "problem2": ("problem2/train.py", "problem2/evaluate.py")}


# --- commands --------------------------------------------------------------------------------------------------

def config_flags(config: Any) -> list[str]:
    """The command-line flags that give ``config`` from its class's defaults (what a user would type): what makes
    the run first, then its seed, then where it reads and writes."""
    cls = type(config)
    defaults = cls()
    last = ("seed", *NOT_IDENTITY)
    fields = sorted(dataclasses.fields(cls), key=lambda f: last.index(f.name) + 1 if f.name in last else 0)
    flags = []
    for f in fields:
        value, default = getattr(config, f.name), getattr(defaults, f.name)
        if f.metadata.get("cli") is False or value == default:
            continue
        flag = "--" + f.name.replace("_", "-")
        if isinstance(value, bool):
            flags.append(flag if value else "--no-" + f.name.replace("_", "-"))
        elif value is not None:
            flags += [flag, f"{value:g}" if isinstance(value, float) else str(value)]
    return flags


def train_command(run: Run) -> str:
    return shlex.join(["python", SCRIPTS[run.problem][0], *config_flags(run.config)])


def evaluate_command(problem: str, data_dir: str, results_dir: Path, device: str) -> str:
    args = ["--data-dir", str(data_dir), "--results-dir", str(results_dir)]
    return shlex.join(["python", SCRIPTS[problem][1], *args, *(["--device", device] if device != "auto" else [])])


# --- state of one run ------------------------------------------------------------------------------------------

def model_file(run: Run) -> str:
    """The checkpoint that the evaluation scores: the best validation loss of the run."""
    return "best_model.pth" if run.problem == "problem1" else f"{run.method}_model.pth"


def run_log(run: Run) -> list[dict]:
    """The run's training records so far (problem 2: those of its method). A record of another shape does not count,
    so a log that was tampered with or cut short leaves the run unfinished, and resuming rewrites it."""
    return [r for r in read_log(run.dir / "training_log.json")
            if isinstance(r, dict) and (run.method is None or r.get("model") == run.method)
            and isinstance(r.get("epoch"), int) and isinstance(r.get("time"), dict) and isinstance(r.get("val"), dict)]


def differences(old: dict, new: dict) -> str:
    keys = [k for k in new if old.get(k) != new[k]]
    return ", ".join(f"{k} {old.get(k)!r} there, {new[k]!r} in this study" for k in keys[:3]) + (
        f" and {len(keys) - 3} more" if len(keys) > 3 else "")


def is_carried(d: Path) -> bool:
    """Whether ``d`` is a run or pair carried over from a committed study (and not trained or evaluated here)."""
    return (d / CARRIED_FILE).is_file() and not (d / "config.json").is_file() and not (d / "metrics.json").is_file()


def read_carried(d: Path) -> dict:
    """The ``carried.json`` record of a carried run or pair folder: ``{'source', 'entry'[, 'ceiling']}``, where
    ``entry`` is the run's (or pair's) entry of the source's ``study.json``."""
    record = load_json(d / CARRIED_FILE)
    entry = record.get("entry")
    fields = {"entry": isinstance(entry, dict)}
    if fields["entry"]:
        # a run's entry holds its config identity; a pair's has none
        fields.update({"entry.dir": isinstance(entry.get("dir"), str),
                       "entry.config": isinstance(entry.get("config", {}), dict)})
    bad = [k for k, ok in fields.items() if not ok]
    if bad:
        raise UserError(f"{d / CARRIED_FILE}: not a carried run's record (field '{bad[0]}' missing or of the wrong "
                        "type); move the folder away to train the run here")
    return record


REMOTE = {"on": False}  # study.py --executor slurm: the runs train on other machines (set_remote)


def set_remote(on: bool = True) -> None:
    """The runs of this process's study train elsewhere (Slurm's nodes): this machine's device and precision say
    nothing about them, so the precision checks trust what each run recorded, and the jobs check on their node."""
    REMOTE["on"] = on


def run_precision(run: Run) -> str | None:
    """The precision this study trains ``run`` in on this machine (``None`` when the runs train elsewhere)."""
    if REMOTE["on"]:
        return None
    return resolve_precision(pick_device(run.config.device), run.config.amp, run.config.CPU_BF16_DEFAULT)


def run_state(run: Run) -> str:
    """:data:`TRAIN`, :data:`RESUME`, :data:`EVALUATE` or :data:`FINISHED` (module docstring); a folder holding another
    run is a :class:`UserError`."""
    d = run.dir
    config_path = d / "config.json"
    if d.exists() and not d.is_dir():
        raise UserError(f"{d}: is a file, not a run folder")
    if is_carried(d):
        entry = read_carried(d)["entry"]
        wanted = identity(run.problem, dataclasses.asdict(run.config))
        if entry.get("config") != wanted:
            why = differences(entry.get("config") or {}, wanted)
            raise UserError(f"{d}: holds a carried-over run that differs ({why}); move it away or pass another "
                            "--results-dir")
        return FINISHED  # in the precision it was trained in (precision_conflicts)
    if not config_path.is_file():
        found = [n for n in ("last.pth", "training_log.json", "metrics.json") if (d / n).exists()]
        if found:
            raise UserError(f"{d}: holds {found[0]} but no config.json, so it is not a run of this study; move it "
                            "away or pass another --results-dir")
        return TRAIN
    stored = load_json(config_path)
    saved = identity(run.problem, stored)
    wanted = identity(run.problem, dataclasses.asdict(run.config))
    if saved != wanted:
        raise UserError(f"{d}: holds a different run ({differences(saved, wanted)}); move it away or pass another "
                        "--results-dir")
    # The same --amp setting means fp32 on a CPU and bf16 on CUDA: a run begun in one precision must not be
    # continued, or counted as finished, in the other.
    precision = run_precision(run)
    if precision is not None and stored.get("precision", precision) != precision:
        raise UserError(f"{d}: was trained in {stored['precision']}, this study would run it in {precision}; pass "
                        f"{'--amp' if stored['precision'] == 'bf16' else '--no-amp'} or another --results-dir")
    complete = len(run_log(run)) >= run.config.epochs and (d / model_file(run)).is_file()
    if complete:
        # The timing file is the evaluation's last write: a run killed before it, or holding an evaluation of the
        # wrong shape, is evaluated again (which rewrites every evaluation file).
        return FINISHED if evaluation_seconds(d) is not None and metrics_ok(run) else EVALUATE
    return RESUME if (d / "last.pth").is_file() else TRAIN


def metrics_ok(run: Run) -> bool:
    """Whether the run's ``metrics.json`` holds everything the aggregation reads from it, so that a file of the wrong
    shape (cut short, edited, from another version) makes the run be evaluated again instead of failing the study."""
    from experiments.aggregate import run_numbers  # the aggregation imports this module

    try:
        run_numbers(run, load_json(run.dir / "metrics.json"), receptive_fields=None)
    except (UserError, KeyError, TypeError, AttributeError, IndexError, ValueError):
        return False
    return True


def finished_precision(run: Run) -> str | None:
    """The precision a finished run (trained here or carried over) was trained in; ``None`` if not finished."""
    try:
        if run_state(run) != FINISHED:
            return None
    except UserError:
        return None
    if is_carried(run.dir):
        return read_carried(run.dir)["entry"].get("precision")
    return load_json(run.dir / "config.json").get("precision")


def precision_conflicts(to_train: list[Run], everything: list[Run],
                        compared: Mapping[str, Iterable[str]] | None = None) -> list[str]:
    """Runs of ``to_train`` that would be trained in another precision than the finished runs of their experiment in
    ``everything`` (e.g. carried bf16 runs on a CPU without native bf16), or of an experiment it is compared with
    (``compared``: each experiment's partners in the study's comparisons, :func:`compared_experiments`): an
    experiment's seeds must share one precision, or its spread would mix precision with seed; and two compared
    experiments too, or their difference would mix precision with method. Each entry is ``'name: why'``."""
    done: dict[str, set[str]] = {}
    for r in everything:
        if (p := finished_precision(r)) is not None:
            done.setdefault(r.experiment, set()).add(p)
    out = []
    for r in to_train:
        mine = run_precision(r)
        if mine is None:
            continue  # trained elsewhere: each job checks its own run on its node
        if run_state(r) not in (TRAIN, RESUME):
            continue
        if other := done.get(r.experiment, set()) - {mine}:
            out.append(f"{r.name}: its experiment's finished seeds were trained in {', '.join(sorted(other))}, this "
                       f"machine would train it in {mine}")
            continue
        for partner in sorted((compared or {}).get(r.experiment, ())):
            if other := done.get(partner, set()) - {mine}:
                out.append(f"{r.name}: it is compared with {partner}, whose finished seeds were trained in "
                           f"{', '.join(sorted(other))}; this machine would train it in {mine}")
                break
    return out


def compared_experiments(families: Iterable[Family]) -> dict[str, set[str]]:
    """Each experiment's partners in the families' comparisons, both ways (for :func:`precision_conflicts`)."""
    out: dict[str, set[str]] = {}
    for f in families:
        for a, b in f.comparisons:
            out.setdefault(a, set()).add(b)
            out.setdefault(b, set()).add(a)
    return out


def evaluation_seconds(run_dir: Path) -> float | None:
    t = read_timing(run_dir)
    s = t.get("evaluate_s") if t else None
    return s if isinstance(s, (int, float)) and not isinstance(s, bool) else None


def read_timing(run_dir: Path) -> dict | None:
    """The run's ``study_timing.json``; ``None`` when missing, unreadable or not a JSON object."""
    try:
        return load_json(run_dir / TIMING_FILE)
    except UserError:
        return None


def remove_stale_temps(run_dir: Path) -> int:
    """Remove the temporary files that interrupted atomic writes (``common.io``) left in ``run_dir``; returns how
    many. Called when this process takes the run up, so no other writer is using them."""
    n = 0
    for tmp in run_dir.glob(".*.tmp") if run_dir.is_dir() else []:
        if tmp.is_file() and not tmp.is_symlink():
            tmp.unlink(missing_ok=True)
            n += 1
    return n


# --- doing one run ---------------------------------------------------------------------------------------------

class DataCache:
    """Problem 2's datasets, decoded once per labelling and shared by every run (as ``baseline.py`` does)."""

    def __init__(self):
        self._data: dict[tuple, tuple] = {}

    def __call__(self, cfg) -> tuple:
        from problem2.config import Config
        from problem2.train import load_data

        key = (cfg.data_dir, cfg.limit_train, cfg.limit_val, cfg.canonical_hands)
        if key not in self._data:
            ensure_data(cfg.data_dir, is_default=Path(cfg.data_dir).resolve() == Path(Config().data_dir).resolve(),
                        dataset="keypoints")
            self._data[key] = load_data(cfg)
        return self._data[key]


def train_run(run: Run, state: str, data: DataCache) -> None:
    remove_stale_temps(run.dir)
    resume = state == RESUME
    if run.problem == "problem1":
        from problem1.train import train

        log = train(run.config, resume=resume, command=train_command(run))
        path = run.dir / "training_log.json"
        # Killed between last.pth and the log's rewrite, a finished run resumes to "nothing to do", which returns the
        # checkpoint's log without writing it.
        if len(read_log(path)) != len(log):
            write_log(path, log)
    else:
        from problem2.train import train

        train(run.config, resume=resume, command=train_command(run), data=data(run.config))


def evaluate_run(run: Run) -> float:
    """Evaluate the run's best checkpoint as its problem's ``evaluate.py`` does; returns the wall seconds."""
    remove_stale_temps(run.dir)
    t0 = time.perf_counter()
    cfg = run.config
    command = evaluate_command(run.problem, cfg.data_dir, run.dir, cfg.device)
    if run.problem == "problem1":
        from problem1.evaluate import run_evaluation

        run_evaluation(run.dir / model_file(run), cfg.data_dir, run.dir, cfg.device, command=command,
                       figures=run.figures)
    else:
        from problem2.evaluate import EvalConfig, run_evaluation

        run_evaluation(EvalConfig(data_dir=cfg.data_dir, results_dir=str(run.dir), device=cfg.device), command,
                       figures=run.figures)
    seconds = time.perf_counter() - t0
    import torch

    # the threads this process computed with (study.py --threads-per-run): a run's speed depends on them
    atomic_write_json(run.dir / TIMING_FILE, {"evaluate_s": round(seconds, 3), "machine": run_machine(cfg.device),
                                              "threads": torch.get_num_threads()})
    return seconds


# --- pair evaluations ------------------------------------------------------------------------------------------

def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def pair_fingerprint(pair: PairRun, results_dir: Path) -> dict:
    """What a pair folder evaluated: each member's run folder and the digest of its model."""
    return {"members": {m: {"dir": os.path.relpath(r.dir, results_dir),
                            "checkpoint_sha256": _sha256(r.dir / model_file(r))} for m, r in pair.members.items()}}


def pair_finished(pair: PairRun, results_dir: Path) -> bool:
    if is_carried(pair.dir):  # valid while its members are the carried runs it was evaluated on
        return all(is_carried(m.dir) for m in pair.members.values())
    try:
        done = load_json(pair.dir / PAIR_FILE)
    except UserError:
        return False
    return (pair.dir / "metrics.json").is_file() and done == pair_fingerprint(pair, results_dir)


def _link(target: Path, link: Path) -> None:
    if link.is_symlink() or link.exists():
        link.unlink()
    link.symlink_to(os.path.relpath(target, link.parent))


def evaluate_pair(pair: PairRun, results_dir: Path, device: str) -> None:
    """Link the members' models (and the heatmap snapshots) into the pair folder, merge their logs, evaluate."""
    from problem2.evaluate import EvalConfig, run_evaluation

    d = pair.dir
    d.mkdir(parents=True, exist_ok=True)
    log = []
    for run in pair.members.values():
        _link(run.dir / model_file(run), d / model_file(run))
        if (run.dir / "heatmap_snapshots.pt").is_file():
            _link(run.dir / "heatmap_snapshots.pt", d / "heatmap_snapshots.pt")
        log += run_log(run)
    write_log(d / "training_log.json", log)
    data_dir = next(iter(pair.members.values())).config.data_dir
    run_evaluation(EvalConfig(data_dir=data_dir, results_dir=str(d), device=device),
                   evaluate_command("problem2", data_dir, d, device), figures=pair.figures)
    atomic_write_json(d / PAIR_FILE, pair_fingerprint(pair, results_dir))  # last: it marks the pair finished


# --- the study -------------------------------------------------------------------------------------------------

def finished_elsewhere(run: Run) -> bool:
    """Whether a run this invocation does not train is finished on disk (a pair may pair it with one it trains)."""
    try:
        return run_state(run) == FINISHED
    except UserError:
        return False


def study_progress(runs: list[Run], jobs: int = 1) -> tuple[dict[str, str], StudyProgress]:
    """Every run's state (every folder checked before anything is written) and the study's progress line,
    calibrated with the epoch and evaluation times the runs already logged."""
    states = {r.name: run_state(r) for r in runs}
    done, per_epoch, per_eval = {}, {}, {}
    for r in runs:
        log = run_log(r)
        done[r.name] = len(log)
        per_epoch.setdefault(run_kind(r), []).extend(epoch_seconds(log, r.problem))
        t = evaluation_seconds(r.dir)
        if t is not None:
            per_eval.setdefault(r.problem, []).append(t)
    evaluated = {r.name: states[r.name] == FINISHED for r in runs}  # updated as runs finish
    return states, StudyProgress(runs, done, evaluated, per_epoch, per_eval, jobs=jobs)


def run_study(runs: list[Run], pairs: list[PairRun], results_dir: Path, device: str) -> dict[str, int]:
    """Every run of ``runs`` in order, and each pair as soon as all its members are finished (members outside
    ``runs`` must be finished already); returns how many runs were trained / resumed / evaluated only / skipped."""
    states, progress = study_progress(runs)
    done, evaluated = progress.done, progress.evaluated
    data = DataCache()
    counts = dict.fromkeys((TRAIN, RESUME, EVALUATE, FINISHED), 0)
    outside = {m.name: finished_elsewhere(m) for p in pairs for m in p.members.values() if m.name not in states}
    pending = [p for p in pairs if all(outside.get(m.name, True) for m in p.members.values())]
    current = None
    try:
        for i, run in enumerate(runs, 1):
            current = run
            state = states[run.name]
            counts[state] += 1
            if state == FINISHED:
                progress.skip(i, run)
            else:
                what = {TRAIN: "train", RESUME: f"resume after epoch {done[run.name]}", EVALUATE: "evaluate"}[state]
                progress.start(i, run, what)
                if state != EVALUATE:
                    train_run(run, state, data)
                progress.record_log(run, run_log(run))
                progress.finish(run, evaluate_run(run))
            evaluated[run.name] = True
            current = None
            for pair in [p for p in pending if all(evaluated.get(m.name, True) for m in p.members.values())]:
                pending.remove(pair)
                carried = [m.name for m in pair.members.values() if is_carried(m.dir)]
                if not pair_finished(pair, results_dir) and carried:
                    progress.note(f"not evaluating {pair.name}: {', '.join(carried)} carried over without a model "
                                  "(move its folder away to train it here)")
                elif not pair_finished(pair, results_dir):
                    progress.note(f"evaluating {pair.name} ({', '.join(m.name for m in pair.members.values())})")
                    evaluate_pair(pair, results_dir, device)
    except SystemExit as e:
        if e.code == 130 and current is not None:
            progress.note(f"study interrupted in {current.name}; run the same study command again to continue "
                          "(finished runs are skipped, this one resumes from its last.pth)")
        raise
    finally:
        progress.close()
    return counts
