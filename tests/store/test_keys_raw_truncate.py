"""What the framework adapters stand on: conversation keys (a session id maps onto one
conversation, race-free), ``raw`` (a framework's own form of a message, verbatim) and
``truncate_messages`` (an undo or a clear that leaves seq gapless)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from store import Conflict, ConversationStore, InvalidArgument, NotFound, Settings
from store.contract import MAX_CONVERSATION_KEY_CHARS
from tests.rawdb import RawDB
from tests.store.helpers import BAD_TEXTS, compact_json_size, separate_stores, snapshot

ITEM: dict[str, Any] = {
    "type": "function_call",
    "call_id": "call_1",
    "name": "weather",
    "arguments": '{"city": "Lyon"}',
    "id": "fc_1",
    "status": "completed",
    "nested": {"floats": [1.5, 1e23, -0.0], "flag": True, "none": None, "ü": "ünïcode"},
}

# -- keys ----------------------------------------------------------------------------------


async def test_a_key_names_one_conversation_of_the_user(
    store: ConversationStore, user: str, other_user: str
) -> None:
    first = await store.create_conversation(user=user, key="session-1", title="First")
    assert first.key == "session-1"
    again = await store.create_conversation(
        user=user, key="session-1", title="Other", metadata={"x": 1}
    )
    assert again == first  # unchanged: neither title nor metadata overwritten
    theirs = await store.create_conversation(user=other_user, key="session-1")
    assert theirs.id != first.id
    page = await store.list_conversations(user=user)
    assert [c.id for c in page.conversations] == [first.id]
    got = await store.get_conversation(user=user, conversation_id=first.id)
    assert got.key == "session-1"
    keyless = [await store.create_conversation(user=user) for _ in range(2)]
    assert keyless[0].id != keyless[1].id and keyless[0].key is None


@pytest.mark.pgbouncer
async def test_concurrent_creates_with_one_key_make_one_conversation(
    settings: Settings, raw: RawDB, user: str
) -> None:
    async with separate_stores(settings, 4) as stores:
        made = await asyncio.gather(
            *(stores[n % 4].create_conversation(user=user, key="k") for n in range(24))
        )
    assert len({c.id for c in made}) == 1
    assert await raw.conversations_of(user) == 1


@pytest.mark.parametrize(
    "key",
    ["", "   ", "k" * (MAX_CONVERSATION_KEY_CHARS + 1), *BAD_TEXTS, 7],
    ids=["empty", "blank", "oversize", "nul", "surrogate-high", "surrogate-low", "not-text"],
)
async def test_a_bad_key_is_refused(
    store: ConversationStore, raw: RawDB, user: str, key: Any
) -> None:
    with pytest.raises(InvalidArgument, match="key"):
        await store.create_conversation(user=user, key=key)
    assert await raw.conversations_of(user) == 0


async def test_a_key_of_the_longest_length_is_kept(store: ConversationStore, user: str) -> None:
    key = "ü" * MAX_CONVERSATION_KEY_CHARS
    made = await store.create_conversation(user=user, key=key)
    assert made.key == key
    assert (await store.create_conversation(user=user, key=key)).id == made.id


async def test_a_fork_has_no_key(store: ConversationStore, user: str) -> None:
    parent = await store.create_conversation(user=user, key="parent")
    fork = await store.fork_conversation(user=user, conversation_id=parent.id, at_seq=0)
    assert fork.key is None


# -- raw -----------------------------------------------------------------------------------


async def test_raw_is_kept_verbatim_everywhere_it_is_read(
    store: ConversationStore, user: str
) -> None:
    conversation = await store.create_conversation(user=user)
    cid = conversation.id
    one = await store.append_message(
        user=user, conversation_id=cid, role="user", content="weather in Lyon?", raw=ITEM
    )
    assert one.raw == ITEM
    batch = await store.append_messages(
        user=user,
        conversation_id=cid,
        messages=[
            {"role": "assistant", "content": "sunny in Lyon", "raw": {"n": 2}},
            {"role": "user", "content": "thanks"},
        ],
    )
    assert [m.raw for m in batch] == [{"n": 2}, None]
    page = await store.list_messages(user=user, conversation_id=cid)
    assert [m.raw for m in page.messages] == [ITEM, {"n": 2}, None]
    assert page.messages[0].model_dump(mode="json")["raw"] == ITEM
    context = await store.get_context(user=user, conversation_id=cid, max_tokens=1000)
    assert [m.raw for m in context.messages] == [ITEM, {"n": 2}, None]
    hits = await store.search_messages(user=user, query="lyon")
    assert sorted(str(h.message.raw) for h in hits.results) == sorted([str(ITEM), str({"n": 2})])
    fork = await store.fork_conversation(user=user, conversation_id=cid, at_seq=2)
    copies = await store.list_messages(user=user, conversation_id=fork.id)
    assert [m.raw for m in copies.messages] == [ITEM, {"n": 2}]


@pytest.mark.parametrize(
    "raw_value",
    [
        ["a", "list"],
        "text",
        {"text": "nul\x00inside"},
        {"nul\x00key": 1},
        {"lone": "\ud800"},
        {"big": "x" * (256 * 1024)},
        {"nan": float("nan")},
    ],
    ids=["list", "string", "nul-value", "nul-key", "surrogate", "oversize", "nan"],
)
async def test_bad_raw_is_refused_and_nothing_is_written(
    store: ConversationStore, raw: RawDB, user: str, raw_value: Any
) -> None:
    conversation = await store.create_conversation(user=user)
    before = await snapshot(store, raw, user, conversation.id)
    with pytest.raises(InvalidArgument, match="raw"):
        await store.append_message(
            user=user, conversation_id=conversation.id, role="user", content="hi", raw=raw_value
        )
    with pytest.raises(InvalidArgument, match=r"messages\[1\]: raw"):
        await store.append_messages(
            user=user,
            conversation_id=conversation.id,
            messages=[
                {"role": "user", "content": "ok"},
                {"role": "user", "content": "hi", "raw": raw_value},
            ],
        )
    assert await snapshot(store, raw, user, conversation.id) == before


async def test_the_raw_limit_is_configurable(settings: Settings, user: str) -> None:
    value = {"text": "x" * 100}
    size = compact_json_size(value)
    async with ConversationStore(settings.model_copy(update={"max_raw_bytes": size})) as store:
        conversation = await store.create_conversation(user=user)
        kept = await store.append_message(
            user=user, conversation_id=conversation.id, role="user", content="a", raw=value
        )
        assert kept.raw == value
        with pytest.raises(InvalidArgument, match=f"the limit is {size} bytes"):
            await store.append_message(
                user=user,
                conversation_id=conversation.id,
                role="user",
                content="a",
                raw={"text": "x" * 101},
            )


# -- truncate_messages ---------------------------------------------------------------------


async def _chat(store: ConversationStore, user: str, count: int) -> Any:
    conversation = await store.create_conversation(user=user, key="chat")
    await store.append_messages(
        user=user,
        conversation_id=conversation.id,
        messages=[
            {"role": "user", "content": f"weather report {n}", "idempotency_key": f"k{n}"}
            for n in range(1, count + 1)
        ],
    )
    return conversation


async def test_truncate_deletes_the_tail_and_seq_stays_gapless(
    store: ConversationStore, raw: RawDB, user: str
) -> None:
    conversation = await _chat(store, user, 6)
    cid = conversation.id
    after = await store.truncate_messages(user=user, conversation_id=cid, after_seq=4)
    assert (after.last_seq, after.message_count) == (4, 4)
    assert (
        after.updated_at
        == (await store.get_conversation(user=user, conversation_id=cid)).updated_at
    )
    assert await raw.seqs_in(cid) == [1, 2, 3, 4]
    appended = await store.append_message(
        user=user, conversation_id=cid, role="user", content="new", idempotency_key="k6"
    )
    # The seq and the idempotency key of a deleted message are free again.
    assert (appended.seq, appended.content) == (5, "new")
    assert await raw.violations([user]) == []
    hits = await store.search_messages(user=user, query="report", conversation_id=cid)
    assert sorted(h.message.seq for h in hits.results) == [1, 2, 3, 4]
    tokens = await raw.fetchval("SELECT token_total FROM conversations WHERE id = $1", cid)
    stored = await raw.fetchval(
        "SELECT sum(token_count) FROM messages WHERE conversation_id = $1", cid
    )
    assert tokens == stored
    cleared = await store.truncate_messages(user=user, conversation_id=cid, after_seq=0)
    assert (cleared.last_seq, cleared.message_count, cleared.key) == (0, 0, "chat")
    assert await raw.messages_in(cid) == 0
    again = await store.truncate_messages(user=user, conversation_id=cid, after_seq=0)
    assert again.last_seq == 0


async def test_truncate_removes_a_summary_that_covers_a_deleted_message(
    store: ConversationStore, user: str
) -> None:
    conversation = await _chat(store, user, 6)
    cid = conversation.id
    await store.update_conversation(
        user=user, conversation_id=cid, summary="reports 1-4", summary_up_to_seq=4
    )
    kept = await store.truncate_messages(user=user, conversation_id=cid, after_seq=5)
    assert (kept.summary, kept.summary_up_to_seq) == ("reports 1-4", 4)
    gone = await store.truncate_messages(user=user, conversation_id=cid, after_seq=3)
    assert (gone.summary, gone.summary_up_to_seq) == (None, None)
    context = await store.get_context(user=user, conversation_id=cid, max_tokens=1000)
    assert context.summary is None and [m.seq for m in context.messages] == [1, 2, 3]


async def test_truncate_refuses_what_it_cannot_do(
    store: ConversationStore, raw: RawDB, user: str, other_user: str
) -> None:
    conversation = await _chat(store, user, 3)
    cid = conversation.id
    before = await snapshot(store, raw, user, cid)
    with pytest.raises(InvalidArgument, match=r"after_seq must lie in 0 … last_seq \(3\)"):
        await store.truncate_messages(user=user, conversation_id=cid, after_seq=4)
    bad_seqs: list[Any] = [-1, True, "1", 2**63]
    for bad in bad_seqs:
        with pytest.raises(InvalidArgument, match="after_seq"):
            await store.truncate_messages(user=user, conversation_id=cid, after_seq=bad)
    with pytest.raises(NotFound):
        await store.truncate_messages(user=other_user, conversation_id=cid, after_seq=0)
    with pytest.raises(Conflict, match="last_seq is 3, not 2"):
        await store.truncate_messages(user=user, conversation_id=cid, after_seq=1, if_last_seq=2)
    assert await snapshot(store, raw, user, cid) == before
    done = await store.truncate_messages(user=user, conversation_id=cid, after_seq=2, if_last_seq=3)
    assert done.last_seq == 2


@pytest.mark.pgbouncer
async def test_truncate_beside_concurrent_appends_keeps_every_invariant(
    settings: Settings, raw: RawDB, user: str
) -> None:
    async with separate_stores(settings, 2) as (writer, undoer):
        conversation = await writer.create_conversation(user=user)
        cid = conversation.id

        async def write() -> None:
            for n in range(40):
                await writer.append_message(
                    user=user, conversation_id=cid, role="user", content=f"m{n}"
                )

        async def undo() -> int:
            undone = 0
            for _ in range(40):
                last = (await undoer.get_conversation(user=user, conversation_id=cid)).last_seq
                if last == 0:
                    continue
                try:
                    await undoer.truncate_messages(
                        user=user, conversation_id=cid, after_seq=last - 1, if_last_seq=last
                    )
                    undone += 1
                except Conflict:
                    pass  # an append came first: nothing was deleted
            return undone

        _, undone = await asyncio.gather(write(), undo())
    assert await raw.violations([user]) == []
    assert await raw.messages_in(cid) == 40 - undone
