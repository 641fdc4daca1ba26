"""MkDocs hooks: the pages generated from the code and the records at build time (none of them is committed).

- ``reference/cli.md`` from the argparse parsers (:mod:`cli_reference`);
- ``results/index.md`` from ``benchmarks/results/*.json`` (:mod:`results`);
- ``<!-- gen:targets -->`` in a page: the table of the targets shipped in ``studies/targets/``.
"""

from __future__ import annotations

import glob
import os
import sys
import tomllib

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import cli_reference  # noqa: E402
import results  # noqa: E402

from mkdocs.structure.files import File  # noqa: E402

GENERATED = {"reference/cli.md": cli_reference.render, "results/index.md": results.render_page}


def targets_table() -> str:
    rows = ["| target | what it models |", "|---|---|"]
    for path in sorted(glob.glob(os.path.join(results.REPO, "studies", "targets", "*.toml"))):
        with open(path, "rb") as f:
            desc = tomllib.load(f).get("description", "")
        rows.append(f"| `{os.path.splitext(os.path.basename(path))[0]}` | {desc} |")
    return "\n".join(rows)


def on_files(files, config):
    for uri, render in GENERATED.items():
        files.append(File.generated(config, uri, content=render()))
    return files


def on_page_markdown(markdown, page, config, files):
    if "<!-- gen:targets -->" in markdown:
        markdown = markdown.replace("<!-- gen:targets -->", targets_table())
    return markdown
