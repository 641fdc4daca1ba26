"""What healing buys: a study's frontier points before and after `modsearch heal`, on a held-out split.

For each target speed-up (default 1.5x, 2x, 3x), the study's feasible frontier point whose recorded speed-up is
closest is healed for a fixed wall-time budget, twice: from the bank's trained modules (`modsearch heal`), and
from copy-initialised modules (each module a copy of its span's first layer, as an untrained bank has them),
trained with the same recipe and budget: the bank's head start is the difference. Every model is then scored on
the held-out split (greedy chrF and BLEU, the settings of benchmarks/bank_quality.py), beside the teacher.

  python benchmarks/heal.py studies/bible-en-fr.toml --data banks/bible-en-fr.work/data/train.jsonl \\
      --test data/bible-en-fr/test.jsonl --minutes 10 --json benchmarks/results/heal.json

Resumable: a healed point whose export exists is not healed again, and an interrupted heal resumes from its
checkpoint. The last line is the headline: the healed model's chrF at about 2x, as a share of the teacher's.
"""

from __future__ import annotations

import argparse
import json
import os
import time


def _points(res, targets: list[float]):
    front = [t for t in res.frontier() if isinstance(t.metrics.get("speedup"), (int, float))]
    chosen = []
    for s in targets:
        left = [t for t in front if t not in [c for _, c in chosen]]
        if left:
            chosen.append((s, min(left, key=lambda t: abs(t.metrics["speedup"] - s))))
    return chosen


def main(argv=None) -> None:
    from transformers import AutoModelForSeq2SeqLM

    from modsearch import DevSet, LayerBank
    from modsearch.heal import HealConfig, heal
    from modsearch.quality import QualityTask, score_plan
    from modsearch.quality._score import score_quality
    from modsearch.results import open_results
    from modsearch.search import StudyConfig

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("study", help="a searched study TOML (its frontier gives the points)")
    ap.add_argument("--data", required=True, help="training data for healing")
    ap.add_argument("--test", required=True, help="held-out split scored at the end")
    ap.add_argument("--minutes", type=float, default=10.0, help="healing budget per model (default 10)")
    ap.add_argument("--speedups", default="1.5,2,3", help="target speed-ups (default 1.5,2,3)")
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--eval-every", type=int, default=50)
    ap.add_argument("--work", default="exports/heal-benchmark", help="where the healed models are written")
    ap.add_argument("--max-new-tokens", type=int, default=128)
    ap.add_argument("--json")
    a = ap.parse_args(argv)

    cfg = StudyConfig.load(a.study)
    res = open_results(a.study)
    bank = LayerBank.load(cfg.bank)
    dev, task = cfg.load_devset(), cfg.quality_task()
    fields = (cfg.data["source_field"], cfg.data["target_field"])
    test = DevSet.load(a.test, source_field=fields[0], target_field=fields[1])
    test_task = QualityTask("translation", metric="chrf,bleu", max_new_tokens=a.max_new_tokens, batch_size=64)

    def test_score(model=None, plan=None):
        r = (score_quality(model, bank.tokenizer, test, test_task, source_prefix=bank.source_prefix)
             if model is not None else score_plan(bank, plan, test, test_task))
        return {"chrf": r.scores["chrf"], "bleu": r.scores["bleu"]}

    t0 = time.perf_counter()
    teacher = test_score(plan=str(bank.plan(",".join(map(str, range(bank.depths[0]))) + "/" +
                                            ",".join(map(str, range(bank.depths[1]))))))
    print(f"teacher: test chrF {teacher['chrf']:.2f}", flush=True)
    rows = []
    for target, trial in _points(res, [float(x) for x in a.speedups.split(",")]):
        row = {"target_speedup": target, "plan": trial.plan, "trial": trial.number,
               "speedup": trial.metrics["speedup"], "latency_ms": trial.metrics.get("latency_ms"),
               "dev_quality": trial.metrics["quality"], "before": test_score(plan=trial.plan)}
        for init in ("bank", "copy"):
            out = os.path.join(a.work, f"{trial.number}-{init}")
            if not os.path.exists(os.path.join(out, "assembly.json")):
                resume = os.path.exists(out + ".heal")
                heal(bank, trial.plan, a.data, dev, task, out,
                     HealConfig(minutes=a.minutes, lr=a.lr, eval_every=a.eval_every, init=init), fields=fields,
                     resume=resume, info={"trial": trial.number, "benchmark": "benchmarks/heal.py"},
                     log=lambda m: print("  " + m, flush=True))
            rec = json.load(open(os.path.join(out, "assembly.json")))["healing"]
            model = AutoModelForSeq2SeqLM.from_pretrained(out)  # the export, as a user loads it
            row[init] = {"test": test_score(model=model), "dev_before": rec["dev"]["before"],
                         "dev_after": rec["dev"]["after"], "steps": rec["steps"], "best_step": rec["best_step"],
                         "seconds": rec["seconds"], "curve": [(r["step"], r["dev"]) for r in rec["history"]]}
        rows.append(row)
        b, h, c = row["before"]["chrf"], row["bank"]["test"]["chrf"], row["copy"]["test"]["chrf"]
        print(f"{trial.plan:<28} {row['speedup']:.2f}x  before {b:.2f} ({100 * b / teacher['chrf']:.1f}%)  healed "
              f"{h:.2f} ({100 * h / teacher['chrf']:.1f}%, {row['bank']['steps']} steps)  from copies {c:.2f} "
              f"({100 * c / teacher['chrf']:.1f}%)", flush=True)
        if a.json:
            with open(a.json, "w") as f:
                json.dump({"study": a.study, "bank_checksum": bank.checksum, "test": a.test,
                           "test_hash": test.content_hash, "examples": len(test), "minutes": a.minutes,
                           "lr": a.lr, "teacher": teacher, "rows": rows,
                           "seconds": round(time.perf_counter() - t0, 1)}, f, indent=1)
    print("\n| plan | study speed-up | test chrF before | healed | from copies, same budget |\n|---|---|---|---|---|")
    for r in rows:
        print(f"| `{r['plan']}` | {r['speedup']:.2f}x | {r['before']['chrf']:.2f} | {r['bank']['test']['chrf']:.2f} | "
              f"{r['copy']['test']['chrf']:.2f} |")
    two = min(rows, key=lambda r: abs(r["speedup"] - 2.0))
    print(f"at {two['speedup']:.2f}x: healed chrF={two['bank']['test']['chrf']:.2f} "
          f"({100 * two['bank']['test']['chrf'] / teacher['chrf']:.1f}% of the teacher's {teacher['chrf']:.2f}), "
          f"before {100 * two['before']['chrf'] / teacher['chrf']:.1f}%")


if __name__ == "__main__":
    main()
