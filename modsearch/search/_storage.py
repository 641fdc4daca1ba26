"""Opening a study's storage: the one place a storage URL becomes an Optuna storage, for ``search``,
``worker``, ``report`` and ``export`` alike (PostgreSQL driver mapping, SQLite in WAL mode, heartbeats for
workers, one clear line when it cannot open)."""

from __future__ import annotations

import contextlib
import os

from .._errors import UserError


def storage_url(url: str) -> str:
    """``url`` with a PostgreSQL driver that is installed: SQLAlchemy 2.1 reads a bare ``postgresql://`` as
    psycopg 3, while ``modsearch[postgres]`` installs psycopg2."""
    if url.startswith("postgresql://"):
        import importlib.util

        if importlib.util.find_spec("psycopg") is None and importlib.util.find_spec("psycopg2") is not None:
            return "postgresql+psycopg2://" + url[len("postgresql://"):]
    return url


@contextlib.contextmanager
def quiet_warnings():
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", category=Warning)  # Optuna's ExperimentalWarning for several features
        yield


def open_storage(url: str, *, create: bool = True, heartbeat_interval: int | None = None,
                 grace_period: int | None = None, max_retry: int = 3):
    """An Optuna ``RDBStorage`` for ``url`` (``sqlite:///path.db``, ``postgresql://...``, ``mysql://...``).

    ``create=False`` only reads: a missing SQLite file is an error, and no table is created. With
    ``heartbeat_interval`` (workers), a trial silent for ``grace_period`` seconds (default twice the interval) is
    failed by the next worker to start a trial, and queued again up to ``max_retry`` times.
    """
    import optuna

    if "://" not in url:
        raise UserError(f"--storage {url!r} is not a storage URL (postgresql://user@host/db, sqlite:///path.db)")
    if url.startswith("sqlite:///"):
        path = url[len("sqlite:///"):]
        if path and path != ":memory:":
            if not create and not os.path.isfile(path):
                raise UserError(f"no study storage at {path}: run 'modsearch search' first (or give --storage)")
            if create:
                os.makedirs(os.path.dirname(os.path.abspath(path)) or ".", exist_ok=True)
    kwargs: dict = {"engine_kwargs": {"pool_pre_ping": True}, "skip_table_creation": not create}
    if url.startswith(("postgresql", "mysql")):
        kwargs["engine_kwargs"]["connect_args"] = {"connect_timeout": 10}
    if heartbeat_interval is not None:
        from optuna.storages import RetryHeartbeatStaleTrialCallback

        if heartbeat_interval < 1:
            raise UserError(f"--heartbeat must be >= 1 second, not {heartbeat_interval}")
        grace = grace_period if grace_period is not None else 2 * heartbeat_interval
        if grace < heartbeat_interval:
            raise UserError(f"--grace ({grace}) must be at least --heartbeat ({heartbeat_interval})")
        kwargs.update(heartbeat_interval=heartbeat_interval, grace_period=grace,
                      heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(max_retry=max_retry))
    try:
        with quiet_warnings():  # RetryHeartbeatStaleTrialCallback is "experimental" since Optuna 2.8
            return sqlite_wal(optuna.storages.RDBStorage(storage_url(url), **kwargs))
    except ImportError as exc:
        raise UserError(f"storage {url!r} needs a database driver that is not installed ({exc}); for "
                        "PostgreSQL: pip install 'modsearch[postgres]'") from None
    except Exception as exc:  # sqlalchemy raises many types for a bad URL or an unreachable server
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserError(f"cannot open storage {url!r}: {first}") from None


def sqlite_wal(storage):
    """Put a SQLite study in write-ahead-log mode with ``synchronous=NORMAL``; other storages are returned as is.

    Optuna writes every parameter and user attribute of a trial in a transaction of its own, about 30 per trial
    here. In SQLite's default rollback journal each one waits for fsyncs: a probe with 12 parameters and 20
    attributes per trial took 242 ms of storage per trial, 75 ms in WAL mode; that was most of a trial's
    overhead beyond the model's own time. WAL with ``synchronous=NORMAL`` loses nothing when the process is
    killed (the log is in the OS's hands); a power cut may lose the last trials' writes but never corrupts the
    file. Readers (optuna-dashboard, pandas) need write access to the folder for the ``-wal``/``-shm`` files, as
    SQLite's WAL does everywhere.
    """
    engine = getattr(storage, "engine", None)
    if engine is None or engine.dialect.name != "sqlite" or engine.url.database in (None, "", ":memory:"):
        return storage
    from sqlalchemy import event

    def on_connect(dbapi_connection, _record):
        cur = dbapi_connection.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.close()

    event.listen(engine, "connect", on_connect)
    engine.dispose()  # connections made before the listener are closed; new ones get the pragmas
    return storage
