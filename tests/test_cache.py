"""Cache honesty: a cached evaluation is served only when everything that could change it is in its key.

Each case changes one thing that can change a score or a cost (the bank's files, the dev data, the task, a local
metric's code, the target, the machine, the software) and the cache must miss; changing nothing must hit.
"""

import json
import os
import shutil

import pytest

import tiny
from modsearch import LayerBank
from modsearch.data import DevSet
from modsearch.quality import QualityTask
from modsearch.search import EvaluationCache, PlanEvaluator
from modsearch.search import _evaluator

TARGET = {"name": "fast", "device": "cpu", "threads": 1, "input_length": 8, "output_length": 4,
          "protocol": {"warmup": 1, "min_iterations": 3, "min_seconds": 0.0}}
PLAN = "0-1,2-3/0,1,2,3"
ROWS = [{"en": "the a of and", "fr": "le la les"}, {"en": "to in is", "fr": "de et"}]


@pytest.fixture
def world(tmp_path):
    tiny.save_tiny("m2m_100", str(tmp_path / "model"), enc=4, dec=4)
    LayerBank.init(str(tmp_path / "model"), str(tmp_path / "bank"), granularities=[2])
    with open(tmp_path / "dev.jsonl", "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in ROWS)
    metric = tmp_path / "my_metric"
    shutil.copytree(os.path.join(os.path.dirname(_evaluator.__file__), "..", "quality", "metrics", "chrf"), metric)
    return tmp_path


def _evaluator_for(world, *, data="dev.jsonl", metric="chrf", num_beams=1, target=TARGET):
    bank = LayerBank.load(str(world / "bank"))
    dev = DevSet.load(str(world / data), "translation", source_field="en", target_field="fr")
    task = QualityTask("translation", metric=metric, num_beams=num_beams, source_field="en", target_field="fr")
    return PlanEvaluator(bank, dev, task, target, cache=EvaluationCache(str(world / "cache")))


def _keys(ev):
    plan = ev.bank.plan(PLAN)
    return ev.quality_key(plan), ev.cost_key(plan, True)


def _hits(world, ev) -> tuple[bool, bool]:
    cache = EvaluationCache(str(world / "cache"))
    q, c = _keys(ev)
    return cache.get("quality", q) is not None, cache.get("cost", c) is not None


def _fill(world, ev):
    q, c = _keys(ev)
    cache = EvaluationCache(str(world / "cache"))
    cache.put("quality", q, {"quality": 1.0})
    cache.put("cost", c, {"latency_ms": 1.0})


def test_nothing_changed_is_a_hit_and_the_key_is_checked_not_just_its_digest(world):
    ev = _evaluator_for(world)
    _fill(world, ev)
    assert _hits(world, _evaluator_for(world)) == (True, True)
    # an entry whose stored key differs from the one asked for (planted, or another key scheme) is a miss
    cache = EvaluationCache(str(world / "cache"))
    q, _ = _keys(ev)
    path = cache._path("quality", cache.digest("quality", q))
    entry = json.load(open(path))
    entry["key"]["plan"] = "something else"
    json.dump(entry, open(path, "w"))
    assert cache.get("quality", q) is None


@pytest.mark.parametrize("change", ["bank weights", "generation config", "tokenizer", "data", "task",
                                    "metric code", "software"])
def test_a_change_to_what_a_score_depends_on_is_a_miss(world, change, monkeypatch):
    _fill(world, _evaluator_for(world))
    kwargs = {}
    base = world / "bank" / "base"
    if change == "bank weights":
        with open(base / "model.safetensors", "r+b") as f:
            f.seek(-4, 2)
            f.write(b"\0\0\0\1")
    elif change == "generation config":
        cfg = json.load(open(base / "generation_config.json"))
        json.dump(cfg | {"no_repeat_ngram_size": 3}, open(base / "generation_config.json", "w"))
    elif change == "tokenizer":
        with open(base / "tokenizer_config.json", "a") as f:
            f.write("\n")
    elif change == "data":
        with open(world / "dev2.jsonl", "w") as f:
            f.writelines(json.dumps(r | {"fr": r["fr"] + " et"}) + "\n" for r in ROWS)
        kwargs["data"] = "dev2.jsonl"
    elif change == "task":
        kwargs["num_beams"] = 2
    elif change == "metric code":
        # keyed by content: the same path with other code is another metric
        _fill(world, _evaluator_for(world, metric=str(world / "my_metric")))
        assert _hits(world, _evaluator_for(world, metric=str(world / "my_metric")))[0]
        with open(world / "my_metric" / "chrf.py", "a") as f:
            f.write("\n# changed\n")
        kwargs["metric"] = str(world / "my_metric")
    elif change == "software":
        real = _evaluator.software_versions
        monkeypatch.setattr(_evaluator, "software_versions", lambda: real() | {"transformers": "99.0"})
    quality_hit, _ = _hits(world, _evaluator_for(world, **kwargs))
    assert not quality_hit


@pytest.mark.parametrize("change", ["bank weights", "target", "machine", "software"])
def test_a_change_to_what_a_cost_depends_on_is_a_miss(world, change, monkeypatch):
    _fill(world, _evaluator_for(world))
    kwargs = {}
    if change == "bank weights":
        with open(world / "bank" / "base" / "model.safetensors", "r+b") as f:
            f.seek(-4, 2)
            f.write(b"\0\0\0\1")
    elif change == "target":
        kwargs["target"] = TARGET | {"output_length": 8}
    elif change == "machine":
        from modsearch.cost import _target

        real = _target.fingerprint
        monkeypatch.setattr(_target, "fingerprint", lambda device="cpu": real(device) | {"cpu_model": "other"})
    elif change == "software":
        real = _evaluator.software_versions
        monkeypatch.setattr(_evaluator, "software_versions", lambda: real() | {"modsearch": "9.9"})
    _, cost_hit = _hits(world, _evaluator_for(world, **kwargs))
    assert not cost_hit


@pytest.mark.parametrize("edited, missed", [  # (quality missed, cost missed)
    ("quality/_score.py", (True, False)),
    ("assembly.py", (True, True)),
    ("cost/_measure.py", (False, True)),
    ("bank/arch/_decoder_only.py", (True, True)),
    ("report/_page.py", (False, False)),
])
def test_a_change_to_modsearchs_own_scoring_code_is_a_miss(world, monkeypatch, edited, missed):
    """The version number (0.1.0) never changes between commits; the keys hold the content of the code that
    computes each result, so an edit to it cannot serve a stale result, and an edit elsewhere keeps the hits."""
    from modsearch import _version

    copy = world / "modsearch-copy"
    shutil.copytree(_version.PACKAGE_DIR, copy, ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setattr(_version, "PACKAGE_DIR", str(copy))
    _fill(world, _evaluator_for(world))
    assert _hits(world, _evaluator_for(world)) == (True, True)
    with open(copy / edited, "a") as f:
        f.write("\n# changed\n")
    quality_hit, cost_hit = _hits(world, _evaluator_for(world))
    assert (not quality_hit, not cost_hit) == missed
