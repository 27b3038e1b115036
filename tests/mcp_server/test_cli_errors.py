"""Every command's error is one or two lines that name the fix, never a traceback, and never
a password from the database URL: a database that does not exist, nothing listening, a
refused login, an unknown host, an impossible port or scheme, an unopenable SQLite file."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import POSTGRES_SERVER_URL
from tests.mcp_server.helpers import run_command
from tests.support import CHATSTORE, server_env

pytestmark = pytest.mark.slow

HOST = POSTGRES_SERVER_URL.split("@", 1)[1].split("/", 1)[0]

#: Failures only a running PostgreSQL can give (no such database, a refused login).
SERVER_CASES = [
    (
        f"postgres://postgres:hunter2@{HOST}/chatstore_no_such_database",
        'the database "chatstore_no_such_database" does not exist',
        "createdb",
    ),
    (
        f"postgres://no_such_role_x:hunter2@{HOST}/postgres",
        "refused the login of user 'no_such_role_x'",
        "check the user and password",
    ),
]
OFFLINE_CASES = [
    (
        "postgres://postgres:hunter2@127.0.0.1:1/x",
        "nothing accepts connections at 127.0.0.1:1",
        "start PostgreSQL",
    ),
    ("postgres://postgres:hunter2@no-such-host.invalid/x", "cannot be resolved", "check it"),
    ("postgres://postgres:hunter2@127.0.0.1:99999/x", "CHATSTORE_DATABASE_URL", "1 to 65535"),
    (
        "mysql://postgres:hunter2@127.0.0.1/x",
        "unsupported database URL scheme 'mysql'",
        "postgres://",
    ),
    ("sqlite:///proc/chatstore.sqlite3", "cannot open the SQLite database", "permissions"),
]


def _runs(cases: list[tuple[str, str, str]]) -> list[tuple[str, str, str, list[str]]]:
    """Every case through `migrate` (aerich's path), the first also through the store's own
    opening (`purge-user`, `serve --http`), which the other commands share."""
    return [(*case, ["migrate"]) for case in cases] + [
        (*cases[0], command) for command in (["purge-user", "alice"], ["serve", "--http"])
    ]


def _ids(runs: list[tuple[str, str, str, list[str]]]) -> list[str]:
    return [f"{run[3][0]}-{run[1][:24]}" for run in runs]


async def _one_or_two_lines(
    tmp_path: Path, url: str, what: str, fix: str, command: list[str]
) -> None:
    env = server_env(url, tmp_path / "data", CHATSTORE_DB_CONNECT_TIMEOUT="3")
    finished = await run_command([*CHATSTORE, *command], env=env, cwd=tmp_path, seconds=60)
    assert finished.returncode != 0
    lines = finished.stderr.strip().splitlines()
    assert 1 <= len(lines) <= 2, finished.stderr
    assert what in finished.stderr and fix in finished.stderr, finished.stderr
    assert "Traceback" not in finished.stderr and "hunter2" not in finished.stderr
    assert finished.stdout == ""


@pytest.mark.parametrize(
    ("url", "what", "fix", "command"), _runs(OFFLINE_CASES), ids=_ids(_runs(OFFLINE_CASES))
)
async def test_a_bad_database_url_is_one_or_two_lines(
    tmp_path: Path, url: str, what: str, fix: str, command: list[str]
) -> None:
    await _one_or_two_lines(tmp_path, url, what, fix, command)


@pytest.mark.parametrize(
    ("url", "what", "fix", "command"), _runs(SERVER_CASES), ids=_ids(_runs(SERVER_CASES))
)
async def test_what_the_server_refuses_is_one_or_two_lines(
    postgres_url: str, tmp_path: Path, url: str, what: str, fix: str, command: list[str]
) -> None:
    del postgres_url  # only here to skip (or fail) when PostgreSQL is not reachable
    await _one_or_two_lines(tmp_path, url, what, fix, command)
