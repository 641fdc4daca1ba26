"""Benchmark: modsearch against the layer-pruning baselines an LLM user tries first, on the committed test text.

For 1/6, 1/4, 1/3 and 1/2 of the layers removed (at least that share: 3, 5, 6 and 9 of Gemma-3-270M's 18):

- **Block Influence** (ShortGPT): drop the layers with the lowest 1 - cos(input, output);
- **SLEB**: drop layers greedily, each time the one whose removal gives the lowest calibration perplexity;
- **LLM-Streamline**: replace the most redundant contiguous span (highest cos(input, output)) by one trained
  module of the bank;
- **greedy (bank)**: modsearch's ``greedy`` seed, SLEB over the bank: each step takes the drop or module with
  the smallest rise of calibration log-perplexity per layer removed;
- **study best**: the plan of the finished study with the best *dev* perplexity among those removing at least
  that many layers (chosen on dev, reported on test).

Calibration for the three baselines is the study's dev file, as the study's seeds use it. Every plan is
scored on the test text (``--limit`` chapters, windows of the study's context length and stride). The
greedy and study plans and the teacher are then timed on the study's target in interleaved shuffled rounds
(modsearch's paired engine) for their speed-up with a 95 % interval; FLOPs come from one counted teacher run.

    python benchmarks/llm_pruning.py studies/gemma3-270m.toml --limit 8 --json benchmarks/results/llm-pruning.json

Goal (issue 16): at a quarter removed, the modsearch plan keeps test perplexity within 1.3x the teacher's, and
at every depth beats the best layer-dropping baseline widely. Nothing else should run beside it (the timing).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("study", help="the study TOML (its bank, dev text, task and target; its finished trials)")
    p.add_argument("--test", default=os.path.join(ROOT, "data", "web-en", "test.jsonl"))
    p.add_argument("--limit", type=int, default=8, help="test chapters scored (default 8)")
    p.add_argument("--rounds", type=int, default=0, help="paired timing rounds (default: the target's protocol)")
    p.add_argument("--json")
    a = p.parse_args()

    import torch

    from modsearch import LayerBank, UserError, assemble
    from modsearch.cost._measure import LayerFlops, _runner, pinned_threads, prepare, timed_step
    from modsearch.cost._paired import measure_paired, speedup_of
    from modsearch.cost._target import HardwareTarget
    from modsearch.quality._score import score_plan
    from modsearch.results import open_results
    from modsearch.search._config import StudyConfig
    from modsearch.search._seeds import boundary_similarity, pruning_plans

    t_start = time.perf_counter()
    cfg = StudyConfig.load(a.study)
    try:
        res = open_results(a.study)
    except UserError as exc:  # the comparison stands without the study; its column is then left empty
        print(f"no finished study to read ({exc}); the study-best column is left out", flush=True)
        res = None
    bank = LayerBank.load(cfg.bank)
    depth = bank.depths[0]
    task = cfg.quality_task()
    calibration = cfg.calibration_texts() or list(cfg.load_devset().sources)
    test = task.load_devset(a.test, limit=a.limit)
    say = lambda m: print(m, flush=True)  # noqa: E731

    t = time.perf_counter()
    sim = boundary_similarity(bank, calibration)
    say(f"boundary similarity on {len(calibration)} dev texts: {time.perf_counter() - t:.0f} s")
    space, seconds, baselines = bank.space(), {}, {}
    for name, strategy in (("block_influence", "block-influence"), ("sleb", "sleb"),
                           ("streamline", "streamline"), ("greedy", "greedy")):
        t = time.perf_counter()
        baselines[name] = pruning_plans(bank, space, strategy, calibration, lambda: sim, log=say)
        seconds[name] = time.perf_counter() - t
        say(f"{strategy}: {time.perf_counter() - t:.0f} s")
    counts = sorted({k for plans in baselines.values() for k in plans})

    def removed(plan: str) -> int:
        return depth - bank.plan(plan).depths[0]

    trials = [r for r in res.trials if r.get("quality") is not None] if res is not None else []
    rows = []
    for k in counts:
        row = {"removed": k, **{name: str(plans[k]) for name, plans in baselines.items() if k in plans}}
        mine = [r for r in trials if removed(r.plan) >= k]
        if mine:
            best = min(mine, key=lambda r: r.get("quality")) if not res.maximize else \
                max(mine, key=lambda r: r.get("quality"))
            row["modsearch"] = best.plan
            row["modsearch_dev"] = best.get("quality")
            row["modsearch_trial"] = best.number
        rows.append(row)

    teacher = str(bank.teacher_plan())
    scored: dict[str, float] = {}
    kinds = ("block_influence", "sleb", "streamline", "greedy", "modsearch")
    todo = [teacher] + [r[k] for r in rows for k in kinds if k in r]
    t = time.perf_counter()
    for plan in dict.fromkeys(todo):
        scored[plan] = score_plan(bank, plan, test, task).value
        say(f"test perplexity {scored[plan]:10.2f}  {plan}")
    score_s = time.perf_counter() - t

    target = HardwareTarget.resolve(cfg.target)
    flops = LayerFlops(bank, target)
    timed = [teacher] + list(dict.fromkeys(r[k] for r in rows for k in ("greedy", "modsearch") if k in r))
    steps = []
    for plan in timed:
        model, inputs = prepare(assemble(bank, bank.plan(plan)), target)
        steps.append(timed_step(_runner(model, inputs, target), target.device))
    t = time.perf_counter()
    with pinned_threads(target.n_threads), torch.inference_mode():
        paired = measure_paired(steps, target.protocol, rounds=a.rounds or None, rng=random.Random(0),
                                cap_seconds=target.protocol.verify_seconds)
    time_s = time.perf_counter() - t
    speed = {plan: speedup_of(paired["ratios"][i]) for i, plan in enumerate(timed)}
    f_teacher = flops(teacher)["total"]

    tp = scored[teacher]
    say("")
    say(f"test perplexity on {len(test)} chapters of {os.path.relpath(a.test, ROOT)} (teacher {tp:.2f}); "
        f"x = ratio to the teacher")
    head = f"{'removed':>9} | {'Block Influence':>16} | {'SLEB':>16} | {'LLM-Streamline':>16} | {'greedy (bank)':>16} " \
           f"| {'study best':>16} | {'greedy speed-up [95% CI]':>24} | {'FLOPs':>6}"
    say(head)
    say("-" * len(head))
    for r in rows:
        cells = []
        for k in kinds:
            v = scored.get(r.get(k))
            cells.append(f"{v:8.1f} ({v / tp:4.2f}x)" if v is not None else f"{'-':>16}")
        m = r.get("greedy")
        sp = speed.get(m)
        sp_txt = f"{sp['speedup']:.2f}x [{sp['low']:.2f}, {sp['high']:.2f}]" if sp else "-"
        fl = f"{flops(m)['total'] / f_teacher:.2f}" if m else "-"
        say(f"{r['removed']:>3} of {depth:<3} | " + " | ".join(cells) + f" | {sp_txt:>24} | {fl:>6}")
        r.update({f"{k}_test_ppl": scored.get(r.get(k)) for k in kinds})
        r["speedup"] = {p: speed.get(r.get(k)) for k, p in (("greedy", "greedy"), ("modsearch", "modsearch"))}
        r["flops_ratio"] = flops(m)["total"] / f_teacher if m else None
    for r in rows:
        say(f"  {r['removed']} removed: greedy {r.get('greedy', '-')}; study best {r.get('modsearch', '-')} "
            f"(trial {r.get('modsearch_trial', '-')})")
    say(f"paired timing: {paired['rounds']} rounds in {time_s:.0f} s on {target.name}; SLEB {seconds['sleb']:.0f} "
        f"s; greedy {seconds['greedy']:.0f} s; "
        f"test scoring {score_s:.0f} s; total {time.perf_counter() - t_start:.0f} s")
    if a.json:
        with open(a.json, "w", encoding="utf-8") as f:
            json.dump({"study": a.study, "test": os.path.relpath(a.test, ROOT), "chapters": len(test),
                       "teacher_test_ppl": tp, "block_influence": [1.0 - sim[i][i + 1] for i in range(depth)],
                       "rows": rows,
                       "timing": {"rounds": paired["rounds"], "seconds": time_s, "target": target.name},
                       "seconds": {**seconds, "scoring": score_s,
                                   "total": time.perf_counter() - t_start}}, f, indent=1)


if __name__ == "__main__":
    sys.exit(main())
