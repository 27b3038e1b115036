"""Users never see each other: another user's conversation looks exactly like a missing one."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable

import pytest

from store.errors import NotFound
from store.store import ConversationStore
from tests.rawdb import RawDB
from tests.store.helpers import conversation_with, snapshot

Call = Callable[[ConversationStore, str, uuid.UUID], Awaitable[object]]

CALLS: dict[str, Call] = {
    "get": lambda s, u, c: s.get_conversation(user=u, conversation_id=c),
    "get-recent": lambda s, u, c: s.get_conversation(user=u, conversation_id=c, recent_messages=5),
    "append": lambda s, u, c: s.append_message(
        user=u, conversation_id=c, role="user", content="intruder"
    ),
    "append-replaying-the-owners-key": lambda s, u, c: s.append_message(
        user=u, conversation_id=c, role="user", content="owner's text", idempotency_key="owner-key"
    ),
    "append-tool-call": lambda s, u, c: s.append_message(
        user=u,
        conversation_id=c,
        role="assistant",
        content="",
        tool_calls=[{"id": "x", "name": "y"}],
    ),
    "list_messages": lambda s, u, c: s.list_messages(user=u, conversation_id=c),
    "list_messages-before": lambda s, u, c: s.list_messages(
        user=u, conversation_id=c, before_seq=2
    ),
    "list_messages-after": lambda s, u, c: s.list_messages(user=u, conversation_id=c, after_seq=0),
    "delete": lambda s, u, c: s.delete_conversation(user=u, conversation_id=c),
}


@pytest.mark.parametrize("name", list(CALLS))
async def test_another_users_conversation_is_indistinguishable_from_a_missing_one(
    store: ConversationStore, raw: RawDB, user: str, other_user: str, name: str
) -> None:
    call = CALLS[name]
    owned = await store.create_conversation(user=user, title="private")
    await store.append_message(
        user=user,
        conversation_id=owned.id,
        role="user",
        content="owner's text",
        idempotency_key="owner-key",
    )
    await store.append_message(user=user, conversation_id=owned.id, role="user", content="secret")
    # The intruder is a real user with data of their own.
    await conversation_with(store, other_user, 1)
    before = await snapshot(store, raw, user, owned.id)
    intruder_before = (await raw.conversations_of(other_user), await raw.messages_of(other_user))

    with pytest.raises(NotFound) as foreign:
        await call(store, other_user, owned.id)
    with pytest.raises(NotFound) as missing:
        await call(store, other_user, uuid.uuid4())
    assert str(foreign.value) == str(missing.value)
    assert foreign.value.message == missing.value.message
    assert str(foreign.value).startswith("not_found: ")
    assert "private" not in str(foreign.value)
    assert user not in str(foreign.value)

    assert await snapshot(store, raw, user, owned.id) == before
    assert (await raw.conversations_of(other_user), await raw.messages_of(other_user)) == (
        intruder_before
    )


async def test_list_conversations_shows_only_ones_own(
    store: ConversationStore, user: str, other_user: str
) -> None:
    mine = [await store.create_conversation(user=user) for _ in range(4)]
    theirs = [await store.create_conversation(user=other_user) for _ in range(3)]
    # Interleave updates so that the two users' rows are mixed in (updated_at, id) order.
    for a, b in zip(mine, theirs, strict=False):
        await store.append_message(user=other_user, conversation_id=b.id, role="user", content="b")
        await store.append_message(user=user, conversation_id=a.id, role="user", content="a")

    for who, expected in ((user, mine), (other_user, theirs)):
        seen: list[uuid.UUID] = []
        cursor: str | None = None
        while True:
            page = await store.list_conversations(user=who, limit=2, cursor=cursor)
            seen.extend(c.id for c in page.conversations)
            cursor = page.next_cursor
            if cursor is None:
                break
        assert sorted(seen) == sorted(c.id for c in expected)
        assert len(seen) == len(set(seen))


async def test_a_conversation_belongs_to_exactly_one_user(
    store: ConversationStore, user: str, other_user: str
) -> None:
    owned = await conversation_with(store, user, 2)
    # Same idempotency key and the same content in both users' own conversations: independent.
    theirs = await store.create_conversation(user=other_user)
    for who, cid in ((user, owned.id), (other_user, theirs.id)):
        await store.append_message(
            user=who, conversation_id=cid, role="user", content="same", idempotency_key="k"
        )
    assert (await store.get_conversation(user=user, conversation_id=owned.id)).last_seq == 3
    assert (await store.get_conversation(user=other_user, conversation_id=theirs.id)).last_seq == 1


async def test_purging_one_user_leaves_the_other_intact(
    store: ConversationStore, raw: RawDB, user: str, other_user: str
) -> None:
    kept = [await conversation_with(store, user, n) for n in (1, 3)]
    await conversation_with(store, other_user, 2)
    before = [await snapshot(store, raw, user, c.id) for c in kept]

    purged = await store.purge_user(user=other_user)
    assert (purged.conversations_deleted, purged.messages_deleted) == (1, 2)

    assert [await snapshot(store, raw, user, c.id) for c in kept] == before
    assert await raw.conversations_of(other_user) == 0
    assert await raw.messages_of(other_user) == 0
    assert await raw.user_rows(other_user) == 0
    page = await store.list_messages(user=user, conversation_id=kept[1].id)
    assert [m.content for m in page.messages] == ["m1", "m2", "m3"]
