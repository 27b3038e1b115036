"""A SQLite database that cannot be opened fails `chatstore migrate` and `chatstore serve` at
once, in one line naming the file and why, never with a traceback or a hang: a directory,
a path nothing may create, a damaged file, a read-only folder. An explicit URL creates no
default data directory on the way."""

from __future__ import annotations

import asyncio
import os
import shutil
import sqlite3
import subprocess
from collections.abc import Sequence
from pathlib import Path

import pytest

from tests.mcp_server.helpers import Finished, run_command
from tests.support import CHATSTORE, server_env

pytestmark = pytest.mark.slow

COMMANDS = (["migrate"], ["serve"])

#: As root every folder is writable: run as an unprivileged user instead, the files' owner
#: mapped to it (a user namespace), so the folder's own mode applies.
_AS_OWNER = ["unshare", "--user", "--map-user=1000", "--map-group=1000"]


def _owner_prefix() -> list[str]:
    if os.geteuid() != 0:
        return []
    if shutil.which("unshare") is None:
        pytest.skip("running as root, and unshare is not installed")
    trial = subprocess.run([*_AS_OWNER, "true"], capture_output=True, timeout=10, check=False)
    if trial.returncode != 0:
        pytest.skip(f"running as root, and user namespaces are unavailable: {trial.stderr!r}")
    return _AS_OWNER


async def _fails_in_one_line(
    tmp_path: Path, url: str, what: Sequence[str], prefix: Sequence[str] = ()
) -> None:
    data_dir = tmp_path / "default-data-dir"
    env = server_env(url, data_dir)
    runs: list[Finished] = await asyncio.gather(
        *(
            run_command([*prefix, *CHATSTORE, *command], env=env, cwd=tmp_path, seconds=30)
            for command in COMMANDS
        )
    )
    for command, finished in zip(COMMANDS, runs, strict=True):
        lines = finished.stderr.strip().splitlines()
        assert finished.returncode == 1, (command, finished)
        assert len(lines) == 1, (command, finished.stderr)
        assert all(part in lines[0] for part in what), (command, lines[0])
        assert "Traceback" not in finished.stderr and finished.stdout == ""
    assert not data_dir.exists()


async def test_a_directory(tmp_path: Path) -> None:
    folder = tmp_path / "a-folder"
    folder.mkdir()
    await _fails_in_one_line(
        tmp_path, f"sqlite://{folder}", [f"cannot open the SQLite database {folder}", "path"]
    )


async def test_a_path_nothing_may_create(tmp_path: Path) -> None:
    await _fails_in_one_line(
        tmp_path,
        "sqlite:///proc/chatstore-test.sqlite3",
        ["cannot open the SQLite database /proc/chatstore-test.sqlite3", "permissions"],
    )


async def test_a_damaged_file(tmp_path: Path) -> None:
    damaged = tmp_path / "damaged.sqlite3"
    damaged.write_bytes(b"SQLite format 3\x00" + bytes(range(256)) * 40)
    await _fails_in_one_line(
        tmp_path,
        f"sqlite://{damaged}",
        [f"cannot open the SQLite database {damaged}", "damaged", "backup"],
    )


async def test_a_read_only_folder(tmp_path: Path) -> None:
    """Once a hang: SQLite must create -wal and -shm files beside the database."""
    prefix = _owner_prefix()
    folder = tmp_path / "read-only"
    folder.mkdir()
    database = folder / "chatstore.sqlite3"
    conn = sqlite3.connect(database)  # an existing WAL database, closed cleanly
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("CREATE TABLE t (x)")
    conn.close()
    assert [path.name for path in folder.iterdir()] == [database.name]
    folder.chmod(0o555)
    try:
        await _fails_in_one_line(
            tmp_path,
            f"sqlite://{database}",
            [f"cannot open the SQLite database {database}", "read-only", "writable"],
            prefix,
        )
    finally:
        folder.chmod(0o755)
