"""Reading a finished (or running) study: its trials, its frontier, and the trial a budget picks.

This room only reads the Optuna storage that :func:`modsearch.search.run_search` wrote; it never assembles a
model. :func:`open_results` takes a study TOML (its storage and name) or a storage URL and a study name, and
returns :class:`StudyResults`: the completed trials as flat records (plan, strategy, every metric, feasibility),
the teacher's values, the study's objectives and config. The report, ``modsearch export --trial/--pick`` and
the notebook all read studies through it.

>>> res = open_results("studies/bible-en-fr.toml")                                  # doctest: +SKIP
>>> [r.number for r in res.frontier()][:3]                                          # doctest: +SKIP
[0, 14, 22]
>>> res.pick("latency_ms <= 40").plan                                               # doctest: +SKIP
'0,1,2,3,4,5/0-2,3-5'
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field

from .._errors import UserError
from ..search._figures import TrialRecord, dropped, front, records_hypervolume, trial_records, with_figures
from ..search._pareto import hypervolume, normalised_losses, reference_point
from ..search._storage import open_storage

__all__ = ["COST_AXES", "StudyResults", "TrialRecord", "open_results", "quality_label", "results_of"]

#: Cost metrics a report can put against quality, in display order (all minimised).
COST_AXES = ("latency_ms", "profile_latency_ms", "flops", "params")
#: Strategy tags of seeded baselines (``sampler`` marks the sampler's own proposals).
BASELINES = ("teacher", "uniform", "speed-first", "size-first", "drop-alternate", "drop-one", "user")


@dataclass
class StudyResults:
    """The completed trials of a modsearch study and what the study knows about itself.

    **The figures are the verified ones.** Once ``modsearch verify`` has measured the frontier
    (``verification``), every trial whose plan it measured takes the verified speed-up and the latencies that
    follow from it, in :meth:`frontier`, :meth:`hypervolume`, :meth:`hypervolume_history`, :meth:`pick` (so
    ``modsearch export --pick``) and feasibility; :meth:`dropped` lists the points that were on the front by
    their trials' figures and are not by the verified ones, and ``frontier(verified=False)`` is the front by
    trial figures alone.

    **One millisecond scale.** ``latency_ms`` is a trial's paired ratio to the teacher times the teacher's
    ``latency_ms`` stored on the study (its p50, measured once, by the run that created the study), and a
    verified point's is that figure divided by its verified speed-up; constraints and ``pick`` expressions in
    milliseconds read this scale. Studies written before it was fixed are rescaled on read. The rules live in
    :mod:`modsearch.search._figures`.

    >>> res.frontier()[0].verified, res.frontier()[0].get("speedup")            # doctest: +SKIP
    (True, 1.89)
    >>> [(t.number, t.trial_metrics["speedup"]) for t in res.dropped()]          # doctest: +SKIP
    [(51, 2.48)]
    """

    name: str
    storage: str
    source: str | None  # the study TOML, when opened from one
    objectives: list
    maximize: bool
    teacher: dict
    config: dict
    identity: dict
    trials: list  # TrialRecord, by trial number
    n_trials_total: int  # every trial in the storage, including failed and running ones
    verification: dict | None = None  # `modsearch verify`'s record (modsearch.search._verify), if any
    _applied: object = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self):
        self._refresh()

    def verified(self, plan: str) -> dict | None:
        """``modsearch verify``'s record of ``plan`` (``{"speedup", "low", "high", "latency_ms", "on_front",
        "trial", ...}``; its ``latency_ms`` is on the scale of the verification's own teacher timing,
        ``teacher_ms``), if measured. ``on_front`` is whether the plan was on the verified front when verified;
        :meth:`frontier` and :meth:`dropped` give it for the trials as they are now."""
        return ((self.verification or {}).get("plans") or {}).get(plan)

    def _refresh(self) -> None:
        """Give every record the figures a user sees (:func:`modsearch.search._figures.with_figures`), with
        ``verification`` as it is now (a caller may set it after construction). The records are replaced, not
        changed: two results may share them."""
        if self._applied == (id(self.verification), id(self.trials), len(self.trials)):
            return
        self.trials = with_figures(self.trials, self.teacher, self.verification, self.identity.get("constraints"))
        self._applied = (id(self.verification), id(self.trials), len(self.trials))

    # -- basics -------------------------------------------------------------------------------------------
    @property
    def quality_name(self) -> str:
        return quality_label(self.config)

    @property
    def target_name(self) -> str:
        t = self.identity.get("target") or {}
        return t.get("name") or (self.config.get("target") if isinstance(self.config.get("target"), str) else "?")

    @property
    def bank_checksum(self) -> str:
        return self.identity.get("bank_checksum", "")

    def cost_axes(self) -> list[str]:
        """Cost metrics this study measured (for the teacher and every trial), in display order."""
        key = (id(self.trials), len(self.trials))
        if getattr(self, "_axes_key", None) != key:  # asked once per hover text: compute once
            self._axes = [c for c in COST_AXES if isinstance(self.teacher.get(c), (int, float))
                          and all(isinstance(t.get(c), (int, float)) for t in self.trials)]
            self._axes_key = key
        return self._axes

    def trial(self, number: int) -> TrialRecord:
        for t in self.trials:
            if t.number == number:
                return t
        raise UserError(f"study {self.name!r} has no completed trial {number} "
                        f"(completed: {_ranges([t.number for t in self.trials])})")

    def better(self, a: float, b: float) -> bool:
        return a > b if self.maximize else a < b

    # -- fronts -------------------------------------------------------------------------------------------
    def frontier(self, objectives=None, feasible_only: bool = True, verified: bool = True) -> list[TrialRecord]:
        """Non-dominated trials over ``objectives`` (default: the study's), one per plan (its first trial),
        cheapest first (by the first cost objective).

        The figures are the verified ones where ``modsearch verify`` measured a plan (see the class docstring);
        ``verified=False`` gives the front by the trials' own figures (``trial_metrics``, ``trial_feasible``),
        sorted by them. The same front as the search prints (:func:`modsearch.search._figures.front`, on the
        one :func:`~modsearch.search.pareto_front`): of trials with identical figures only the first is listed."""
        self._refresh()
        return front(self.trials, list(objectives or self.objectives), self.maximize, feasible_only, verified)

    def dropped(self, objectives=None) -> list[TrialRecord]:
        """The trials that verification took off the front: on it by their trials' own figures, not by the
        verified ones (their plan was verified slower than its trial said, or a point that dominates them now
        was verified faster). Cheapest first by their trial figures; empty when the study was not verified.
        A report can draw them, marked; ``trial_metrics`` holds what the trial measured, ``metrics`` what
        verification made of it."""
        self._refresh()
        return dropped(self.trials, list(objectives or self.objectives), self.maximize)

    def hypervolume(self) -> float:
        """The teacher-normalised hypervolume of the feasible trials (verified figures where verified): the
        last value of :meth:`hypervolume_history`."""
        self._refresh()
        return records_hypervolume(self.trials, self.objectives, self.teacher, self.maximize)

    def hypervolume_history(self) -> list[tuple[int, float]]:
        """(trial number, teacher-normalised hypervolume of the feasible front so far), at every trial.

        The same normalisation as the search's progress bar: each objective divided by the teacher's, quality
        as a loss, reference point quality 0 and costs 1.1x the teacher's."""
        self._refresh()
        ref = reference_point(len(self.objectives), self.maximize)
        teacher = [self.teacher.get(o) for o in self.objectives]
        front: list[list[float]] = []
        hv, out = 0.0, []
        for t in self.trials:
            values = [t.get(o) for o in self.objectives]
            if t.feasible and all(_finite(v) for v in values):
                p = normalised_losses(values, teacher, self.maximize)
                if not any(all(x <= y for x, y in zip(f, p)) for f in front):
                    front = [f for f in front if not all(x <= y for x, y in zip(p, f))] + [p]
                    hv = hypervolume(front, ref)
            out.append((t.number, hv))
        return out

    # -- picking a point ----------------------------------------------------------------------------------
    def pick(self, condition: str, feasible_only: bool = True) -> TrialRecord:
        """The trial with the best quality among those that meet ``condition`` (one or more of
        ``METRIC <= NUMBER``, ``METRIC >= NUMBER * teacher``..., joined by ``,`` or ``and``); ties go to the
        cheaper plan, then the earlier trial. Infeasible trials are left out unless ``feasible_only`` is off.
        Verified figures stand in for the trials' where a plan was verified; milliseconds are on the study's
        scale (see the class docstring)."""
        from ..search._config import Constraint

        self._refresh()
        parts = [p for chunk in condition.split(",") for p in chunk.split(" and ")]
        cons = [Constraint.parse(p.strip(), where="--pick") for p in parts if p.strip()]
        if not cons:
            raise UserError("--pick: give a condition such as 'latency_ms <= 40'")
        known = set().union(*(t.metrics for t in self.trials)) if self.trials else set()
        for c in cons:
            if c.metric not in known:
                raise UserError(f"--pick {condition!r}: this study has no metric {c.metric!r} "
                                f"(it has {', '.join(sorted(known))})")
        ok = [t for t in self.trials if (t.feasible or not feasible_only) and _finite(t.get("quality"))
              and all(_finite(t.get(c.metric)) and c.violation(t.get(c.metric), self.teacher.get(c.metric)) <= 0
                      for c in cons)]
        if not ok:
            closest = min(self.trials, key=lambda t: sum(max(0.0, c.violation(t.get(c.metric, math.inf),
                                                                              self.teacher.get(c.metric)))
                                                         for c in cons)) if self.trials else None
            hint = "" if closest is None else (
                f"; the closest is trial {closest.number} ("
                + ", ".join(f"{c.metric} {closest.get(c.metric):.4g}" for c in cons) + ")")
            raise UserError(f"--pick {condition!r}: no {'feasible ' if feasible_only else ''}completed trial "
                            f"of study {self.name!r} meets it{hint}")
        cost = self.objectives[1] if len(self.objectives) > 1 else "params"
        sign = -1 if self.maximize else 1
        return min(ok, key=lambda t: (sign * t.get("quality"), t.get(cost, math.inf), t.number))

    # -- export ---------------------------------------------------------------------------------------------
    def export_command(self, number: int, out: str | None = None) -> str:
        """The shell command that exports trial ``number`` of this study."""
        import shlex

        out = out or os.path.join("exports", f"{self.name}-t{number}")
        if self.source:
            head = f"modsearch export {shlex.quote(self.source)}"
        else:
            head = (f"modsearch export {shlex.quote(self.config.get('bank', 'BANK'))} --storage "
                    f"{shlex.quote(self.storage)} --study-name {shlex.quote(self.name)}")
        return f"{head} --trial {number} --out {shlex.quote(out)}"


def quality_label(config: dict) -> str:
    """The name of a study's quality score (its task's primary metric), e.g. ``chrf``."""
    task = config.get("task") or {}
    m = task.get("metric")
    if isinstance(m, list) and m:
        return m[0]
    if isinstance(m, str) and m.strip():
        return m.split(",")[0].strip()
    from ..quality._score import DEFAULT_METRICS

    return DEFAULT_METRICS.get(task.get("task", "translation"), "quality")


def _finite(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _ranges(nums: list[int]) -> str:
    if not nums:
        return "none"
    nums = sorted(nums)
    out, start, prev = [], nums[0], nums[0]
    for n in nums[1:] + [None]:
        if n is not None and n == prev + 1:
            prev = n
            continue
        out.append(str(start) if start == prev else f"{start}-{prev}")
        if n is not None:
            start = prev = n
    return ", ".join(out)


def open_results(source: str | None = None, *, storage: str | None = None,
                 study_name: str | None = None) -> StudyResults:
    """Read a study: from its TOML (``source``), optionally with another ``storage``/``study_name``, or from
    ``storage`` and ``study_name`` alone. Never creates or changes anything in the storage."""
    import optuna

    src = None
    if source is not None:
        from ..search._config import StudyConfig

        cfg = StudyConfig.load(source).override(storage=storage, study_name=study_name)
        storage, study_name, src = cfg.storage, cfg.name, source
    if not storage or not study_name:
        raise UserError("give a study TOML file, or --storage URL with --study-name NAME")
    previous = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        rdb = open_storage(storage, create=False)
        try:
            study = optuna.load_study(study_name=study_name, storage=rdb)
        except KeyError:
            names = [s.study_name for s in optuna.get_all_study_summaries(rdb, include_best_trial=False)]
            raise UserError(f"storage {storage} has no study {study_name!r} "
                            f"(it has: {', '.join(names) or 'none'})") from None
        except Exception as exc:
            raise UserError(f"cannot read study {study_name!r} from {storage}: {str(exc).splitlines()[0]}") from None
        return results_of(study, storage=storage, source=src)
    finally:
        optuna.logging.set_verbosity(previous)


def results_of(study, *, storage: str = "", source: str | None = None) -> StudyResults:
    """:class:`StudyResults` of an Optuna study object that :func:`modsearch.search.run_search` made (what
    :func:`open_results` returns once it has loaded the study)."""
    attrs = study.user_attrs
    study_name = study.study_name
    if "modsearch" not in attrs or "teacher" not in attrs:
        raise UserError(f"study {study_name!r} in {storage} was not made by 'modsearch search'")
    names = study.metric_names or attrs["modsearch"].get("objectives")
    directions = [d.name.lower() for d in study.directions]
    records = trial_records(study)
    teacher = {k: v for k, v in attrs["teacher"].items()}
    return StudyResults(name=study_name, storage=storage, source=source, objectives=list(names),
                        maximize=directions[0] == "maximize", teacher=teacher, config=attrs.get("config") or {},
                        identity=attrs["modsearch"], trials=records, n_trials_total=len(study.get_trials(deepcopy=False)),
                        verification=attrs.get("verification"))
