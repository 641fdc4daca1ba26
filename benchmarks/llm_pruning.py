"""Benchmark: modsearch against the depth-pruning baselines an LLM user tries first, on the committed test text.

For each share of the layers removed (``--fractions``, default 1/6, 1/4, 1/3 and 1/2; "at least that share":
3, 5, 6 and 9 of Gemma-3-270M's 18, or 6, 10 and 15 of SmolLM2's 30 with ``--fractions 1/5,1/3,1/2``):

- **Block Influence** (ShortGPT): drop the layers with the lowest 1 - cos(input, output);
- **SLEB**: drop layers greedily, each time the one whose removal gives the lowest calibration perplexity;
- **ReplaceMe** (training-free): drop the most redundant run and fold a least-squares linear map, fitted on
  calibration activations, into the layer before it (:mod:`modsearch.search._replaceme`; Llama-style families);
- **LLM-Streamline**: replace the most redundant contiguous span (highest cos(input, output)) by one trained
  module of the bank;
- **greedy (bank)**: modsearch's ``greedy`` seed, SLEB over the bank: each step takes the drop or module with
  the smallest rise of calibration log-perplexity per layer removed;
- **study best**: the plan of the finished study with the best *dev* perplexity among those removing at least
  that many layers (chosen on dev, reported on test).

Calibration is the study's whole dev file, or ``--calib-data`` (``--calib-documents`` of its documents, evenly
spaced; for more calibration text than the dev split holds, e.g. the bank's training text): Block Influence,
LLM-Streamline and ReplaceMe use every calibration document (up to ``--calib-tokens`` tokens each); SLEB and the
greedy path score each candidate on the first ``--sleb-texts`` documents, ``--sleb-tokens`` tokens each (SLEB's
cost grows with depth x removals x that). Every
plan is scored on the test text (all chapters unless ``--limit``; windows of the study's context length and
stride). Then every plan in the table, the study's frontier plans and the teacher are timed on each target
(``--targets``, default the study's) in interleaved shuffled rounds (modsearch's paired engine) for their
speed-up with a 95 % interval; FLOPs come from the bank's per-layer count.

    python benchmarks/llm_pruning.py studies/smollm2-135m.toml --fractions 1/5,1/3,1/2 \\
        --targets cpu-1t-b1-lm,cpu-2t-b8-lm --json benchmarks/results/llm-pruning-smollm2-DATE.json

**Healed at equal budget** (``--heal-steps`` and/or ``--heal-minutes``, with ``--heal-data``): every plan of
the table, at every depth, is then healed by :func:`modsearch.heal.heal` with the same budget, the same
training text and the same rule for what trains (``--heal-trainable``: ``all`` = the whole model but the
embeddings and the head, ``modules`` = the plan's modules only, for the plans that have modules), pure
distillation from the teacher (``w_task = 0``), the dev set and windows of the study for the best step; then
scored on the test text. ReplaceMe heals from its folded weights. Each healed export goes to ``--heal-dir``;
a killed run resumes each heal from its checkpoint. ``--heal-removed 10`` heals the rows of that depth only.

Goals (issue 32): at >= 1.5x (verified), the study's plan keeps test perplexity <= 1.25x the teacher's, at
>= 2x <= 1.6x, and beats the best baseline at every depth; the last lines print where each stands. Nothing
else may run beside it (the timing).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shlex
import sys
import time
from fractions import Fraction

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
KINDS = ("block_influence", "sleb", "replaceme", "streamline", "greedy", "modsearch")
TITLES = {"block_influence": "Block Influence", "sleb": "SLEB", "replaceme": "ReplaceMe",
          "streamline": "LLM-Streamline", "greedy": "greedy (bank)", "modsearch": "study best"}
GOALS = ((1.5, 1.25), (2.0, 1.6))  # (verified speed-up at least, test perplexity at most x the teacher's)


class _Progress:
    """What a killed run already computed (the baseline plans, SLEB's and the greedy path's steps so far, the
    test scores, the heals), one JSON line each, in
    ``JSON.part.jsonl`` beside the record; a rerun with the same arguments takes them instead of recomputing.
    Keyed by everything that could change them: the bank's checksum, the test and dev files' hashes and the
    calibration sizes. Timing is never resumed: its plans must be measured together."""

    def __init__(self, path: str | None, key: dict):
        self.path, self.key, self.done = path, key, {}
        if path and os.path.exists(path):
            for line in open(path, encoding="utf-8"):
                row = json.loads(line)
                if row.get("key") == key:
                    self.done[row["name"]] = row["value"]

    def get(self, name: str):
        return self.done.get(name)

    def put(self, name: str, value) -> None:
        self.done[name] = value
        if self.path:
            with open(self.path, "a", encoding="utf-8") as f:
                f.write(json.dumps({"key": self.key, "name": name, "value": value}) + "\n")


def _fractions(text: str) -> tuple[float, ...]:
    try:
        out = tuple(float(Fraction(f.strip())) for f in text.split(",") if f.strip())
    except (ValueError, ZeroDivisionError):
        raise argparse.ArgumentTypeError(f"--fractions: give shares such as 1/5,1/3,1/2, not {text!r}") from None
    if not out or not all(0 < f < 1 for f in out):
        raise argparse.ArgumentTypeError(f"--fractions: every share must lie between 0 and 1, not {text!r}")
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("study", help="the study TOML (its bank, dev text, task and target; its finished trials)")
    p.add_argument("--test", default=os.path.join(ROOT, "data", "web-en", "test.jsonl"))
    p.add_argument("--limit", type=int, default=0, help="test chapters scored (default 0: all)")
    p.add_argument("--fractions", type=_fractions, default=None,
                   help="shares of the layers removed, e.g. 1/5,1/3,1/2 (default 1/6,1/4,1/3,1/2)")
    p.add_argument("--calib-data", help="calibration text (JSONL with the study's text field; default the study's "
                   "dev file)")
    p.add_argument("--calib-documents", type=int, default=0,
                   help="documents taken from the calibration text, evenly spaced (default 0: all)")
    p.add_argument("--calib-tokens", type=int, default=2048,
                   help="tokens per dev document for Block Influence, LLM-Streamline and ReplaceMe (default 2048)")
    p.add_argument("--sleb-texts", type=int, default=8, help="dev documents per SLEB/greedy candidate (default 8)")
    p.add_argument("--sleb-tokens", type=int, default=512, help="tokens per SLEB/greedy document (default 512)")
    p.add_argument("--targets", default=None, help="targets to time on, comma-separated (default: the study's)")
    p.add_argument("--frontier", type=int, default=12, help="study frontier plans also scored and timed (default 12)")
    p.add_argument("--rounds", type=int, default=0, help="paired timing rounds (default: the target's protocol)")
    p.add_argument("--heal-steps", type=int, default=0, help="heal every plan this many steps (default 0: no healing)")
    p.add_argument("--heal-minutes", type=float, default=0.0, help="and/or for this many minutes of wall time each")
    p.add_argument("--heal-data", help="training text for healing (JSONL with the study's text field)")
    p.add_argument("--heal-trainable", default="all",
                   help="what trains, comma-separated: all (embeddings and head frozen) and/or modules (default all)")
    p.add_argument("--heal-dir", default=os.path.join(ROOT, "exports", "llm-pruning-healed"),
                   help="where the healed exports go (default exports/llm-pruning-healed)")
    p.add_argument("--heal-batch-tokens", type=int, default=2048, help="tokens per healing step (default 2048)")
    p.add_argument("--heal-removed", help="heal only the rows of these depths (layers removed, comma-separated; "
                   "default every row)")
    p.add_argument("--json")
    a = p.parse_args()
    healing = a.heal_steps > 0 or a.heal_minutes > 0
    rules = [r.strip() for r in a.heal_trainable.split(",") if r.strip()]
    if healing and not a.heal_data:
        p.error("--heal-steps/--heal-minutes need --heal-data (the training text)")
    if healing and (not rules or any(r not in ("all", "modules") for r in rules)):
        p.error(f"--heal-trainable: give all and/or modules, not {a.heal_trainable!r}")
    if a.calib_documents < 0:
        p.error(f"--calib-documents: give a count of documents (0: all), not {a.calib_documents}")
    if a.heal_removed and not all(x.strip().isdigit() for x in a.heal_removed.split(",")):
        p.error(f"--heal-removed: give layer counts (e.g. 10 or 6,10), not {a.heal_removed!r}")

    import torch

    from modsearch import LayerBank, UserError, assemble
    from modsearch.cost._measure import LayerFlops, _runner, pinned_threads, prepare, timed_step
    from modsearch.cost._paired import measure_paired, speedup_of
    from modsearch.cost._target import HardwareTarget
    from modsearch.quality._score import score_quality
    from modsearch.results import open_results
    from modsearch.search._config import StudyConfig
    from modsearch.search._replaceme import replaceme
    from modsearch.search._seeds import BI_FRACTIONS, layer_similarity, pruning_plans

    t_start = time.perf_counter()
    say = lambda m: print(m, flush=True)  # noqa: E731
    try:
        cfg = StudyConfig.load(a.study)
        bank = LayerBank.load(cfg.bank)
        targets = [HardwareTarget.resolve(t.strip()) for t in (a.targets or str(cfg.target)).split(",") if t.strip()]
        task = cfg.quality_task()
        test = task.load_devset(a.test, limit=a.limit or None)
    except UserError as exc:
        print(f"llm_pruning: error: {exc}", file=sys.stderr)
        return 2
    try:
        res = open_results(a.study)
    except UserError as exc:  # the comparison stands without the study; its columns are then left empty
        say(f"no finished study to read ({exc}); the study-best column is left out")
        res = None
    fractions = a.fractions or BI_FRACTIONS
    depth = bank.depths[0]
    calib_path = a.calib_data or cfg.data_path  # the whole dev file by default, not the study's limit
    try:
        calibration = list(task.load_devset(calib_path).sources)
    except UserError as exc:
        print(f"llm_pruning: error: {exc}", file=sys.stderr)
        return 2
    if 0 < a.calib_documents < len(calibration):  # evenly spaced: the text's whole range, not its first book
        calibration = [calibration[i * len(calibration) // a.calib_documents] for i in range(a.calib_documents)]
    calib_tokens = sum(len(bank.tokenizer(t, truncation=True, max_length=a.calib_tokens)["input_ids"])
                       for t in calibration)
    say(f"calibration: {len(calibration)} documents of {os.path.relpath(calib_path, ROOT)}, {calib_tokens:,} tokens "
        f"(up to {a.calib_tokens} each); "
        f"SLEB/greedy: {a.sleb_texts} x {a.sleb_tokens} tokens per candidate")

    from modsearch._io import sha256_file

    progress = _Progress(a.json and a.json + ".part.jsonl", {
        "bank": bank.checksum, "test": sha256_file(a.test), "dev": sha256_file(cfg.data_path), "limit": a.limit,
        **({"calib": [sha256_file(calib_path), a.calib_documents]} if a.calib_data else {}),
        "fractions": list(fractions), "calib_tokens": a.calib_tokens, "sleb": [a.sleb_texts, a.sleb_tokens],
        "task": task.to_json()})
    if progress.done:
        say(f"resuming: {len(progress.done)} result(s) from {a.json}.part.jsonl")
    t = time.perf_counter()
    teacher_view = assemble(bank, bank.teacher_plan(), share_weights=True)
    sim = layer_similarity(teacher_view, bank.adapter.layers(teacher_view, bank.stack_names[0]), bank.tokenizer,
                           calibration, max_texts=len(calibration), max_tokens=a.calib_tokens)
    seconds = {"similarity": time.perf_counter() - t}
    say(f"boundary similarity: {seconds['similarity']:.0f} s")
    space, baselines = bank.space(), {}
    for name, strategy in (("block_influence", "block-influence"), ("sleb", "sleb"),
                           ("streamline", "streamline"), ("greedy", "greedy")):
        t = time.perf_counter()
        done = progress.get(f"plans:{name}")
        if done is not None:
            baselines[name] = {int(k): v for k, v in done.items()}
            continue
        # SLEB's and the greedy path's steps are kept as they are taken: a long calibration (hours at 32k tokens
        # on a large vocabulary) goes on from its last step when the run is started again.
        baselines[name] = {k: str(v) for k, v in pruning_plans(
            bank, space, strategy, calibration, lambda: sim, log=say, fractions=fractions,
            max_texts=a.sleb_texts, max_tokens=a.sleb_tokens, resume=progress.get(f"steps:{name}") or (),
            on_step=lambda path, name=name: progress.put(f"steps:{name}", path)).items()}
        progress.put(f"plans:{name}", baselines[name])
        seconds[name] = time.perf_counter() - t
        say(f"{strategy}: {seconds[name]:.0f} s")
    counts = sorted({k for plans in baselines.values() for k in plans})

    models: dict[str, object] = {}  # label -> a model that is not a plan of the bank (ReplaceMe's)
    baselines["replaceme"] = {}
    replaceme_info = {}
    t = time.perf_counter()
    for k in counts:
        try:
            plan, model, info = replaceme(bank, k, calibration, sim=sim, max_tokens=a.calib_tokens, log=say)
        except UserError as exc:
            say(f"ReplaceMe at {k} removed: {exc}")
            continue
        label = f"replaceme:{plan}"
        models[label], baselines["replaceme"][k], replaceme_info[k] = model, label, info
    seconds["replaceme"] = time.perf_counter() - t

    def removed(plan: str) -> int:
        return depth - bank.plan(plan).depths[0]

    trials = [r for r in res.trials if r.get("quality") is not None and r.feasible] if res is not None else []
    frontier = [r.plan for r in res.frontier()][: a.frontier] if res is not None else []
    rows = []
    for k in counts:
        row = {"removed": k, **{name: plans[k] for name, plans in baselines.items() if k in plans}}
        mine = [r for r in trials if removed(r.plan) >= k]
        if mine:
            best = (max if res.maximize else min)(mine, key=lambda r: r.get("quality"))
            row.update({"modsearch": best.plan, "modsearch_dev": best.get("quality"), "modsearch_trial": best.number})
        rows.append(row)

    teacher = str(bank.teacher_plan())
    todo = list(dict.fromkeys([teacher] + [r[k] for r in rows for k in KINDS if k in r] + frontier))
    scored: dict[str, float] = {}
    t = time.perf_counter()
    for label in todo:
        if progress.get(f"test:{label}") is not None:
            scored[label] = progress.get(f"test:{label}")
            continue
        model = models.get(label) or assemble(bank, bank.plan(label), share_weights=True)
        scored[label] = score_quality(model, bank.tokenizer, test, task, source_prefix=bank.source_prefix).value
        progress.put(f"test:{label}", scored[label])
        say(f"test perplexity {scored[label]:12.2f}  {label}")
    seconds["scoring"] = time.perf_counter() - t
    healed: dict[str, dict] = {}  # "label|rule" -> the healed export's figures
    if healing:
        t = time.perf_counter()
        healed = _heal_all(a, cfg, bank, task, test, rows, models, rules, progress, say)
        seconds["healing"] = time.perf_counter() - t

    flops = LayerFlops(bank, targets[0])
    f_teacher = flops(teacher)["total"]

    def plan_of(label: str) -> str:
        return label.split(":", 1)[1] if label.startswith("replaceme:") else label

    timing, speed = {}, {}
    for target in targets:
        steps = []
        for label in todo:
            model = models[label] if label in models else assemble(bank, bank.plan(label))
            model, inputs = prepare(model, target)
            steps.append(timed_step(_runner(model, inputs, target), target.device))
        t = time.perf_counter()
        with pinned_threads(target.n_threads), torch.inference_mode():
            paired = measure_paired(steps, target.protocol, rounds=a.rounds or None, rng=random.Random(0),
                                    cap_seconds=max(target.protocol.verify_seconds, 20.0 * len(steps)))
        timing[target.name] = {"rounds": paired["rounds"], "seconds": time.perf_counter() - t,
                               "interval_met": paired["interval_met"]}
        speed[target.name] = {label: speedup_of(paired["ratios"][i]) for i, label in enumerate(todo)}
        say(f"paired timing on {target.name}: {paired['rounds']} rounds, {timing[target.name]['seconds']:.0f} s")

    tp = scored[teacher]
    main_target = targets[0].name
    say("")
    say(f"test perplexity on {len(test)} chapters of {os.path.relpath(a.test, ROOT)} (teacher {tp:.2f}); "
        f"x = ratio to the teacher; speed-up on {main_target} [95 % interval]")
    width = 30
    head = f"{'removed':>9} | " + " | ".join(f"{TITLES[k]:>{width}}" for k in KINDS)
    say(head)
    say("-" * len(head))
    for r in rows:
        cells = []
        for k in KINDS:
            label = r.get(k)
            if label is None:
                cells.append(f"{'-':>{width}}")
                continue
            v, s = scored[label], speed[main_target][label]
            cells.append(f"{v:9.1f} ({v / tp:5.2f}x) {s['speedup']:4.2f}x [{s['low']:.2f},{s['high']:.2f}]"
                         .rjust(width))
        say(f"{r['removed']:>3} of {depth:<3} | " + " | ".join(cells))
        for k in KINDS:
            if k in r:
                r[f"{k}_test_ppl"] = scored[r[k]]
                r[f"{k}_speedup"] = {tn: speed[tn][r[k]] for tn in speed}
                r[f"{k}_flops_ratio"] = flops(plan_of(r[k]))["total"] / f_teacher
        for k in KINDS:
            for rule in rules if healing else ():
                if k in r and f"{r[k]}|{rule}" in healed:
                    r.setdefault(f"{k}_healed", {})[rule] = healed[f"{r[k]}|{rule}"]
        base = [scored[r[k]] for k in KINDS[:-1] if k in r and k != "greedy"]
        if "modsearch" in r and base:
            r["margin_over_best_baseline"] = min(base) / scored[r["modsearch"]]
    for r in rows:
        say(f"  {r['removed']} removed: " + "; ".join(f"{TITLES[k]} {r[k]}" for k in KINDS if k in r)
            + (f" (trial {r['modsearch_trial']})" if "modsearch_trial" in r else ""))

    if healing:
        say("")
        say(f"healed at equal budget ({a.heal_steps or '-'} steps, {a.heal_minutes or '-'} min, "
            f"{a.heal_batch_tokens} tokens a step, {os.path.relpath(a.heal_data, ROOT)}): test perplexity "
            f"(x the teacher), per rule for what trains")
        for rule in rules:
            say(f"{'removed':>9} | " + " | ".join(f"{TITLES[k]:>{width}}" for k in KINDS) + f"   ({rule})")
            for r in rows:
                cells = []
                for k in KINDS:
                    h = r.get(f"{k}_healed", {}).get(rule)
                    cells.append((f"{h['test_ppl']:9.1f} ({h['test_ppl'] / tp:5.2f}x)" if h else "-").rjust(width))
                say(f"{r['removed']:>3} of {depth:<3} | " + " | ".join(cells))

    goals = []
    candidates = [lbl for lbl in todo if not lbl.startswith("replaceme:") and lbl != teacher
                  and (lbl in frontier or any(r.get("modsearch") == lbl for r in rows))]
    say("")
    for need, cap in GOALS:
        ok = [lbl for lbl in candidates if speed[main_target][lbl]["low"] >= need]
        best = min(ok, key=lambda lbl: scored[lbl]) if ok else None
        goal = {"speedup_at_least": need, "ppl_ratio_at_most": cap, "plan": best,
                "test_ppl": scored.get(best), "ppl_ratio": scored[best] / tp if best else None,
                "speedup": speed[main_target].get(best), "met": bool(best and scored[best] / tp <= cap)}
        goals.append(goal)
        say(f"goal: >= {need}x verified (lower bound), perplexity <= {cap}x: " + (
            f"{'met' if goal['met'] else 'MISSED'} by {best} ({scored[best]:.2f} = {scored[best] / tp:.2f}x, "
            f"{speed[main_target][best]['speedup']:.2f}x [{speed[main_target][best]['low']:.2f}, "
            f"{speed[main_target][best]['high']:.2f}])" if best else "no study plan is that fast"))
    seconds["total"] = time.perf_counter() - t_start
    say(f"seconds: " + ", ".join(f"{k} {v:.0f}" for k, v in seconds.items()))
    if a.json:
        from modsearch._io import write_json

        write_json(a.json, {
            "study": os.path.relpath(a.study, ROOT), "test": os.path.relpath(a.test, ROOT), "chapters": len(test),
            "command": "python benchmarks/llm_pruning.py " + " ".join(shlex.quote(x) for x in sys.argv[1:]),
            "teacher_test_ppl": tp, "fractions": list(fractions), "depth": depth,
            "calibration": {"data": os.path.relpath(calib_path, ROOT), "documents": len(calibration),
                            "tokens": calib_tokens, "sleb_texts": a.sleb_texts,
                            "sleb_tokens": a.sleb_tokens},
            "block_influence": [1.0 - sim[i][i + 1] for i in range(depth)], "replaceme": replaceme_info,
            "rows": rows, "frontier": [{"plan": lbl, "test_ppl": scored[lbl],
                                        "speedup": {tn: speed[tn][lbl] for tn in speed}} for lbl in frontier],
            "goals": goals,
            "healing": ({"steps": a.heal_steps, "minutes": a.heal_minutes, "batch_tokens": a.heal_batch_tokens,
                         "removed": a.heal_removed and sorted(int(x) for x in a.heal_removed.split(",")),
                         "data": os.path.relpath(a.heal_data, ROOT), "rules": rules} if healing else None),
            "timing": {"target": main_target, **timing[main_target], "targets": timing},
            "seconds": seconds})
    return 0


def _heal_all(a, cfg, bank, task, test, rows, models, rules, progress, say) -> dict[str, dict]:
    """Heal every plan of ``rows`` under each rule with one budget; score each healed export on ``test``."""
    import torch
    from transformers import AutoModelForCausalLM

    from modsearch.heal import HealConfig, heal
    from modsearch.plan._plan import MODULE
    from modsearch.quality._score import score_quality

    devset = cfg.load_devset()
    out: dict[str, dict] = {}
    only = {int(x) for x in a.heal_removed.split(",")} if a.heal_removed else None
    for r in rows:
        if only is not None and r["removed"] not in only:
            continue
        for kind in KINDS:
            label = r.get(kind)
            if label is None:
                continue
            plan = bank.plan(label.split(":", 1)[1] if label.startswith("replaceme:") else label)
            for rule in rules:
                key = f"{label}|{rule}"
                if key in out:
                    continue
                if rule == "modules" and not any(b.kind == MODULE for st in plan.stacks for b in st):
                    continue  # nothing to train under this rule: the plan has no module
                done = progress.get(f"heal:{key}")
                if done is not None:
                    out[key] = done
                    continue
                name = f"{kind}-{r['removed']}-{rule}"
                path = os.path.join(a.heal_dir, name)
                hcfg = HealConfig(steps=a.heal_steps, minutes=a.heal_minutes, trainable=rule, w_task=0.0,
                                  w_attn=0.0, batch_tokens=a.heal_batch_tokens, max_len=task.context_length or 256,
                                  eval_every=max(1, (a.heal_steps or 40) // 4), warmup=max(1, (a.heal_steps or 40) // 10))
                ckpt = path.rstrip(os.sep) + ".heal"
                say(f"healing {name}: {plan}")
                record = heal(bank, plan, a.heal_data, devset, task, path, hcfg, fields=(task.text_field or "text",),
                              overwrite=True, resume=os.path.exists(os.path.join(ckpt, "state.json")),
                              start=models.get(label), progress=False, log=say)
                model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
                value = score_quality(model, bank.tokenizer, test, task, source_prefix=bank.source_prefix).value
                out[key] = {"test_ppl": value, "steps": record["steps"], "best_step": record["best_step"],
                            "seconds": record["seconds"], "dev_before": record["dev"]["before"],
                            "dev_after": record["dev"]["after"], "export": os.path.relpath(path, ROOT)}
                progress.put(f"heal:{key}", out[key])
                say(f"healed {name}: dev {record['dev']['before']:.2f} -> {record['dev']['after']:.2f}, test "
                    f"perplexity {value:.2f} ({record['steps']} steps, {record['seconds']:.0f} s)")
    return out


if __name__ == "__main__":
    sys.exit(main())
