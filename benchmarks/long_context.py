"""Benchmark: how a module over a span that holds a global-attention layer must attend, past the sliding window.

Gemma-3-270M attends through a 512-token sliding window in five layers of six and over the whole context in the
sixth (layers 5, 11, 17). A module replaces a span of layers; modsearch's rule (issue 31) is that a module over
a span holding a full-attention layer attends fully, with that layer's RoPE parameters
(``ArchitectureAdapter.attention_source``); the rule before gave every module its first layer's attention, so a
module over 10-11 or 16-17 became a 512-token window. Under 512 tokens the two are the same computation; this
measures what the choice is worth beyond.

For each rule, a bank over the Gemma base with modules over 10-11 and 16-17 (each holds a global layer) is
trained alike: the recipe's hidden-state objective and scaling, but on pieces of at least ``--piece-chars``
characters truncated to ``--max-len`` tokens (so that the modules see positions past the window), the same
batches, seed and steps, from the same initialisation. Then the teacher and each one-module plan are scored on
the committed test chapters, each book's chapters joined into one document, in windows of ``--context`` tokens
every ``--context/2`` (every token scored once with at least ``--context/2`` tokens of context), and, as the
control, in windows of 256 every 128 (where the two rules compute the same thing from their weights, so a
difference there comes from training alone).

    python benchmarks/long_context.py --base banks/gemma3-270m.work/base \\
        --train banks/gemma3-270m.work/data/train.jsonl --json benchmarks/results/long-context-gemma.json

``--base`` is the recipe's converted base (``modsearch recipe gemma3-270m`` writes it first; the
``convert_base`` stage alone takes about two minutes). Work goes to ``--work``; a rerun reuses trained banks.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time

SPANS = ("10-11", "16-17")


@contextlib.contextmanager
def first_layer_rule():
    """The rule before issue 31: a block takes its span's first layer's attention type."""
    from modsearch.bank.arch._base import ArchitectureAdapter

    rule = ArchitectureAdapter.attention_source
    ArchitectureAdapter.attention_source = lambda self, config, start, end: start
    try:
        yield
    finally:
        ArchitectureAdapter.attention_source = rule


def long_pieces(src: str, dst: str, chars: int) -> int:
    """Consecutive chapters of one book joined until a piece holds at least ``chars`` characters."""
    pieces, cur, book = [], [], None
    with open(src, encoding="utf-8") as f:
        for line in f:
            row = json.loads(line)
            b = str(row.get("id", "")).split(":")[0]
            if cur and (b != book or chars and sum(map(len, cur)) >= chars):
                pieces.append("\n\n".join(cur))
                cur = []
            book = b
            cur.append(row["text"])
    if cur:
        pieces.append("\n\n".join(cur))
    with open(dst, "w", encoding="utf-8") as f:
        for p in pieces:
            if len(p) >= chars:
                f.write(json.dumps({"text": p}, ensure_ascii=False) + "\n")
    return sum(len(p) >= chars for p in pieces)


def one_module(depth: int, span: str) -> str:
    """The plan that keeps every layer but ``span`` (``"i-j"``), which its module replaces."""
    i, j = map(int, span.split("-"))
    return ",".join([*map(str, range(i)), span, *map(str, range(j + 1, depth))])


def books(src: str, dst: str) -> int:
    """Each book's chapters as one document."""
    return long_pieces(src, dst, 0)


