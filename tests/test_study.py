"""study.py: the plan, the skip/resume logic, the statistics and the difference rule, the report's consistency with
study.json, and the whole --quick pipeline end to end (including kill -9 in the middle of a run)."""
from __future__ import annotations

import dataclasses
import json
import math
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import P2_PAIR_STUDY, run_main, run_script_here
from PIL import Image
from scipy import stats as scipy_stats

from common.errors import UserError
from common.report import fmt
from common.training import strip_timing
from experiments.aggregate import (
    DIFFERS,
    NOT_RUN,
    NOT_TESTED,
    WITHIN_NOISE,
    compare,
    judged_comparisons,
    mean_std,
)
from experiments.export import linked_figures, shrink_png
from experiments.figures import panel_sources, report_run_figures
from experiments.findings import build_findings, change, selection_clause, selection_rankings
from experiments.progress import estimate, format_eta, makespan
from experiments.readme import BEGIN, END, _run_times, current_block, readme_block, update_readme
from experiments.registry import (
    Settings,
    build_registry,
    identity,
    parse_seeds_for,
    plan,
    seeds_per_problem,
    study_seeds,
)
from experiments.report_appendix import machine_name, performance_section
from experiments.rule import benjamini_hochberg, judge, screen, welch
from experiments.runner import EVALUATE, FINISHED, RESUME, TIMING_FILE, TRAIN, config_flags, run_state
from problem1.config import Config as Config1
from problem2.ablations import FAMILIES, AblationConfig
from problem2.ablations import plan as baseline_plan
from problem2.config import Config as Config2

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PROGRESS": "0", "MPLBACKEND": "Agg"}
TINY = ["--quick", "--quick-images", "16", "8", "--device", "cpu"]


def _study(*args: str, timeout: int = 900) -> subprocess.CompletedProcess:
    """``python study.py ARGS`` as a real process: where the process is what a test is about (a user's command line,
    a kill, the bench it starts)."""
    return subprocess.run([sys.executable, "study.py", *args], cwd=ROOT, env=ENV, capture_output=True, text=True,
                          timeout=timeout)


def _study_here(capsys, *args: str) -> subprocess.CompletedProcess:
    """``study.main(ARGS)`` in this process (``helpers.run_script_here``): the same code path without starting Python
    and importing torch again."""
    return run_script_here(capsys, "study.py", *args)


# --- the plan ----------------------------------------------------------------------------------------------------

def test_plan_shares_identical_runs_and_derives_the_ablations_from_baseline(tmp_path):
    registry, runs, pairs = plan(Settings(tmp_path, "data"), seeds=2)
    assert study_seeds(4) == [641, 1, 2, 3] and Config1().seed == Config2().seed == 641
    # One run per (config, seed): the default heatmap is also the sigma-2, 64x64 and with-skips ablation.
    idents = [(repr(sorted(identity(r.problem, dataclasses.asdict(r.config)).items()))) for r in runs]
    assert len(set(idents)) == len(runs)
    assert {registry.aliases[a] for a in ("p2-sigma2", "p2-res64", "p2-skip", "p2-heatmap")} == {"p2-heatmap"}
    assert registry.aliases["p2-regression-gap-dropout0.5"] == "p2-regression"
    # Every baseline.py run is an experiment of the study, and no problem-2 ablation is typed in twice.
    abl = AblationConfig(epochs=30, ablations=list(FAMILIES))
    _, baseline_runs, _ = baseline_plan(abl)
    want = {repr(sorted(identity("problem2", v).items())) for v in baseline_runs.values()}
    have = {repr(sorted(identity("problem2", e.overrides).items())) for e in registry.experiments.values()
            if e.problem == "problem2" and not e.overrides.get("canonical_hands")}
    assert have == want
    # The first seed's run of the specification is exactly a plain `python problem1/train.py`.
    spec = next(r for r in runs if r.name == "p1-spec/seed641")
    assert identity("problem1", dataclasses.asdict(spec.config)) == identity("problem1", dataclasses.asdict(Config1()))
    assert spec.dir == tmp_path / "study" / "p1-spec" / "seed641"
    # Seed-major order: every experiment's first seed before any second seed.
    first_second = next(i for i, r in enumerate(runs) if r.seed != 641)
    assert all(r.seed == 641 for r in runs[:first_second]) and len(runs) == 2 * first_second
    assert [p.seed for p in pairs] == [641, 1]


def test_seeds_for_names_aliases_patterns_and_errors(tmp_path):
    registry = build_registry()
    got = parse_seeds_for(["p2-*=1", "p2-sigma2=3", "p1-cosine=1"], registry)
    assert got["p2-heatmap"] == 3 and got["p2-simcc"] == 1 and got["p1-cosine"] == 1 and "p1-spec" not in got
    _, runs, _ = plan(Settings(tmp_path, "data"), seeds=2, seeds_for=got)
    seeds = {}
    for r in runs:
        seeds.setdefault(r.experiment, []).append(r.seed)
    assert seeds["p2-heatmap"] == [641, 1, 2] and seeds["p1-cosine"] == [641] and seeds["p1-spec"] == [641, 1]
    for bad in ("p1-cosine", "p1-cosine=0", "p1-cosine=x", "nope=1", "zz-*=1"):
        with pytest.raises(UserError):
            parse_seeds_for([bad], registry)


def test_each_problem_has_its_own_number_of_seeds(tmp_path, capsys):
    """Problem 2 five seeds, problem 1 three by default; ``--seeds N`` sets both, ``--seeds-for`` one experiment; a
    study.json of before, with one number, means it for both problems."""
    import study

    assert seeds_per_problem(3) == {"problem1": 3, "problem2": 3}
    assert seeds_per_problem({"problem1": 3, "problem2": 5}) == {"problem1": 3, "problem2": 5}
    _, runs, _ = plan(Settings(tmp_path, "data"), seeds={"problem1": 3, "problem2": 5}, seeds_for={"p2-simcc": 1})
    counts = {}
    for r in runs:
        counts.setdefault(r.experiment, []).append(r.seed)
    assert counts["p1-spec"] == [641, 1, 2] and counts["p2-heatmap"] == [641, 1, 2, 3, 4]
    assert counts["p2-simcc"] == [641]

    def listed(*args):
        assert run_main(study.main, ["--list", "--results-dir", str(tmp_path / "r"), *args]) == 0
        names = [line.split()[0] for line in capsys.readouterr().out.splitlines()]
        return {p: sum(n.startswith(p) for n in names) for p in ("p1-", "p2-")}

    assert listed() == {"p1-": 4 * 3, "p2-": 18 * 5}
    assert listed("--seeds", "2") == {"p1-": 4 * 2, "p2-": 18 * 2}
    assert study.previous_plan(tmp_path / "none.json") is None
    old = tmp_path / "old.json"
    old.write_text(json.dumps({"meta": {"seeds": 3, "seeds_for": {}, "command": "python study.py"}}))
    assert study.previous_plan(old)["seeds"] == {"problem1": 3, "problem2": 3}


def test_recorded_training_command_parses_back_to_the_run_config(tmp_path):
    from common.config import parse_config

    _, runs, _ = plan(Settings(tmp_path, "data", amp=False), seeds=2, keys=["p2-regression-flatten-dropout0",
                                                                               "p1-cosine"])
    for run in runs:
        cls = Config1 if run.problem == "problem1" else Config2
        parsed, _ = parse_config(cls, config_flags(run.config))
        assert parsed == run.config


# --- skip / resume / evaluate -------------------------------------------------------------------------------------

def _one_run(tmp_path):
    _, runs, _ = plan(Settings(tmp_path, "data"), seeds=1, keys=["p2-regression"])
    return runs[0]


