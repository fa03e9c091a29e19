"""The study's answers, as data: each finding is a question, the numbers that answer it, the verdicts of the study's
difference rule (:mod:`experiments.rule`) on those numbers, and the sentence generated from both.

Computed once, in the aggregation (``study.json['findings']``); ``REPORT.md`` and the README only print them. The
wording of a sentence is chosen by its verdicts (a difference that the rule calls "lower" reads "lowers", one within
noise reads "leaves ... within seed noise"), so a flipped verdict changes the words, not only the numbers. No
threshold of its own decides anything here: every "differs" is the rule's; the other words describe counts and
shares (which scale produced most true positives, where most hand predictions land) without judging them.
"""
from __future__ import annotations

import math
from collections.abc import Callable

from common.report import fmt
from experiments.rule import DIFFERS, NOT_RUN, NOT_TESTED, WITHIN_NOISE, comparison

# The report section that holds each finding's evidence: key -> heading (the link target of the summary).
SECTIONS = {
    "p1-results": "Problem 1 results",
    "p1-scales": "Which scale finds which shape",
    "p1-squares": "Why squares fail: the receptive field",
    "p2-results": "Problem 2 results",
    "p2-hands": "The hand-ambiguity ceiling and the hypothesis test",
    "p2-regression": "Why direct regression loses",
    "p2-methods": "Integral and SimCC: where the hands land",
    "p2-ablations": "Heatmap ablations",
}
SCALES = 3


# --- reading the study -----------------------------------------------------------------------------------------

def _stat(study: dict, key: str, metric: str) -> dict | None:
    e = study["experiments"].get(key)
    s = e["metrics"].get(metric) if e else None
    return s if s and s["n"] else None


def direction(c: dict | None) -> str:
    """``'higher'``/``'lower'`` where the rule finds a difference, else its verdict (within noise, not tested,
    not run)."""
    if c is None:
        return NOT_RUN
    if c["verdict"] == DIFFERS:
        return "higher" if c["diff"] > 0 else "lower"
    return c["verdict"]


def pm(stat: dict | None, digits: int = 3) -> str:
    """``0.790 ± 0.004``; one seed: ``0.789 (one seed)``."""
    if not stat:
        return "n/a"
    if stat["n"] < 2:
        return f"{fmt(stat['mean'], digits)} (one seed)"
    return f"{fmt(stat['mean'], digits)} ± {fmt(stat['std'], digits)}"


def worded(c: dict | None, words: dict[str, str]) -> str:
    """``c`` in the words its verdict selects: ``words`` maps each :func:`direction` (higher, lower, within noise,
    not tested, not run) to a template over ``{a}`` and ``{b}`` (the two means), ``{diff}`` (signed) and ``{size}``
    (its magnitude). One place where a verdict picks a sentence's wording."""
    d = direction(c)
    if c is None or c["diff"] is None:
        return words[d].format(a="n/a", b="n/a", diff="n/a", size="n/a")
    return words[d].format(a=fmt(c["mean_a"]), b=fmt(c["mean_b"]), diff=f"{c['diff']:+.3f}",
                           size=f"{abs(c['diff']):.3f}")


def change(c: dict | None, what: str, up: str = "raises", down: str = "lowers") -> str:
    """A verdict as words about ``what`` (e.g. "square AP@0.5"): the verb follows the rule's verdict ("raises" and
    "lowers" only where the rule finds a difference; the report says so once)."""
    w = what.replace("{", "{{").replace("}", "}}")
    return worded(c, {"higher": f"{up} {w} from {{b}} to {{a}} ({{diff}})",
                      "lower": f"{down} {w} from {{b}} to {{a}} ({{diff}})",
                      WITHIN_NOISE: f"leaves {w} within seed noise ({{a}} against {{b}}, {{diff}})",
                      NOT_TESTED: f"gives {w} {{a}} against {{b}} ({{diff}}) from a single seed, which the rule does "
                                  "not test",
                      NOT_RUN: f"has no {w} yet"})


