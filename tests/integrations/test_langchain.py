"""The LangChain adapter against real LangChain: ``RunnableWithMessageHistory`` over several
turns with a fake chat model, every message type round-tripping equal, the sync methods on a
private loop, and the history as chatstore (and MCP) shows it."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from langchain_core.chat_history import BaseChatMessageHistory
from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import (
    AIMessage,
    BaseMessage,
    ChatMessage,
    HumanMessage,
    SystemMessage,
    ToolMessage,
)
from langchain_core.prompts import ChatPromptTemplate, MessagesPlaceholder
from langchain_core.runnables import RunnableLambda
from langchain_core.runnables.history import RunnableWithMessageHistory

from store import ConversationStore, Settings
from store.integrations.langchain import ChatstoreChatMessageHistory

#: langchain-core 1.x deprecates RunnableWithMessageHistory (for LangGraph's persistence) but
#: ships it, and applications still use it: the adapter is tested with it.
uses_runnable_with_history = pytest.mark.filterwarnings(
    "ignore:RunnableWithMessageHistory is deprecated"
)

EVERY_TYPE: list[BaseMessage] = [
    SystemMessage(content="Be brief.", id="s1"),
    HumanMessage(content="Weather in Lyon?", additional_kwargs={"lang": "en"}, name="alice"),
    AIMessage(
        content="",
        tool_calls=[{"name": "weather", "args": {"city": "Lyon", "days": 2}, "id": "call_1"}],
        response_metadata={"model_name": "fake", "finish_reason": "tool_calls"},
        usage_metadata={"input_tokens": 12, "output_tokens": 7, "total_tokens": 19},
        id="ai-1",
    ),
    ToolMessage(content="sunny, 24 °C", tool_call_id="call_1", name="weather", artifact={"t": 24}),
    AIMessage(content=[{"type": "text", "text": "Sunny in Lyon."}], id="ai-2"),
    HumanMessage(content=[{"type": "text", "text": "and this?"}, {"type": "image", "url": "x"}]),
    ChatMessage(role="critic", content="Too short."),
]


async def test_every_message_type_round_trips_equal(store: ConversationStore, user: str) -> None:
    history = ChatstoreChatMessageHistory("types", user=user, store=store)
    assert isinstance(history, BaseChatMessageHistory)
    await history.aadd_messages(EVERY_TYPE)
    assert await history.aget_messages() == EVERY_TYPE
    # What chatstore (and MCP) shows of the same messages.
    cid = (await store.create_conversation(user=user, key="types")).id
    page = await store.list_messages(user=user, conversation_id=cid)
    shown = [(m.role, m.content, m.tool_call_id) for m in page.messages]
    assert shown == [
        ("system", "Be brief.", None),
        ("user", "Weather in Lyon?", None),
        ("assistant", "", None),
        ("tool", "sunny, 24 °C", "call_1"),
        ("assistant", "Sunny in Lyon.", None),
        ("user", "and this?\n[image]", None),
        ("user", "Too short.", None),
    ]
    assert page.messages[2].tool_calls == [
        {"id": "call_1", "name": "weather", "arguments": {"city": "Lyon", "days": 2}}
    ]
    await history.aclear()
    assert await history.aget_messages() == []


def _recording_chain(replies: list[AIMessage], seen: list[list[BaseMessage]]) -> Any:
    prompt = ChatPromptTemplate.from_messages(
        [("system", "Be brief."), MessagesPlaceholder("history"), ("human", "{input}")]
    )

    def record(value: Any) -> Any:
        seen.append(value.to_messages())
        return value

    model = GenericFakeChatModel(messages=iter(replies))
    return prompt | RunnableLambda(record) | model


REPLIES = [
    AIMessage(content="Sunny in Lyon.", id="r1"),
    AIMessage(content="Rain in Paris.", id="r2"),
    AIMessage(content="You're welcome.", id="r3"),
]
TURNS = ["Weather in Lyon?", "And Paris?", "Thanks!"]


@uses_runnable_with_history
async def test_runnable_with_message_history_over_several_turns(
    store: ConversationStore, user: str
) -> None:
    seen: list[list[BaseMessage]] = []
    chain = RunnableWithMessageHistory(
        _recording_chain(list(REPLIES), seen),
        lambda session_id: ChatstoreChatMessageHistory(session_id, user=user, store=store),
        input_messages_key="input",
        history_messages_key="history",
    )
    config: Any = {"configurable": {"session_id": "trip"}}
    for turn in TURNS:
        await chain.ainvoke({"input": turn}, config=config)
    # The third call saw the system prompt, both earlier turns, and its own input.
    contents = [m.content for m in seen[2]]
    assert contents == [
        "Be brief.",
        "Weather in Lyon?",
        "Sunny in Lyon.",
        "And Paris?",
        "Rain in Paris.",
        "Thanks!",
    ]
    stored = await ChatstoreChatMessageHistory("trip", user=user, store=store).aget_messages()
    assert [type(m).__name__ for m in stored] == ["HumanMessage", "AIMessage"] * 3
    assert [m.content for m in stored][1::2] == [r.content for r in REPLIES]


@uses_runnable_with_history
def test_the_sync_methods_run_on_a_private_loop(settings: Settings, user: str) -> None:
    seen: list[list[BaseMessage]] = []
    histories: list[ChatstoreChatMessageHistory] = []

    def history(session_id: str) -> ChatstoreChatMessageHistory:
        histories.append(ChatstoreChatMessageHistory(session_id, user=user, store=settings))
        return histories[-1]

    chain = RunnableWithMessageHistory(
        _recording_chain(list(REPLIES), seen),
        history,
        input_messages_key="input",
        history_messages_key="history",
    )
    config: Any = {"configurable": {"session_id": "sync"}}
    try:
        for turn in TURNS:
            chain.invoke({"input": turn}, config=config)
        assert len(seen[2]) == 6
        reader = history("sync")
        assert [m.content for m in reader.messages][::2] == TURNS
        reader.add_messages([HumanMessage(content="one more")])
        assert reader.messages[-1] == HumanMessage(content="one more")
        reader.clear()
        assert reader.messages == []
    finally:
        for opened in histories:
            opened.close()
    with pytest.raises(RuntimeError, match="closed"):
        _ = histories[0].messages


async def test_async_methods_on_a_private_loop_and_sync_ones_refused_on_an_open_store(
    settings: Settings, store: ConversationStore, user: str
) -> None:
    private = ChatstoreChatMessageHistory("both", user=user, store=settings)
    try:
        await private.aadd_messages([HumanMessage(content="hi")])
        shared = ChatstoreChatMessageHistory("both", user=user, store=store)
        assert await shared.aget_messages() == [HumanMessage(content="hi")]
        with pytest.raises(RuntimeError, match="use the async methods"):
            _ = shared.messages
    finally:
        await asyncio.to_thread(private.close)


async def test_histories_of_two_users_never_meet(
    store: ConversationStore, user: str, other_user: str
) -> None:
    mine = ChatstoreChatMessageHistory("same-id", user=user, store=store)
    theirs = ChatstoreChatMessageHistory("same-id", user=other_user, store=store)
    await mine.aadd_messages([HumanMessage(content="my secret")])
    assert await theirs.aget_messages() == []
    await theirs.aclear()
    assert await mine.aget_messages() == [HumanMessage(content="my secret")]


async def test_messages_written_over_mcp_read_as_langchain_messages(
    store: ConversationStore, user: str
) -> None:
    conversation = await store.create_conversation(user=user, key="mcp")
    await store.append_messages(
        user=user,
        conversation_id=conversation.id,
        messages=[
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Book Lyon"},
            {
                "role": "assistant",
                "content": "",
                "tool_calls": [{"id": "c1", "name": "book", "arguments": {"to": "Lyon"}}],
            },
            {"role": "tool", "tool_call_id": "c1", "content": "booked"},
        ],
    )
    messages = await ChatstoreChatMessageHistory("mcp", user=user, store=store).aget_messages()
    assert messages == [
        SystemMessage(content="Be brief."),
        HumanMessage(content="Book Lyon"),
        AIMessage(content="", tool_calls=[{"id": "c1", "name": "book", "args": {"to": "Lyon"}}]),
        ToolMessage(content="booked", tool_call_id="c1"),
    ]
