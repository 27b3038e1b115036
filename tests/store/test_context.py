"""get_context: every rule of the contract, table-driven, and against a brute-force model.

A conversation is written as a list of ``ROLE TOKENS[:IDS]`` items: ``U10`` is a user message
of 10 tokens, ``A10:a,b`` an assistant message calling tools ``a`` and ``b``, ``T10:a`` the
tool result for ``a``, ``S10`` a system message. Token counts are passed to the store, so the
budgets below are exact.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from store import Context, ConversationStore, InvalidArgument, NotFound
from store._context import choose_start
from tests.rawdb import RawDB
from tests.store.context_model import Expected, Msg, expected_context
from tests.store.helpers import snapshot

ROLES = {"U": "user", "A": "assistant", "T": "tool", "S": "system"}


def parse(spec: str) -> list[Msg]:
    messages = []
    for seq, item in enumerate(spec.split(), start=1):
        head, _, ids = item.partition(":")
        role, tokens = ROLES[head[0]], int(head[1:])
        calls = tuple(ids.split(",")) if ids and role == "assistant" else ()
        messages.append(Msg(seq, role, tokens, ids if role == "tool" else None, calls))
    return messages


async def build(store: ConversationStore, user: str, messages: Sequence[Msg]) -> uuid.UUID:
    conversation = await store.create_conversation(user=user)
    for message in messages:
        arguments: dict[str, Any] = {"role": message.role, "token_count": message.tokens}
        if message.call_ids:
            arguments["tool_calls"] = [{"id": c, "name": "lookup"} for c in message.call_ids]
        else:
            arguments["content"] = f"{message.role} {message.seq}"
        if message.tool_call_id is not None:
            arguments["tool_call_id"] = message.tool_call_id
        await store.append_message(user=user, conversation_id=conversation.id, **arguments)
    return conversation.id


def check(context: Context, expected: Expected) -> None:
    assert [m.seq for m in context.messages] == expected.seqs
    assert context.truncated is expected.truncated
    assert context.token_count == expected.token_count
    assert (context.summary is not None) is expected.summary_returned
    seqs = [m.seq for m in context.messages]
    assert seqs == sorted(seqs)


README_EXAMPLE = "S5 U10 A15:t T20:t A10 U10 A15:u T20:u"


@dataclass(frozen=True)
class Case:
    name: str
    spec: str
    max_tokens: int
    seqs: list[int]
    truncated: bool
    keep_system: bool = True


CASES = [
    Case("everything fits", "S5 U10 A10 U10 A10", 100, [1, 2, 3, 4, 5], False),
    Case("cut at the latest user turn that fits", "U10 A10 U10 A10", 25, [3, 4], True),
    Case(
        "an older system message kept in what is left", "S10 U10 A10 U10 A10", 30, [1, 4, 5], True
    ),
    Case(
        "no system message without keep_system",
        "S10 U10 A10 U10 A10",
        30,
        [4, 5],
        True,
        keep_system=False,
    ),
    Case(
        "system messages kept oldest first while they fit", "S5 S50 S5 U10 A10", 30, [1, 4, 5], True
    ),
    Case(
        "a turn is not cut between a call and its results",
        "U5 A5:a,b T5:a T5:b A5 U5 A5",
        34,
        [6, 7],
        True,
    ),
    Case(
        "a tool group at the cut goes whole or not at all",
        "U5 A5:a,b T5:a T5:b A5 U5 A5",
        35,
        [1, 2, 3, 4, 5, 6, 7],
        False,
    ),
    Case(
        "a budget smaller than the latest turn: start inside it, at its last answer",
        "U10 A10:x T10:x A10",
        25,
        [4],
        True,
    ),
    Case(
        "inside the latest turn, a call keeps its result",
        "U10 A10:x T10:x A10",
        35,
        [2, 3, 4],
        True,
    ),
    Case("never start at a tool message", "U10 A10:x T10:x", 15, [], True),
    Case("a budget smaller than the last message", "U10 A10", 5, [], True),
    Case("a budget of one token", "U1 A1", 1, [2], True),
    Case("a budget of 2,000,000", "S3 U4 A5:q T6:q A7", 2_000_000, [1, 2, 3, 4, 5], False),
    Case("the first candidate counts as a turn", "A10 A10", 100, [1, 2], False),
    Case("a tool message answering nothing is never returned", "U10 T10:ghost A10", 100, [3], True),
    Case(
        "a result answering a call of an earlier turn pulls that turn in",
        "U5 A5:x U5 T5:x A5",
        25,
        [1, 2, 3, 4, 5],
        False,
    ),
    Case(
        "... and without room for it, only what follows the result",
        "U5 A5:x U5 T5:x A5",
        12,
        [5],
        True,
    ),
    Case(
        "... and never from inside an earlier turn, even when that would fit",
        "U5 A5:x U5 T5:x A5",
        20,
        [5],
        True,
    ),
    Case("the README's worked example, 60 tokens", README_EXAMPLE, 60, [1, 6, 7, 8], True),
    Case("the README's worked example, 40 tokens", README_EXAMPLE, 40, [1, 7, 8], True),
    Case("the README's worked example, 10 tokens", README_EXAMPLE, 10, [], True),
    Case("an empty conversation", "", 100, [], False),
    Case("zero-token messages all fit", "U0 A0 U0 A0", 1, [1, 2, 3, 4], False),
]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
async def test_context_rules(store: ConversationStore, user: str, case: Case) -> None:
    messages = parse(case.spec)
    cid = await build(store, user, messages)
    context = await store.get_context(
        user=user, conversation_id=cid, max_tokens=case.max_tokens, keep_system=case.keep_system
    )
    expected = expected_context(messages, max_tokens=case.max_tokens, keep_system=case.keep_system)
    assert expected.seqs == case.seqs, "the table and the model disagree"
    assert expected.truncated is case.truncated
    check(context, expected)
    assert context.conversation_id == cid
    assert context.summary is None and context.summary_up_to_seq is None


async def test_a_long_history_is_walked_in_pages(store: ConversationStore, user: str) -> None:
    """Far more candidates than one page, a tool group across a page boundary, and older system
    messages far behind the cut."""
    items = ["S7", "U3"] + [f"U1 A1:c{n} T1:c{n} A1" for n in range(150)] + ["S2"]
    items += [f"U2 A2:d{n} T2:d{n} A2" for n in range(60)]
    messages = parse(" ".join(items))
    cid = await build(store, user, messages)
    for budget in (5, 100, 401, 480, 1000, 2000):
        context = await store.get_context(user=user, conversation_id=cid, max_tokens=budget)
        check(context, expected_context(messages, max_tokens=budget))


async def test_more_older_system_messages_than_one_read(
    store: ConversationStore, user: str
) -> None:
    """More system messages before the cut than the window's statement reads at once."""
    messages = parse(" ".join(["S1"] * 150 + ["U50 A50"] * 5 + ["S2 U10 A10"]))
    cid = await build(store, user, messages)
    for budget in (30, 100, 150, 171, 172, 400):
        context = await store.get_context(user=user, conversation_id=cid, max_tokens=budget)
        check(context, expected_context(messages, max_tokens=budget))


