"""Scale-out: workers on a real PostgreSQL survive a SIGKILL mid-trial without losing or duplicating work, and
the SQLite default resumes after one.

Kill tests run the worker/search as subprocesses whose launcher (``_cli``) slows each real evaluation by
MODSEARCH_TEST_EVAL_DELAY seconds (it wraps the evaluation cache's ``start`` log line; production code has no
such hook), so that "mid-trial" can be caught on a tiny bank. The evaluation cache's
log (``evaluations/log.jsonl``: one ``start`` and one ``done`` line per real evaluation) says which plan was
evaluated how often.
"""

import collections
import json
import os
import signal
import subprocess
import sys
import time

import optuna
import pytest

import pgserver
import tiny
from modsearch import LayerBank
from modsearch.cli import main
from test_search import SOURCES, TARGETS

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def pg_url():
    """A throwaway PostgreSQL on loopback, stopped afterwards. CI sets MODSEARCH_REQUIRE_POSTGRES=1: there a
    missing server is a failure, not a skip."""
    try:
        server = pgserver.start()
    except pgserver.Unavailable as exc:
        if os.environ.get("MODSEARCH_REQUIRE_POSTGRES") == "1":
            pytest.fail(f"PostgreSQL is required here (MODSEARCH_REQUIRE_POSTGRES=1): {exc}")
        pytest.skip(f"no PostgreSQL: {exc}")
    try:
        yield server.url
    finally:
        server.stop()


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    root = tmp_path_factory.mktemp("workers")
    tiny.save_tiny("m2m_100", str(root / "model"), enc=4, dec=4)
    LayerBank.init(str(root / "model"), str(root / "bank"), granularities=[2])
    with open(root / "dev.jsonl", "w") as f:
        for s, t in zip(SOURCES, TARGETS):
            f.write(json.dumps({"en": s, "fr": t}) + "\n")
    return root


def _study(root, name, n_trials):
    # A small inline target: FLOPs of a 4-token generation cost little, so a trial is mostly the test delay.
    text = f"""
bank = "bank"
objectives = ["quality", "params"]
cache = ".cache-{name}"
[target]
device = "cpu"
threads = 1
input_length = 8
output_length = 4
[data]
path = "dev.jsonl"
source_field = "en"
target_field = "fr"
[task]
metric = "token_accuracy"
max_new_tokens = 8
[sampler]
name = "nsga2"
population_size = 8
[seeds]
strategies = ["teacher", "uniform", "speed-first", "drop-alternate"]
[budget]
n_trials = {n_trials}
"""
    p = root / f"{name}.toml"
    p.write_text(text)
    return str(p)


def _env(delay):
    env = dict(os.environ, MODSEARCH_TEST_EVAL_DELAY=str(delay), PYTHONPATH=REPO, OMP_NUM_THREADS="1",
               MKL_NUM_THREADS="1")
    return env


# The child sleeps right after logging the start of each real evaluation: the test's own hook, not the library's.
_LAUNCHER = """
import os, sys, time
import torch
torch.set_num_threads(1)
from modsearch.search import EvaluationCache
delay = float(os.environ.get("MODSEARCH_TEST_EVAL_DELAY") or 0)
log = EvaluationCache.log
def slow_log(self, event, kind, plan):
    log(self, event, kind, plan)
    if event == "start":
        time.sleep(delay)
EvaluationCache.log = slow_log
from modsearch.cli import main
sys.exit(main(sys.argv[1:]))
"""


def _cli(*args):
    return [sys.executable, "-c", _LAUNCHER, *args]


def _log(cache_dir):
    path = os.path.join(cache_dir, "evaluations", "log.jsonl")
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def _mid_evaluation(cache_dir, pid):
    """The plan ``pid`` is evaluating right now (its last log line is a start), else None."""
    mine = [e for e in _log(cache_dir) if e["worker"].endswith(f":{pid}")]
    return mine[-1]["plan"] if mine and mine[-1]["event"] == "start" else None


def _wait_kill(proc, cache_dir, min_done, deadline_s=300):
    """SIGKILL ``proc`` in the middle of an evaluation, once ``min_done`` evaluations are done in all.

    The deadline only bounds a broken run: a loaded machine (CI neighbours) may take minutes to get there."""
    deadline = time.time() + deadline_s
    while time.time() < deadline:
        assert proc.poll() is None, "the worker ended before it could be killed mid-trial"
        done = sum(e["event"] == "done" for e in _log(cache_dir))
        plan = _mid_evaluation(cache_dir, proc.pid) if done >= min_done else None
        if plan:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            return plan
        time.sleep(0.02)
    raise AssertionError("never caught the worker mid-evaluation")


def _evaluations_per_plan(cache_dir):
    starts, dones = collections.Counter(), collections.Counter()
    for e in _log(cache_dir):
        (starts if e["event"] == "start" else dones)[e["plan"]] += 1
    return starts, dones


