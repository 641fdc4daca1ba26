"""The documentation shows only commands that work.

Every ``bash`` block of the README, of every page under ``docs/`` and of every verb's ``--help`` examples is read
here: each ``modsearch`` command must parse with the program's own parser (an option that was renamed or removed
fails), the cheap ones (a bank's info, its plans) are run as shown, every ``python benchmarks/...`` command may
use only options that script's ``--help`` lists, and every ``pip install`` names extras that exist. The README's
generated blocks must be current, its links must resolve, and ``mkdocs build --strict`` must pass (a broken link
or anchor fails it).
"""

from __future__ import annotations

import functools
import glob
import os
import re
import shlex
import shutil
import subprocess
import sys
import tomllib

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "docs", "tools"))

import cli_reference  # noqa: E402
import readme  # noqa: E402
import results  # noqa: E402
from modsearch.cli._main import build_parser, main  # noqa: E402
from modsearch._errors import UserError  # noqa: E402

PAGES = sorted(glob.glob(os.path.join(REPO, "docs", "**", "*.md"), recursive=True)) + [os.path.join(REPO, "README.md")]
# Programs the docs may show besides modsearch and the benchmarks; each is checked below or is not ours to run.
OTHER = {"./setup.sh", ".ci/run", "pip", "pytest", "optuna-dashboard", "python3", "sudo", "apt-get"}
# Verbs cheap enough to run exactly as the docs show them (a second or two each on the committed bank).
CHEAP = {("bank", "info"), ("bank", "verify"), ("plans",)}


def _fences(text: str) -> list[tuple[str, str]]:
    """(language, body) of every fenced block, opening and closing fences paired in order."""
    out, lang, body = [], None, []
    for line in text.splitlines():
        stripped = line.strip()
        if lang is None and stripped.startswith("```"):
            lang, body = stripped[3:].strip().split(" ")[0], []
        elif lang is not None and stripped == "```":
            out.append((lang, "\n".join(body) + "\n"))
            lang = None
        elif lang is not None:
            body.append(line)
    return out


def _blocks(text: str, lang: str = "bash") -> list[str]:
    return [body for fence_lang, body in _fences(text) if fence_lang == lang]


def _logged(text: str) -> list[str]:
    """The commands in blocks without a language, which show a command with what it printed."""
    out = []
    for block in _blocks(text, ""):
        joined = block.replace("\\\n", " ")
        out += [line for line in joined.splitlines() if re.match(r"(modsearch|python|\.venv/bin/)\S* ", line)]
    return out


def _commands(block: str) -> list[list[str]]:
    """Each command of a bash block as argv: continuations joined, comments dropped, ``&&`` chains split."""
    out = []
    for line in block.replace("\\\n", " ").splitlines():
        argv = shlex.split(line, comments=True)
        while argv:
            cut = argv.index("&&") if "&&" in argv else len(argv)
            out.append(argv[:cut])
            argv = argv[cut + 1:]
    return [a for a in out if a]


def _shown() -> list[tuple[str, list[str]]]:
    """(where, argv) of every command the docs and the --help examples show."""
    found = []
    for page in PAGES:
        text = open(page, encoding="utf-8").read()
        for block in _blocks(text) + _logged(text):
            found += [(os.path.relpath(page, REPO), argv) for argv in _commands(block)]
    for full, _help, sub in cli_reference.verbs():
        epilog = "\n".join(line.strip() for line in (sub.epilog or "").splitlines())
        found += [(f"{full} --help", argv) for argv in _commands(epilog) if argv[0] == "modsearch"]
    return found


def _program(argv: list[str]) -> tuple[str, list[str]]:
    """What runs, and its arguments: ``modsearch`` (however invoked), ``python SCRIPT``, or another program."""
    while argv and (argv[0] in ("/usr/bin/time", "-v", "nice", "-n", "10") or re.fullmatch(r"\w+=\S*", argv[0])):
        argv = argv[1:]
    head = os.path.basename(argv[0])
    if head == "modsearch":
        return "modsearch", argv[1:]
    if head in ("python", "python3") and argv[1:3] == ["-m", "modsearch"]:
        return "modsearch", argv[3:]
    if head in ("python", "python3") and argv[1:3] == ["-m", "pip"] or head == "pip":
        return "pip", argv[argv.index("install") + 1:] if "install" in argv else []
    if head in ("python", "python3") and argv[1:2] == ["-m"]:
        return argv[2], argv[3:]
    if head in ("python", "python3") and len(argv) > 1 and argv[1].endswith(".py"):
        return argv[1], argv[2:]
    if head == "mkdocs":
        return "mkdocs", argv[1:]
    return argv[0], argv[1:]


def _shown_by(program) -> list[tuple[str, list[str]]]:
    return [(where, args) for where, argv in _shown() for prog, args in [_program(argv)] if program(prog)]


def test_the_docs_show_commands_of_known_programs_only():
    unknown = [(where, argv) for where, argv in _shown()
               if _program(argv)[0] not in OTHER | {"modsearch", "pip", "mkdocs"}
               and not _program(argv)[0].endswith(".py") and not _program(argv)[0].startswith("modsearch.")]
    assert not unknown, f"commands of programs this test does not check: {unknown}"
    assert len(_shown_by(lambda p: p == "modsearch")) > 40  # the extraction itself works


def test_every_modsearch_command_shown_parses():
    parser = build_parser()
    bad = []
    for where, args in _shown_by(lambda p: p == "modsearch"):
        # Placeholders a reader replaces (N, PLAN...) stand for values; an integer option gets a number here.
        args = ["3" if a in ("N", "K", "M", "S") else a for a in args]
        try:
            parser.parse_args(args)
        except (UserError, SystemExit) as exc:
            bad.append(f"{where}: modsearch {' '.join(args)}: {exc}")
    assert not bad, "\n".join(bad)


