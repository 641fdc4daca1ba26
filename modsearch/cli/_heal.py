"""The ``modsearch heal`` verb: distil one chosen assembly from the teacher, then export it."""

from __future__ import annotations

import os
import textwrap

from .._errors import UserError

HIDDEN_LOSS_HELP = ("how the hidden-state MSE is scaled: global (by the teacher state's mean square), per-dim "
                    "(each dimension by its own, so a few massive dimensions do not drown the rest) or both "
                    "(their sum); default global")

_DESCRIPTION = (
    "Assemble a plan (a study's trial, the best trial meeting a condition, or a plan of a bank), distil the whole "
    "assembled model from the bank's teacher on training data (task cross-entropy, logit KL, hidden states at "
    "every block boundary: the bank's losses), score it on the dev set before healing and every --eval-every "
    "steps, keep the best step, and write the same standalone Hugging Face directory as `export`, with the "
    "healing (steps, data hash, dev score before and after) in assembly.json and the model card. Resumable "
    "(--resume) from OUT.heal/. With a study, the dev set, task, metric and lm windows are the study's; with a "
    "bank, give --dev and the task options.")


def add_heal_parser(sub, fmt, examples) -> None:
    s = sub.add_parser("heal", help="distil a chosen assembly from the teacher, then export it", formatter_class=fmt,
                       description=textwrap.fill(_DESCRIPTION, 100),
                       epilog=examples("""
                           modsearch heal studies/bible-en-fr.toml --pick 'speedup >= 2' \\
                               --data banks/bible-en-fr.work/data/train.jsonl --minutes 10 --out exports/fast-healed
                           modsearch heal studies/bible-en-fr.toml --trial 17 --data train.jsonl --steps 500 \\
                               --trainable modules --out exports/t17-healed
                           modsearch heal banks/bible-en-fr --plan 0-1,2-3,4-5/0-2,3-5 --data train.jsonl \\
                               --dev data/bible-en-fr/dev.jsonl --source-field en --target-field fr --limit 100 \\
                               --minutes 5 --out exports/healed"""))
    s.add_argument("source", help="a study TOML (with --trial, --pick or --plan), or a bank directory (with --plan)")
    s.add_argument("--trial", type=int, metavar="N", help="heal trial N of the study")
    s.add_argument("--pick", metavar="EXPR", help="heal the best-quality feasible trial meeting EXPR")
    s.add_argument("--plan", help="heal this plan (plan notation)")
    s.add_argument("--data", required=True, metavar="FILE", help="training data, JSONL or CSV, with the dev set's "
                                                                 "fields")
    s.add_argument("--out", required=True, help="directory to write (as `export` writes)")
    s.add_argument("--steps", type=int, default=0, help="optimiser steps (budget; with --minutes, whichever ends first)")
    s.add_argument("--minutes", type=float, default=0.0, help="wall-time budget in minutes (training and dev scoring)")
    s.add_argument("--trainable", default="all", help="all (every parameter but embeddings and LM head), modules, "
                                                      "or last-K (the last K blocks of each stack); default all")
    s.add_argument("--lr", type=float, default=1e-4, help="peak learning rate (default 1e-4)")
    s.add_argument("--warmup", type=int, default=20, help="warm-up steps (default 20)")
    s.add_argument("--batch-tokens", type=int, default=2048, help="padded tokens per batch (default 2048)")
    s.add_argument("--max-len", type=int, default=128, help="truncate training sequences to this many tokens")
    s.add_argument("--w-task", type=float, default=1.0, help="weight of the task cross-entropy on the training "
                                                             "data (0: pure distillation, the student can only "
                                                             "approach the teacher, not adapt to the data's domain)")
    s.add_argument("--w-logits", type=float, default=1.0, help="weight of the logit KL to the teacher")
    s.add_argument("--w-hidden", type=float, default=1.0, help="weight of the relative hidden-state MSE at every "
                                                               "kept block's end")
    s.add_argument("--hidden-loss", default="global", help=HIDDEN_LOSS_HELP)
    s.add_argument("--w-attn", type=float, default=1.0, help="weight of the attention KL (0 skips it)")
    s.add_argument("--eval-every", type=int, default=100, help="steps between dev scorings (default 100)")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    s.add_argument("--device", default="cpu", help="cpu or cuda[:n] (default cpu)")
    s.add_argument("--autocast", default="none", help="none, bf16 or fp16 (fp16: GPU only): the forwards and the "
                                                      "LM head in that precision, losses in fp32. bf16 is fast on "
                                                      "CPUs with AMX or AVX512-BF16, slow on others")
    s.add_argument("--resume", action="store_true", help="continue the run checkpointed in OUT.heal/")
    s.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    s.add_argument("--storage", metavar="URL", help="Optuna storage URL (default: the study file's)")
    s.add_argument("--study-name", metavar="NAME", help="study name (default: the study file's)")
    g = s.add_argument_group("with a bank directory: the dev set and how to score it")
    g.add_argument("--dev", metavar="FILE", help="dev set scored before healing and every --eval-every steps")
    g.add_argument("--task", default="translation", choices=["translation", "summarization", "lm"])
    g.add_argument("--metric", help="metric (default: chrf for translation, rouge for summarization, perplexity)")
    g.add_argument("--source-field", help="source field of the dev and training data (with a study: of the "
                                          "training data; default the study's)")
    g.add_argument("--target-field", help="reference field of the dev and training data (as --source-field)")
    g.add_argument("--text-field", help="text field for --task lm (as --source-field)")
    g.add_argument("--limit", type=int, metavar="N", help="score the first N dev examples")
    g.add_argument("--context-length", type=int, metavar="N",
                   help="lm: score each dev text whole, in windows of N tokens, as a study with context_length N "
                        "does (default: the model's positions, used only when a text is longer than them)")
    g.add_argument("--stride", type=int, metavar="S", help="lm: a window starts every S tokens (default N/2)")
    g.add_argument("--max-new-tokens", type=int, default=128, metavar="N", help="generation length limit")
    g.add_argument("--batch-size", type=int, default=32, metavar="N", help="dev examples per batch")
    s.set_defaults(func=cmd_heal)