def test_four_workers_on_postgresql_survive_a_sigkill_mid_trial(root, pg_url):
    n_trials = 40
    study_file = _study(root, "pg", n_trials=n_trials)
    cache_dir = str(root / ".cache-pg")
    args = ["worker", study_file, "--storage", pg_url, "--heartbeat", "1", "--grace", "2", "--quiet"]
    procs = [subprocess.Popen(_cli(*args), env=_env(0.4), cwd=str(root), stderr=subprocess.PIPE, text=True)
             for _ in range(4)]
    try:
        victim = procs[1]
        killed_plan = _wait_kill(victim, cache_dir, min_done=6)
        for p in procs:
            if p is not victim:
                assert p.wait(timeout=120) == 0, p.stderr.read()
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()

    from modsearch.search import storage_url

    study = optuna.load_study(study_name="pg", storage=storage_url(pg_url))
    by_state = collections.Counter(t.state.name for t in study.trials)
    assert by_state["COMPLETE"] == n_trials, by_state
    assert by_state["RUNNING"] == 0 and by_state["WAITING"] == 0, by_state
    # The killed trial was failed and retried with the same plan, and the retry completed.
    failed = [t for t in study.trials if t.state.name == "FAIL"]
    assert len(failed) == 1, by_state
    dead = failed[0]
    assert dead.user_attrs["worker"].endswith(f":{victim.pid}")
    retries = [t for t in study.trials if t.system_attrs.get("failed_trial") == dead.number]
    assert len(retries) == 1 and retries[0].state.name == "COMPLETE"
    assert retries[0].params == dead.params and retries[0].user_attrs["plan"] == killed_plan
    # No plan was evaluated twice except the retried one: every other plan started once and finished once.
    starts, dones = _evaluations_per_plan(cache_dir)
    assert starts[killed_plan] == 2 and dones[killed_plan] == 1
    assert all(n == 1 for plan, n in starts.items() if plan != killed_plan), starts
    assert all(n == 1 for n in dones.values()), dones
    completed_plans = {t.user_attrs["plan"] for t in study.trials if t.state.name == "COMPLETE"}
    assert completed_plans <= set(dones)  # every result came from exactly one real evaluation
    # The seeds were queued once, although four workers started together.
    assert sum(t.user_attrs.get("strategy") == "teacher" for t in study.trials if t.state.name == "COMPLETE") == 1


def test_sqlite_search_killed_mid_trial_resumes_and_keeps_the_budget(root):
    n_trials = 8
    study_file = _study(root, "lite", n_trials=n_trials)
    cache_dir = str(root / ".cache-lite")
    proc = subprocess.Popen(_cli("search", study_file, "--quiet"), env=_env(0.3), cwd=str(root),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        killed_plan = _wait_kill(proc, cache_dir, min_done=4)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    storage = f"sqlite:///{root / 'lite' / 'study.db'}"
    before = optuna.load_study(study_name="lite", storage=storage)
    kept = {t.number: t.values for t in before.trials if t.state.name == "COMPLETE"}
    running = [t for t in before.trials if t.state.name == "RUNNING"]
    assert len(kept) >= 3 and len(running) == 1 and running[0].user_attrs["worker"].endswith(f":{proc.pid}")

    # The same command again (in this process): it fails the dead process's trial, queues its plan again,
    # and runs up to the budget.
    assert main(["search", study_file, "--quiet"]) == 0
    study = optuna.load_study(study_name="lite", storage=storage)
    states = collections.Counter(t.state.name for t in study.trials)
    assert states["COMPLETE"] == n_trials and states["RUNNING"] == 0 and states["WAITING"] == 0, states
    assert {t.number: t.values for t in study.trials if t.number in kept} == kept  # every completed trial kept
    stale = study.trials[running[0].number]
    assert stale.state.name == "FAIL"
    retry = [t for t in study.trials if t.system_attrs.get("failed_trial") == stale.number]
    assert len(retry) == 1 and retry[0].state.name == "COMPLETE" and retry[0].user_attrs["plan"] == killed_plan
    starts, dones = _evaluations_per_plan(cache_dir)
    assert all(n == 1 for p, n in starts.items() if p != killed_plan) and all(n == 1 for n in dones.values())


def test_report_and_export_open_a_postgresql_study(root, pg_url, tmp_path, monkeypatch):
    """The storage URL goes through the same opener for search, report and export (a bare postgresql:// needs
    the installed driver mapped in; report and export once skipped that and could not open such a study)."""
    monkeypatch.chdir(root)
    study_file = _study(root, "pg-report", n_trials=3)
    assert main(["search", study_file, "--storage", pg_url, "--quiet"]) == 0
    page = tmp_path / "report.html"
    assert main(["report", study_file, "--storage", pg_url, "--out", str(page)]) == 0
    assert page.stat().st_size > 100_000
    out = tmp_path / "export"
    assert main(["export", study_file, "--storage", pg_url, "--trial", "0", "--out", str(out)]) == 0
    spec = json.loads((out / "assembly.json").read_text())
    assert spec["plan"] == "0,1,2,3/0,1,2,3" and spec["study"]["name"] == "pg-report"  # trial 0: the teacher
    assert str(root) not in json.dumps(spec)  # names and checksums, no machine paths
