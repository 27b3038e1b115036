"""ON DELETE CASCADE lives in the database: plain SQL deletes leave no orphans.

These tests act like an operator with ``psql`` or ``sqlite3``: a raw connection, no store.
"""

from __future__ import annotations

import sqlite3

import asyncpg
import pytest

from store.errors import NotFound
from store.store import ConversationStore
from tests.rawdb import RawDB
from tests.store.helpers import conversation_with, snapshot


async def test_raw_delete_of_a_conversation_cascades_to_its_messages(
    store: ConversationStore, raw: RawDB, user: str
) -> None:
    doomed = await conversation_with(store, user, 4)
    kept = await conversation_with(store, user, 3)
    kept_before = await snapshot(store, raw, user, kept.id)
    assert await raw.messages_in(doomed.id) == 4

    await raw.execute("DELETE FROM conversations WHERE id = $1", doomed.id)

    assert await raw.messages_in(doomed.id) == 0
    assert await raw.orphans() == (0, 0)
    assert await raw.messages_of(user) == 3
    with pytest.raises(NotFound):
        await store.list_messages(user=user, conversation_id=doomed.id)
    after = await snapshot(store, raw, user, kept.id)
    # Only the per-user totals changed: the other conversation is untouched.
    assert after[:2] == kept_before[:2]
    assert after[2:] == (3, 1, 1)


async def test_raw_delete_of_a_user_cascades_to_conversations_and_messages(
    store: ConversationStore, raw: RawDB, user: str, other_user: str
) -> None:
    await conversation_with(store, user, 2)
    await conversation_with(store, user, 5)
    await store.create_conversation(user=user)
    survivor = await conversation_with(store, other_user, 3)
    survivor_before = await snapshot(store, raw, other_user, survivor.id)

    await raw.execute("DELETE FROM users WHERE id = $1", user)

    assert await raw.user_rows(user) == 0
    assert await raw.conversations_of(user) == 0
    assert await raw.messages_of(user) == 0
    assert await raw.orphans() == (0, 0)
    assert (await store.list_conversations(user=user)).conversations == []
    assert await snapshot(store, raw, other_user, survivor.id) == survivor_before


async def test_the_database_refuses_orphans(
    store: ConversationStore, raw: RawDB, user: str
) -> None:
    # The foreign keys are enforced, not just declared: a message for a conversation that does
    # not exist cannot be inserted behind the store's back either.
    conversation = await conversation_with(store, user, 1)
    await raw.execute("DELETE FROM conversations WHERE id = $1", conversation.id)
    with pytest.raises((asyncpg.ForeignKeyViolationError, sqlite3.IntegrityError)):
        await raw.execute(
            "INSERT INTO messages (id, conversation_id, user_id, seq, role, content, metadata, "
            "created_at, token_count) VALUES ($1, $2, $3, 1, 'user', 'x', '{}', $4, 1)",
            conversation.id,
            conversation.id,
            user,
            conversation.created_at if raw.dialect == "postgres" else "2026-01-01 00:00:00+00:00",
        )
    assert await raw.orphans() == (0, 0)
