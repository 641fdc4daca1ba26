"""Benchmark: what healing buys a chosen Gemma plan, against the same healing of the dropping baseline.

``benchmarks/llm_pruning.py`` compares plans as the bank assembles them. A user ships the chosen plan after
``modsearch heal`` (the assembled model distilled from the teacher on training text). This script scores
healed exports on the committed test text with the study's scorer, next to their own plan unhealed (from the
bank) and the teacher, so each healing is read against its starting point:

    modsearch heal banks/gemma3-270m --plan PLAN --data banks/gemma3-270m.work/data/train-pieces.jsonl \\
        --dev data/web-en/dev.jsonl --task lm --text-field text --limit 2 --steps 48 --eval-every 8 \\
        --warmup 8 --max-len 256 --w-task 0 --w-attn 0 --out exports/healed-greedy5
    python benchmarks/healed_pruning.py studies/gemma3-270m.toml exports/healed-greedy5 exports/healed-sleb5 \\
        --limit 8 --json benchmarks/results/healed-pruning.json

Healing with ``--w-task 0`` is pure distillation: the student is pulled towards the teacher's distributions,
so a gain is not the domain adaptation that the training text's cross-entropy would give (which could take a
student below its teacher and make the ratio meaningless). Each export's ``assembly.json`` says how it was
healed: steps, tokens, data hash, dev perplexity before and after. No timing here: a healed model has its
plan's architecture, so its speed-up is its plan's (``llm_pruning.py``).

With ``--baselines`` (a ``llm_pruning.py`` JSON of the same bank and test text) it also prints, at each depth, the
tuned exports against the layer-dropping baselines, which have nothing to tune (Block Influence, SLEB: their
test perplexity as ``llm_pruning.py`` measured it), and against LLM-Streamline's plan tuned the same way: an
export whose plan is that depth's ``modsearch`` plan is the search's, one whose plan is its ``streamline`` plan is
LLM-Streamline's. ``--from-json`` reprints those tables from a saved run without scoring anything.

An independent check of every ratio: plain transformers (``model(ids, labels=ids).loss``, the model loaded
from its directory, nothing of modsearch in the forward) on the first ``context_length`` tokens of each test
chapter, for the teacher's base directory and each export.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def plain_perplexity(model, tok, texts: list[str], length: int) -> float:
    """exp of the token-weighted mean loss transformers itself reports on each text's first ``length`` tokens."""
    import math

    import torch

    total = count = 0.0
    with torch.inference_mode():
        for text in texts:
            ids = tok(text, return_tensors="pt").input_ids[:, :length]
            n = ids.shape[1] - 1
            total += model(input_ids=ids, labels=ids).loss.item() * n
            count += n
    return math.exp(total / count)


