"""Files that travel hold no path of the machine they were made on: the committed JSON (the default bank's
manifest, benchmark records) and everything a bank, its training and an export write. A path is recorded as a
file name plus its sha256, or relative."""

from __future__ import annotations

import json
import os
import re
import subprocess

import pytest

import tiny
from modsearch import LayerBank
from modsearch.export import export_study_point
from modsearch.search import StudyConfig, run_search
from modsearch.train import TrainConfig, train_bank

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_ABSOLUTE_URL = re.compile(r"^[a-z][a-z0-9+]*:////")  # sqlite:////home/...


def absolute_paths(obj, where: str = "") -> list[str]:
    """Every string in a JSON document that is an absolute path (or a URL holding one), with where it is."""
    if isinstance(obj, dict):
        return [p for k, v in obj.items() for p in absolute_paths(v, f"{where}.{k}")]
    if isinstance(obj, list):
        return [p for i, v in enumerate(obj) for p in absolute_paths(v, f"{where}[{i}]")]
    if isinstance(obj, str) and (os.path.isabs(obj) or _ABSOLUTE_URL.match(obj)):
        return [f"{where} = {obj}"]
    return []


def _committed(pattern: str) -> list[str]:
    """The committed files matching a git pathspec that exist in the checkout (skips outside a git checkout)."""
    try:
        out = subprocess.run(["git", "ls-files", pattern], cwd=REPO, capture_output=True, text=True, check=True)
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout")
    return [f for f in out.stdout.splitlines() if os.path.isfile(os.path.join(REPO, f))]


def test_no_committed_json_holds_an_absolute_path():
    files = _committed("*.json")
    assert "banks/bible-en-fr/manifest.json" in files
    found = {f: absolute_paths(json.load(open(os.path.join(REPO, f), encoding="utf-8"))) for f in files}
    assert not {f: p for f, p in found.items() if p}


# A path of the machine in a log line or a command: "/" then at least two directories, after a space, a quote,
# "=", "(" or the start of a line (so "tokens/s" and URLs do not count), or behind a URL scheme.
_PATH_IN_TEXT = re.compile(r"""(?:^|[\s'"=(])/(?:[A-Za-z0-9_.+-]+/){2,}|[a-z][a-z0-9+]*:////[A-Za-z]""", re.M)


def test_no_committed_record_holds_an_absolute_path():
    # Logs, tables and JSON of benchmarks/results hold what a run printed: a command, a warning's source file or a
    # study's storage URL printed with the machine's path leaks it (two Gemma logs did).
    files = _committed("benchmarks/results")
    assert len(files) > 20
    found = {}
    for f in files:
        with open(os.path.join(REPO, f), encoding="utf-8", errors="replace") as fh:
            hits = [m.group(0).strip() for m in _PATH_IN_TEXT.finditer(fh.read())]
        if hits:
            found[f] = hits[:3]
    assert not found
    assert _PATH_IN_TEXT.search("paired timing: 9 rounds; 110 tokens/s; https://ai.google.dev/gemma/terms") is None
    assert _PATH_IN_TEXT.search('bank /work/main/banks/x (3 plans)') and _PATH_IN_TEXT.search("sqlite:////w/s.db")


def test_a_bank_its_training_and_an_export_record_no_absolute_path(tmp_path):
    """Made from absolute paths throughout (model, data, study), as a user's machine would give them."""
    tiny.translation_bank(tmp_path, {"train.jsonl": 2})
    bank = LayerBank.load(str(tmp_path / "bank"))
    cfg = TrainConfig(steps=2, batch_tokens=64, eval_every=2, eval_size=4, source_field="en", target_field="fr")
    train_bank(bank, str(tmp_path / "train.jsonl"), cfg, dev_data=str(tmp_path / "dev.jsonl"), progress=False,
               log=lambda m: None)
    (tmp_path / "tiny.toml").write_text(f"""
bank = "{tmp_path / 'bank'}"
target = "cpu-1t-b1"
objectives = ["quality", "params"]
[data]
path = "{tmp_path / 'dev.jsonl'}"
source_field = "en"
target_field = "fr"
[task]
metric = "chrf"
max_new_tokens = 4
[sampler]
name = "random"
[budget]
n_trials = 2
""")
    run_search(StudyConfig.load(str(tmp_path / "tiny.toml")), progress=False, log=None)
    export_study_point(str(tmp_path / "tiny.toml"), str(tmp_path / "export"), trial=0)
    manifest = json.loads((tmp_path / "bank" / "manifest.json").read_text())
    assert manifest["provenance"]["training"]["data"]["train"]["name"] == "train.jsonl"
    for path in [tmp_path / "bank" / "manifest.json"] + sorted((tmp_path / "export").glob("*.json")):
        assert not absolute_paths(json.loads(path.read_text())), path
    for path in (tmp_path / "export").iterdir():
        if path.suffix in (".json", ".md", ".txt"):
            assert str(tmp_path) not in path.read_text(), path
