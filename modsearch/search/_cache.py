"""The evaluation cache: results on disk as JSON, keyed by a sha256 of everything that could change them."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import socket
import time

from .._io import write_json

#: Bump when a change to scoring or costing makes stored evaluations stale.
CACHE_VERSION = 2  # 2: lm windows after a document's first begin with its BOS


class EvaluationCache:
    """Evaluation results on disk as JSON, one file per key (a sha256 of the key's parts).

    JSON, not pickle: a cache directory can be shared, copied or planted, and reading it must never run code.
    Each file holds its key parts too, so a read checks them (a collision or a stray file is a miss), and is
    written atomically (a crash leaves no half entry). Concurrent writers of one key write the same content.

    >>> cache = EvaluationCache("studies/.cache")                                   # doctest: +SKIP
    >>> cache.get("quality", {"plan": "0,1/0,1"}) is None                           # doctest: +SKIP
    True
    """

    def __init__(self, root: str):
        self.root = os.path.join(root, "evaluations")
        self.hits = 0
        self.misses = 0

    @staticmethod
    def digest(kind: str, parts: dict) -> str:
        text = json.dumps({"kind": kind, "version": CACHE_VERSION, **parts}, sort_keys=True, ensure_ascii=False)
        return hashlib.sha256(text.encode("utf-8")).hexdigest()

    def _path(self, kind: str, digest: str) -> str:
        return os.path.join(self.root, kind, digest[:2], f"{digest}.json")

    def get(self, kind: str, parts: dict) -> dict | None:
        digest = self.digest(kind, parts)
        try:
            with open(self._path(kind, digest), encoding="utf-8") as f:
                entry = json.load(f)
        except (OSError, json.JSONDecodeError, UnicodeDecodeError):
            self.misses += 1
            return None
        # The stored key itself must equal the one asked for (as JSON): a digest collision, a planted file or an
        # entry written under another key scheme is a miss.
        if (not isinstance(entry, dict) or entry.get("digest") != digest or "value" not in entry
                or _canonical(entry.get("key")) != _canonical(parts)):
            self.misses += 1
            return None
        self.hits += 1
        return entry["value"]

    def put(self, kind: str, parts: dict, value: dict) -> None:
        digest = self.digest(kind, parts)
        write_json(self._path(kind, digest), {"digest": digest, "kind": kind, "version": CACHE_VERSION,
                                              "key": parts, "value": value})

    @contextlib.contextmanager
    def lock(self, kind: str, parts: dict):
        """Hold an exclusive lock on one key across processes (``flock``; the lock dies with its process).

        Workers sharing the cache take it around an evaluation, then read the cache again: a worker that asks
        for a plan another one is evaluating waits for its result instead of evaluating it a second time, and
        two workers never write different results (say, two latency measurements) for one key."""
        import fcntl

        digest = self.digest(kind, parts)
        path = os.path.join(self.root, "locks", digest[:2], f"{digest}.lock")
        os.makedirs(os.path.dirname(path), exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # closing releases the lock

    def log(self, event: str, kind: str, plan: str) -> None:
        """Append one line to ``evaluations/log.jsonl``: which process started or finished evaluating what
        (an audit trail of the real work; single ``O_APPEND`` writes of one short line do not interleave)."""
        line = json.dumps({"time": time.time(), "worker": worker_id(), "event": event, "kind": kind,
                           "plan": plan}) + "\n"
        os.makedirs(self.root, exist_ok=True)
        fd = os.open(os.path.join(self.root, "log.jsonl"), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, line.encode("utf-8"))
        finally:
            os.close(fd)


def _canonical(obj) -> str:
    return json.dumps(obj, sort_keys=True, ensure_ascii=False)


def worker_id() -> str:
    """``host:pid`` of this process, recorded on each trial it runs (a dead local worker is recognised by it)."""
    return f"{socket.gethostname()}:{os.getpid()}"