def depth_table(rows: list[dict], baselines: dict, teacher: float) -> list[str]:
    """Per depth: the tuned search plan against the best layer-dropping baseline and the tuned LLM-Streamline plan."""
    lines = [f"{'removed':>7} | {'best drop (BI, SLEB)':>20} | {'LLM-Streamline tuned':>20} | "
             f"{'search plan as assembled':>24} | {'tuned':>16} | {'margin over drop':>16} | {'over Streamline':>15}"]
    lines.append("-" * len(lines[0]))
    by_plan = {r["plan"]: r for r in rows}
    for b in baselines["rows"]:
        ours, theirs = by_plan.get(b["modsearch"]), by_plan.get(b["streamline"])
        if ours is None:
            continue
        drop = min(b["block_influence_test_ppl"], b["sleb_test_ppl"])
        mine = ours["test_after"]
        st = f"{theirs['test_after']:8.1f} ({theirs['test_after'] / teacher:4.2f}x)" if theirs else "not tuned"
        over = f"{theirs['test_after'] / mine:14.2f}x" if theirs else "-"
        lines.append(f"{b['removed']:>7} | {drop:11.1f} ({drop / teacher:5.2f}x) | {st:>20} | "
                     f"{ours['test_before']:16.1f} ({ours['test_before'] / teacher:4.2f}x) | "
                     f"{mine:8.1f} ({mine / teacher:4.2f}x) | {drop / mine:15.2f}x | {over:>15}")
    return lines


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("study", help="the study TOML (its bank, task and scoring)")
    p.add_argument("exports", nargs="*", help="directories written by `modsearch heal` from the study's bank")
    p.add_argument("--test", default=os.path.join(ROOT, "data", "web-en", "test.jsonl"))
    p.add_argument("--limit", type=int, default=8, help="test chapters scored (default 8)")
    p.add_argument("--json")
    p.add_argument("--baselines", help="an llm_pruning.py JSON: also print each depth against its baselines")
    p.add_argument("--from-json", help="reprint the tables of a saved run of this script; scores nothing")
    a = p.parse_args()
    if a.from_json and not a.baselines:
        p.error("--from-json reprints the per-depth table, which needs --baselines")
    if not a.exports and not a.from_json:
        p.error("give the exports to score (or --from-json)")
    baselines = None
    if a.baselines:
        with open(a.baselines, encoding="utf-8") as f:
            baselines = json.load(f)
    if a.from_json:
        with open(a.from_json, encoding="utf-8") as f:
            saved = json.load(f)
        print("\n".join(depth_table(saved["rows"], baselines, saved["teacher_test_ppl"])))
        return

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from modsearch import LayerBank
    from modsearch.quality._score import score_plan, score_quality
    from modsearch.search._config import StudyConfig

    t_start = time.perf_counter()
    cfg = StudyConfig.load(a.study)
    bank = LayerBank.load(cfg.bank)
    task = cfg.quality_task()
    test = task.load_devset(a.test, limit=a.limit)
    say = lambda m: print(m, flush=True)  # noqa: E731
    depth = bank.depths[0]

    teacher = score_plan(bank, bank.teacher_plan(), test, task).value
    texts = list(test.sources)
    plain_teacher = plain_perplexity(AutoModelForCausalLM.from_pretrained(bank.base_dir, dtype=torch.float32).eval(),
                                     AutoTokenizer.from_pretrained(bank.base_dir), texts, task.context_length)
    say(f"teacher: test perplexity {teacher:.2f} (plain transformers, first {task.context_length} tokens of each "
        f"chapter: {plain_teacher:.2f})")
    rows = []
    for d in a.exports:
        with open(os.path.join(d, "assembly.json"), encoding="utf-8") as f:
            spec = json.load(f)
        if spec["bank"]["checksum"] != bank.checksum:
            sys.exit(f"{d} was not exported from {cfg.bank} (bank checksum differs)")
        heal = spec.get("healing") or {}
        plan = spec["plan"]
        before = score_plan(bank, plan, test, task).value
        model = AutoModelForCausalLM.from_pretrained(d, dtype=torch.float32)
        tok = AutoTokenizer.from_pretrained(d)
        after = score_quality(model, tok, test, task).value
        plain = plain_perplexity(model.eval(), tok, texts, task.context_length)
        del model
        c = heal.get("config", {})
        row = {"export": d, "plan": plan, "removed": depth - bank.plan(plan).depths[0],
               "steps": heal.get("steps"), "best_step": heal.get("best_step"),
               "tokens_seen": (heal.get("steps") or 0) * c.get("batch_tokens", 0),
               "weights": {k: c.get(k) for k in ("w_task", "w_logits", "w_hidden", "w_attn")},
               "trainable": c.get("trainable"), "heal_seconds": heal.get("seconds"),
               "dev_before": (heal.get("dev") or {}).get("before"), "dev_after": (heal.get("dev") or {}).get("after"),
               "test_before": before, "test_after": after,
               "plain_after": plain, "plain_ratio": plain / plain_teacher}
        rows.append(row)
        say(f"{d}: removed {row['removed']}, test perplexity {before:.2f} -> {after:.2f} "
            f"({before / teacher:.2f}x -> {after / teacher:.2f}x the teacher; plain check "
            f"{plain / plain_teacher:.2f}x); healed {row['steps']} steps, "
            f"best at {row['best_step']}, {heal.get('seconds')} s, weights {row['weights']}")
    say("")
    say(f"test perplexity on {len(test)} chapters of {os.path.relpath(a.test, ROOT)} (teacher {teacher:.2f})")
    head = (f"{'removed':>9} | {'unhealed':>16} | {'healed':>16} | {'plain check':>11} | {'steps (best)':>12} | "
            f"{'trainable':>9} | plan")
    say(head)
    say("-" * len(head))
    for r in sorted(rows, key=lambda r: r["removed"]):
        say(f"{r['removed']:>3} of {depth:<3} | {r['test_before']:8.1f} ({r['test_before'] / teacher:4.2f}x) | "
            f"{r['test_after']:8.1f} ({r['test_after'] / teacher:4.2f}x) | {r['plain_ratio']:10.2f}x | "
            f"{r['steps']:>5} ({r['best_step']:>3})  | {r['trainable'] or '-':>9} | {r['plan']}")
    if baselines:
        say("")
        say(f"tuned, at each depth (test perplexity; layer-dropping baselines from {a.baselines})")
        for line in depth_table(rows, baselines, teacher):
            say(line)
    say(f"total {time.perf_counter() - t_start:.0f} s")
    if a.json:
        with open(a.json, "w", encoding="utf-8") as f:
            json.dump({"study": a.study, "test": os.path.relpath(a.test, ROOT), "chapters": len(test),
                       "teacher_test_ppl": teacher, "teacher_plain_ppl": plain_teacher, "rows": rows,
                       "seconds": time.perf_counter() - t_start}, f, indent=1)


if __name__ == "__main__":
    sys.exit(main())
