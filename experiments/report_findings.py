"""The "Findings" section of ``REPORT.md``: every comparison the study makes, in words, on its family's lead metric
(mAP@0.5 for problem 1, PCK@0.05 for problem 2; higher is better for both), with the verdict of the difference rule.
Generated from ``study.json``'s comparisons, so a finding changes only when the numbers do."""
from __future__ import annotations

from common.report import fmt
from experiments.aggregate import COMPARED, DIFFERS, NOT_RUN, NOT_TESTED, WITHIN_NOISE
from experiments.report_common import headline, stat_cell


def lead_comparisons(study: dict) -> list[dict]:
    """The comparisons on each problem's lead metric, each (a, b) once, in the study's order."""
    seen, out = set(), []
    for c in study["comparisons"]:
        problem = study["experiments"][c["a"]]["problem"]
        if c["metric"] != COMPARED[problem][0] or (c["a"], c["b"]) in seen:
            continue
        seen.add((c["a"], c["b"]))
        out.append(c)
    return out


def finding(study: dict, c: dict) -> str:
    """One compared pair with numbers as a sentence: both experiments' "mean ± std (n)", the difference and the
    verdict."""
    exps = study["experiments"]
    a, b = exps[c["a"]], exps[c["b"]]
    label = headline(study, a["problem"])[c["metric"]]["label"]
    values = (f"`{c['a']}`, {a['title']}, against `{c['b']}`, {label}: {stat_cell(a['metrics'][c['metric']])} against "
              f"{stat_cell(b['metrics'][c['metric']])}, difference {c['diff']:+.3f}")
    if c["verdict"] == NOT_TESTED:
        return f"{values}; not tested, one side has a single seed."
    if c["verdict"] == WITHIN_NOISE:
        return f"{values}, within noise (threshold {fmt(c['threshold'])})."
    assert c["verdict"] == DIFFERS, c["verdict"]
    return f"{values}, beyond the threshold {fmt(c['threshold'])}: **{'higher' if c['diff'] > 0 else 'lower'}**."


def findings_section(study: dict) -> list[str]:
    comps = lead_comparisons(study)
    if not comps:
        return []
    counts = {v: sum(c["verdict"] == v for c in comps) for v in (DIFFERS, WITHIN_NOISE, NOT_TESTED, NOT_RUN)}
    problems = [p for p in ("problem1", "problem2") if any(study["experiments"][c["a"]]["problem"] == p for c in comps)]
    leads = ", ".join(f"{headline(study, p)[COMPARED[p][0]]['label']} for {p.replace('problem', 'problem ')}"
                      for p in problems)
    not_run = [f"`{c['a']}` against `{c['b']}`" for c in comps if c["verdict"] == NOT_RUN]  # or without a value
    return ["## Findings", "",
            f"Every comparison the study makes, on each problem's lead metric ({leads}; higher is better), under the "
            "difference rule above; each section's tables give the other metrics. "
            f"Of {len(comps)} comparisons, {counts[DIFFERS]} differ, {counts[WITHIN_NOISE]} are within noise, "
            f"{counts[NOT_TESTED]} are not tested (a single seed on one side) and {counts[NOT_RUN]} have no value yet "
            "(not run, or no finite value).",
            "", *(f"- {finding(study, c)}" for c in comps if c["verdict"] != NOT_RUN),
            *([f"- No value yet: {', '.join(not_run)}."] if not_run else []), ""]
