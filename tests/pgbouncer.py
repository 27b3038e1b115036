"""A private PgBouncer in front of a PostgreSQL server, for the tests that run through one.

Debian's ``pgbouncer`` package (``.ci/run`` installs it; 1.18 on bookworm, before
``max_prepared_statements``), started by the tests on a free port, listening on 127.0.0.1 only,
in transaction pooling mode, with trust authentication on both sides. When the tests run as
root it runs as the ``postgres`` OS user (PgBouncer refuses to run as root). Its pool per
database is smaller than the store's and its servers are taken in turn, so one client
connection's statements run on different server connections: what breaks asyncpg's named
prepared statements.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from tests.support import free_port

__all__ = ["PgBouncer", "find_pgbouncer", "through"]

#: Server connections per (database, user): fewer than the store's pool (10).
POOL_SIZE = 4


def find_pgbouncer() -> Path | None:
    """``CHATSTORE_TEST_PGBOUNCER``, else ``pgbouncer`` on the PATH or in /usr/sbin."""
    configured = os.environ.get("CHATSTORE_TEST_PGBOUNCER")
    found = configured or shutil.which("pgbouncer") or shutil.which("pgbouncer", path="/usr/sbin")
    return Path(found) if found and Path(found).is_file() else None


def through(url: str, port: int) -> str:
    """``url`` with its host and port replaced by the PgBouncer at 127.0.0.1:``port``."""
    parts = urlsplit(url)
    auth = parts.netloc.rsplit("@", 1)[0] + "@" if "@" in parts.netloc else ""
    return urlunsplit(parts._replace(netloc=f"{auth}127.0.0.1:{port}"))


class PgBouncer:
    """One PgBouncer process for the PostgreSQL server at ``host``:``port``."""

    def __init__(self, binary: Path, host: str, port: int) -> None:
        self.binary = binary
        self.port = free_port()
        self.root = Path(tempfile.mkdtemp(prefix="chatstore-pgbouncer-"))
        self.logfile = self.root / "pgbouncer.log"
        self._process: subprocess.Popen[bytes] | None = None
        self._user: str | None = None
        (self.root / "users.txt").write_text('"postgres" ""\n')
        (self.root / "pgbouncer.ini").write_text(
            "\n".join(
                [
                    "[databases]",
                    f"* = host={host} port={port}",
                    "[pgbouncer]",
                    "listen_addr = 127.0.0.1",
                    f"listen_port = {self.port}",
                    "unix_socket_dir =",
                    "auth_type = trust",
                    f"auth_file = {self.root / 'users.txt'}",
                    "pool_mode = transaction",
                    f"default_pool_size = {POOL_SIZE}",
                    # Every server connection open, and taken in turn rather than the last one
                    # used: even one client's consecutive transactions land on different ones.
                    f"min_pool_size = {POOL_SIZE}",
                    "server_round_robin = 1",
                    "max_client_conn = 500",
                    # After PostgreSQL restarts, try it again within a second (default 15 s).
                    "server_login_retry = 1",
                    f"logfile = {self.logfile}",
                    "",
                ]
            )
        )
        if os.geteuid() == 0:
            self._user = "postgres" if _user_exists("postgres") else "nobody"
            entry = pwd.getpwnam(self._user)
            for path in (self.root, *self.root.iterdir()):
                os.chown(path, entry.pw_uid, entry.pw_gid)

    def start(self) -> None:
        self._process = subprocess.Popen(
            [str(self.binary), str(self.root / "pgbouncer.ini")],
            user=self._user,
            cwd=self.root,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 15
        while True:
            with (
                contextlib.suppress(OSError),
                socket.create_connection(("127.0.0.1", self.port), 1),
            ):
                return
            if self._process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"PgBouncer did not start:\n{self.log()}")
            time.sleep(0.05)

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)  # PgBouncer's immediate shutdown
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def destroy(self) -> None:
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)

    def url(self, server_url: str) -> str:
        """``server_url`` (a database on the server behind) through this PgBouncer."""
        return through(server_url, self.port)

    def log(self) -> str:
        try:
            return self.logfile.read_text(errors="replace")[-4000:]
        except OSError:
            return ""


def _user_exists(name: str) -> bool:
    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True