def test_run_state_follows_the_files_and_never_takes_over_another_run(tmp_path, monkeypatch):
    run = _one_run(tmp_path)
    d = run.dir
    assert run_state(run) == TRAIN
    d.mkdir(parents=True)
    saved = {**dataclasses.asdict(run.config), "command": "python problem2/train.py", "precision": "fp32",
             "resolved_device": "cpu"}
    (d / "config.json").write_text(json.dumps(saved))
    assert run_state(run) == TRAIN  # killed before the first epoch ended
    (d / "last.pth").write_bytes(b"x")
    record = lambda e: {"model": "regression", "epoch": e, "time": {}, "val": {}}  # noqa: E731
    (d / "training_log.json").write_text(json.dumps([record(1)]))
    assert run_state(run) == RESUME
    log = [record(e) for e in range(1, run.config.epochs + 1)]
    (d / "training_log.json").write_text(json.dumps(log))
    assert run_state(run) == RESUME  # every epoch logged, but no best model: not complete
    (d / "regression_model.pth").write_bytes(b"x")
    assert run_state(run) == EVALUATE
    (d / "metrics.json").write_text("{}")
    assert run_state(run) == EVALUATE  # an evaluation without its last file (the timing) and of the wrong shape
    monkeypatch.setattr("experiments.runner.metrics_ok", lambda run: True)  # its shape: tests/test_study_files.py
    (d / TIMING_FILE).write_text(json.dumps({"evaluate_s": 1.0}))
    assert run_state(run) == FINISHED
    # Where the run lives and which device ran it do not make it another run.
    (d / "config.json").write_text(json.dumps({**saved, "data_dir": "/elsewhere", "device": "cuda",
                                               "channels_last": False}))
    assert run_state(run) == FINISHED
    # The --amp request is not the run, the precision it gave is: --amp on a CPU without bf16 trained in fp32 ...
    (d / "config.json").write_text(json.dumps({**saved, "amp": True}))
    assert run_state(run) == FINISHED
    # ... and a run that trained in another precision is another run (no --amp on a CPU is fp32).
    (d / "config.json").write_text(json.dumps({**saved, "precision": "bf16"}))
    with pytest.raises(UserError, match="trained in bf16, this study would run it in fp32"):
        run_state(run)
    (d / "config.json").write_text(json.dumps({**saved, "lr": 0.5}))
    with pytest.raises(UserError, match="holds a different run.*lr"):
        run_state(run)
    (d / "config.json").unlink()
    with pytest.raises(UserError, match="no config.json"):
        run_state(run)


# --- statistics and the difference rule ----------------------------------------------------------------------------

def test_mean_std_known_values():
    assert mean_std([1.0, 2.0, 3.0]) == {"mean": 2.0, "std": 1.0, "n": 3, "values": [1.0, 2.0, 3.0]}
    s = mean_std([None, float("nan"), 2.0, 4.0])  # a run without the number does not count
    assert s["mean"] == 3.0 and s["std"] == pytest.approx(math.sqrt(2)) and s["n"] == 2 and s["values"] == [2.0, 4.0]
    assert mean_std([0.25]) == {"mean": 0.25, "std": None, "n": 1, "values": [0.25]}
    assert mean_std([]) == {"mean": None, "std": None, "n": 0, "values": []}


def test_welch_interval_known_answers():
    """By hand. Equal spread, a = 1, 2, 3 against b = 3, 4, 5: difference -2, standard error sqrt(1/3 + 1/3), Welch
    degrees of freedom (2/3)^2 / (2 * (1/3)^2 / 2) = 4 exactly, t(0.975, 4) = 2.776445 (a t table), so the 95%
    interval is -2 +- 2.776445 * 0.816497 = [-4.266958, 0.266958], and t = -2.449490 with 4 degrees of freedom is
    p = 0.070484 (two-sided), not a difference at 5%."""
    w = welch([1.0, 2.0, 3.0], [3.0, 4.0, 5.0])
    assert w["diff"] == -2.0 and w["se"] == pytest.approx(math.sqrt(2 / 3)) and w["df"] == pytest.approx(4.0)
    assert w["ci"] == pytest.approx([-4.266958, 0.266958], abs=1e-6)
    assert w["p"] == pytest.approx(0.070484, abs=1e-6)
    # Unequal spread, a = 1, 2, 3 against b = 4, 6, 8 (variances 1 and 4): se^2 = 1/3 + 4/3 = 5/3 and
    # df = (5/3)^2 / ((1/3)^2 / 2 + (4/3)^2 / 2) = 50/17, not the pooled test's 4: Welch, not Student.
    w = welch([1.0, 2.0, 3.0], [4.0, 6.0, 8.0])
    assert w["diff"] == -4.0 and w["se"] == pytest.approx(math.sqrt(5 / 3)) and w["df"] == pytest.approx(50 / 17)
    half = (w["ci"][1] - w["ci"][0]) / 2
    assert 3.182 < half / w["se"] < 4.303  # t(0.975, 2.94): between the table's t(0.975, 3) and t(0.975, 2)
    assert half / w["se"] == pytest.approx(scipy_stats.t.ppf(0.975, 50 / 17))
    # p from the t distribution itself: t = -4 / sqrt(5/3) = -3.0984 at 50/17 degrees of freedom
    assert w["p"] == pytest.approx(2 * scipy_stats.t.sf(4 / math.sqrt(5 / 3), 50 / 17)) and 0.05 < w["p"] < 0.06
    # spread on one side only: all the variance is that side's, so df = its n - 1 = 2
    w = welch([1.0, 2.0, 3.0], [5.0, 5.0, 5.0])
    assert w["df"] == pytest.approx(2.0) and w["p"] == pytest.approx(2 * scipy_stats.t.sf(3 / math.sqrt(1 / 3), 2))
    # no spread on either side: the difference is exact
    assert welch([0.5, 0.5], [0.5, 0.5]) == {"diff": 0.0, "se": 0.0, "df": None, "p": 1.0, "ci": [0.0, 0.0]}
    assert welch([1.0, 1.0], [0.5, 0.5])["p"] == 0.0
    assert welch([0.3, 0.3], [0.1 + 0.2, 0.1 + 0.2])["p"] == 1.0  # a float rounding apart is no difference


def test_benjamini_hochberg_known_family():
    """By hand, m = 4: p sorted 0.005, 0.01, 0.03, 0.04 times m / rank gives 0.02, 0.02, 0.04, 0.04 (each then the
    smallest of itself and those ranked after it), returned in the order given; at 5% all four are claimed although
    Bonferroni (0.05 / 4 = 0.0125) would keep two."""
    assert benjamini_hochberg([0.03, 0.005, 0.04, 0.01]) == pytest.approx([0.04, 0.02, 0.04, 0.02])
    # p = 0.01, 0.02, 0.5: 0.03, 0.03, 0.5; and a monotone step: 0.04 * 3 / 1 = 0.12 is lowered to 0.0675, the
    # value of 0.045 * 3 / 2 ranked after it
    assert benjamini_hochberg([0.5, 0.01, 0.02]) == pytest.approx([0.5, 0.03, 0.03])
    assert benjamini_hochberg([0.9, 0.04, 0.045]) == pytest.approx([0.9, 0.0675, 0.0675])
    assert benjamini_hochberg([]) == []


