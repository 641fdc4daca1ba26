"""Workers: one study, many processes, on any number of machines, sharing Optuna's RDB storage.

A worker joins the study a :class:`~modsearch.study.StudyConfig` describes (creating it, with its baseline
seeds, when it is the first) and evaluates trials until the study has ``n_trials`` COMPLETE trials in all.
It is :func:`modsearch.search.run_search` with three things added:

- **Heartbeats.** The storage is an ``RDBStorage`` with ``heartbeat_interval`` / ``grace_period`` and
  Optuna's ``RetryHeartbeatStaleTrialCallback``: a trial whose worker died (SIGKILL, OOM, a lost machine) stops
  beating, the next worker to start a trial fails it and queues a copy with the same parameters, so the same
  plan is evaluated again by someone else. A dead worker of the same host is recognised at once by its pid.
- **One seeding.** Creating the study and queuing the seeds happens under a lock (a PostgreSQL advisory lock,
  or a file lock beside a SQLite file), so N workers started together queue each seed once.
- **An exact budget.** A worker starts a trial only while COMPLETE + RUNNING < ``n_trials``; when the budget is
  taken by running trials it waits (and fails stale ones) instead. A trial that still finds the budget full
  once it has started (two workers raced) is PRUNED before any evaluation, so the study ends with exactly
  ``n_trials`` COMPLETE trials.

Workers that share an evaluation cache directory (one machine, or a shared file system with working ``flock``)
never evaluate one plan twice: the evaluator locks a plan, reads the cache again, and only then evaluates.
Workers on different machines with separate caches may evaluate a plan twice; that costs time, never
correctness, since each trial records its own result.

Measured latency is only comparable on one machine. A study whose objectives or constraints read ``latency_ms``
records the fingerprint of the first machine that measured it, and a worker on a machine with another
fingerprint refuses to join; score quality anywhere by using ``profile_latency_ms`` (a latency profile
measured once on the target machine) instead (see the README, "Scale-out").

>>> cfg = StudyConfig.load("studies/bible-en-fr.toml")                                       # doctest: +SKIP
>>> run_worker(cfg, "postgresql://modsearch@db-host/modsearch")                             # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses

import contextlib
import datetime
import hashlib
import os
import subprocess
import sys
import time
from collections.abc import Callable

from .._errors import UserError
from ._storage import open_storage, quiet_warnings, storage_url

__all__ = ["run_worker", "run_local_workers", "worker_storage"]


def worker_storage(url: str, heartbeat_interval: int = 10, grace_period: int | None = None, max_retry: int = 3):
    """The study's storage with heartbeats (see :func:`open_storage`): a dead worker's trial is failed and queued
    again."""
    return open_storage(url, heartbeat_interval=heartbeat_interval, grace_period=grace_period, max_retry=max_retry)


@contextlib.contextmanager
def _setup_lock(url: str, name: str):
    """Serialise study creation and seeding across workers: a PostgreSQL advisory lock, a MySQL named lock,
    or an ``flock`` beside a SQLite file. Released when the worker starts its first trial."""
    key = int.from_bytes(hashlib.sha256(f"modsearch:{name}".encode()).digest()[:8], "big", signed=True)
    if url.startswith(("postgresql", "mysql")):
        import sqlalchemy

    
        try:
            engine = sqlalchemy.create_engine(storage_url(url), poolclass=sqlalchemy.pool.NullPool,
                                              connect_args={"connect_timeout": 10})
            conn = engine.connect()
        except ImportError as exc:
            raise UserError(f"storage {url!r} needs a database driver that is not installed ({exc}); for "
                            "PostgreSQL: pip install 'modsearch[postgres]'") from None
        except Exception as exc:  # unreachable server, bad credentials, bad URL
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise UserError(f"cannot open storage {url!r}: {first}") from None
        try:
            if url.startswith("postgresql"):
                conn.execute(sqlalchemy.text("SELECT pg_advisory_lock(:k)"), {"k": key})
            else:
                conn.execute(sqlalchemy.text("SELECT GET_LOCK(:k, -1)"), {"k": f"modsearch:{name}"})
            yield
        finally:
            conn.close()  # ends the session, which releases its advisory locks
            engine.dispose()
    elif url.startswith("sqlite:///") and url[len("sqlite:///"):] not in ("", ":memory:"):
        import fcntl

        path = url[len("sqlite:///"):] + ".lock"
        os.makedirs(os.path.dirname(os.path.abspath(path)) or ".", exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)
    else:
        yield


def _check_latency_machine(study, cfg, evaluator_fingerprint: str, fp: dict) -> None:
    """Measured latency from one machine only: the first worker records its fingerprint, others must match."""
    stored = study.user_attrs.get("latency_machine")
    if stored is None:
        study.set_user_attr("latency_machine", {"id": evaluator_fingerprint, "fingerprint": fp})
        return
    if stored.get("id") != evaluator_fingerprint:
        from ..cost._target import fingerprint_mismatch

        diff = fingerprint_mismatch(stored.get("fingerprint", {}), fp)
        raise UserError(f"study {cfg.name!r} measures latency_ms on one machine, and this one differs "
                        f"({'; '.join(diff[:2]) or 'fingerprint'}); run this worker against a study that uses "
                        "profile_latency_ms (a profile measured on the target machine), see docs/scale-out.md")


def run_worker(cfg, url: str, *, heartbeat_interval: int = 10, grace_period: int | None = None,
               max_retry: int = 3, poll: float = 0.5, progress: bool = False,
               log: Callable[[str], None] | None = print):
    """Join (or create) the study ``cfg`` describes in the storage at ``url`` and run trials until it has
    ``cfg.n_trials`` COMPLETE trials (or ``cfg.timeout`` seconds pass). Returns the
    :class:`~modsearch.search.SearchResult` of this worker's view."""
    import optuna
    from optuna.trial import TrialState

    from . import _run as search
    from ._cache import worker_id
    from ._run import counts_as_trial, run_search

    if cfg.n_trials is None or cfg.n_plans is not None:
        raise UserError(f"study {cfg.name}: workers share an exact budget of trials: set budget.n_trials or pass "
                        "--n-trials N (budget.n_plans is for `modsearch search`)")
    say = log or (lambda _m: None)
    # The lock also covers opening the storage: RDBStorage creates its tables on first use, and concurrent
    # creators collide in PostgreSQL's catalog.
    lock = _setup_lock(url, cfg.name)
    lock.__enter__()
    released = False
    try:
        storage = worker_storage(url, heartbeat_interval, grace_period, max_retry)
    except BaseException:
        lock.__exit__(None, None, None)
        raise
    # Several workers would time the frontier at once and distort each other: a study run by workers is
    # verified afterwards, once, with `modsearch verify`.
    cfg = dataclasses.replace(cfg, verify_after=False)
    cfg = cfg.override(storage=url,
                       seed=cfg.seed + 1 + int(hashlib.sha256(worker_id().encode()).hexdigest()[:6], 16))

    def release():
        nonlocal released
        if not released:
            released = True
            lock.__exit__(None, None, None)

    def optimize(study, objective, n_trials, timeout, callbacks):
        release()
        if cfg.needs_latency():
            from ..cost._target import fingerprint

            ev = objective.evaluator
            _check_latency_machine(study, cfg, ev.fingerprint_id, fingerprint(ev.target.device))
        budget = cfg.n_trials
        start = time.monotonic()

        def counts():
            trials = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.RUNNING,
                                                              TrialState.PRUNED))
            done = [t for t in trials if counts_as_trial(t)]
            return len(done), [t for t in trials if t.state == TrialState.RUNNING]

        def guarded(trial):
            # Started after a race for the last slot? Then stop before any work; the trial is PRUNED.
            me = study._storage.get_trial(trial._trial_id)
            n_done, running = counts()
            ahead = [t for t in running if (t.datetime_start or _NOW, t.number) < (me.datetime_start or _NOW,
                                                                                  me.number)]
            if n_done + len(ahead) >= budget:
                raise optuna.TrialPruned("the study's budget was taken by other workers")
            return objective(trial)

        while True:
            if timeout is not None and time.monotonic() - start > timeout:
                break
            n_done, running = counts()
            if n_done >= budget:
                break
            if n_done + len(running) >= budget:
                # The rest of the budget is running elsewhere: wait, failing (and requeuing) stale trials.
                with quiet_warnings():
                    optuna.storages.fail_stale_trials(study)
                search.fail_dead_trials(study, max_retry)
                time.sleep(poll)
                continue
            study.optimize(guarded, n_trials=1, callbacks=callbacks, gc_after_trial=False)

    try:
        result = run_search(cfg, progress=progress, log=log, storage=storage, optimize=optimize,
                            on_ready=release)
    finally:
        release()
    say(f"worker {worker_id()} done: the study has {result.n_trials} complete trial(s)")
    return result


_NOW = datetime.datetime.max


def run_local_workers(argv: list[str], n: int) -> int:
    """Run ``n`` worker processes on this machine (``modsearch worker ARGV --n-workers 1`` each) and wait for
    them; the exit status is the worst of theirs."""
    procs = [subprocess.Popen([sys.executable, "-m", "modsearch", "worker", *argv, "--n-workers", "1"])
             for _ in range(n)]
    codes = []
    try:
        for p in procs:
            codes.append(p.wait())
    except KeyboardInterrupt:
        for p in procs:
            with contextlib.suppress(Exception):
                codes.append(p.wait(timeout=60))
        return 130
    bad = [c for c in codes if c != 0]
    return max(bad, key=lambda c: (c == 2, c)) if bad else 0
