"""``summary.md`` of problem 2, generated from the JSON files the scripts wrote (every number is read from them):
``metrics.json`` (evaluate.py), ``canonical_hands/metrics.json`` (the hypothesis test) and ``ablation.json``
(baseline.py). The runs beyond the specification are summed up in plain statements of their numbers
(:func:`study_conclusion`); with one seed per run they judge nothing: verdicts are the study's (``study.py``).
"""
from __future__ import annotations

from pathlib import Path

from common.data import load_json
from common.io import atomic_write_text
from common.report import fmt, markdown_table
from problem2.config import HEATMAP_FAMILIES, SPECIFIED_METHODS, STUDY_FAMILIES, Config
from problem2.methods import method_settings, run_label
from problem2.metrics import FAILURE_THRESHOLD, KEYPOINT_GROUPS, THRESHOLDS

PCK_HEADER = [f"PCK@{t:g}" for t in THRESHOLDS]
PLACEMENTS = {"near_one_hand": "near one hand", "near_midpoint": "near the midpoint",
              "crossed": "at the x of one hand and the y of the other", "elsewhere": "elsewhere"}


def _pck_cells(pck: dict) -> list[str]:
    """The cells of a ``{'0.05': v, ...}`` dict in :data:`THRESHOLDS` order."""
    return [fmt(pck[f"{t:g}"]) for t in THRESHOLDS]


def _pck_table(metrics: dict) -> list[str]:
    rows = []
    for method, res in metrics["methods"].items():
        m = res["metrics"]
        rows.append([method, *_pck_cells(m["pck"]), fmt(m["auc"]), fmt(m["mean_px_error"], 2)])
        if "swap_invariant" in m:
            s = m["swap_invariant"]
            rows.append([f"{method}, hand-swap-invariant", *_pck_cells(s["pck"]), fmt(s["auc"]),
                         fmt(s["mean_px_error"], 2)])
    if metrics.get("ceiling"):
        c = metrics["ceiling"]
        rows.append(["hand-ambiguity ceiling", *_pck_cells(c["pck"]), fmt(c["auc"]), ""])
    return markdown_table(["", *PCK_HEADER, "AUC 0-0.5", "mean px error"], rows)


def _ceiling_section(c: dict) -> list[str]:
    commit, midpoint = c["strategies"]["commit"]["pck"], c["strategies"]["midpoint"]["pck"]
    return ["The ceiling is the Bayes-optimal PCK when the image cannot show which hand is `left_hand` "
            "(both arms are drawn alike): per image, 1 credit per hand if the hands are within 2r of each "
            "other (predict their midpoint), else 1/2 (commit to one assignment); the other keypoints "
            "perfect. Hand-swap-invariant rows score each image with the better hand assignment.", "",
            "The two strategies alone, and what one set of predictions can reach:", "",
            *markdown_table(["", *PCK_HEADER, "sum"], [
                ["always commit (distinct hands)", *_pck_cells(commit), fmt(sum(commit.values()))],
                ["always the midpoint (the MSE optimum of regression)", *_pck_cells(midpoint),
                 fmt(sum(midpoint.values()))],
                ["Bayes ceiling (a different choice per threshold)", *_pck_cells(c["pck"]),
                 fmt(c["sum_over_thresholds"])]]),
            "", f"The Bayes choice depends on the threshold, so no single set of predictions reaches the "
            f"ceiling at every threshold at once: the best any predictor can expect, summed over the four "
            f"thresholds, is {c['best_single_prediction_sum']:.3f} (ceiling: {c['sum_over_thresholds']:.3f}).", ""]