def test_the_rule_judges_the_family_once_and_its_interval_agrees():
    """Five comparisons, one of them listed twice (two tables show it): the family counts it once (m = 6 with the
    two comparisons without spread); a claim is exactly an adjusted p <= 0.05, which is exactly an adjusted interval
    (level 1 - 0.05 R / m) that excludes zero; `d` shows the control at work: its own 95% interval excludes zero (raw
    p 0.032) but not after the control (R = 2 claims of m = 6: level 1 - 0.05 * 2 / 6); the earlier screen's verdict
    stays beside the new one."""
    vals = {("a", "m"): [1.0, 1.1, 0.9], ("ref", "m"): [0.0, 0.1, -0.1], ("b", "m"): [0.2, 0.5, -0.1],
            ("c", "m"): [0.1, 0.0, 0.05], ("d", "m"): [0.25, 0.3, 0.2], ("flat", "m"): [0.7, 0.7, 0.7],
            ("same", "m"): [0.7, 0.7, 0.7], ("above", "m"): [0.8, 0.8, 0.8]}
    st = {k: mean_std(v) for k, v in vals.items()}

    def comp(x, ref="ref"):
        return {"a": x, "b": ref, "metric": "m", **compare(st[(x, "m")], st[(ref, "m")])}

    family = [comp("a"), comp("b"), comp("a"), comp("c"), comp("d"), comp("same", "flat"), comp("above", "flat")]
    judged = judge(family, vals)
    assert {c["family_size"] for c in judged} == {6}
    assert judged[0] == judged[2]
    unique = [judged[i] for i in (0, 1, 3, 4, 5, 6)]
    assert [c["p_adjusted"] for c in unique] == pytest.approx(benjamini_hochberg([c["p"] for c in unique]))
    assert [c["verdict"] == DIFFERS for c in unique] == [True, False, False, False, False, True]
    level = 1 - 0.05 * 2 / 6
    for c in judged:
        claimed = c["verdict"] == DIFFERS
        assert claimed == (c["p_adjusted"] <= 0.05)
        assert claimed == (c["ci_adjusted"][0] > 0 or c["ci_adjusted"][1] < 0), c
        assert c["ci_adjusted"] == pytest.approx(welch(vals[(c["a"], "m")], vals[(c["b"], "m")], level)["ci"])
        assert c["ci95"][0] <= c["diff"] <= c["ci95"][1] and c["n_a"] == c["n_b"] == 3
        assert set(c["screen"]) == {"threshold", "verdict"}
    d = judged[4]
    assert d["p"] == pytest.approx(0.0316, abs=1e-4) and d["ci95"][0] > 0 and d["ci_adjusted"][0] < 0
    assert d["verdict"] == WITHIN_NOISE
    # one seed on a side, or none: not tested / not run, outside the family
    one = {"a": "x", "b": "ref", "metric": "m", **compare(mean_std([1.0]), st[("ref", "m")])}
    none = {"a": "y", "b": "ref", "metric": "m", **compare(mean_std([]), st[("ref", "m")])}
    j = judge([comp("a"), one, none], vals)
    assert [c["verdict"] for c in j[1:]] == [NOT_TESTED, NOT_RUN] and j[0]["family_size"] == 1
    assert j[1]["diff"] == pytest.approx(1.0) and j[2]["diff"] is None


def test_the_earlier_screen_known_values():
    a, b = mean_std([1.1, 1.0, 0.9]), mean_std([0.9, 0.8, 0.7])  # sd 0.1 each
    c = screen(a, b)  # threshold 2 * sqrt(0.01/3 + 0.01/3) = 0.1633 < 0.2
    assert c["threshold"] == pytest.approx(0.163299, abs=1e-6) and c["verdict"] == "differs"
    assert screen(mean_std([1.2, 1.0, 0.8]), mean_std([1.0, 0.8, 0.6]))["verdict"] == WITHIN_NOISE  # 0.3266 > 0.2
    assert screen(mean_std([1.0]), b)["verdict"] == NOT_TESTED
    assert screen(mean_std([]), b)["verdict"] == NOT_RUN


def test_a_verdict_is_worded_by_the_rule():
    """The verb of a finding is the rule's verdict: raises/lowers only where it finds a difference."""
    def c(a, b, verdict):
        return {"mean_a": a, "mean_b": b, "diff": a - b, "verdict": verdict}

    assert change(c(0.9, 0.8, DIFFERS), "mAP") == "raises mAP from 0.800 to 0.900 (+0.100)"
    assert change(c(0.7, 0.8, DIFFERS), "mAP") == "lowers mAP from 0.800 to 0.700 (-0.100)"
    assert change(c(0.81, 0.8, WITHIN_NOISE), "mAP") == "leaves mAP within seed noise (0.810 against 0.800, +0.010)"
    assert "from a single seed, which the rule does not test" in change(c(0.9, 0.8, NOT_TESTED), "mAP")
    assert change(None, "mAP") == "has no mAP yet"


def test_selection_clause_says_whether_the_last_epoch_keeps_the_order():
    runs = {"a": 2, "b": 3}
    same = {"pck@0.05": {"selected": ["a", "b"], "last": ["a", "b"], "runs": runs}}
    assert selection_clause(same).endswith("instead of the selected checkpoint (2/3 runs each), `a`, `b` keep their "
                                           "order")
    swapped = {"pck@0.05": {"selected": ["a", "b"], "last": ["a", "b"], "runs": runs},
               "pck@0.2": {"selected": ["a", "b"], "last": ["b", "a"], "runs": runs}}
    assert selection_clause(swapped).endswith("(2/3 runs each), `b` passes `a` at PCK@0.2")
    three = {"pck@0.05": {"selected": ["a", "b", "c"], "last": ["c", "a", "b"], "runs": {"a": 2, "b": 2, "c": 2}}}
    assert selection_clause(three).endswith("(2 runs each), `c` passes `a`, `c` passes `b` at PCK@0.05")
    both = {m: {"selected": ["a", "b"], "last": ["b", "a"], "runs": runs} for m in ("pck@0.05", "pck@0.2")}
    assert selection_clause(both).endswith("`b` passes `a` at PCK@0.05; `b` passes `a` at PCK@0.2")
    assert selection_clause(None) == ""
    study = {"experiments": {k: {"last_epoch": {"seeds": seeds, "m": {"selected": {"mean": s}, "last": {"mean": la}}}}
                             for k, seeds, s, la in (("a", [1, 2], 0.9, 0.5), ("b", [1, 2], 0.8, 0.6),
                                                     ("c", [1, 2], 0.7, None), ("one", [1], 0.95, 0.95))}}
    r = selection_rankings(study, ["a", "b", "c", "one", "absent"], ("m",))["m"]
    assert r["selected"] == ["a", "b", "c"] and r["last"] == ["b", "a", "c"]  # no number: ranked last
    assert r["runs"] == {"a": 2, "b": 2, "c": 2}  # an experiment with one logged run is not ranked
    assert selection_rankings(study, ["a", "one"], ("m",)) is None


def _with_means(study: dict, changes: dict[tuple[str, str], float]) -> dict:
    """``study`` with some experiments' per-seed numbers shifted to a new mean (their spread kept), its statistics and
    comparisons recomputed as ``build_study`` does, and its findings rebuilt: what the study would say had the runs
    measured these numbers."""
    study = json.loads(json.dumps(study))
    for (key, metric), mean in changes.items():
        runs = [r for r in study["runs"] if r["experiment"] == key]
        shift = mean - sum(r["metrics"][metric] for r in runs) / len(runs)
        for r in runs:
            r["metrics"][metric] += shift
    for key, e in study["experiments"].items():
        e["metrics"] = {m: mean_std(r["metrics"].get(m) for r in study["runs"] if r["experiment"] == key)
                        for m in e["metrics"]}
    registry = build_registry()
    families = [f for f in registry.families if any(m in study["experiments"] for m in f.members)]
    study["comparisons"] = judged_comparisons(families, study["experiments"])
    study["findings"] = build_findings(study)
    return study


def _sentence(study: dict, question: str) -> str:
    return next(f["sentence"] for f in study["findings"] if f["question"] == question)


def test_a_flipped_verdict_changes_the_words_of_its_finding():
    study = json.loads((DOCS / "study.json").read_text())
    dil, sq = "What does `--head-dilation 3` change?", "Why do squares fail at the specified receptive field?"
    before = _with_means(study, {})
    assert "and raises square AP@0.5 from 0.665 to 0.928" in _sentence(before, dil)
    assert " because one prediction cannot see a whole square: " in _sentence(before, sq)
    # the dilated head below the specification: the same numbers' sentence turns round, and the cause is withdrawn
    after = _with_means(study, {("p1-dilation3", "ap50_square"): 0.6, ("p1-dilation3", "map50"): 0.75})
    assert "lowers square AP@0.5 from 0.665 to 0.600 (-0.065)" in _sentence(after, dil)
    assert "raises" not in _sentence(after, dil)
    assert "because" not in _sentence(after, sq) and "not shown to be the cause" in _sentence(after, sq)
    # regression gaining from canonical hand labels: no longer "not the hand labels"
    hands = "Is regression's deficit the left/right-hand ambiguity?"
    assert _sentence(before, hands).startswith("Not the hand labels:")
    # regression level with the heatmap on canonical labels: then the labels are what held it back
    heat = study["experiments"]["p2-canonical-hands-heatmap"]["metrics"]["pck@0.05"]["mean"]
    level = _sentence(_with_means(study, {("p2-canonical-hands-regression", "pck@0.05"): heat}), hands)
    assert level.startswith("Possibly the hand labels:") and "may be what holds regression back" in level
    assert f"regression is level with the heatmap within seed noise ({fmt(heat)} against {fmt(heat)}" in level
    canon = {k: before["experiments"][f"p2-canonical-hands-{k}"]["metrics"]["pck@0.05"]["mean"]
             for k in ("heatmap", "regression")}  # the committed study's numbers, whatever its seeds
    assert _sentence(before, hands).startswith(
        "Not the hand labels: on canonical hand labels (left = smaller x) regression trails the heatmap by "
        f"{fmt(canon['heatmap'] - canon['regression'])} ({fmt(canon['regression'])} against {fmt(canon['heatmap'])})")


