"""Which search strategy finds the frontier of a deep bank in a study's budget (issue 33), at a cheap fidelity.

Every plan any strategy proposes is scored once, at the fidelity of the study's screen: the teacher-forced
perplexity of the first ``--windows`` dev texts (each cut to its first window; seq2seq banks: the first dev
examples' references), kept in a JSON cache on disk (plan -> perplexity; keyed by the bank, dev data and
windows, so another run of this script reuses it). Costs are those known without timing: FLOPs
(:class:`~modsearch.cost.LayerFlops`), params, and with ``--profile`` (``modsearch profile``) the profile's
predicted latency in place of a measured ``latency_ms``; all additive in the blocks. The objectives are the
study's: the sampler is given them in the study's units, as in a study; the figures below divide each by the
teacher's. Its constraints on quality, params and FLOPs apply (quality read on the cheap perplexity, relative to
the teacher's); others are ignored and named.

1. A reference front: one long run of every strategy at ``--reference-factor`` times the budget; the reference
   is the front of every feasible plan in the cache (these runs, the runs below, earlier invocations'); the
   long runs' cost (distinct plans, seconds) is printed.
2. Each strategy at the study's budget (its ``n_plans``, else ``n_trials``, at most 150; ``--budget``) for
   ``--seeds`` seeds, seeded with the study's baselines within ``max_share`` as ``modsearch search`` does.
   Printed per strategy, median [min, max] over seeds: hypervolume of its feasible plans relative to the
   reference front's (reference point: the front's nadir plus 10 % of its range on each axis, as in
   tabular_search.py); the share of the sampler's own proposals that are infeasible; the share of its final
   front's points that are the sampler's own plans, not baselines.
   With the study's ``[screen]`` (unless ``--no-screen``), each run screens as ``modsearch search`` does
   (:class:`~modsearch.search.Screen`, the study's margin and perplexity constraints): a proposal whose cheap
   perplexity a front plan of no higher cost beats by more than the margin, or whose estimate breaks a bound by
   more than the margin (a baseline: the bound only), becomes a pruned trial; the sampler then learns its
   constraint estimate, not its objectives, as in a study. A run's plans are its distinct trials, screened or
   scored (a study's ``n_trials``); how many of them passed the screen (were "fully scored") is printed.
3. With ``--verify-rounds N``: the reference front's plans and every run's front timed against the teacher on
   the study's target in N paired rounds (:func:`verified_ratios`), and each strategy's hypervolume given again
   with those speed-ups (:func:`verified_table`).

  python benchmarks/deep_search.py studies/smollm2-135m.toml --windows 4 --seeds 5 --reference-factor 4 \\
      --profile profiles/smollm2-135m-cpu-1t-b1-lm.json --verify-rounds 20 \\
      --cache benchmarks/results/deep-search-smollm2-135m.cache.json --json benchmarks/results/deep-search-smollm2-DATE.json
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from tabular_search import TRIAL_FACTOR, _reference, _variant  # noqa: E402

#: label -> (sampler, settings, seeded with the baselines)
STRATEGIES = {"evolve": ("evolve", {}, True), "evolve-local": ("evolve", {"acquisition": "hvi-local"}, True),
              "evolve-edits": ("evolve", {"acquisition": "random"}, True),
              "evolve-plain": ("evolve", {"predict_constraints": False, "acquisition": "random"}, True),
              "nsga2": ("nsga2", {}, True), "tpe": ("tpe", {}, True), "random+seeds": ("random", {}, True),
              "seeds": (None, {}, True)}
_COSTS = ("params", "params_ratio", "flops", "flops_ratio")


class CheapStudy:
    """A study's plans at the cheap fidelity: :meth:`losses` gives teacher-normalised objectives and the
    constraint violations of a plan, from the disk cache when it has them."""

    def __init__(self, cfg, windows: int, cache_path: str | None, profile: str | None = None, log=print):
        from modsearch import LayerBank
        from modsearch.cost import LatencyProfile
        from modsearch.plan import PlanGenome
        from modsearch.search import PlanEvaluator, Screen

        self.cfg, self.log = cfg, log
        self.bank = LayerBank.load(cfg.bank)
        self.space = self.bank.space(drops=cfg.drops, granularities=cfg.granularities)
        self.genome = PlanGenome(self.space, self.bank.stack_names)
        prof = LatencyProfile.load(profile) if profile else None
        evaluator = PlanEvaluator(self.bank, cfg.load_devset(), cfg.quality_task(), cfg.target, profile=prof,
                                  scoring_threads=cfg.scoring_threads or "auto",
                                  prefix_memory_mb=cfg.prefix_memory_mb)
        # The study's screen over this fidelity; its constraint estimate (teacher x cheap ratio) needs the
        # teacher's figure, which at this fidelity is the teacher's cheap perplexity (set below).
        self.screen = Screen(evaluator, cfg.objectives, windows, cfg.screen_margin, constraints=cfg.constraints,
                             teacher_quality=1.0)
        self.key = {"bank": self.bank.checksum, "data": self.screen.devset.content_hash,
                    "task": self.screen.task.to_json()}
        self.cache_path, self.cache, self.new = cache_path, {}, 0
        if cache_path and os.path.exists(cache_path):
            with open(cache_path) as f:
                stored = json.load(f)
            if stored.get("key") == self.key:
                self.cache = stored["perplexity"]
            else:
                log(f"cache {cache_path} holds another bank, dev set or fidelity: not used")
        self.seconds, self._seeds = 0.0, None
        teacher = self.bank.teacher_plan()
        self.teacher = [self.perplexity(teacher)] + self.screen.costs(teacher)
        self.screen.teacher_quality = self.teacher[0]
        self.constraints, ignored = [], []
        for c in cfg.constraints:
            (self.constraints if c.metric in ("quality",) + cfg.quality_task().metrics + _COSTS else ignored).append(c)
        if ignored:
            log(f"ignored (not computed at this fidelity): {', '.join(c.text for c in ignored)}")

    def perplexity(self, plan) -> float:
        key = str(plan)
        if key not in self.cache:
            t = time.perf_counter()
            self.cache[key] = self.screen.cheap(plan)
            self.seconds += time.perf_counter() - t
            self.new += 1
            if self.new % 25 == 0:
                self.save()
        self.screen.know(key, self.cache[key])
        return self.cache[key]

    def save(self) -> None:
        if self.cache_path:
            from modsearch._io import write_json

            write_json(self.cache_path, {"key": self.key, "perplexity": self.cache})

    def losses(self, plan) -> tuple[list[float], list[float]]:
        norm, violations, _ = self.figures(plan)
        return norm, violations

    def figures(self, plan) -> tuple[list[float], list[float], list[float]]:
        """The plan's objectives divided by the teacher's, its constraint violations, and its objectives as a
        study states them (perplexity, ms, FLOPs: what the sampler is given, as in a study)."""
        values = [self.perplexity(plan)] + self.screen.costs(plan)
        norm = [v / t for v, t in zip(values, self.teacher)]
        violations = []
        for c in self.constraints:
            if c.metric in _COSTS:
                k = c.metric.removesuffix("_ratio")
                if k not in self.cfg.objectives[1:]:
                    continue  # a cost this study does not optimise: not computed here
                i = 1 + self.cfg.objectives[1:].index(k)
                value, teacher = (norm[i], 1.0) if c.metric.endswith("_ratio") else (values[i], self.teacher[i])
            else:
                value, teacher = values[0], self.teacher[0]
            violations.append(c.violation(value, teacher))
        return norm, violations, values

    def seeds(self, budget: int) -> list:
        from modsearch.search import EvaluationCache
        from modsearch.search._seeds import limit_seeds, seed_plans

        if self._seeds is None:  # measured once, and kept in the study's cache as a study keeps them
            self._seeds = seed_plans(self.bank, self.space, self.cfg.seed_strategies,
                                     calibration=self.cfg.calibration_texts(), log=self.log,
                                     cache=EvaluationCache(self.cfg.cache) if self.cfg.cache else None)
            self._seeds += [(self.bank.plan(p), "user") for p in self.cfg.seed_plans]
        return limit_seeds(self._seeds, max(1, int(self.cfg.seed_share * budget)))


def run(cheap: CheapStudy, label: str, seed: int, budget: int, seeds: list, screen: bool = False) -> dict:
    """One strategy's run: the distinct plans it evaluated, in order, with their losses, feasibility, whether a
    baseline proposed them and (``screen``) whether the study's screen stopped them."""
    import optuna

    from modsearch.search import make_sampler, pareto_front
    from modsearch.search._surrogate import ESTIMATES_ATTR, OBJECTIVE_ESTIMATES_ATTR, objective_estimates

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    name, settings, seeded = STRATEGIES[label]
    if name == cheap.cfg.sampler:
        settings = {**cheap.cfg.sampler_settings, **settings}
    rows, seen = [], set()
    for plan, _ in seeds if seeded else []:
        if str(plan) not in seen and len(rows) < budget:
            seen.add(str(plan))
            norm, viol = cheap.losses(plan)
            rows.append({"plan": str(plan), "losses": norm, "feasible": all(v <= 0 for v in viol), "seed": True,
                         "screened": screen and "screened_by" in cheap.screen.check(plan, [])})
    if name is None:
        return {"label": label, "seed": seed, "rows": rows}
    study = optuna.create_study(directions=["minimize"] * len(cheap.cfg.objectives),
                                sampler=make_sampler(name, settings, seed=seed, genome=cheap.genome))
    for plan, _ in seeds if seeded else []:
        study.enqueue_trial(cheap.genome.to_params(plan), user_attrs={"baseline": True})
    scored = {r["plan"] for r in rows if not r["screened"]}  # what a study would have fully scored

    def objective(trial):
        plan = cheap.genome.suggest(trial)
        key, baseline = str(plan), bool(trial.user_attrs.get("baseline"))
        norm, viol, values = cheap.figures(plan)
        verdict = {}
        if screen and key not in scored:  # as a study screens: proposals against its feasible front
            ok = [] if baseline else [r for r in rows if r["plan"] in scored and r["feasible"]]
            verdict = cheap.screen.check(plan, [ok[i]["plan"] for i in pareto_front([r["losses"] for r in ok])])
        if key not in seen:
            seen.add(key)
            rows.append({"plan": key, "losses": norm, "feasible": all(v <= 0 for v in viol), "seed": False,
                         "screened": "screened_by" in verdict})
            if len(rows) >= budget:
                trial.study.stop()
        if "screened_by" in verdict:  # a pruned trial: its estimates, as the study records them
            trial.set_user_attr("plan", key)
            trial.set_user_attr("screened", True)
            if "screen_estimate" in verdict:
                trial.set_user_attr(ESTIMATES_ATTR, {str(k): v for k, (c, v) in enumerate(zip(cheap.constraints, viol))
                                                     if c.metric == "quality"})
                trial.set_user_attr(OBJECTIVE_ESTIMATES_ATTR,
                                    objective_estimates(cheap.cfg.objectives, verdict["screen_estimate"]))
            raise optuna.TrialPruned(f"screened out by {verdict['screened_by']}")
        scored.add(key)
        for k, v in enumerate(viol):
            trial.set_constraint(str(k), v)
        return values

    if len(rows) < budget:
        study.optimize(objective, n_trials=TRIAL_FACTOR * budget)
    return {"label": label, "seed": seed, "rows": rows}