def _record(c: dict | None) -> dict | None:
    """The numbers of a comparison a finding rests on, as ``study.json`` keeps them."""
    if c is None:
        return None
    return {k: c.get(k) for k in ("a", "b", "metric", "mean_a", "mean_b", "n_a", "n_b", "diff", "ci95", "p_adjusted",
                                  "verdict")}


def first_run(study: dict, key: str) -> dict | None:
    """The finished run of ``key`` with the study's first seed (or its first finished seed): the run whose details
    the findings quote and whose figures the report shows."""
    runs = [r for r in study["runs"] if r["experiment"] == key]
    order = study["experiments"].get(key, {}).get("planned_seeds", [])
    return min(runs, key=lambda r: order.index(r["seed"]) if r["seed"] in order else len(order), default=None)


def _finding(key: str, question: str, sentence: str, comparisons: list[dict | None] = (),
             numbers: dict | None = None) -> dict:
    comps = [_record(c) for c in comparisons if c is not None]
    return {"key": key, "section": SECTIONS[key], "question": question, "sentence": sentence,
            "verdicts": [direction(c) for c in comps], "comparisons": comps, "numbers": numbers or {}}


def selection_rankings(study: dict, keys: list[str], metrics: tuple[str, ...], min_runs: int = 2) -> dict | None:
    """``keys`` ranked by mean ``metric`` at the selected checkpoint (lowest validation loss, as specified) and at
    the last epoch, over the same runs (those whose training log the study read), counting only experiments with at
    least ``min_runs`` such runs: ``{metric: {'selected': [...], 'last': [...], 'runs': {key: n}}}``; ``None`` with
    fewer than two such experiments."""
    keys = [k for k in keys if k in study["experiments"] and len((study["experiments"][k].get("last_epoch") or {})
                                                                  .get("seeds", [])) >= min_runs]
    if len(keys) < 2:
        return None

    def order(metric: str, which: str) -> list[str]:
        means = {k: study["experiments"][k]["last_epoch"][metric][which]["mean"] for k in keys}
        return sorted(keys, key=lambda k: -means[k] if means[k] is not None else math.inf)

    return {m: {"selected": order(m, "selected"), "last": order(m, "last"),
                "runs": {k: len(study["experiments"][k]["last_epoch"]["seeds"]) for k in keys}} for m in metrics}


# The metrics each problem's methods are ranked by at the selected checkpoint and at the last epoch (the summary's
# clause and the appendix's selected/last columns): the lead metric, and problem 2's loose threshold too.
RANKED = {"problem1": ("map50",), "problem2": ("pck@0.05", "pck@0.2")}
METRIC_WORDS = {"map50": "mAP@0.5", "pck@0.05": "PCK@0.05", "pck@0.2": "PCK@0.2"}


def selection_clause(rankings: dict | None) -> str:
    """The rankings of :func:`selection_rankings` as a clause naming what was ranked: the same order, or which
    experiment passes which at the last epoch (an order of means, described, not a verdict; the pairs that swap are
    shorter to read than two whole orders)."""
    if not rankings:
        return ""
    runs = next(iter(rankings.values()))["runs"]
    names = ", ".join(f"`{k}`" for k in runs)
    counts = sorted(set(runs.values()))
    head = f"; at the last epoch instead of the selected checkpoint ({'/'.join(map(str, counts))} runs each), "

    def passes(r: dict) -> list[str]:
        last, sel = r["last"], r["selected"]
        return [f"`{x}` passes `{y}`" for i, x in enumerate(last) for y in last[i + 1:]
                if sel.index(x) > sel.index(y)]

    changed = {m: passes(r) for m, r in rankings.items() if r["selected"] != r["last"]}
    if not changed:
        return f"{head}{names} keep their order"
    # the pairs that swap name their experiments; the others keep their places
    return head + "; ".join(f"{', '.join(p)} at {METRIC_WORDS.get(m, m)}" for m, p in changed.items())


