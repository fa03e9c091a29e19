"""``study.json``: every run's config, seed, headline metrics and time; per experiment the mean and standard deviation
over seeds of every headline metric; the comparisons the report makes, judged against the seed spread.

Everything here is read from the JSON files the trainers and evaluators wrote (``config.json``,
``training_log.json``, ``metrics.json``) and from the study's own small files (``study_timing.json``, ``pair.json``);
only the receptive fields are computed, from the model definition. So ``--report-only`` rebuilds the same
``study.json`` from the same folders.
"""
from __future__ import annotations

import json
import os
import statistics
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from common.data import load_json
from common.errors import UserError
from common.io import atomic_write_json
from common.report import nan_to_none
from experiments.findings import build_findings
from experiments.progress import epoch_seconds, makespan
from experiments.registry import Family, PairRun, Registry, Run, identity
from experiments.rule import (  # noqa: F401  (re-exported: the study's rule, read from here by the report and tests)
    DIFFERENCE_RULE,
    DIFFERS,
    NOT_RUN,
    NOT_TESTED,
    SCREEN_RULE,
    WITHIN_NOISE,
    compare,
    judge,
    mean_std,
)
from experiments.runner import (
    FINISHED,
    PAIR_FILE,
    evaluate_command,
    evaluation_seconds,
    is_carried,
    pair_finished,
    read_carried,
    read_timing,
    run_log,
    run_state,
    train_command,
)
from problem1.config import CLASS_NAMES
from problem2.metrics import KEYPOINT_GROUPS, THRESHOLDS

# Headline metrics: (key in study.json, label in the report, decimals shown). Every one gets a mean and a std.
P1_HEADLINE = (
    ("map50", "mAP@0.5", 3),
    *((f"ap50_{c}", f"AP@0.5 {c}", 3) for c in CLASS_NAMES),
    ("map50_hidden_ignored", "mAP@0.5, hidden ignored", 3),
    ("map50_95", "mAP@[.5:.95]", 3),
    *((f"ap50_95_{c}", f"AP@[.5:.95] {c}", 3) for c in CLASS_NAMES),
    *((f"false_positives_{c}", f"false {c}s at score >= 0.5", 1) for c in CLASS_NAMES),
    ("best_epoch", "best epoch", 1),
)
HAND_PLACEMENT = ("near_one_hand", "near_midpoint", "crossed", "elsewhere", "one_per_hand", "hand_pck")
P2_HEADLINE = (
    *((f"pck@{t:g}", f"PCK@{t:g}", 3) for t in THRESHOLDS),
    ("auc", "AUC 0-0.5", 3),
    ("mean_px_error", "mean px error", 3),
    *((f"{g}_pck@0.05", f"{g} PCK@0.05", 3) for g in KEYPOINT_GROUPS),
    ("swap_invariant_pck@0.05", "swap-inv. PCK@0.05", 3),
    ("spread", "spread", 3),
    *((f"hands_apart_{k}", f"hands apart: {k.replace('_', ' ')}", 3) for k in HAND_PLACEMENT),
    ("best_epoch", "best epoch", 1),
)
HEADLINE = {"problem1": P1_HEADLINE, "problem2": P2_HEADLINE}
# The metrics each comparison is judged on (the report's comparison tables).
# Problem 2 at a strict and a loose threshold: where they disagree, the methods trade precision for misses.
COMPARED = {"problem1": ("map50", *(f"ap50_{c}" for c in CLASS_NAMES)),
            "problem2": ("pck@0.05", "pck@0.2")}


# --- the headline numbers of one run (pure functions of its metrics.json) -------------------------------------

def p1_headline(m: dict) -> dict:
    fp = m.get("false_positives", {}).get("per_class", {})
    return {"map50": m["mAP"], **{f"ap50_{c}": m["ap_per_class"][c] for c in CLASS_NAMES},
            "map50_hidden_ignored": m["ignore_hidden"]["mAP"], "map50_95": m["coco_ap_50_95"]["mAP"],
            **{f"ap50_95_{c}": m["coco_ap_50_95"]["ap_per_class"][c] for c in CLASS_NAMES},
            **{f"false_positives_{c}": fp.get(c, {}).get("total") for c in CLASS_NAMES},
            "best_epoch": m.get("epoch")}


