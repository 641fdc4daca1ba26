"""Search: the quality-versus-cost frontier of a bank's plan space on one hardware target, with Optuna.

The pieces, from the inside out:

- :func:`evaluate_plan` scores one plan (quality on the dev set, cost on the target). It is a pure function of
  (bank, plan, data, task, target) and so can be cached: :class:`EvaluationCache` keeps its results as JSON
  files keyed by a sha256 of exactly those inputs, shared across trials, restarts and studies. No plan is
  evaluated twice. :class:`PlanEvaluator` adds what a long-running search wants on top: the cache, reuse of
  encoder outputs between plans that share an encoder plan, and counters.
- :class:`~modsearch.genome.PlanGenome` makes the search space static (the same categorical genes in every
  trial), so NSGA-II/III, TPE and GP model all of it.
- :func:`seed_plans` lists the baselines evaluated first, each tagged with its strategy in the trial's
  ``user_attrs["strategy"]``: the teacher, every uniform granularity, the paper's speed-first and size-first
  ladders, and layer dropping.
- :func:`run_search` runs (or continues) the Optuna study a :class:`~modsearch.study.StudyConfig` describes.

>>> from modsearch.study import StudyConfig
>>> result = run_search(StudyConfig.load("studies/bible-en-fr.toml"))          # doctest: +SKIP
>>> print(format_frontier(result.frontier))                                     # doctest: +SKIP
>>> evaluate_plan(bank, "0-1,2-3,4-5/0,1,2,3,4,5", dev, task, "cpu-1t-b1")      # doctest: +SKIP
{'plan': '0-1,2-3,4-5/0,1,2,3,4,5', 'quality': 31.2, 'params': 8123456, 'flops': 1.2e9, ...}
"""


from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from .._errors import UserError
from ..plan._genome import PlanGenome
from ._cache import EvaluationCache, worker_id
from ._evaluator import PlanEvaluator
from ._samplers import make_sampler
from ._seeds import limit_seeds, seed_plans
from ._storage import open_storage, quiet_warnings
from ._surrogate import ESTIMATES_ATTR, OBJECTIVE_ESTIMATES_ATTR, objective_estimates
from ._summary import ProgressBar, dropped_rows, export_trials, frontier_rows, study_hypervolume

__all__ = ["PLAN_TRIAL_FACTOR", "SearchResult", "fail_dead_trials", "run_search"]

_FINISHED = ("COMPLETE",)


def counts_as_trial(t) -> bool:
    """Whether a trial counts toward ``n_trials``: a complete one, or one the screen pruned (a trial, though
    not a scored plan: ``n_plans`` counts complete trials only). A worker's lost race is pruned and not
    counted."""
    return t.state.name == "COMPLETE" or (t.state.name == "PRUNED" and bool(t.user_attrs.get("screened")))
PLAN_TRIAL_FACTOR = 10  # a budget of n plans also stops at 10 n trials, should a sampler only repeat itself


@dataclass
class SearchResult:
    """What :func:`run_search` did: the study, its frontier rows (verified figures where verified), the rows
    verification took off the front, counts and where results were written."""

    study: object
    frontier: list[dict]
    dropped: list[dict]
    n_trials: int
    new_trials: int
    interrupted: bool
    evaluations: dict
    hypervolume: float
    files: dict = field(default_factory=dict)
    teacher: dict = field(default_factory=dict)
    n_plans: int = 0  # distinct plans in the study


#: The teacher's figures that set the study's millisecond scale (see :func:`stated_teacher`).
LATENCY_SCALE = ("latency_ms", "latency_low_ms", "latency_high_ms")