def _main_sections(metrics: dict) -> list[str]:
    lines = [f"Command: `{metrics['command']}`  ", f"Validation images: {metrics['num_images']} "
             f"(`{metrics['data_dir']}`); device {metrics['device']}; hand labelling: {metrics['labelling']}.", ""]
    for method, res in metrics["methods"].items():
        c = res["config"]
        lines.append(f"- {method}: `{res['checkpoint']}` (best validation loss, epoch {res['epoch']} of "
                     f"{c['epochs']}; seed {c['seed']}, lr {c['lr']}, batch {c['batch_size']}"
                     + method_settings(method, c) + f"; evaluated in {res.get('precision', 'fp32')})")
    lines += ["", "PCK normalised by the diagonal of the ground-truth keypoint box:", "", *_pck_table(metrics), ""]
    if metrics.get("ceiling"):
        lines += _ceiling_section(metrics["ceiling"])
    placement = {m: r["metrics"]["hand_placement"] for m, r in metrics["methods"].items()
                 if r["metrics"].get("hand_placement")}
    if placement:
        lines += _placement_section(placement, metrics.get("ceiling"))
    torso = {m: r["metrics"].get("pck_torso") for m, r in metrics["methods"].items()}
    if all(torso.values()):
        lines += ["PCK normalised by torso length (head to the midpoint of the feet, 57 px in this data):", "",
                  *markdown_table(["", *PCK_HEADER], [[m, *_pck_cells(p)] for m, p in torso.items()]), ""]
    names = list(next(iter(metrics["methods"].values()))["metrics"]["per_keypoint"])
    t = f"{FAILURE_THRESHOLD:g}"
    lines += [f"Per keypoint, PCK@{t} / mean pixel error:", "",
              *markdown_table(["keypoint", *metrics["methods"]], [
                  [n, *(f"{fmt(r['metrics']['per_keypoint'][n]['pck'][t])} / "
                        f"{fmt(r['metrics']['per_keypoint'][n]['mean_px_error'], 2)} px"
                        for r in metrics["methods"].values())] for n in names]), ""]
    if metrics.get("decoders"):
        lines += ["Heatmap decoders on the same heatmaps (\"hands jointly\": one prediction per hand, see "
                  "`decode_pair` in problem2/heatmaps.py):", "",
                  *markdown_table(["decoder", *PCK_HEADER, "swap-inv. PCK@0.05", "mean px error"], [
                      [d, *_pck_cells(v["pck"]), fmt(v["swap_invariant_pck"]["0.05"]), fmt(v["mean_px_error"], 2)]
                      for d, v in metrics["decoders"].items()]), ""]
    if metrics.get("failures"):
        lines += [f"Failure cases at PCK@{t} (keypoint instances, of {metrics['num_images']} x {len(names)}; "
                  "images with at least one):", "",
                  *markdown_table(["group", "keypoints", "images", *names], [
                      [g.replace("_", " "), v["count"], v["images"], *(v["per_keypoint"][n] for n in names)]
                      for g, v in metrics["failures"].items()]), ""]
    return lines


def _placement_section(placement: dict[str, dict], ceiling: dict | None) -> list[str]:
    """Where each method's hand predictions land when the hands are apart (``metrics.hand_placement``), beside the
    ceiling's two strategies."""
    first = next(iter(placement.values()))
    rows = [[name, *(fmt(h[k]) for k in (*PLACEMENTS, "one_per_hand", "hand_pck"))] for name, h in placement.items()]
    if ceiling and "hand_placement" in ceiling["strategies"]["commit"]:
        for strategy in ("commit", "midpoint"):
            h = ceiling["strategies"][strategy]["hand_placement"]
            rows.append([f"ceiling's '{strategy}'", *(fmt(h[k]) for k in (*PLACEMENTS, "one_per_hand", "hand_pck"))])
    return [f"Where the hand predictions land when the hands are apart ({first['images_apart']} images, "
            f"{first['fraction_apart']:.0%}, whose hands are more than {first['apart']:g} r apart; r is the "
            f"PCK@{first['near']:g} radius). Each hand prediction goes to the nearest of the two hands, their "
            "midpoint and the two crossed points (the x of one hand with the y of the other), and counts within r "
            "of it; \"one per hand\" is the fraction of images with one prediction near each hand; hand PCK is "
            "scored against the labels (the commit strategy's is its expectation over the two assignments):", "",
            *markdown_table(["", "near one hand", "near the midpoint", "crossed", "elsewhere", "one per hand",
                             f"hand PCK@{first['near']:g}"], rows), ""]


