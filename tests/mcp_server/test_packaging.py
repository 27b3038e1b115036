"""The installed package: a built wheel ships the migrations, and ``chatstore migrate`` from
that install brings a fresh PostgreSQL database to head from an unrelated working directory.

The wheel is built from a copy of the source tree (so the build leaves nothing in the work
tree) and installed with ``pip install --no-deps --target``; its console script then runs with
only that directory on ``PYTHONPATH``, so nothing is read from the source tree.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from store import ConversationStore, Settings
from tests.conftest import create_postgres_database, drop_postgres_database
from tests.mcp_server.helpers import run_command
from tests.support import server_env

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
DIALECTS = ("postgres", "sqlite")
_NOT_SOURCE = shutil.ignore_patterns(
    ".git",
    ".venv",
    "venv",
    ".*cache",
    "__pycache__",
    "*.egg-info",
    "build",
    "dist",
    "*.sqlite3*",
    ".hypothesis",
    "results",
    ".data",
)


def _pip(*args: str) -> None:
    finished = subprocess.run(
        [sys.executable, "-m", "pip", *args], capture_output=True, text=True, timeout=300
    )
    assert finished.returncode == 0, finished.stdout + finished.stderr


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    source = tmp_path_factory.mktemp("source") / "chatstore"
    shutil.copytree(ROOT, source, ignore=_NOT_SOURCE)
    out = tmp_path_factory.mktemp("wheels")
    _pip("wheel", str(source), "--no-deps", "--quiet", "-w", str(out))
    (built,) = out.glob("chatstore-*.whl")
    return built


@pytest.fixture(scope="module")
def installed(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    target = tmp_path_factory.mktemp("site")
    _pip("install", "--no-deps", "--quiet", "--target", str(target), str(wheel))
    return target


@pytest.fixture
async def fresh_database(postgres_url: str) -> AsyncIterator[str]:
    """An empty PostgreSQL database (no tables, no migrations applied)."""
    url = await create_postgres_database("chatstore_pkg")
    try:
        yield url
    finally:
        await drop_postgres_database(url)


def test_the_wheel_ships_the_migrations_and_tortoise_config(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        entry_points = next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
        scripts = archive.read(entry_points).decode()
    for dialect in DIALECTS:
        shipped = {n for n in names if n.startswith(f"migrations/{dialect}/models/")}
        committed = {
            p.relative_to(ROOT).as_posix()
            for p in (ROOT / "migrations" / dialect / "models").glob("*.py")
        }
        assert committed, f"no {dialect} migrations in the source tree"
        assert committed <= shipped, committed - shipped
    assert "tortoise_config.py" in names
    assert "migrations/__init__.py" in names
    assert {"store/migrate.py", "mcp_server/cli.py", "mcp_server/__main__.py"} <= names
    assert "chatstore = mcp_server.cli:main" in scripts
    assert not [n for n in names if n.startswith("tests/")]


async def test_migrate_from_any_directory_then_serve(
    installed: Path, fresh_database: str, tmp_path: Path
) -> None:
    elsewhere = tmp_path / "somewhere" / "else"
    elsewhere.mkdir(parents=True)
    env = server_env(fresh_database, tmp_path / "data", PYTHONPATH=str(installed))
    script = installed / "bin" / "chatstore"
    assert script.is_file()
    chatstore = [sys.executable, str(script)]

    # Everything comes from the installed copy, none of it from the source tree.
    where = await run_command(
        [
            sys.executable,
            "-c",
            "import mcp_server, migrations, store, tortoise_config;"
            "print(mcp_server.__file__, migrations.__file__, store.__file__,"
            " tortoise_config.__file__)",
        ],
        env=env,
        cwd=elsewhere,
    )
    assert where.returncode == 0, where.stderr
    assert all(path.startswith(str(installed)) for path in where.stdout.split()), where.stdout

    # A database behind head: the server refuses to start and names the command to run.
    refused = await run_command([*chatstore, "serve"], env=env, cwd=elsewhere)
    assert refused.returncode != 0
    assert "chatstore migrate" in refused.stderr, refused.stderr
    assert refused.stdout == ""

    migrated = await run_command([*chatstore, "migrate"], env=env, cwd=elsewhere)
    assert migrated.returncode == 0, migrated.stderr
    pending = len(list((ROOT / "migrations" / "postgres" / "models").glob("[0-9]*_*.py")))
    assert f"applied {pending} migration(s)" in migrated.stdout, migrated.stdout
    assert list(elsewhere.iterdir()) == [], "migrate wrote nothing into the working directory"

    again = await run_command([*chatstore, "migrate"], env=env, cwd=elsewhere)
    assert again.returncode == 0, again.stderr
    assert "already at head" in again.stdout

    # At head: a store opens on it, and the server starts (and ends with its empty stdin).
    async with ConversationStore(Settings(database_url=fresh_database)) as store:
        conversation = await store.create_conversation(user="after-migrate", title="ok")
        assert conversation.title == "ok"
    served = await run_command(
        [*chatstore, "serve"], env=env | {"CHATSTORE_USER": "after-migrate"}, cwd=elsewhere
    )
    assert served.returncode == 0, served.stderr
    assert "serving user 'after-migrate'" in served.stderr