def stated_teacher(study, teacher: dict) -> dict:
    """``teacher`` (this run's figures) with the study's millisecond scale: the teacher's ``latency_ms`` stored
    on the study by the run that created it.

    A trial's measured latency is a dimensionless paired ratio to the teacher; ``latency_ms`` is that ratio
    times this one stated teacher p50, whichever run or worker timed the plan. The teacher's own p50, measured
    again by every run, drifts by tens of percent on a shared machine: multiplying by it would mix scales in one
    study. Constraints in milliseconds (``latency_ms <= 40``) read the same figure."""
    stored = study.user_attrs.get("teacher") or {}
    return teacher | {k: stored[k] for k in LATENCY_SCALE if k in teacher and isinstance(stored.get(k), float)}


def _metrics(rec: dict, teacher: dict | None) -> dict:
    """The flat metrics of an evaluation record, with ratios and speedup against the teacher. With a teacher
    that has ``latency_ms``, a paired ``latency_ratio`` becomes milliseconds on the teacher's scale
    (:func:`stated_teacher`), not on the scale of the run that evaluated the record."""
    m = {k: rec[k] for k in ("quality", "params", "params_ratio", "flops", "latency_ms", "latency_low_ms",
                             "latency_high_ms", "latency_p90_ms", "latency_ratio", "latency_rounds",
                             "latency_interval_met", "profile_latency_ms") if rec.get(k) is not None}
    m.update({k: v for k, v in rec["scores"].items() if k not in m})
    if teacher and rec.get("latency_ratio") and teacher.get("latency_ms"):
        ms = teacher["latency_ms"]
        m.update({"latency_ms": rec["latency_ratio"] * ms, "latency_low_ms": rec["latency_ratio_low"] * ms,
                  "latency_high_ms": rec["latency_ratio_high"] * ms})
    if teacher:
        if teacher.get("flops"):
            m["flops_ratio"] = m.get("flops", float("nan")) / teacher["flops"]
        if rec.get("latency_ratio"):
            # Paired against the teacher: the speed-up is the measured ratio itself, with its interval (unbounded
            # when the trial stopped short of the rounds an interval needs).
            from ..cost._paired import speedup_of

            s = speedup_of({"ratio": rec["latency_ratio"], "low": rec["latency_ratio_low"],
                            "high": rec["latency_ratio_high"]})
            m.update({"speedup": s["speedup"], "speedup_low": s["low"], "speedup_high": s["high"],
                      "speedup_basis": "latency_ms (paired)"})
            return m
        for lat in ("latency_ms", "profile_latency_ms", "flops"):
            if m.get(lat) and teacher.get(lat):
                m["speedup"] = teacher[lat] / m[lat]
                m["speedup_basis"] = lat
                break
    return m


def _stored_identity(cfg, bank, devset, task, target, genome) -> dict:
    return {"bank_checksum": bank.checksum, "data_hash": devset.content_hash, "task": task.to_json(),
            "target": target.to_dict() if target else None, "objectives": cfg.objectives,
            "constraints": [c.text for c in cfg.constraints], "genome": genome.describe()}


