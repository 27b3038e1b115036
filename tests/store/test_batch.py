"""append_messages: a batch stored as one atomic step, with consecutive seqs, idempotency per
message key, and every message validated before anything is written."""

from __future__ import annotations

import asyncio
import random
import uuid
from typing import Any

import pytest

from store import Conflict, ConversationStore, InvalidArgument, NotFound, Settings
from store.tokens import tokenizer
from tests.rawdb import RawDB
from tests.store.helpers import snapshot


def turn(n: int) -> list[dict[str, Any]]:
    """A framework's turn: the user, a tool call, its result, the answer."""
    return [
        {"role": "user", "content": f"question {n}"},
        {"role": "assistant", "tool_calls": [{"id": f"c{n}", "name": "search"}]},
        {"role": "tool", "tool_call_id": f"c{n}", "content": f"result {n}"},
        {"role": "assistant", "content": f"answer {n}", "metadata": {"n": n}},
    ]


@pytest.mark.pgbouncer
async def test_a_batch_gets_consecutive_seqs_and_one_time(
    store: ConversationStore, raw: RawDB, user: str
) -> None:
    conversation = await store.create_conversation(user=user)
    first = await store.append_message(
        user=user, conversation_id=conversation.id, role="system", content="Be brief."
    )
    stored = await store.append_messages(
        user=user, conversation_id=conversation.id, messages=turn(1)
    )
    assert [m.seq for m in stored] == [2, 3, 4, 5]
    assert [m.role for m in stored] == ["user", "assistant", "tool", "assistant"]
    assert len({m.created_at for m in stored}) == 1 and stored[0].created_at >= first.created_at
    counter = tokenizer(store.settings.tokenizer)
    assert [m.token_count for m in stored] == [
        counter.count_message(m.content, m.tool_calls) for m in stored
    ]
    page = await store.list_messages(user=user, conversation_id=conversation.id)
    assert page.messages == [first, *stored]
    after = await store.get_conversation(user=user, conversation_id=conversation.id)
    assert (after.message_count, after.last_seq, after.updated_at) == (5, 5, stored[0].created_at)
    assert await raw.seqs_in(conversation.id) == [1, 2, 3, 4, 5]


@pytest.mark.parametrize(
    ("messages", "mentions"),
    [
        ("not a list", "must be a list"),
        ([{"role": "user", "content": "ok"}, "text"], r"messages\[1\] must be an object"),
        (
            [{"role": "user", "content": "ok"}, {"role": "user", "content": "ok"}, {"role": "x"}],
            r"messages\[2\]: role",
        ),
        ([{"role": "user", "content": ""}], r"messages\[0\]: content must not be empty"),
        ([{"role": "tool", "content": "r"}], r"messages\[0\]: .*tool_call_id"),
        ([{"role": "user", "content": "nul\x00"}], r"messages\[0\]: content"),
        ([{"role": "user", "content": "x", "user": "bob"}], r"messages\[0\]: user"),
        (
            [
                {"role": "user", "content": "a", "idempotency_key": "k"},
                {"role": "user", "content": "b", "idempotency_key": "k"},
            ],
            r"messages\[1\]: idempotency_key is used twice",
        ),
        ([{"role": "user", "content": "x"}] * 1001, "at most 1000 per call"),
    ],
)
async def test_an_invalid_batch_is_refused_whole(
    store: ConversationStore, raw: RawDB, user: str, messages: Any, mentions: str
) -> None:
    conversation = await store.create_conversation(user=user)
    before = await snapshot(store, raw, user, conversation.id)
    with pytest.raises(InvalidArgument, match=mentions):
        await store.append_messages(user=user, conversation_id=conversation.id, messages=messages)
    assert await snapshot(store, raw, user, conversation.id) == before


async def test_a_thousand_messages_are_fine(store: ConversationStore, user: str) -> None:
    conversation = await store.create_conversation(user=user)
    messages = [{"role": "user", "content": f"m{n}"} for n in range(1000)]
    stored = await store.append_messages(
        user=user, conversation_id=conversation.id, messages=messages
    )
    assert [m.seq for m in stored] == list(range(1, 1001))
    assert [m.content for m in stored] == [f"m{n}" for n in range(1000)]


async def test_an_oversize_batch_is_refused(settings: Settings, raw: RawDB, user: str) -> None:
    tight = settings.model_copy(update={"max_batch_bytes": 1000})
    async with ConversationStore(tight) as store:
        conversation = await store.create_conversation(user=user)
        before = await snapshot(store, raw, user, conversation.id)
        messages = [{"role": "user", "content": "x" * 300} for _ in range(4)]
        with pytest.raises(InvalidArgument, match=r"larger than 1000 bytes by messages\[3\]"):
            await store.append_messages(
                user=user, conversation_id=conversation.id, messages=messages
            )
        assert await snapshot(store, raw, user, conversation.id) == before
        stored = await store.append_messages(
            user=user, conversation_id=conversation.id, messages=messages[:3]
        )
        assert len(stored) == 3


