"""Paired trial latency and the verified frontier, end to end on a tiny bank.

Nothing here asserts a speed: the invariants are the ones paired measurement guarantees by construction (the
teacher's speed-up is exactly 1, a plan's latency is its measured ratio times the teacher's, every estimate
lies in its interval) and the bookkeeping around it (what is stored, shown, flagged and refused). The ratio
statistics themselves are checked against drifting fake clocks in test_paired.py.
"""

import json
import math

import pytest

import tiny
from modsearch.cli import main
from modsearch.search import StudyConfig, format_frontier, frontier_rows, run_search, verify_study

TARGET = """
[target]
name = "tiny-cpu"
device = "cpu"
threads = 1
input_length = 8
output_length = 4
[target.protocol]
warmup = 1
min_iterations = 3
min_seconds = 0.0
min_rounds = 3
max_seconds = 0.3
verify_seconds = 1.0
interval = 0.05
"""


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    root = tmp_path_factory.mktemp("verify")
    tiny.translation_bank(root)
    return root


def _study(root, name, objectives='["quality", "latency_ms"]', n_trials=8, extra=""):
    text = f"""
name = "{name}"
bank = "bank"
objectives = {objectives}
{extra}
[data]
path = "dev.jsonl"
source_field = "en"
target_field = "fr"
[task]
metric = "chrf"
[sampler]
name = "nsga2"
population_size = 4
[budget]
n_trials = {n_trials}
{TARGET}
"""
    p = root / f"{name}.toml"
    p.write_text(text)
    return str(p)


