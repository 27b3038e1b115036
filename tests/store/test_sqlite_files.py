"""The SQLite file itself: a migration killed at any statement leaves a file that opens and
reaches head, what chatstore creates is private to its user whatever the umask (and what
exists already keeps its mode), and an explicit URL creates no default data directory."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sqlite3
import stat
import sys
import textwrap
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from tortoise.context import TortoiseContext
from tortoise.transactions import in_transaction

from store import migrate
from store.backends._sqlite_migrations import MigrationClient, statements
from store.settings import Settings
from store.store import ConversationStore
from tests.support import REPO_ROOT

#: Migrates new files in FOLDER, each in a forked child that SIGKILLs itself just before its
#: K-th SQL statement (every statement SQLite runs: a script's one by one, FTS5's own too).
#: A first child, never killed, counts the statements and notes which began the first
#: migration's transaction and wrote its history row; the kill points are every statement of
#: the first migration (a kill there once left tables without the row that says they exist)
#: and KILLS more spread over the rest. Prints {point: the child's wait status} as JSON.
_KILL_EACH = textwrap.dedent(
    """
    import asyncio, json, os, signal, sqlite3, sys
    from store import migrate
    from store.settings import Settings
    from store.tokens import tokenizer

    tokenizer(Settings().tokenizer)  # loaded once, before the forks (the backfill counts)

    folder, kills = sys.argv[1], int(sys.argv[2])
    count, kill_at, marks = 0, 0, {}
    real_connect = sqlite3.connect

    def trace(statement):
        global count
        count += 1
        if count == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)
        if statement.startswith("BEGIN"):
            marks.setdefault("begin", count)
        if statement.startswith('INSERT INTO "aerich"'):
            marks.setdefault("history", count)

    def connect(*args, **kwargs):
        conn = real_connect(*args, **kwargs)
        conn.set_trace_callback(trace)
        return conn

    sqlite3.connect = connect

    def migrate_killed_at(point):
        pid = os.fork()
        if pid == 0:
            global kill_at
            kill_at = point
            url = f"sqlite://{folder}/killed-at-{point}.sqlite3"
            asyncio.run(migrate.upgrade(Settings(database_url=url)))
            with open(f"{folder}/count.json", "w") as out:
                json.dump({"total": count, **marks}, out)
            os._exit(0)
        return os.waitpid(pid, 0)[1]

    assert migrate_killed_at(0) == 0
    with open(f"{folder}/count.json") as counts:
        counted = json.load(counts)
    total, begin, history = counted["total"], counted["begin"], counted["history"]
    spread = [history + 1 + i * (total - history - 1) // (kills - 1) for i in range(kills)]
    points = sorted({*range(begin, history + 2), *spread})
    print(json.dumps({"total": total, "killed": {p: migrate_killed_at(p) for p in points}}))
    """
)
KILLS = 4


@pytest.mark.slow
async def test_a_first_migration_killed_at_any_statement_leaves_a_file_that_opens(
    tmp_path: Path,
) -> None:
    driver = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        _KILL_EACH,
        str(tmp_path),
        str(KILLS),
        cwd=REPO_ROOT,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(driver.communicate(), 120)
    assert driver.returncode == 0, err.decode(errors="replace")
    report = json.loads(out)
    total, killed = report["total"], {int(p): status for p, status in report["killed"].items()}
    assert set(killed.values()) == {signal.SIGKILL}, killed  # each died at its statement
    bricked = []
    for point in sorted(killed):
        path = tmp_path / f"killed-at-{point}.sqlite3"
        settings = Settings(database_url=f"sqlite://{path}", data_dir=tmp_path / "data")
        try:
            async with ConversationStore(settings) as store:
                conversation = await store.create_conversation(user="u")
                await store.append_message(
                    user="u", conversation_id=conversation.id, role="user", content="hi"
                )
                assert (await store.search_messages(user="u", query="hi")).results
            assert await migrate.upgrade(settings) == []
        except Exception as exc:
            bricked.append(f"killed before statement {point}/{total}: {exc}")
    assert not bricked, f"{len(bricked)} of {len(killed)} kills:\n" + "\n".join(bricked)


def test_statements_splits_where_sqlite_ends_a_statement() -> None:
    script = """
        CREATE TABLE "t" ("a" TEXT DEFAULT 'x;y') /* a comment; with a semicolon */;
        CREATE TRIGGER "t_insert" AFTER INSERT ON "t" BEGIN
            UPDATE "t" SET "a" = 'z' WHERE rowid = new.rowid;
            SELECT 1;
        END;
        INSERT INTO "t" VALUES ('--;')
    """
    parts = [" ".join(part.split()) for part in statements(script)]
    assert parts == [
        """CREATE TABLE "t" ("a" TEXT DEFAULT 'x;y') /* a comment; with a semicolon */;""",
        'CREATE TRIGGER "t_insert" AFTER INSERT ON "t" BEGIN UPDATE "t" SET "a" = \'z\' '
        "WHERE rowid = new.rowid; SELECT 1; END;",
        """INSERT INTO "t" VALUES ('--;')""",
    ]
    assert list(statements(" ;\n ; ")) == []


async def test_a_script_in_a_migration_transaction_commits_or_rolls_back_with_it(
    tmp_path: Path,
) -> None:
    """The hook into Tortoise's SQLite client (store/backends/_sqlite_migrations.py): the
    engine aerich migrates through must run a script inside the transaction it is given."""
    settings = Settings(database_url=f"sqlite://{tmp_path / 'hook.sqlite3'}")
    config = migrate.tortoise_config(settings)
    name = settings.dialect
    assert config["connections"][name]["engine"] == "store.backends._sqlite_migrations"
    with TortoiseContext() as ctx:
        await ctx.init(config=config)
        try:
            assert isinstance(ctx.connections.get(name), MigrationClient)
            with pytest.raises(RuntimeError, match="rolled back"):
                async with in_transaction(name) as conn:
                    await conn.execute_script('CREATE TABLE "a" (x); CREATE TABLE "b" (y);')
                    raise RuntimeError("rolled back")
            async with in_transaction(name) as conn:
                await conn.execute_script('CREATE TABLE "c" (x); INSERT INTO "c" VALUES (1);')
        finally:
            await ctx.close_connections()
    with sqlite3.connect(tmp_path / "hook.sqlite3") as plain:
        tables = {row[0] for row in plain.execute("SELECT name FROM sqlite_master")}
        assert tables == {"c"}
        assert plain.execute('SELECT x FROM "c"').fetchall() == [(1,)]


@contextmanager
def umask(mask: int) -> Iterator[None]:
    previous = os.umask(mask)
    try:
        yield
    finally:
        os.umask(previous)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.parametrize("mask", [0o000, 0o022, 0o077], ids=["umask-000", "umask-022", "umask-077"])
async def test_what_chatstore_creates_is_private_whatever_the_umask(
    tmp_path: Path, mask: int
) -> None:
    home = tmp_path / "home"
    home.mkdir()
    data_dir = home / ".local" / "share" / "chatstore"
    with umask(mask):
        async with ConversationStore(Settings(data_dir=data_dir)) as store:
            conversation = await store.create_conversation(user="u")
            await store.append_message(
                user="u", conversation_id=conversation.id, role="user", content="secret"
            )
            database = data_dir / "chatstore.sqlite3"
            files = [database, Path(f"{database}-wal"), Path(f"{database}-shm")]
            assert {path.name: oct(mode(path)) for path in files} == {
                path.name: oct(0o600) for path in files
            }
    folders = [home / ".local", home / ".local" / "share", data_dir]
    assert {str(path): oct(mode(path)) for path in folders} == {
        str(path): oct(0o700) for path in folders
    }


async def test_an_existing_folder_and_file_keep_their_modes(tmp_path: Path) -> None:
    """A folder or database an operator made (shared on purpose, perhaps) is not chmod-ed."""
    shared = tmp_path / "shared"
    shared.mkdir(mode=0o750)
    shared.chmod(0o750)
    database = shared / "team.sqlite3"
    sqlite3.connect(database).close()
    database.chmod(0o640)
    settings = Settings(database_url=f"sqlite://{database}", data_dir=tmp_path / "data")
    async with ConversationStore(settings) as store:
        await store.create_conversation(user="u")
        assert oct(mode(Path(f"{database}-wal"))) == oct(0o640)  # SQLite: as the database
    assert (oct(mode(shared)), oct(mode(database))) == (oct(0o750), oct(0o640))


async def test_an_explicit_url_creates_no_default_data_directory(tmp_path: Path) -> None:
    data_dir = tmp_path / "xdg" / "chatstore"
    path = tmp_path / "elsewhere" / "history.sqlite3"
    settings = Settings(database_url=f"sqlite://{path}", data_dir=data_dir)
    async with ConversationStore(settings) as store:
        await store.create_conversation(user="u")
    assert path.is_file()
    assert not (tmp_path / "xdg").exists()
    assert oct(mode(path.parent)) == oct(0o700)
