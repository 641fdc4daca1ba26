"""What a search costs beyond running the models: trial overhead, and trials per hour against a naive loop.

The same plans (the study's baselines, then random ones) are evaluated three ways on one dev set:

  naive     for each plan: assemble, generate and score chrF, count FLOPs; no cache, no encoder reuse.
  search    `modsearch search` machinery (an Optuna study, SQLite storage, every plan enqueued), fresh cache.
  cached    the same study run again under a new name against the same cache: every plan is served from it.

Overhead = the trials' wall time (Optuna's start/complete stamps) divided by the models' own generation time
inside them (generate(), plus the encoder pass when it runs apart from generate() for encoder-output reuse). Goal: <= 1.10. The quality-only objective (chrF, FLOPs) is used so that wall time is not
dominated by the latency protocol, which is measurement rather than overhead.

  python benchmarks/search_overhead.py banks/bible-en-fr --data data/bible-en-fr/dev.jsonl --limit 100 --plans 24
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("bank")
    ap.add_argument("--data", required=True)
    ap.add_argument("--limit", type=int, default=100)
    ap.add_argument("--plans", type=int, default=24)
    ap.add_argument("--max-new-tokens", type=int, default=64)
    ap.add_argument("--target", default="cpu-1t-b1")
    ap.add_argument("--source-field", help="default: the bank's task fields")
    ap.add_argument("--target-field")
    ap.add_argument("--json")
    a = ap.parse_args(argv)

    from modsearch import LayerBank
    from modsearch.assembly import assemble
    from modsearch.cost import cost_report
    from modsearch.search import run_search, seed_plans
    from modsearch.quality import score_quality
    from modsearch.search import StudyConfig

    bank = LayerBank.load(a.bank)
    space = bank.space()
    plans = [str(p) for p, _ in seed_plans(bank, space, ["teacher", "uniform", "speed-first", "size-first",
                                                          "drop-alternate"])]
    for p in space.sample(a.plans * 2, seed=7):
        if len(plans) >= a.plans:
            break
        if str(p) not in plans:
            plans.append(str(p))
    plans = plans[: a.plans]
    fields = bank.manifest.get("task", {})
    work = tempfile.mkdtemp(prefix="overhead-")
    raw = {"name": "overhead", "bank": os.path.abspath(a.bank), "target": a.target, "objectives": ["quality", "flops"],
           "seed": 0, "output": os.path.join(work, "out"), "cache": os.path.join(work, "cache"),
           "data": {"path": os.path.abspath(a.data), "source_field": a.source_field or fields.get("source_field", "source"),
                    "target_field": a.target_field or fields.get("target_field", "target"), "limit": a.limit},
           "task": {"task": "translation", "metric": "chrf", "max_new_tokens": a.max_new_tokens, "batch_size": 50},
           "sampler": {"name": "random"}, "seeds": {"strategies": [], "plans": plans},
           "budget": {"n_trials": len(plans)}}
    cfg = StudyConfig.from_dict(raw, base_dir=work)
    devset, task = cfg.load_devset(), cfg.quality_task()

    # naive loop
    t0 = time.perf_counter()
    naive_gen = 0.0
    for p in plans:
        model = assemble(bank, p)
        r = score_quality(model, bank.tokenizer, devset, task, source_prefix=bank.source_prefix)
        naive_gen += r.timings.get("generate", 0.0)
        cost_report(bank, p, a.target, model=model, latency=False, flops=True, memory=False)
    naive_s = time.perf_counter() - t0

    # the search machinery, fresh cache
    t0 = time.perf_counter()
    res = run_search(cfg, progress=False, log=None)
    search_s = time.perf_counter() - t0
    # Trials served from the cache are left out of both sums: their timings are those of the run that filled the
    # cache (the teacher is scored before the study starts, so its trial is one), not of this trial.
    trials = [t for t in res.study.trials if t.state.name == "COMPLETE" and not t.user_attrs.get("cached")]
    wall = sum((t.datetime_complete - t.datetime_start).total_seconds() for t in trials)
    # The model's own time: generate(), and the encoder pass that encoder-output reuse runs apart from it.
    gen = sum(t.user_attrs["timings"]["generate_s"] + t.user_attrs["timings"].get("encode_s", 0.0) for t in trials)

    # again, every plan cached
    t0 = time.perf_counter()
    again = run_search(cfg.override(study_name="overhead-cached"), progress=False, log=None)
    cached_s = time.perf_counter() - t0
    cached = [t for t in again.study.trials if t.state.name == "COMPLETE"]
    n_cached = sum(bool(t.user_attrs.get("cached")) for t in cached)

    n = len(plans)
    out = {"plans": n, "examples": len(devset), "naive_s": naive_s, "naive_generate_s": naive_gen,
           "search_s": search_s, "trial_wall_s": wall, "trial_generate_s": gen, "overhead": wall / gen,
           "cached_s": cached_s, "cached_trials": n_cached, "evaluations": res.evaluations,
           "trials_per_hour": {"naive": 3600 * n / naive_s, "search": 3600 * n / search_s,
                               "cached": 3600 * n / cached_s}}
    print(f"{n} plans, {len(devset)} dev examples, chrF + FLOPs on {a.target}")
    print(f"naive loop : {naive_s:7.1f} s  ({out['trials_per_hour']['naive']:8.0f} trials/h)")
    print(f"search     : {search_s:7.1f} s  ({out['trials_per_hour']['search']:8.0f} trials/h; "
          f"encoder reused {res.evaluations.get('encoder_reused', 0)} times; study setup included)")
    print(f"cached     : {cached_s:7.1f} s  ({out['trials_per_hour']['cached']:8.0f} trials/h; "
          f"{n_cached}/{len(cached)} trials served from the cache)")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(out, f, indent=1, default=str)
    print(f"overhead={wall / gen:.3f} (trial wall {wall:.1f} s / generation {gen:.1f} s) "
          f"speedup_vs_naive={naive_s / search_s:.2f}x cached_speedup={naive_s / cached_s:.0f}x")


if __name__ == "__main__":
    main()
