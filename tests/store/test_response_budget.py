"""CHATSTORE_MAX_RESPONSE_BYTES in the store: a page of messages stops early, where its JSON
would pass half the budget (an MCP reply carries a page twice), says ``has_more``, and paging
on from it reads every message exactly once; a page always holds one message; the page is
read in chunks, so that a page of large messages is not read whole only to be cut."""

from __future__ import annotations

import uuid

import pytest

from store import ConversationStore, Message, Settings
from store._budget import message_bytes, page_bytes
from store.backends import Window

BUDGET = 64 * 1024
CONTENT = 10_000


@pytest.fixture
def budgeted(settings: Settings) -> Settings:
    return settings.model_copy(update={"max_response_bytes": BUDGET})


async def conversation_of(store: ConversationStore, user: str, sizes: list[int]) -> uuid.UUID:
    conversation = await store.create_conversation(user=user)
    await store.append_messages(
        user=user,
        conversation_id=conversation.id,
        messages=[
            {"role": "user", "content": f"{n:04d}" + "x" * (size - 4), "token_count": 1}
            for n, size in enumerate(sizes)
        ],
    )
    return conversation.id


def fits(messages: list[Message]) -> bool:
    return sum(message_bytes(m) for m in messages) <= page_bytes(BUDGET)


async def test_a_page_stops_at_the_budget_and_paging_reads_everything_once(
    budgeted: Settings, user: str
) -> None:
    async with ConversationStore(budgeted) as store:
        cid = await conversation_of(store, user, [CONTENT] * 30)
        latest = await store.list_messages(user=user, conversation_id=cid, limit=200)
        assert 1 < len(latest.messages) < 30 and latest.has_more
        assert fits(latest.messages)
        assert [m.seq for m in latest.messages] == list(range(31 - len(latest.messages), 31))

        seen = [m.seq for m in latest.messages]
        page = latest
        while page.has_more:
            page = await store.list_messages(
                user=user, conversation_id=cid, limit=200, before_seq=page.messages[0].seq
            )
            assert fits(page.messages) and page.messages
            seen = [m.seq for m in page.messages] + seen
        assert seen == list(range(1, 31))

        forward, after = [], 0
        while True:
            page = await store.list_messages(
                user=user, conversation_id=cid, limit=200, after_seq=after
            )
            assert fits(page.messages)
            forward += [m.seq for m in page.messages]
            if not page.has_more:
                break
            after = page.messages[-1].seq
        assert forward == list(range(1, 31))

        # A page the budget does not cut is what it always was.
        small = await store.list_messages(user=user, conversation_id=cid, limit=3)
        assert [m.seq for m in small.messages] == [28, 29, 30] and small.has_more


async def test_get_conversation_says_has_more(budgeted: Settings, user: str) -> None:
    async with ConversationStore(budgeted) as store:
        cid = await conversation_of(store, user, [CONTENT] * 30)
        recent = await store.get_conversation(user=user, conversation_id=cid, recent_messages=200)
        assert 1 < len(recent.messages) < 30 and recent.has_more and fits(recent.messages)
        assert recent.messages[-1].seq == 30 and recent.message_count == 30
        bare = await store.get_conversation(user=user, conversation_id=cid)
        assert bare.messages == [] and bare.has_more
        few = await conversation_of(store, user, [10, 10])
        whole = await store.get_conversation(user=user, conversation_id=few, recent_messages=200)
        assert [m.seq for m in whole.messages] == [1, 2] and not whole.has_more


async def test_a_message_larger_than_the_budget_comes_alone(budgeted: Settings, user: str) -> None:
    async with ConversationStore(budgeted) as store:
        cid = await conversation_of(store, user, [CONTENT, 90_000, CONTENT])
        newest = await store.list_messages(user=user, conversation_id=cid, limit=50)
        assert [m.seq for m in newest.messages] == [3] and newest.has_more
        big = await store.list_messages(user=user, conversation_id=cid, limit=50, before_seq=3)
        assert [m.seq for m in big.messages] == [2] and big.has_more
        first = await store.list_messages(user=user, conversation_id=cid, limit=50, before_seq=2)
        assert [m.seq for m in first.messages] == [1] and not first.has_more


async def test_a_cut_page_is_read_in_chunks_not_whole(
    budgeted: Settings, user: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with ConversationStore(budgeted) as store:
        cid = await conversation_of(store, user, [CONTENT] * 100)
        backend = store._backend
        read = backend.message_page
        windows: list[Window] = []

        async def counted(**kwargs: object) -> list[Message]:
            window = kwargs["window"]
            assert isinstance(window, Window)
            windows.append(window)
            return await read(**kwargs)  # type: ignore[arg-type]

        monkeypatch.setattr(backend, "message_page", counted)
        page = await store.list_messages(user=user, conversation_id=cid, limit=200)
        # One chunk of the 200 (and 1) rows asked for, for a page that holds a few of them.
        assert 1 < len(page.messages) < 10 and page.has_more
        assert sum(w.count for w in windows) <= 51
