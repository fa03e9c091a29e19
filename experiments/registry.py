"""Every experiment the study reports, the families the report groups them in, and the plan of runs.

An experiment is a problem's config with some fields changed from the specification's defaults; it is run once per
seed. Problem 2's ablations and variants, and their names, come from :func:`problem2.ablations.plan`, which
``baseline.py`` runs too (with one seed, through the study's runner). Two experiments whose configs resolve to the
same run (the default heatmap run is also the sigma-2, 64x64 and with-skips ablation) are one experiment under
several names: the first name is its key, the others are aliases, and every family that lists it shares its runs.
"""
from __future__ import annotations

import dataclasses
import fnmatch
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from common.config import config_from_dict
from common.errors import UserError
from problem1.config import Config as Config1
from problem2.ablations import FAMILIES as ABLATION_FAMILIES
from problem2.ablations import AblationConfig, family_key
from problem2.ablations import plan as ablation_plan
from problem2.config import Config as Config2
from problem2.methods import run_label

PROBLEMS = {"problem1": Config1, "problem2": Config2}
SHORT = {"p1": "problem1", "p2": "problem2"}
FIRST_SEED = Config1().seed  # 641 in both problems: a study's first-seed run equals a plain train.py run
# Where a run's data and outputs live, and how it executes: none of them changes what the run computes (channels-last
# and torch.compile change speed only; common.training.RESUME_OVERRIDES treats them alike).
NOT_IDENTITY = ("data_dir", "results_dir", "device", "channels_last", "compile")
STUDY_DIR = "study"  # RESULTS/study/<experiment>/seed<S>/
MAX_SEEDS = 100  # seeds per experiment: far beyond any study's need, and a bound on a typo's cost


def study_seeds(n: int) -> list[int]:
    """The first ``n`` seeds of every experiment: the specification's 641, then 1, 2, 3, ..."""
    return [FIRST_SEED, *range(1, n)][:n]


def seeds_per_problem(seeds: int | dict[str, int]) -> dict[str, int]:
    """``{'problem1': n1, 'problem2': n2}``, each problem's number of seeds per experiment, from one number for both
    or from such a dict (a ``study.json`` written before problem 2 had its own number holds one number)."""
    if isinstance(seeds, dict):
        return {p: int(seeds[p]) for p in PROBLEMS}
    return dict.fromkeys(PROBLEMS, int(seeds))


def identity(problem: str, config: dict) -> dict:
    """What makes a run this run: its resolved config (``config.json`` or ``dataclasses.asdict``) without paths,
    device and execution settings. Fields a ``config.json`` predates take their defaults, the specification."""
    resolved = dataclasses.asdict(config_from_dict(PROBLEMS[problem], config))
    # ``amp`` is a request (None: the device's default), not a precision: --amp on a CPU without bf16 and no flag on
    # a CPU both run fp32. The runner compares the precision the run actually used instead.
    return {k: v for k, v in resolved.items() if k not in (*NOT_IDENTITY, "amp")}


@dataclass(frozen=True)
class Experiment:
    key: str
    problem: str
    title: str
    overrides: dict[str, Any]  # config fields set away from the problem's Config defaults (problem 2: model, epochs)
    aliases: tuple[str, ...] = ()

    @property
    def method(self) -> str | None:
        return self.overrides.get("model") if self.problem == "problem2" else None


@dataclass(frozen=True)
class Family:
    """A group of experiments the report shows in one table, and the comparisons it tests with the seed spread."""
    key: str
    problem: str
    title: str
    members: tuple[str, ...]
    comparisons: tuple[tuple[str, str], ...]  # (a, b): a against b


@dataclass(frozen=True)
class Pair:
    """Several problem-2 runs of one seed evaluated together (``problem2/evaluate.py`` on one folder), which is what
    gives the failure cases of heatmap against regression and the PCK curves of both beside the ceiling."""
    key: str
    members: dict[str, str] = field(default_factory=dict)  # method -> experiment key


@dataclass(frozen=True)
class Settings:
    """How the study runs: ``p1_epochs``/``p2_epochs`` replace the specification's (``--quick``); ``None`` keeps it."""
    results_dir: Path
    data_dir: str
    device: str = "auto"
    amp: bool | None = None
    quick: bool = False
    p1_epochs: int | None = None
    p2_epochs: int | None = None


@dataclass(frozen=True)
class Run:
    experiment: str
    problem: str
    seed: int
    config: Any  # the problem's Config, paths included
    dir: Path
    # which of its figures its evaluation draws: all, none, or these file names (study.py --run-figures report: those
    # the report shows); how the run is evaluated, not which run it is
    figures: bool | tuple[str, ...] = field(default=True, compare=False)

    @property
    def name(self) -> str:
        return f"{self.experiment}/seed{self.seed}"

    @property
    def method(self) -> str | None:
        return getattr(self.config, "model", None) if self.problem == "problem2" else None


