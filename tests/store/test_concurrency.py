"""Concurrent writers: seq stays gapless 1..N with no loss and no duplicates.

Appenders run as concurrent tasks on one store (PostgreSQL: a pool of connections; SQLite:
one connection) and on separately opened stores (their own connections or pools), which is
what several server processes sharing one database look like.
"""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter

import pytest

from store.errors import NotFound
from store.schemas import Message
from store.settings import Settings
from store.store import ConversationStore
from tests.rawdb import RawDB
from tests.store.helpers import separate_stores

WRITERS = 8


async def _writer(
    store: ConversationStore, user: str, conversation_id: uuid.UUID, writer: int, count: int
) -> list[Message]:
    return [
        await store.append_message(
            user=user, conversation_id=conversation_id, role="user", content=f"w{writer}-{n}"
        )
        for n in range(count)
    ]


async def _check_gapless(
    store: ConversationStore,
    raw: RawDB,
    user: str,
    conversation_id: uuid.UUID,
    results: list[list[Message]],
    per_writer: int,
) -> None:
    total = len(results) * per_writer
    returned = [m for batch in results for m in batch]
    assert sorted(m.seq for m in returned) == list(range(1, total + 1))
    assert len({m.id for m in returned}) == total
    for writer, batch in enumerate(results):
        # Each writer's own appends land in the order it made them.
        assert [m.content for m in batch] == [f"w{writer}-{n}" for n in range(per_writer)]
        assert [m.seq for m in batch] == sorted(m.seq for m in batch)

    assert await raw.seqs_in(conversation_id) == list(range(1, total + 1))
    conversation = await store.get_conversation(user=user, conversation_id=conversation_id)
    assert conversation.message_count == conversation.last_seq == total

    stored: list[Message] = []
    after = 0
    while True:
        page = await store.list_messages(
            user=user, conversation_id=conversation_id, limit=200, after_seq=after
        )
        stored += page.messages
        if not page.has_more:
            break
        after = page.messages[-1].seq
    contents = Counter(m.content for m in stored)
    assert len(stored) == total
    assert all(n == 1 for n in contents.values())
    assert contents.keys() == {f"w{w}-{n}" for w in range(len(results)) for n in range(per_writer)}
    assert {m.id: m for m in stored} == {m.id: m for m in returned}
    created = [m.created_at for m in stored]
    assert created == sorted(created)


async def test_concurrent_appenders_on_one_store(
    store: ConversationStore, raw: RawDB, user: str
) -> None:
    per_writer = 25
    conversation = await store.create_conversation(user=user)
    results = await asyncio.gather(
        *(_writer(store, user, conversation.id, w, per_writer) for w in range(WRITERS))
    )
    await _check_gapless(store, raw, user, conversation.id, list(results), per_writer)


@pytest.mark.pgbouncer
async def test_concurrent_appenders_on_separate_stores(
    store: ConversationStore, settings: Settings, raw: RawDB, user: str
) -> None:
    per_writer = 15
    conversation = await store.create_conversation(user=user)
    async with separate_stores(settings, WRITERS) as stores:
        results = await asyncio.gather(
            *(_writer(s, user, conversation.id, w, per_writer) for w, s in enumerate(stores))
        )
    await _check_gapless(store, raw, user, conversation.id, list(results), per_writer)


