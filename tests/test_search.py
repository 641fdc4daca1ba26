"""Search: a static genome every sampler models, baselines first, constraints kept, nothing evaluated twice,
and a study that a second run continues."""

import contextlib
import itertools
import json
import logging
import sqlite3
import warnings

import optuna
import pytest

import tiny
from modsearch import LayerBank, UserError
from modsearch.cli import main
from modsearch.plan import PlanGenome
from modsearch.plan import PlanSpace
from modsearch.search import hypervolume, make_sampler, pareto_front, run_search, seed_plans, trials_frame
from modsearch.search import StudyConfig


# -- the genome ------------------------------------------------------------------------------------------
def _aligned(depth, grans):
    return {(i, i + k - 1) for k in grans for i in range(0, depth - k + 1, k)}


@pytest.mark.parametrize("depths, spans, drops", [
    ([3, 4], [{(0, 1), (1, 2), (0, 2)}, {(0, 1), (2, 3), (1, 3)}], True),
    ([3, 4], [{(0, 1), (1, 2), (0, 2)}, {(0, 1), (2, 3), (1, 3)}], False),
    ([5], [_aligned(5, [2, 3])], True),
    ([2, 2], [set(), {(0, 1)}], True),
])
def test_every_genome_decodes_to_a_valid_plan_and_every_plan_is_reachable(depths, spans, drops):
    space = PlanSpace(depths, spans, drops=drops)
    genome = PlanGenome(space, [f"s{i}" for i in range(len(depths))])
    names = list(genome.choices)
    decoded = set()
    for values in itertools.product(*(genome.choices[n] for n in names)):
        plan = genome.decode(dict(zip(names, values)))
        assert space.contains(plan), plan
        decoded.add(str(plan))
    every = {str(p) for p in space}
    assert decoded == every and len(every) == space.count()
    for plan in space:  # to_params is a right inverse of decode
        assert genome.decode(genome.to_params(plan)) == plan


def _default_space():
    # The default bank's space: M2M100 6+6 with aligned modules of span 2 and 3, drops allowed.
    return PlanSpace([6, 6], [_aligned(6, [2, 3])] * 2)


class _Fallbacks(logging.Handler):
    def __init__(self):
        super().__init__(logging.WARNING)
        self.messages = []

    def emit(self, record):
        if "sampled independently" in record.getMessage():
            self.messages.append(record.getMessage())


SAMPLERS = [("tpe", {"n_startup_trials": 6, "warn_independent_sampling": True}), ("nsga2", {"population_size": 6}),
            ("nsga3", {"population_size": 6}), ("gp", {"n_startup_trials": 6}), ("random", {})]


@pytest.mark.parametrize("name, settings", SAMPLERS, ids=[s[0] for s in SAMPLERS])
def test_samplers_model_the_whole_static_space_without_fallbacks(name, settings):
    if name == "gp":
        pytest.importorskip("scipy", reason="GPSampler needs scipy, which is not installed here")
    space = _default_space()
    genome = PlanGenome(space, ["encoder", "decoder"])

    def objective(trial):
        plan = genome.suggest(trial)
        assert space.contains(plan)
        kept = sum(d for d in plan.depths)
        modules = sum(b.kind == "module" for blocks in plan.stacks for b in blocks)
        trial.set_constraint("some", kept - 10)
        return kept + 0.3 * modules, -kept

    handler = _Fallbacks()
    logger = logging.getLogger("optuna")
    logger.addHandler(handler)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if name == "tpe":
                sampler = optuna.samplers.TPESampler(seed=0, multivariate=True, **settings)
            else:
                sampler = make_sampler(name, settings, seed=0)
            study = optuna.create_study(directions=["maximize", "minimize"], sampler=sampler)
            study.optimize(objective, n_trials=20)
    finally:
        logger.removeHandler(handler)
    assert handler.messages == []
    assert all(set(t.params) == set(genome.choices) for t in study.trials)
    if name != "random":
        # The sampler's joint (relative) space is every gene: nothing is left to independent sampling.
        relative = sampler.infer_relative_search_space(study, study.trials[-1])
        assert set(relative) == set(genome.choices)


def test_nsga_population_defaults_to_what_the_tabular_replay_chose():
    assert make_sampler("nsga2", {}, seed=0)._population_size == 8
    assert make_sampler("nsga3", {}, seed=0)._population_size == 16
    assert make_sampler("nsga2", {"population_size": 20}, seed=0)._population_size == 20