def _hypothesis_section(main: dict, canon: dict, canon_dir: Path) -> list[str]:
    rows, pck05 = [], {}
    for label, m in (("original labels", main), ("canonical hands (derived)", canon)):
        for method, res in m["methods"].items():
            x = res["metrics"]
            pck05[method, label] = x["pck"]["0.05"]
            rows.append([f"{method}, {label}", *_pck_cells(x["pck"]), fmt(x["auc"]), fmt(x["mean_px_error"], 2)])
            if label == "original labels" and "swap_invariant" in x:
                s = x["swap_invariant"]
                rows.append([f"{method}, original labels, hand-swap-invariant", *_pck_cells(s["pck"]), fmt(s["auc"]),
                             fmt(s["mean_px_error"], 2)])
    lines = ["## Hypothesis test: is regression's deficit the hand ambiguity?", "",
             f"Both models retrained on a **derived labelling** (`--canonical-hands`, results in `{canon_dir}`): "
             "the hand with the smaller x is labelled `left_hand`, so the label is a function of the image and "
             "the ambiguity is gone (ceiling 1). Scores there are against the derived labels.", "",
             *markdown_table(["", *PCK_HEADER, "AUC", "mean px error"], rows)]
    keys = [(m, lab) for m in SPECIFIED_METHODS for lab in ("original labels", "canonical hands (derived)")]
    if all(k in pck05 for k in keys):
        before = pck05["heatmap", "original labels"] - pck05["regression", "original labels"]
        after = pck05["heatmap", "canonical hands (derived)"] - pck05["regression", "canonical hands (derived)"]
        share = f" (the ambiguity accounts for {1 - after / before:.0%} of it)" if before > 0 else ""
        lines += ["", f"Regression's deficit to the heatmap at PCK@0.05: {before:.3f} with the original labels, "
                  f"{after:.3f} with the canonical ones{share}."]
    lines += ["", f"Command: `{canon['command']}`", ""]
    return lines


def _ablation_section(abl: dict) -> list[str]:
    rows = []
    for family, names in abl["families"].items():
        if family not in HEATMAP_FAMILIES:
            continue
        for name in names:
            r = abl["runs"][name]
            m = r["metrics"]
            rows.append([family, name, f"{r['sigma']:g}", r["heatmap_size"], r["skip"], *_pck_cells(m["pck"]),
                         fmt(m["auc"]), fmt(m.get("swap_invariant", m)["pck"]["0.05"]), fmt(m["mean_px_error"], 2),
                         r["epoch"], f"{r['train_time_s'] / 60:.1f} min"])
    return ["## Ablations (heatmap model, judged by validation PCK)", "",
            f"Command: `{abl['command']}`  ",
            f"{abl['epochs']} epochs per run, seed {abl['seed']}; each run's best-validation-loss checkpoint "
            "(validation loss is only compared within a run). Sigma is in heatmap pixels, so at other "
            "resolutions sigma 2 is a different width in image pixels (8 px at 32x32, 2 px at 128x128).", "",
            *markdown_table(["ablation", "run", "sigma", "heatmap", "skip", *PCK_HEADER, "AUC", "swap-inv. PCK@0.05",
                             "mean px error", "epoch", "train time"], rows), ""]


def _group_pck(m: dict, group: str, t: str = "0.05") -> float | None:
    """PCK at ``t`` of a keypoint group (``metrics.KEYPOINT_GROUPS``: head, hands, feet), averaged over its keypoints;
    None if the data has none of them."""
    names = [n for n in KEYPOINT_GROUPS[group] if n in m["per_keypoint"]]
    return sum(m["per_keypoint"][n]["pck"][t] for n in names) / len(names) if names else None


def _seconds(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.0f} s"


def _study_section(abl: dict, names: list[str]) -> list[str]:
    """The study beyond the specification: one table of every method and variant, where their hand predictions
    land, and the conclusion generated from those numbers."""
    rows = []
    for n in names:
        r, m = abl["runs"][n], abl["runs"][n]["metrics"]
        rows.append([f"{run_label(r)} (`{n}`)", r.get("epochs", abl["epochs"]), *_pck_cells(m["pck"]), fmt(m["auc"]),
                     fmt(m["mean_px_error"], 2), *(fmt(_group_pck(m, g)) for g in KEYPOINT_GROUPS),
                     fmt(m.get("swap_invariant", m)["pck"]["0.05"]), fmt(m.get("spread"), 2), r["epoch"],
                     _seconds(r["train_time_s"]), _seconds(r.get("cpu_time_s"))])
    placement = {f"{run_label(abl['runs'][n])}, {abl['runs'][n].get('epochs', abl['epochs'])} epochs":
                 abl["runs"][n]["metrics"]["hand_placement"] for n in names
                 if abl["runs"][n]["metrics"].get("hand_placement")}
    lines = ["## Beyond the specification: why direct regression loses, and coordinate heads", "",
             f"Command: `{abl['command']}`  ",
             f"Seed {abl['seed']}, device {abl['device']}, the specified optimiser (Adam, lr "
             f"{abl['config']['lr']}, batch {abl['config']['batch_size']}); each run's best-validation-loss checkpoint "
             "(in `study/<run>/seed<S>/`), scored on the validation set. Head, hands and feet: PCK@0.05 of those "
             "keypoints. Spread: how far the predictions move between images relative to the keypoints (1: they "
             "follow the figure, 0: one pose for every image). Train time is the wall time of training and "
             "per-epoch validation; CPU time is the process's CPU time over the same epochs (on several cores it "
             "exceeds the wall time).", "",
             *markdown_table(["run (`study/` folder)", "epochs", *PCK_HEADER, "AUC", "mean px error",
                              *(f"{g} PCK@0.05" for g in KEYPOINT_GROUPS), "swap-inv. PCK@0.05", "spread",
                              "best epoch", "train time", "CPU time"], rows), ""]
    if placement:
        lines += _placement_section(placement, abl.get("ceiling"))
    conclusion = [f"- {c}" for c in study_conclusion(abl, names)]
    lines += ["### What these runs measured (generated from the numbers above)", "", *conclusion, "",
              "Figure: [methods_pck_curves.png](figures/methods_pck_curves.png)", ""]
    return lines


