"""The package's architecture, held: each room imports only rooms before it on the data path, and no module
grows past about 500 lines."""

import ast
import os

import modsearch

ROOT = os.path.dirname(modsearch.__file__)
# The data path, in order. A room may import itself and any room before it; the shared infrastructure
# (_errors, _io, _version, _checks) comes before everything.
ORDER = ["_errors", "_io", "_version", "_checks", "data", "plan", "bank", "assembly", "quality", "train", "cost",
         "search", "results", "report", "export", "heal", "recipes", "cli", "__main__", "__init__"]


def _room(path: str) -> str:
    rel = os.path.relpath(path, ROOT)
    head = rel.split(os.sep)[0]
    return head[:-3] if head.endswith(".py") else head


def _imports(path: str):
    pkg = os.path.relpath(os.path.dirname(path), os.path.dirname(ROOT)).split(os.sep)
    for node in ast.walk(ast.parse(open(path, encoding="utf-8").read())):
        if isinstance(node, ast.ImportFrom) and node.level:
            base = pkg[: len(pkg) - (node.level - 1)]
            target = base + (node.module.split(".") if node.module else [])
            names = [a.name for a in node.names] if not node.module else [None]
            for name in names:
                parts = target + ([name] if name else [])
                if len(parts) > 1 and parts[0] == "modsearch":
                    yield node.lineno, parts[1]
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            mod = node.module if isinstance(node, ast.ImportFrom) else node.names[0].name
            if mod and mod.startswith("modsearch."):
                yield node.lineno, mod.split(".")[1]


def _modules():
    for root, _, files in os.walk(ROOT):
        for f in files:
            if f.endswith(".py") and os.sep + "metrics" + os.sep not in root + os.sep:
                yield os.path.join(root, f)


def test_every_room_imports_only_rooms_before_it():
    bad = []
    for path in _modules():
        room = _room(path)
        for line, target in _imports(path):
            if ORDER.index(target) > ORDER.index(room):  # a room missing from ORDER fails here: place it
                bad.append(f"{os.path.relpath(path, ROOT)}:{line} imports {target}")
    assert not bad, "\n".join(bad)


def test_no_module_is_over_about_500_lines():
    long = {os.path.relpath(p, ROOT): n for p in _modules() if (n := sum(1 for _ in open(p))) > 520}
    assert not long, long


def test_pyproject_claims_hold():
    """The Python version it claims runs every module (tomllib: 3.11), and every package-data file it declares
    exists (it once declared a py.typed that did not)."""
    import glob
    import re
    import tomllib

    with open(os.path.join(os.path.dirname(ROOT), "pyproject.toml"), "rb") as f:
        project = tomllib.load(f)
    lowest = tuple(int(x) for x in re.match(r">=\s*(\d+)\.(\d+)", project["project"]["requires-python"]).groups())
    uses_tomllib = any("import tomllib" in open(p, encoding="utf-8").read() for p in _modules())
    assert not uses_tomllib or lowest >= (3, 11)
    for pattern in project["tool"]["setuptools"]["package-data"]["modsearch"]:
        assert glob.glob(os.path.join(ROOT, pattern)), pattern
