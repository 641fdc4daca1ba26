"""The figures a study shows for its trials, and the front over them: on one millisecond scale, and verified
where ``modsearch verify`` measured a plan. The one place that decides them: the printed frontier
(:func:`~modsearch.search.frontier_rows`), ``modsearch verify`` and :class:`~modsearch.results.StudyResults`
(so the report and ``modsearch export --pick``) all read trials through it.

**One millisecond scale.** A measured latency is a paired ratio to the teacher (``latency_ratio``, its interval
as ``speedup_low``/``speedup_high``). ``latency_ms`` is that ratio times the teacher's ``latency_ms`` stored on
the study (its p50, measured once, by the run that created the study), whichever run or worker timed the plan,
and a verified point's is that figure divided by its verified speed-up. Constraints and ``pick`` expressions in
milliseconds read this scale. Studies written before it was fixed carry, per trial, the scale of the run that
timed it; they are rescaled here. ``latency_p90_ms`` is a plan's own p90 in its measuring window, not rescaled.

**Verified figures stand in.** A trial whose plan was verified takes the verified speed-up, its interval and
the latencies that follow from it (``metrics``; ``verified`` is true), and the study's constraints are judged
on them; ``trial_metrics`` and ``trial_feasible`` keep the trial's own.

>>> trials, objectives, maximize = study_trials(study)                         # doctest: +SKIP
>>> [t.plan for t in dropped(trials, objectives, maximize)]                      # doctest: +SKIP
['x0,x1,2-3,4-5/0-2,3-5']
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

from .._errors import UserError
from ._pareto import hypervolume, normalised_losses, pareto_front, reference_point

__all__ = ["TrialRecord", "dropped", "front", "on_study_scale", "records_hypervolume", "study_trials",
           "trial_records", "with_figures", "with_verified"]

_SKIP_ATTRS = ("plan", "strategy", "depths", "timings", "cached", "fingerprint", "feasible", "speedup_basis")


@dataclass
class TrialRecord:
    """One completed trial: ``metrics`` holds every numeric figure of it (quality, the task's scores, params,
    params_ratio, flops, flops_ratio, latency..., speedup) as a user sees them: when ``modsearch verify``
    measured its plan, the verified speed-up, its interval and the latencies that follow from it
    (``verified`` is then true); ``trial_metrics`` always holds the trial's own figures. Both are on the study's
    one millisecond scale (see the module docstring). ``feasible`` is judged on ``metrics``,
    ``trial_feasible`` on ``trial_metrics``."""

    number: int
    plan: str
    strategy: str
    feasible: bool
    metrics: dict
    values: list
    depths: dict = field(default_factory=dict)
    speedup_basis: str | None = None
    verified: bool = False
    trial_metrics: dict = field(default_factory=dict)
    trial_feasible: bool | None = None
    recorded: tuple | None = field(default=None, repr=False)  # (metrics, feasible) as stored, before any rescaling

    def get(self, key: str, default=None):
        return self.metrics.get(key, default)


def trial_records(study) -> list[TrialRecord]:
    """The study's completed trials as records, by number, with their figures as stored (see
    :func:`with_figures`)."""
    records = []
    for t in study.get_trials(deepcopy=False):
        if t.state.name != "COMPLETE" or t.values is None:
            continue
        a = t.user_attrs
        metrics = {k: v for k, v in a.items() if k not in _SKIP_ATTRS and not k.startswith("constraint:")
                   and isinstance(v, (int, float)) and not isinstance(v, bool)}
        records.append(TrialRecord(number=t.number, plan=a.get("plan", "?"), strategy=a.get("strategy", "sampler"),
                                   feasible=bool(a.get("feasible", True)), metrics=metrics, values=list(t.values),
                                   depths=a.get("depths") or {}, speedup_basis=a.get("speedup_basis")))
    return sorted(records, key=lambda r: r.number)


def study_trials(study, verification: dict | None = None) -> tuple[list[TrialRecord], list[str], bool]:
    """``(trials with the figures a user sees, the objectives, whether quality is maximised)`` of a study that
    :func:`modsearch.search.run_search` made; ``verification`` instead of the study's own record, if given."""
    attrs = study.user_attrs
    if "modsearch" not in attrs or "teacher" not in attrs:
        raise UserError(f"study {study.study_name!r} was not made by 'modsearch search'")
    objectives = list(study.metric_names or attrs["modsearch"].get("objectives"))
    trials = with_figures(trial_records(study), attrs["teacher"], verification or attrs.get("verification"),
                          attrs["modsearch"].get("constraints"))
    return trials, objectives, study.directions[0].name == "MAXIMIZE"