def group_pck(m: dict, group: str, t: str = "0.05") -> float | None:
    names = [n for n in KEYPOINT_GROUPS[group] if n in m["per_keypoint"]]
    return statistics.fmean(m["per_keypoint"][n]["pck"][t] for n in names) if names else None


def p2_headline(method_result: dict) -> dict:
    """From one entry of ``metrics.json['methods']``."""
    m = method_result["metrics"]
    hands = m.get("hand_placement") or {}
    return {**{f"pck@{t:g}": m["pck"][f"{t:g}"] for t in THRESHOLDS}, "auc": m["auc"],
            "mean_px_error": m["mean_px_error"], **{f"{g}_pck@0.05": group_pck(m, g) for g in KEYPOINT_GROUPS},
            "swap_invariant_pck@0.05": m.get("swap_invariant", m)["pck"]["0.05"], "spread": m.get("spread"),
            **{f"hands_apart_{k}": hands.get(k) for k in HAND_PLACEMENT}, "best_epoch": method_result.get("epoch")}


def last_epoch_numbers(problem: str, log: list[dict]) -> dict | None:
    """The compared metrics (:data:`COMPARED`) at the last epoch's validation, from the training log: the same
    evaluation as the selected checkpoint's, one epoch choice apart. ``None`` without a log (a carried run keeps
    only its numbers) or for a record of another shape."""
    if not log:
        return None
    v = log[-1]["val"]
    try:
        if problem == "problem1":
            numbers = {"map50": v["mAP"], **{f"ap50_{c}": v["ap_per_class"][c] for c in CLASS_NAMES}}
        else:
            numbers = {m: v["pck"][m.removeprefix("pck@")] for m in COMPARED[problem]}
    except (KeyError, TypeError):
        return None
    return {"epoch": log[-1]["epoch"], **numbers}


def p1_details(m: dict, receptive_fields: list[int]) -> dict:
    """What the problem-1 sections show for one run besides the headline (from its metrics.json)."""
    return {"receptive_fields": receptive_fields, "num_images": m["num_images"], "num_objects": m["num_objects"],
            "num_hidden": m["ignore_hidden"]["num_hidden"], "scale_specialisation": m["scale_specialisation"],
            "false_positives": m["false_positives"], "anchor_coverage": m["anchor_coverage"],
            "confusion_matrix": m["confusion_matrix"]}


def p2_details(metrics: dict, method_result: dict) -> dict:
    """What the study's figures draw for one problem-2 run besides the headline: its PCK curve (4 decimals, which
    is finer than 1 of the 1000 keypoints of the validation set)."""
    curve = method_result["metrics"].get("curve")
    thresholds = metrics.get("dense_thresholds")
    if not curve or not thresholds:
        return {}
    return {"pck_curve": {"thresholds": thresholds, "pck": [round(v, 4) for v in curve]}}


def receptive_fields(config: Any) -> list[int]:
    from problem1.model import build_model

    return build_model(config).receptive_fields()


# --- reading runs ----------------------------------------------------------------------------------------------

def run_time(run: Run, log: list[dict]) -> dict:
    epochs = epoch_seconds(log, run.problem)
    cpu = [r.get("time", {}).get("cpu_s") for r in log]
    return {"epochs": len(log), "train_s": round(sum(epochs), 3),
            "cpu_s": round(sum(cpu), 3) if cpu and None not in cpu else None,
            "s_per_epoch": round(statistics.median(epochs), 3) if epochs else None,
            "evaluate_s": evaluation_seconds(run.dir)}