def cmd_heal(a) -> int:
    from ..heal import HealConfig, heal

    cfg = HealConfig(steps=a.steps, minutes=a.minutes, trainable=a.trainable, lr=a.lr, warmup=a.warmup,
                     batch_tokens=a.batch_tokens, max_len=a.max_len, w_task=a.w_task, w_logits=a.w_logits,
                     w_hidden=a.w_hidden, w_attn=a.w_attn, hidden_loss=a.hidden_loss, eval_every=a.eval_every,
                     seed=a.seed, threads=a.threads, device=a.device, autocast=a.autocast).validate()
    if os.path.exists(a.out) and not a.overwrite:
        raise UserError(f"{a.out} already exists; choose another --out or pass --overwrite")
    if os.path.isdir(a.source):
        bank, plan, info, task, devset = _bank_point(a)
    else:
        bank, plan, info, task, devset = _study_point(a)
    # The training data's fields: as given, else the dev set's.
    fields = ((a.text_field or task.text_field or "text",) if bank.kind != "seq2seq" else
              (a.source_field or task.source_field or "source", a.target_field or task.target_field or "target"))
    rec = heal(bank, plan, a.data, devset, task, a.out, cfg, fields=fields, overwrite=a.overwrite,
               resume=a.resume, info=info, log=lambda m: print(m, flush=True))
    d = rec["dev"]
    print(f"healed {plan} for {rec['steps']} steps ({rec['seconds']:.0f} s): dev {d['metric']} {d['before']:.4f} -> "
          f"{d['after']:.4f} (step {rec['best_step']}); written to {a.out}")
    return 0


def _bank_point(a):
    from ..bank._bank import LayerBank
    from ..quality._score import QualityTask

    if a.plan is None or a.trial is not None or a.pick is not None:
        raise UserError(f"{a.source} is a bank directory: give --plan PLAN (--trial and --pick need a study TOML)")
    if not a.dev:
        raise UserError("with a bank directory, give --dev FILE: healing keeps the step with the best dev score")
    task = QualityTask(a.task, metric=a.metric, source_field=a.source_field, target_field=a.target_field,
                       text_field=a.text_field, max_new_tokens=a.max_new_tokens, batch_size=a.batch_size,
                       context_length=a.context_length, stride=a.stride)
    bank = LayerBank.load(a.source)
    return bank, bank.plan(a.plan), {}, task, task.load_devset(a.dev, limit=a.limit)


def _study_point(a):
    from ..export import study_point
    from ..search._config import StudyConfig

    if a.dev:
        raise UserError("--dev applies to a bank directory; a study heals against its own dev set")
    if a.context_length is not None or a.stride is not None:
        raise UserError("--context-length and --stride apply to a bank directory; a study scores dev in its own "
                        "windows ([task] context_length and stride)")
    cfg = StudyConfig.load(a.source)
    bank, plan, info = study_point(a.source, trial=a.trial, pick=a.pick, plan=a.plan, storage=a.storage,
                                   study_name=a.study_name)
    task = cfg.quality_task()
    return bank, bank.plan(plan), info, task, cfg.load_devset()