# --- problem 1 -------------------------------------------------------------------------------------------------

def _scale_shares(run: dict) -> dict[str, list[int]]:
    by_class = run["details"]["scale_specialisation"]["by_class"]
    return {c: [by_class[c].get(f"scale{s + 1}", 0) for s in range(SCALES)] for c in by_class}


def p1_scales(study: dict) -> dict | None:
    run = first_run(study, "p1-spec")
    if run is None or not run.get("details"):
        return None
    shares = _scale_shares(run)
    parts = []
    for cls, counts in shares.items():
        total = sum(counts)
        if not total:
            continue
        order = sorted(range(SCALES), key=lambda s: -counts[s])
        part = f"{cls}s by scale {order[0] + 1} ({counts[order[0]]} of {total}"
        if counts[order[1]]:
            part += f"; {counts[order[1]]} by scale {order[1] + 1}"
        parts.append(part + ")")
    return _finding("p1-scales", "Which scale finds which shape?",
                    f"Each shape is found at the scale whose anchors fit it (true positives of `p1-spec`, seed "
                    f"{run['seed']}): " + ", ".join(parts) + ".",
                    numbers={"seed": run["seed"], "true_positives_by_scale": shares})


def p1_squares(study: dict) -> dict | None:
    run = first_run(study, "p1-spec")
    aps = {c: _stat(study, "p1-spec", f"ap50_{c}") for c in ("circle", "square", "triangle")}
    if run is None or not run.get("details") or not all(aps.values()):
        return None
    fp = run["details"]["false_positives"]["per_class"]["square"]
    rf = run["details"]["receptive_fields"]
    total = fp["total"] or 0
    on_squares = fp["by_kind"]["mislocalised"] + fp["by_kind"]["duplicate"]
    top = max(range(SCALES), key=lambda s: fp["by_scale"][f"scale{s + 1}"])
    sizes = ((study.get("data") or {}).get("detection") or {}).get("splits", {}).get("val", {}).get("classes", {})
    sq = sizes.get("square")
    size_text = f"{sq['size_min']}-{sq['size_max']} px" if sq else "larger"
    weakest = min(aps, key=lambda c: aps[c]["mean"])
    dil = comparison(study, "p1-dilation3", "p1-spec", "ap50_square")
    lead = (f"Squares are the specification's weakest class (AP@0.5 {pm(aps['square'])}; circles "
            f"{pm(aps['circle'])}, triangles {pm(aps['triangle'])})" if weakest == "square" else
            f"Squares are not the specification's weakest class (AP@0.5 {pm(aps['square'])}; {weakest}s "
            f"{pm(aps[weakest])})")
    evidence = (f"{'all' if on_squares == total else on_squares} of its {total} confident false squares (seed "
                f"{run['seed']}) are misplaced or duplicate boxes on real squares, "
                f"{fp['by_scale'][f'scale{top + 1}']} of them from scale {top + 1}, whose {rf[top]}-px window is "
                f"smaller than the {size_text} squares")
    # The cause is claimed only when the experiment that widens the window confirms it under the rule.
    if direction(dil) == "higher":
        sentence = f"{lead} because one prediction cannot see a whole square: {evidence}."
    else:
        sentence = (f"{lead}; {evidence}, but widening the window {change(dil, 'square AP@0.5')}, so the window is "
                    "not shown to be the cause.")
    return _finding("p1-squares", "Why do squares fail at the specified receptive field?", sentence, [dil],
                    numbers={"seed": run["seed"], "false_squares": total, "misplaced_or_duplicate": on_squares,
                             "receptive_fields": rf})


