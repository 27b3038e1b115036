"""search_messages: full-text search over one user's own messages, on both backends.

Words (stemmed, case-insensitive) in content and in tool-call arguments; phrases, ``or`` and
``-word``; filters; a cursor bound to the user and the query, at most 1,000 results deep; and
nothing of another user's ever found, counted, ranked or reachable through a cursor.
"""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from store import ConversationStore, InvalidArgument, NotFound
from store.contract import MAX_SEARCH_DEPTH, MAX_SEARCH_QUERY_CHARS
from store.schemas import Conversation, SearchPage
from tests.store.helpers import BAD_TEXTS

TRIP: list[dict[str, Any]] = [
    {"role": "system", "content": "You are a travel assistant."},
    {"role": "user", "content": "Which trains go from Paris to Lyon on Friday?"},
    {
        "role": "assistant",
        "content": "",
        "tool_calls": [
            {"id": "c1", "name": "book_ticket", "arguments": '{"destination": "Marseille"}'}
        ],
    },
    {"role": "tool", "tool_call_id": "c1", "content": "Booked: seat 42, coach 7."},
    {"role": "assistant", "content": "I booked the Lyon train for Friday morning."},
    {"role": "user", "content": "And a train to Lyon on Sunday evening, please."},
]


async def trip(store: ConversationStore, user: str, title: str = "Trip") -> Conversation:
    conversation = await store.create_conversation(user=user, title=title)
    await store.append_messages(user=user, conversation_id=conversation.id, messages=TRIP)
    return await store.get_conversation(user=user, conversation_id=conversation.id)


async def seqs(store: ConversationStore, user: str, query: str, **filters: Any) -> list[int]:
    page = await store.search_messages(user=user, query=query, limit=100, **filters)
    return sorted(hit.message.seq for hit in page.results)


@pytest.mark.pgbouncer
async def test_words_are_found_in_content_and_tool_call_arguments(
    store: ConversationStore, user: str
) -> None:
    conversation = await trip(store, user)
    page = await store.search_messages(user=user, query="marseille")
    [hit] = page.results
    assert hit.message.seq == 3 and hit.message.tool_calls is not None
    assert hit.conversation_title == "Trip" and hit.rank > 0 and page.next_cursor is None
    assert hit.message.conversation_id == conversation.id
    [booked] = (await store.search_messages(user=user, query="COACH")).results
    assert booked.message.seq == 4
    assert "**coach**" in booked.snippet.lower()


async def test_words_are_stemmed_and_all_required(store: ConversationStore, user: str) -> None:
    await trip(store, user)
    assert await seqs(store, user, "train") == [2, 5, 6]  # "trains" found by "train"
    assert await seqs(store, user, "trains") == [2, 5, 6]
    # "booked" twice, and the tool call's name "book_ticket".
    assert await seqs(store, user, "booking") == [3, 4, 5]
    assert await seqs(store, user, "lyon friday") == [2, 5]
    assert await seqs(store, user, "lyon sunday") == [6]
    assert await seqs(store, user, "lyon tokyo") == []


async def test_phrases_or_and_exclusions(store: ConversationStore, user: str) -> None:
    await trip(store, user)
    assert await seqs(store, user, '"lyon train"') == [5]
    assert await seqs(store, user, '"train to lyon"') == [6]
    assert await seqs(store, user, "sunday or seat") == [4, 6]
    assert await seqs(store, user, "friday or sunday lyon") == [2, 5, 6]
    assert await seqs(store, user, "lyon -friday") == [6]
    assert await seqs(store, user, 'train -"lyon train"') == [2, 6]


async def test_snippets_mark_the_matched_words(store: ConversationStore, user: str) -> None:
    await trip(store, user)
    [hit] = (await store.search_messages(user=user, query="morning")).results
    assert "**morning**" in hit.snippet
    assert hit.snippet.replace("**", "") in TRIP[4]["content"]


async def test_results_come_by_relevance_then_newest_first(
    store: ConversationStore, user: str
) -> None:
    conversation = await store.create_conversation(user=user)
    texts = ["ferry ticket", "ferry", "ferry and ticket", "ticket", "ferry"]
    for text in texts:
        await store.append_message(
            user=user, conversation_id=conversation.id, role="user", content=text
        )
    page = await store.search_messages(user=user, query="ferry or ticket")
    order = [hit.message.seq for hit in page.results]
    assert set(order[:2]) == {1, 3} and order[2:] == [5, 4, 2]
    ranks = [hit.rank for hit in page.results]
    assert ranks == sorted(ranks, reverse=True) and ranks[0] > ranks[-1]