def run_numbers(run: Run, metrics: dict, receptive_fields: list | None) -> tuple[dict, dict]:
    """``(headline, details)`` of a run from its ``metrics.json``; a ``KeyError``/``TypeError`` for a file of
    another shape (:func:`~experiments.runner.metrics_ok` turns that into "evaluate again")."""
    if run.problem == "problem1":
        headline, details = p1_headline(metrics), p1_details(metrics, receptive_fields)
    else:
        result = metrics["methods"][run.method]
        headline, details = p2_headline(result), p2_details(metrics, result)
    bad = [k for k, v in headline.items() if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float)))]
    if bad:
        raise TypeError(f"{bad[0]} is not a number")
    return headline, details


def collect_run(run: Run, results_dir: Path) -> dict | None:
    """One finished run's entry of ``study.json``; ``None`` while it is not finished. A carried run's entry is the
    one its source study recorded, plus where it came from."""
    if run_state(run) != FINISHED:
        return None
    if is_carried(run.dir):
        record = read_carried(run.dir)
        return {**record["entry"], "dir": os.path.relpath(run.dir, results_dir), "carried_from": record["source"]}
    config = load_json(run.dir / "config.json")
    log = run_log(run)
    fields = receptive_fields(run.config) if run.problem == "problem1" else None
    headline, details = run_numbers(run, load_json(run.dir / "metrics.json"), fields)
    return {"experiment": run.experiment, "problem": run.problem, "seed": run.seed,
            "dir": os.path.relpath(run.dir, results_dir), "config": identity(run.problem, config),
            "precision": config.get("precision"), "device": config.get("resolved_device"),
            # the commands the run was made with (its config.json), not this invocation's: --report-only with other
            # flags (another --device, say) must describe the same runs in the same words
            "train_command": config.get("command") or train_command(run),
            "evaluate_command": evaluate_command(run.problem, config.get("data_dir", run.config.data_dir), run.dir,
                                                 config.get("device", run.config.device)),
            "metrics": nan_to_none(headline), "details": nan_to_none(details), "time": run_time(run, log),
            "last_epoch": nan_to_none(last_epoch_numbers(run.problem, log)),
            "machine": (read_timing(run.dir) or {}).get("machine"),
            "threads": (read_timing(run.dir) or {}).get("threads")}


def collect_pair(pair: PairRun, results_dir: Path) -> dict | None:
    if not pair_finished(pair, results_dir):
        return None
    if is_carried(pair.dir):
        record = read_carried(pair.dir)
        return {**record["entry"], "dir": os.path.relpath(pair.dir, results_dir), "carried_from": record["source"]}
    m = load_json(pair.dir / "metrics.json")
    first = next(iter(pair.members.values()))
    # as the study evaluated it: with the data and device its members were trained with (their config.json)
    config = load_json(first.dir / "config.json") if (first.dir / "config.json").is_file() else {}
    return {"pair": pair.pair, "seed": pair.seed, "dir": os.path.relpath(pair.dir, results_dir),
            "members": load_json(pair.dir / PAIR_FILE)["members"],
            "evaluate_command": evaluate_command("problem2", config.get("data_dir", first.config.data_dir), pair.dir,
                                                 config.get("device", first.config.device)),
            "failures": m.get("failures"), "num_images": m["num_images"]}


def ceiling_summary(runs: Sequence[Run]) -> dict | None:
    """The hand-ambiguity ceiling of the validation labels (the same in every problem-2 run on them): from the first
    finished run with the original labels."""
    for run in runs:
        if run.problem == "problem2" and not run.config.canonical_hands and is_carried(run.dir):
            c = read_carried(run.dir).get("ceiling")
            if c:
                return c
        if run.problem == "problem2" and not run.config.canonical_hands and (run.dir / "metrics.json").is_file():
            m = load_json(run.dir / "metrics.json")
            c = m.get("ceiling")
            if c:
                curve = {"thresholds": m.get("dense_thresholds"), "pck": [round(v, 4) for v in c["curve"]]} \
                    if c.get("curve") and m.get("dense_thresholds") else None
                return nan_to_none({"pck": c["pck"], "auc": c["auc"], "curve": curve,
                                    "sum_over_thresholds": c["sum_over_thresholds"],
                                    "best_single_prediction_sum": c["best_single_prediction_sum"],
                                    "strategies": {s: {k: v for k, v in d.items() if k != "curve"}
                                                   for s, d in c["strategies"].items()}})
    return None