def p1_dilation(study: dict) -> dict | None:
    sq = comparison(study, "p1-dilation3", "p1-spec", "ap50_square")
    mp = comparison(study, "p1-dilation3", "p1-spec", "map50")
    if sq is None or mp is None:
        return None
    run_s, run_d = first_run(study, "p1-spec"), first_run(study, "p1-dilation3")
    rf = (lambda r: "/".join(str(x) for x in r["details"]["receptive_fields"]) if r and r.get("details") else "?")
    fps = [_stat(study, k, "false_positives_square") for k in ("p1-spec", "p1-dilation3")]
    sentence = (f"`--head-dilation 3` widens the windows from {rf(run_s)} to {rf(run_d)} px at no extra parameters and "
                f"{change(sq, 'square AP@0.5')} and {change(mp, 'mAP@0.5')}".replace(" and leaves", ", leaves"))
    if all(fps):
        sentence += f", with {fmt(fps[1]['mean'], 0)} confident false squares instead of {fmt(fps[0]['mean'], 0)}"
    return _finding("p1-squares", "What does `--head-dilation 3` change?", sentence + ".", [sq, mp])


def p1_cosine(study: dict) -> dict | None:
    c = comparison(study, "p1-cosine", "p1-spec", "map50")
    if c is None:
        return None
    d = direction(c)
    verdict = {"higher": "so the specified schedule leaves accuracy unused: the specification is under-trained",
               "lower": "so the faster schedule is worse, and the specification is not shown to be under-trained",
               WITHIN_NOISE: "so the specification is not under-trained: its remaining error is the architecture's",
               NOT_TESTED: "so whether the specification is under-trained stays open"}.get(d, "")
    keys = [k for k, e in study["experiments"].items() if e["problem"] == "problem1"]
    rankings = selection_rankings(study, keys, RANKED["problem1"])
    # the dilated head, whose best epoch is near its last: the same schedule on it
    dc = comparison(study, "p1-dilation3-cosine", "p1-dilation3", "map50")
    dilated = (f"; on the dilated head the same schedule {change(dc, 'mAP@0.5')}"
               if dc is not None and direction(dc) != NOT_RUN else "")
    ran = [k for k in keys if _stat(study, k, "map50")]
    best = max(ran, key=lambda k: _stat(study, k, "map50")["mean"]) if ran else None
    best_text = f"; the highest mean mAP@0.5 is `{best}`'s ({pm(_stat(study, best, 'map50'))})" if best else ""
    return _finding("p1-results", "Is the specification under-trained?",
                    f"A cosine schedule with 10x the learning rate and a warm-up epoch {change(c, 'mAP@0.5')}, "
                    f"{verdict}{dilated}{best_text}{selection_clause(rankings)}.",
                    [c, dc] if dc is not None else [c],
                    {"ranking_selected_vs_last_epoch": rankings, "best_configuration": best})


# --- problem 2 -------------------------------------------------------------------------------------------------

def p2_regression(study: dict) -> dict | None:
    c05 = comparison(study, "p2-regression", "p2-heatmap", "pck@0.05")
    c2 = comparison(study, "p2-regression", "p2-heatmap", "pck@0.2")
    if c05 is None:
        return None
    err = [_stat(study, k, "mean_px_error") for k in ("p2-heatmap", "p2-regression")]
    words = {"lower": "Direct regression loses to the heatmap", "higher": "Direct regression beats the heatmap",
             WITHIN_NOISE: "Direct regression and the heatmap are level"}.get(direction(c05),
                                                                              "Direct regression against the heatmap")
    sentence = (f"{words}: it {change(c05, 'PCK@0.05', 'raises', 'drops')}"
                + (f" and {change(c2, 'PCK@0.2', 'raises', 'drops')}" if c2 else ""))
    if all(err):
        sentence += f" (mean error {fmt(err[1]['mean'], 1)} px against {fmt(err[0]['mean'], 1)} px)"
    methods = next((f["members"] for f in study["families"] if f["key"] == "p2-methods"), [])
    rankings = selection_rankings(study, list(dict.fromkeys(["p2-heatmap", "p2-regression", *methods])),
                                  RANKED["problem2"])
    sentence += selection_clause(rankings)
    return _finding("p2-results", "Does direct regression lose?", sentence + ".", [c05, c2],
                    {"ranking_selected_vs_last_epoch": rankings})


