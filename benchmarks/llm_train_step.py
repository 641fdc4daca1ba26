"""Peak memory and seconds of one module-training step on a 262k-vocabulary model (Gemma-3-270M's shape).

By default the model is a ``Gemma3ForCausalLM`` built from Gemma-3-270M's configuration in code (18 layers,
hidden 640, 262,144-token vocabulary, 268 M parameters) with random weights: a step's memory and time depend on
shapes, not on weight values, and no hub is needed. ``--base DIR`` uses a real HF model directory instead (for
example the one ``modsearch recipe gemma3-270m`` writes). A bank with aligned 2- and 3-layer modules is made
from it, and each configuration runs in a fresh process, so that its peak resident memory is its own:

- ``logits``: the paper's objective, every module in the student (p = 1), the LM head in chunks sized by the
  vocabulary (the default: 128 tokens, 128 MB of fp32 logits each, at 262k);
- ``logits-512``: the same with chunks of 512 tokens;
- ``logits-unchunked``: the same with one chunk for the whole batch (what the first trainer did, and more:
  it also kept teacher and student log-probabilities for every token at once);
- ``hidden``: the large-model objective (teacher states once per batch, no LM head in the loop).

Per configuration: resident memory after loading (teacher, modules, optimiser), the peak during the steps (the
kernel's high-water mark, reset after loading), and seconds per step (median of the timed steps, after one
warm-up step). Run it alone: another busy process distorts the seconds.

    python benchmarks/llm_train_step.py --tokens 1024 --threads 2 --json benchmarks/results/llm_train_step.json
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time

CONFIGS = {"logits": {"objective": "logits", "chunk_tokens": 0},  # the default: 128 tokens at 262k
           "logits-512": {"objective": "logits", "chunk_tokens": 512},
           "logits-unchunked": {"objective": "logits", "chunk_tokens": 1 << 30},
           "hidden": {"objective": "hidden", "chunk_tokens": 0}}


def gemma3_270m_shape():
    """Gemma-3-270M's architecture (from its published config), random weights."""
    import torch
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    torch.manual_seed(0)
    config = Gemma3TextConfig(vocab_size=262144, hidden_size=640, intermediate_size=2048, num_hidden_layers=18,
                              num_attention_heads=4, num_key_value_heads=1, head_dim=256, sliding_window=512,
                              max_position_embeddings=32768, rope_theta=1_000_000.0, query_pre_attn_scalar=256,
                              pad_token_id=0, eos_token_id=1, bos_token_id=2)
    return Gemma3ForCausalLM(config).eval()


def _status(field: str) -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024 ** 2  # kB -> GB
    return float("nan")


def child(bank_dir: str, name: str, tokens: int, seq: int, steps: int, threads: int) -> dict:
    import torch

    from modsearch import LayerBank
    from modsearch.train import Student, TrainConfig, distillation_step, hidden_step, sample_student
    from modsearch.train import training_context
    from modsearch.train._loop import _trainable

    torch.set_num_threads(threads)
    bank = LayerBank.load(bank_dir)
    cfg = TrainConfig(**CONFIGS[name]).validate()
    params = _trainable(bank)
    opt = torch.optim.AdamW([p for _, p in params], lr=1e-4)
    student = Student(bank)
    vocab = bank.base_model.config.vocab_size
    batch = max(1, tokens // seq)
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(3, vocab, (batch, seq), generator=g)
    inputs = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    labels = torch.cat([ids[:, 1:], torch.full((batch, 1), -100)], dim=1)
    plan = sample_student(bank, 1.0, random.Random(0))
    loaded = _status("VmRSS")
    with open("/proc/self/clear_refs", "w") as f:  # reset the high-water mark: the peak of the steps alone
        f.write("5")
    times = []
    with training_context(bank, student):
        for _ in range(steps + 1):
            t0 = time.perf_counter()
            opt.zero_grad(set_to_none=True)
            if cfg.objective == "hidden":
                parts, _ = hidden_step(bank, inputs, labels, cfg, backward=True)
            else:
                parts, _ = distillation_step(bank, student, plan, inputs, labels, cfg, backward=True)
            opt.step()
            times.append(time.perf_counter() - t0)
    return {"config": name, "tokens_per_step": batch * seq, "modules": len(bank.modules),
            "module_params": sum(p.numel() for _, p in params), "rss_loaded_gb": round(loaded, 3),
            "peak_rss_gb": round(_status("VmHWM"), 3), "s_per_step": round(statistics.median(times[1:]), 2),
            "first_step_s": round(times[0], 2), "loss": round(parts["loss"], 4), "threads": threads}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--base", help="a real HF causal-LM directory (default: Gemma-3-270M's shape, random weights)")
    ap.add_argument("--tokens", type=int, default=1024, help="tokens per step (default 1024)")
    ap.add_argument("--seq", type=int, default=256, help="sequence length (default 256)")
    ap.add_argument("--steps", type=int, default=2, help="timed steps after one warm-up step (default 2)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--configs", default=",".join(CONFIGS))
    ap.add_argument("--json", help="write the results here")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        print(json.dumps(child(a.child, a.configs, a.tokens, a.seq, a.steps, a.threads)), flush=True)
        return

    from modsearch import LayerBank

    with tempfile.TemporaryDirectory(prefix="llm-step-") as tmp:
        source = a.base
        if source is None:
            source = os.path.join(tmp, "model")
            gemma3_270m_shape().save_pretrained(source)
        LayerBank.init(source, os.path.join(tmp, "bank"), granularities=[2, 3])
        rows = []
        for name in a.configs.split(","):
            cmd = [sys.executable, __file__, "--child", os.path.join(tmp, "bank"), "--configs", name,
                   "--tokens", str(a.tokens), "--seq", str(a.seq), "--steps", str(a.steps), "--threads", str(a.threads)]
            out = subprocess.run(cmd, capture_output=True, text=True)
            if out.returncode != 0:
                print(f"{name}: failed\n{out.stderr[-2000:]}", file=sys.stderr)
                continue
            row = json.loads(out.stdout.strip().splitlines()[-1])
            rows.append(row)
            print(f"{name:18s} {row['tokens_per_step']} tokens/step  loaded {row['rss_loaded_gb']:.2f} GB  "
                  f"peak {row['peak_rss_gb']:.2f} GB  {row['s_per_step']:.1f} s/step "
                  f"({row['threads']} threads, {row['modules']} modules)", flush=True)
    meta = {"base": a.base or "Gemma-3-270M shape, random weights", "date": time.strftime("%Y-%m-%d"),
            "rows": rows}
    if a.json:
        with open(a.json, "w") as f:
            json.dump(meta, f, indent=2)
    best = {r["config"]: r for r in rows}
    if "logits" in best:
        print(f"peak memory of a logits step at {best['logits']['tokens_per_step']} tokens: "
              f"{best['logits']['peak_rss_gb']:.2f} GB (goal < 4 GB)")


if __name__ == "__main__":
    main()