async def test_a_walk_that_stops_short_reads_on(
    store: ConversationStore, raw: RawDB, user: str
) -> None:
    """The first read is sized from the conversation's tokens per message: when the latest
    messages are much smaller than the average, or token_total is stale, the walk reads on."""
    messages = parse(" ".join(["U1000 A1000"] * 50 + ["S1 U1 A1:k T1:k A1"] * 60))
    cid = await build(store, user, messages)
    for budget in (150, 299, 300, 2500):
        context = await store.get_context(user=user, conversation_id=cid, max_tokens=budget)
        check(context, expected_context(messages, max_tokens=budget))
    for stale in (0, 10**12):
        await raw.execute("UPDATE conversations SET token_total = $1 WHERE id = $2", stale, cid)
        context = await store.get_context(user=user, conversation_id=cid, max_tokens=299)
        check(context, expected_context(messages, max_tokens=299))


@pytest.mark.pgbouncer
async def test_a_summary_comes_first_and_counts(store: ConversationStore, user: str) -> None:
    messages = parse("S10 U10 A10 U10 A10 U10 A10")
    cid = await build(store, user, messages)
    summary = "They planned a trip to Lyon."
    updated = await store.update_conversation(
        user=user, conversation_id=cid, summary=summary, summary_up_to_seq=3
    )
    assert (updated.summary, updated.summary_up_to_seq) == (summary, 3)
    summary_tokens = await summary_token_count(store, user, cid, summary)
    for budget in (summary_tokens, summary_tokens + 15, summary_tokens + 20, 1000):
        context = await store.get_context(user=user, conversation_id=cid, max_tokens=budget)
        expected = expected_context(
            messages, max_tokens=budget, summary_tokens=summary_tokens, summary_up_to_seq=3
        )
        check(context, expected)
        assert (context.summary, context.summary_up_to_seq) == (summary, 3)
        # Only messages after the summary are candidates, but system message 1, which it
        # covers, is kept while it fits.
        assert all(m.seq > 3 for m in context.messages if m.role != "system")
    too_small = await store.get_context(
        user=user, conversation_id=cid, max_tokens=summary_tokens - 1
    )
    assert (too_small.summary, too_small.messages, too_small.truncated) == (None, [], True)
    assert too_small.token_count == 0


