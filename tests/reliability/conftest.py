"""Fixtures for the fault tests: a private PostgreSQL instance they may stop, crash and restart.

Everything here runs against that private instance (``PrivatePostgres``), never the machine's
shared cluster: a test may stop the server or terminate backends without touching anyone else.
Each test gets a fresh database cloned from a migrated template and dropped afterwards. The
``settings`` fixture (both backends) is overridden so store-level tests use it too.
When no PostgreSQL binaries are installed the PostgreSQL half is skipped, unless
``CHATSTORE_REQUIRE_POSTGRES=1`` (CI), where that is a failure.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from store import migrate
from store.settings import Settings
from tests.conftest import REQUIRE_POSTGRES
from tests.reliability.pg import PrivatePostgres, find_bindir

TEMPLATE = "chatstore_template"


@pytest.fixture(scope="session")
def private_pg() -> Iterator[PrivatePostgres]:
    """A PostgreSQL cluster of our own, on a free port, for the whole session."""
    bindir = find_bindir()
    if bindir is None:
        message = "no PostgreSQL server binaries (initdb, pg_ctl) are installed"
        if REQUIRE_POSTGRES:
            pytest.fail(message + " (CHATSTORE_REQUIRE_POSTGRES is set)")
        pytest.skip(message)
    pg = PrivatePostgres(bindir)
    try:
        pg.init()
        pg.start()
        yield pg
    finally:
        pg.destroy()


@pytest.fixture(scope="session")
async def pg_template(private_pg: PrivatePostgres) -> str:
    """A migrated database that every test's database is cloned from."""
    conn = await private_pg.connect()
    try:
        await conn.execute(f'CREATE DATABASE "{TEMPLATE}"')
    finally:
        await conn.close()
    await migrate.upgrade(Settings(database_url=private_pg.url(TEMPLATE)))
    return TEMPLATE


@pytest.fixture
async def fault_url(private_pg: PrivatePostgres, pg_template: str) -> AsyncIterator[str]:
    """A fresh, migrated database on the private instance (dropped afterwards)."""
    private_pg.thaw()  # a previous test may have failed while the server was frozen or down
    if not private_pg.running():
        private_pg.start()
    await private_pg.wait_ready()
    name = f"chatstore_fault_{uuid.uuid4().hex[:10]}"
    conn = await private_pg.connect()
    try:
        await conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{pg_template}"')
    finally:
        await conn.close()
    url = private_pg.url(name)
    try:
        yield url
    finally:
        private_pg.thaw()
        if not private_pg.running():
            private_pg.start()
        await private_pg.wait_ready()
        await private_pg.drop_database(url)


@pytest.fixture
def settings(request: pytest.FixtureRequest, backend: str, sqlite_dir: Path) -> Settings:
    """Settings for a fresh database of ``backend`` (PostgreSQL: the private instance)."""
    if backend == "postgres":
        url = request.getfixturevalue("fault_url")
    else:
        url = f"sqlite://{sqlite_dir / (uuid.uuid4().hex + '.sqlite3')}"
    return Settings(database_url=url, data_dir=sqlite_dir)