def test_seed_plans_are_valid_distinct_and_tagged():
    space = _default_space()
    seeds = seed_plans(None, space, ["teacher", "uniform", "speed-first", "size-first", "drop-alternate", "drop-one"])
    plans = [str(p) for p, _ in seeds]
    assert len(plans) == len(set(plans)) and all(space.contains(p) for p, _ in seeds)
    tags = dict(zip(plans, (s for _, s in seeds)))
    assert plans[0] == "0,1,2,3,4,5/0,1,2,3,4,5" and tags[plans[0]] == "teacher"
    assert tags["0-1,2-3,4-5/0-1,2-3,4-5"] == "uniform" and tags["0-2,3-5/0-2,3-5"] == "uniform"
    # speed-first compresses the decoder before touching the encoder
    speed = [p for p in plans if tags[p] == "speed-first"]
    assert speed[0] == "0,1,2,3,4,5/0-1,2,3,4,5" and speed[3] == "0,1,2,3,4,5/0-2,3-5"
    assert tags["0,x1,2,x3,4,x5/0,x1,2,x3,4,x5"] == "drop-alternate"
    assert sum(1 for s in tags.values() if s == "drop-one") == 12
    nodrops = PlanSpace([6, 6], [_aligned(6, [2, 3])] * 2, drops=False)
    assert all("x" not in str(p) for p, _ in seed_plans(None, nodrops, ["teacher", "drop-one", "drop-alternate"]))


def test_hypervolume_and_front():
    assert hypervolume([[0.0, 1.0], [1.0, 0.0], [1.5, 1.5]], [2.0, 2.0]) == pytest.approx(3.0)
    assert hypervolume([[3.0, 0.0]], [2.0, 2.0]) == 0.0
    assert hypervolume([[0.0, 0.0, 0.0]], [1.0, 1.0, 1.0]) == pytest.approx(1.0)
    assert pareto_front([[0, 1], [1, 0], [1, 1]]) == [0, 1]


# -- end to end on a tiny bank ---------------------------------------------------------------------------
SOURCES = ["the a of and to in is that", "for it", "with as was on be by this are at from", "or an",
           "which his her the of", "a"]
TARGETS = ["le la les de", "et un une des en", "du", "est que pour dans qui par", "sur au", "avec il elle ne"]


@pytest.fixture(scope="module")
def tiny_setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("search")
    tiny.save_tiny("m2m_100", str(root / "model"), enc=4, dec=4)
    LayerBank.init(str(root / "model"), str(root / "bank"), granularities=[2])
    with open(root / "dev.jsonl", "w") as f:
        for s, t in zip(SOURCES, TARGETS):
            f.write(json.dumps({"en": s, "fr": t}) + "\n")
    return root


def _study(root, name="s", n_trials=8, extra=""):
    text = f"""
bank = "bank"
target = "cpu-1t-b1"
objectives = ["quality", "params"]
{extra}
[data]
path = "dev.jsonl"
source_field = "en"
target_field = "fr"
[task]
metric = "token_accuracy"
[sampler]
name = "nsga2"
population_size = 4
[seeds]
strategies = ["teacher", "uniform", "speed-first", "drop-alternate"]
[budget]
n_trials = {n_trials}
"""
    p = root / f"{name}.toml"
    p.write_text(text)
    return str(p)