def p2_hands(study: dict) -> dict | None:
    """The hypothesis test from two comparisons of scores against the same labels: regression against the heatmap
    on the original labels, and the same on canonical labels (runs scored against different labels are never
    compared)."""
    orig = comparison(study, "p2-regression", "p2-heatmap", "pck@0.05")
    canon = comparison(study, "p2-canonical-hands-regression", "p2-canonical-hands-heatmap", "pck@0.05")
    if orig is None or canon is None:
        return None
    d, do = direction(canon), direction(orig)
    lead, verdict = {
        "lower": ("Not the hand labels", "so the hand labels are not what holds regression back"),
        # no difference shown at a few seeds is not a difference shown to be absent
        WITHIN_NOISE: ("Possibly the hand labels", "so the hand labels may be what holds regression back"),
        "higher": ("The hand labels", "so the ambiguous labels are what held regression back"),
    }.get(d, ("Untested", "so the hypothesis stays untested"))
    if do != "lower":  # the premise: regression trails on the original labels
        lead, verdict = "No deficit to explain", "so the hypothesis has nothing to explain"
    return _finding("p2-hands", "Is regression's deficit the left/right-hand ambiguity?",
                    f"{lead}: on canonical hand labels (left = smaller x) regression {_gap(canon)} at PCK@0.05, and "
                    f"on the original labels it {_gap(orig)}; {verdict}.", [orig, canon])


def _gap(c: dict) -> str:
    """Regression against the heatmap (``c``: regression's comparison with it), worded by the rule's verdict."""
    return worded(c, {"lower": "trails the heatmap by {size} ({a} against {b})",
                      "higher": "beats the heatmap by {size} ({a} against {b})",
                      WITHIN_NOISE: "is level with the heatmap within seed noise ({a} against {b}, {diff})",
                      NOT_TESTED: "scores {a} against the heatmap's {b}, which the rule does not test (one seed)",
                      NOT_RUN: "has not run yet"})


def _grid(study: dict) -> dict[tuple[str, str], str]:
    """(head, dropout) -> experiment key of the regression-head grid (and the specified regression)."""
    out = {}
    for k in study["experiments"]:
        if k == "p2-regression":
            out[("gap", "0.5")] = k
        elif k.startswith("p2-regression-") and "dropout" in k:
            head, _, drop = k.removeprefix("p2-regression-").partition("-dropout")
            out[(head, drop)] = k
    return out


def p2_grid(study: dict) -> dict | None:
    grid = _grid(study)
    need = [("gap", "0"), ("flatten", "0.5"), ("flatten", "0")]
    if not all(x in grid for x in need):
        return None
    comps = {x: comparison(study, grid[x], "p2-regression", "pck@0.05") for x in need}
    if any(c is None for c in comps.values()):
        return None
    keys = [k for k in grid.values() if _stat(study, k, "pck@0.05")]
    if not keys:  # none of the grid's runs trained yet (a study of some experiments only)
        return None
    best = max(keys, key=lambda k: _stat(study, k, "pck@0.05")["mean"])
    vs_heat = comparison(study, best, "p2-heatmap", "pck@0.05")
    alone = [direction(comps[("gap", "0")]), direction(comps[("flatten", "0.5")])]
    both = direction(comps[("flatten", "0")])
    gains = [comps[x]["diff"] for x in need]
    interact = both == "higher" and gains[2] > gains[0] + gains[1]
    lead = ("It is global average pooling together with dropout" if interact else
            "Pooling and dropout each cost regression accuracy" if "higher" in alone else
            "The regression-head grid does not single out pooling or dropout")
    sentence = (f"{lead}: without dropout the specified gap head {change(comps[('gap', '0')], 'PCK@0.05')}; keeping "
                f"the 8x8 positions (flatten) with dropout 0.5 {change(comps[('flatten', '0.5')], 'PCK@0.05')}; the "
                f"flatten head without dropout {change(comps[('flatten', '0')], 'PCK@0.05')}")
    if interact:
        sentence += (f", more than the two gains added ({gains[0]:+.3f} and {gains[1]:+.3f}): pooling throws away "
                     "where the figure is, and dropout on the layers that must then carry position does the rest")
    where = {"lower": "still below", "higher": "above", WITHIN_NOISE: "level with"}.get(direction(vs_heat),
                                                                                   "not compared with")
    sentence += (f"; the best variant (`{best}`, {pm(_stat(study, best, 'pck@0.05'))}) is {where} the heatmap's "
                 f"{pm(_stat(study, 'p2-heatmap', 'pck@0.05'))}.")
    return _finding("p2-regression", "Why does direct regression lose: pooling or dropout?", sentence,
                    [*comps.values(), vs_heat], {"best_regression_variant": best})