def logged(cheap: CheapStudy, label: str, seed: int, budget: int, seeds: list, screen: bool = False) -> dict:
    """:func:`run`, with a line on what it cost (the run's own scoring is what the cache did not hold)."""
    t, n, s = time.perf_counter(), cheap.new, cheap.seconds
    out = run(cheap, label, seed, budget, seeds, screen)
    passed = f" ({sum(not r['screened'] for r in out['rows'])} past the screen)" if screen else ""
    print(f"  {label} seed {seed}: {len(out['rows'])} plans{passed}, {cheap.new - n} scored at this fidelity "
          f"({cheap.seconds - s:.0f} s), {time.perf_counter() - t:.0f} s", flush=True)
    return out


def verified_table(cheap: CheapStudy, pool: dict, runs: list, labels: list, rounds: int) -> dict:
    """The hypervolumes again with verified speed-ups: the plans of the reference front and of every run's
    front (by the profile) timed against the teacher (:func:`verified_ratios`), their latency replaced by the
    measured ratio; the reference is the front of all of them; each run's hypervolume is that of its timed plans
    (a plan the profile puts off every front is taken to stay off)."""
    from modsearch.search import hypervolume, pareto_front

    if "latency_ms" not in cheap.cfg.objectives:
        raise SystemExit("deep_search: error: --verify-rounds needs a study with a latency_ms objective")
    k = cheap.cfg.objectives.index("latency_ms")

    def front_plans(rows: dict) -> list[str]:
        names = list(rows)
        return [names[i] for i in pareto_front([rows[n] for n in names])] if names else []

    ref_plans = front_plans(pool)
    run_fronts = [front_plans({r["plan"]: r["losses"] for r in x["rows"] if r["feasible"] and not r.get("screened")})
                  for x in runs]
    plans = list(dict.fromkeys([*ref_plans, *(p for f in run_fronts for p in f)]))
    t = time.perf_counter()
    print(f"verifying {len(plans)} plans (the reference front's {len(ref_plans)} and every run's front) on "
          f"{cheap.cfg.target}, {rounds} paired rounds", flush=True)
    ratios = verified_ratios(cheap, plans, rounds)
    teacher = str(cheap.bank.teacher_plan())

    def verified(p: str) -> list[float]:
        losses = list(pool[p])
        losses[k] = 1.0 if p == teacher else ratios[p]["ratio"]
        return losses

    pts = [verified(p) for p in plans]
    front = [pts[i] for i in pareto_front(pts)]
    reference = _reference(front)
    ref_hv = hypervolume(front, reference)
    table = {}
    print(f"{'strategy':<14}{'hv / reference, verified':>30}")
    for label in labels:
        # A run's points: every feasible plan of it that was timed (its own front, and plans of it on another
        # run's front or the reference front), so a run holding the baselines holds their verified front too.
        got = [hypervolume([verified(r["plan"]) for r in x["rows"] if r["feasible"] and not r.get("screened") and
                            (r["plan"] in ratios or r["plan"] == teacher)], reference) / ref_hv
               if ref_hv > 0 else float("nan") for x in runs if x["label"] == label]
        table[label] = got
        print(f"{label:<14}{statistics.median(got):>14.4f} [{min(got):.3f}, {max(got):.3f}]")
    widest = max((r["half_width"] for r in ratios.values()), default=0.0)
    print(f"verified in {time.perf_counter() - t:.0f} s; widest 95 % interval of a ratio: ±{widest:.1%}")
    return {"rounds": rounds, "plans": {p: ratios.get(p) for p in plans}, "front": front, "point": reference,
            "hv": ref_hv, "runs": table, "seconds": time.perf_counter() - t}