def run_search(cfg, progress: bool = True, log: Callable[[str], None] | None = print,
               callbacks: Sequence[Callable] = (), *, storage=None, optimize: Callable | None = None,
               on_ready: Callable | None = None) -> SearchResult:
    """Run the study ``cfg`` describes, or continue it: it stops at ``n_trials`` finished trials in the study
    (not in this run), or at ``n_plans`` distinct plans in it (a sampler that proposes one of its plans again
    gets a trial served from the cache, which ``n_plans`` does not count; at most ``PLAN_TRIAL_FACTOR x n_plans``
    trials), or ``timeout`` seconds after this run started (the teacher's scoring and the seeds' calibration
    count: the budget is the run's wall time before verification), or at Ctrl-C (the trial under way is marked failed;
    every completed one is kept).

    Trials left RUNNING by a process of this host that no longer exists (killed mid-trial) are failed and
    queued again with the same plan before the study continues.

    Writes ``trials.csv`` and ``trials.parquet`` to ``cfg.output`` and returns a :class:`SearchResult`.

    Hooks for :mod:`modsearch.worker`: ``storage`` (an Optuna storage object used instead of ``cfg.storage``),
    ``on_ready()`` (called once the study exists and its seeds are queued) and ``optimize(study, objective,
    n_trials, timeout, callbacks)`` (runs the trials instead of ``study.optimize``).
    """
    import optuna

    from ..bank._bank import LayerBank
    from ..cost._target import HardwareTarget

    say = log or (lambda _m: None)
    started = time.perf_counter()
    bank = LayerBank.load(cfg.bank)
    task = cfg.quality_task()
    devset = cfg.load_devset()
    task.load_metrics()  # a metric that cannot load fails now, not after the first trial's generation
    if not bank.has_tokenizer():
        raise UserError(f"bank {bank.path} has no tokenizer: scoring text needs one")
    target = HardwareTarget.resolve(cfg.target)
    if cfg.verify_after and cfg.latency_objective():
        from ._verify import check_rounds

        check_rounds(cfg.verify_rounds, target.protocol.confidence, "verify.rounds =")
    if cfg.needs_latency():
        # Measured latency needs the target's device here; quality, FLOPs, params and profile latency do not,
        # so CPU-only quality workers can join a study whose target is a GPU.
        target.check_available()
    profile = _load_profile(cfg, bank, target, say, progress) if cfg.profile else None
    space = bank.space(drops=cfg.drops, granularities=cfg.granularities)
    genome = PlanGenome(space, bank.stack_names)
    cache = EvaluationCache(cfg.cache) if cfg.cache else None
    evaluator = PlanEvaluator(bank, devset, task, target, measure_latency=cfg.needs_latency(), profile=profile,
                              cache=cache, scoring_threads=cfg.scoring_threads or "auto",
                              prefix_memory_mb=cfg.prefix_memory_mb)

    say(f"study {cfg.name}: bank {bank.path} ({space.count():,} plans, {len(genome)} genes), "
        f"{len(devset)} dev examples, target {target.name}, objectives {', '.join(cfg.objectives)}")
    teacher_rec = evaluator.evaluate(bank.teacher_plan())
    teacher = _metrics(teacher_rec, None)
    teacher = _metrics(teacher_rec, teacher)
    maximize = bool(teacher_rec["greater_is_better"])
    for c in cfg.constraints:
        if c.metric not in teacher:
            raise UserError(f"constraint {c.text!r}: this study does not compute {c.metric!r} "
                            f"(it computes {', '.join(sorted(teacher))})")
    directions = ["maximize" if maximize else "minimize"] + ["minimize"] * (len(cfg.objectives) - 1)

    storage = storage if storage is not None else open_storage(cfg.storage)
    os.makedirs(cfg.output, exist_ok=True)  # after the storage opened: a bad URL leaves nothing behind
    previous = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        try:
            study = optuna.load_study(study_name=cfg.name, storage=storage, sampler=None)
            existing = True
        except KeyError:
            existing = False
        identity = _stored_identity(cfg, bank, devset, task, target, genome)
        if existing:
            _check_same_study(study, cfg, directions, identity)
            n_dead = fail_dead_trials(study)
            if n_dead:
                say(f"failed {n_dead} trial(s) left running by a killed process; queued again with the same plan")
        n_before = len(study.trials) if existing else 0
        sampler = make_sampler(cfg.sampler, cfg.sampler_settings, seed=cfg.seed + n_before, genome=genome)
        study = optuna.create_study(study_name=cfg.name, storage=storage, directions=directions, sampler=sampler,
                                    load_if_exists=True)
        if not existing:
            with quiet_warnings():  # set_metric_names is "experimental" since Optuna 3.2, still in 5.0
                study.set_metric_names(list(cfg.objectives))
            study.set_user_attr("modsearch", identity)
            study.set_user_attr("teacher", {"plan": teacher_rec["plan"], **teacher})
            study.set_user_attr("config", cfg.to_json())
        teacher = stated_teacher(study, teacher)

        known = {t.user_attrs.get("plan") for t in study.get_trials(deepcopy=False)
                 if t.state.name in ("COMPLETE", "WAITING")}
        seeds = seed_plans(bank, space, cfg.seed_strategies, calibration=cfg.calibration_texts(), log=say,
                           cache=cache)
        for text in cfg.seed_plans:
            plan = bank.plan(text)
            if not space.contains(plan):
                raise UserError(f"seeds.plans: {text!r} is outside the study's space (drops or spans excluded)")
            seeds.append((plan, "user"))
        every_seed = len(seeds)
        seeds = limit_seeds(seeds, cfg.seed_cap())
        n_seeded = 0
        for plan, strategy in seeds:
            if str(plan) in known:
                continue
            known.add(str(plan))
            study.enqueue_trial(genome.to_params(plan), user_attrs={"strategy": strategy, "plan": str(plan)})
            n_seeded += 1

        finished = sum(1 for t in study.get_trials(deepcopy=False) if counts_as_trial(t))
        remaining = None if cfg.n_trials is None else max(0, cfg.n_trials - finished)
        plans = _study_plans(study)
        plans_left = None
        if cfg.n_plans is not None:
            plans_left = max(0, cfg.n_plans - len(plans))
            cap = max(0, PLAN_TRIAL_FACTOR * cfg.n_plans - finished) if plans_left else 0
            remaining = cap if remaining is None else min(remaining, cap)
        if n_seeded:
            capped = (f"; {every_seed - len(seeds)} more left out: the baselines take at most "
                      f"{cfg.seed_share:.0%} of the budget" if len(seeds) < every_seed else "")
            say(f"enqueued {n_seeded} baseline plan(s) ({', '.join(sorted({s for _, s in seeds}))}){capped}")
        if existing:
            say(f"continuing study {cfg.name}: {finished} finished trial(s) so far")
        if on_ready is not None:
            on_ready()

        screen = None
        if cfg.screen_windows:
            from ._screen import Screen

            screen = Screen(evaluator, cfg.objectives, cfg.screen_windows, cfg.screen_margin,
                            constraints=cfg.constraints, teacher_quality=teacher.get("quality"))
        objective = _objective(cfg, evaluator, genome, teacher, maximize, screen)
        bar = ProgressBar(study, remaining if plans_left is None else plans_left, teacher, cfg.objectives,
                           maximize, enabled=progress, plans=None if plans_left is None else plans)
        # The plan count first: the bar reads the set it keeps.
        stops = [] if cfg.n_plans is None else [_stop_at_plans(plans, cfg.n_plans)]
        interrupted = False
        timeout = cfg.timeout
        if timeout is not None:  # the run's wall time: what the teacher and the seeds took is spent already
            spent = time.perf_counter() - started
            timeout = max(1.0, timeout - spent)
            say(f"time budget: {spent:.0f} s of {cfg.timeout:.0f} s spent before the trials (teacher, seeds)")
        if remaining != 0:
            try:
                if optimize is not None:
                    optimize(study, objective, remaining, timeout, [*stops, bar.update, *callbacks])
                else:
                    study.optimize(objective, n_trials=remaining, timeout=timeout,
                                   callbacks=[*stops, bar.update, *callbacks], gc_after_trial=False)
            except KeyboardInterrupt:
                interrupted = True
            finally:
                bar.close()
        else:
            if plans_left == 0:
                say(f"study {cfg.name} already has {len(plans)} distinct plan(s) (n_plans = {cfg.n_plans}); "
                    "raise --n-plans to continue it")
            elif cfg.n_plans is not None and (cfg.n_trials is None or finished < cfg.n_trials):
                say(f"study {cfg.name} has run {finished} trial(s), {PLAN_TRIAL_FACTOR} x n_plans, for "
                    f"{len(plans)} distinct plan(s): its sampler keeps proposing known plans")
            else:
                say(f"study {cfg.name} already has {finished} finished trial(s) (n_trials = {cfg.n_trials}); "
                    "raise --n-trials to continue it")
    finally:
        optuna.logging.set_verbosity(previous)

    if (cfg.verify_after and cfg.latency_objective() and not interrupted and remaining != 0
            and frontier_rows(study)):
        from ._verify import verify_study

        try:
            target.check_available()
            verify_study(cfg, rounds=cfg.verify_rounds, study=study, progress=progress, log=say)
        except UserError as exc:  # e.g. a quality-only worker machine: the study stands, unverified
            say(f"not verified: {exc}")
    files = export_trials(study, cfg.output)
    frontier = frontier_rows(study)
    finished_after = sum(1 for t in study.get_trials(deepcopy=False) if counts_as_trial(t))
    hv = study_hypervolume(study)
    files.update({"storage": cfg.storage, "study_name": cfg.name, "cache": cfg.cache or ""})
    return SearchResult(study=study, frontier=frontier, dropped=dropped_rows(study), n_trials=finished_after,
                        new_trials=finished_after - finished, interrupted=interrupted,
                        evaluations=dict(evaluator.counts) | ({"cache_hits": cache.hits} if cache else {})
                        | ({f"states_{k}": v for k, v in evaluator.states.counts.items()} if evaluator.states else {})
                        | ({f"screen_{k}": v for k, v in screen.counts.items()} if screen else {}),
                        hypervolume=hv, files=files, teacher=teacher, n_plans=len(_study_plans(study)))


