"""Study configs are validated strictly: every mistake is one line that names the key."""

import os
import pytest

from modsearch import UserError
from modsearch.cli import main
from modsearch.search import Constraint, StudyConfig

BASE = """
bank = "bank"
target = "cpu-1t-b1"
objectives = ["quality", "params"]
[data]
path = "dev.jsonl"
source_field = "en"
target_field = "fr"
[budget]
n_trials = 5
"""


def _load(tmp_path, text):
    p = tmp_path / "s.toml"
    p.write_text(text)
    return StudyConfig.load(str(p))


def test_defaults_and_paths_relative_to_the_file(tmp_path):
    cfg = _load(tmp_path, BASE)
    assert cfg.name == "s" and cfg.bank == str(tmp_path / "bank") and cfg.data_path == str(tmp_path / "dev.jsonl")
    assert cfg.storage == f"sqlite:///{tmp_path / 's' / 'study.db'}"
    assert cfg.output == str(tmp_path / "s") and cfg.cache == str(tmp_path / ".cache")
    assert cfg.sampler == "nsga2" and cfg.n_trials == 5 and cfg.timeout is None and cfg.seed == 0
    task = cfg.quality_task()
    assert (task.source_field, task.target_field, task.primary) == ("en", "fr", "chrf")


@pytest.mark.parametrize("extra, key", [
    ('colour = "red"\n', "'colour'"),
    ('[cost]\nprofil = 3\n', "'cost.profil'"),
    ('[sampler]\nname = "tpe"\npopulation_size = 4\n', "sampler.population_size"),
    ('[sampler]\nname = "cmaes"\n', "sampler.name"),
    ('[space]\ndrops = "yes"\n', "space.drops"),
    ('[space]\ngranularities = [1]\n', "space.granularities"),
    ('seed = -1\n', "seed"),
    ('storage = "study.db"\n', "storage"),
    ('[seeds]\nstrategies = ["teacher", "magic"]\n', "seeds.strategies"),
    ('[cost]\nprofile = 3\n', "cost.profile"),
    ('[cost]\nprefix_memory_mb = -1\n', "cost.prefix_memory_mb"),
    ('[cost]\nprefix_memory_mb = "lots"\n', "cost.prefix_memory_mb"),
])
def test_bad_keys_and_values_name_the_key(tmp_path, extra, key):
    # Top-level keys go before the first table; a table goes at the end.
    text = BASE + extra if extra.startswith("[") else extra + BASE
    with pytest.raises(UserError, match=key.replace(".", r"\.")):
        _load(tmp_path, text)


@pytest.mark.parametrize("old, new, key", [
    ('objectives = ["quality", "params"]', 'objectives = ["params", "quality"]', "objectives"),
    ('objectives = ["quality", "params"]', 'objectives = ["quality"]', "objectives"),
    ('objectives = ["quality", "params"]', 'objectives = ["quality", "speed"]', "objectives"),
    ('objectives = ["quality", "params"]', 'objectives = ["quality", "profile_latency_ms"]', "cost.profile"),
    ('n_trials = 5', 'n_trials = 0', "budget.n_trials"),
    ('n_trials = 5', 'n_trials = "many"', "budget.n_trials"),
    ('n_trials = 5', 'timeout = -3', "budget.timeout"),
    ('path = "dev.jsonl"', 'limit = 0\npath = "dev.jsonl"', "data.limit"),
    ('bank = "bank"', 'bank = 3', "bank"),
    ('target = "cpu-1t-b1"', 'target = 7', "target"),
])
def test_wrong_values_name_the_key(tmp_path, old, new, key):
    with pytest.raises(UserError, match=key):
        _load(tmp_path, BASE.replace(old, new))


def test_constraints_parse_and_are_checked(tmp_path):
    c = Constraint.parse("quality >= 0.95 * teacher")
    assert (c.metric, c.op, c.bound, c.relative) == ("quality", ">=", 0.95, True)
    assert c.violation(40.0, teacher=40.0) < 0 and c.violation(30.0, teacher=40.0) == pytest.approx(8.0)
    assert Constraint.parse("latency_ms <= 40").violation(50.0) == 10.0
    assert Constraint.parse("params <= teacher").threshold(7.0) == 7.0
    with pytest.raises(UserError, match="constraints"):
        _load(tmp_path, BASE.replace("[data]", 'constraints = ["latency < 4"]\n[data]'))
    with pytest.raises(UserError, match="constraints"):
        _load(tmp_path, BASE.replace("[data]", 'constraints = ["beauty >= 3"]\n[data]'))
    cfg = _load(tmp_path, BASE.replace("[data]", 'constraints = ["params_ratio <= 0.6", "latency_ms<=40"]\n[data]'))
    assert [c.text for c in cfg.constraints] == ["params_ratio <= 0.6", "latency_ms<=40"]
    assert cfg.needs_latency()  # a latency constraint needs the measurement even when no objective does


def test_command_line_overrides(tmp_path):
    cfg = _load(tmp_path, BASE.replace("[budget]", '[sampler]\nname = "nsga2"\npopulation_size = 6\n[budget]'))
    o = cfg.override(storage="sqlite:///x.db", study_name="other", n_trials=9, timeout=60, sampler="tpe", seed=3)
    assert (o.storage, o.name, o.n_trials, o.timeout, o.sampler, o.seed) == ("sqlite:///x.db", "other", 9, 60.0,
                                                                            "tpe", 3)
    assert o.sampler_settings == {}  # population_size belongs to nsga2
    assert cfg.override().n_trials == 5
    with pytest.raises(UserError, match="--sampler"):
        cfg.override(sampler="annealing")
    with pytest.raises(UserError, match="--storage"):
        cfg.override(storage="x.db")


def test_cli_bad_study_is_one_line_with_status_2(tmp_path, capsys):
    p = tmp_path / "s.toml"
    p.write_text(BASE + "\n[sampler]\nname = 'nsga2'\nflavour = 1\n")
    assert main(["search", str(p)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "sampler.flavour" in err
    assert main(["search", str(tmp_path / "missing.toml")]) == 2
    assert "not found" in capsys.readouterr().err
    assert main(["search", str(p), "--n-trials", "zero"]) == 2
    assert main(["search", str(p.with_name("bad.toml"))]) == 2
    p.with_name("bad.toml").write_text("bank = [")
    assert main(["search", str(p.with_name("bad.toml"))]) == 2
    assert "not valid TOML" in capsys.readouterr().err


def test_search_help_has_description_and_examples(capsys):
    with pytest.raises(SystemExit):
        main(["search", "--help"])
    out = capsys.readouterr().out
    assert "frontier" in out and "examples:" in out and "modsearch search studies/bible-en-fr.toml" in out


def test_another_study_name_writes_its_trials_to_a_folder_of_its_own(tmp_path):
    cfg = _load(tmp_path, BASE)
    other = cfg.override(study_name="other")
    assert other.output != cfg.output and os.path.basename(other.output) == "other"
    assert other.storage == cfg.storage  # the same storage holds both studies, by name
    explicit = _load(tmp_path, 'output = "results"\n' + BASE)
    assert explicit.override(study_name="b").output == os.path.join(explicit.output, "b")
    assert cfg.override(study_name=cfg.name).output == cfg.output
