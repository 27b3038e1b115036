"""Idempotent appends: a replay returns the first message and stores nothing, also under races."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from store.errors import Conflict
from store.schemas import Message
from store.settings import Settings
from store.store import ConversationStore
from tests.rawdb import RawDB
from tests.store.helpers import separate_stores, snapshot

CALL: dict[str, Any] = {"id": "call_1", "name": "search", "arguments": {"q": "x", "n": 2}}


@pytest.mark.pgbouncer
async def test_a_replay_returns_the_first_message_and_stores_nothing(
    store: ConversationStore, raw: RawDB, user: str
) -> None:
    conversation = await store.create_conversation(user=user)
    first = await store.append_message(
        user=user,
        conversation_id=conversation.id,
        role="user",
        content="hello",
        metadata={"try": 1},
        idempotency_key="req-1",
    )
    after_first = await snapshot(store, raw, user, conversation.id)
    again = await store.append_message(
        user=user,
        conversation_id=conversation.id,
        role="user",
        content="hello",
        metadata={"try": 1},
        idempotency_key="req-1",
    )
    assert again == first
    # Nothing changed: no row, no counter, not even updated_at.
    assert await snapshot(store, raw, user, conversation.id) == after_first
    assert after_first[0]["last_seq"] == 1


async def test_a_late_replay_returns_the_original_position(
    store: ConversationStore, raw: RawDB, user: str
) -> None:
    conversation = await store.create_conversation(user=user)
    first = await store.append_message(
        user=user, conversation_id=conversation.id, role="user", content="q", idempotency_key="k1"
    )
    for n in range(3):
        await store.append_message(
            user=user, conversation_id=conversation.id, role="user", content=f"later {n}"
        )
    before = await snapshot(store, raw, user, conversation.id)
    again = await store.append_message(
        user=user, conversation_id=conversation.id, role="user", content="q", idempotency_key="k1"
    )
    assert again.seq == 1
    assert again.id == first.id
    assert await snapshot(store, raw, user, conversation.id) == before


async def test_a_replay_with_other_metadata_returns_the_stored_message(
    store: ConversationStore, raw: RawDB, user: str
) -> None:
    # Only role, content and tool_calls identify the message; metadata of a replay is ignored.
    conversation = await store.create_conversation(user=user)
    first = await store.append_message(
        user=user,
        conversation_id=conversation.id,
        role="user",
        content="hi",
        metadata={"attempt": 1},
        idempotency_key="k",
    )
    again = await store.append_message(
        user=user,
        conversation_id=conversation.id,
        role="user",
        content="hi",
        metadata={"attempt": 2},
        idempotency_key="k",
    )
    assert again == first
    assert again.metadata == {"attempt": 1}
    assert await raw.messages_in(conversation.id) == 1


async def test_a_replay_with_tool_calls(store: ConversationStore, raw: RawDB, user: str) -> None:
    conversation = await store.create_conversation(user=user)
    first = await store.append_message(
        user=user,
        conversation_id=conversation.id,
        role="assistant",
        content="",
        tool_calls=[CALL],
        idempotency_key="k",
    )
    # Same calls, keys in another order: the same JSON, so the same message.
    reordered = [{"arguments": {"n": 2, "q": "x"}, "name": "search", "id": "call_1"}]
    again = await store.append_message(
        user=user,
        conversation_id=conversation.id,
        role="assistant",
        content="",
        tool_calls=reordered,
        idempotency_key="k",
    )
    assert again == first
    assert await raw.messages_in(conversation.id) == 1


@pytest.mark.parametrize(
    "number", [1e23, 1e300, 2.5e-10, 0.1, 1.0, -0.0, 12345678901234567890, 1e16, 5e-324]
)
async def test_a_replay_of_numbers_in_tool_calls_is_not_a_conflict(
    store: ConversationStore, raw: RawDB, user: str, number: float
) -> None:
    # PostgreSQL's jsonb keeps numbers as exact decimals and prints 1e23 as
    # 100000000000000000000000, which Python reads back as an int that differs from the float
    # 1e23. A replay of the very same JSON must still be recognised as the same message.
    conversation = await store.create_conversation(user=user)
    calls = [{"id": "c", "name": "f", "arguments": {"x": number, "xs": [number]}}]
    first = await store.append_message(
        user=user,
        conversation_id=conversation.id,
        role="assistant",
        content="",
        tool_calls=calls,
        idempotency_key="k",
    )
    again = await store.append_message(
        user=user,
        conversation_id=conversation.id,
        role="assistant",
        content="",
        tool_calls=calls,
        idempotency_key="k",
    )
    assert again.id == first.id
    assert await raw.messages_in(conversation.id) == 1


DIFFERENT: list[tuple[str, dict[str, Any]]] = [
    ("content", {"role": "user", "content": "hello!"}),
    ("content-whitespace", {"role": "user", "content": "hello "}),
    ("role", {"role": "system", "content": "hello"}),
    ("role-assistant", {"role": "assistant", "content": "hello"}),
    ("tool_calls-added", {"role": "assistant", "content": "hello", "tool_calls": [CALL]}),
]


@pytest.mark.parametrize(("what", "fields"), DIFFERENT, ids=[w for w, _ in DIFFERENT])
async def test_the_same_key_for_a_different_message_is_a_conflict(
    store: ConversationStore, raw: RawDB, user: str, what: str, fields: dict[str, Any]
) -> None:
    conversation = await store.create_conversation(user=user)
    await store.append_message(
        user=user,
        conversation_id=conversation.id,
        role="user",
        content="hello",
        idempotency_key="k",
    )
    before = await snapshot(store, raw, user, conversation.id)
    with pytest.raises(Conflict) as info:
        await store.append_message(
            user=user, conversation_id=conversation.id, idempotency_key="k", **fields
        )
    assert str(info.value).startswith("conflict: ")
    assert "idempotency_key" in str(info.value)
    assert "hello" not in str(info.value)
    assert await snapshot(store, raw, user, conversation.id) == before


STORED_CALL: dict[str, Any] = {
    "id": "call_1",
    "name": "search",
    "arguments": {"q": "x", "n": 2, "flag": True, "off": False, "l": [1, 2]},
}


def _call(**changes: Any) -> list[dict[str, Any]]:
    return [{**STORED_CALL, **changes}]


def _arguments(**changes: Any) -> list[dict[str, Any]]:
    return [{**STORED_CALL, "arguments": {**STORED_CALL["arguments"], **changes}}]


TOOL_CALL_CHANGES: list[tuple[str, list[dict[str, Any]]]] = [
    ("other-id", _call(id="call_2")),
    ("other-name", _call(name="fetch")),
    ("extra-key", _call(type="function")),
    ("missing-key", [{"id": "call_1", "name": "search"}]),
    ("other-argument", _arguments(q="y")),
    ("true-is-not-1", _arguments(flag=1)),
    ("false-is-not-0", _arguments(off=0)),
    ("false-is-not-null", _arguments(off=None)),
    ("number-is-not-string", _arguments(n="2")),
    ("list-order", _arguments(l=[2, 1])),
    ("one-more-call", [STORED_CALL, {"id": "call_2", "name": "g"}]),
    ("dropped", []),
]


@pytest.mark.parametrize(
    ("what", "tool_calls"), TOOL_CALL_CHANGES, ids=[w for w, _ in TOOL_CALL_CHANGES]
)
async def test_the_same_key_with_other_tool_calls_is_a_conflict(
    store: ConversationStore, raw: RawDB, user: str, what: str, tool_calls: list[dict[str, Any]]
) -> None:
    conversation = await store.create_conversation(user=user)
    await store.append_message(
        user=user,
        conversation_id=conversation.id,
        role="assistant",
        content="go",
        tool_calls=[STORED_CALL],
        idempotency_key="k",
    )
    before = await snapshot(store, raw, user, conversation.id)
    with pytest.raises(Conflict):
        await store.append_message(
            user=user,
            conversation_id=conversation.id,
            role="assistant",
            content="go",
            tool_calls=tool_calls,
            idempotency_key="k",
        )
    assert await snapshot(store, raw, user, conversation.id) == before


async def test_keys_are_per_conversation(store: ConversationStore, raw: RawDB, user: str) -> None:
    first = await store.create_conversation(user=user)
    second = await store.create_conversation(user=user)
    a = await store.append_message(
        user=user, conversation_id=first.id, role="user", content="one", idempotency_key="k"
    )
    # Same key, different content, other conversation: not a conflict, a new message.
    b = await store.append_message(
        user=user, conversation_id=second.id, role="user", content="two", idempotency_key="k"
    )
    assert a.id != b.id
    assert (a.seq, b.seq) == (1, 1)
    assert await raw.messages_in(first.id) == 1
    assert await raw.messages_in(second.id) == 1
    # Messages without a key never collide with each other.
    for _ in range(2):
        await store.append_message(user=user, conversation_id=first.id, role="user", content="one")
    assert await raw.seqs_in(first.id) == [1, 2, 3]


async def _race_identical(stores: list[ConversationStore], user: str, raw: RawDB) -> None:
    conversation = await stores[0].create_conversation(user=user)
    results = await asyncio.gather(
        *(
            s.append_message(
                user=user,
                conversation_id=conversation.id,
                role="assistant",
                content="once",
                tool_calls=[CALL],
                idempotency_key="race",
            )
            for s in stores
        )
    )
    assert len({m.id for m in results}) == 1
    assert {m.seq for m in results} == {1}
    assert await raw.seqs_in(conversation.id) == [1]
    got = await stores[0].get_conversation(user=user, conversation_id=conversation.id)
    assert (got.message_count, got.last_seq) == (1, 1)


async def _race_different(stores: list[ConversationStore], user: str, raw: RawDB) -> None:
    conversation = await stores[0].create_conversation(user=user)
    results = await asyncio.gather(
        *(
            s.append_message(
                user=user,
                conversation_id=conversation.id,
                role="user",
                content=f"contender {n}",
                idempotency_key="race",
            )
            for n, s in enumerate(stores)
        ),
        return_exceptions=True,
    )
    winners = [r for r in results if isinstance(r, Message)]
    losers = [r for r in results if not isinstance(r, Message)]
    assert len(winners) == 1, results
    assert all(isinstance(r, Conflict) for r in losers), losers
    assert await raw.seqs_in(conversation.id) == [1]
    # Afterwards the winner's message is what the key stands for.
    again = await stores[0].append_message(
        user=user,
        conversation_id=conversation.id,
        role="user",
        content=winners[0].content,
        idempotency_key="race",
    )
    assert again == winners[0]


async def test_concurrent_replays_on_one_store(
    store: ConversationStore, raw: RawDB, user: str
) -> None:
    await _race_identical([store] * 8, user, raw)
    await _race_different([store] * 8, user, raw)


@pytest.mark.pgbouncer
async def test_concurrent_replays_on_separate_connections(
    store: ConversationStore, settings: Settings, raw: RawDB, user: str
) -> None:
    async with separate_stores(settings, 6) as stores:
        await _race_identical(stores, user, raw)
        await _race_different(stores, user, raw)


async def test_concurrent_replays_mixed_with_plain_appends(
    store: ConversationStore, raw: RawDB, user: str
) -> None:
    conversation = await store.create_conversation(user=user)

    async def keyed(n: int) -> Message:
        return await store.append_message(
            user=user,
            conversation_id=conversation.id,
            role="user",
            content=f"keyed {n % 3}",
            idempotency_key=f"key-{n % 3}",
        )

    async def plain(n: int) -> Message:
        return await store.append_message(
            user=user, conversation_id=conversation.id, role="user", content=f"plain {n}"
        )

    results = await asyncio.gather(*(keyed(n) for n in range(12)), *(plain(n) for n in range(5)))
    keyed_ids = {m.id for m in results[:12]}
    assert len(keyed_ids) == 3
    assert len({m.id for m in results[12:]}) == 5
    assert await raw.seqs_in(conversation.id) == list(range(1, 9))
    got = await store.get_conversation(user=user, conversation_id=conversation.id)
    assert (got.message_count, got.last_seq) == (8, 8)
