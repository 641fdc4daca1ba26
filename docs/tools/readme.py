"""Rewrite the README's generated blocks: the short CLI table (from the argparse parsers) and the results table
(from ``benchmarks/results/``). ``tests/test_docs.py`` fails when the README is out of date; then run::

    python docs/tools/readme.py
"""

from __future__ import annotations

import os
import re
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import cli_reference  # noqa: E402
import results  # noqa: E402

README = os.path.join(results.REPO, "README.md")


def cli_table() -> str:
    rows = ["| command | what it does |", "|---|---|"]
    rows += [f"| `{full}` | {cli_reference._cell(help_text)} |" for full, help_text, _p in cli_reference.verbs()]
    return "\n".join(rows)


BLOCKS = {"cli": cli_table, "results": results.headline_markdown}


def render(text: str) -> str:
    """``text`` with every ``<!-- gen:NAME -->...<!-- /gen:NAME -->`` block regenerated."""
    for name, fn in BLOCKS.items():
        pattern = re.compile(rf"(<!-- gen:{name} -->\n)(?:.*?\n)?(<!-- /gen:{name} -->)", re.S)
        if not pattern.search(text):
            raise SystemExit(f"README.md has no <!-- gen:{name} --> block")
        text = pattern.sub(lambda m: m.group(1) + fn() + "\n" + m.group(2), text)
    return text


if __name__ == "__main__":
    with open(README, encoding="utf-8") as f:
        old = f.read()
    new = render(old)
    if new != old:
        with open(README, "w", encoding="utf-8") as f:
            f.write(new)
    print("README.md " + ("updated" if new != old else "already up to date"))