@dataclass(frozen=True)
class PairRun:
    pair: str
    seed: int
    dir: Path
    members: dict[str, Run]  # method -> run
    figures: bool | tuple[str, ...] = field(default=True, compare=False)  # as for a Run

    @property
    def name(self) -> str:
        return f"{self.pair}/seed{self.seed}"


@dataclass
class Registry:
    experiments: dict[str, Experiment]
    families: list[Family]
    pairs: list[Pair]
    aliases: dict[str, str]  # every name (keys included) -> key

    def resolve(self, name: str, what: str = "experiment") -> str:
        if name not in self.aliases:
            raise UserError(f"{what} {name!r}: unknown; known: {', '.join(self.experiments)}")
        return self.aliases[name]


P1_EXPERIMENTS = (
    ("p1-spec", "specification", {}),
    ("p1-dilation3", "head dilation 3 (`--head-dilation 3`)", {"head_dilation": 3}),
    # The "cosine/10x-lr run": is the specified architecture only under-trained?
    ("p1-cosine", "cosine schedule, 10x lr, 1 warm-up epoch", {"lr": 0.01, "lr_schedule": "cosine",
                                                               "warmup_epochs": 1}),
    # Is the dilated head under-trained? (its best epoch is the last but one of 50): the same schedule on it.
    ("p1-dilation3-cosine", "head dilation 3 with the cosine schedule, 10x lr, 1 warm-up epoch",
     {"head_dilation": 3, "lr": 0.01, "lr_schedule": "cosine", "warmup_epochs": 1}),
)


def _p2_title(overrides: dict, base_epochs: int) -> str:
    cfg = {**dataclasses.asdict(Config2()), **overrides}
    title = run_label(cfg)
    if cfg["canonical_hands"]:
        title += ", canonical hands"
    return title + (f", {cfg['epochs']} epochs" if cfg["epochs"] != base_epochs else "")


def build_registry(p1_epochs: int | None = None, p2_epochs: int | None = None) -> Registry:
    """Every experiment and family of the study; ``p1_epochs``/``p2_epochs`` as in :class:`Settings`."""
    e2 = p2_epochs or Config2().epochs
    candidates: list[tuple[str, str, str, dict]] = []  # (key, problem, title, overrides)
    for key, title, overrides in P1_EXPERIMENTS:
        candidates.append((key, "problem1", title, {**overrides, **({"epochs": p1_epochs} if p1_epochs else {})}))
    specified = {"p2-heatmap": {"model": "heatmap"}, "p2-regression": {"model": "regression"}}
    canonical = {f"p2-canonical-hands-{m}": {"model": m, "canonical_hands": True} for m in ("heatmap", "regression")}
    for key, overrides in {**specified, **canonical}.items():
        candidates.append((key, "problem2", "", {**overrides, "epochs": e2}))
    abl_cfg = AblationConfig(epochs=e2, ablations=list(ABLATION_FAMILIES))
    abl_families, abl_runs, _ = ablation_plan(abl_cfg)
    baseline_keys: dict[str, str] = {}  # baseline run name -> study key of its first family
    for family, names in abl_families.items():
        for name in names:
            baseline_keys.setdefault(name, family_key(family, abl_runs[name]))
            candidates.append((family_key(family, abl_runs[name]), "problem2", "", abl_runs[name]))

    experiments: dict[str, Experiment] = {}
    aliases: dict[str, str] = {}
    by_identity: dict[str, str] = {}
    for key, problem, title, overrides in candidates:
        ident = repr(sorted(identity(problem, overrides).items()))
        primary = by_identity.setdefault(ident, key)
        aliases[key] = primary
        if primary == key and key not in experiments:
            title = title or _p2_title(overrides, e2)
            experiments[key] = Experiment(key, problem, title, dict(overrides))
        elif primary != key and key not in experiments[primary].aliases:
            experiments[primary] = dataclasses.replace(experiments[primary],
                                                       aliases=(*experiments[primary].aliases, key))

    def members(names) -> tuple[str, ...]:
        return tuple(dict.fromkeys(aliases[n] for n in names))

    families = [
        Family("p1-main", "problem1", "the specification and its variants", members(k for k, _, _ in P1_EXPERIMENTS),
               (("p1-dilation3", "p1-spec"), ("p1-cosine", "p1-spec"), ("p1-dilation3-cosine", "p1-dilation3"))),
        Family("p2-specified", "problem2", "the specified pair", members(specified),
               (("p2-regression", "p2-heatmap"),)),
        # Scores against canonical labels are compared only with each other: the hypothesis test reads the gap of
        # regression to the heatmap on these labels beside the same gap on the original ones (p2-specified).
        Family("p2-canonical-hands", "problem2", "hypothesis test: both models on canonical hand labels",
               members([*specified, *canonical]),
               (("p2-canonical-hands-regression", "p2-canonical-hands-heatmap"),)),
    ]
    references = {"sigma": "p2-heatmap", "resolution": "p2-heatmap", "skip": "p2-heatmap",
                  "regression-head": "p2-regression", "regression-long": "p2-regression", "methods": "p2-heatmap"}
    for family, names in abl_families.items():
        ref = references[family]
        fam_members = members([ref] if family == "regression-long" else [])
        fam_members = tuple(dict.fromkeys([*fam_members, *members(baseline_keys[n] for n in names)]))
        families.append(Family(f"p2-{family}", "problem2", f"`baseline.py --ablations {family}`", fam_members,
                               tuple((m, ref) for m in fam_members if m != ref)))
    # Every regression variant against the heatmap too: the findings ask whether the best of them closes the gap.
    variants = tuple(dict.fromkeys(m for f in families if f.key in ("p2-regression-head", "p2-regression-long")
                                   for m in f.members))
    families.append(Family("p2-regression-vs-heatmap", "problem2", "every regression variant against the heatmap",
                           ("p2-heatmap", *variants), tuple((m, "p2-heatmap") for m in variants
                                                           if m != "p2-regression")))
    pairs = [Pair("p2-pair", {"heatmap": "p2-heatmap", "regression": "p2-regression"})]
    return Registry(experiments, families, pairs, aliases)