def study_conclusion(abl: dict, names: list[str]) -> list[str]:
    """What the runs ``names`` of ``ablation.json`` measured, in plain statements of their numbers: the specified
    regression and its longer run, the best regression variant, the (pooling, dropout) grid, integral and SimCC
    against the heatmap on head and feet, and where each method's hand predictions land.

    These runs have one seed each, so nothing here says that one number is higher than another beyond noise: that
    verdict is the study's (``python study.py``: every run over seeds, one difference rule, ``REPORT.md``)."""
    runs = {n: abl["runs"][n] for n in names}
    base = abl["epochs"]
    epochs = lambda n: runs[n].get("epochs", base)  # noqa: E731
    method = lambda n: runs[n].get("model", "heatmap")  # noqa: E731
    p05 = lambda n: runs[n]["metrics"]["pck"]["0.05"]  # noqa: E731
    label = lambda n: f"{run_label(runs[n])}, {epochs(n)} epoch{'s' if epochs(n) != 1 else ''}"  # noqa: E731
    spec = Config()
    reg = [n for n in runs if method(n) == "regression"]
    specified = [n for n in reg if (runs[n]["regression_head"], runs[n]["dropout"]) == (spec.regression_head,
                                                                                        spec.dropout)]
    spec_run = next((n for n in specified if epochs(n) == base), None)
    long_run = max((n for n in specified if epochs(n) > base), key=epochs, default=None)
    out = ["One seed per run: the numbers below are measurements, not verdicts; `python study.py` trains every run "
           "over several seeds and judges the differences with one rule."]
    if spec_run:
        m = runs[spec_run]["metrics"]
        out.append(f"The specified regression ({label(spec_run)}) reaches PCK@0.05 {p05(spec_run):.3f} with a mean "
                   f"error of {m['mean_px_error']:.1f} px; its predictions' spread is {fmt(m.get('spread'), 2)}.")
    if spec_run and long_run:
        out.append(f"Trained for {epochs(long_run)} epochs instead of {base}, it reaches {p05(long_run):.3f} "
                   f"({p05(long_run) - p05(spec_run):+.3f}).")
    if reg:
        best = max(reg, key=p05)
        m = runs[best]["metrics"]
        out.append(f"The best regression variant is {label(best)} at PCK@0.05 {p05(best):.3f} (mean error "
                   f"{m['mean_px_error']:.1f} px, spread {fmt(m.get('spread'), 2)}).")
    grid = [n for n in reg if epochs(n) == base]
    for d in sorted({runs[n]["dropout"] for n in grid}, reverse=True):
        heads = [n for n in grid if runs[n]["dropout"] == d]
        if len(heads) > 1:
            out.append(f"At dropout {d:g}, PCK@0.05 by head: "
                       + ", ".join(f"{runs[n]['regression_head']} {p05(n):.3f}" for n in heads) + ".")
    cell = lambda h, d: next((n for n in grid if (runs[n]["regression_head"], runs[n]["dropout"]) == (h, d)),  # noqa: E731
                             None)
    keeping = [n for n in grid if runs[n]["regression_head"] != spec.regression_head and runs[n]["dropout"] == 0]
    origin, no_dropout = cell(spec.regression_head, spec.dropout), cell(spec.regression_head, 0.0)
    for k in keeping:
        alone = cell(runs[k]["regression_head"], spec.dropout)
        if origin and no_dropout and alone:
            # The 2x2 of (pooling, dropout): the single gains beside the joint one, for the reader to weigh.
            gh, gd, both = p05(alone) - p05(origin), p05(no_dropout) - p05(origin), p05(k) - p05(origin)
            out.append(f"From the specification's {p05(origin):.3f}: keeping position ({label(alone)}) changes "
                       f"PCK@0.05 by {gh:+.3f}, removing dropout ({label(no_dropout)}) by {gd:+.3f}, both together "
                       f"({label(k)}) by {both:+.3f}; the two single changes add up to {gh + gd:+.3f}.")
    paired = [(a, b) for a in grid for b in grid if runs[a]["regression_head"] == runs[b]["regression_head"]
              and runs[a]["dropout"] == spec.dropout and runs[b]["dropout"] == 0]
    if paired:
        change = [p05(b) - p05(a) for a, b in paired]
        out.append(f"Without dropout PCK@0.05 changes by {sum(change) / len(change):+.3f} on average over "
                   f"{len(paired)} head(s) (" + ", ".join(f"{runs[a]['regression_head']} {c:+.3f}"
                                                        for (a, _), c in zip(paired, change, strict=True)) + ").")
    heat = next((n for n in runs if method(n) == "heatmap"), None)
    for n in (n for n in runs if method(n) in ("integral", "simcc")):
        if heat is None:
            break
        own = {g: _group_pck(runs[n]["metrics"], g) for g in ("head", "feet")}
        ref = {g: _group_pck(runs[heat]["metrics"], g) for g in ("head", "feet")}
        out.append(f"{label(n)}: PCK@0.05 head {own['head']:.3f}, feet {own['feet']:.3f}, against the heatmap's "
                   f"{ref['head']:.3f} and {ref['feet']:.3f}.")
    shown = list(dict.fromkeys([*(n for n in runs if method(n) != "regression"), *([spec_run] if spec_run else []),
                                *([max(reg, key=p05)] if reg else [])]))
    for n in shown:
        h = runs[n]["metrics"].get("hand_placement")
        if not h or not h["images_apart"]:
            continue
        top = max(PLACEMENTS, key=lambda k: h[k])
        why = {"near_one_hand": f"it commits, like the ceiling's 'commit' (one prediction on each hand in "
                                f"{h['one_per_hand']:.0%} of these images)",
               "near_midpoint": "it lands between the hands, like the ceiling's 'midpoint': the mean of the "
                                "two-peaked posterior"
                                + (", which is what a soft-argmax (an expectation) of a two-peaked map gives"
                                   if method(n) == "integral" else ""),
               "crossed": "it mixes the two hands"
                          + (", because SimCC decodes x and y apart, each at its own maximum"
                             if method(n) == "simcc" else ""),
               "elsewhere": "it lands neither on a hand, nor at their midpoint, nor at a crossed point"}[top]
        out.append(f"Hands apart, {label(n)}: {h[top]:.0%} of the hand predictions {PLACEMENTS[top]} "
                   f"(hand PCK@{h['near']:g} {fmt(h['hand_pck'])}); {why}.")
    wall = [runs[n]["train_time_s"] for n in runs]
    cpu = [runs[n].get("cpu_time_s") for n in runs]
    out.append(f"The {len(runs)} runs took {sum(wall) / 60:.0f} min of training and validation"
               + (f" ({sum(cpu) / 60:.0f} min of CPU time)" if None not in cpu else "") + ".")
    return out


