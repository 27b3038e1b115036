"""Shared fixtures: every store-level test runs on SQLite and on PostgreSQL.

PostgreSQL: a throwaway database per test session, created from
``CHATSTORE_TEST_POSTGRES_URL`` (default ``postgres://postgres@127.0.0.1:5432``), migrated with
the real migrations and dropped at the end. When the server cannot be reached the PostgreSQL
half is skipped, unless ``CHATSTORE_REQUIRE_POSTGRES=1`` (CI), where that is a failure.
A test marked ``pgbouncer`` runs a third time, on that database through a private PgBouncer in
transaction pooling mode (``tests/pgbouncer.py``; skipped when it is not installed, unless
``CHATSTORE_REQUIRE_POSTGRES=1``).
Tests isolate themselves by acting as fresh users (``user``, ``other_user``), so nothing is shared.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from urllib.parse import urlsplit

import asyncpg
import pytest

from store import migrate
from store.settings import Settings
from store.store import ConversationStore
from tests.pgbouncer import PgBouncer, find_pgbouncer

POSTGRES_SERVER_URL = os.environ.get(
    "CHATSTORE_TEST_POSTGRES_URL", "postgres://postgres@127.0.0.1:5432"
).rstrip("/")
REQUIRE_POSTGRES = os.environ.get("CHATSTORE_REQUIRE_POSTGRES", "") not in ("", "0", "false")

BACKENDS = ["sqlite", "postgres"]


async def _admin() -> asyncpg.Connection:
    return await asyncpg.connect(f"{POSTGRES_SERVER_URL}/postgres", timeout=5)


async def create_postgres_database(prefix: str = "chatstore_test") -> str:
    """Create an empty database; returns its Tortoise URL."""
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    conn = await _admin()
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    return f"{POSTGRES_SERVER_URL}/{name}"


async def drop_postgres_database(url: str) -> None:
    name = url.rsplit("/", 1)[1]
    conn = await _admin()
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


@pytest.fixture(scope="session")
async def postgres_url() -> AsyncIterator[str]:
    """A migrated throwaway PostgreSQL database for the whole session."""
    try:
        url = await create_postgres_database()
    except (OSError, asyncpg.PostgresError) as exc:
        message = f"PostgreSQL is not reachable at {POSTGRES_SERVER_URL}: {exc}"
        if REQUIRE_POSTGRES:
            pytest.fail(message + " (CHATSTORE_REQUIRE_POSTGRES is set)")
        pytest.skip(message)
    try:
        await migrate.upgrade(Settings(database_url=url))
        yield url
    finally:
        await drop_postgres_database(url)


@pytest.fixture(scope="session")
def pgbouncer() -> Iterator[PgBouncer]:
    """A PgBouncer in front of the PostgreSQL server, for the whole session."""
    binary = find_pgbouncer()
    if binary is None:
        message = "PgBouncer is not installed (apt-get install pgbouncer)"
        if REQUIRE_POSTGRES:
            pytest.fail(message + " (CHATSTORE_REQUIRE_POSTGRES is set)")
        pytest.skip(message)
    server = urlsplit(POSTGRES_SERVER_URL)
    bouncer = PgBouncer(binary, server.hostname or "127.0.0.1", server.port or 5432)
    try:
        bouncer.start()
        yield bouncer
    finally:
        bouncer.destroy()


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Every test using ``backend`` runs on each of BACKENDS; one marked ``pgbouncer`` runs on
    PostgreSQL through PgBouncer too."""
    if "backend" in metafunc.fixturenames:
        extra = ["pgbouncer"] if metafunc.definition.get_closest_marker("pgbouncer") else []
        metafunc.parametrize("backend", [*BACKENDS, *extra], indirect=True)


@pytest.fixture(scope="session")
def sqlite_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("sqlite")


@pytest.fixture
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def settings(request: pytest.FixtureRequest, backend: str, sqlite_dir: Path) -> Settings:
    """Settings for a migrated database of ``backend``.

    SQLite gets a fresh file per test (it migrates itself on open); PostgreSQL shares the
    session database.
    """
    if backend == "postgres":
        url = request.getfixturevalue("postgres_url")
    elif backend == "pgbouncer":
        bouncer: PgBouncer = request.getfixturevalue("pgbouncer")
        url = bouncer.url(request.getfixturevalue("postgres_url"))
        # As the README says to configure chatstore behind PgBouncer before 1.21.
        return Settings(database_url=url, data_dir=sqlite_dir, db_statement_cache_size=0)
    else:
        url = f"sqlite://{sqlite_dir / (uuid.uuid4().hex + '.sqlite3')}"
    return Settings(database_url=url, data_dir=sqlite_dir)


@pytest.fixture
async def store(settings: Settings) -> AsyncIterator[ConversationStore]:
    async with ConversationStore(settings) as opened:
        yield opened


def fresh_user() -> str:
    return f"user-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def user() -> str:
    """A user no other test acts as."""
    return fresh_user()


@pytest.fixture
def other_user() -> str:
    return fresh_user()
