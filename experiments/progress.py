"""The study's overall progress line: run i of n, the run's name, and an ETA from measured epoch times.

The ETA multiplies the epochs still to train, per kind of run, by the median measured time of one epoch of that
kind, and adds the median measured evaluation time per problem for every run still to evaluate. A kind is the
problem, and for problem 2 the method and the heatmap size, which is what sets the cost of an epoch; the times come
from the ``time`` fields of the runs' own ``training_log.json``, so a resumed study starts with a calibrated ETA.
"""
from __future__ import annotations

import heapq
import json
import statistics
import sys
import threading
from collections.abc import Iterable
from pathlib import Path

from common.progress import progress
from experiments.registry import Run

MONITOR_SECONDS = 5.0  # how often the line re-reads the current run's training log


def run_kind(run: Run) -> str:
    """Runs of one kind cost the same per epoch (same data): the problem, and for problem 2 method and map size."""
    if run.problem == "problem1":
        return "problem1"
    size = "" if run.method == "regression" else f" {run.config.heatmap_size}px"  # regression has no maps
    return f"problem2 {run.method}{size}"


def epoch_seconds(log: list[dict], problem: str) -> list[float]:
    """Wall seconds of each logged epoch (training and its validation)."""
    key = (lambda t: t["epoch_s"]) if problem == "problem1" else (lambda t: t["train_s"] + t["val_s"])
    out = []
    for rec in log:
        try:
            out.append(float(key(rec["time"])))
        except (KeyError, TypeError):
            continue  # a record without timing (not written by this project's trainers)
    return out


def read_log(path: Path) -> list[dict]:
    """A training log, or ``[]`` when there is none yet or it cannot be read (the ETA just lacks it)."""
    try:
        log = json.loads(path.read_text())
    except (OSError, ValueError):
        return []
    return log if isinstance(log, list) else []


def estimate(remaining: Iterable[tuple[str, str, int, bool]], per_epoch: dict[str, list[float]],
             per_eval: dict[str, list[float]]) -> tuple[float, int]:
    """``(seconds, runs without a measurement of their kind)`` for ``remaining`` runs given as
    ``(kind, problem, epochs left, still to evaluate)``; median times per kind (epochs) and per problem (evaluation).
    """
    seconds, unmeasured = 0.0, 0
    for kind, problem, epochs_left, evaluate in remaining:
        if epochs_left > 0:
            if not per_epoch.get(kind):
                unmeasured += 1
                continue
            seconds += epochs_left * statistics.median(per_epoch[kind])
        if evaluate and per_eval.get(problem):
            seconds += statistics.median(per_eval[problem])
    return seconds, unmeasured


def makespan(durations: Iterable[float], slots: int) -> float:
    """Wall seconds of runs lasting ``durations`` when ``slots`` run at once, longest first, each on the first slot
    that is free (the LPT schedule, within 4/3 of the best possible)."""
    free = [0.0] * max(1, slots)
    for d in sorted(durations, reverse=True):
        heapq.heappush(free, heapq.heappop(free) + d)
    return max(free)


def format_duration(seconds: float) -> str:
    s = int(round(seconds))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s // 3600} h {(s % 3600) // 60:02d} min"


def format_eta(seconds: float, unmeasured: int, total_remaining: int) -> str:
    if total_remaining == 0:
        return "done"
    if unmeasured == total_remaining and seconds == 0:
        return "ETA after the first epoch"
    more = f" + {unmeasured} run(s) of kinds not timed yet" if unmeasured else ""
    return f"ETA {format_duration(seconds)}{more}"