async def test_filters_by_conversation_and_role(store: ConversationStore, user: str) -> None:
    first, second = await trip(store, user, "One"), await trip(store, user, "Two")
    both = await store.search_messages(user=user, query="lyon")
    assert {hit.conversation_title for hit in both.results} == {"One", "Two"}
    one = await store.search_messages(user=user, query="lyon", conversation_id=first.id)
    assert sorted(hit.message.seq for hit in one.results) == [2, 5, 6]
    assert {hit.message.conversation_id for hit in one.results} == {first.id}
    assert await seqs(store, user, "lyon", conversation_id=str(second.id), role="user") == [2, 6]
    assert await seqs(store, user, "lyon", role="assistant") == [5, 5]
    assert await seqs(store, user, "lyon", role="tool") == []


async def test_a_conversation_filter_must_name_one_of_yours(
    store: ConversationStore, user: str, other_user: str
) -> None:
    theirs = await trip(store, other_user)
    mine = await store.create_conversation(user=user)
    with pytest.raises(NotFound) as missing:
        await store.search_messages(user=user, query="lyon", conversation_id=uuid.uuid4())
    with pytest.raises(NotFound) as foreign:
        await store.search_messages(user=user, query="lyon", conversation_id=theirs.id)
    assert str(missing.value) == str(foreign.value)
    empty = await store.search_messages(user=user, query="lyon", conversation_id=mine.id)
    assert empty.results == [] and empty.next_cursor is None
    with pytest.raises(InvalidArgument, match="conversation_id"):
        await store.search_messages(user=user, query="lyon", conversation_id="nope")


async def test_another_users_messages_are_never_found_or_ranked(
    store: ConversationStore, user: str, other_user: str
) -> None:
    await trip(store, user)
    before = await store.search_messages(user=user, query="lyon train or friday")
    await trip(store, other_user)
    noise = await store.create_conversation(user=other_user)
    await store.append_messages(
        user=other_user,
        conversation_id=noise.id,
        messages=[{"role": "user", "content": f"lyon train friday {n}"} for n in range(300)],
    )
    after = await store.search_messages(user=user, query="lyon train or friday")
    assert after == before  # same hits, same ranks, same snippets
    theirs = await store.search_messages(user=other_user, query="lyon", limit=100)
    assert len(theirs.results) == 100 and theirs.next_cursor is not None
    assert all(
        hit.message.conversation_id != before.results[0].message.conversation_id
        for hit in theirs.results
    )
    # Typed operators and column filters are words: they cannot reach past the user.
    for query in ["content:lyon", "lyon OR 1=1", "* OR lyon", "NEAR(lyon train)", "lyon*"]:
        page = await store.search_messages(user=user, query=query, limit=100)
        assert len(page.results) <= len(TRIP)


@pytest.mark.pgbouncer
async def test_cursors_page_without_gaps_and_are_bound_to_user_and_query(
    store: ConversationStore, user: str, other_user: str
) -> None:
    conversation = await store.create_conversation(user=user)
    await store.append_messages(
        user=user,
        conversation_id=conversation.id,
        messages=[{"role": "user", "content": "kayak " + "rental " * (n % 3)} for n in range(25)],
    )
    await trip(store, other_user)
    whole = await store.search_messages(user=user, query="kayak rental", limit=100)
    paged: list[uuid.UUID] = []
    cursor = None
    for _ in range(10):
        page = await store.search_messages(user=user, query="kayak rental", limit=7, cursor=cursor)
        paged += [hit.message.id for hit in page.results]
        cursor = page.next_cursor
        if cursor is None:
            break
    assert paged == [hit.message.id for hit in whole.results] and len(paged) == 16
    first = await store.search_messages(user=user, query="kayak rental", limit=3)
    assert first.next_cursor is not None
    refusals: list[dict[str, Any]] = [
        {"user": other_user, "query": "kayak rental"},
        {"user": user, "query": "kayak"},
        {"user": user, "query": "kayak rental", "role": "user"},
        {"user": user, "query": "kayak rental", "conversation_id": conversation.id},
    ]
    for call in refusals:
        with pytest.raises(InvalidArgument, match="search again without a cursor"):
            await store.search_messages(cursor=first.next_cursor, **call)
    for forged in ["", "x", first.next_cursor[:-2], first.next_cursor + "AA"]:
        with pytest.raises(InvalidArgument):
            await store.search_messages(user=user, query="kayak rental", cursor=forged)