def scores(result: dict, reference: list[float], reference_hv: float) -> dict:
    from modsearch.search import hypervolume, pareto_front

    feasible = [r for r in result["rows"] if r["feasible"] and not r.get("screened")]  # a study's front: scored
    own = [r for r in result["rows"] if not r["seed"]]
    front = [feasible[i] for i in pareto_front([r["losses"] for r in feasible])] if feasible else []
    return {"hv": hypervolume([r["losses"] for r in feasible], reference) / reference_hv,
            "infeasible": sum(not r["feasible"] for r in own) / len(own) if own else float("nan"),
            "own_front": sum(not r["seed"] for r in front) / len(front) if front else float("nan"),
            "plans": len(result["rows"]), "scored": sum(not r.get("screened") for r in result["rows"]),
            "front": [r["plan"] for r in front]}  # which plans each run found, for reading a run's shortfall


def verified_ratios(cheap: CheapStudy, plans: list[str], rounds: int, group: int = 12, log=print) -> dict:
    """Each plan's latency ratio to the teacher (plan time / teacher time, with its interval) on the study's
    target, measured as ``modsearch verify`` measures a frontier: in interleaved shuffled rounds of modsearch's
    paired engine, ``group`` plans and the teacher at a time (every group has its own teacher, so the ratios of
    groups measured minutes apart stay on one scale)."""
    import random

    from modsearch.cost import HardwareTarget
    from modsearch.cost._measure import pinned_threads
    from modsearch.cost._paired import measure_paired
    from modsearch.search._evaluator import dev_input_lengths
    from modsearch.search._verify import timing_steps

    target = HardwareTarget.resolve(cheap.cfg.target)
    if target.input_length == "dev":
        target = target.with_input_lengths(dev_input_lengths(cheap.bank, cheap.cfg.load_devset(),
                                                             cheap.cfg.quality_task()))
    teacher, out = str(cheap.bank.teacher_plan()), {}
    todo = [p for p in plans if p != teacher]
    for g in range(0, len(todo), group):
        chunk = [teacher, *todo[g:g + group]]
        steps = timing_steps(cheap.bank, chunk, target)
        with pinned_threads(target.n_threads):
            res = measure_paired(steps, target.protocol, rounds=rounds, rng=random.Random(g))
        for p, r in zip(chunk[1:], res["ratios"][1:]):
            out[p] = r
        del steps
        log(f"  verified {min(g + group, len(todo))}/{len(todo)} plans ({res['rounds']} rounds, "
            f"{res['seconds']:.0f} s)")
    return out


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("study")
    ap.add_argument("--windows", type=int, default=4, help="dev texts (lm) or examples the fidelity scores")
    ap.add_argument("--budget", type=int, help="distinct plans per run (default: the study's, at most 150)")
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--reference-factor", type=int, default=10, help="the reference runs' budget, in budgets (0: no "
                    "long runs; the reference is then the front of the cache's plans)")
    ap.add_argument("--strategies", default=",".join(STRATEGIES), help="comma-separated: %(default)s")
    ap.add_argument("--variant", action="append", metavar="LABEL=SAMPLER:K=V,...",
                    help="another strategy, e.g. evolve-x3=evolve:crossover_prob=0.3 (repeatable)")
    ap.add_argument("--profile", help="a latency profile of the bank (modsearch profile): its prediction stands "
                    "in for latency_ms (else FLOPs do)")
    ap.add_argument("--cache", help="JSON cache of plan -> cheap perplexity (kept between runs)")
    ap.add_argument("--verify-rounds", type=int, default=0, help="also time every plan of the reference front "
                    "and of each run's front against the teacher on the study's target in this many paired rounds, "
                    "and give the hypervolumes with these verified speed-ups (0: off)")
    ap.add_argument("--no-screen", action="store_true", help="do not screen as the study's [screen] would: every "
                    "plan's cheap figure reaches the sampler")
    ap.add_argument("--json", help="write every figure here")
    a = ap.parse_args(argv)
    from modsearch._errors import UserError
    from modsearch.search import StudyConfig, hypervolume, pareto_front

    if a.windows < 1 or a.seeds < 1 or a.reference_factor < 0:
        raise SystemExit("deep_search: error: --windows and --seeds must be >= 1, --reference-factor >= 0")
    from modsearch.cost._paired import rounds_for_interval

    if a.verify_rounds and a.verify_rounds < rounds_for_interval():
        raise SystemExit(f"deep_search: error: --verify-rounds must be 0 or >= {rounds_for_interval()}")
    for v in a.variant or []:
        label, name, settings, seeded = _variant(v)
        STRATEGIES[label] = (name, settings, seeded)
    labels = a.strategies.split(",") + [_variant(v)[0] for v in a.variant or []]
    if not set(labels) <= set(STRATEGIES):
        raise SystemExit(f"deep_search: error: strategies are {', '.join(STRATEGIES)}")
    try:
        cfg = StudyConfig.load(a.study)
        cheap = CheapStudy(cfg, a.windows, a.cache, a.profile)
    except UserError as exc:
        raise SystemExit(f"deep_search: error: {exc}") from None
    budget = a.budget or min(150, cfg.n_plans or cfg.n_trials or 150)
    t0 = time.perf_counter()
    seeds = cheap.seeds(budget)
    screen = cfg.screen_windows is not None and not a.no_screen
    print(f"{cfg.name}: {cheap.space.count():,} plans, objectives {', '.join(cfg.objectives)} (cheap: perplexity on "
          f"{len(cheap.screen.devset)} window(s)), budget {budget} plans, {len(seeds)} baselines; "
          + (f"screened as the study does (margin {cfg.screen_margin:.0%}, at this fidelity)" if screen else
             "not screened"), flush=True)

    t_ref, n_before = time.perf_counter(), len(cheap.cache)
    long_runs = [logged(cheap, label, 1000, budget * a.reference_factor, cheap.seeds(budget * a.reference_factor),
                        screen) for label in labels if STRATEGIES[label][0] is not None]
    ref_seconds, ref_plans = time.perf_counter() - t_ref, len({r["plan"] for x in long_runs for r in x["rows"]})
    ref_new = len(cheap.cache) - n_before
    runs = [logged(cheap, label, seed, budget, seeds, screen) for label in labels for seed in range(a.seeds)]
    cheap.save()
    # The reference: the front of every feasible plan ever scored at this fidelity (the cache, which holds every
    # run's plans, this one's and earlier ones'), so runs of separate invocations are judged against one front.
    pool = {}
    for plan in list(cheap.cache):
        norm, viol = cheap.losses(cheap.bank.plan(plan))
        if all(v <= 0 for v in viol):
            pool[plan] = norm
    pts = list(pool.values())
    front = [pts[i] for i in pareto_front(pts)]
    reference = _reference(front)
    ref_hv = hypervolume(front, reference)
    print(f"reference front: {len(front)} plans from {len(pool)} feasible of the {len(cheap.cache)} plans ever "
          f"scored at this fidelity (the cache); the long runs "
          f"({a.reference_factor} x the budget, {len(long_runs)} strategies) evaluated {ref_plans} distinct plans "
          f"({ref_new} new at this fidelity) in {ref_seconds:.0f} s")
    table = {}
    print(f"{'strategy':<14}{'hv / reference':>26}{'infeasible own':>24}{'own share of front':>24}"
          + (f"{'past the screen':>20}" if screen else ""))
    for label in labels:
        got = [scores(x, reference, ref_hv) for x in runs if x["label"] == label]
        table[label] = got
        cells = []
        for k in ("hv", "infeasible", "own_front"):
            vals = [g[k] for g in got if g[k] == g[k]]
            cells.append(f"{statistics.median(vals):.4f} [{min(vals):.3f}, {max(vals):.3f}]" if vals else "-")
        if screen:
            n = [g["scored"] for g in got]
            cells.append(f"{statistics.median(n):.0f} [{min(n)}, {max(n)}]")
        print(f"{label:<14}" + "".join(c.rjust((20 if i == 3 else 24) if i else 26) for i, c in enumerate(cells)))
    took = time.perf_counter() - t0
    print(f"medians [min, max] over {a.seeds} seeds at {budget} plans; {len(cheap.cache)} plans in the cache, "
          f"{cheap.new} scored by this run ({cheap.seconds:.0f} s of scoring); {took:.0f} s in all")
    out = {"command": "python benchmarks/deep_search.py " + " ".join(shlex.quote(x) for x in
                                                             (sys.argv[1:] if argv is None else argv)),
           "study": cfg.name, "budget": budget, "windows": a.windows, "seeds": a.seeds,
           "screen": {"margin": cfg.screen_margin} if screen else None,
           "reference": {"factor": a.reference_factor, "plans": ref_plans, "seconds": ref_seconds,
                         "front": front, "point": reference, "hv": ref_hv},
           "runs": table, "seconds": took}
    if a.verify_rounds:
        out["verified"] = verified_table(cheap, pool, runs, labels, a.verify_rounds)
        out["seconds"] = time.perf_counter() - t0
    if a.json:
        from modsearch._io import write_json

        write_json(a.json, out)
    return out


if __name__ == "__main__":
    main()
