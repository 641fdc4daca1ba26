"""Seconds per healing step by precision and loss, timed in interleaved rounds on one assembled plan.

A `modsearch heal` step on a large vocabulary is mostly LM head: Gemma-3-270M's 262k x 640 head runs for the
teacher, and forward and backward for the student, on every token. Three ways to run the same step, on the same
model and batch:

- ``fp32``: the default (`--autocast none`): logit KL and hidden states at every block, all in fp32;
- ``bf16``: `--autocast bf16`: the forwards and the chunked head in bf16 (the head's weight cast once per step,
  not once per chunk), softmaxes and losses in fp32;
- ``hidden``: `--w-logits 0` (with `--w-task 0`): hidden states only, so the head is never run.

Each round runs every configuration once, in a shuffled order (modsearch's own round engine, the one its
latency measurements use), so the machine's drift falls on all of them alike; each ratio to ``fp32`` is the
median of the per-round ratios with its distribution-free 95 % interval. It also prints how far the bf16
step's losses are from the fp32 ones on the same batch. A step includes the optimiser's (at learning rate 0, so
the weights never change and every round times the same model). Run it alone.

    python benchmarks/heal_step.py banks/gemma3-270m --plan 0,1,2,3,4,5,6-7,8-9,10,11,12-13,14-15,16-17 \\
        --data banks/gemma3-270m.work/data/train-pieces.jsonl --rounds 6 --json benchmarks/results/heal-step.json
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import time

CONFIGS = {"fp32": {"autocast": "none"},
           "bf16": {"autocast": "bf16"},
           "hidden": {"autocast": "none", "w_logits": 0.0}}


def _has_amx() -> bool:
    """Whether the CPU has AMX bf16 tiles (bf16 matmuls are fast with them, and slow on CPUs without any bf16
    instructions: 5.7x slower than fp32 on an AVX2 EPYC, ../shared/NOTES.md)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            return "amx_bf16" in f.read()
    except OSError:
        return False


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("bank")
    p.add_argument("--plan", required=True)
    p.add_argument("--data", required=True, help="training JSONL (the text field)")
    p.add_argument("--text-field", default="text")
    p.add_argument("--batch-tokens", type=int, default=2048)
    p.add_argument("--max-len", type=int, default=256)
    p.add_argument("--rounds", type=int, default=6, help="timed rounds (6 is the fewest with a 95 %% interval)")
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--json")
    a = p.parse_args()

    import torch

    from modsearch import LayerBank, assemble
    from modsearch.cost._paired import interleaved_rounds, ratio_interval, speedup_of
    from modsearch.cost._target import _cpu_model
    from modsearch.data import length_batches
    from modsearch.heal import HealConfig, _plan_slots, trainable_parameters
    from modsearch.train._data import collate, encode_examples, read_examples
    from modsearch.train._losses import plan_distillation
    from modsearch.train._student import training_context

    if a.threads:
        torch.set_num_threads(a.threads)
    t_start = time.perf_counter()
    bank = LayerBank.load(a.bank)
    plan = bank.plan(a.plan)
    examples = encode_examples(bank, read_examples(a.data, (a.text_field,)), a.max_len, bank.source_prefix)
    idx = length_batches(examples, a.batch_tokens, 0)[0]
    inputs, labels = collate(bank, examples, idx)
    tokens = int(labels.ne(-100).sum())
    model = assemble(bank, plan)
    params = trainable_parameters(bank, model, plan, "all")
    opt = torch.optim.AdamW([q for _, q in params], lr=0.0, betas=(0.9, 0.98), weight_decay=0.0)
    cfgs = {name: HealConfig(steps=1, w_task=0.0, w_attn=0.0, **over) for name, over in CONFIGS.items()}
    losses = {}

    def step(name):
        def run() -> float:
            t0 = time.perf_counter()
            opt.zero_grad(set_to_none=True)
            with training_context(bank, model):
                parts, _ = plan_distillation(bank, model, _plan_slots(bank, model, plan), plan, inputs, labels,
                                             cfgs[name], backward=True, every_block=True)
            torch.nn.utils.clip_grad_norm_([q for _, q in params if q.grad is not None], 1.0)
            opt.step()
            losses[name] = parts
            return time.perf_counter() - t0
        return run

    names = list(CONFIGS)
    print(f"{_cpu_model()} (AMX bf16: {_has_amx()}), {torch.get_num_threads()} threads")
    print(f"{len(idx)} pieces, {tokens} scored tokens a step; {a.rounds} rounds after one warm-up round",
          flush=True)
    samples = interleaved_rounds([step(n) for n in names], 1, lambda s, _: len(s[0]) < a.rounds,
                                 rng=random.Random(0), on_round=lambda r: print(f"round {r} done", flush=True))
    rows = {}
    for name, times in zip(names, samples):
        rows[name] = {"median_s": statistics.median(times), "seconds": times,
                      **speedup_of(ratio_interval(samples[0], times)), "losses": losses[name]}
        print(f"{name:>7}: {rows[name]['median_s']:.1f} s a step (median), {rows[name]['speedup']:.2f}x fp32 "
              f"[{rows[name]['low']:.2f}, {rows[name]['high']:.2f}]; loss {losses[name]['loss']:.4f} "
              f"(kl {losses[name]['kl']:.4f}, hidden {losses[name]['hidden']:.4f})", flush=True)
    kl32, kl16 = losses["fp32"]["kl"], losses["bf16"]["kl"]
    print(f"bf16 against fp32 on the same batch: kl {kl16:.4f} vs {kl32:.4f} ({kl16 / kl32 - 1:+.2%}), hidden "
          f"{losses['bf16']['hidden']:.4f} vs {losses['fp32']['hidden']:.4f}", flush=True)
    out = {"bank": os.path.basename(os.path.normpath(a.bank)), "plan": str(plan), "tokens": tokens,
           "rounds": a.rounds, "threads": torch.get_num_threads(), "cpu": _cpu_model(),
           "amx_bf16": _has_amx(),
           "configs": rows, "seconds": round(time.perf_counter() - t_start, 1)}
    if a.json:
        with open(a.json, "w") as f:
            json.dump(out, f, indent=1)
            f.write("\n")


if __name__ == "__main__":
    main()