def test_findings_are_one_sentence_each_and_the_summary_at_most_twelve():
    study = json.loads((DOCS / "study.json").read_text())
    sentences = [f["sentence"] for f in study["findings"]]
    assert 0 < len(sentences) <= 12
    for s in sentences:  # one sentence: a single end, at the end (decimal points are followed by digits)
        assert re.findall(r"[.!?](?=\s|$)", s) == ["."], s
    report = (DOCS / "REPORT.md").read_text()
    sections = [line for line in report.splitlines() if line.startswith("## ")]
    assert sections[0] == "## Summary"  # the answers come first
    for f in study["findings"]:
        assert f"{f['sentence']} [→](" in report


REPORT_MODULES = ["experiments/findings.py", "experiments/report.py", "experiments/report_common.py",
                  "experiments/report_problem1.py", "experiments/report_problem2.py", "experiments/report_appendix.py",
                  "experiments/readme.py", "problem1/report.py", "problem2/report.py"]


def test_no_report_module_decides_with_a_threshold_of_its_own():
    """Verdicts are the study's rule (experiments/rule.py): no module that writes a report compares a number with
    a fractional constant of its own (the kind of "0.5 counts as reached" that problem2/report.py once held)."""
    import ast

    for rel in REPORT_MODULES:
        tree = ast.parse((ROOT / rel).read_text(), rel)
        for node in ast.walk(tree):
            if isinstance(node, ast.Compare):
                for side in (node.left, *node.comparators):
                    value = side.operand if isinstance(side, ast.UnaryOp) else side
                    assert not (isinstance(value, ast.Constant) and isinstance(value.value, float)), \
                        f"{rel}:{node.lineno}: compares with the constant {value.value}"
            if isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant) and \
                    isinstance(node.value.value, float) and any(isinstance(t, ast.Name) and t.id.isupper()
                                                                for t in node.targets):
                raise AssertionError(f"{rel}:{node.lineno}: a module-level fractional constant")


def test_recorded_study_command_leaves_out_where_inputs_come_from():
    """--continue-from and --bench-json (one value or several, spaced or with '=') name inputs, not the study."""
    from study import study_command_args

    argv = ["--continue-from", "docs/report", "--seeds-for", "p1-cosine=1", "--bench-json", "a.json", "b.json",
            "--only", "p2", "--bench-json=c.json", "--continue-from=d", "--seeds", "2"]
    assert study_command_args(argv) == ["--seeds-for", "p1-cosine=1", "--only", "p2", "--seeds", "2"]
    assert study_command_args(["--bench-json", "a.json"]) == []
    # where the runs execute is not what the study computes: --no-wait takes no value, the --slurm-* options one
    argv = ["--executor", "slurm", "--no-wait", "--only", "p1", "--slurm-partition=cpu", "--slurm-time", "60",
            "--slurm-cpus-per-task", "4", "--slurm-gpus-per-task", "1", "--jobs", "2", "--replace", "--seeds", "1",
            "--run-figures", "report"]
    assert study_command_args(argv) == ["--only", "p1", "--seeds", "1"]


def test_performance_section_has_rows_per_bench_and_names_only_recorded_machines():
    row = {"precision": "fp32", "batch_size": 32, "pure_model_step": {"images_per_s": 45.61},
           "real_training_step": {"images_per_s": 47.94}, "real_over_pure": 1.051, "non_model_ms_per_step": 1.452,
           "evaluation_val": {"images_per_s": 180.2}, "evaluation_over_inference": 0.97, "peak_memory_mb": 1571.2}
    meta = {"device": "cpu", "threads": 2, "steps": 5, "warmup": 2, "command": "python bench.py --json x.json"}
    machine = {"cpu": "Some CPU (family 1, model 2)", "cpu_count": 2, "device": "cpu", "native_bf16": False}
    old = {"meta": {**meta, "cpu": "x86_64"}, "results": {"problem2 heatmap": row}}
    new = {"meta": {**meta, "cpu": machine["cpu"], "machine": machine}, "results": {"problem2 heatmap": row}}
    text = "\n".join(performance_section({"benches": [old, new], "meta": {"quick": False}}))
    assert "| 1 | problem2 heatmap | fp32 | 32 | 45.6 | 47.9 | 180.2 |" in text
    assert "| 2 | problem2 heatmap | fp32 | 32 | 45.6 | 47.9 | 180.2 |" in text
    assert "1: `python bench.py --json x.json` on a machine the file does not name (cpu, `x86_64`); 2: " in text
    assert "2: `python bench.py --json x.json` on Some CPU (family 1, model 2) (2 logical CPUs, no native bf16), " \
           "cpu); 2 threads, 5 timed steps each." in text
    # files measured with other settings each say theirs
    other = {**new, "meta": {**new["meta"], "threads": 4}}
    text = "\n".join(performance_section({"benches": [old, other], "meta": {"quick": False}}))
    assert "(cpu, `x86_64`), 2 threads, 5 timed steps; 2: " in text and "cpu, 4 threads, 5 timed steps)." in text
    assert "Not measured" in "\n".join(performance_section({"benches": [], "meta": {"quick": False}}))


def test_readme_run_times_name_each_machine_once_by_a_letter():
    fast = {"cpu": "Fast CPU (family 1, model 2)", "cpu_count": 2, "device": "cpu", "native_bf16": True}
    slow = {"cpu": "Slow CPU (family 3, model 4)", "cpu_count": 2, "device": "cpu", "native_bf16": False}
    run = (lambda key, machine, s: {"experiment": key, "precision": "fp32", "machine": machine,
                                     "time": {"s_per_epoch": s, "train_s": 30 * s}})
    study = {"families": [{"key": "p1-main", "members": ["p1-spec"]}, {"key": "p2-methods", "members": ["p2-heatmap"]}],
             "experiments": {"p1-spec": {}, "p2-heatmap": {}},
             "runs": [run("p2-heatmap", slow, 30.0), run("p1-spec", fast, 50.0), run("p2-heatmap", fast, 20.0),
                      run("p2-heatmap", fast, 22.0)]}
    lines = _run_times(study)
    rows = [line for line in lines if line.startswith("| `")]
    # letters in the order the table first shows each machine; within an experiment, A before B
    assert rows == ["| `p1-spec` | fp32 | A | 1 | 50.0 s | 25 min 00 s |", "| `p2-heatmap` | fp32 | A | 2 | 21.0 s | "
                    "10 min 30 s |", "| `p2-heatmap` | fp32 | B | 1 | 30.0 s | 15 min 00 s |"]
    assert lines[-1] == (f"Machines: A: {machine_name(fast)}; B: {machine_name(slow)}.")
    assert _run_times({**study, "runs": []}) == []


def test_eta_from_measured_epochs():
    remaining = [("problem1", "problem1", 3, True), ("problem2 heatmap 64px", "problem2", 2, True),
                 ("problem2 regression", "problem2", 0, True)]
    seconds, unmeasured = estimate(remaining, {"problem1": [10.0, 30.0, 20.0]}, {"problem1": [5.0], "problem2": [2.0]})
    assert seconds == 3 * 20.0 + 5.0 + 2.0 and unmeasured == 1  # median epoch; the heatmap kind is not timed yet
    assert format_eta(0.0, 2, 2) == "ETA after the first epoch"
    assert format_eta(3725.0, 0, 1) == "ETA 1 h 02 min"
    assert format_eta(0.0, 0, 0) == "done"