def p2_long(study: dict) -> dict | None:
    c = comparison(study, "p2-regression-long", "p2-regression", "pck@0.05")
    vs = comparison(study, "p2-regression-long", "p2-heatmap", "pck@0.05")
    if c is None:
        return None
    epochs = study["experiments"]["p2-regression-long"]["title"].rsplit(", ", 1)[-1]
    tail = {"lower": "far below the heatmap, so the specified regression is not merely unconverged",
            "higher": "above the heatmap, so the specified regression was only unconverged",
            WITHIN_NOISE: "level with the heatmap, so the specified regression was only unconverged"}.get(
        direction(vs), "")
    return _finding("p2-regression", "Is the specified regression only under-trained?",
                    f"Training the specified regression for {epochs} {change(c, 'PCK@0.05')}" +
                    (f", {tail}" if tail else "") + ".", [c, vs])


def _placement(study: dict, key: str) -> dict[str, float] | None:
    names = ("near_one_hand", "near_midpoint", "crossed", "elsewhere")
    stats = {n: _stat(study, key, f"hands_apart_{n}") for n in names}
    return {n: s["mean"] for n, s in stats.items() if s} or None


PLACEMENT_WORDS = {"near_one_hand": "on one of the two hands (it commits to an assignment)",
                   "near_midpoint": "at the midpoint between the hands (the mean of a two-peaked map)",
                   "crossed": "at the x of one hand and the y of the other (x and y decoded apart)",
                   "elsewhere": "on neither hand nor their midpoint"}


def _method_finding(study: dict, key: str, name: str) -> dict | None:
    c05 = comparison(study, key, "p2-heatmap", "pck@0.05")
    c2 = comparison(study, key, "p2-heatmap", "pck@0.2")
    place = _placement(study, key)
    if c05 is None or c2 is None:
        return None
    d05, d2 = direction(c05), direction(c2)
    trade = (" trades strict for loose localisation:" if (d05, d2) == ("lower", "higher") else
             " trades loose for strict localisation:" if (d05, d2) == ("higher", "lower") else ":")
    sentence = (f"{name}{trade} against the heatmap it {change(c05, 'PCK@0.05')} and {change(c2, 'PCK@0.2')}")
    if place:
        top = max(place, key=place.get)
        sentence += (f"; where the two hands are apart, {fmt(place[top] * 100, 0)}% of its hand predictions land "
                     f"{PLACEMENT_WORDS[top]}")
    return _finding("p2-methods", f"What does {name} trade?", sentence + ".", [c05, c2],
                    {"hand_placement": place})


def p2_integral(study: dict) -> dict | None:
    return _method_finding(study, "p2-integral", "Integral regression (soft-argmax)")


def p2_simcc(study: dict) -> dict | None:
    return _method_finding(study, "p2-simcc", "SimCC (per-axis classification)")


ABLATION_FAMILIES = ("p2-sigma", "p2-resolution", "p2-skip")


