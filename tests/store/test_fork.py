"""fork_conversation: a new conversation holding exact copies of a prefix of another, made in
one transaction; the two are independent from then on."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest

from store import ConversationStore, InvalidArgument, NotFound, Settings
from store.schemas import Conversation, ForkedFrom, Message
from tests.rawdb import RawDB
from tests.store.helpers import separate_stores, snapshot

CHAT: list[dict[str, Any]] = [
    {"role": "system", "content": "Be brief.", "metadata": {"source": "app"}},
    {"role": "user", "content": "Book a table for two."},
    {
        "role": "assistant",
        "content": "",
        "tool_calls": [{"id": "c1", "name": "book", "arguments": '{"people": 2}'}],
    },
    {"role": "tool", "tool_call_id": "c1", "content": "Table 12 at 20:00."},
    {"role": "assistant", "content": "Booked table 12 at 20:00.", "token_count": 99},
    {"role": "user", "content": "Make it three people.", "idempotency_key": "k6"},
]


async def chat(store: ConversationStore, user: str) -> Conversation:
    conversation = await store.create_conversation(
        user=user, title="Dinner", metadata={"team": "ops"}
    )
    await store.append_messages(user=user, conversation_id=conversation.id, messages=CHAT)
    return await store.get_conversation(user=user, conversation_id=conversation.id)


async def messages(
    store: ConversationStore, user: str, conversation_id: uuid.UUID
) -> list[Message]:
    page = await store.list_messages(user=user, conversation_id=conversation_id, limit=200)
    return page.messages


def copied(message: Message) -> dict[str, Any]:
    """What a fork copies: everything but the ids."""
    return message.model_dump(exclude={"id", "conversation_id"})


@pytest.mark.pgbouncer
async def test_a_fork_holds_exact_copies_of_the_prefix(
    store: ConversationStore, raw: RawDB, user: str
) -> None:
    parent = await chat(store, user)
    before = await snapshot(store, raw, user, parent.id)
    fork = await store.fork_conversation(user=user, conversation_id=parent.id, at_seq=4)
    assert fork.id != parent.id
    assert fork.forked_from == ForkedFrom(conversation_id=parent.id, seq=4)
    assert (fork.title, fork.metadata, fork.message_count, fork.last_seq) == (
        "Dinner",
        {"team": "ops"},
        4,
        4,
    )
    assert fork.created_at == fork.updated_at >= parent.updated_at
    originals, copies = await messages(store, user, parent.id), await messages(store, user, fork.id)
    assert [copied(m) for m in copies] == [copied(m) for m in originals[:4]]
    assert {m.conversation_id for m in copies} == {fork.id}
    assert not {m.id for m in copies} & {m.id for m in originals}
    assert await raw.seqs_in(fork.id) == [1, 2, 3, 4]
    assert await snapshot(store, raw, user, parent.id) == (
        before[0],
        before[1],
        before[2] + 4,
        before[3] + 1,
        before[4],
    )
    assert await raw.violations([user]) == []
    listed = await store.list_conversations(user=user)
    assert [c.id for c in listed.conversations] == [fork.id, parent.id]


async def test_a_fork_at_zero_is_empty_and_at_last_seq_is_whole(
    store: ConversationStore, user: str
) -> None:
    parent = await chat(store, user)
    empty = await store.fork_conversation(
        user=user, conversation_id=parent.id, at_seq=0, title="Fresh"
    )
    assert (empty.title, empty.message_count, empty.last_seq) == ("Fresh", 0, 0)
    assert await messages(store, user, empty.id) == []
    whole = await store.fork_conversation(user=user, conversation_id=str(parent.id), at_seq=6)
    assert whole.last_seq == 6 and whole.forked_from == ForkedFrom(conversation_id=parent.id, seq=6)
    originals = await messages(store, user, parent.id)
    assert [copied(m) for m in await messages(store, user, whole.id)] == [
        copied(m) for m in originals
    ]
    context = await store.get_context(user=user, conversation_id=whole.id, max_tokens=100_000)
    parents = await store.get_context(user=user, conversation_id=parent.id, max_tokens=100_000)
    assert context.token_count == parents.token_count


async def test_fork_and_parent_grow_independently(store: ConversationStore, user: str) -> None:
    parent = await chat(store, user)
    # Edit message 6 and regenerate: fork at 5, append the edited message.
    fork = await store.fork_conversation(user=user, conversation_id=parent.id, at_seq=5)
    edited = await store.append_message(
        user=user,
        conversation_id=fork.id,
        role="user",
        content="Make it four people.",
        idempotency_key="k6",  # not copied: here it is a new key
    )
    assert edited.seq == 6 and edited.content == "Make it four people."
    more = await store.append_message(
        user=user, conversation_id=parent.id, role="assistant", content="Done: three."
    )
    assert more.seq == 7
    assert [m.content for m in await messages(store, user, fork.id)][-1] == "Make it four people."
    assert [m.content for m in await messages(store, user, parent.id)][-2:] == [
        "Make it three people.",
        "Done: three.",
    ]
    again = await store.fork_conversation(user=user, conversation_id=fork.id, at_seq=6)
    assert again.forked_from == ForkedFrom(conversation_id=fork.id, seq=6)


async def test_deleting_either_leaves_the_other(
    store: ConversationStore, raw: RawDB, user: str
) -> None:
    parent = await chat(store, user)
    first = await store.fork_conversation(user=user, conversation_id=parent.id, at_seq=3)
    second = await store.fork_conversation(user=user, conversation_id=parent.id, at_seq=6)
    await store.delete_conversation(user=user, conversation_id=first.id)
    assert (await store.get_conversation(user=user, conversation_id=parent.id)).message_count == 6
    await store.delete_conversation(user=user, conversation_id=parent.id)
    orphan = await store.get_conversation(user=user, conversation_id=second.id)
    assert orphan.forked_from is None and orphan.message_count == 6
    assert await raw.seqs_in(second.id) == [1, 2, 3, 4, 5, 6]
    assert await raw.orphans() == (0, 0)


async def test_a_summary_is_kept_only_when_it_covers_the_fork(
    store: ConversationStore, user: str
) -> None:
    parent = await chat(store, user)
    await store.update_conversation(
        user=user, conversation_id=parent.id, summary="A table was booked.", summary_up_to_seq=4
    )
    kept = await store.fork_conversation(user=user, conversation_id=parent.id, at_seq=4)
    dropped = await store.fork_conversation(user=user, conversation_id=parent.id, at_seq=3)
    assert (kept.summary, kept.summary_up_to_seq) == ("A table was booked.", 4)
    assert (dropped.summary, dropped.summary_up_to_seq) == (None, None)
    context = await store.get_context(user=user, conversation_id=kept.id, max_tokens=1000)
    assert context.summary == "A table was booked." and context.messages == []


@pytest.mark.parametrize(
    ("at_seq", "mentions"),
    [
        (7, r"0 … last_seq \(6\)"),
        (-1, "at_seq"),
        (2**63, "at_seq"),
        (1.0, "at_seq"),
        ("3", "at_seq"),
        (True, "at_seq"),
        (None, "at_seq"),
    ],
)
async def test_an_out_of_range_seq_is_refused_and_writes_nothing(
    store: ConversationStore, raw: RawDB, user: str, at_seq: Any, mentions: str
) -> None:
    parent = await chat(store, user)
    before = await snapshot(store, raw, user, parent.id)
    with pytest.raises(InvalidArgument, match=mentions):
        await store.fork_conversation(user=user, conversation_id=parent.id, at_seq=at_seq)
    assert await snapshot(store, raw, user, parent.id) == before


async def test_bad_titles_are_refused(store: ConversationStore, user: str) -> None:
    parent = await chat(store, user)
    for title in ["x" * 201, "nul\x00", "\ud800"]:
        with pytest.raises(InvalidArgument, match="title"):
            await store.fork_conversation(
                user=user, conversation_id=parent.id, at_seq=1, title=title
            )


async def test_another_users_conversation_is_not_found(
    store: ConversationStore, raw: RawDB, user: str, other_user: str
) -> None:
    theirs = await chat(store, other_user)
    await store.create_conversation(user=user)
    with pytest.raises(NotFound) as foreign:
        await store.fork_conversation(user=user, conversation_id=theirs.id, at_seq=1)
    with pytest.raises(NotFound) as missing:
        await store.fork_conversation(user=user, conversation_id=uuid.uuid4(), at_seq=1)
    # Not even the range check answers for someone else's conversation.
    with pytest.raises(NotFound) as beyond:
        await store.fork_conversation(user=user, conversation_id=theirs.id, at_seq=50)
    assert str(foreign.value) == str(missing.value) == str(beyond.value)
    assert await raw.conversations_of(user) == 1
    assert await raw.conversations_of(other_user) == 1


@pytest.mark.pgbouncer
async def test_forks_made_while_the_parent_grows_are_consistent_prefixes(
    settings: Settings, user: str
) -> None:
    async with separate_stores(settings, 2) as (writer, forker):
        parent = await chat(writer, user)

        async def grow() -> None:
            for n in range(30):
                await writer.append_message(
                    user=user, conversation_id=parent.id, role="user", content=f"more {n}"
                )

        async def fork_often() -> list[Conversation]:
            forks = []
            for _ in range(10):
                last = (
                    await forker.get_conversation(user=user, conversation_id=parent.id)
                ).last_seq
                forks.append(
                    await forker.fork_conversation(
                        user=user, conversation_id=parent.id, at_seq=last
                    )
                )
            return forks

        _, forks = await asyncio.gather(grow(), fork_often())
        originals = await messages(writer, user, parent.id)
        for fork in forks:
            copies = await messages(writer, user, fork.id)
            assert [m.seq for m in copies] == list(range(1, fork.last_seq + 1))
            assert [copied(m) for m in copies] == [copied(m) for m in originals[: fork.last_seq]]


async def test_a_retried_fork_is_made_once(
    store: ConversationStore, raw: RawDB, user: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The connection drops after the fork committed and before its reply: the store's retry
    finds the fork the first attempt made instead of making a second one."""
    parent = await chat(store, user)
    backend = store._backend
    original = backend.fork_conversation
    attempts = 0

    async def reply_lost(**arguments: Any) -> Conversation | None:
        nonlocal attempts
        attempts += 1
        made = await original(**arguments)
        if attempts == 1:
            raise ConnectionResetError("connection lost before the reply")
        return made

    monkeypatch.setattr(backend, "fork_conversation", reply_lost)
    fork = await store.fork_conversation(user=user, conversation_id=parent.id, at_seq=5)
    assert attempts == 2
    assert await raw.conversations_of(user) == 2
    assert await raw.seqs_in(fork.id) == [1, 2, 3, 4, 5]
