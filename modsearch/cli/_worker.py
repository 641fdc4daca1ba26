"""The ``modsearch worker`` verb: join a study on shared RDB storage and run trials until its budget is spent.

A thin layer over :func:`modsearch.worker.run_worker`; ``--n-workers K`` starts K such processes here.
"""

from __future__ import annotations

import textwrap

_DESCRIPTION = (
    "Join the study a TOML file describes on shared Optuna RDB storage (PostgreSQL for many machines; SQLite "
    "for a few processes on one) and evaluate trials until the study has budget.n_trials COMPLETE trials in "
    "all. The first worker creates the study and queues the baseline seeds once. Heartbeats: a trial whose "
    "worker died is failed after --grace seconds and queued again with the same plan. Workers sharing the "
    "cache directory never evaluate a plan twice. A study whose objectives read measured latency_ms only "
    "accepts workers on the machine that measured it first; score quality anywhere with profile_latency_ms.")


def add_worker_parser(sub, fmt, examples) -> None:
    """Register ``worker`` on the ``modsearch`` subparsers (``examples`` formats the epilog)."""
    s = sub.add_parser("worker", help="join a study on shared storage and run its trials (scale-out)",
                       formatter_class=fmt, description=textwrap.fill(_DESCRIPTION, 100),
                       epilog=examples("""
                           modsearch worker studies/bible-en-fr.toml --storage postgresql://modsearch@db/modsearch
                           modsearch worker studies/bible-en-fr.toml --storage postgresql://u:p@db/ms --n-workers 2
                           modsearch worker studies/bible-en-fr.toml --storage sqlite:///studies/x.db --n-workers 2"""))
    s.add_argument("study", help="study TOML file (see studies/bible-en-fr.toml)")
    s.add_argument("--storage", metavar="URL", help="Optuna RDB storage URL shared by the workers (default: the "
                                                    "file's storage, else SQLite in the study's folder)")
    s.add_argument("--study-name", metavar="NAME", help="study name (default: the file's name key or stem)")
    s.add_argument("--n-trials", type=int, metavar="N", help="the study's total of COMPLETE trials")
    s.add_argument("--timeout", type=float, metavar="S", help="stop this worker after S seconds")
    s.add_argument("--n-workers", type=int, default=1, metavar="K", help="run K worker processes here (default 1)")
    s.add_argument("--heartbeat", type=int, default=10, metavar="S",
                   help="seconds between a running trial's heartbeats (default 10)")
    s.add_argument("--grace", type=int, metavar="S",
                   help="seconds without a heartbeat before a trial counts as dead (default 2x --heartbeat)")
    s.add_argument("--max-retry", type=int, default=3, metavar="N", help="retries of a dead worker's trial")
    s.add_argument("--quiet", action="store_true", help="no log lines")
    s.set_defaults(func=cmd_worker)


def cmd_worker(a) -> int:
    from .._errors import UserError
    from ..search._config import StudyConfig

    if a.n_workers < 1:
        raise UserError(f"--n-workers must be >= 1, not {a.n_workers}")
    if a.max_retry < 0:
        raise UserError(f"--max-retry must be >= 0, not {a.max_retry}")
    cfg = StudyConfig.load(a.study).override(storage=a.storage, study_name=a.study_name, n_trials=a.n_trials,
                                             timeout=a.timeout)
    if a.n_workers > 1:
        from ..search._worker import run_local_workers

        argv = [a.study, "--storage", cfg.storage, "--study-name", cfg.name, "--heartbeat", str(a.heartbeat),
                "--max-retry", str(a.max_retry)]
        for flag, v in (("--n-trials", a.n_trials), ("--timeout", a.timeout), ("--grace", a.grace)):
            if v is not None:
                argv += [flag, str(v)]
        if a.quiet:
            argv.append("--quiet")
        return run_local_workers(argv, a.n_workers)
    from ..search._worker import run_worker

    result = run_worker(cfg, cfg.storage, heartbeat_interval=a.heartbeat, grace_period=a.grace,
                        max_retry=a.max_retry, log=None if a.quiet else print)
    if result.interrupted:
        return 130
    return 0