@pytest.mark.pgbouncer
async def test_replays_and_partial_replays(store: ConversationStore, raw: RawDB, user: str) -> None:
    conversation = await store.create_conversation(user=user)
    cid = conversation.id
    keyed = [{**m, "idempotency_key": f"t1-{i}"} for i, m in enumerate(turn(1))]
    first = await store.append_messages(user=user, conversation_id=cid, messages=keyed)
    again = await store.append_messages(user=user, conversation_id=cid, messages=keyed)
    assert again == first
    assert await raw.seqs_in(cid) == [1, 2, 3, 4]

    # Two stored keys, a new keyed message and a keyless one: the new ones are stored in order.
    mixed = [
        keyed[3],
        {"role": "user", "content": "next", "idempotency_key": "t2-0"},
        keyed[0],
        {"role": "assistant", "content": "reply"},
    ]
    result = await store.append_messages(user=user, conversation_id=cid, messages=mixed)
    assert [m.id for m in result] == [first[3].id, result[1].id, first[0].id, result[3].id]
    assert [m.seq for m in result] == [4, 5, 1, 6]
    assert await raw.seqs_in(cid) == [1, 2, 3, 4, 5, 6]

    # A key reused for a different message: the whole batch is a conflict, nothing stored.
    before = await snapshot(store, raw, user, cid)
    with pytest.raises(Conflict):
        await store.append_messages(
            user=user,
            conversation_id=cid,
            messages=[
                {"role": "user", "content": "fresh", "idempotency_key": "t3-0"},
                {**keyed[0], "content": "changed"},
            ],
        )
    assert await snapshot(store, raw, user, cid) == before


async def test_another_users_conversation_and_empty_batches(
    store: ConversationStore, raw: RawDB, user: str, other_user: str
) -> None:
    conversation = await store.create_conversation(user=user)
    before = await snapshot(store, raw, user, conversation.id)
    with pytest.raises(NotFound) as theirs:
        await store.append_messages(
            user=other_user, conversation_id=conversation.id, messages=turn(1)
        )
    with pytest.raises(NotFound) as unknown:
        await store.append_messages(user=user, conversation_id=uuid.uuid4(), messages=turn(1))
    assert str(theirs.value) == str(unknown.value)
    with pytest.raises(NotFound):
        await store.append_messages(user=other_user, conversation_id=conversation.id, messages=[])
    assert (
        await store.append_messages(user=user, conversation_id=conversation.id, messages=[]) == []
    )
    assert await snapshot(store, raw, user, conversation.id) == before


@pytest.mark.pgbouncer
async def test_concurrent_batches_and_single_appends_stay_gapless(
    store: ConversationStore, raw: RawDB, user: str
) -> None:
    """8 batch appenders and 2 single appenders into one conversation: every batch lands in
    one block of consecutive seqs, and the seqs are 1..N exactly."""
    conversation = await store.create_conversation(user=user)
    cid = conversation.id

    async def batches(worker: int) -> list[list[int]]:
        blocks = []
        for round_ in range(5):
            size = 1 + (worker + round_) % 7
            messages = [
                {"role": "user", "content": f"w{worker} r{round_} {i}"} for i in range(size)
            ]
            stored = await store.append_messages(user=user, conversation_id=cid, messages=messages)
            blocks.append([m.seq for m in stored])
        return blocks

    async def singles(worker: int) -> None:
        for i in range(15):
            await store.append_message(
                user=user, conversation_id=cid, role="assistant", content=f"s{worker} {i}"
            )

    results = await asyncio.gather(*(batches(w) for w in range(8)), singles(0), singles(1))
    for blocks in results[:8]:
        assert blocks is not None
        for block in blocks:
            assert block == list(range(block[0], block[0] + len(block)))
    total = sum(1 + (w + r) % 7 for w in range(8) for r in range(5)) + 30
    assert await raw.seqs_in(cid) == list(range(1, total + 1))
    after = await store.get_conversation(user=user, conversation_id=cid)
    assert after.message_count == after.last_seq == total
    assert await raw.violations([user]) == []


@pytest.mark.pgbouncer
async def test_a_cancelled_batch_stores_all_or_nothing(
    store: ConversationStore, raw: RawDB, user: str
) -> None:
    conversation = await store.create_conversation(user=user)
    cid = conversation.id
    rng = random.Random(7)
    outcomes = {"stored": 0, "cancelled": 0}
    for attempt in range(12):
        messages = [{"role": "user", "content": f"a{attempt} m{i}"} for i in range(40)]
        task = asyncio.ensure_future(
            store.append_messages(user=user, conversation_id=cid, messages=messages)
        )
        await asyncio.sleep(rng.random() * 0.01)
        task.cancel()
        try:
            await task
            outcomes["stored"] += 1
        except asyncio.CancelledError:
            outcomes["cancelled"] += 1
    await asyncio.sleep(0.5)  # a shielded transaction may still be finishing
    contents = [row[2] for row in await raw.message_rows(cid)]
    for attempt in range(12):
        mine = [c for c in contents if c.startswith(f"a{attempt} ")]
        assert len(mine) in (0, 40), (attempt, len(mine))
    seqs = await raw.seqs_in(cid)
    assert seqs == list(range(1, len(seqs) + 1))
    assert await raw.violations([user]) == []


async def test_a_message_without_metadata_is_stored_with_an_empty_object(
    store: ConversationStore, raw: RawDB, user: str
) -> None:
    conversation = await store.create_conversation(user=user)
    stored = await store.append_messages(
        user=user,
        conversation_id=conversation.id,
        messages=[{"role": "user", "content": "a"}, {"role": "user", "content": "b"}],
    )
    assert [m.metadata for m in stored] == [{}, {}]
    page = await store.list_messages(user=user, conversation_id=conversation.id)
    assert [m.metadata for m in page.messages] == [{}, {}]
    texts = await raw.fetch(
        "SELECT metadata FROM messages WHERE conversation_id = $1", conversation.id
    )
    assert {str(row[0]).replace(" ", "") for row in texts} == {"{}"}
