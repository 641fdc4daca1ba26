"""The ``modsearch eval`` verb: assemble a plan and score its quality on a dev set.

A thin layer over :func:`modsearch.score.score_plan`; every user mistake raises :class:`UserError` (one line,
exit status 2), and ``--save-predictions`` is written atomically after scoring, so a failure leaves no file.
"""

from __future__ import annotations

import json
import textwrap

from .._errors import UserError

_DESCRIPTION = (
    "Assemble a plan from a bank and score its quality on a dev set (local JSONL/JSON/CSV/TSV, or a hub dataset "
    "id when the network allows). Metrics: chrf, bleu, rouge (shipped offline modules), any evaluate id or local "
    "metric module, and the teacher-forced built-ins loss, perplexity and token_accuracy. The first metric is "
    "the primary one. Generation is batched, length-sorted, greedy (or beam with --num-beams). A source prefix "
    "the bank was trained with comes from its manifest. Prints the scores and the wall time.")


def add_eval_parser(sub, fmt, examples) -> None:
    """Register ``eval`` on the ``modsearch`` subparsers (``examples`` formats the epilog)."""
    s = sub.add_parser("eval", help="score a plan's quality on a dev set", formatter_class=fmt,
                       description=textwrap.fill(_DESCRIPTION, 100),
                       epilog=examples("""
                           modsearch eval banks/bible-en-fr --plan 0-1,2-3,4-5/0,1,2,3,4,5 \\
                               --data data/bible-en-fr/dev.jsonl --source-field en --target-field fr --limit 300
                           modsearch eval banks/bible-en-fr --data data/bible-en-fr/dev.jsonl --source-field en \\
                               --target-field fr --metric chrf --metric bleu --num-beams 4 --json
                           modsearch eval banks/my-gpt2 --plan 0-1,2,3,x4,5 --data wiki.jsonl --task lm \\
                               --text-field text --metric perplexity
                           modsearch eval banks/bible-en-fr --plan 0,1,2,3,4,5/0-2,3-5 --data dev.jsonl \\
                               --source-field en --target-field fr --save-predictions preds.jsonl"""))
    s.add_argument("bank", help="a bank directory")
    s.add_argument("--plan", help="the plan to score, in plan notation (default: the original model)")
    s.add_argument("--data", required=True, metavar="FILE", help="dev set: .jsonl/.json/.csv/.tsv file or hub id")
    s.add_argument("--task", default="translation", choices=["translation", "summarization", "lm"],
                   help="what the model does (default translation)")
    s.add_argument("--metric", action="append", metavar="NAME",
                   help="metric name, evaluate id or local metric path; repeat or comma-separate for several, "
                        "the first is primary (default: chrf for translation, rouge for summarization, "
                        "perplexity for lm)")
    s.add_argument("--primary-key", metavar="KEY",
                   help="which score of an unknown evaluate metric's result is its primary one")
    s.add_argument("--source-field", help="source field (default: source for translation, document for "
                                          "summarization)")
    s.add_argument("--target-field", help="reference field (default: target for translation, summary for "
                                          "summarization)")
    s.add_argument("--text-field", help="text field for --task lm (default: text)")
    s.add_argument("--limit", type=int, metavar="N", help="score only the first N examples")
    s.add_argument("--source-prefix", metavar="TEXT",
                   help="text put before every source (default: the bank's, from its manifest; '' for none)")
    s.add_argument("--num-beams", type=int, default=1, metavar="N", help="beam size (default 1: greedy)")
    s.add_argument("--max-new-tokens", type=int, default=128, metavar="N",
                   help="generation length limit (default 128)")
    s.add_argument("--max-source-tokens", type=int, metavar="N", help="truncate sources to N tokens")
    s.add_argument("--context-length", type=int, metavar="N",
                   help="lm: score each text whole, in windows of N tokens (default: the model's positions, used "
                        "only when a text is longer than them)")
    s.add_argument("--stride", type=int, metavar="S", help="lm: a window starts every S tokens (default N/2)")
    s.add_argument("--batch-size", type=int, default=32, metavar="N", help="examples per batch (default 32)")
    s.add_argument("--save-predictions", metavar="FILE",
                   help="write one JSON line per example (id, source, reference, hypothesis, loss)")
    # Hardware cost on a target (FLOPs, memory, measured latency) and a profile's predicted latency.
    from ._cost import add_cost_options

    add_cost_options(s)
    s.add_argument("--json", action="store_true", help="print the result as JSON")
    s.set_defaults(func=cmd_eval)


