"""update_conversation: only the fields given change; summaries are checked against the
conversation in the same statement; updated_at and the messages are never touched."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest

from store import ConversationStore, InvalidArgument, NotFound
from tests.rawdb import RawDB
from tests.store.helpers import conversation_with, snapshot


async def test_only_the_fields_given_change(store: ConversationStore, user: str) -> None:
    conversation = await store.create_conversation(user=user, title="Trip", metadata={"lang": "fr"})
    await store.append_message(
        user=user, conversation_id=conversation.id, role="user", content="hi"
    )
    before = await store.get_conversation(user=user, conversation_id=conversation.id)

    renamed = await store.update_conversation(
        user=user, conversation_id=conversation.id, title="Lyon trip"
    )
    assert (renamed.title, renamed.metadata) == ("Lyon trip", {"lang": "fr"})
    replaced = await store.update_conversation(
        user=user, conversation_id=conversation.id, metadata={"tags": ["rail"]}
    )
    assert (replaced.title, replaced.metadata) == ("Lyon trip", {"tags": ["rail"]})
    cleared = await store.update_conversation(
        user=user, conversation_id=conversation.id, title=None, metadata=None
    )
    assert (cleared.title, cleared.metadata) == (None, {})
    unchanged = await store.update_conversation(user=user, conversation_id=conversation.id)
    assert unchanged == cleared
    for after in (renamed, replaced, cleared, unchanged):
        assert after.updated_at == before.updated_at
        assert (after.message_count, after.last_seq) == (1, 1)


@pytest.mark.pgbouncer
async def test_set_and_remove_a_summary(store: ConversationStore, raw: RawDB, user: str) -> None:
    conversation = await conversation_with(store, user, 4)
    start = await store.get_conversation(user=user, conversation_id=conversation.id)
    messages_before = await raw.message_rows(conversation.id)
    summed = await store.update_conversation(
        user=user, conversation_id=conversation.id, summary="m1 to m3", summary_up_to_seq=3
    )
    assert (summed.summary, summed.summary_up_to_seq) == ("m1 to m3", 3)
    fetched = await store.get_conversation(user=user, conversation_id=conversation.id)
    assert (fetched.summary, fetched.summary_up_to_seq) == ("m1 to m3", 3)
    retitled = await store.update_conversation(
        user=user, conversation_id=conversation.id, title="kept summary"
    )
    assert (retitled.summary, retitled.summary_up_to_seq) == ("m1 to m3", 3)
    removed = await store.update_conversation(
        user=user, conversation_id=conversation.id, summary=None
    )
    assert (removed.summary, removed.summary_up_to_seq) == (None, None)
    assert await raw.message_rows(conversation.id) == messages_before
    for after in (summed, fetched, retitled, removed):
        assert after.updated_at == start.updated_at


@pytest.mark.parametrize(
    ("changes", "mentions"),
    [
        ({"summary": "s"}, "summary_up_to_seq"),
        ({"summary_up_to_seq": 2}, "give summary"),
        ({"summary": None, "summary_up_to_seq": 2}, "give summary"),
        ({"summary": "s", "summary_up_to_seq": 5}, "0 … last_seq"),
        ({"summary": "s", "summary_up_to_seq": -1}, "summary_up_to_seq"),
        ({"summary": "s", "summary_up_to_seq": 1.0}, "summary_up_to_seq"),
        ({"summary": "s", "summary_up_to_seq": True}, "summary_up_to_seq"),
        ({"summary": "   ", "summary_up_to_seq": 1}, "summary must not be empty"),
        ({"summary": "x" * 100_001, "summary_up_to_seq": 1}, "the limit is 100000"),
        ({"summary": "nul\x00", "summary_up_to_seq": 1}, "NUL"),
        ({"summary": "\ud800", "summary_up_to_seq": 1}, "surrogate"),
        ({"title": "x" * 201}, "title"),
        ({"metadata": [1, 2]}, "metadata"),
        ({"metadata": {"k": "\x00"}}, "NUL"),
    ],
)
async def test_bad_changes_are_refused_and_write_nothing(
    store: ConversationStore, raw: RawDB, user: str, changes: dict[str, Any], mentions: str
) -> None:
    conversation = await conversation_with(store, user, 3)
    before = await snapshot(store, raw, user, conversation.id)
    with pytest.raises(InvalidArgument, match=mentions):
        await store.update_conversation(user=user, conversation_id=conversation.id, **changes)
    assert await snapshot(store, raw, user, conversation.id) == before


async def test_a_summary_may_not_end_before_a_tool_result(
    store: ConversationStore, raw: RawDB, user: str
) -> None:
    conversation = await store.create_conversation(user=user)
    cid = conversation.id
    await store.append_message(user=user, conversation_id=cid, role="user", content="weather?")
    await store.append_message(
        user=user,
        conversation_id=cid,
        role="assistant",
        tool_calls=[{"id": "w", "name": "weather"}],
    )
    await store.append_message(
        user=user, conversation_id=cid, role="tool", tool_call_id="w", content="4°C"
    )
    before = await snapshot(store, raw, user, cid)
    with pytest.raises(InvalidArgument, match="tool message"):
        await store.update_conversation(
            user=user, conversation_id=cid, summary="asked", summary_up_to_seq=2
        )
    assert await snapshot(store, raw, user, cid) == before
    for allowed in (0, 1, 3):
        updated = await store.update_conversation(
            user=user, conversation_id=cid, summary="ok", summary_up_to_seq=allowed
        )
        assert updated.summary_up_to_seq == allowed


async def test_another_users_conversation_is_not_found(
    store: ConversationStore, raw: RawDB, user: str, other_user: str
) -> None:
    conversation = await conversation_with(store, user, 2)
    before = await snapshot(store, raw, user, conversation.id)
    for changes in ({"title": "mine now"}, {"summary": "s", "summary_up_to_seq": 1}, {}):
        with pytest.raises(NotFound):
            await store.update_conversation(
                user=other_user, conversation_id=conversation.id, **changes
            )
    assert await snapshot(store, raw, user, conversation.id) == before


async def test_a_summary_may_not_end_on_calls_without_results(
    store: ConversationStore, raw: RawDB, user: str
) -> None:
    conversation = await store.create_conversation(user=user)
    cid = conversation.id
    await store.append_message(user=user, conversation_id=cid, role="user", content="weather?")
    await store.append_message(
        user=user, conversation_id=cid, role="assistant", tool_calls=[{"id": "w", "name": "f"}]
    )
    before = await snapshot(store, raw, user, cid)
    with pytest.raises(InvalidArgument, match="results are not stored yet"):
        await store.update_conversation(
            user=user, conversation_id=cid, summary="asked", summary_up_to_seq=2
        )
    assert await snapshot(store, raw, user, cid) == before


@pytest.mark.pgbouncer
async def test_the_summary_check_waits_for_an_append_in_flight(
    store: ConversationStore, raw: RawDB, user: str
) -> None:
    """A tool result being appended while the summary is set: the check runs under the
    conversation's lock, so it sees the result and refuses."""
    conversation = await store.create_conversation(user=user)
    cid = conversation.id
    await store.append_message(user=user, conversation_id=cid, role="user", content="weather?")
    await store.append_message(
        user=user,
        conversation_id=cid,
        role="assistant",
        content="Let me see.",
        tool_calls=[{"id": "w", "name": "f"}],
    )
    await store.append_message(user=user, conversation_id=cid, role="assistant", content="Hm.")
    # An append of the tool result at seq 4, begun and not yet committed, as the store does it.
    await raw.execute("BEGIN IMMEDIATE" if raw.dialect == "sqlite" else "BEGIN")
    await raw.execute("UPDATE conversations SET last_seq = 4, message_count = 4 WHERE id = $1", cid)
    await raw.execute(
        "INSERT INTO messages (id, conversation_id, user_id, seq, role, content, tool_call_id, "
        "metadata, created_at, token_count) "
        "VALUES ($1, $2, $3, 4, 'tool', '4°C', 'w', '{}', $4, 3)",
        uuid.uuid4(),
        cid,
        user,
        raw.ts(conversation.created_at),
    )
    update = asyncio.ensure_future(
        store.update_conversation(user=user, conversation_id=cid, summary="s", summary_up_to_seq=3)
    )
    await asyncio.sleep(0.5)
    assert not update.done(), "the update waited for the append"
    await raw.execute("COMMIT")
    with pytest.raises(InvalidArgument, match="tool message"):
        await update
    current = await store.get_conversation(user=user, conversation_id=cid)
    assert (current.summary, current.last_seq) == (None, 4)
