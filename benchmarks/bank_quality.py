"""Quality of a bank's plans on a held-out split: the teacher, every uniform granularity, layer dropping, mixes.

For each plan: chrF and BLEU of greedy translations (sacrebleu, through the shipped offline metric modules),
depth per stack, parameters (and their ratio to the teacher's). Layer-dropping plans keep the same number of
layers as the module plan they sit next to, so each module plan has a like-for-like baseline.

  python benchmarks/bank_quality.py banks/bible-en-fr --data data/bible-en-fr/test.jsonl
  python benchmarks/bank_quality.py banks/bible-en-fr --data data/bible-en-fr/test.jsonl --json out.json --markdown

The last line gives the headline: the half-depth module plan's chrF as a share of the teacher's, and against
dropping every other layer.
"""

from __future__ import annotations

import argparse
import json
import time


def _uniform(depth: int, spans: set, k: int) -> str:
    blocks, p = [], 0
    while p < depth:
        if (p, p + k - 1) in spans:
            blocks.append(f"{p}-{p + k - 1}")
            p += k
        else:
            blocks.append(str(p))
            p += 1
    return ",".join(blocks)


def _drop_to(depth: int, k: int) -> str:
    """Keep the first layer of every span of k (the others dropped): the same depth as uniform k-modules."""
    return ",".join(str(i) if i % k == 0 else f"x{i}" for i in range(depth))


def _teacher(depth: int) -> str:
    return ",".join(str(i) for i in range(depth))


def plans_for(bank) -> list[tuple[str, str]]:
    (de, dd), (se, sd) = bank.space().depths, bank.module_spans()
    rows = [("teacher", f"{_teacher(de)}/{_teacher(dd)}")]
    for k in sorted({j - i + 1 for i, j in se | sd}):
        rows.append((f"uniform {k}-layer modules", f"{_uniform(de, se, k)}/{_uniform(dd, sd, k)}"))
        rows.append((f"drop to 1/{k} depth", f"{_drop_to(de, k)}/{_drop_to(dd, k)}"))
    ks = sorted({j - i + 1 for i, j in sd})
    for k in ks:
        rows.append((f"decoder {k}-modules only", f"{_teacher(de)}/{_uniform(dd, sd, k)}"))
        rows.append((f"decoder drop to 1/{k}", f"{_teacher(de)}/{_drop_to(dd, k)}"))
    if ks:
        rows.append((f"encoder {ks[0]}-modules only", f"{_uniform(de, se, ks[0])}/{_teacher(dd)}"))
        if len(ks) > 1:
            rows.append(("mix: enc 2-modules, dec 3-modules", f"{_uniform(de, se, ks[0])}/{_uniform(dd, sd, ks[1])}"))
    return rows


def main(argv=None) -> None:
    from modsearch import DevSet, LayerBank
    from modsearch.quality import QualityTask, score_plan

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("bank")
    ap.add_argument("--data", required=True, help="held-out split (JSONL with the bank's fields)")
    ap.add_argument("--limit", type=int)
    ap.add_argument("--source-field", help="default: the bank's task fields")
    ap.add_argument("--target-field")
    ap.add_argument("--max-new-tokens", type=int, default=128)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--plan", action="append", default=[], help="extra plans to include")
    ap.add_argument("--json")
    ap.add_argument("--markdown", action="store_true", help="print the table as Markdown (for the README)")
    a = ap.parse_args(argv)

    bank = LayerBank.load(a.bank)
    fields = bank.manifest.get("task", {})
    dev = DevSet.load(a.data, source_field=a.source_field or fields.get("source_field"),
                      target_field=a.target_field or fields.get("target_field"), limit=a.limit)
    task = QualityTask("translation", metric="chrf,bleu", max_new_tokens=a.max_new_tokens, batch_size=a.batch_size)
    rows = []
    plans = plans_for(bank) + [("extra", p) for p in a.plan]
    t0 = time.perf_counter()
    for label, plan in plans:
        r = score_plan(bank, plan, dev, task)
        d = bank.describe_plan(bank.plan(plan))
        rows.append({"plan": plan, "label": label, "chrf": r.scores["chrf"], "bleu": r.scores["bleu"],
                     "depths": d["depths"], "params": d["params"], "params_ratio": d["params_ratio"],
                     "seconds": round(r.wall_time, 1)})
        print(f"{label:<34} {plan:<28} chrF {r.scores['chrf']:6.2f}  BLEU {r.scores['bleu']:6.2f}  "
              f"depth {'+'.join(str(x) for x in d['depths'].values())}  params {d['params_ratio']:.3f}",
              flush=True)
    took = time.perf_counter() - t0
    if a.markdown:
        print("\n| plan | what | depth | params | chrF | BLEU |\n|---|---|---|---|---|---|")
        for r in rows:
            print(f"| `{r['plan']}` | {r['label']} | {'+'.join(str(x) for x in r['depths'].values())} | "
                  f"{r['params_ratio']:.3f} | {r['chrf']:.2f} | {r['bleu']:.2f} |")
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"bank_checksum": bank.checksum, "data": a.data, "examples": len(dev),
                       "data_hash": dev.content_hash, "rows": rows, "seconds": round(took, 1)}, f, indent=1)
    by = {r["label"]: r for r in rows}
    t, half, drop = by["teacher"], by.get("uniform 2-layer modules"), by.get("drop to 1/2 depth")
    if half and drop:
        print(f"teacher chrF={t['chrf']:.2f} half-depth modules chrF={half['chrf']:.2f} "
              f"({100 * half['chrf'] / max(t['chrf'], 1e-9):.1f}% of teacher) every-other-layer drop chrF={drop['chrf']:.2f} "
              f"({len(dev)} examples, {took / 60:.1f} min)")


if __name__ == "__main__":
    main()