class StudyProgress:
    """The overall line (a tqdm bar at position 0; the trainers' epoch bars open below it), or, without a terminal
    or with ``PROGRESS=0``, one plain line per run. With ``jobs`` runs at once (``study.py --jobs``) the line names
    every running run with its epoch, and the ETA divides the remaining work by ``jobs``."""

    def __init__(self, runs: list[Run], epochs_done: dict[str, int], evaluated: dict[str, bool],
                 per_epoch: dict[str, list[float]], per_eval: dict[str, list[float]], jobs: int = 1):
        self.runs, self.done, self.evaluated = runs, epochs_done, evaluated
        self.per_epoch, self.per_eval, self.jobs = per_epoch, per_eval, jobs
        # tqdm's own remaining time extrapolates runs per second, which means nothing when runs differ 100-fold
        self.bar = progress(None, desc="study", total=len(runs), unit="run", position=0, leave=True,
                            bar_format="{desc}: {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} runs, {elapsed} "
                                       "elapsed{postfix}")
        self._lock = threading.RLock()  # the monitor thread and the main thread both record epochs
        self._current: dict[str, Run] = {}  # the runs in progress, by name
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def eta(self) -> str:
        remaining = [(run_kind(r), r.problem, max(0, r.config.epochs - self.done.get(r.name, 0)),
                      not self.evaluated.get(r.name, False)) for r in self.runs
                     if not self.evaluated.get(r.name, False)]
        seconds, unmeasured = estimate(remaining, self.per_epoch, self.per_eval)
        # runs at once share the remaining work (roughly: the last runs of a study may leave workers idle)
        return format_eta(seconds / self.jobs, unmeasured, len(remaining))

    def _running(self) -> str:
        return ", ".join(f"{r.name} (epoch {self.done.get(r.name, 0)}/{r.config.epochs})"
                         for r in self._current.values())

    def start(self, i: int, run: Run, what: str) -> None:
        line = f"run {i}/{len(self.runs)} {run.name} ({what})"
        with self._lock:
            self._current[run.name] = run
        if self.bar.disable:
            print(f"{line}  {self.eta()}", flush=True)
            return
        self.bar.set_description_str(line if self.jobs == 1 else f"running {self._running()}")
        self.bar.set_postfix_str(self.eta())
        if self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(target=self._monitor, daemon=True)
            self._thread.start()

    def _monitor(self) -> None:
        """Re-read the running runs' logs now and then, so the ETA moves with every epoch, not only between runs."""
        while not self._stop.wait(MONITOR_SECONDS):
            with self._lock:
                for run in list(self._current.values()):
                    self.record_log(run, read_log(run.dir / "training_log.json"))
                if self.jobs > 1:
                    self.bar.set_description_str(f"running {self._running()}")
                self.bar.set_postfix_str(self.eta())

    def record_log(self, run: Run, log: list[dict], previous: int | None = None) -> None:
        """Take ``run``'s epoch times from its log (``previous``: records already counted, ``None``: as recorded)."""
        with self._lock:
            seen = self.done.get(run.name, 0) if previous is None else previous
            recs = [r for r in log if run.method is None or r.get("model") == run.method]
            if len(recs) > seen:
                self.per_epoch.setdefault(run_kind(run), []).extend(epoch_seconds(recs[seen:], run.problem))
                self.done[run.name] = len(recs)

    def skip(self, i: int, run: Run) -> None:
        """A run the study already holds: counted, no work."""
        self.evaluated[run.name] = True
        if self.bar.disable:
            print(f"run {i}/{len(self.runs)} {run.name}: finished, skipped", flush=True)
        self.bar.update(1)

    def finish(self, run: Run, evaluate_s: float | None) -> None:
        with self._lock:
            self._current.pop(run.name, None)
        if not self._current:
            self._stop.set()
            if self._thread is not None:
                self._thread.join()
                self._thread = None
        if self.bar.disable and self.jobs > 1:
            print(f"finished {run.name}; running {self._running() or 'nothing'}  {self.eta()}", flush=True)
        self.evaluated[run.name] = True
        if evaluate_s is not None:
            self.per_eval.setdefault(run.problem, []).append(evaluate_s)
        with self._lock:
            self.bar.update(1)
            if not self.bar.disable:
                self.bar.set_postfix_str(self.eta())

    def note(self, text: str) -> None:
        if self.bar.disable:
            print(text, flush=True)
        else:
            self.bar.write(text, file=sys.stderr)

    def close(self) -> None:
        self._stop.set()
        self.bar.close()