def train(base: str, out: str, data: str, args, rule: str) -> tuple[str, float]:
    from modsearch import LayerBank
    from modsearch.recipes.gemma3_270m import TRAIN
    from modsearch.train import TrainConfig, train_bank

    if os.path.exists(os.path.join(out, "manifest.json")) and all(
            e.trained for e in LayerBank.load(out).modules.values()):
        return out, 0.0
    t = time.perf_counter()
    ctx = first_layer_rule() if rule == "first-layer" else contextlib.nullcontext()
    with ctx:
        if not os.path.exists(os.path.join(out, "manifest.json")):
            LayerBank.init(base, out, granularities=(), spans=list(SPANS))
        bank = LayerBank.load(out)
        cfg = TrainConfig(**(TRAIN | {"steps": args.steps, "max_len": args.max_len, "eval_size": 4}))
        train_bank(bank, data, cfg, resume=os.path.exists(os.path.join(out, ".train", "state.json")),
                   log=lambda m: print(f"  [{rule}] {m}", flush=True))
    return out, time.perf_counter() - t


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    ap.add_argument("--base", required=True, help="the Gemma-3 base directory (the recipe's converted base)")
    ap.add_argument("--train", required=True, help="training chapters (JSONL with id 'book:chapter' and text)")
    ap.add_argument("--test", default="data/web-en/test.jsonl")
    ap.add_argument("--work", default="banks/long-context.work")
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--max-len", type=int, default=1024)
    ap.add_argument("--piece-chars", type=int, default=5000)
    ap.add_argument("--context", type=int, default=2048)
    ap.add_argument("--json")
    args = ap.parse_args(argv)
    for p in (args.base, args.train, args.test):
        if not os.path.exists(p):
            print(f"long_context: {p} not found", file=sys.stderr)
            return 2
    import torch

    from modsearch import LayerBank
    from modsearch.quality import QualityTask
    from modsearch.quality._score import score_plan

    torch.manual_seed(0)
    os.makedirs(args.work, exist_ok=True)
    data = os.path.join(args.work, "train-long.jsonl")
    print(f"train pieces of >= {args.piece_chars} characters: {long_pieces(args.train, data, args.piece_chars)}")
    test = os.path.join(args.work, "test-books.jsonl")
    print(f"test documents (books): {books(args.test, test)}")
    record = {"command": "python benchmarks/long_context.py " + " ".join(argv or sys.argv[1:]), "spans": SPANS,
              "steps": args.steps, "max_len": args.max_len, "rules": {}, "scores": {}}
    banks = {}
    for rule in ("full", "first-layer"):
        path, secs = train(args.base, os.path.join(args.work, f"bank-{rule}"), data, args, rule)
        banks[rule] = path
        record["rules"][rule] = {"train_seconds": round(secs, 1)}
        print(f"{rule}: bank trained ({secs:.0f} s)")
    depth = LayerBank.load(banks["full"]).depths[0]
    teacher = ",".join(map(str, range(depth)))
    for context in (args.context, 256):
        task = QualityTask("lm", metric="perplexity", text_field="text", context_length=context,
                           stride=context // 2, batch_size=1 if context > 512 else 8)
        key = f"{context}/{context // 2}"
        scores = record["scores"][key] = {}
        for rule, path in banks.items():
            ctx = first_layer_rule() if rule == "first-layer" else contextlib.nullcontext()
            with ctx:
                bank = LayerBank.load(path)
                devset = task.load_devset(test)
                plans = ([("teacher", teacher)] if rule == "full" else []) + [
                    (span, one_module(depth, span)) for span in SPANS]
                for name, plan in plans:
                    t = time.perf_counter()
                    r = score_plan(bank, bank.plan(plan), devset, task)
                    label = name if name == "teacher" else f"{name} ({rule})"
                    scores[label] = round(r.value, 4)
                    print(f"context {key}: {label:<24} perplexity {r.value:8.3f}  ({time.perf_counter() - t:.0f} s)",
                          flush=True)
    for key, scores in record["scores"].items():
        for span in SPANS:
            full, first = scores[f"{span} (full)"], scores[f"{span} (first-layer)"]
            print(f"context {key}: module over {span}: full attention {full:.3f}, first layer's window {first:.3f} "
                  f"({first / full - 1:+.1%}); teacher {scores['teacher']:.3f}")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(record, f, indent=1)
        print(f"record: {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
