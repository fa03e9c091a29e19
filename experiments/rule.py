"""The study's difference rule and the statistics it reads: mean and sample standard deviation over seeds, and the
verdict on two experiments. One place, so that every verdict the study prints (findings, tables, README) is this
rule's, and no other module decides a difference with a threshold of its own."""
from __future__ import annotations

import math
import statistics
from collections.abc import Iterable
from typing import Any

DIFFERENCE_RULE = ("two experiments differ in a metric when |mean_a - mean_b| > 2 * sqrt(sd_a^2 / n_a + sd_b^2 / n_b), "
                   "twice the standard error of the difference (sample standard deviations, both n >= 2), else the "
                   "difference is within noise; with one seed on a side it is not tested. With 2-3 seeds this screens "
                   "out seed noise; it is not a calibrated significance test")
WITHIN_NOISE, DIFFERS, NOT_TESTED, NOT_RUN = "within noise", "differs", "not tested (one seed)", "not run"

# --- statistics (pure) --------------------------------------------------------------------------------------------

def _finite(values: Iterable[Any]) -> list[float]:
    return [float(v) for v in values if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)]


def mean_std(values: Iterable[Any]) -> dict:
    """``{'mean', 'std', 'n'}`` over the finite values (None/NaN are a run without that number): the sample standard
    deviation (ddof 1), ``None`` for fewer than two values; the mean ``None`` for none."""
    v = _finite(values)
    return {"mean": statistics.fmean(v) if v else None, "std": statistics.stdev(v) if len(v) >= 2 else None,
            "n": len(v)}


def compare(a: dict, b: dict) -> dict:
    """``a`` against ``b`` (each a :func:`mean_std` dict) under :data:`DIFFERENCE_RULE`:
    ``{'diff': mean_a - mean_b, 'threshold', 'verdict'}``."""
    if not a["n"] or not b["n"]:
        return {"diff": None, "threshold": None, "verdict": NOT_RUN}
    diff = a["mean"] - b["mean"]
    if a["n"] < 2 or b["n"] < 2:
        return {"diff": diff, "threshold": None, "verdict": NOT_TESTED}
    threshold = 2 * math.sqrt(a["std"] ** 2 / a["n"] + b["std"] ** 2 / b["n"])
    return {"diff": diff, "threshold": threshold, "verdict": DIFFERS if abs(diff) > threshold else WITHIN_NOISE}




def comparison(study: dict, a: str, b: str, metric: str) -> dict | None:
    """``a`` against ``b`` in ``metric``, as the study recorded it in ``study.json['comparisons']`` (the registry's
    families list every pair the report and the findings judge), or ``None``."""
    return next((c for c in study["comparisons"] if (c["a"], c["b"], c["metric"]) == (a, b, metric)), None)