def parse_seeds_for(items: list[str], registry: Registry) -> dict[str, int]:
    """``['p1-cosine=1', 'p2-regression-*=2', ...]`` -> ``{experiment key: number of seeds}``: names or aliases, or
    shell-style patterns over them; a later item overrides an earlier one. Bad items are one-line errors."""
    out = {}
    for item in items:
        name, sep, value = item.partition("=")
        name = name.strip()
        value = value.strip()
        # ASCII digits only: str.isdigit() accepts other scripts' digits (and superscripts), which int() may not take
        if not sep or not (value.isascii() and value.isdigit()) or not 1 <= int(value) <= MAX_SEEDS:
            raise UserError(f"--seeds-for {item!r}: expected EXPERIMENT=N with 1 <= N <= {MAX_SEEDS}, e.g. "
                            "p1-cosine=1")
        if any(c in name for c in "*?["):
            keys = list(dict.fromkeys(registry.aliases[n] for n in registry.aliases if fnmatch.fnmatchcase(n, name)))
            if not keys:
                raise UserError(f"--seeds-for {item!r}: the pattern matches no experiment (see --list)")
        else:
            keys = [registry.resolve(name, "--seeds-for: experiment")]
        out.update(dict.fromkeys(keys, int(value)))
    return out


def build_config(problem: str, overrides: dict, settings: Settings, seed: int, run_dir: Path) -> Any:
    cls = PROBLEMS[problem]
    return cls(**{**dataclasses.asdict(cls()), **overrides, "seed": seed, "data_dir": str(settings.data_dir),
                  "results_dir": str(run_dir), "device": settings.device, "amp": settings.amp})


def plan(settings: Settings, seeds: int | dict[str, int] = 3, only: str | None = None,
         seeds_for: dict[str, int] | None = None, keys: list[str] | None = None
         ) -> tuple[Registry, list[Run], list[PairRun]]:
    """The runs of the study, seed by seed (every experiment's first seed before any second seed, so an interrupted
    study already holds one complete set), and the pair evaluations whose members are all planned.

    ``seeds``: seeds per experiment, one number or one per problem (:func:`seeds_per_problem`); ``only``:
    ``'p1'``/``'p2'``; ``seeds_for``: per-experiment number of seeds (key -> n), over ``seeds``; ``keys``: only these
    experiments (names or aliases).
    """
    registry = build_registry(settings.p1_epochs, settings.p2_epochs)
    chosen = set(registry.experiments) if keys is None else {registry.resolve(k) for k in keys}
    if only is not None:
        chosen = {k for k in chosen if registry.experiments[k].problem == SHORT[only]}
    per_problem = seeds_per_problem(seeds)
    counts = {k: (seeds_for or {}).get(k, per_problem[registry.experiments[k].problem]) for k in chosen}
    root = Path(settings.results_dir) / STUDY_DIR
    runs = []
    for i, seed in enumerate(study_seeds(max(counts.values(), default=0))):
        for key, exp in registry.experiments.items():
            if key in chosen and i < counts[key]:
                run_dir = root / key / f"seed{seed}"
                runs.append(Run(key, exp.problem, seed, build_config(exp.problem, exp.overrides, settings, seed,
                                                                     run_dir), run_dir))
    by_name = {r.name: r for r in runs}
    pairs = []
    for pair in registry.pairs:
        for seed in study_seeds(max(counts.values(), default=0)):
            members = {m: by_name.get(f"{k}/seed{seed}") for m, k in pair.members.items()}
            if all(members.values()):
                pairs.append(PairRun(pair.key, seed, root / pair.key / f"seed{seed}", members))
    return registry, runs, pairs