def p2_ablations(study: dict) -> dict | None:
    keys = [m for f in study["families"] if f["key"] in ABLATION_FAMILIES for m in f["members"]
            if m != "p2-heatmap"]
    keys = list(dict.fromkeys(keys))
    comps = {k: (comparison(study, k, "p2-heatmap", "pck@0.05"), comparison(study, k, "p2-heatmap", "pck@0.2"))
             for k in keys}
    comps = {k: v for k, v in comps.items() if v[0] is not None and v[1] is not None}
    if not comps:
        return None
    by = {}
    for k, (c05, _) in comps.items():
        by.setdefault(direction(c05), []).append(k)
    names = lambda ks: ", ".join(f"`{k}`" for k in ks)  # noqa: E731
    parts = [f"{names(ks)} {'is' if len(ks) == 1 else 'are'} {d}" for d, ks in by.items()]
    sentence = ("At PCK@0.05 no heatmap ablation beats the default (sigma 2, 64x64, skips): " if "higher" not in by
                else "At PCK@0.05, against the default heatmap (sigma 2, 64x64, skips): ") + "; ".join(parts)
    reversed_ = [k for k, (c05, c2) in comps.items() if direction(c05) == "lower" and direction(c2) == "higher"]
    if reversed_:
        sentence += (f", while at PCK@0.2 the order reverses for {names(reversed_)}: a wider target or a coarser map "
                     "places keypoints less precisely but misses fewer of them")
    # the other disagreements of the strict and the loose threshold (a difference at one, none at the other)
    other = {}
    for k, (c05, c2) in comps.items():
        if k not in reversed_ and direction(c05) != direction(c2):
            other.setdefault((direction(c05), direction(c2)), []).append(k)
    for (d05, d2), ks in other.items():
        sentence += f"; {names(ks)}, {d05} at PCK@0.05, {'is' if len(ks) == 1 else 'are'} {d2} at PCK@0.2"
    return _finding("p2-ablations", "Which heatmap ablations matter?", sentence + ".",
                    [c for pair in comps.values() for c in pair],
                    {"reversed_at_pck@0.2": reversed_,
                     "strict_loose_disagree": sorted([*reversed_, *(k for ks in other.values() for k in ks)])})


def p2_ceiling(study: dict) -> dict | None:
    c, heat = study.get("ceiling"), _stat(study, "p2-heatmap", "pck@0.05")
    if not c or heat is None:
        return None
    bound = c["pck"]["0.05"]
    gap = bound - heat["mean"]
    return _finding("p2-hands", "How close is the best method to the bound?",
                    f"The left/right-hand ambiguity bounds every method: no predictor can score more than "
                    f"{fmt(bound)} PCK@0.05 on these labels (committing to one hand assignment or placing both hands "
                    f"at their midpoint, whichever is better per image), and the heatmap's {pm(heat)} is {gap:.3f} "
                    "below that bound.", numbers={"ceiling_pck@0.05": bound, "heatmap_pck@0.05": heat["mean"],
                                                  "below_ceiling": gap})


FINDINGS: tuple[Callable[[dict], dict | None], ...] = (
    p1_scales, p1_squares, p1_dilation, p1_cosine,
    p2_regression, p2_hands, p2_grid, p2_long, p2_integral, p2_simcc, p2_ablations, p2_ceiling,
)


def best_regression(study: dict) -> str | None:
    """The regression variant the findings name as the best (by mean PCK@0.05), which the report and the overview
    figure show beside the methods; ``None`` before the grid has run."""
    return next((f["numbers"]["best_regression_variant"] for f in study.get("findings") or []
                 if f["numbers"].get("best_regression_variant")), None)


def build_findings(study: dict) -> list[dict]:
    """Every finding the numbers of ``study`` (a ``study.json`` without ``findings``) allow, in the summary's order."""
    return [f for make in FINDINGS if (f := make(study)) is not None]