@pytest.mark.filterwarnings("ignore:verify. the")  # tiny models at sub-millisecond times miss the interval goal
def test_paired_trials_and_the_verified_frontier(root, capsys):
    cfg = StudyConfig.load(_study(root, "paired"))
    result = run_search(cfg, progress=False, log=None)
    trials = [t for t in result.study.trials if t.state.name == "COMPLETE"]
    teacher = next(t for t in trials if t.user_attrs["strategy"] == "teacher").user_attrs
    assert teacher["speedup"] == 1.0 and teacher["latency_ratio"] == 1.0
    for t in trials:
        a = t.user_attrs
        assert a["latency_ms"] == pytest.approx(a["latency_ratio"] * teacher["latency_ms"])
        assert a["speedup"] == pytest.approx(1 / a["latency_ratio"])
        assert a["speedup_low"] <= a["speedup"] <= a["speedup_high"]
        assert a["latency_low_ms"] <= a["latency_ms"] <= a["latency_high_ms"]
        assert a["speedup_basis"] == "latency_ms (paired)"
    # Baselines take at most a quarter of the 8-trial budget.
    assert sum(t.user_attrs["strategy"] not in ("sampler",) for t in trials) <= 2

    record = result.study.user_attrs["verification"]
    rows = frontier_rows(result.study)
    assert record["plans"][record["teacher_plan"]]["speedup"] == 1.0
    for plan, v in record["plans"].items():
        assert v["low"] <= v["speedup"] <= v["high"] and isinstance(v["on_front"], bool)
        assert v["latency_ms"] == pytest.approx(record["teacher_ms"] / v["speedup"])
    assert record["rounds"] >= 3 and record["fingerprint"]["cpu_count"] >= 1
    # The printed frontier is the verified one: its verified rows show the verified speed-up, and its
    # latencies are the study's teacher figure over it.
    teacher_ms = result.study.user_attrs["teacher"]["latency_ms"]
    for r in rows:
        v = record["plans"].get(r["plan"])
        assert r["verified"] == (v is not None) and (v is None or v["on_front"])
        if v:
            assert r["speedup"] == v["speedup"] and r["latency_ms"] == pytest.approx(teacher_ms / v["speedup"])
    table = format_frontier(rows, result.dropped)
    assert "figures" in table.splitlines()[0] and "x [" in table

    # A fixed number of rounds too few for an interval is refused before anything is timed.
    assert main(["verify", cfg.source, "--rounds", "5", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "needs at least 6 rounds" in err and err.count("\n") == 1
    # Verify again with a fixed number of rounds, through the CLI.
    assert main(["verify", cfg.source, "--rounds", "6", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "verified in 6 interleaved rounds" in out
    again = StudyConfig.load(cfg.source)
    import optuna

    study = optuna.load_study(study_name=again.name, storage=again.storage)
    record = study.user_attrs["verification"]
    assert record["rounds"] == 6

    # The export of a verified point records the verified figures, in assembly.json and on the model card.
    point = next(r for r in frontier_rows(study) if r["plan"] in record["plans"])
    out = root / "export-verified"
    assert main(["export", cfg.source, "--trial", str(point["trial"]), "--out", str(out)]) == 0
    spec = json.loads((out / "assembly.json").read_text())
    v = record["plans"][point["plan"]]
    assert spec["verified"]["speedup"] == v["speedup"] and spec["verified"]["rounds"] == 6
    assert (spec["verified"]["low"], spec["verified"]["high"]) == (v["low"], v["high"])
    assert "Verified speed-up" in (out / "README.md").read_text()


def test_a_point_dominated_beyond_the_noise_is_found():
    from modsearch.search._verify import dominated_beyond_noise

    rows = [{"trial": 3, "plan": "a", "quality": 30.0, "latency_ms": 50.0, "speedup": 3.0},
            {"trial": 1, "plan": "b", "quality": 35.0, "latency_ms": 80.0, "speedup": 1.9},
            {"trial": 0, "plan": "t", "quality": 40.0, "latency_ms": 150.0, "speedup": 1.0}]
    names, signs = ["quality", "latency_ms"], [-1.0, 1.0]
    # Measured: "a" is really slower than "b", which scores better, beyond both intervals: "a" is dominated.
    assert dominated_beyond_noise(rows, names, signs, "latency_ms", {"a": (88.0, 92.0), "b": (76.0, 80.0),
                                                                     "t": (148.0, 152.0)}) == {"a": ["b"], "b": [],
                                                                                               "t": []}
    # Overlapping intervals: tied within the measurement, nobody is flagged (measured here: two plans of the
    # same depths verified 2.17x and 2.21x, and an independent measurement put them the other way round).
    tied = dominated_beyond_noise(rows, names, signs, "latency_ms", {"a": (79.0, 84.0), "b": (76.0, 80.0),
                                                                     "t": (148.0, 152.0)})
    assert not any(tied.values())
    # Quality keeps its recorded value; only the measured objective changes.
    assert not any(dominated_beyond_noise(rows, names, signs, "latency_ms", {"a": (68.0, 72.0), "b": (76.0, 80.0),
                                                                             "t": (148.0, 152.0)}).values())


def test_verify_refuses_what_it_cannot_verify(root, capsys, monkeypatch):
    no_latency = _study(root, "nolat", objectives='["quality", "params"]', n_trials=3)
    assert main(["verify", no_latency, "--quiet"]) == 2
    assert "no latency objective" in capsys.readouterr().err
    missing = _study(root, "never-run")
    assert main(["verify", missing, "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "run `modsearch search" in err and err.count("\n") == 1
    # Latencies measured on another machine are not re-measured here as if they were comparable.
    from modsearch.search import _evaluator

    monkeypatch.setattr(_evaluator, "machine_id", lambda fp: "elsewhere0000000")
    cfg = StudyConfig.load(_study(root, "foreign", n_trials=3, extra='[verify]\nafter_search = false'))
    run_search(cfg, progress=False, log=None)
    monkeypatch.undo()
    assert main(["verify", cfg.source, "--quiet"]) == 2
    assert "measured on another machine" in capsys.readouterr().err
    assert main(["verify", cfg.source, "--rounds", "1", "--quiet"]) == 2
    # A study that exists but has no finished trial.
    import optuna

    empty = StudyConfig.load(_study(root, "empty", n_trials=3))
    (root / "empty").mkdir(exist_ok=True)
    made = optuna.create_study(study_name="empty", storage=empty.storage, directions=["maximize", "minimize"])
    made.set_user_attr("modsearch", {"objectives": ["quality", "latency_ms"]})  # as a search stopped at once leaves it
    made.set_user_attr("teacher", {"quality": 1.0, "latency_ms": 1.0})
    capsys.readouterr()
    assert main(["verify", empty.source, "--quiet"]) == 2
    assert "no finished feasible trial" in capsys.readouterr().err


@pytest.mark.parametrize("key, value", [("interval", "3"), ("confidence", "1.0"), ("min_rounds", "1"),
                                        ("max_seconds", "0")])
def test_protocol_paired_settings_are_validated(root, capsys, key, value):
    text = open(_study(root, "badproto")).read()
    line = next(x for x in text.splitlines() if x.startswith(key)) if key in text else None
    text = text.replace(line, f"{key} = {value}") if line else text.replace("[target.protocol]",
                                                                             f"[target.protocol]\n{key} = {value}")
    path = root / "badproto2.toml"
    path.write_text(text)
    assert main(["search", str(path), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert key in err and err.count("\n") == 1 and not (root / "badproto" / "study.db").exists()


def test_seed_cap_keeps_every_strategy_and_the_extremes():
    from modsearch.plan import PlanSpace
    from modsearch.search._seeds import limit_seeds, seed_plans

    aligned = {(i, i + k - 1) for k in (2, 3) for i in range(0, 18 - k + 1, k)}
    space = PlanSpace([18], [aligned])

    class Bank:  # seed_plans reads nothing else of a bank
        pass

    seeds = seed_plans(Bank(), space, ["teacher", "uniform", "speed-first", "size-first", "drop-alternate",
                                       "drop-one"])
    assert len(seeds) > 30  # the 18-layer case the cap exists for
    capped = limit_seeds(seeds, 10)
    assert len(capped) == 10 and capped[0][1] == "teacher"
    assert {s for _, s in capped} == {s for _, s in seeds}
    drop_one = [str(p) for p, s in seeds if s == "drop-one"]
    kept = [str(p) for p, s in capped if s == "drop-one"]
    assert kept[0] == drop_one[0]
    assert limit_seeds(seeds, None) == seeds and math.isfinite(len(limit_seeds(seeds, 1)))
    assert limit_seeds(seeds, 1)[0][1] == "teacher"


def test_a_trial_cut_short_of_an_interval_records_an_unbounded_one():
    """A cap hit before 6 rounds (a slow plan, a short max_seconds) leaves the ratio's interval infinite; the
    trial records that instead of failing (it once divided by the interval's zero lower bound)."""
    from modsearch.search._run import _metrics

    rec = {"quality": 1.0, "scores": {}, "latency_ratio": 0.5, "latency_ratio_low": 0.0,
           "latency_ratio_high": math.inf}
    m = _metrics(rec, {"quality": 1.0})
    assert m["speedup"] == 2.0 and m["speedup_low"] == 0.0 and m["speedup_high"] == math.inf


def test_a_study_asking_for_too_few_verify_rounds_is_refused_before_it_runs(root, capsys):
    path = _study(root, "fewrounds", extra="[verify]\nrounds = 3")
    assert main(["search", path, "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "verify.rounds = 3" in err and "at least 6 rounds" in err and err.count("\n") == 1
    assert not (root / "fewrounds" / "study.db").exists()


def test_a_continued_study_keeps_one_latency_scale(root, monkeypatch):
    """The second run's teacher times twice as slow (this machine drifts by that much between runs): its trials'
    latency_ms still read the one teacher figure stored on the study, like the first run's."""
    from modsearch.search._evaluator import PlanEvaluator

    cfg = StudyConfig.load(_study(root, "onescale", n_trials=4,
                                  extra='constraints = ["latency_ms <= 0.999 * teacher"]\n[verify]\nafter_search = false'))
    first = run_search(cfg, progress=False, log=None)
    stated = first.study.user_attrs["teacher"]["latency_ms"]
    measure = PlanEvaluator.reference_latency
    monkeypatch.setattr(PlanEvaluator, "reference_latency", lambda self: measure(self) | {"p50": measure(self)["p50"] * 2})
    second = run_search(cfg.override(n_trials=7), progress=False, log=None)
    trials = [t for t in second.study.trials if t.state.name == "COMPLETE"]
    assert len(trials) == 7 and second.study.user_attrs["teacher"]["latency_ms"] == stated
    for t in trials:
        a = t.user_attrs
        assert a["latency_ms"] == pytest.approx(a["latency_ratio"] * stated)
        assert t.values[1] == a["latency_ms"]
        assert a["constraint:latency_ms <= 0.999 * teacher"] == pytest.approx(a["latency_ms"] - 0.999 * stated)
