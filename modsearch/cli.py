"""The ``modsearch`` command: a thin layer over the Python API.

Every user mistake raises :class:`~modsearch.UserError`, printed here as one line with exit status 2.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import textwrap

from ._cli_cost import add_profile_parser
from ._errors import UserError

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
    from .bank import LayerBank

    bank = LayerBank.init(a.model, a.out, granularities=_ints(a.granularity), starts=a.starts,
                          overwrite=a.overwrite, trust_remote_code=a.trust_remote_code,
                          source_prefix=a.source_prefix)
    info = bank.info()
    print(f"bank written to {a.out}: {info['architecture']['model_type']}, depths {info['depths']}, "
          f"{len(info['modules'])} untrained modules, {info['plans']['total']:,} plans")
    return 0


def cmd_bank_info(a) -> int:
    from .bank import LayerBank

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
    print(f"source     {prov.get('source_model')}  (created {prov.get('created')}, recipe {prov.get('recipe') or '-'})")
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
    from .bank import LayerBank

    bank = LayerBank.load(a.bank)
    problems = bank.verify()
    if problems:
        for p in problems:
            print(f"FAIL {p}")
        raise UserError(f"bank {a.bank} failed verification: {len(problems)} problem(s), first: {problems[0]}")
    print(f"OK {a.bank}: {len(bank.modules)} modules and the base model match their checksums and shapes "
          f"(bank checksum {bank.checksum[:16]})")
    return 0


# -- plans -------------------------------------------------------------------------------------------------
def cmd_plans(a) -> int:
    from .bank import LayerBank

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
    from .bank import LayerBank
    from .export import export_model

    if a.plan is None:
        raise UserError("give --plan PLAN (exporting a study's trial comes with 'modsearch search')")
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
    from ._version import __version__

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
                                         "modsearch bank init --model ./my-gpt2 --out banks/g --granularity 2 --starts all"))
    s.add_argument("--model", required=True, help="HF model directory or hub id")
    s.add_argument("--out", required=True, help="bank directory to create")
    s.add_argument("--granularity", default="2,3", help="module spans, comma-separated (default 2,3)")
    s.add_argument("--starts", default="aligned", choices=["aligned", "all"],
                   help="aligned: a span-k module at every multiple of k; all: one at every start")
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

    s = sub.add_parser("export", help="write a plan as a standalone Hugging Face model", formatter_class=fmt,
                       description="Assemble a plan and write it as a plain HF model directory with tokenizer, "
                                   "assembly.json (plan, bank checksum, modsearch version) and a model card.",
                       epilog=_examples("modsearch export banks/bible-en-fr --plan 0-1,2-3,4-5/0-1,2-3,4-5 --out exports/half"))
    s.add_argument("source", help="a bank directory")
    s.add_argument("--plan", help="the plan to export, in plan notation")
    s.add_argument("--out", required=True, help="directory to write")
    s.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    s.set_defaults(func=cmd_export)

    add_profile_parser(sub, fmt, _examples)
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
