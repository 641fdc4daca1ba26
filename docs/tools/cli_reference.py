"""The CLI reference, generated from the argparse parsers that ``modsearch`` itself builds.

Nothing here is typed by hand: every verb, argument, default and example comes from
:func:`modsearch.cli._main.build_parser`, so the page cannot drift from the program. ``verbs()`` also gives the
README's short table of verbs (``docs/tools/readme.py``).
"""

from __future__ import annotations

import argparse
import textwrap

from modsearch.cli._main import PROG, build_parser


def _subparsers(parser: argparse.ArgumentParser):
    """(name, help, parser) of each sub-command of ``parser``, in the order they were added."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {a.dest: a.help for a in action._choices_actions}
            for name, sub in action.choices.items():
                yield name, helps.get(name, ""), sub


def verbs(parser: argparse.ArgumentParser | None = None, prefix: str = PROG):
    """Every leaf command as ``(full command, one-line help, parser)``: ``modsearch bank init``, ``modsearch plans``,
    ..."""
    parser = parser or build_parser()
    for name, help_text, sub in _subparsers(parser):
        full = f"{prefix} {name}"
        children = list(_subparsers(sub))
        if children:
            yield from verbs(sub, full)
        else:
            yield full, help_text or "", sub


def _flag_cell(action: argparse.Action) -> str:
    if not action.option_strings:
        return f"`{action.metavar or action.dest}`"
    names = ", ".join(action.option_strings)
    if action.nargs == 0:
        return f"`{names}`"
    metavar = action.metavar or action.dest.upper()
    if isinstance(metavar, tuple):
        metavar = " ".join(metavar)
    if action.choices and not action.metavar:
        metavar = "{" + ",".join(map(str, action.choices)) + "}"
    return f"`{names} {metavar}`"


def _cell(text) -> str:
    return " ".join(str(text).split()).replace("|", "\\|")


def _help(action: argparse.Action) -> str:
    text = action.help or ""
    if "%(" in text:
        params = dict(vars(action), prog=PROG)
        params = {k: (getattr(v, "__name__", v)) for k, v in params.items()}
        try:
            text = text % params
        except (KeyError, TypeError, ValueError):
            pass
    return text


def _default(action: argparse.Action) -> str:
    d = action.default
    if action.nargs == 0 or d is None or d is argparse.SUPPRESS or d in ([], "") or d is False:
        return ""
    return f"`{d}`"


def render_verb(full: str, help_text: str, sub: argparse.ArgumentParser) -> str:
    out = [f"## `{full}`", ""]
    if help_text:
        out += [help_text[0].upper() + help_text[1:] + ".", ""]
    if sub.description and sub.description.strip() != help_text:
        out += [textwrap.dedent(sub.description).strip(), ""]
    usage = sub.format_usage().replace("usage: ", "", 1).strip()
    out += ["```text", usage, "```", ""]
    rows = [a for a in sub._actions if a.help is not argparse.SUPPRESS and not isinstance(a, argparse._HelpAction)]
    if rows:
        out += ["| argument | default | meaning |", "|---|---|---|"]
        out += [f"| {_flag_cell(a)} | {_default(a)} | {_cell(_help(a))} |" for a in rows]
        out.append("")
    if sub.epilog:
        epilog = textwrap.dedent(sub.epilog).strip()
        lines = epilog.splitlines()
        if lines and lines[0].rstrip().endswith(":"):
            out += [lines[0].strip(), ""]
            lines = lines[1:]
        out += ["```bash", textwrap.dedent("\n".join(lines)).strip(), "```", ""]
    return "\n".join(out)


def render() -> str:
    """The whole CLI reference page (Markdown)."""
    parser = build_parser()
    all_verbs = list(verbs(parser))
    out = ["# CLI reference", "",
           "*This page is generated from the program's own argparse parsers when the site is built "
           "(`docs/tools/cli_reference.py`); `modsearch VERB --help` prints the same.*", "",
           "Every verb has `--help` with examples. A user mistake (bad path, plan, config, bank or data) prints one "
           "line `modsearch: error: ...` and exits with status 2; files are written atomically. "
           "`python -m modsearch ...` is the same program as `modsearch ...`.", "",
           "| command | what it does |", "|---|---|"]
    for full, help_text, _sub in all_verbs:
        anchor = full.replace(" ", "-")
        out.append(f"| [`{full}`](#{anchor}) | {_cell(help_text)} |")
    out.append("")
    for full, help_text, sub in all_verbs:
        anchor = full.replace(" ", "-")
        out.append(render_verb(full, help_text, sub).replace(f"## `{full}`", f"## `{full}` {{ #{anchor} }}", 1))
    return "\n".join(out)


if __name__ == "__main__":  # pragma: no cover
    print(render())