async def summary_token_count(
    store: ConversationStore, user: str, cid: uuid.UUID, summary: str
) -> int:
    """The summary's tokens, as get_context counts them (with nothing else returned)."""
    from store.tokens import tokenizer

    counted = tokenizer(store.settings.tokenizer).count(summary)
    context = await store.get_context(user=user, conversation_id=cid, max_tokens=counted)
    assert context.summary == summary and context.token_count == counted
    return counted


async def test_a_summary_of_the_whole_conversation(store: ConversationStore, user: str) -> None:
    cid = await build(store, user, parse("U10 A10"))
    await store.update_conversation(
        user=user, conversation_id=cid, summary="s", summary_up_to_seq=2
    )
    context = await store.get_context(user=user, conversation_id=cid, max_tokens=100)
    assert (context.summary, context.messages, context.truncated) == ("s", [], False)
    empty = await store.create_conversation(user=user)
    await store.update_conversation(
        user=user, conversation_id=empty.id, summary="nothing yet", summary_up_to_seq=0
    )
    context = await store.get_context(user=user, conversation_id=empty.id, max_tokens=100)
    assert (context.summary, context.summary_up_to_seq, context.truncated) == (
        "nothing yet",
        0,
        False,
    )


@pytest.mark.parametrize("max_tokens", [0, -1, 2_000_001, 1.5, "10", True, None])
async def test_bad_budgets_are_refused(
    store: ConversationStore, user: str, max_tokens: Any
) -> None:
    cid = await build(store, user, parse("U1"))
    with pytest.raises(InvalidArgument, match="max_tokens"):
        await store.get_context(user=user, conversation_id=cid, max_tokens=max_tokens)


async def test_keep_system_must_be_a_boolean(store: ConversationStore, user: str) -> None:
    cid = await build(store, user, parse("U1"))
    with pytest.raises(InvalidArgument, match="keep_system"):
        await store.get_context(
            user=user,
            conversation_id=cid,
            max_tokens=10,
            keep_system="yes",  # type: ignore[arg-type]
        )


async def test_another_users_conversation_is_not_found(
    store: ConversationStore, user: str, other_user: str
) -> None:
    cid = await build(store, user, parse("U1 A1"))
    with pytest.raises(NotFound) as theirs:
        await store.get_context(user=other_user, conversation_id=cid, max_tokens=10)
    with pytest.raises(NotFound) as unknown:
        await store.get_context(user=other_user, conversation_id=uuid.uuid4(), max_tokens=10)
    assert str(theirs.value) == str(unknown.value)


async def test_get_context_writes_nothing(store: ConversationStore, raw: RawDB, user: str) -> None:
    cid = await build(store, user, parse("S1 U1 A1:x T1:x A1"))
    before = await snapshot(store, raw, user, cid)
    await store.get_context(user=user, conversation_id=cid, max_tokens=3)
    assert await snapshot(store, raw, user, cid) == before


