"""Tabular benchmark of the search, in the manner of NAS-Bench: score every plan once, then replay strategies.

Three steps, each a subcommand:

  build     score every plan of the bank's space at a cheap fidelity (teacher-forced loss and token accuracy
            on the dev set, encoder outputs and block prefixes shared; latency predicted from a profile) and
            save the table as CSV with a .meta.json beside it. Resumable (--checkpoint).
  latency   recompute the table's latency column from another profile of the same bank (the latency is additive
            in the blocks, so this takes a second; the quality columns stay).
  fidelity  the rank correlation between the table's fidelity and generated chrF on N random plans.
  replay    run every shipped sampler (seeded with the baselines, as `modsearch search` does), random search
            and the seeded baselines alone against the table, for several seeds, and print the hypervolume
            reached at budgets of 0.5/1/2/5 % of the space, relative to the table's exact front.

Objectives in the replay: teacher-forced loss (minimised; the quality fidelity) and profile latency (minimised),
both divided by the teacher's. Reference point for the hypervolume: the nadir of the exact front plus 10 % of
the front's range on each axis. Why: every exact-front point then adds volume (the extremes too), and the
measure covers the range the front spans instead of rewarding the hopeless plans beyond it, so "0.98 of the
exact hypervolume" means most of the real trade-off curve was found.

  python benchmarks/tabular_search.py build banks/bible-en-fr --data data/bible-en-fr/dev.jsonl --limit 100 \\
      --profile profiles/cpu-1t-b1.json --out benchmarks/results/table-bible-en-fr.csv
  python benchmarks/tabular_search.py latency benchmarks/results/table-bible-en-fr.csv --profile profiles/cpu-1t-b1.json
  python benchmarks/tabular_search.py fidelity benchmarks/results/table-bible-en-fr.csv banks/bible-en-fr \\
      --data data/bible-en-fr/dev.jsonl --plans 100 --limit 100
  python benchmarks/tabular_search.py replay benchmarks/results/table-bible-en-fr.csv --seeds 10

The replay's last line reads: ``default: hv@1%=... hv@5%=... random: hv@1%=... hv@5%=...`` (medians over seeds).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import time

BUDGETS = (0.005, 0.01, 0.02, 0.05)
DEFAULT = ("nsga2", {"population_size": 8})  # what make_sampler("nsga2") gives
TRIAL_FACTOR = 10  # a replay with budget n stops after 10 n trials even if fewer distinct plans came up


# -- build -----------------------------------------------------------------------------------------------------
def cmd_build(a) -> None:
    from modsearch import DevSet, LayerBank
    from modsearch.cost import LatencyProfile
    from modsearch.quality.table import build_table, save_table

    bank = LayerBank.load(a.bank)
    fields = bank.manifest.get("task", {})
    dev = DevSet.load(a.data, source_field=a.source_field or fields.get("source_field"),
                      target_field=a.target_field or fields.get("target_field"), limit=a.limit)
    profile = LatencyProfile.load(a.profile) if a.profile else None
    checkpoint = a.checkpoint or a.out + ".part.jsonl"
    resumed = _checkpointed_plans(checkpoint)
    t0 = time.perf_counter()
    table = build_table(bank, dev, profile, batch_size=a.batch_size, checkpoint=checkpoint)
    took = time.perf_counter() - t0
    meta = {"bank": os.path.relpath(a.bank), "bank_checksum": bank.checksum, "data": os.path.relpath(a.data),
            "data_hash": dev.content_hash, "examples": len(dev), "fidelity": "teacher-forced loss, token accuracy",
            "profile": os.path.relpath(a.profile) if a.profile else None,
            "profile_fingerprint": profile.fingerprint if profile else None, "depths": bank.space().depths,
            "modules": [sorted(map(list, m)) for m in bank.space().modules], "drops": True,
            "teacher": str(bank.teacher_plan()), "plans": len(table), "build_seconds": round(took, 1)}
    if resumed:  # the seconds are this run's alone; the plans scored before it took time not recorded here
        meta.update({"build_seconds": None, "build_seconds_this_run": round(took, 1), "resumed_plans": resumed})
    save_table(table, a.out, meta)
    print(f"{len(table)} plans in {took / 60:.1f} min -> {a.out}")


def _checkpointed_plans(path: str) -> int:
    """How many plans a build checkpoint already holds (0 if there is none)."""
    if not os.path.exists(path):
        return 0
    with open(path) as f:
        return sum(len(json.loads(line).get("rows", ())) for line in f if line.strip())


# -- latency ---------------------------------------------------------------------------------------------------
def cmd_latency(a) -> None:
    from modsearch.cost._profile import LatencyProfile, _predict
    from modsearch.quality.table import load_table, save_table

    table, meta = load_table(a.table)
    profile = LatencyProfile.load(a.profile)
    if profile.bank_checksum != meta["bank_checksum"]:
        sys.exit("tabular_search: error: the profile was measured on another bank than the table's")
    table["profile_latency_ms"] = [_predict(profile, p) * 1000 for p in table["plan"]]
    meta.update({"profile": os.path.relpath(a.profile), "profile_fingerprint": profile.fingerprint,
                 "profile_created": profile.created})
    save_table(table, a.table, meta)
    print(f"{len(table)} plans: latency from {a.profile} ({profile.created}), "
          f"{table['profile_latency_ms'].min():.1f}-{table['profile_latency_ms'].max():.1f} ms")


# -- fidelity --------------------------------------------------------------------------------------------------
def cmd_fidelity(a) -> None:
    from modsearch import DevSet, LayerBank
    from modsearch.cost import spearman
    from modsearch.quality import QualityTask, score_plan
    from modsearch.quality.table import load_table

    table, meta = load_table(a.table)
    bank = LayerBank.load(a.bank)
    if bank.checksum != meta["bank_checksum"]:
        sys.exit("tabular_search: error: the table was built on another bank")
    fields = bank.manifest.get("task", {})
    dev = DevSet.load(a.data, source_field=fields.get("source_field"), target_field=fields.get("target_field"),
                      limit=a.limit)
    task = QualityTask("translation", metric="chrf", max_new_tokens=a.max_new_tokens, batch_size=50)
    plans = [str(p) for p in bank.space().sample(a.plans, seed=a.seed)]
    rows = table.set_index("plan").loc[plans]
    chrf = []
    from tqdm.auto import tqdm

    for p in tqdm(plans, desc="generating", unit="plan"):
        chrf.append(score_plan(bank, p, dev, task).value)
    rho_loss = spearman([-x for x in rows["loss"]], chrf)
    rho_acc = spearman(list(rows["token_accuracy"]), chrf)
    out = {"plans": a.plans, "examples": len(dev), "spearman_neg_loss_chrf": rho_loss,
           "spearman_token_accuracy_chrf": rho_acc, "chrf": dict(zip(plans, chrf))}
    if a.json:
        with open(a.json, "w") as f:
            json.dump(out, f, indent=1)
    print(f"fidelity over {a.plans} random plans ({len(dev)} dev examples): "
          f"spearman(-loss, chrF)={rho_loss:.3f} spearman(token_accuracy, chrF)={rho_acc:.3f}")


# -- replay ----------------------------------------------------------------------------------------------------
def _losses(table, teacher: str):
    t = table.set_index("plan").loc[teacher]
    lat = "profile_latency_ms" if table["profile_latency_ms"].notna().all() else "params"
    return {p: (lo / t["loss"], c / t[lat]) for p, lo, c in zip(table["plan"], table["loss"], table[lat])}, lat


def _reference(front: list[tuple[float, ...]]) -> list[float]:
    lo = [min(p[k] for p in front) for k in range(len(front[0]))]
    hi = [max(p[k] for p in front) for k in range(len(front[0]))]
    return [h + 0.1 * (h - l) for h, l in zip(hi, lo)]


def _space(meta):
    from modsearch.plan import PlanSpace

    return PlanSpace(meta["depths"], [{tuple(x) for x in m} for m in meta["modules"]], drops=meta["drops"])


def run_strategy(table_path: str, strategy: str, settings: dict, seed: int, n_max: int, seeded: bool,
                 trial_factor: int = TRIAL_FACTOR, max_loss: float | None = None) -> dict:
    """``points``: the objective values of each *distinct* plan one replay evaluates, in order (plans looked up
    in the table); ``first_trial``: the trial that proposed each first; ``trials``: all trials run; ``seeds``:
    how many of the first points are enqueued baselines. With ``max_loss`` (teacher-normalised), a plan whose
    loss is above it is infeasible (``trial.set_constraint``, as a study's quality constraint) and counts no
    hypervolume; ``feasible`` flags each point. A plan the
    sampler proposes again is a cache hit in a real search (it costs no model time), so the budget counts
    distinct plans; a replay also stops after trial_factor x n_max trials, should a sampler keep repeating itself
    (its later budgets then score the plans it did find)."""
    import optuna

    from modsearch.plan import PlanGenome
    from modsearch.search import make_sampler, seed_plans
    from modsearch.quality.table import load_table

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    table, meta = load_table(table_path)
    values, _ = _losses(table, meta["teacher"])
    space = _space(meta)
    genome = PlanGenome(space, ["encoder", "decoder"])
    ok = (lambda v: True) if max_loss is None else (lambda v: v[0] <= max_loss)
    seeds = seed_plans(None, space, ["teacher", "uniform", "speed-first", "size-first", "drop-alternate",
                                     "drop-one"]) if seeded else []
    if strategy == "baselines":
        pts = list({str(p): values[str(p)] for p, _ in seeds}.values())
        return {"points": pts, "first_trial": list(range(1, len(pts) + 1)), "trials": len(seeds),
                "feasible": [ok(v) for v in pts], "seeds": len(pts)}
    study = optuna.create_study(directions=["minimize", "minimize"],
                                sampler=make_sampler(strategy, settings, seed=seed, genome=genome))
    for plan, _ in seeds:
        study.enqueue_trial(genome.to_params(plan))
    out, firsts, seen = [], [], set()

    def objective(trial):
        key = str(genome.suggest(trial))
        v = values[key]
        trial.set_user_attr("plan", key)
        if max_loss is not None:
            trial.set_constraint("loss", v[0] - max_loss)
        if key not in seen:
            seen.add(key)
            out.append(v)
            firsts.append(trial.number + 1)
            if len(out) >= n_max:
                trial.study.stop()
        return v

    study.optimize(objective, n_trials=trial_factor * n_max)
    return {"points": out, "first_trial": firsts, "trials": len(study.trials), "feasible": [ok(v) for v in out],
            "seeds": len({str(p) for p, _ in seeds})}


def hv_at(points: list, budget: int, reference, exact_hv: float, feasible: list | None = None) -> float:
    from modsearch.search import hypervolume

    pts = [p for k, p in enumerate(points[:budget]) if feasible is None or feasible[k]]
    return hypervolume(pts, reference) / exact_hv


def cmd_replay(a) -> None:
    from joblib import Parallel, delayed

    from modsearch.quality.table import load_table
    from modsearch.search import hypervolume, pareto_front

    table, meta = load_table(a.table)
    values, cost = _losses(table, meta["teacher"])
    pts = [v for v in values.values() if a.max_loss is None or v[0] <= a.max_loss]
    front = [pts[i] for i in pareto_front(pts)]
    ref = _reference(front)
    exact = hypervolume(front, ref)
    n = len(table)
    budgets = [int(b) for b in a.budgets.split(",")] if a.budgets else [max(1, round(b * n)) for b in BUDGETS]
    print(f"table: {n} plans, exact front {len(front)} plans, objectives loss and {cost} (teacher-normalised), "
          f"reference point {ref[0]:.3f}, {ref[1]:.3f} (front nadir + 10 % of its range); budgets {budgets}"
          + (f"; feasible: loss <= {a.max_loss} x the teacher's ({len(pts)} plans)" if a.max_loss else ""))
    strategies = [("default", DEFAULT[0], DEFAULT[1], True), ("evolve", "evolve", {}, True),
                  ("nsga3", "nsga3", {"population_size": 16}, True),
                  ("tpe", "tpe", {}, True), ("gp", "gp", {}, True), ("random", "random", {}, False),
                  ("random+seeds", "random", {}, True)]
    for v in a.variant or []:
        strategies.append(_variant(v))
    if a.strategies:
        keep = a.strategies.split(",") + [_variant(v)[0] for v in a.variant or []]
        strategies = [s for s in strategies if s[0] in keep]
    jobs = []
    for label, name, settings, seeded in strategies:
        cap = budgets[-1] if name != "gp" else budgets[min(a.gp_budget_index, len(budgets) - 1)]
        for seed in range(a.seeds):
            jobs.append({"label": label, "seed": seed, "sampler": name, "settings": settings, "seeded": seeded,
                         "cap": cap, "trial_factor": a.trial_factor, "max_loss": a.max_loss})
    jobs.sort(key=lambda j: j["sampler"] == "gp")  # the slow one last, so the others are done if it is stopped
    done = _load_checkpoint(a.checkpoint)
    todo = [j for j in jobs if _job_key(j) not in done]
    if done:
        print(f"checkpoint {a.checkpoint}: {len(jobs) - len(todo)} of {len(jobs)} runs done already", flush=True)
    t0 = time.perf_counter()
    ck = open(a.checkpoint, "a") if a.checkpoint else None
    try:
        for job, res, took_run in Parallel(n_jobs=a.jobs, return_as="generator_unordered")(
                delayed(_run_job)(a.table, j) for j in todo):
            done[_job_key(job)] = {**job, **res, "seconds": took_run}
            print(f"  {job['label']} seed {job['seed']}: {len(res['points'])} plans in {res['trials']} trials, "
                  f"{took_run:.0f} s", flush=True)
            if ck:
                ck.write(json.dumps(done[_job_key(job)]) + "\n")
                ck.flush()
    finally:
        if ck:
            ck.close()
    took = time.perf_counter() - t0
    baseline = run_strategy(a.table, "baselines", {}, 0, 0, True, max_loss=a.max_loss)
    rows, trials, needed, infeasible = {}, {}, {}, {}
    for job in jobs:
        run = done[_job_key(job)]
        rows.setdefault(job["label"], []).append(
            [hv_at(run["points"], b, ref, exact, run.get("feasible")) if b <= job["cap"] else math.nan
             for b in budgets])
        own = run.get("feasible", [])[run.get("seeds", 0) if job["seeded"] else 0:budgets[-1]]
        infeasible.setdefault(job["label"], []).append(sum(not f for f in own) / len(own) if own else math.nan)
        trials.setdefault(job["label"], []).append((len(run["points"]), run["trials"], job["cap"]))
        firsts = run.get("first_trial")  # absent from checkpoints written before it was recorded
        needed.setdefault(job["label"], []).append(
            [None if not firsts or b > job["cap"] else firsts[b - 1] if b <= len(firsts) else math.inf
             for b in budgets])
    head = "strategy        " + " ".join((f"hv@{b}" if a.budgets else f"hv@{f * 100:g}%").rjust(10)
                                         for b, f in zip(budgets, BUDGETS if not a.budgets else budgets))
    print(head)
    summary = {}
    for label, runs in rows.items():
        med = [statistics.median(r[k] for r in runs) if not math.isnan(runs[0][k]) else math.nan
               for k in range(len(budgets))]
        summary[label] = med
        stalled = sum(found < cap for found, _n, cap in trials[label])
        note = f"  ({stalled} of {len(runs)} runs found fewer distinct plans than the budget)" if stalled else ""
        print(f"{label:<16}" + " ".join(("-" if math.isnan(m) else f"{m:.4f}").rjust(10) for m in med) + note)
    print("trials a study runs to evaluate that many distinct plans (median; a re-proposed plan is a trial "
          "served from the cache; inf: not within the trial cap)")
    print("strategy        " + " ".join(f"{b:,} plans".rjust(10) for b in budgets))
    trials_summary = {}
    for label, runs in needed.items():
        med = [None if any(r[k] is None for r in runs) else statistics.median(r[k] for r in runs)
               for k in range(len(budgets))]
        trials_summary[label] = med
        print(f"{label:<16}" + " ".join(("-" if m is None else f"{m:g}").rjust(10) for m in med))
    if a.max_loss is not None:
        print("share of the sampler's own plans (after the seeds, up to the largest budget) that are infeasible, "
              "median: " + ", ".join(f"{k} {statistics.median(v):.2f}" for k, v in infeasible.items()))
    base_hv = hv_at(baseline["points"], len(baseline["points"]), ref, exact, baseline["feasible"])
    baseline_pts = baseline["points"]
    print(f"{'baselines alone':<16}{base_hv:>10.4f}  ({len(baseline_pts)} seeded plans; the same at every budget)")
    print(f"medians over {a.seeds} seeds; gp capped at {budgets[min(a.gp_budget_index, len(budgets) - 1)]} plans "
          f"(its fit grows cubically with the trials); a run stops after {a.trial_factor} x its budget in trials; "
          f"replay took {took:.0f} s on {a.jobs} processes" + (" (this invocation)" if len(todo) < len(jobs) else ""))
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"budgets": budgets, "reference": ref, "exact_hv": exact, "front": len(front),
                       "medians": summary, "baselines": base_hv, "runs": rows, "seeds": a.seeds,
                       "trial_factor": a.trial_factor,
                       "distinct_and_trials": {k: [list(x) for x in v] for k, v in trials.items()},
                       "trials_to_budget": {k: [m if m is None or math.isfinite(m) else "inf" for m in v]
                                            for k, v in trials_summary.items()}}, f, indent=1)
    d, r = summary.get("default"), summary.get("random")
    if d and r and not a.budgets:
        print(f"default: hv@1%={d[1]:.3f} hv@5%={d[3]:.3f} random: hv@1%={r[1]:.3f} hv@5%={r[3]:.3f}")


def _job_key(job: dict) -> str:
    return json.dumps({k: job.get(k) for k in ("label", "seed", "sampler", "settings", "seeded", "cap", "trial_factor",
                                                "max_loss") if k != "max_loss" or job.get(k) is not None},
                      sort_keys=True)


def _run_job(table: str, job: dict):
    t = time.perf_counter()
    res = run_strategy(table, job["sampler"], job["settings"], job["seed"], job["cap"], job["seeded"],
                       job["trial_factor"], job.get("max_loss"))
    return job, res, time.perf_counter() - t


def _load_checkpoint(path: str | None) -> dict:
    """Finished runs from an earlier, interrupted replay (one JSON object per line; a torn last line is skipped)."""
    done = {}
    if path and os.path.exists(path):
        with open(path) as f:
            for line in f:
                try:
                    run = json.loads(line)
                    done[_job_key(run)] = run
                except (json.JSONDecodeError, KeyError):
                    continue
    return done


def _variant(text: str) -> tuple:
    """``label=sampler:key=value,key=value`` (values parsed as JSON when they parse) -> a strategy row."""
    label, _, rest = text.partition("=")
    name, _, opts = rest.partition(":")
    settings = {}
    for kv in filter(None, opts.split(",")):
        k, _, v = kv.partition("=")
        try:
            settings[k] = json.loads(v)
        except json.JSONDecodeError:
            settings[k] = v
    return (label, name, settings, True)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build", help="score every plan once and save the table")
    b.add_argument("bank")
    b.add_argument("--data", required=True)
    b.add_argument("--limit", type=int, default=100)
    b.add_argument("--source-field")
    b.add_argument("--target-field")
    b.add_argument("--profile")
    b.add_argument("--batch-size", type=int, default=25, help="length-sorted batches: small ones waste less on padding")
    b.add_argument("--checkpoint")
    b.add_argument("--out", required=True)
    lt = sub.add_parser("latency", help="recompute the latency column from another profile")
    lt.add_argument("table")
    lt.add_argument("--profile", required=True)
    f = sub.add_parser("fidelity", help="rank correlation of the table's fidelity with generated chrF")
    f.add_argument("table")
    f.add_argument("bank")
    f.add_argument("--data", required=True)
    f.add_argument("--plans", type=int, default=100)
    f.add_argument("--limit", type=int, default=100)
    f.add_argument("--max-new-tokens", type=int, default=64)
    f.add_argument("--seed", type=int, default=1)
    f.add_argument("--json")
    r = sub.add_parser("replay", help="replay search strategies against the table")
    r.add_argument("table")
    r.add_argument("--seeds", type=int, default=10)
    r.add_argument("--jobs", type=int, default=2)
    r.add_argument("--strategies", help="comma-separated subset: default,evolve,nsga3,tpe,gp,random,random+seeds")
    r.add_argument("--budgets", metavar="N,N,...", help="budgets in distinct plans (default: 0.5/1/2/5 %% of the "
                   "table)")
    r.add_argument("--max-loss", type=float, metavar="X", help="a quality constraint: plans whose loss is above X "
                   "times the teacher's are infeasible (they count no hypervolume; the exact front is the feasible "
                   "one)")
    r.add_argument("--variant", action="append", metavar="LABEL=SAMPLER:K=V,...",
                   help="also replay a sampler with other settings, seeded, e.g. nsga2-p32=nsga2:population_size=32")
    r.add_argument("--gp-budget-index", type=int, default=1, help="gp runs up to this budget (0=0.5%%, 1=1%%...)")
    r.add_argument("--trial-factor", type=int, default=TRIAL_FACTOR,
                   help="a run stops after this many times its budget in trials (default %(default)s)")
    r.add_argument("--checkpoint", help="JSONL of finished runs: an interrupted replay run again resumes from it")
    r.add_argument("--json")
    a = ap.parse_args(argv)
    {"build": cmd_build, "latency": cmd_latency, "fidelity": cmd_fidelity, "replay": cmd_replay}[a.cmd](a)


if __name__ == "__main__":
    main()
