"""Does training modules pay? Trained modules against untrained copies and plain layer dropping, at equal depth.

An untrained module over i..j is a copy of layer i (the BERT-of-Theseus initialisation), so as a model it *is*
"keep the first layer of each span, drop the rest". Plain layer dropping is shown keeping the *last* layer of
each span instead (and, for half depth, dropping every other layer). All three rows of a group have the same
depth and nearly the same parameter count.

Usage (a bank is created from --teacher, copied untouched for the "untrained" rows, and trained):

    python benchmarks/module_training.py --teacher banks/bible-en-fr/base \\
        --train banks/bible-en-fr.work/data/train.jsonl --dev data/bible-en-fr/dev.jsonl --steps 300

or, on a bank whose modules are already trained (the untrained twin is re-created from its base model):

    python benchmarks/module_training.py --bank banks/bible-en-fr --dev data/bible-en-fr/test.jsonl

The last line reads like ``half-depth chrF: trained 31.2  untrained 12.0  dropped 9.8``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time

import torch

from modsearch import LayerBank
from modsearch.data import DevSet
from modsearch.quality import QualityTask, score_plan
from modsearch.train import TrainConfig, train_bank


def groups(depths: list[int]) -> list[tuple[str, dict[str, str]]]:
    """Plans of equal depth per comparison group, for a bank with aligned 2- and 3-layer modules."""
    def tile(d, k, kind):
        out = []
        for i in range(0, d, k):
            j = min(i + k - 1, d - 1)
            if kind == "module":
                out.append(f"{i}-{j}" if j > i else str(i))
            else:  # keep the last layer of the span, drop the others
                out += [f"x{t}" for t in range(i, j)] + [str(j)]
        return ",".join(out)

    def every(k, kind):
        return "/".join(tile(d, k, kind) for d in depths)

    full = [",".join(str(i) for i in range(d)) for d in depths]
    out = [("teacher", {"teacher": "/".join(full)})]
    for k in (2, 3):
        out.append((f"1/{k} depth", {"trained": every(k, "module"), "untrained": every(k, "module"),
                                     "dropped": every(k, "drop")}))
    if len(depths) == 2:
        dec = tile(depths[1], 2, "module")
        out.append(("decoder 1/2", {"trained": f"{full[0]}/{dec}", "untrained": f"{full[0]}/{dec}",
                                    "dropped": f"{full[0]}/{tile(depths[1], 2, 'drop')}"}))
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--teacher", help="HF model directory to build and train a bank from")
    ap.add_argument("--bank", help="a bank whose modules are already trained")
    ap.add_argument("--train", help="training data (JSONL) when --teacher is given")
    ap.add_argument("--dev", default="data/bible-en-fr/dev.jsonl")
    ap.add_argument("--source-field", default="en")
    ap.add_argument("--target-field", default="fr")
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--batch-tokens", type=int, default=2048)
    ap.add_argument("--limit", type=int, default=300, help="dev examples to score")
    ap.add_argument("--work", help="where to keep the banks (default: a temporary directory)")
    ap.add_argument("--json", help="write the results here")
    a = ap.parse_args(argv)
    if not (a.teacher or a.bank):
        ap.error("give --teacher or --bank")
    work = a.work or tempfile.mkdtemp(prefix="modtrain-")
    os.makedirs(work, exist_ok=True)
    t0 = time.perf_counter()
    if a.bank:
        trained = LayerBank.load(a.bank)
        untrained_path = os.path.join(work, "untrained")
        if not os.path.exists(untrained_path):
            LayerBank.init(trained.base_dir, untrained_path, granularities=trained.manifest["granularities"],
                           starts=trained.manifest["starts"])
        untrained = LayerBank.load(untrained_path)
    else:
        trained_path, untrained_path = os.path.join(work, "trained"), os.path.join(work, "untrained")
        if not os.path.exists(untrained_path):
            LayerBank.init(a.teacher, untrained_path, granularities=[2, 3], starts="aligned")
        if not os.path.exists(trained_path):
            shutil.copytree(untrained_path, trained_path)
        trained = LayerBank.load(trained_path)
        if not all(e.trained for e in trained.modules.values()):
            cfg = TrainConfig(steps=a.steps, batch_tokens=a.batch_tokens, source_field=a.source_field,
                              target_field=a.target_field, eval_every=0, eval_size=100, checkpoint_every=50)
            resume = os.path.exists(os.path.join(trained_path, ".train", "state.json"))
            train_bank(trained, a.train, cfg, dev_data=a.dev, resume=resume)
            trained = LayerBank.load(trained_path)
        untrained = LayerBank.load(untrained_path)
    train_s = time.perf_counter() - t0

    task = QualityTask("translation", metric="chrf,bleu,loss", source_field=a.source_field,
                       target_field=a.target_field, batch_size=64, max_new_tokens=160)
    dev = task.load_devset(a.dev, limit=a.limit)
    rows = []
    for group, plans in groups(trained.depths):
        for kind, plan in plans.items():
            bank = untrained if kind == "untrained" else trained
            res = score_plan(bank, plan, dev, task)
            d = bank.describe_plan(bank.plan(plan))
            rows.append({"group": group, "kind": kind, "plan": plan, "depths": "+".join(map(str, d["depths"].values())),
                         "params_ratio": round(d["params_ratio"], 3), **{k: round(v, 3) for k, v in res.scores.items()
                                                                          if isinstance(v, float)}})
            r = rows[-1]
            print(f"{group:<12} {kind:<10} {r['depths']:<6} params {r['params_ratio']:.3f}  chrF {r.get('chrf', 0):6.2f}"
                  f"  BLEU {r.get('bleu', 0):6.2f}  loss {r.get('loss', 0):6.3f}  {plan}", flush=True)
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"rows": rows, "train_seconds": train_s, "dev": a.dev, "limit": a.limit,
                       "steps": trained.manifest["provenance"].get("training", {}).get("steps")}, f, indent=2)
    half = {r["kind"]: r.get("chrf", float("nan")) for r in rows if r["group"] == "1/2 depth"}
    print(f"half-depth chrF: trained {half['trained']:.1f}  untrained {half['untrained']:.1f}  "
          f"dropped {half['dropped']:.1f}")
    return 0


if __name__ == "__main__":
    torch.set_num_threads(int(os.environ.get("THREADS", torch.get_num_threads())))
    sys.exit(main())