def cmd_eval(a) -> int:
    from .._io import write_text
    from ..bank._bank import LayerBank
    from ..quality._score import QualityTask, prediction_rows, score_plan

    metric = ",".join(a.metric) if a.metric else None
    task = QualityTask(a.task, metric=metric, source_field=a.source_field, target_field=a.target_field,
                       text_field=a.text_field, num_beams=a.num_beams, max_new_tokens=a.max_new_tokens,
                       batch_size=a.batch_size, max_source_tokens=a.max_source_tokens,
                       source_prefix=a.source_prefix, primary_key=a.primary_key, context_length=a.context_length,
                       stride=a.stride)
    if a.save_predictions:
        _check_writable(a.save_predictions)
    # Cheap checks first: the bank manifest and the plan, then the data; weights load only after.
    bank = LayerBank.load(a.bank)
    plan = bank.plan(a.plan) if a.plan else bank.teacher_plan()
    if a.target:
        from ..cost._target import HardwareTarget

        HardwareTarget.resolve(a.target).check_available()  # refuse an impossible target before any work
    if a.profile:
        from ..cost._profile import LatencyProfile

        LatencyProfile.load(a.profile).check_bank(bank)
    devset = task.load_devset(a.data, limit=a.limit)
    task.load_metrics()
    result = score_plan(bank, plan, devset, task, return_predictions=bool(a.save_predictions))
    described = bank.describe_plan(plan)
    if a.save_predictions:
        rows = prediction_rows(devset, result)
        write_text(a.save_predictions, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    cost = None
    if a.target or a.profile:
        from ._cost import eval_cost

        prefix = task.source_prefix if task.source_prefix is not None else bank.source_prefix
        lengths = [len(ids) for ids in bank.tokenizer([prefix + s for s in devset.sources])["input_ids"]]
        if not a.json:
            _print_quality(a, task, devset, described, result)
        cost = eval_cost(bank, plan, a, input_lengths=lengths)
    if a.json:
        print(json.dumps({**described, "data": {"path": a.data, "examples": len(devset),
                                                "content_hash": devset.content_hash, "fields": devset.fields},
                          "task": task.to_json(), **result.to_json(), **({"cost": cost} if cost else {})},
                         indent=2, default=str))
        return 0
    if cost is None:
        _print_quality(a, task, devset, described, result)
    return 0


def _print_quality(a, task, devset, described, result) -> None:
    gen = (f"beam {task.num_beams}" if task.num_beams > 1 else "greedy") + f", max {task.max_new_tokens} new tokens"
    print(f"plan       {described['plan']}  ({described['params']:,} parameters, "
          f"{described['params_ratio']:.1%} of the original)")
    print(f"data       {a.data}: {len(devset)} examples (content hash {devset.content_hash[:12]})")
    print(f"task       {task.task}" + (f", {gen}" if task.generates else "") + f", batch {task.batch_size}")
    width = max(10, *(len(k) + 1 for k in result.scores))
    for k, v in result.scores.items():
        note = ""
        if k == result.primary:
            note = "  (primary, " + ("higher" if result.greater_is_better else "lower") + " is better)"
        print(f"{k:<{width}} {v:.4f}{note}")
    parts = ", ".join(f"{k} {v:.2f} s" for k, v in result.timings.items())
    print(f"{'wall time':<{width}} {result.wall_time:.2f} s" + (f" ({parts})" if parts else ""))
    if a.save_predictions:
        print(f"predictions written to {a.save_predictions}")


def _check_writable(path: str) -> None:
    import os

    if os.path.isdir(path):
        raise UserError(f"--save-predictions {path} is a directory; give a file name")
    parent = os.path.dirname(os.path.abspath(path))
    if os.path.exists(parent) and not os.path.isdir(parent):
        raise UserError(f"--save-predictions {path}: {parent} is not a directory")