def test_makespan_of_runs_side_by_side():
    assert makespan([], 4) == 0.0
    assert makespan([5.0, 3.0, 2.0], 1) == 10.0  # one slot: the sum
    assert makespan([5.0, 3.0, 2.0], 2) == 5.0  # 5 | 3 + 2
    assert makespan([3.0, 3.0, 2.0, 2.0, 2.0], 2) == 7.0  # longest first: 3+2+2 | 3+2 (the best split is 6)
    assert makespan([7.0, 1.0], 10) == 7.0  # more slots than runs: the longest run


# --- export --------------------------------------------------------------------------------------------------------

def test_shrink_png_fits_the_budget_and_keeps_small_files(tmp_path):
    noise = np.random.default_rng(0).integers(0, 256, (300, 300, 3), dtype=np.uint8)
    big = tmp_path / "big.png"
    Image.fromarray(noise).save(big)
    assert big.stat().st_size > 60_000
    data = shrink_png(big, max_bytes=60_000)
    assert len(data) <= 60_000
    small = tmp_path / "small.png"
    Image.fromarray(noise[:20, :20]).save(small)
    assert shrink_png(small, max_bytes=60_000) == small.read_bytes()
    assert linked_figures("![a](x/a.png) [b](b.png) ![a again](x/a.png) `c.png`") == ["x/a.png", "b.png"]


# --- REPORT.md against study.json ----------------------------------------------------------------------------------

NUMBER = re.compile(r"(?<![\w.@])-?\d+\.\d+(?![\w.])")
EXPERIMENT_ROW = re.compile(r"^`([\w.-]+)`( †)?$")  # a row of one experiment (not "`a` vs `b`")


def _numbers(obj) -> list[float]:
    if isinstance(obj, bool):
        return []
    if isinstance(obj, (int, float)):
        return [obj]
    if isinstance(obj, dict):
        return [x for v in obj.values() for x in _numbers(v)]
    if isinstance(obj, list):
        return [x for v in obj for x in _numbers(v)]
    return []


def _tables(report: str) -> list[tuple[int, list[str], list[list[str]]]]:
    """``(line index, header cells, rows of cells)`` of every markdown table."""
    lines, out, i = report.splitlines(), [], 0
    cells = lambda line: [c.strip() for c in line.strip().strip("|").split(" | ")]  # noqa: E731
    while i < len(lines):
        if lines[i].startswith("|") and i + 1 < len(lines) and lines[i + 1].startswith("|---"):
            start, header, rows = i, cells(lines[i]), []
            i += 2
            while i < len(lines) and lines[i].startswith("|"):
                rows.append(cells(lines[i]))
                i += 1
            out.append((start, header, rows))
        else:
            i += 1
    return out


def check_report_consistency(report: str, study: dict) -> int:
    """Every table of ``report`` against ``study``: the study's command is named once, at the top; every decimal
    number in a cell is a number of ``study`` as printed with that many decimals; every cell of an experiment row
    under a headline metric's label is that experiment's "mean ± std" from ``study`` (with "(n=K)" where K is not the
    study's number of seeds). Returns the aggregate cells checked.
    """
    printed = {f"{v:.{d}f}" for v in _numbers(study) for d in range(4)}
    labels = {p: {h["label"]: h for h in hs} for p, hs in study["headline"].items()}
    lines = report.splitlines()
    checked = 0
    tables = _tables(report)
    assert tables, "no tables"
    assert f"Generated by `{study['meta']['command']}`" in "\n".join(lines[:5])
    nominal = seeds_per_problem(study["meta"]["seeds"])
    for start, header, rows in tables:
        for row in rows:
            assert len(row) == len(header), row
            for col, cell in enumerate(row):
                text = re.sub(r"`[^`]*`", "", cell)  # commands and names, not reported numbers
                for token in NUMBER.findall(text):
                    assert token in printed, f"line {start + 1}: {token} ({cell!r}) is not in study.json"
                m = EXPERIMENT_ROW.match(row[0])
                exp = study["experiments"].get(m.group(1)) if m else None
                h = labels[exp["problem"]].get(header[col]) if exp and col else None
                if h is None:
                    continue
                s = exp["metrics"][h["key"]]
                d = h["digits"]
                n = "" if s["n"] == nominal[exp["problem"]] else f" (n={s['n']})"
                want = ("not run" if not s["n"] else f"{s['mean']:.{d}f}{n}" if s["n"] == 1 else
                        f"{s['mean']:.{d}f} ± {s['std']:.{d}f}{n}")
                assert cell == want, f"line {start + 1}, {m.group(1)} {header[col]}: {cell!r} != {want!r}"
                checked += 1
    return checked


DOCS = ROOT / "docs" / "report"


@pytest.mark.skipif(not (DOCS / "REPORT.md").is_file(), reason="no committed reference report in docs/report/ yet")
def test_committed_report_matches_its_study_json():
    assert check_report_consistency((DOCS / "REPORT.md").read_text(), json.loads((DOCS / "study.json").read_text()))
    for rel in linked_figures((DOCS / "REPORT.md").read_text()):
        assert (DOCS / rel).stat().st_size <= 1_000_000, rel


def test_readme_keeps_no_result_number_that_the_committed_study_lacks():
    """Every 3-decimal number in README.md (the metrics' precision) is a number of docs/report/study.json."""
    printed = {f"{v:.3f}" for v in _numbers(json.loads((DOCS / "study.json").read_text()))}
    found = [n.lstrip("+") for n in re.findall(r"(?<![\d.])[-+]?\d+\.\d{3}(?![\d.])", (ROOT / "README.md").read_text())]
    assert found and [n for n in found if n not in printed] == []


def test_readme_results_block_is_what_the_committed_study_renders():
    """README's Results block is regenerated, never edited: ``study.py --export docs/report --readme README.md``."""
    study = json.loads((DOCS / "study.json").read_text())
    assert current_block(ROOT / "README.md") == readme_block(study, DOCS, ROOT)
    for link in re.findall(r"\]\(([^)#\s]+)\)", readme_block(study, DOCS, ROOT)):
        assert (ROOT / link).is_file(), link


def test_committed_report_and_readme_are_short_enough_to_read():
    """The report opens with its answers and stays under 4,000 words; the README is a newcomer's page, under 2,000
    (what they leave out is in study.json and docs/)."""
    assert len((DOCS / "REPORT.md").read_text().split()) <= 4000
    assert len((ROOT / "README.md").read_text().split()) <= 2000


# --- the whole pipeline --------------------------------------------------------------------------------------------

# Two seeds where the comparisons need a spread, one elsewhere (the report must say so), one epoch per run.
QUICK = ["--quick", "--quick-images", "4", "2", "--device", "cpu", "--quick-epochs", "1", "1", "--seeds", "2",
         "--seeds-for", "p2-*=1", "--seeds-for", "p2-heatmap=2", "--seeds-for", "p2-regression=2", "--seeds-for",
         "p1-cosine=1", "--seeds-for", "p1-dilation3-cosine=1", "--run-figures", "report"]


@pytest.fixture(scope="session")
def quick_study(tmp_path_factory):
    res = tmp_path_factory.mktemp("study") / "q"
    t0 = time.perf_counter()
    r = _study(*QUICK, "--results-dir", str(res))
    assert r.returncode == 0, r.stderr[-3000:]
    return res, time.perf_counter() - t0, r