async def test_concurrent_appenders_across_conversations(
    store: ConversationStore, raw: RawDB, user: str
) -> None:
    per_writer = 6
    conversations = [await store.create_conversation(user=user) for _ in range(3)]
    results = await asyncio.gather(
        *(
            _writer(store, user, c.id, w, per_writer)
            for c in conversations
            for w in range(WRITERS // 2)
        )
    )
    for index, conversation in enumerate(conversations):
        batches = list(results[index * (WRITERS // 2) : (index + 1) * (WRITERS // 2)])
        await _check_gapless(store, raw, user, conversation.id, batches, per_writer)


@pytest.mark.pgbouncer
async def test_concurrent_first_conversations_of_a_new_user(
    store: ConversationStore, settings: Settings, raw: RawDB, user: str
) -> None:
    # The user row is created on first use: racing first creates must all succeed.
    async with separate_stores(settings, 4) as stores:
        created = await asyncio.gather(
            *(s.create_conversation(user=user, title=str(n)) for n, s in enumerate(stores * 2))
        )
    assert len({c.id for c in created}) == 8
    assert await raw.user_rows(user) == 1
    assert await raw.conversations_of(user) == 8
    listed = await store.list_conversations(user=user)
    assert {c.id for c in listed.conversations} == {c.id for c in created}


async def test_delete_while_appending_counts_exactly_what_it_removed(
    store: ConversationStore, raw: RawDB, user: str
) -> None:
    conversation = await store.create_conversation(user=user)
    appended: list[Message] = []
    enough = asyncio.Event()

    async def writer(w: int) -> None:
        for n in range(40):
            try:
                message = await store.append_message(
                    user=user, conversation_id=conversation.id, role="user", content=f"{w}-{n}"
                )
            except NotFound:
                return
            appended.append(message)
            if len(appended) >= 20:
                enough.set()

    async def deleter() -> int:
        await enough.wait()
        deleted = await store.delete_conversation(user=user, conversation_id=conversation.id)
        return deleted.messages_deleted

    *_, messages_deleted = await asyncio.gather(*(writer(w) for w in range(WRITERS)), deleter())
    # Every append either committed before the delete (and was counted and removed by the
    # cascade) or failed with not_found afterwards: none is lost from the count or left behind.
    assert messages_deleted == len(appended)
    assert sorted(m.seq for m in appended) == list(range(1, len(appended) + 1))
    assert await raw.messages_in(conversation.id) == 0
    assert await raw.orphans() == (0, 0)


async def test_purge_while_appending_counts_exactly_what_it_removed(
    store: ConversationStore, raw: RawDB, user: str, other_user: str
) -> None:
    conversations = [await store.create_conversation(user=user) for _ in range(2)]
    bystander = await store.create_conversation(user=other_user)
    appended: list[Message] = []
    enough = asyncio.Event()

    async def writer(w: int) -> None:
        target = conversations[w % 2].id
        for n in range(30):
            try:
                message = await store.append_message(
                    user=user, conversation_id=target, role="user", content=f"{w}-{n}"
                )
            except NotFound:
                return
            appended.append(message)
            if len(appended) >= 20:
                enough.set()

    async def purger() -> tuple[int, int]:
        await enough.wait()
        purged = await store.purge_user(user=user)
        return purged.conversations_deleted, purged.messages_deleted

    async def bystander_writer() -> None:
        for n in range(20):
            await store.append_message(
                user=other_user, conversation_id=bystander.id, role="user", content=f"b{n}"
            )

    purge = asyncio.create_task(purger())
    await asyncio.gather(*(writer(w) for w in range(WRITERS)), purge, bystander_writer())
    assert purge.result() == (2, len(appended))
    assert await raw.messages_of(user) == 0
    assert await raw.conversations_of(user) == 0
    assert await raw.orphans() == (0, 0)
    assert await raw.seqs_in(bystander.id) == list(range(1, 21))


@pytest.mark.pgbouncer
async def test_a_create_racing_an_operators_delete_of_the_user(
    store: ConversationStore, raw: RawDB, user: str
) -> None:
    # An operator deletes the user (purge-user, or psql) while that user starts a
    # conversation. The create must not fail with a driver error: it either lands before the
    # delete (and is deleted with the rest) or after it (and survives, with a new user row).
    # Deterministically: the operator's transaction holds the user row locked until the create
    # is waiting on it (PostgreSQL: in its foreign-key check; SQLite: for the write lock), and
    # only then deletes the user and commits.
    await store.create_conversation(user=user)
    if raw.dialect == "postgres":
        await raw.execute("BEGIN")
        await raw.execute("SELECT 1 FROM users WHERE id = $1 FOR UPDATE", user)
    else:
        await raw.execute("BEGIN IMMEDIATE")
    create = asyncio.create_task(store.create_conversation(user=user, title="after"))
    await asyncio.sleep(0.3)
    assert not create.done()
    await raw.execute("DELETE FROM users WHERE id = $1", user)
    await raw.execute("COMMIT")
    created = await create
    assert created.title == "after"
    listed = await store.list_conversations(user=user)
    assert [c.id for c in listed.conversations] == [created.id]
    assert await raw.user_rows(user) == 1
    assert await raw.orphans() == (0, 0)
