"""The Agents SDK adapter against the real SDK: ``Runner.run`` with a scripted model over
three turns in two processes on one database, concurrent writers, the SDK's own session
semantics (limit, pop, clear), and the history as chatstore (and MCP) reads it."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from typing import Any

import pytest
from agents import SessionSettings
from agents.memory import Session

from store import ConversationStore, Settings
from store.integrations.openai_agents import ChatstoreSession, item_message, message_items
from tests.integrations import scripted_agents
from tests.mcp_server.helpers import run_command
from tests.rawdb import RawDB


async def _turns(settings: Settings, *turns: str) -> list[list[dict[str, Any]]]:
    env = {**os.environ, "CHATSTORE_DATABASE_URL": settings.resolved_database_url}
    done = await run_command(
        [sys.executable, "-m", "tests.integrations.scripted_agents", *turns], env=env, seconds=120
    )
    assert done.returncode == 0, done.stderr
    inputs: list[list[dict[str, Any]]] = json.loads(done.stdout)
    return inputs


def _session(store: ConversationStore, key: str = scripted_agents.SESSION) -> ChatstoreSession:
    return ChatstoreSession(key, user=scripted_agents.USER, store=store)


async def test_a_second_process_sees_the_first_ones_history_item_for_item(
    settings: Settings, store: ConversationStore
) -> None:
    first = await _turns(settings, "What is the weather in Lyon?", "And in Paris?")
    # Turn 1 took two model calls (the tool call, then the answer), turn 2 one.
    assert len(first) == 3
    session = _session(store)
    assert isinstance(session, Session)  # the SDK's runtime-checkable protocol
    after_two = await session.get_items()
    kinds = [item.get("type", "message") for item in after_two]
    assert kinds == [
        "message",
        "function_call",
        "function_call_output",
        "message",
        "message",
        "message",
    ]
    # What the model saw on turn 2 is exactly the stored history before it plus its input.
    assert first[2] == after_two[:5]

    second = await _turns(settings, "Thanks!")
    assert len(second) == 1
    assert second[0][:6] == after_two  # the new process read the first one's items exactly
    assert second[0][6] == {"content": "Thanks!", "role": "user"}
    assert len(await session.get_items()) == 8

    # The same history, as chatstore (and so MCP) shows it.
    cid = (await store.create_conversation(user=scripted_agents.USER, key=session.session_id)).id
    page = await store.list_messages(user=scripted_agents.USER, conversation_id=cid)
    shown = [(m.role, m.content, m.tool_call_id) for m in page.messages]
    assert shown == [
        ("user", "What is the weather in Lyon?", None),
        ("assistant", "", None),
        ("tool", "sunny, 24 °C in Lyon", "call_1"),
        ("assistant", "It is sunny in Lyon.", None),
        ("user", "And in Paris?", None),
        ("assistant", "Rain in Paris, take an umbrella.", None),
        ("user", "Thanks!", None),
        ("assistant", "You're welcome.", None),
    ]
    assert page.messages[1].tool_calls == [
        {"id": "call_1", "name": "weather", "arguments": '{"city": "Lyon"}'}
    ]
    context = await store.get_context(
        user=scripted_agents.USER, conversation_id=cid, max_tokens=100_000
    )
    assert [m.seq for m in context.messages] == list(range(1, 9))


async def test_eight_concurrent_writers_keep_their_order_and_lose_nothing(
    store: ConversationStore, raw: RawDB, user: str
) -> None:
    session = ChatstoreSession("busy", user=user, store=store)
    per_writer = 25

    async def writer(w: int) -> None:
        for i in range(per_writer):
            await session.add_items([{"role": "user", "content": f"w{w}-{i}"}])

    await asyncio.gather(*(writer(w) for w in range(8)))
    items: list[Any] = await session.get_items()
    assert len(items) == 8 * per_writer
    for w in range(8):
        mine = [item["content"] for item in items if str(item["content"]).startswith(f"w{w}-")]
        assert mine == [f"w{w}-{i}" for i in range(per_writer)]
    assert await raw.violations([user]) == []


async def test_limit_pop_and_clear_behave_as_the_sdk_says(
    store: ConversationStore, user: str
) -> None:
    session = ChatstoreSession(
        "undo", user=user, store=store, session_settings=SessionSettings(limit=3)
    )
    assert await session.get_items() == []
    assert await session.pop_item() is None
    items: list[Any] = [{"role": "user", "content": f"m{n}"} for n in range(250)]
    await session.add_items(items)
    assert await session.get_items() == items[-3:]  # the settings' limit
    assert await session.get_items(limit=220) == items[-220:]  # over one page
    assert await session.get_items(limit=0) == []
    unlimited = ChatstoreSession("undo", user=user, store=store)
    assert await unlimited.get_items() == items
    assert await session.pop_item() == items[-1]
    assert await session.get_items(limit=1) == [items[-2]]
    await session.add_items([{"role": "user", "content": "after the pop"}])
    latest: list[Any] = await session.get_items(limit=2)
    assert latest[-1]["content"] == "after the pop"
    await session.clear_session()
    assert await unlimited.get_items() == []
    await session.add_items([{"role": "user", "content": "again"}])
    assert await unlimited.get_items() == [{"role": "user", "content": "again"}]


async def test_concurrent_pops_never_take_one_item_twice(
    store: ConversationStore, user: str
) -> None:
    session = ChatstoreSession("pops", user=user, store=store)
    items: list[Any] = [{"role": "user", "content": f"m{n}"} for n in range(30)]
    await session.add_items(items)
    popped: list[Any] = await asyncio.gather(*(session.pop_item() for _ in range(40)))
    taken = [item["content"] for item in popped if item is not None]
    assert sorted(taken) == sorted(item["content"] for item in items)
    assert await session.get_items() == []


async def test_sessions_of_two_users_never_meet(
    store: ConversationStore, user: str, other_user: str
) -> None:
    mine = ChatstoreSession("shared-id", user=user, store=store)
    theirs = ChatstoreSession("shared-id", user=other_user, store=store)
    await mine.add_items([{"role": "user", "content": "my secret"}])
    assert await theirs.get_items() == []
    assert await theirs.pop_item() is None
    await theirs.clear_session()
    assert await mine.get_items() == [{"role": "user", "content": "my secret"}]


async def test_a_deleted_conversation_starts_the_session_again(
    store: ConversationStore, user: str
) -> None:
    session = ChatstoreSession("deleted", user=user, store=store)
    await session.add_items([{"role": "user", "content": "old"}])
    cid = (await store.create_conversation(user=user, key="deleted")).id
    await store.delete_conversation(user=user, conversation_id=cid)
    assert await session.get_items() == []
    await session.add_items([{"role": "user", "content": "new"}])
    assert await session.get_items() == [{"role": "user", "content": "new"}]


ITEMS: list[tuple[dict[str, Any], tuple[str, str, Any]]] = [
    ({"role": "developer", "content": "Be brief."}, ("system", "Be brief.", None)),
    (
        {
            "role": "user",
            "content": [
                {"type": "input_text", "text": "What is this?"},
                {"type": "input_image", "image_url": "data:image/png;base64,AAAA"},
            ],
        },
        ("user", "What is this?\n[input_image]", None),
    ),
    (
        {"type": "reasoning", "id": "rs_1", "summary": [{"type": "summary_text", "text": "Look."}]},
        ("assistant", "Look.", None),
    ),
    ({"type": "reasoning", "id": "rs_2", "summary": []}, ("assistant", "[reasoning]", None)),
    (
        {"type": "function_call_output", "call_id": "c9", "output": ""},
        ("tool", "[no output]", "c9"),
    ),
    (
        {"type": "web_search_call", "id": "ws_1", "status": "completed"},
        ("assistant", "[web_search_call]", None),
    ),
]


@pytest.mark.parametrize(("item", "expected"), ITEMS, ids=[str(n) for n in range(len(ITEMS))])
async def test_every_item_becomes_a_readable_message_and_comes_back_verbatim(
    store: ConversationStore, user: str, item: dict[str, Any], expected: tuple[str, str, Any]
) -> None:
    derived = item_message(item)
    assert (derived["role"], derived["content"], derived.get("tool_call_id")) == expected
    session = ChatstoreSession("kinds", user=user, store=store)
    await session.add_items([item])  # type: ignore[list-item]
    assert await session.get_items() == [item]


async def test_messages_written_over_mcp_are_read_as_items(
    store: ConversationStore, user: str
) -> None:
    conversation = await store.create_conversation(user=user, key="mcp")
    await store.append_messages(
        user=user,
        conversation_id=conversation.id,
        messages=[
            {"role": "user", "content": "Book Lyon"},
            {
                "role": "assistant",
                "content": "Booking.",
                "tool_calls": [
                    {
                        "id": "c1",
                        "type": "function",
                        "function": {"name": "book", "arguments": "{}"},
                    }
                ],
            },
            {"role": "tool", "tool_call_id": "c1", "content": "booked"},
        ],
    )
    items = await ChatstoreSession("mcp", user=user, store=store).get_items()
    assert items == [
        {"role": "user", "content": "Book Lyon"},
        {"role": "assistant", "content": "Booking."},
        {"type": "function_call", "call_id": "c1", "name": "book", "arguments": "{}"},
        {"type": "function_call_output", "call_id": "c1", "output": "booked"},
    ]
    page = await store.list_messages(user=user, conversation_id=conversation.id)
    assert [message_items(m) for m in page.messages][2] == [items[3]]
