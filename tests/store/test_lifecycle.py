"""Opening a store: migrations (SQLite migrates itself, PostgreSQL must be at head) and outages."""

from __future__ import annotations

import asyncio
import sqlite3
import time
import uuid
from pathlib import Path

import pytest

from store import migrate
from store.errors import SchemaBehind, StoreError, Unavailable
from store.schemas import MessagePage
from store.settings import Settings
from store.store import ConversationStore
from tests.conftest import create_postgres_database, drop_postgres_database
from tests.leaks import clean
from tests.rawdb import RawDB


async def test_migrations_are_in_sync_with_the_models() -> None:
    assert await migrate.check() == []


async def test_migrating_a_database_at_head_is_a_no_op(
    store: ConversationStore, settings: Settings, user: str
) -> None:
    assert await migrate.upgrade(settings) == []
    # ... and the open store is unaffected by it.
    conversation = await store.create_conversation(user=user)
    fetched = await store.get_conversation(user=user, conversation_id=conversation.id)
    assert fetched.id == conversation.id


async def test_a_fresh_sqlite_file_migrates_itself_on_open(tmp_path: Path) -> None:
    path = tmp_path / "not" / "yet" / "there.sqlite3"
    settings = Settings(database_url=f"sqlite://{path}", data_dir=tmp_path / "data")
    assert not path.parent.exists()
    async with ConversationStore(settings) as store:
        conversation = await store.create_conversation(user="u")
        await store.append_message(
            user="u", conversation_id=conversation.id, role="user", content="hi"
        )
    assert settings.sqlite_path == str(path)
    with sqlite3.connect(path) as conn:
        tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master")}
        versions = [row[0] for row in conn.execute("SELECT version FROM aerich")]
    assert {"users", "conversations", "messages", "aerich", "conversations_user_recent"} <= tables
    assert versions == migrate.shipped_versions("sqlite")
    # Opening again finds it at head and keeps the data.
    async with ConversationStore(settings) as store:
        page = await store.list_messages(user="u", conversation_id=conversation.id)
        assert [m.content for m in page.messages] == ["hi"]
    assert await migrate.upgrade(settings) == []


async def test_the_embedded_default_lives_in_the_data_dir(tmp_path: Path) -> None:
    settings = Settings(database_url=None, data_dir=tmp_path / "xdg" / "chatstore")
    async with ConversationStore(settings) as store:
        assert store.dialect == "sqlite"
        await store.create_conversation(user="u")
    assert (tmp_path / "xdg" / "chatstore" / "chatstore.sqlite3").is_file()


async def test_postgres_behind_head_refuses_to_open(postgres_url: str) -> None:
    del postgres_url  # only here to skip (or fail) when PostgreSQL is not reachable
    url = await create_postgres_database("chatstore_behind")
    try:
        settings = Settings(database_url=url)
        # An empty database: nothing was ever migrated.
        with pytest.raises(SchemaBehind) as info:
            await ConversationStore(settings).open()
        text = str(info.value)
        assert "chatstore migrate" in text
        assert text.startswith("unavailable: ")
        assert isinstance(info.value, Unavailable)
        for name in migrate.shipped_versions("postgres"):
            assert name in text

        # `chatstore migrate` (migrate.upgrade) brings it to head: the store opens.
        assert await migrate.upgrade(settings) == migrate.shipped_versions("postgres")
        async with ConversationStore(settings) as store:
            await store.create_conversation(user="u")

        # One applied migration "forgotten": behind again, and the error names it.
        raw = await RawDB.connect(settings)
        try:
            newest = migrate.shipped_versions("postgres")[-1]
            await raw.execute("DELETE FROM aerich WHERE version = $1", newest)
        finally:
            await raw.close()
        with pytest.raises(SchemaBehind, match="chatstore migrate") as info:
            await ConversationStore(settings).open()
        assert newest in str(info.value)
    finally:
        await drop_postgres_database(url)


async def test_an_unreachable_database_is_unavailable_quickly(backend: str, tmp_path: Path) -> None:
    if backend == "postgres":
        # Nothing listens on port 1: the connection is refused.
        settings = Settings(
            database_url="postgres://postgres@127.0.0.1:1/chatstore", db_connect_timeout=2
        )
        secret = "Connect call failed"
    else:
        # A "directory" that is a regular file: the SQLite file can never be created.
        blocker = tmp_path / "blocker"
        blocker.write_text("not a directory")
        path = blocker / "history.db"  # (a name without "sqlite3", which the leak check flags)
        settings = Settings(database_url=f"sqlite://{path}", data_dir=tmp_path / "data")
        secret = "Errno"
    store = ConversationStore(settings)
    started = time.monotonic()
    with pytest.raises(Unavailable) as info:
        await store.open()
    assert time.monotonic() - started < 5
    text = str(info.value)
    assert text.startswith("unavailable: ")
    assert not isinstance(info.value, SchemaBehind)
    assert secret not in text
    # For the operator who configured the database: it may say where the database is.
    clean(text, audience="operator")
    # A store that failed to open refuses work with the same error type, not a crash.
    with pytest.raises(Unavailable):
        await store.list_conversations(user="u")


async def test_a_store_that_is_not_open_is_unavailable(settings: Settings) -> None:
    store = ConversationStore(settings)
    with pytest.raises(Unavailable, match="not open"):
        await store.create_conversation(user="u")
    async with store:
        await store.list_conversations(user="u")
    with pytest.raises(StoreError):
        await store.list_conversations(user="u")


async def test_a_database_that_does_not_exist_is_unavailable(postgres_url: str) -> None:
    missing = postgres_url.rsplit("/", 1)[0] + f"/chatstore_missing_{uuid.uuid4().hex[:8]}"
    name = missing.rsplit("/", 1)[1]
    with pytest.raises(Unavailable, match=f'the database "{name}" does not exist') as info:
        await ConversationStore(Settings(database_url=missing)).open()
    assert "createdb" in str(info.value)
    clean(str(info.value), audience="operator")


async def test_closing_with_calls_in_flight_finishes(
    store: ConversationStore, settings: Settings, user: str
) -> None:
    """Calls still running when the store closes end (with their answer or `unavailable`), and
    closing does not wait for connections that those calls would otherwise park."""
    conversation = await store.create_conversation(user=user)
    for n in range(5):
        await store.append_message(
            user=user, conversation_id=conversation.id, role="user", content=f"m{n}"
        )
    other = ConversationStore(settings)
    await other.open()
    calls = [
        asyncio.ensure_future(other.list_messages(user=user, conversation_id=conversation.id))
        for _ in range(6)
    ]
    await asyncio.sleep(0)
    await asyncio.wait_for(other.close(), 30)
    outcomes = await asyncio.gather(*calls, return_exceptions=True)
    for outcome in outcomes:
        assert isinstance(outcome, MessagePage | Unavailable), outcome
    with pytest.raises(Unavailable, match="not open"):
        await other.list_messages(user=user, conversation_id=conversation.id)


async def test_tortoise_spellings_of_pool_sizes_in_the_url(postgres_url: str) -> None:
    settings = Settings(database_url=f"{postgres_url}?minsize=1&maxsize=3")
    async with ConversationStore(settings) as store:
        conversation = await store.create_conversation(user="pool-sizes")
        assert conversation.message_count == 0
