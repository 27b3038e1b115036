"""Schema migrations: applying the shipped aerich migrations, and checking a database is at head.

aerich writes plain SQL for one dialect, so two sets generated from the same models ship in
the ``migrations`` package: ``migrations/postgres/models/`` and ``migrations/sqlite/models/``.
The right one is chosen from the database URL. Developers add a migration to both sets with
``python -m store.migrate make NAME``; ``python -m store.migrate check`` fails when a model
changed without one (CI runs it).
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import sys
import tempfile
from contextvars import ContextVar
from pathlib import Path
from typing import Any, Literal

import migrations as _migrations_pkg
from store.errors import SchemaBehind
from store.settings import APP_LABEL, Settings

Dialect = Literal["postgres", "sqlite"]
DIALECTS: tuple[Dialect, ...] = ("postgres", "sqlite")
MIGRATIONS_ROOT = Path(_migrations_pkg.__file__).resolve().parent

#: Offline generation never connects; these URLs only select the SQL dialect.
_OFFLINE_URLS: dict[Dialect, str] = {
    "postgres": "postgres://chatstore@127.0.0.1:1/chatstore_offline",
    "sqlite": "sqlite://:memory:",
}


def migrations_location(dialect: Dialect, root: Path = MIGRATIONS_ROOT) -> Path:
    """The aerich ``location`` for ``dialect`` (aerich appends the app label)."""
    return root / dialect


def shipped_versions(dialect: Dialect, root: Path = MIGRATIONS_ROOT) -> list[str]:
    """The migration file names for ``dialect``, oldest first (aerich's order: numeric prefix)."""
    folder = migrations_location(dialect, root) / APP_LABEL
    names = [p.name for p in folder.glob("*.py") if p.stem.split("_", 1)[0].isdigit()]
    return sorted(names, key=lambda name: int(name.split("_", 1)[0]))


def tortoise_config(settings: Settings, *, with_aerich: bool = False) -> dict[str, Any]:
    """The Tortoise config dict for ``settings`` (``with_aerich`` adds aerich's history model).

    Tortoise is used for the schema only: the models define it, aerich migrates it through
    this config. The store itself talks to the database through its backends.
    """
    from store.backends import backend_class

    models = ["store.models", "aerich.models"] if with_aerich else ["store.models"]
    # The connection is named after its dialect: Tortoise caches SQL per connection name,
    # and one process (the test suite) may hold a SQLite and a PostgreSQL context at once.
    name = settings.dialect
    return {
        "connections": {name: backend_class(settings).tortoise_connection(settings)},
        "apps": {APP_LABEL: {"models": models, "default_connection": name}},
        "use_tz": True,
        "timezone": "UTC",
    }


#: The settings of the upgrade running in this task: a migration that needs them (the token
#: counting one: which tokenizer) reads them here.
_UPGRADING: ContextVar[Settings] = ContextVar("chatstore_upgrading")


def upgrading() -> Settings:
    """The settings of the database being migrated (the environment's outside an upgrade)."""
    return _UPGRADING.get(None) or Settings()


async def upgrade(settings: Settings, root: Path = MIGRATIONS_ROOT) -> list[str]:
    """Bring the configured database to head (the newest migration under ``root``); returns
    the migrations applied (may be none)."""
    from aerich import Command
    from tortoise.context import TortoiseContext

    from store._guard import Guard
    from store.backends import backend_class

    # Only to put a failure to connect in an operator's words: it is never opened here.
    guard = Guard(backend_class(settings)(settings), settings.db_timeout)
    with guard.opening():
        backend_class(settings).prepare(settings)
    config = tortoise_config(settings, with_aerich=True)
    location = str(migrations_location(settings.dialect, root))
    # aerich initialises Tortoise's global state; a private context keeps that state out of
    # any store already open in this process.
    token = _UPGRADING.set(settings)
    with guard.opening(), TortoiseContext() as ctx:
        try:
            command = Command(tortoise_config=config, app=APP_LABEL, location=location)
            await command.init()
            applied: list[str] = await command.upgrade(run_in_transaction=True)
            return applied
        finally:
            await ctx.close_connections()
            _UPGRADING.reset(token)


def at_head(dialect: Dialect, applied: set[str]) -> str:
    """The schema version (the newest shipped migration, without ``.py``) when every shipped
    migration is among ``applied``; ``SchemaBehind`` naming the pending ones otherwise."""
    shipped = shipped_versions(dialect)
    missing = [version for version in shipped if version not in applied]
    if missing:
        raise behind_error(missing)
    return shipped[-1].removesuffix(".py")


def behind_error(missing: list[str]) -> SchemaBehind:
    return SchemaBehind(
        "the database schema is not at head "
        f"({len(missing)} migration(s) pending: {', '.join(missing)}); "
        "run `chatstore migrate` with the same CHATSTORE_DATABASE_URL, then start again"
    )


async def _generate(dialect: Dialect, root: Path, name: str) -> str | None:
    """Write a new migration for ``dialect`` under ``root`` when models changed; its file name."""
    from aerich import Command
    from tortoise.context import TortoiseContext

    settings = Settings(database_url=_OFFLINE_URLS[dialect])
    config = tortoise_config(settings, with_aerich=True)
    location = str(migrations_location(dialect, root))
    with TortoiseContext() as ctx:
        try:
            command = Command(tortoise_config=config, app=APP_LABEL, location=location)
            if not shipped_versions(dialect, root):
                await command.init_migrations(safe=False)
                return shipped_versions(dialect, root)[-1]
            await command.init(offline=True)
            created: str | None = await command.migrate(name, no_input=True, offline=True)
            return created or None
        finally:
            await ctx.close_connections()


async def make(name: str, root: Path = MIGRATIONS_ROOT) -> dict[Dialect, str | None]:
    """Generate the next migration for both dialects from the current models."""
    return {dialect: await _generate(dialect, root, name) for dialect in DIALECTS}


async def check(root: Path = MIGRATIONS_ROOT) -> list[str]:
    """Problems found comparing the models with the committed migrations (empty: in sync)."""
    problems: list[str] = []
    versions = {dialect: shipped_versions(dialect, root) for dialect in DIALECTS}
    stems = {dialect: [v.split("_", 1)[0] for v in names] for dialect, names in versions.items()}
    if stems["postgres"] != stems["sqlite"]:
        problems.append(
            "the postgres and sqlite migration sets differ: "
            f"{versions['postgres']} vs {versions['sqlite']}"
        )
    with tempfile.TemporaryDirectory() as scratch:
        copy = Path(scratch, "migrations")
        shutil.copytree(root, copy, ignore=shutil.ignore_patterns("__pycache__"))
        for dialect in DIALECTS:
            created = await _generate(dialect, copy, "drift")
            if created:
                text = (migrations_location(dialect, copy) / APP_LABEL / created).read_text()
                problems.append(
                    f"models changed without a {dialect} migration; "
                    f"`python -m store.migrate make NAME` would write:\n{text}"
                )
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m store.migrate", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    make_parser = sub.add_parser("make", help="write the next migration for both dialects")
    make_parser.add_argument("name")
    sub.add_parser("check", help="fail when the models and the migrations disagree")
    args = parser.parse_args(argv)
    if args.command == "make":
        for dialect, created in asyncio.run(make(args.name)).items():
            print(f"{dialect}: {created or 'no changes'}")
        return 0
    problems = asyncio.run(check())
    for problem in problems:
        print(problem, file=sys.stderr)
    if not problems:
        print("migrations are in sync with the models (postgres, sqlite)")
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main())