@pytest.mark.xdist_group("quick_study")
def test_quick_study_writes_a_consistent_report(quick_study):
    res, _, r = quick_study
    study = json.loads((res / "study.json").read_text())
    report = (res / "REPORT.md").read_text()
    assert study["time"]["runs_finished"] == study["time"]["runs_planned"] == 26
    assert "run 1/26 p1-spec/seed641" in r.stdout and "ETA after the first epoch" in r.stdout
    for key, e in study["experiments"].items():  # the aggregates are the statistics of the runs' numbers
        values = [x["metrics"]["pck@0.05" if e["problem"] == "problem2" else "map50"] for x in study["runs"]
                  if x["experiment"] == key]
        stat = e["metrics"]["pck@0.05" if e["problem"] == "problem2" else "map50"]
        assert stat["n"] == len(values) == len(e["planned_seeds"])
        assert stat["mean"] == pytest.approx(float(np.mean(values)))
        assert stat["std"] == (pytest.approx(float(np.std(values, ddof=1))) if len(values) > 1 else None)
    assert check_report_consistency(report, study) > 100
    assert "## Summary" in report and "`--head-dilation 3` widens the windows" in report
    # the legend's commands: what each experiment changes, without the folder every run names for itself
    legend = [line for line in report.split("### Experiments\n")[1].split("\n### ")[0].splitlines()
              if line.startswith("| `")]
    assert len(legend) == len(study["experiments"]) and not any("--results-dir" in line for line in legend)
    assert any(line.startswith("| `p1-dilation3` | `--epochs 1 --head-dilation 3 ") for line in legend)
    assert "python problem" not in "\n".join(legend)  # said once above the table
    # a row compared with another experiment than the table's reference names it, instead of blank cells
    results = report.split("### Problem 1 results\n")[1].split("\n### ")[0]
    row = next(line for line in results.splitlines() if line.startswith("| `p1-dilation3-cosine`"))
    assert row.count("vs `p1-dilation3`: ") == 2, row
    assert "`p1-cosine` †" in report and "`p1-cosine` has 1 of 2 seeds: fewer seeds planned" in report
    assert any(c["a"] == "p1-cosine" and c["verdict"] == NOT_TESTED for c in study["comparisons"])
    assert any(c["a"] == "p1-dilation3" and c["verdict"] != NOT_TESTED for c in study["comparisons"])
    for rel in linked_figures(report):
        assert (res / rel).is_file(), rel
    assert "was not drawn" not in report  # every run figure the report links was drawn
    # --run-figures report: each run and pair evaluation drew exactly the figures the report shows of it (those of
    # the seed-641 runs); every run has its numbers
    drew = {png.relative_to(res).as_posix() for png in (res / "study").rglob("*.png")}
    assert drew == {rel for rel in linked_figures(report) if rel.startswith("study/")} | {
        rel for rel, _ in panel_sources(study)}  # the runs' figures it links, and those its panels are made of
    assert {rel.split("/")[1] for rel in drew} == set(report_run_figures()) and all("/seed641/" in rel for rel in drew)
    assert "--run-figures" not in study["meta"]["command"]
    # the last epoch beside the selected checkpoint: read from each run's training log, over the same runs
    for run in study["runs"]:
        log = [x for x in json.loads((res / run["dir"] / "training_log.json").read_text())
               if x.get("model") in (None, run["config"].get("model"))]
        last = run["last_epoch"]
        assert last["epoch"] == log[-1]["epoch"]
        if run["problem"] == "problem1":
            assert last["map50"] == log[-1]["val"]["mAP"] and last["ap50_square"] == log[-1]["val"]["ap_per_class"][
                "square"]
        else:
            assert last["pck@0.05"] == log[-1]["val"]["pck"]["0.05"] and last["pck@0.2"] == log[-1]["val"]["pck"]["0.2"]
    for e in study["experiments"].values():
        assert e["last_epoch"]["seeds"] == e["seeds"]
        m = "map50" if e["problem"] == "problem1" else "pck@0.2"
        assert e["last_epoch"][m]["selected"] == e["metrics"][m]
    numbers = {f["question"]: f["numbers"] for f in study["findings"]}
    p1 = numbers["Is the specification under-trained?"]["ranking_selected_vs_last_epoch"]["map50"]
    assert sorted(p1["selected"]) == sorted(p1["last"]) == ["p1-dilation3", "p1-spec"]  # those with 2 logged runs
    under = next(f for f in study["findings"] if f["question"] == "Is the specification under-trained?")
    assert "on the dilated head the same schedule gives mAP@0.5" in under["sentence"]  # one seed: not tested
    assert under["numbers"]["best_configuration"] in study["experiments"] and \
        "the highest mean mAP@0.5 is `" in under["sentence"]
    p2 = numbers["Does direct regression lose?"]["ranking_selected_vs_last_epoch"]["pck@0.05"]
    assert sorted(p2["last"]) == sorted(p2["selected"]) == ["p2-heatmap", "p2-regression"]
    # each problem's more-metrics table carries both checkpoints' means, over the logged runs
    for title, label in (("Problem 1: more metrics", "mAP@0.5"), ("Problem 2: more metrics", "PCK@0.05")):
        section = report.split(f"### {title}\n")[1].split("\n### ")[0]
        assert f"| logged runs | {label} selected | {label} last |" in section, title
        assert "AP@0.5 square selected" not in section  # the ranked metrics only (findings.RANKED)
    assert "at the last epoch instead of the selected checkpoint (2 runs each), `p1-" in report
    [bench] = study["benches"]
    assert bench["meta"]["steps"] == 1 and bench["meta"]["machine"]["cpu_count"] == os.cpu_count()
    assert f"on {machine_name(bench['meta']['machine'])}); {bench['meta']['threads']} threads, 1 timed step each" \
        in report


@pytest.mark.xdist_group("quick_study")
def test_report_judges_each_problem_by_its_own_number_of_seeds(quick_study, tmp_path):
    """With 2 seeds planned per problem-1 and 3 per problem-2 experiment, the introduction lists each problem's seeds,
    problem 1's full experiments carry no "(n=2)", and problem 2's two-seed experiments are marked as short."""
    from experiments.report import report_markdown

    res, _, _ = quick_study
    study = json.loads((res / "study.json").read_text())
    study["meta"]["seeds"] = {"problem1": 2, "problem2": 3}
    report = report_markdown(study, res)
    assert "Problem 1's experiments are trained with seeds 641, 1 and problem 2's with seeds 641, 1, 2 " in report
    assert "| `p1-spec` |" in report and "| `p2-heatmap` † |" in report
    assert "`p2-heatmap` has 2 of 3 seeds: fewer seeds planned" in report
    assert check_report_consistency(report, study) > 100
    assert "2 seeds per problem-1 experiment and 3 per problem-2 experiment" in readme_block(study, res, tmp_path)


@pytest.mark.xdist_group("quick_study")
def test_quick_study_again_skips_everything_and_report_only_is_byte_identical(quick_study, capsys):
    res, first_s, _ = quick_study
    report = (res / "REPORT.md").read_bytes()
    ckpt = res / "study" / "p1-spec" / "seed641" / "last.pth"
    mtime = ckpt.stat().st_mtime_ns
    t0 = time.perf_counter()
    r = _study_here(capsys, *QUICK, "--results-dir", str(res))
    again_s = time.perf_counter() - t0
    assert r.returncode == 0, r.stderr[-3000:]
    assert "0 train, 0 resume, 0 evaluate, 26 finished" in r.stdout
    # nothing trained or evaluated again: what is left is reading the runs, the study's figures and the report (a
    # third of the 26-run quick study's time at most; the checks above are the exact ones)
    assert ckpt.stat().st_mtime_ns == mtime and again_s < first_s / 3
    assert (res / "REPORT.md").read_bytes() == report
    r = _study_here(capsys, *QUICK, "--results-dir", str(res), "--report-only")
    assert r.returncode == 0, r.stderr[-3000:]
    assert (res / "REPORT.md").read_bytes() == report
    # without the seed flags, --report-only reuses those of the study that ran (its study.json), and without the
    # device flag the report is the same too: every command it prints is the one its run recorded (one invocation
    # for both: either flag changing the report would change these bytes)
    no_device = [a for a in TINY if a not in ("--device", "cpu")]
    r = _study_here(capsys, *no_device, "--quick-epochs", "1", "1", "--results-dir", str(res), "--report-only")
    assert r.returncode == 0, r.stderr[-3000:]
    assert (res / "REPORT.md").read_bytes() == report and b"--device cpu" in report


