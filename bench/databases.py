"""The benchmark's own PostgreSQL databases: create, migrate, describe, drop.

Every database the benchmark creates or drops is named ``chatstore_bench…``; any other name
is refused, so a mistyped flag can never drop someone else's database.
"""

from __future__ import annotations

import os
import platform
import re
import subprocess
import sys
import uuid
from importlib import metadata
from pathlib import Path
from typing import Any

import asyncpg

from store import migrate
from store.settings import Settings

__all__ = [
    "BENCH_PREFIX",
    "admin_connect",
    "check_name",
    "connect",
    "create_database",
    "database_exists",
    "database_url",
    "drop_database",
    "environment",
    "migrate_database",
    "run_database_names",
]

BENCH_PREFIX = "chatstore_bench"
_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


def check_name(name: str) -> str:
    if not _NAME.match(name) or not name.startswith(BENCH_PREFIX):
        raise ValueError(
            f"refusing database name {name!r}: benchmark databases are lower-case "
            f"identifiers starting with {BENCH_PREFIX!r}"
        )
    return name


def database_url(server_url: str, name: str) -> str:
    return f"{server_url.rstrip('/')}/{check_name(name)}"


def run_database_names() -> tuple[str, str]:
    """Fresh names for this run's chatstore and floor databases."""
    tag = uuid.uuid4().hex[:10]
    return f"{BENCH_PREFIX}_run_{tag}_store", f"{BENCH_PREFIX}_run_{tag}_floor"


async def connect(
    url: str,
    *,
    application_name: str = "chatstore_bench",
    server_settings: dict[str, str] | None = None,
) -> asyncpg.Connection:
    settings = {"application_name": application_name, **(server_settings or {})}
    return await asyncpg.connect(url, timeout=10, server_settings=settings)


async def admin_connect(server_url: str) -> asyncpg.Connection:
    return await connect(f"{server_url.rstrip('/')}/postgres", application_name="chatstore_bench")


async def database_exists(admin: asyncpg.Connection, name: str) -> bool:
    found = await admin.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", check_name(name))
    return found is not None


async def create_database(admin: asyncpg.Connection, name: str) -> None:
    await admin.execute(f'CREATE DATABASE "{check_name(name)}"')


async def drop_database(admin: asyncpg.Connection, name: str) -> None:
    await admin.execute(f'DROP DATABASE IF EXISTS "{check_name(name)}" WITH (FORCE)')


async def migrate_database(url: str) -> list[str]:
    """Bring the database to head with chatstore's real migrations (aerich)."""
    return await migrate.upgrade(Settings(database_url=url))


_SERVER_SETTINGS = (
    "server_version",
    "fsync",
    "synchronous_commit",
    "wal_sync_method",
    "full_page_writes",
    "commit_delay",
    "shared_buffers",
    "effective_cache_size",
    "work_mem",
    "random_page_cost",
    "jit",
    "max_connections",
)


def _package_version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def _git_revision() -> str | None:
    root = Path(__file__).resolve().parent.parent
    try:
        result = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
        dirty = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--", "store", "migrations"],
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    if result.returncode != 0:
        return None
    revision = result.stdout.strip()
    return f"{revision}+dirty" if dirty.stdout.strip() else revision


async def environment(admin: asyncpg.Connection) -> dict[str, Any]:
    """What the figures depend on: server settings (durability included), versions, CPU."""
    rows = await admin.fetch(
        "SELECT name, setting, unit FROM pg_settings WHERE name = ANY($1::text[])",
        list(_SERVER_SETTINGS),
    )
    settings = {
        row["name"]: f"{row['setting']}{'' if not row['unit'] else ' ' + row['unit']}"
        for row in rows
    }
    return {
        "postgres": settings,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "packages": {
            name: _package_version(name)
            for name in ("asyncpg", "tortoise-orm", "pydantic", "mcp", "chatstore")
        },
        "git_revision": _git_revision(),
    }