# -- random conversations ---------------------------------------------------------------------


@st.composite
def conversations(draw: st.DrawFn) -> list[Msg]:
    """Turns of users, assistants, tool groups (results possibly missing, late or foreign) and
    system messages, with random token counts."""
    out: list[Msg] = []
    tokens = st.integers(min_value=0, max_value=30)
    for _ in range(draw(st.integers(min_value=0, max_value=12))):
        kind = draw(st.sampled_from(["user", "assistant", "tools", "system", "stray"]))
        seq = len(out) + 1
        if kind == "tools":
            ids = tuple(f"c{seq}-{i}" for i in range(draw(st.integers(1, 3))))
            out.append(Msg(seq, "assistant", draw(tokens), None, ids))
            for call_id in draw(st.permutations(ids)):
                if draw(st.booleans()) or len(ids) == 1:
                    out.append(Msg(len(out) + 1, "tool", draw(tokens), call_id))
        elif kind == "stray":
            out.append(Msg(seq, "tool", draw(tokens), "nobody"))
        else:
            out.append(Msg(seq, kind, draw(tokens)))
    return out


@dataclass(frozen=True)
class Row:
    """A candidate as the planner reads one (what it needs of a Message)."""

    role: str
    token_count: int
    tool_call_id: str | None
    tool_calls: list[dict[str, Any]] | None


def _rows(messages: Sequence[Msg]) -> list[Row]:
    return [
        Row(m.role, m.tokens, m.tool_call_id, [{"id": c} for c in m.call_ids] or None)
        for m in messages
    ]


@settings(max_examples=400, deadline=None)
@given(messages=conversations(), budget=st.integers(min_value=0, max_value=200))
def test_the_planner_matches_the_model(messages: list[Msg], budget: int) -> None:
    """The pure choice of start, on complete histories, against the brute-force model."""
    start = choose_start(_rows(messages), complete=True, budget=budget)
    expected = expected_context(messages, max_tokens=budget, keep_system=False)
    assert ([m.seq for m in messages[start:]] if start is not None else []) == expected.seqs


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    messages=conversations(),
    budget=st.integers(min_value=1, max_value=150),
    keep_system=st.booleans(),
    summary_at=st.one_of(st.none(), st.integers(min_value=0, max_value=12)),
)
async def test_random_conversations_follow_every_rule(
    store: ConversationStore,
    messages: list[Msg],
    budget: int,
    keep_system: bool,
    summary_at: int | None,
) -> None:
    user = f"prop-{uuid.uuid4().hex[:10]}"
    cid = await build(store, user, messages)
    summary_tokens = None
    if summary_at is not None and summary_at <= len(messages):
        after = next((m for m in messages if m.seq == summary_at + 1), None)
        if after is None or after.role != "tool":
            await store.update_conversation(
                user=user, conversation_id=cid, summary="earlier", summary_up_to_seq=summary_at
            )
            summary_tokens = await summary_token_count(store, user, cid, "earlier")
        else:
            summary_at = None
    else:
        summary_at = None
    context = await store.get_context(
        user=user, conversation_id=cid, max_tokens=budget, keep_system=keep_system
    )
    expected = expected_context(
        messages,
        max_tokens=budget,
        keep_system=keep_system,
        summary_tokens=summary_tokens,
        summary_up_to_seq=summary_at,
    )
    check(context, expected)
    # The properties, stated on the result itself: it fits; it is kept system messages, then
    # a suffix (the run of consecutive seqs ending at the last message) that does not start
    # at a tool message; no tool message comes without the call it answers.
    returned = [m for m in messages if m.seq in {c.seq for c in context.messages}]
    assert context.token_count <= budget
    if returned:
        assert returned[-1].seq == len(messages)
        cut = len(returned) - 1
        while cut > 0 and returned[cut - 1].seq == returned[cut].seq - 1:
            cut -= 1
        assert returned[cut].role != "tool"
        assert all(m.role == "system" for m in returned[:cut])
    for index, message in enumerate(returned):
        if message.role == "tool":
            assert any(message.tool_call_id in m.call_ids for m in returned[:index])