# --- the study -------------------------------------------------------------------------------------------------

def experiment_summary(key: str, registry: Registry, runs: list[Run], collected: dict[str, dict]) -> dict:
    exp = registry.experiments[key]
    mine = [r for r in runs if r.experiment == key]
    finished = [collected[r.name] for r in mine if r.name in collected]
    metrics = {k: mean_std(c["metrics"].get(k) for c in finished) for k, _, _ in HEADLINE[exp.problem]}
    # A run that did not record a time (a log written before cpu_s was) leaves the experiment's sum unknown.
    times = {k: None if any(c["time"].get(k) is None for c in finished) else
             round(sum(c["time"][k] for c in finished), 3) for k in ("train_s", "cpu_s", "evaluate_s")}
    # The selected checkpoint (lowest validation loss, as specified) against the last epoch, over the same runs: those
    # whose training log is here.
    logged = [c for c in finished if c.get("last_epoch")]
    last_epoch = {"seeds": [c["seed"] for c in logged],
                  **{m: {"selected": mean_std(c["metrics"].get(m) for c in logged),
                         "last": mean_std(c["last_epoch"].get(m) for c in logged)} for m in COMPARED[exp.problem]}}
    return {"problem": exp.problem, "title": exp.title, "aliases": list(exp.aliases), "overrides": exp.overrides,
            "train_command": finished[0]["train_command"] if finished else train_command(mine[0]) if mine else None,
            "planned_seeds": [r.seed for r in mine], "seeds": [c["seed"] for c in finished], "n": len(finished),
            "metrics": metrics, "last_epoch": last_epoch, "time": times}


def family_comparisons(family: Family, experiments: dict[str, dict]) -> list[dict]:
    out = []
    for a, b in family.comparisons:
        if a not in experiments or b not in experiments:
            continue
        for metric in COMPARED[family.problem]:
            sa, sb = experiments[a]["metrics"][metric], experiments[b]["metrics"][metric]
            out.append({"family": family.key, "a": a, "b": b, "metric": metric, "mean_a": sa["mean"],
                        "mean_b": sb["mean"], **compare(sa, sb)})
    return out


def judged_comparisons(families: Iterable[Family], experiments: dict[str, dict]) -> list[dict]:
    """Every comparison of ``families`` among ``experiments`` (:func:`experiment_summary` dicts), judged by the rule
    over the whole family of comparisons (:func:`experiments.rule.judge`)."""
    values = {(k, m): s["values"] for k, e in experiments.items() for m, s in e["metrics"].items()}
    return judge([c for f in families for c in family_comparisons(f, experiments)], values)


def machines_summary(entries: Iterable[dict]) -> list[dict]:
    """The machines the finished runs were trained on (a continued study may span several, whose speeds differ
    several-fold), each with its number of runs and their summed wall times; ``machine`` is ``None`` for runs that
    did not record it."""
    groups: dict[str, dict] = {}
    for c in entries:
        m = c.get("machine")
        g = groups.setdefault(json.dumps(m, sort_keys=True), {"machine": m, "runs": 0, "train_s": 0.0,
                                                               "evaluate_s": 0.0})
        g["runs"] += 1
        g["train_s"] = round(g["train_s"] + c["time"]["train_s"], 3)
        g["evaluate_s"] = round(g["evaluate_s"] + (c["time"]["evaluate_s"] or 0.0), 3)
    return list(groups.values())