def _study_plans(study) -> set[str]:
    return {t.user_attrs.get("plan") for t in study.get_trials(deepcopy=False) if t.state.name in _FINISHED}


def _stop_at_plans(plans: set[str], n_plans: int) -> Callable:
    """A callback that stops the study once it holds ``n_plans`` distinct plans (``plans``: those it has)."""
    def stop(study, trial) -> None:
        if trial.state.name in _FINISHED:
            plans.add(trial.user_attrs.get("plan"))
        if len(plans) >= n_plans:
            study.stop()

    return stop


def _objective(cfg, evaluator: PlanEvaluator, genome: PlanGenome, teacher: dict, maximize: bool, screen=None):
    def objective(trial):
        trial.set_user_attr("worker", worker_id())  # before the work: a dead worker's trial is recognisable
        plan = genome.suggest(trial)
        strategy = trial.user_attrs.get("strategy")
        # The sampler's proposals are screened against the front and the constraints; the baselines against the
        # constraints only (one far past a bound cannot be on the front, and its full score and timing would
        # take the sampler's time); the teacher, the user's own plans and cached plans never.
        baseline = strategy is not None and strategy not in ("teacher", "user") and bool(screen and screen.constraints)
        if screen is not None and (strategy is None or baseline) and evaluator.lookup(plan) is None:
            verdict = screen.check(plan, [] if baseline else [t.user_attrs["plan"] for t in trial.study.best_trials])
            for k, v in verdict.items():
                trial.set_user_attr(k, v)
            if "screened_by" in verdict:
                import optuna

                if "screen_estimate" in verdict:  # what the sampler's models learn from this plan
                    trial.set_user_attr(ESTIMATES_ATTR, {
                        c.text: c.violation(verdict["screen_estimate"], teacher.get(c.metric))
                        for c in cfg.constraints if c.metric == "quality"})
                    trial.set_user_attr(OBJECTIVE_ESTIMATES_ATTR,
                                        objective_estimates(cfg.objectives, verdict["screen_estimate"]))
                trial.set_user_attr("plan", str(plan))
                trial.set_user_attr("strategy", strategy or "sampler")
                trial.set_user_attr("screened", True)
                raise optuna.TrialPruned(f"screened out by {verdict['screened_by']}")
        rec = evaluator.evaluate(plan)
        m = _metrics(rec, teacher)
        trial.set_user_attr("plan", rec["plan"])
        if "strategy" not in trial.user_attrs:
            trial.set_user_attr("strategy", "sampler")
        for k, v in m.items():
            trial.set_user_attr(k, v)
        trial.set_user_attr("depths", rec["depths"])
        trial.set_user_attr("timings", rec["timings"])
        trial.set_user_attr("cached", rec["cached"])
        trial.set_user_attr("fingerprint", rec["fingerprint"])
        feasible = True
        for c in cfg.constraints:
            v = c.violation(m[c.metric], teacher.get(c.metric))
            trial.set_constraint(c.text, v)
            trial.set_user_attr(f"constraint:{c.text}", v)
            feasible = feasible and v <= 0
        trial.set_user_attr("feasible", feasible)
        return [m[o] for o in cfg.objectives]

    objective.evaluator = evaluator
    return objective