def write_summary(results_dir: str | Path) -> Path:
    """(Re)write ``summary.md`` from whatever the scripts left in ``results_dir``: ``metrics.json``,
    ``ablation.json`` and the hypothesis test's ``canonical_hands/metrics.json``."""
    results_dir = Path(results_dir)
    lines = ["# Problem 2: heatmap vs direct regression", "",
             "Every number below is read from the JSON files next to this summary.", ""]
    metrics_path = results_dir / "metrics.json"
    main = load_json(metrics_path) if metrics_path.is_file() else None
    if main:
        lines += ["## Evaluation", "", *_main_sections(main)]
        fig_dir = results_dir / "figures"
        figs = sorted(p.name for p in fig_dir.glob("*.png")) if fig_dir.is_dir() else []
        if figs:
            lines += ["Figures: " + ", ".join(f"[{f}](figures/{f})" for f in figs), ""]
    canon_path = results_dir / "canonical_hands" / "metrics.json"
    if main and canon_path.is_file():
        lines += _hypothesis_section(main, load_json(canon_path), canon_path.parent)
    abl_path = results_dir / "ablation.json"
    if abl_path.is_file():
        abl = load_json(abl_path)
        if any(f in HEATMAP_FAMILIES for f in abl["families"]):
            lines += _ablation_section(abl)
        study = list(dict.fromkeys(n for f, names in abl["families"].items() if f in STUDY_FAMILIES for n in names))
        if study:
            lines += _study_section(abl, study)
    return atomic_write_text(results_dir / "summary.md", "\n".join(lines))