def with_figures(trials: list[TrialRecord], teacher: dict, verification: dict | None,
                 constraints: list[str] | None) -> list[TrialRecord]:
    """New records with the figures a user sees (see the module docstring): on the study's scale, verified
    where ``verification`` measured a plan, and feasible by ``constraints`` (the study's texts) on those
    figures. Applied again with another verification, they start from the stored figures."""
    from ._config import Constraint

    cons = []
    for text in constraints or []:
        try:
            cons.append(Constraint.parse(text, where="constraints"))
        except UserError:  # a constraint this version cannot read: keep the stored verdicts
            cons = None
            break
    plans = (verification or {}).get("plans") or {}
    objective = (verification or {}).get("objective")
    out = []
    for t in trials:
        stored, feasible = t.recorded if t.recorded is not None else (dict(t.metrics), t.feasible)
        trial = on_study_scale(stored, teacher)
        v = plans.get(t.plan)
        shown = with_verified(trial, v, teacher, objective) if v is not None else dict(trial)
        out.append(replace(t, metrics=shown, feasible=_feasible(shown, cons, teacher, feasible),
                           verified=v is not None, trial_metrics=trial,
                           trial_feasible=_feasible(trial, cons, teacher, feasible), recorded=(stored, feasible)))
    return out


def front(trials: list[TrialRecord], keys: list[str], maximize: bool, feasible_only: bool = True,
          verified: bool = True) -> list[TrialRecord]:
    """Non-dominated trials over ``keys`` (quality first), one per plan (its first trial), cheapest first (by
    the first cost). ``verified=False``: by the trials' own figures (``trial_metrics``, ``trial_feasible``).
    Of trials with identical figures only the first is kept (:func:`~modsearch.search.pareto_front`)."""
    def figures(t: TrialRecord) -> tuple[dict, bool]:
        return (t.metrics, t.feasible) if verified else (t.trial_metrics, t.trial_feasible)

    seen, pool = set(), []
    for t in trials:
        m, ok = figures(t)
        if (feasible_only and not ok) or t.plan in seen or any(not _finite(m.get(k)) for k in keys):
            continue
        seen.add(t.plan)
        pool.append(t)
    losses = [[(-figures(t)[0][k] if k == "quality" and maximize else figures(t)[0][k]) for k in keys] for t in pool]
    cost = keys[1] if len(keys) > 1 else keys[0]
    return sorted((pool[i] for i in pareto_front(losses)), key=lambda t: (figures(t)[0][cost], t.number))


def dropped(trials: list[TrialRecord], keys: list[str], maximize: bool) -> list[TrialRecord]:
    """The trials verification took off the front: on it by their own figures, not by the verified ones (their
    plan verified slower than its trial said, or a point now dominating them verified faster). Cheapest first
    by their own figures; empty when nothing was verified."""
    if not any(t.verified for t in trials):
        return []
    kept = {t.number for t in front(trials, keys, maximize)}
    return [t for t in front(trials, keys, maximize, verified=False) if t.number not in kept]


def records_hypervolume(trials: list[TrialRecord], objectives: list[str], teacher: dict, maximize: bool) -> float:
    """The teacher-normalised hypervolume of the feasible ``trials`` (their ``metrics``)."""
    t = [teacher.get(o) for o in objectives]
    points = [normalised_losses([r.get(o) for o in objectives], t, maximize)
              for r in trials if r.feasible and all(_finite(r.get(o)) for o in objectives)]
    return hypervolume(points, reference_point(len(objectives), maximize))


def on_study_scale(metrics: dict, teacher: dict) -> dict:
    """A trial's figures with ``latency_ms`` (and its interval) recomputed from its paired ratio and the
    study's one teacher figure, ``teacher["latency_ms"]``: a no-op for a trial written on that scale, a fix for
    one written by a run that multiplied by its own teacher timing."""
    m = dict(metrics)
    ms, ratio = teacher.get("latency_ms"), m.get("latency_ratio")
    if not (_finite(ms) and _finite(ratio) and "latency_ms" in m):
        return m
    m["latency_ms"] = ratio * ms
    if "speedup_high" in m and "speedup_low" in m:
        m["latency_low_ms"] = ms / m["speedup_high"]
        m["latency_high_ms"] = ms / m["speedup_low"] if m["speedup_low"] > 0 else math.inf
    return m


def with_verified(metrics: dict, v: dict, teacher: dict, objective: str | None) -> dict:
    """A trial's figures with ``modsearch verify``'s record ``v`` of its plan standing in: the speed-up and its
    interval, the ratio, and each latency the teacher has (``latency_ms`` and the verified ``objective``) as the
    teacher's figure divided by the verified speed-up, so on the study's scale."""
    m = dict(metrics)
    s = v["speedup"]
    m.update({"speedup": s, "speedup_low": v["low"], "speedup_high": v["high"], "latency_ratio": 1.0 / s})
    for k in dict.fromkeys(("latency_ms", objective)):
        if k and _finite(teacher.get(k)):
            m[k] = teacher[k] / s
            if k == "latency_ms":
                m["latency_low_ms"] = teacher[k] / v["high"]
                m["latency_high_ms"] = teacher[k] / v["low"] if v["low"] > 0 else math.inf
    return m


def _feasible(metrics: dict, cons: list | None, teacher: dict, stored: bool) -> bool:
    """The study's constraints on ``metrics``; the stored verdict when a constraint cannot be read."""
    if not cons or any(not _finite(metrics.get(c.metric)) for c in cons):
        return stored
    return all(c.violation(metrics[c.metric], teacher.get(c.metric)) <= 0 for c in cons)


def _finite(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
