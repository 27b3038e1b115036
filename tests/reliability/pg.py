"""A private PostgreSQL instance the fault tests may stop, crash and restart at will.

It is started from the installed server binaries (``initdb`` into a temporary directory,
``pg_ctl`` on a free port, listening on 127.0.0.1 only), never the machine's shared cluster.
When the tests run as root the binaries run as the ``postgres`` OS user, because PostgreSQL
refuses to run as root.
"""

from __future__ import annotations

import asyncio
import contextlib
import glob
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from collections.abc import Sequence
from pathlib import Path

import asyncpg

from tests.support import free_port

__all__ = ["PrivatePostgres", "find_bindir"]


def find_bindir() -> Path | None:
    """The directory holding ``initdb``/``pg_ctl``: ``CHATSTORE_TEST_PG_BINDIR``, else the
    newest ``/usr/lib/postgresql/*/bin``, else whatever ``pg_config --bindir`` names."""
    configured = os.environ.get("CHATSTORE_TEST_PG_BINDIR")
    candidates: list[Path] = [Path(configured)] if configured else []
    installed = glob.glob("/usr/lib/postgresql/*/bin")
    candidates += sorted(
        (Path(p) for p in installed), key=lambda p: int(p.parent.name or 0), reverse=True
    )
    pg_config = shutil.which("pg_config")
    if pg_config:
        with contextlib.suppress(OSError, subprocess.CalledProcessError):
            out = subprocess.run(
                [pg_config, "--bindir"], capture_output=True, text=True, check=True, timeout=10
            )
            candidates.append(Path(out.stdout.strip()))
    for candidate in candidates:
        if (candidate / "initdb").is_file() and (candidate / "pg_ctl").is_file():
            return candidate
    return None


def _user_exists(name: str) -> bool:
    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True


class PrivatePostgres:
    """One throwaway PostgreSQL cluster: ``init()``, ``start()``, ``stop(mode)``, ``destroy()``."""

    def __init__(self, bindir: Path) -> None:
        self.bindir = bindir
        self.port = free_port()
        self.root = Path(tempfile.mkdtemp(prefix="chatstore-private-pg-"))
        self.datadir = self.root / "data"
        self.sockdir = self.root / "sock"
        self.logfile = self.root / "postgres.log"
        self.sockdir.mkdir()
        self._user: str | None = None
        if os.geteuid() == 0:
            # PostgreSQL refuses to run as root: run its binaries as an unprivileged user.
            self._user = "postgres" if _user_exists("postgres") else "nobody"
            entry = pwd.getpwnam(self._user)
            for path in (self.root, self.sockdir):
                os.chown(path, entry.pw_uid, entry.pw_gid)

    # -- process control -------------------------------------------------------------------

    def _run(self, args: Sequence[str], timeout: float = 60) -> None:
        result = subprocess.run(
            [str(self.bindir / args[0]), *args[1:]],
            user=self._user,
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=self.root,
            check=False,
        )
        if result.returncode != 0:
            raise RuntimeError(
                f"{args[0]} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}\n"
                f"{self.log()}"
            )

    def init(self) -> None:
        self._run(
            [
                "initdb",
                "-D",
                str(self.datadir),
                "-U",
                "postgres",
                "-A",
                "trust",
                "-E",
                "UTF8",
                "--locale=C",
                "--no-sync",
            ]
        )

    def start(self) -> None:
        options = " ".join(
            [
                f"-p {self.port}",
                "-c listen_addresses=127.0.0.1",
                f"-c unix_socket_directories={self.sockdir}",
                "-c max_connections=60",
                # Survives a crash of PostgreSQL itself (the page cache keeps every write);
                # only an OS crash could lose data, which these tests never cause.
                "-c fsync=off",
                "-c full_page_writes=off",
                "-c shared_buffers=32MB",
            ]
        )
        self._run(
            ["pg_ctl", "-D", str(self.datadir), "-o", options, "-l", str(self.logfile), "-w",
             "-t", "60", "start"]
        )  # fmt: skip

    def stop(self, mode: str = "fast") -> None:
        """``fast``: a clean shutdown that ends every session; ``immediate``: a crash."""
        self._run(["pg_ctl", "-D", str(self.datadir), "-m", mode, "-w", "-t", "60", "stop"])

    def _pids(self) -> list[int]:
        """The postmaster and its children (read from /proc: Linux only)."""
        postmaster = int((self.datadir / "postmaster.pid").read_text().split()[0])
        pids = [postmaster]
        for stat in Path("/proc").glob("[0-9]*/stat"):
            with contextlib.suppress(OSError, ValueError, IndexError):
                # "pid (comm) state ppid ...": comm may hold spaces, so split after ")".
                fields = stat.read_text().rsplit(")", 1)[1].split()
                if int(fields[1]) == postmaster:
                    pids.append(int(stat.parent.name))
        return pids

    def freeze(self) -> None:
        """SIGSTOP every PostgreSQL process: connections stay open but nothing answers."""
        for pid in self._pids():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGSTOP)

    def thaw(self) -> None:
        for pid in self._pids():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)

    def running(self) -> bool:
        return (self.datadir / "postmaster.pid").exists()

    def destroy(self) -> None:
        with contextlib.suppress(Exception):
            self.thaw()
        with contextlib.suppress(Exception):
            if self.running():
                self.stop("immediate")
        shutil.rmtree(self.root, ignore_errors=True)

    def log(self) -> str:
        try:
            return self.logfile.read_text(errors="replace")[-4000:]
        except OSError:
            return ""

    # -- databases ---------------------------------------------------------------------------

    @property
    def server_url(self) -> str:
        return f"postgres://postgres@127.0.0.1:{self.port}"

    def url(self, database: str) -> str:
        return f"{self.server_url}/{database}"

    async def connect(self, database: str = "postgres") -> asyncpg.Connection:
        return await asyncpg.connect(self.url(database), timeout=5)

    async def create_database(self, prefix: str = "chatstore_fault") -> str:
        """Create an empty database; returns its URL."""
        name = f"{prefix}_{uuid.uuid4().hex[:10]}"
        conn = await self.connect()
        try:
            await conn.execute(f'CREATE DATABASE "{name}"')
        finally:
            await conn.close()
        return self.url(name)

    async def drop_database(self, url: str) -> None:
        name = url.rsplit("/", 1)[1]
        conn = await self.connect()
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await conn.close()

    async def wait_ready(self, within: float = 30) -> None:
        deadline = time.monotonic() + within
        while True:
            try:
                conn = await self.connect()
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.1)
                continue
            await conn.close()
            return