@pytest.mark.xdist_group("p2_pair_study")
def test_jobs_runs_in_parallel_with_the_numbers_of_one_after_the_other(tmp_path, p2_pair_study, capsys):
    """--jobs 2: the same runs, each in its own process, with the numbers of the sequential study at the same thread
    count; every run records its threads; the recorded study command leaves the scheduling out."""

    two = _study_here(capsys, *P2_PAIR_STUDY, "--threads-per-run", "1", "--jobs", "2", "--results-dir",
                      str(tmp_path / "two"))
    assert two.returncode == 0, two.stderr[-2000:]
    assert "2 at a time, 1 thread(s) each" in two.stdout
    studies = [json.loads((d / "study.json").read_text()) for d in (p2_pair_study, tmp_path / "two")]
    runs = [{r["experiment"]: r for r in s["runs"]} for s in studies]
    assert sorted(runs[0]) == sorted(runs[1]) == ["p2-heatmap", "p2-regression"]
    for key in runs[0]:
        assert runs[0][key]["metrics"] == runs[1][key]["metrics"], key
        assert runs[0][key]["threads"] == runs[1][key]["threads"] == 1
    assert (tmp_path / "two" / "study" / "p2-heatmap" / "seed641" / "study_worker.log").is_file()
    assert "--jobs" not in studies[1]["meta"]["command"] and "--threads-per-run" not in studies[1]["meta"]["command"]
    # the pair of the two specified models was evaluated once both were done
    assert (tmp_path / "two" / "study" / "p2-pair" / "seed641" / "metrics.json").is_file()
    # --run-figures none: no run and no pair evaluation drew a figure, in the worker processes either; the study did
    assert not list((tmp_path / "two" / "study").rglob("*.png")) and not list(p2_pair_study.rglob("study/**/*.png"))
    assert (tmp_path / "two" / "figures" / "p2_overview.png").is_file()


@pytest.mark.xdist_group("quick_study")
def test_export_copies_the_report_and_exactly_its_figures(quick_study, tmp_path, capsys):
    res, _, _ = quick_study
    out = tmp_path / "docs" / "report"
    r = _study_here(capsys, "--results-dir", str(res), "--export", str(out))
    assert r.returncode == 0, r.stderr
    report = (out / "REPORT.md").read_text()
    files = {str(p.relative_to(out)) for p in out.rglob("*") if p.is_file()}
    study = json.loads((out / "study.json").read_text())
    sources = {rel for rel, _ in panel_sources(study) if (res / rel).is_file()}  # what the panels are drawn from
    assert sources and files == {"REPORT.md", "study.json", *linked_figures(report), *sources}
    assert all((out / f).stat().st_size <= 1_000_000 for f in files if f.endswith(".png"))
    assert check_report_consistency(report, json.loads((out / "study.json").read_text())) > 100


def test_readme_markers_are_whole_lines_and_the_rest_is_kept(tmp_path):
    readme = tmp_path / "README.md"
    prose = f"Quoted inline, `{BEGIN}`, is prose.\n"
    readme.write_text(f"{prose}{BEGIN}\nOLD-BLOCK ±\n{END}\ntail †\n", encoding="utf-8")
    assert update_readme(readme, DOCS)
    text = readme.read_bytes().decode("utf-8")
    assert text.startswith(prose + BEGIN + "\n") and text.endswith(END + "\ntail †\n") and "OLD-BLOCK" not in text
    assert not update_readme(readme, DOCS)
    readme.write_text(f"{BEGIN}\n{BEGIN}\n{END}\n")
    with pytest.raises(UserError, match="needs one"):
        update_readme(readme, DOCS)


@pytest.mark.xdist_group("quick_study")
def test_export_renders_the_readme_block_between_its_markers_only(quick_study, tmp_path, capsys):
    res, _, _ = quick_study
    out, readme = tmp_path / "docs" / "report", tmp_path / "README.md"
    readme.write_text(f"# Title\n\nkept above\n\n{BEGIN}\nold block\n{END}\n\nkept below\n")
    r = _study_here(capsys, "--results-dir", str(res), "--export", str(out), "--readme", str(readme))
    assert r.returncode == 0, r.stderr
    assert "study block updated" in r.stdout
    text = readme.read_text()
    block = current_block(readme)
    assert text.startswith("# Title\n\nkept above\n\n" + BEGIN) and text.endswith(END + "\n\nkept below\n")
    assert "old block" not in text and "| `p1-spec` " in block and "| `p2-heatmap` " in block
    assert "26 of 26 planned runs finished" in block
    study = json.loads((out / "study.json").read_text())
    for f in study["findings"]:  # the answers, as the study's aggregation wrote them
        assert f"{f['sentence']} [→](" in block
    for link in re.findall(r"\]\(([^)#\s]+)\)", block):  # relative to the README, into the export
        assert (readme.parent / link).is_file(), link
    r = _study_here(capsys, "--results-dir", str(res), "--export", str(out), "--readme", str(readme))
    assert "already up to date" in r.stdout and readme.read_text() == text
    # a README without the markers: one line, before the export writes anything
    readme.write_text("# no markers\n")
    r = _study_here(capsys, "--results-dir", str(res), "--export", str(tmp_path / "other"), "--readme", str(readme))
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1 and "study:begin" in r.stderr
    assert readme.read_text() == "# no markers\n" and not (tmp_path / "other").exists()


def _runs_without(study: dict, *keys: str) -> list[dict]:
    return [{k: v for k, v in r.items() if k not in keys} for r in study["runs"]]


@pytest.mark.xdist_group("quick_study")
def test_continue_from_carries_an_exported_study_into_an_empty_folder(quick_study, tmp_path, capsys):
    """A new machine: the exported report is all there is. Carried over, every run counts as finished with the same
    numbers, nothing is trained, the pairs and the ceiling come along, and the report is the same but for saying so."""
    res, _, _ = quick_study
    out, new = tmp_path / "report", tmp_path / "new"
    assert _study_here(capsys, "--results-dir", str(res), "--export", str(out)).returncode == 0
    new.mkdir()
    (new / "bench.json").write_bytes((res / "bench.json").read_bytes())
    r = _study_here(capsys, *QUICK, "--results-dir", str(new), "--continue-from", str(out))
    assert r.returncode == 0, r.stderr[-3000:]
    assert f"carried over from {out}: 26 runs, 2 pair evaluations" in r.stdout
    assert "0 train, 0 resume, 0 evaluate, 26 finished" in r.stdout
    assert not list(new.rglob("*.pth"))
    old, got = (json.loads((d / "study.json").read_text()) for d in (res, new))
    assert got["time"]["runs_carried"] == 26 and all(x["carried_from"] == str(out) for x in got["runs"])
    assert _runs_without(got, "carried_from") == _runs_without(old)
    # commands name the folder: a carried run's, the folder it was made in
    norm = lambda obj: json.loads(json.dumps(obj).replace(str(new), "R").replace(str(res), "R"))  # noqa: E731
    for key in ("experiments", "comparisons", "ceiling", "machines"):
        assert norm(got[key]) == norm(old[key]), key
    assert [p["failures"] for p in got["pairs"]] == [p["failures"] for p in old["pairs"]]
    assert "--continue-from" not in got["meta"]["command"]
    report = (new / "REPORT.md").read_text()
    assert "(26 carried over from an earlier part of the study with `--continue-from`)" in report
    for rel in linked_figures(report):
        assert (new / rel).is_file(), rel
    same = lambda text: [line.replace(str(res), "R").replace(str(new), "R") for line in text.splitlines()  # noqa: E731
                         if not line.startswith("Generated by")]  # carried commands name the folder they ran in
    assert same(report) == same((res / "REPORT.md").read_text())
    # Again: the folders are not empty any more, so nothing is carried, trained or changed.
    before = (new / "REPORT.md").read_bytes()
    r = _study_here(capsys, *QUICK, "--results-dir", str(new), "--continue-from", str(out))
    assert r.returncode == 0 and "0 runs, 0 pair evaluations" in r.stdout
    assert (new / "REPORT.md").read_bytes() == before


