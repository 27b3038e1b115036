"""The migrations on a database that already holds messages: every stored message gets the
token count the store would have given it and is found by search (content and tool calls), a
conversation from before forks can be forked, a message stored with null metadata gets {},
and nothing else changes."""

from __future__ import annotations

import json
import shutil
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from store import ConversationStore, migrate
from store.schemas import dump_json
from store.settings import Settings
from store.tokens import tokenizer
from tests.conftest import create_postgres_database, drop_postgres_database
from tests.rawdb import RawDB

FIRST = "0_20261123202810_init.py"


def first_migration_only(root: Path) -> Path:
    """A copy of the shipped migrations holding only the first one."""
    copy = root / "migrations"
    shutil.copytree(migrate.MIGRATIONS_ROOT, copy, ignore=shutil.ignore_patterns("__pycache__"))
    for dialect in migrate.DIALECTS:
        for path in (copy / dialect / "models").glob("*.py"):
            if path.name not in (FIRST, "__init__.py"):
                path.unlink()
    return copy


@pytest.fixture
async def old_database(backend: str, tmp_path: Path) -> AsyncIterator[Settings]:
    """A database at the first migration, before token counts existed."""
    if backend == "postgres":
        url = await create_postgres_database("chatstore_backfill")
    else:
        url = f"sqlite://{tmp_path / 'old.sqlite3'}"
    # Not the default tokenizer: the migration must count with the settings it is given.
    settings = Settings(database_url=url, data_dir=tmp_path / "data", tokenizer="cl100k_base")
    try:
        assert await migrate.upgrade(settings, first_migration_only(tmp_path)) == [FIRST]
        yield settings
    finally:
        if backend == "postgres":
            await drop_postgres_database(url)


async def test_existing_messages_are_counted_by_the_migration(old_database: Settings) -> None:
    settings = old_database
    raw = await RawDB.connect(settings)
    cid, now = uuid.uuid4(), raw.ts(datetime.now(UTC))
    contents = [
        ("user", "Find me a train to Lyon", None),
        ("assistant", "", [{"id": "c1", "name": "trains", "arguments": {"to": "Lyon"}}]),
        ("tool", "3 trains", None),
        ("assistant", "The 9:04 is fastest. " * 40, None),
    ]
    try:
        await raw.execute("INSERT INTO users (id, created_at) VALUES ($1, $2)", "old", now)
        await raw.execute(
            "INSERT INTO conversations (id, user_id, title, metadata, created_at, updated_at, "
            "message_count, last_seq) VALUES ($1, 'old', 'before', '{}', $2, $2, 4, 4)",
            cid,
            now,
        )
        for seq, (role, content, calls) in enumerate(contents, start=1):
            await raw.execute(
                "INSERT INTO messages (id, conversation_id, user_id, seq, role, content, "
                "tool_calls, tool_call_id, metadata, created_at) "
                "VALUES ($1, $2, 'old', $3, $4, $5, $6, $7, '{}', $8)",
                uuid.uuid4(),
                cid,
                seq,
                role,
                content,
                None if calls is None else json.dumps(calls),
                "c1" if role == "tool" else None,
                now,
            )
        # As a batch append stored a message that left metadata out, before migration 5.
        null = "'null'::jsonb" if raw.dialect == "postgres" else "'null'"
        await raw.execute(f"UPDATE messages SET metadata = {null} WHERE seq = 4")
    finally:
        await raw.close()

    applied = await migrate.upgrade(settings)
    assert applied == migrate.shipped_versions(settings.dialect)[1:]

    counter = tokenizer("cl100k_base")
    async with ConversationStore(settings) as store:
        page = await store.list_messages(user="old", conversation_id=cid)
        assert [m.token_count for m in page.messages] == [
            counter.count(content) + (counter.count(dump_json(calls)) if calls else 0)
            for _, content, calls in contents
        ]
        assert [(m.metadata, m.raw) for m in page.messages] == [({}, None)] * 4
        conversation = await store.get_conversation(user="old", conversation_id=cid)
        assert (conversation.title, conversation.summary, conversation.message_count) == (
            "before",
            None,
            4,
        )
        assert conversation.key is None
        context = await store.get_context(user="old", conversation_id=cid, max_tokens=10_000)
        assert [m.seq for m in context.messages] == [1, 2, 3, 4]
        found = await store.search_messages(user="old", query="lyon")
        assert sorted(hit.message.seq for hit in found.results) == [1, 2]
        assert conversation.forked_from is None
        fork = await store.fork_conversation(user="old", conversation_id=cid, at_seq=3)
        assert fork.forked_from is not None and fork.forked_from.conversation_id == cid
        found = await store.search_messages(user="old", query="fastest or trains")
        assert sorted(
            (h.message.conversation_id == fork.id, h.message.seq) for h in found.results
        ) == [(False, 1), (False, 2), (False, 3), (False, 4), (True, 1), (True, 2), (True, 3)]
