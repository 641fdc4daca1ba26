"""Benchmark: seconds and peak memory of one search trial's quality evaluation, with plans assembled as deep
copies (before) and as views of the bank (after, ``assemble(..., share_weights=True)``, what scoring now uses).

Each measurement runs in a fresh child process, so peak RSS (``ru_maxrss``) is that trial's alone: load the
bank (its base model, as a search evaluator holds it), assemble one plan, score its perplexity on the first
``--limit`` dev texts. The two modes alternate, ``--rounds`` times, in a shuffled order per round; medians are
printed. Nothing else should run beside it.

    python benchmarks/assembly_views.py banks/gemma3-270m --data data/web-en/dev.jsonl --plan 0-1,2-3,4,5,... \
        --rounds 3 --json benchmarks/results/assembly-views-gemma.json

Goal (issue 16): no copy of the 170M-parameter embedding per trial; the view's peak memory is the bank's plus
the activations.
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import statistics
import subprocess
import sys
import time


def child(a) -> dict:
    import torch

    from modsearch import LayerBank, assemble
    from modsearch.quality._score import QualityTask, score_quality

    torch.set_num_threads(a.threads)
    bank = LayerBank.load(a.bank)
    bank.base_model  # noqa: B018  (loaded before the trial, as an evaluator holds it)
    for key in bank.modules:
        bank.module_layer(*key)
    rss_bank = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    task = QualityTask("lm", metric="perplexity", text_field="text", context_length=a.context_length,
                       stride=a.context_length // 2, batch_size=8)
    dev = task.load_devset(a.data, limit=a.limit)
    t0 = time.perf_counter()
    model = assemble(bank, a.plan, share_weights=a.mode == "view")
    t1 = time.perf_counter()
    result = score_quality(model, bank.tokenizer, dev, task)
    t2 = time.perf_counter()
    return {"mode": a.mode, "assemble_s": t1 - t0, "score_s": t2 - t1, "trial_s": t2 - t0,
            "perplexity": result.value, "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
            "bank_rss_gb": rss_bank / 2**20}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("bank")
    p.add_argument("--data", required=True)
    p.add_argument("--plan", required=True)
    p.add_argument("--limit", type=int, default=2)
    p.add_argument("--context-length", type=int, default=256)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--json")
    p.add_argument("--mode", choices=["deep", "view"], help=argparse.SUPPRESS)  # child process
    a = p.parse_args()
    if a.mode:
        print(json.dumps(child(a)))
        return
    rows, rng = [], random.Random(0)
    for r in range(a.rounds):
        modes = ["deep", "view"]
        rng.shuffle(modes)
        for mode in modes:
            cmd = [sys.executable, __file__, a.bank, "--data", a.data, "--plan", a.plan, "--limit", str(a.limit),
                   "--context-length", str(a.context_length), "--threads", str(a.threads), "--mode", mode]
            out = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.strip()
                             .splitlines()[-1])
            rows.append(out)
            print(f"round {r + 1} {mode}: assemble {out['assemble_s']:.2f} s, trial {out['trial_s']:.1f} s, "
                  f"peak RSS {out['peak_rss_gb']:.2f} GB (bank loaded: {out['bank_rss_gb']:.2f}), "
                  f"perplexity {out['perplexity']:.4f}", flush=True)
    summary = {}
    for mode in ("deep", "view"):
        mine = [r for r in rows if r["mode"] == mode]
        summary[mode] = {k: statistics.median(r[k] for r in mine)
                         for k in ("assemble_s", "score_s", "trial_s", "peak_rss_gb", "bank_rss_gb")}
    same = len({r["perplexity"] for r in rows}) == 1
    for mode, s in summary.items():
        print(f"{mode}: assemble {s['assemble_s']:.2f} s, trial {s['trial_s']:.1f} s, peak RSS "
              f"{s['peak_rss_gb']:.2f} GB (medians of {a.rounds})")
    print(f"same perplexity in every run: {same}")
    if a.json:
        with open(a.json, "w", encoding="utf-8") as f:
            json.dump({"args": {k: v for k, v in vars(a).items() if k != "mode"}, "runs": rows,
                       "summary": summary, "same_perplexity": same}, f, indent=1)


if __name__ == "__main__":
    main()
