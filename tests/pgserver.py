"""A throwaway PostgreSQL server on loopback for tests: Debian's binaries, a temporary cluster, a free port.

``start()`` returns a :class:`Server` (``url``, ``stop()``) or raises :class:`Unavailable` with the reason.
As root the cluster runs as the ``postgres`` user (PostgreSQL refuses to run as root).
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time


class Unavailable(Exception):
    pass


def _bindir() -> str | None:
    for d in sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(p.split("/")[-2]), reverse=True):
        if os.path.exists(os.path.join(d, "initdb")) and os.path.exists(os.path.join(d, "pg_ctl")):
            return d
    for name in ("initdb", "pg_ctl"):
        if shutil.which(name) is None:
            return None
    return os.path.dirname(shutil.which("pg_ctl"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    def __init__(self, bindir, root, user, port):
        self.bindir, self.root, self.user, self.port = bindir, root, user, port
        self.url = f"postgresql://postgres@127.0.0.1:{port}/modsearch"

    def _run(self, *args, check=True):
        cmd = [os.path.join(self.bindir, args[0]), *args[1:]]
        if self.user:
            cmd = ["runuser", "-u", self.user, "--", *cmd]
        return subprocess.run(cmd, capture_output=True, text=True, check=check, timeout=60)

    def stop(self):
        self._run("pg_ctl", "-D", os.path.join(self.root, "data"), "-m", "immediate", "stop", check=False)
        shutil.rmtree(self.root, ignore_errors=True)


def start() -> Server:
    bindir = _bindir()
    if bindir is None:
        raise Unavailable("PostgreSQL server binaries (initdb, pg_ctl) not found; apt-get install postgresql")
    try:
        import psycopg2  # noqa: F401
    except ImportError:
        raise Unavailable("psycopg2 is not installed (pip install psycopg2-binary)") from None
    user = None
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            raise Unavailable("running as root and there is no 'postgres' user to run the server as") from None
        user = "postgres"
    root = tempfile.mkdtemp(prefix="modsearch-pg-", dir="/tmp")
    if user:
        pw = pwd.getpwnam(user)
        os.chown(root, pw.pw_uid, pw.pw_gid)
    port = _free_port()
    server = Server(bindir, root, user, port)
    try:
        server._run("initdb", "-D", os.path.join(root, "data"), "-A", "trust", "-U", "postgres", "-E", "UTF8",
                    "--no-sync")
        opts = f"-p {port} -k {root} -h 127.0.0.1 -c fsync=off -c max_connections=100"
        server._run("pg_ctl", "-D", os.path.join(root, "data"), "-o", opts, "-l", os.path.join(root, "log"),
                    "-w", "-t", "60", "start")
        import psycopg2

        deadline = time.time() + 30
        while True:
            try:
                conn = psycopg2.connect(host="127.0.0.1", port=port, user="postgres", dbname="postgres")
                break
            except psycopg2.OperationalError:
                if time.time() > deadline:
                    raise
                time.sleep(0.2)
        conn.autocommit = True
        conn.cursor().execute("CREATE DATABASE modsearch")
        conn.close()
    except Exception as exc:
        log = ""
        try:
            log = open(os.path.join(root, "log")).read()[-500:]
        except OSError:
            pass
        detail = getattr(exc, "stderr", "") or str(exc)
        server.stop()
        raise Unavailable(f"could not start a throwaway PostgreSQL: {detail.strip()[:300]} {log}") from None
    return server