def test_continue_from_carries_runs_with_the_same_config_and_never_mixes_precisions(tmp_path, capsys):
    import study
    from experiments.aggregate import collect_run
    from experiments.carry import carry_over
    from experiments.runner import compared_experiments, precision_conflicts, run_precision

    settings = Settings(tmp_path / "res", "data", "cpu", quick=True, p1_epochs=1, p2_epochs=1)
    _, runs, pairs = plan(settings, seeds=2, keys=["p1-spec", "p1-dilation3", "p1-cosine", "p2-regression"])
    by = {(r.experiment, r.seed): r for r in runs}
    spec, dil, cos, reg = (by[k, 641] for k in ("p1-spec", "p1-dilation3", "p1-cosine", "p2-regression"))
    src = tmp_path / "docs"

    def entry(run, **change):
        e = {"experiment": run.experiment, "problem": run.problem, "seed": run.seed,
             "dir": f"study/{run.experiment}/seed{run.seed}", "precision": run_precision(run),
             "config": identity(run.problem, dataclasses.asdict(run.config)), "metrics": {"map50": 0.5},
             "time": {"train_s": 1.0, "evaluate_s": 1.0}}
        return {**e, **change}

    other = "fp16"  # a precision this machine never trains in, as bf16 is on a CPU without native bf16
    entries = [entry(spec), entry(dil, config={**entry(dil)["config"], "lr": 0.5}), entry(cos, precision=other),
               entry(reg)]
    (src / "study" / "p1-spec" / "seed641" / "visualizations").mkdir(parents=True)
    (src / "study" / "p1-spec" / "seed641" / "visualizations" / "pr_curves.png").write_bytes(b"png")
    (src / "study.json").write_text(json.dumps({"runs": entries, "pairs": []}))
    reg.dir.mkdir(parents=True)
    (reg.dir / "notes.txt").write_text("mine")  # a folder here that is not empty is never touched
    done = carry_over(src, runs, pairs)
    assert done["runs"] == ["p1-spec/seed641", "p1-cosine/seed641"] and done["pairs"] == []
    assert len(done["refused"]) == 1 and "p1-dilation3/seed641" in done["refused"][0] and "lr" in done["refused"][0]
    assert run_state(spec) == run_state(cos) == FINISHED and run_state(dil) == TRAIN
    assert (spec.dir / "visualizations" / "pr_curves.png").read_bytes() == b"png"
    assert sorted(p.name for p in reg.dir.iterdir()) == ["notes.txt"]
    assert collect_run(spec, settings.results_dir) == {**entries[0], "carried_from": str(src)}
    # The carried run keeps its precision; a further seed of its experiment in another one is refused, others are not.
    conflicts = precision_conflicts(runs, runs)
    assert len(conflicts) == 1 and conflicts[0].startswith("p1-cosine/seed1:") and other in conflicts[0]
    # Two compared experiments must share one precision too (their difference would mix precision with method):
    # p1-spec is compared with p1-cosine, whose carried seed is in the other precision; p1-dilation3 is not.
    partners = compared_experiments(build_registry(1, 1).families)
    assert {"p1-dilation3", "p1-cosine"} <= partners["p1-spec"] and "p1-cosine" not in partners["p1-dilation3"]
    both = precision_conflicts(runs, runs, partners)
    assert [c.split(":")[0] for c in both] == ["p1-spec/seed1", "p1-cosine/seed1"]
    assert both[0] == (f"p1-spec/seed1: it is compared with p1-cosine, whose finished seeds were trained in {other}; "
                       f"this machine would train it in {run_precision(by['p1-spec', 1])}")
    argv = [*TINY, "--quick-epochs", "1", "1", "--seeds", "2", "--experiments", "p1-cosine", "--no-bench",
            "--results-dir", str(settings.results_dir)]
    assert run_main(study.main, argv) == 2  # before any work: no data generated, nothing trained
    err = capsys.readouterr().err
    assert err.startswith("error: p1-cosine/seed1:") and len(err.strip().splitlines()) == 1
    assert not (settings.results_dir / "quick_data").exists() and not by["p1-cosine", 1].dir.exists()
    # A carried record that no longer matches the plan is refused like any other folder holding another run.
    record = json.loads((spec.dir / "carried.json").read_text())
    record["entry"]["config"]["lr"] = 0.5
    (spec.dir / "carried.json").write_text(json.dumps(record))
    with pytest.raises(UserError, match="carried-over run that differs.*lr"):
        run_state(spec)
    with pytest.raises(UserError, match="holds no study.json"):
        carry_over(tmp_path / "nowhere", runs, pairs)


def test_bad_input_is_one_line_before_any_work(tmp_path, capsys):
    import study

    res = tmp_path / "r"
    for args in (["--seeds-for", "p1-spec"], ["--seeds", "0"], ["--experiments", "p9-none"],
                 ["--quick", "--data-dir", "x"], ["--export", str(tmp_path / "out")],
                 ["--readme", str(tmp_path / "README.md")], ["--jobs", "0"], ["--threads-per-run", "0"],
                 ["--no-wait"], ["--executor", "slurm", "--jobs", "2"], ["--executor", "slurm", "--slurm-time", "0"],
                 ["--executor", "slurm", "--slurm-gpus-per-task", "-1"]):
        assert run_main(study.main, [*args, "--results-dir", str(res)]) == 2, args
        err = capsys.readouterr().err
        assert len(err.strip().splitlines()) == 1 and err.startswith("error: "), (args, err)
    assert not res.exists() and not (tmp_path / "out").exists()
    # A run folder holding another run: refused before the quick data is generated; nothing overwritten.
    _, runs, _ = plan(Settings(res, str(res / "quick_data"), "cpu", quick=True, p1_epochs=1, p2_epochs=1), seeds=1,
                      keys=["p2-regression"])
    runs[0].dir.mkdir(parents=True)
    other = {**dataclasses.asdict(runs[0].config), "lr": 0.5}
    (runs[0].dir / "config.json").write_text(json.dumps(other))
    argv = [*TINY, "--quick-epochs", "1", "1", "--seeds", "1", "--experiments", "p2-regression", "--no-bench",
            "--results-dir", str(res)]
    assert run_main(study.main, argv) == 2
    assert "holds a different run" in capsys.readouterr().err
    assert json.loads((runs[0].dir / "config.json").read_text()) == other and not (res / "quick_data").exists()


def test_kill9_mid_run_resumes_to_the_uninterrupted_study(tmp_path, capsys):
    args = [*TINY, "--quick-epochs", "1", "6", "--seeds", "1", "--experiments", "p2-regression", "--no-bench",
            "--run-figures", "none"]
    killed, ref = tmp_path / "killed", tmp_path / "ref"
    run_dir = Path("study") / "p2-regression" / "seed641"
    proc = subprocess.Popen([sys.executable, "study.py", *args, "--results-dir", str(killed)], cwd=ROOT, env=ENV,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 300
    while not (killed / run_dir / "last.pth").exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    assert proc.poll() is None, proc.communicate()[1]
    proc.kill()  # SIGKILL: no handler runs
    proc.wait()
    epoch = torch.load(killed / run_dir / "last.pth", weights_only=True)["epoch"]
    assert 1 <= epoch < 6 and not (killed / run_dir / "metrics.json").exists()
    r = _study_here(capsys, *args, "--results-dir", str(killed))
    assert r.returncode == 0, r.stderr[-3000:]
    assert "0 train, 1 resume" in r.stdout
    r = _study_here(capsys, *args, "--results-dir", str(ref))
    assert r.returncode == 0, r.stderr[-3000:]
    logs = [json.loads((d / run_dir / "training_log.json").read_text()) for d in (killed, ref)]
    assert len(logs[0]) == 6 and strip_timing(logs[0]) == strip_timing(logs[1])
    metrics = [json.loads((d / run_dir / "metrics.json").read_text())["methods"]["regression"] for d in (killed, ref)]
    assert metrics[0]["metrics"] == metrics[1]["metrics"] and metrics[0]["epoch"] == metrics[1]["epoch"]
    runs = [json.loads((d / "study.json").read_text())["runs"] for d in (killed, ref)]
    assert [x["metrics"] for x in runs[0]] == [x["metrics"] for x in runs[1]] and len(runs[0]) == 1
    assert fmt(runs[0][0]["metrics"]["pck@0.05"]) in (killed / "REPORT.md").read_text()
