"""list_messages: ascending seq, latest/before/after windows, and ``has_more`` at every edge.

``has_more`` looks in the direction being paged: older messages for no cursor and
``before_seq``, newer ones for ``after_seq``.
"""

from __future__ import annotations

import uuid

import pytest

from store.errors import NotFound
from store.schemas import MessagePage
from store.store import ConversationStore
from tests.store.helpers import conversation_with

TOTAL = 10


async def _page(
    store: ConversationStore,
    user: str,
    conversation_id: uuid.UUID,
    limit: int,
    before_seq: int | None = None,
    after_seq: int | None = None,
) -> tuple[list[int], bool]:
    page = await store.list_messages(
        user=user,
        conversation_id=conversation_id,
        limit=limit,
        before_seq=before_seq,
        after_seq=after_seq,
    )
    seqs = [m.seq for m in page.messages]
    # Content m<seq> ties every returned row to the position it was appended at.
    assert [m.content for m in page.messages] == [f"m{s}" for s in seqs]
    assert all(m.conversation_id == conversation_id for m in page.messages)
    return seqs, page.has_more


# (limit, before_seq, after_seq) → (seqs, has_more), for a conversation of TOTAL messages.
CASES: list[tuple[int, int | None, int | None, list[int], bool]] = [
    # The latest `limit`; has_more: older ones exist.
    (3, None, None, [8, 9, 10], True),
    (9, None, None, list(range(2, 11)), True),
    (10, None, None, list(range(1, 11)), False),  # limit == count
    (11, None, None, list(range(1, 11)), False),
    (200, None, None, list(range(1, 11)), False),
    (1, None, None, [10], True),
    # Just before N; has_more: older than the page exist.
    (3, 8, None, [5, 6, 7], True),
    (3, 5, None, [2, 3, 4], True),
    (3, 4, None, [1, 2, 3], False),  # reaches seq 1 exactly
    (3, 3, None, [1, 2], False),
    (3, 2, None, [1], False),
    (3, 1, None, [], False),  # nothing is older than the first
    (1, 2, None, [1], False),
    (1, 3, None, [2], True),
    (3, 11, None, [8, 9, 10], True),  # last_seq + 1 == the latest page
    (3, 10, None, [7, 8, 9], True),
    (10, 11, None, list(range(1, 11)), False),
    (3, 1_000_000, None, [8, 9, 10], True),
    # Just after N; has_more: newer than the page exist.
    (3, None, 0, [1, 2, 3], True),
    (10, None, 0, list(range(1, 11)), False),  # limit == count from the start
    (9, None, 0, list(range(1, 10)), True),
    (3, None, 6, [7, 8, 9], True),
    (3, None, 7, [8, 9, 10], False),  # reaches last_seq exactly
    (3, None, 8, [9, 10], False),
    (3, None, 9, [10], False),
    (3, None, 10, [], False),  # after_seq == last_seq
    (3, None, 11, [], False),
    (1, None, 9, [10], False),
    (1, None, 8, [9], True),
]


@pytest.mark.parametrize(("limit", "before_seq", "after_seq", "seqs", "has_more"), CASES)
async def test_windows_and_has_more(
    store: ConversationStore,
    user: str,
    limit: int,
    before_seq: int | None,
    after_seq: int | None,
    seqs: list[int],
    has_more: bool,
) -> None:
    conversation = await conversation_with(store, user, TOTAL)
    assert await _page(store, user, conversation.id, limit, before_seq, after_seq) == (
        seqs,
        has_more,
    )


@pytest.mark.pgbouncer
@pytest.mark.parametrize("limit", [1, 3, 4, 10, 11])
async def test_paging_backwards_visits_every_message_once(
    store: ConversationStore, user: str, limit: int
) -> None:
    conversation = await conversation_with(store, user, TOTAL)
    seen: list[int] = []
    seqs, has_more = await _page(store, user, conversation.id, limit)
    seen = seqs + seen
    while has_more:
        seqs, has_more = await _page(store, user, conversation.id, limit, before_seq=seqs[0])
        assert seqs, "has_more promised older messages"
        seen = seqs + seen
    assert seen == list(range(1, TOTAL + 1))


@pytest.mark.parametrize("limit", [1, 3, 4, 10, 11])
async def test_paging_forwards_visits_every_message_once(
    store: ConversationStore, user: str, limit: int
) -> None:
    conversation = await conversation_with(store, user, TOTAL)
    seen: list[int] = []
    seqs, has_more = await _page(store, user, conversation.id, limit, after_seq=0)
    seen += seqs
    while has_more:
        seqs, has_more = await _page(store, user, conversation.id, limit, after_seq=seqs[-1])
        assert seqs, "has_more promised newer messages"
        seen += seqs
    assert seen == list(range(1, TOTAL + 1))


@pytest.mark.pgbouncer
async def test_paging_forwards_picks_up_new_messages(store: ConversationStore, user: str) -> None:
    conversation = await conversation_with(store, user, 3)
    assert await _page(store, user, conversation.id, 5, after_seq=3) == ([], False)
    await store.append_message(
        user=user, conversation_id=conversation.id, role="user", content="m4"
    )
    assert await _page(store, user, conversation.id, 5, after_seq=3) == ([4], False)
    assert await _page(store, user, conversation.id, 2) == ([3, 4], True)


async def test_empty_conversation(store: ConversationStore, user: str) -> None:
    conversation = await store.create_conversation(user=user)
    for before_seq, after_seq in [(None, None), (1, None), (5, None), (None, 0), (None, 3)]:
        page = await store.list_messages(
            user=user, conversation_id=conversation.id, before_seq=before_seq, after_seq=after_seq
        )
        assert page == MessagePage(messages=[], has_more=False)


async def test_default_limit_is_50(store: ConversationStore, user: str) -> None:
    conversation = await conversation_with(store, user, 52)
    page = await store.list_messages(user=user, conversation_id=conversation.id)
    assert [m.seq for m in page.messages] == list(range(3, 53))
    assert page.has_more is True
    recent = await store.get_conversation(
        user=user, conversation_id=conversation.id, recent_messages=50
    )
    assert recent.messages == page.messages


@pytest.mark.parametrize(
    ("before_seq", "after_seq"), [(None, None), (1, None), (100, None), (None, 0), (None, 5)]
)
async def test_unknown_conversation_is_not_found_for_every_window(
    store: ConversationStore, user: str, before_seq: int | None, after_seq: int | None
) -> None:
    await conversation_with(store, user, 2)
    with pytest.raises(NotFound):
        await store.list_messages(
            user=user, conversation_id=uuid.uuid4(), before_seq=before_seq, after_seq=after_seq
        )


async def test_conversations_do_not_mix(store: ConversationStore, user: str) -> None:
    first = await conversation_with(store, user, 4)
    second = await conversation_with(store, user, 2)
    await store.append_message(user=user, conversation_id=first.id, role="user", content="m5")
    assert await _page(store, user, first.id, 10) == ([1, 2, 3, 4, 5], False)
    assert await _page(store, user, second.id, 10) == ([1, 2], False)
    assert await _page(store, user, second.id, 10, after_seq=2) == ([], False)