def build_study(meta: dict, registry: Registry, runs: list[Run], pairs: list[PairRun], results_dir: Path,
                data: dict | None = None, benches: Sequence[dict] = ()) -> dict:
    """The whole ``study.json`` from the run folders (only finished runs count)."""
    collected = {r.name: c for r in runs if (c := collect_run(r, results_dir)) is not None}
    planned = list(dict.fromkeys(r.experiment for r in runs))
    experiments = {k: experiment_summary(k, registry, runs, collected) for k in registry.experiments if k in planned}
    families = [f for f in registry.families if any(m in experiments for m in f.members)]
    comparisons = judged_comparisons(families, experiments)
    pair_entries = [p for pr in pairs if (p := collect_pair(pr, results_dir)) is not None]
    study = nan_to_none({
        # 2: "bench" (one file or null) became "benches" (a list); 3: "findings"; 4: Welch intervals and the
        # false-discovery control (each comparison's ci95, p, p_adjusted; the earlier screen's verdict as "screen")
        "schema": 4,
        "meta": {**meta, "difference_rule": DIFFERENCE_RULE, "screen_rule": SCREEN_RULE,
                 "precisions": sorted({c["precision"] for c in collected.values() if c["precision"]}),
                 "devices": sorted({c["device"] for c in collected.values() if c["device"]})},
        "headline": {p: [{"key": k, "label": label, "digits": d} for k, label, d in h] for p, h in HEADLINE.items()},
        "data": data,
        "runs": list(collected.values()),
        "experiments": experiments,
        "families": [{"key": f.key, "problem": f.problem, "title": f.title, "members": [m for m in f.members
                                                                                        if m in experiments],
                      "comparisons": [list(c) for c in f.comparisons]} for f in families],
        "comparisons": comparisons,
        "pairs": pair_entries,
        "ceiling": ceiling_summary(runs),
        "benches": list(benches),  # bench.py --json files, e.g. one per machine of a continued study
        "time": {"train_s": round(sum(c["time"]["train_s"] for c in collected.values()), 3),
                 "evaluate_s": round(sum(c["time"]["evaluate_s"] or 0.0 for c in collected.values()), 3),
                 "runs_finished": len(collected), "runs_planned": len(runs),
                 "runs_carried": sum(1 for c in collected.values() if c.get("carried_from")),
                 # The study's wall time on paper: the finished runs' measured times (train + evaluate) run N at once
                 # (N 2-core slots: a 16-core machine with --jobs 8 --threads-per-run 2, or N 2-core Slurm nodes).
                 "on_paper_s": {str(n): round(makespan([c["time"]["train_s"] + (c["time"]["evaluate_s"] or 0.0)
                                                        for c in collected.values()], n), 1)
                                for n in (1, 8, 16, 32, len(runs))}},
        "machines": machines_summary(collected.values()),
    })
    # The answers are computed here, once, from the numbers above; the report and the README only print them.
    study["findings"] = nan_to_none(build_findings(study))
    return study


def dropped_runs(path: Path, study: dict) -> tuple[int, list[str]]:
    """``(finished runs the study.json at path holds, those of them (experiment/seedS) that study does not)``: what
    writing ``study`` over it would lose. A missing or unreadable file holds none."""
    try:
        old = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):
        return 0, []
    runs = old.get("runs") if isinstance(old, dict) else None
    if not isinstance(runs, list):
        return 0, []
    name = lambda e: f"{e.get('experiment')}/seed{e.get('seed')}"  # noqa: E731
    new = {name(e) for e in study.get("runs", []) if isinstance(e, dict)}
    return len(runs), [name(e) for e in runs if isinstance(e, dict) and name(e) not in new]


def refuse_fewer(path: Path, study: dict, replace: bool, what: str) -> None:
    """A one-line :class:`UserError` unless writing ``study`` to ``path`` keeps every finished run it holds (or
    ``replace``: the user asked for it)."""
    held, lost = dropped_runs(path, study)
    if lost and not replace:
        raise UserError(f"{what}{path}: holds {held} finished runs, {len(lost)} of which this study does not "
                        f"({', '.join(lost[:2])}{' ...' if len(lost) > 2 else ''}); not replaced: finish them (the "
                        "study's command evaluates a run whose files are incomplete again), or pass --replace")


def write_study(path: Path, study: dict) -> Path:
    return atomic_write_json(path, study)