def test_search_end_to_end_continues_and_never_evaluates_a_plan_twice(tiny_setup):
    root = tiny_setup
    cfg = StudyConfig.load(_study(root, "e2e", n_trials=8))
    first = run_search(cfg, progress=False, log=None)
    study = first.study
    assert first.n_trials == 8 and not first.interrupted
    trials = study.trials
    assert [d.name for d in study.directions] == ["MAXIMIZE", "MINIMIZE"]
    assert study.metric_names == ["quality", "params"]
    assert trials[0].user_attrs["strategy"] == "teacher" and trials[0].user_attrs["plan"] == "0,1,2,3/0,1,2,3"
    strategies = [t.user_attrs["strategy"] for t in trials]
    # The baselines take at most a quarter of the budget (2 of 8 trials): the teacher, then round-robin.
    assert strategies[:2] == ["teacher", "uniform"] and set(strategies[2:]) == {"sampler"}
    for t in trials:
        a = t.user_attrs
        for key in ("plan", "quality", "token_accuracy", "params", "params_ratio", "flops", "flops_ratio",
                    "speedup", "timings", "fingerprint", "feasible", "cached"):
            assert key in a, key
        assert t.values == [a["quality"], a["params"]]
    distinct = {t.user_attrs["plan"] for t in trials}
    # The teacher is scored once before the study starts; its trial is then served from the cache.
    assert first.evaluations["quality"] == len(distinct)
    assert study.user_attrs["modsearch"]["bank_checksum"] == LayerBank.load(str(root / "bank")).checksum
    assert (root / "e2e" / "trials.csv").exists() and (root / "e2e" / "trials.parquet").exists()
    df = trials_frame(study)
    assert len(df) == 8 and "user_attrs_plan" in df and "values_quality" in df
    # SQLite in WAL mode: a trial's ~30 storage writes do not wait for two fsyncs each.
    with contextlib.closing(sqlite3.connect(root / "e2e" / "study.db")) as con:
        assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    # The encoder pass that encoder reuse runs apart from generate() is the model's time too, and recorded.
    assert all(t.user_attrs["timings"]["encode_s"] >= 0 for t in trials)
    assert any(t.user_attrs["timings"]["encode_s"] > 0 for t in trials)

    # Same command again with a larger budget: the same study continues, and only new plans are evaluated.
    second = run_search(cfg.override(n_trials=14), progress=False, log=None)
    assert second.n_trials == 14 and second.new_trials == 6 and len(second.study.trials) == 14
    new_plans = {t.user_attrs["plan"] for t in second.study.trials} - distinct
    assert second.evaluations.get("quality", 0) == len(new_plans)
    assert sum(t.user_attrs["strategy"] == "teacher" for t in second.study.trials) == 1  # seeds not re-enqueued
    # At budget already: nothing runs.
    again = run_search(cfg.override(n_trials=14), progress=False, log=None)
    assert again.new_trials == 0 and again.evaluations.get("quality", 0) == 0

    # Another study over the same bank, data, task and target shares the cache: its seeds cost nothing.
    other = run_search(StudyConfig.load(_study(root, "other", n_trials=4)), progress=False, log=None)
    assert other.n_trials == 4 and other.evaluations.get("quality", 0) == 0
    done = [t for t in other.study.trials if t.state.name == "COMPLETE"]
    assert len(done) == 4 and all(t.user_attrs["cached"] for t in done)


def test_constraints_mark_infeasible_trials_which_stay(tiny_setup):
    cfg = StudyConfig.load(_study(tiny_setup, "cons", n_trials=6, extra='constraints = ["params_ratio <= 0.8"]'))
    result = run_search(cfg, progress=False, log=None)
    trials = result.study.trials
    assert len(trials) == 6 and all(t.state.name == "COMPLETE" for t in trials)
    infeasible = [t for t in trials if not t.user_attrs["feasible"]]
    assert infeasible and infeasible[0].user_attrs["strategy"] == "teacher"  # the teacher is the full size
    assert infeasible[0].user_attrs["constraint:params_ratio <= 0.8"] == pytest.approx(0.2)
    best = {t.number for t in result.study.best_trials}
    assert best and not best & {t.number for t in infeasible}
    assert all(r["params_ratio"] <= 0.8 for r in result.frontier)


def test_ctrl_c_keeps_completed_trials_and_a_rerun_continues(tiny_setup):
    cfg = StudyConfig.load(_study(tiny_setup, "intr", n_trials=6))

    def interrupt_after_three(study, trial):
        if trial.number == 2:
            raise KeyboardInterrupt

    result = run_search(cfg, progress=False, log=None, callbacks=[interrupt_after_three])
    assert result.interrupted and result.n_trials == 3
    assert (tiny_setup / "intr" / "trials.csv").exists()
    resumed = run_search(cfg, progress=False, log=None)
    assert resumed.n_trials == 6 and not resumed.interrupted


