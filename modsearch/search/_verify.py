"""A verified frontier: the teacher and every frontier plan measured again, together, in interleaved shuffled
rounds, so that the speed-ups a user picks a deployment point by are true on this machine.

During a search each plan's latency is measured when its trial runs (paired with the teacher), or predicted by
a profile. Verification measures all frontier points in one window, each round running the teacher and every
point once in a random order, and reports each point's speed-up over the teacher with a confidence interval
(paired statistics, :mod:`modsearch.cost._paired`). ``--rounds`` below :func:`~modsearch.cost._paired.rounds_for_interval` (6 at
95 %) is refused: fewer rounds give every point the interval [0, inf].

The verified figures then *are* the study's figures for those plans: :class:`~modsearch.results.StudyResults`
(its frontier, hypervolume and ``pick``, so ``modsearch export --pick``) and :func:`frontier_rows` use the
verified speed-up, with latencies on the study's millisecond scale (the study's teacher figure divided by the
speed-up). A point that is not on the front by them is not a frontier point any more:
``StudyResults.dropped()`` lists it and the printed table names it below. Measured are the front by the
trials' own figures and, after an earlier verification, the verified front too.

The record is stored on the study (``study.user_attrs["verification"]``: finished Optuna trials cannot take new
attributes), keyed by plan and naming each plan's trial (``on_front``: on the verified front when measured);
``modsearch export`` copies a point's figures into ``assembly.json`` and the model card.

>>> record = verify_study(StudyConfig.load("studies/bible-en-fr.toml"))      # doctest: +SKIP
>>> record["plans"]["0-1,2-3,4-5/0-2,3-5"]["speedup"]                        # doctest: +SKIP
1.93
"""

from __future__ import annotations

import datetime as _dt
import random
import warnings
from collections.abc import Callable

from .._errors import UserError

__all__ = ["check_rounds", "dominated_beyond_noise", "verify_study", "verification_of"]


def timing_steps(bank, plans, target, seed: int = 0) -> list:
    """One timed step per plan (its model assembled and prepared for ``target``), for
    :func:`~modsearch.cost._paired.measure_paired`."""
    from ..assembly import assemble
    from ..cost._measure import _runner, prepare, timed_step

    steps = []
    for p in plans:
        model, inputs = prepare(assemble(bank, bank.plan(p)), target, seed)
        steps.append(timed_step(_runner(model, inputs, target), target.device))
    return steps


def verification_of(study) -> dict | None:
    """The study's verification record, or None."""
    return study.user_attrs.get("verification")