def fail_dead_trials(study, max_retry: int | None = 3) -> int:
    """Fail the study's RUNNING trials whose worker ran on this host and is gone (SIGKILL, OOM, power), and
    queue each again with the same parameters (so the same plan) as Optuna's heartbeat retry does. Returns how
    many were failed. Trials of other hosts are left to the RDB heartbeat (see :mod:`modsearch.worker`)."""
    import optuna
    from optuna.storages import RetryHeartbeatStaleTrialCallback

    host = socket.gethostname()
    retry = None
    n = 0
    for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        who = t.user_attrs.get("worker", "")
        w_host, _, pid = who.rpartition(":")
        if w_host != host or not pid.isdigit() or _alive(int(pid)):
            continue
        try:
            if not study._storage.set_trial_state_values(t._trial_id, state=optuna.trial.TrialState.FAIL):
                continue
        except optuna.exceptions.UpdateFinishedTrialError:
            continue  # another process failed it first, and queued the retry
        if retry is None:
            with quiet_warnings():  # "experimental" since Optuna 2.8
                retry = RetryHeartbeatStaleTrialCallback(max_retry=max_retry)
        with quiet_warnings():
            retry(study, study._storage.get_trial(t._trial_id))
        n += 1
    return n


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _check_same_study(study, cfg, directions: list[str], identity: dict) -> None:
    stored = study.user_attrs.get("modsearch")
    have = [d.name.lower() for d in study.directions]
    hint = "give another --study-name (or storage) for a new study"
    if have != directions:
        raise UserError(f"study {cfg.name!r} in {cfg.storage} has directions {have}, this config needs "
                        f"{directions}; {hint}")
    if stored is None:
        raise UserError(f"study {cfg.name!r} in {cfg.storage} was not made by modsearch search; {hint}")
    for key, what in (("bank_checksum", "bank"), ("data_hash", "dev data"), ("task", "task"), ("target", "target"),
                      ("objectives", "objectives"), ("constraints", "constraints"), ("genome", "plan space")):
        if stored.get(key) != identity[key]:
            raise UserError(f"study {cfg.name!r} in {cfg.storage} was run with another {what}; its trials are not "
                            f"comparable with this config's; {hint}")


def _load_profile(cfg, bank, target, say, progress):
    from ..cost._profile import LatencyProfile, build_profile

    if not os.path.exists(cfg.profile):
        say(f"no latency profile at {cfg.profile}: measuring one for target {target.name} (once)")
        prof = build_profile(bank, target, progress=progress)
        prof.save(cfg.profile)
    prof = LatencyProfile.load(cfg.profile)
    prof.check_bank(bank)
    prof.check_machine(cfg.allow_foreign_profile)
    if prof.target.get("name") != target.name:
        raise UserError(f"profile {cfg.profile} was measured for target {prof.target_name!r}, the study's target "
                        f"is {target.name!r}")
    return prof


# -- progress --------------------------------------------------------------------------------------------------


# Silence sqlalchemy/alembic chatter Optuna's RDB storage may emit on first creation.
logging.getLogger("alembic").setLevel(logging.WARNING)