def test_cli_search_prints_the_frontier_and_refuses_a_changed_study(tiny_setup, capsys):
    path = _study(tiny_setup, "cli", n_trials=5)
    assert main(["search", path, "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "frontier" in out and "trials.csv" in out and "speedup" in out and "optuna-dashboard sqlite:///" in out
    header = next(line for line in out.splitlines() if line.startswith("trial "))
    assert header.split()[:6] == ["trial", "plan", "strategy", "quality", "params", "params_ratio"]
    # Same study name and storage, different objectives: refused in one line, not silently mixed.
    changed = path
    text = open(changed).read().replace('["quality", "params"]', '["quality", "flops"]')
    open(changed, "w").write(text)
    assert main(["search", changed, "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "another objectives" in err



def test_a_budget_of_plans_counts_distinct_plans_not_re_proposals(tiny_setup):
    cfg = StudyConfig.load(_study(tiny_setup, "plans", n_trials=1)).override(n_plans=9)
    assert cfg.n_trials is None and cfg.n_plans == 9  # a count budget given here replaces the file's
    result = run_search(cfg, progress=False, log=None)
    done = [t for t in result.study.trials if t.state.name == "COMPLETE"]
    assert result.n_plans == 9 == len({t.user_attrs["plan"] for t in done})
    # The trial that brought the ninth plan was the last.
    assert done[-1].user_attrs["plan"] not in {t.user_attrs["plan"] for t in done[:-1]}
    again = run_search(cfg.override(n_plans=12), progress=False, log=None)
    assert again.n_plans == 12 and again.new_trials >= 3
    assert run_search(cfg.override(n_plans=12), progress=False, log=None).new_trials == 0


def test_a_budget_of_plans_beyond_the_space_stops_at_its_trial_cap(tiny_setup):
    # Without drops, 4 layers with modules 0-1 and 2-3 tile 4 ways: 16 plans, fewer than the 17 asked for.
    # A sampler then only re-proposes known plans (trials served from the cache): it stops at 10 x 17 trials.
    from modsearch.search import PLAN_TRIAL_FACTOR

    path = _study(tiny_setup, "full", n_trials=1, extra="[space]\ndrops = false")
    lines = []
    cfg = StudyConfig.load(path).override(n_plans=17, sampler="random")  # random finds all 16 (seeded)
    result = run_search(cfg, progress=False, log=lines.append)
    assert result.n_plans == 16 and result.n_trials == PLAN_TRIAL_FACTOR * 17
    assert result.evaluations.get("quality", 0) <= 16
    rerun = run_search(cfg, progress=False, log=lines.append)
    assert rerun.new_trials == 0 and any("keeps proposing known plans" in line for line in lines)


def test_budget_of_plans_is_validated_and_refused_by_workers(tiny_setup):
    text = open(_study(tiny_setup, "budget", n_trials=1)).read()
    bad = tiny_setup / "bad-budget.toml"
    bad.write_text(text.replace("n_trials = 1", "n_plans = 0"))
    with pytest.raises(UserError, match="budget.n_plans"):
        StudyConfig.load(str(bad))
    bad.write_text(text.replace("n_trials = 1", "n_plans = 5"))
    from modsearch.search import run_worker

    with pytest.raises(UserError, match="budget.n_plans is for `modsearch search`"):
        run_worker(StudyConfig.load(str(bad)).override(n_trials=5, n_plans=5), "sqlite:///unused.db")


def test_the_timeout_counts_the_seeds_calibration(tiny_setup, monkeypatch):
    """``budget.timeout`` is the run's wall time: seeds that take longer than the timeout leave the trials the
    1 s floor, where the same study without the slow seeds runs its whole trial budget."""
    import time as _time

    from modsearch.search import _run

    real = _run.seed_plans

    def slow_seeds(*args, **kwargs):
        _time.sleep(3.0)
        return real(*args, **kwargs)

    lines: list[str] = []
    cfg = StudyConfig.load(_study(tiny_setup, "timeout", n_trials=200)).override(timeout=2.5)
    monkeypatch.setattr(_run, "seed_plans", slow_seeds)
    t0 = _time.perf_counter()
    slow = run_search(cfg, progress=False, log=lines.append)
    took = _time.perf_counter() - t0
    import re

    spent = [int(m.group(1)) for line in lines if (m := re.match(r"time budget: (\d+) s of 2 s spent", line))]
    assert spent and spent[0] >= 3, lines
    # After the seeds (3 s) only the 1 s floor is left: Optuna stops at the first trial that ends past it.
    assert slow.n_trials < 200 and took < spent[0] + 1.0 + 15.0
    first_trial = min(t.datetime_start for t in slow.study.trials if t.datetime_start)
    last_trial = max(t.datetime_complete for t in slow.study.trials if t.datetime_complete)
    assert (last_trial - first_trial).total_seconds() < 1.0 + 10.0