async def test_paging_stops_at_one_thousand_results(store: ConversationStore, user: str) -> None:
    conversation = await store.create_conversation(user=user)
    for _ in range(2):
        await store.append_messages(
            user=user,
            conversation_id=conversation.id,
            messages=[{"role": "user", "content": f"canoe {n}"} for n in range(520)],
        )
    seen: set[uuid.UUID] = set()
    cursor, pages = None, 0
    while True:
        page = await store.search_messages(user=user, query="canoe", limit=100, cursor=cursor)
        seen |= {hit.message.id for hit in page.results}
        pages += 1
        if page.next_cursor is None:
            break
        cursor = page.next_cursor
    assert pages == 10 and len(seen) == MAX_SEARCH_DEPTH


async def test_search_follows_deletes_purges_and_forks(store: ConversationStore, user: str) -> None:
    kept, dropped = await trip(store, user, "Kept"), await trip(store, user, "Dropped")
    await store.delete_conversation(user=user, conversation_id=dropped.id)
    page = await store.search_messages(user=user, query="lyon")
    assert {hit.message.conversation_id for hit in page.results} == {kept.id}
    fork = await store.fork_conversation(user=user, conversation_id=kept.id, at_seq=5)
    page = await store.search_messages(user=user, query="lyon")
    found = [(hit.message.conversation_id, hit.message.seq) for hit in page.results]
    assert sorted(found) == sorted(
        [(kept.id, 2), (kept.id, 5), (kept.id, 6), (fork.id, 2), (fork.id, 5)]
    )
    assert len({hit.message.id for hit in page.results}) == 5
    await store.purge_user(user=user)
    assert (await store.search_messages(user=user, query="lyon")).results == []


async def test_a_query_without_a_word_finds_nothing(store: ConversationStore, user: str) -> None:
    await trip(store, user)
    for query in ["-lyon", '""', "***", "-- ;", "or", '" "', "🚂"]:
        page = await store.search_messages(user=user, query=query)
        assert page == SearchPage(results=[], next_cursor=None)


@pytest.mark.parametrize(
    ("query", "mentions"),
    [
        ("", "must not be empty"),
        ("   ", "must not be empty"),
        ("x" * (MAX_SEARCH_QUERY_CHARS + 1), "limit is 500"),
        *((bad, "query") for bad in BAD_TEXTS),
    ],
)
async def test_bad_queries_are_refused(
    store: ConversationStore, user: str, query: str, mentions: str
) -> None:
    with pytest.raises(InvalidArgument, match=mentions):
        await store.search_messages(user=user, query=query)


@pytest.mark.parametrize(
    "arguments",
    [{"limit": 0}, {"limit": 101}, {"limit": "5"}, {"role": "robot"}, {"cursor": "\x00"}],
)
async def test_bad_search_arguments_are_refused(
    store: ConversationStore, user: str, arguments: dict[str, Any]
) -> None:
    with pytest.raises(InvalidArgument):
        await store.search_messages(user=user, query="lyon", **arguments)


_SYNTAX = [*"\"'*:-+^()[]{}~|&!<>@\\/.,;", "OR", "or", "AND", "NOT", "NEAR", "NEAR/2"]
_WORLD = ["🚂", "👩‍👩‍👧", "שלום", "مرحبا", "\u200f", "\u202e", "Ünïcödé", "東京", "lyon", "train"]
queries = st.lists(
    st.one_of(
        st.sampled_from(_SYNTAX + _WORLD + [" ", "  "]),
        st.text(alphabet=st.characters(codec="utf-8"), max_size=8),
        st.sampled_from(["\x00", "\ud800", "\udfff"]),
    ),
    max_size=80,
).map("".join) | st.lists(
    st.sampled_from(_SYNTAX + _WORLD + [" "]), min_size=160, max_size=200
).map(lambda parts: "".join(parts)[:510])


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(query=queries)
async def test_any_text_is_a_query_or_a_clear_refusal(store: ConversationStore, query: str) -> None:
    user, other = "search-prop-a", "search-prop-b"
    if not (await store.list_conversations(user=user)).conversations:
        await trip(store, user)
        await trip(store, other)
    refused = (
        not query.strip()
        or len(query) > MAX_SEARCH_QUERY_CHARS
        or "\x00" in query
        or any("\ud800" <= ch <= "\udfff" for ch in query)
    )
    try:
        page = await store.search_messages(user=user, query=query, limit=100)
    except InvalidArgument:
        assert refused
        return
    assert not refused
    mine = {c.id for c in (await store.list_conversations(user=user)).conversations}
    assert len(page.results) <= len(TRIP) * len(mine)
    assert {hit.message.conversation_id for hit in page.results} <= mine