def test_cheap_commands_run_as_shown(monkeypatch, capsys):
    monkeypatch.chdir(REPO)
    ran = set()
    for where, args in _shown_by(lambda p: p == "modsearch"):
        verb = tuple(args[:2]) if args[:1] == ["bank"] else tuple(args[:1])
        if verb not in CHEAP or " ".join(args) in ran or not os.path.exists(os.path.join(REPO, args[len(verb)])):
            continue
        ran.add(" ".join(args))
        assert main(args) == 0, f"{where}: modsearch {' '.join(args)}: {capsys.readouterr().err}"
    out = capsys.readouterr().out
    assert {"bank info banks/bible-en-fr", "plans banks/bible-en-fr --count"} <= ran, ran
    assert "21,025" in out


@functools.cache
def _help_text(module_or_script: str, sub: str | None = None) -> str:
    target = ["-m", module_or_script] if not module_or_script.endswith(".py") else [module_or_script]
    proc = subprocess.run([sys.executable, *target, *([sub] if sub else []), "--help"], capture_output=True,
                          text=True, cwd=REPO, timeout=300)
    assert proc.returncode == 0, f"{module_or_script} {sub or ''} --help failed: {proc.stderr[-2000:]}"
    if sub is None and re.search(r"\{[\w,-]+\}", proc.stdout.split("\n\n")[0]):
        return proc.stdout  # a script with sub-commands: the caller asks again for the one shown
    return proc.stdout


def _options_of(prog: str, args: list[str]) -> str:
    text = _help_text(prog)
    subs = re.search(r"\{([\w,-]+)\}", text.split("\n\n")[0])
    if subs and args and args[0] in subs.group(1).split(","):
        return _help_text(prog, args[0])
    return text


def test_script_commands_shown_use_options_that_exist():
    bad = []
    for where, argv in _shown():
        prog, args = _program(argv)
        if not (prog.endswith(".py") or prog.startswith("modsearch.")):
            continue
        if prog.endswith(".py") and not os.path.exists(os.path.join(REPO, prog)):
            bad.append(f"{where}: {prog} does not exist")
            continue
        text = _options_of(prog, args)
        bad += [f"{where}: {prog} has no option {a}" for a in args
                if a.startswith("--") and not re.search(rf"(?<![\w-]){re.escape(a.split('=')[0])}(?![\w-])", text)]
    assert not bad, "\n".join(bad)


def test_install_commands_name_extras_that_exist():
    with open(os.path.join(REPO, "pyproject.toml"), "rb") as f:
        extras = set(tomllib.load(f)["project"]["optional-dependencies"])
    shown = _shown_by(lambda p: p == "pip")
    named = {e.strip() for _w, args in shown for a in args for m in [re.search(r"\[([^\]]+)\]", a)] if m
             for e in m.group(1).split(",")}
    assert named and named <= extras, named - extras
    for script in ("setup.sh", ".ci/run"):
        assert os.access(os.path.join(REPO, script), os.X_OK), script


def test_python_blocks_compile_and_their_imports_exist():
    for page in PAGES:
        for block in _blocks(open(page, encoding="utf-8").read(), "python"):
            compile(block, page, "exec")
            for line in block.splitlines():
                if re.match(r"(from \S+ )?import ", line):
                    exec(line, {})  # noqa: S102 - the docs' own import lines


def test_readme_generated_blocks_are_current():
    text = open(readme.README, encoding="utf-8").read()
    assert readme.render(text) == text, "README.md is out of date: run `python docs/tools/readme.py`"


def test_readme_is_short_and_its_links_resolve():
    text = open(readme.README, encoding="utf-8").read()
    assert len(text.splitlines()) <= 250
    links = re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", text)
    assert links
    missing = [link for link in links if not link.startswith("http") and not os.path.exists(os.path.join(REPO, link))]
    assert not missing, missing
    assert "./setup.sh && .venv/bin/modsearch search studies/bible-en-fr.toml" in text and ".ci/run" in text


def test_generated_pages_name_every_verb_and_every_record():
    page = cli_reference.render()
    for full, _help, sub in cli_reference.verbs():
        assert f"`{full}`" in page
        for action in sub._actions:
            for flag in action.option_strings:
                assert flag in page, (full, flag)
    text = results.render_page()
    for name in [results.BANK_QUALITY, results.REPLAY, *results.LLM_PRUNING.values(), *results.HEALED.values()]:
        assert f"benchmarks/results/{name}" in text


def test_results_are_read_from_the_records_not_typed():
    # One figure, followed from its record to the README: change the record and the README's table would change.
    rec = results._load(results.BANK_QUALITY)
    half = next(r for r in rec["rows"] if r["plan"] == "0-1,2-3,4-5/0-1,2-3,4-5")
    assert f"test chrF {half['chrf']:.2f}" in open(readme.README, encoding="utf-8").read()


@pytest.mark.skipif(shutil.which("mkdocs", path=os.path.dirname(sys.executable)) is None,
                    reason="mkdocs is not installed (pip install -e '.[docs]'; .ci/run installs it)")
def test_site_builds_strict(tmp_path):
    mkdocs = shutil.which("mkdocs", path=os.path.dirname(sys.executable))
    proc = subprocess.run([mkdocs, "build", "--strict", "--site-dir", str(tmp_path / "site")],
                          capture_output=True, text=True, cwd=REPO, timeout=300,
                          env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert (tmp_path / "site" / "reference" / "cli" / "index.html").exists()
    assert (tmp_path / "site" / "results" / "index.html").exists()