def verify_study(cfg, *, rounds: int | None = None, study=None, storage=None, progress: bool = True,
                 log: Callable[[str], None] | None = print, seed: int = 0) -> dict:
    """Measure the teacher and the study's frontier plans in interleaved shuffled rounds on ``cfg``'s target;
    store and return the record (see the module docstring). ``rounds`` fixes the number of rounds; by default
    they run until every point's interval is within the target protocol's ``interval`` or until
    the protocol's ``verify_seconds`` have passed (then a warning says which goal was missed)."""
    import optuna

    from ..bank._bank import LayerBank
    from ..cost._measure import percentile, pinned_threads
    from ..cost._paired import measure_paired, speedup_of
    from ..cost._target import HardwareTarget, fingerprint
    from ._figures import front, study_trials
    from ._storage import open_storage

    say = log or (lambda _m: None)
    objective = cfg.latency_objective()
    if objective is None:
        raise UserError(f"study {cfg.name}: verify re-measures latency, but the study has no latency objective "
                        f"(its objectives: {', '.join(cfg.objectives)})")
    if study is None:
        storage = storage if storage is not None else open_storage(cfg.storage)
        try:
            study = optuna.load_study(study_name=cfg.name, storage=storage)
        except KeyError:
            raise UserError(f"no study {cfg.name!r} in {cfg.storage}: run `modsearch search {cfg.source or ''}` "
                        "first") from None
    # The front by the trials' own figures and, when verified before, the verified front: a point a
    # previous verification let onto the front is measured too.
    trials, names, maximize = study_trials(study)
    rows = {t.plan: t for t in [*front(trials, names, maximize, verified=False), *front(trials, names, maximize)]}
    if not rows:
        raise UserError(f"study {cfg.name!r} has no finished feasible trial to verify")
    bank = LayerBank.load(cfg.bank)
    stored = study.user_attrs.get("modsearch", {})
    if stored.get("bank_checksum") not in (None, bank.checksum):
        raise UserError(f"bank {cfg.bank} has changed since study {cfg.name!r} ran (checksum differs)")
    target = HardwareTarget.resolve(stored.get("target") or cfg.target)
    check_rounds(rounds, target.protocol.confidence)
    if target.input_length == "dev":
        from ._evaluator import dev_input_lengths

        target = target.with_input_lengths(dev_input_lengths(bank, cfg.load_devset(), cfg.quality_task()))
    target.check_available()
    if objective == "latency_ms":
        _check_machine(study, [t.number for t in rows.values()], target)

    teacher = str(bank.teacher_plan())
    plans = [p for p in rows if p != teacher]
    say(f"verifying {len(plans)} frontier plan(s) of study {cfg.name} against the teacher on {target.name}, "
        f"interleaved in shuffled rounds" + (f" ({rounds} rounds)" if rounds else
                                              f" (until ±{target.protocol.interval:.0%} or "
                                              f"{target.protocol.verify_seconds:g} s)"))
    steps = timing_steps(bank, [teacher, *plans], target, seed)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(desc="verify", unit="round", total=rounds, dynamic_ncols=True)
    try:
        with pinned_threads(target.n_threads):
            res = measure_paired(steps, target.protocol, reference=0, rounds=rounds, rng=random.Random(seed),
                                 cap_seconds=target.protocol.verify_seconds,
                                 on_round=(lambda _n: bar.update(1)) if bar is not None else None)
    finally:
        if bar is not None:
            bar.close()
    teacher_ms = percentile(res["samples"][0], 50) * 1000
    record_plans = {}
    for i, p in enumerate([teacher, *plans]):
        s = speedup_of(res["ratios"][i])
        row = rows.get(p)
        r = res["ratios"][i]
        record_plans[p] = {"trial": row.number if row else None, "speedup": s["speedup"], "low": s["low"],
                           "high": s["high"], "half_width": s["half_width"], "latency_ms": teacher_ms * r["ratio"],
                           "latency_low_ms": teacher_ms * r["low"], "latency_high_ms": teacher_ms * r["high"],
                           "reported_speedup": row.trial_metrics.get("speedup") if row else None, "on_front": True}
    fp = fingerprint(target.device)
    record = {"created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"), "target": target.name,
              "objective": objective, "rounds": res["rounds"], "seconds": round(res["seconds"], 2),
              "interval_met": res["interval_met"], "interval_goal": target.protocol.interval,
              "confidence": target.protocol.confidence, "teacher_ms": teacher_ms, "teacher_plan": teacher,
              "fingerprint": fp, "plans": record_plans}
    # Which points the verified figures keep on the front, as the study stands now (StudyResults.frontier
    # and .dropped give it for the study as it stands when read).
    kept = {t.plan for t in front(study_trials(study, record)[0], names, maximize)}
    for p, v in record_plans.items():
        v["on_front"] = p in kept
    study.set_user_attr("verification", record)
    if not res["interval_met"] and rounds is None:
        worst = max(record_plans.values(), key=lambda v: v["half_width"])
        msg = (f"verify: the ±{target.protocol.interval:.0%} interval goal was not met within "
               f"{target.protocol.verify_seconds:g} s (widest: ±{worst['half_width']:.1%} after "
               f"{res['rounds']} rounds); the machine is noisy: raise the target's protocol.verify_seconds, "
               "give --rounds, or verify on a quieter machine")
        warnings.warn(msg, stacklevel=2)
        say(msg)
    off = [p for p, v in record_plans.items() if not v["on_front"]]
    say(f"verified in {res['rounds']} rounds, {res['seconds']:.0f} s; teacher {teacher_ms:.1f} ms"
        + (f"; {len(off)} point(s) fall off the front when verified: {', '.join(off)}" if off else ""))
    return record


def check_rounds(rounds: int | None, confidence: float, what: str = "--rounds") -> None:
    """Refuse a fixed round count too small for a finite ``confidence`` interval (it would verify every point
    as [0, inf]): see :func:`modsearch.cost._paired.rounds_for_interval`."""
    from ..cost._paired import rounds_for_interval

    need = rounds_for_interval(confidence)
    if rounds is not None and rounds < need:
        raise UserError(f"{what} {rounds}: a {confidence:.0%} interval needs at least {need} rounds (fewer give "
                        f"the interval [0, inf]); give {need} or more")


def dominated_beyond_noise(rows: list[dict], names: list[str], signs: list[float], objective: str,
                           measured: dict[str, tuple[float, float]]) -> dict[str, list[str]]:
    """For each row (a dict with ``plan`` and the objectives ``names``) that has an interval in ``measured``
    (plan -> (low, high) of ``objective``, or of anything that orders like it, e.g. the latency ratio to the
    teacher), the plans of the rows that dominate it beyond the noise: at least as good on every other
    objective (``signs`` turn each into a loss: -1 for maximised) and with an interval lying wholly below its
    own (``high`` under its ``low``). Two plans whose intervals overlap are tied within the measurement.
    ``benchmarks/latency_truth.py`` checks the printed frontier's order with it."""
    in_rows = [r for r in rows if r["plan"] in measured]
    others = [(n, sg) for n, sg in zip(names, signs) if n != objective]

    def beats(a: dict, b: dict) -> bool:
        return (measured[a["plan"]][1] < measured[b["plan"]][0]
                and all(sg * a[n] <= sg * b[n] for n, sg in others))

    return {b["plan"]: [a["plan"] for a in in_rows if a is not b and beats(a, b)] for b in in_rows}


def _check_machine(study, numbers: list[int], target) -> None:
    """Measured latencies are only comparable on the machine that measured them."""
    from ..cost._target import FINGERPRINT_KEYS, fingerprint
    from ._evaluator import machine_id

    here = machine_id(fingerprint(target.device))
    ids = {t.user_attrs.get("fingerprint") for t in study.get_trials(deepcopy=False)
           if t.number in set(numbers)} - {None}
    if ids and ids != {here}:
        raise UserError(f"the study's latencies were measured on another machine (fingerprint {', '.join(sorted(ids))}, "
                        f"this one {here}; compared: {', '.join(FINGERPRINT_KEYS)}); verify it where it ran, "
                        "or run a new study here")
