"""Appending messages: result shape, conversation counters, roles, content and tool-call rules."""

from __future__ import annotations

import math
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from store.errors import InvalidArgument
from store.store import ConversationStore
from tests.rawdb import RawDB
from tests.store.helpers import parse_rfc3339, snapshot
from tests.support import MESSAGE_KEYS

CALL: dict[str, Any] = {"id": "call_1", "name": "get_weather"}


@pytest.mark.pgbouncer
async def test_append_returns_the_contract_shape(store: ConversationStore, user: str) -> None:
    conversation = await store.create_conversation(user=user)
    before = datetime.now(UTC)
    message = await store.append_message(
        user=user,
        conversation_id=conversation.id,
        role="user",
        content="Hello there",
        metadata={"lang": "en"},
    )
    dumped = message.model_dump(mode="json")
    assert set(dumped) == MESSAGE_KEYS
    assert str(uuid.UUID(dumped["id"])) == dumped["id"]
    assert dumped["conversation_id"] == str(conversation.id)
    assert dumped["seq"] == 1
    assert dumped["role"] == "user"
    assert dumped["content"] == "Hello there"
    assert dumped["tool_calls"] is None
    assert dumped["tool_call_id"] is None
    assert dumped["metadata"] == {"lang": "en"}
    created_at = parse_rfc3339(dumped["created_at"])
    assert before - timedelta(seconds=5) <= created_at <= datetime.now(UTC) + timedelta(seconds=5)

    listed = await store.list_messages(user=user, conversation_id=conversation.id)
    assert listed.messages == [message]
    assert listed.model_dump(mode="json") == {"messages": [dumped], "has_more": False}


async def test_append_updates_count_last_seq_and_updated_at(
    store: ConversationStore, user: str
) -> None:
    conversation = await store.create_conversation(user=user)
    previous = conversation
    for n in range(1, 4):
        message = await store.append_message(
            user=user, conversation_id=conversation.id, role="user", content=f"m{n}"
        )
        now = await store.get_conversation(user=user, conversation_id=conversation.id)
        assert message.seq == n
        assert now.message_count == n
        assert now.last_seq == n
        assert now.created_at == conversation.created_at
        assert now.updated_at >= previous.updated_at
        assert now.updated_at >= message.created_at
        parse_rfc3339(now.model_dump(mode="json")["updated_at"])
        previous = now
    assert previous.updated_at > conversation.updated_at
    listed = (await store.list_messages(user=user, conversation_id=conversation.id)).messages
    created = [m.created_at for m in listed]
    assert created == sorted(created)
    assert len({m.id for m in listed}) == 3


async def test_all_four_roles_are_accepted(store: ConversationStore, user: str) -> None:
    conversation = await store.create_conversation(user=user)
    sent: list[dict[str, Any]] = [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "Weather in Oslo?"},
        {"role": "assistant", "content": "", "tool_calls": [CALL]},
        {"role": "tool", "content": '{"temp": 3}', "tool_call_id": "call_1"},
        {"role": "assistant", "content": "3 °C."},
    ]
    for fields in sent:
        await store.append_message(user=user, conversation_id=conversation.id, **fields)
    stored = (await store.list_messages(user=user, conversation_id=conversation.id)).messages
    assert [m.role for m in stored] == ["system", "user", "assistant", "tool", "assistant"]
    assert stored[2].tool_calls == [CALL]
    assert stored[2].content == ""
    assert stored[3].tool_call_id == "call_1"
    assert stored[3].tool_calls is None
    assert stored[4].tool_calls is None


async def _refused(
    store: ConversationStore, raw: RawDB, user: str, match: str, **fields: Any
) -> str:
    """Append ``fields`` to a conversation holding one message; it must fail and write nothing."""
    conversation = await store.create_conversation(user=user)
    await store.append_message(user=user, conversation_id=conversation.id, role="user", content="a")
    before = await snapshot(store, raw, user, conversation.id)
    with pytest.raises(InvalidArgument, match=match) as info:
        await store.append_message(user=user, conversation_id=conversation.id, **fields)
    assert await snapshot(store, raw, user, conversation.id) == before
    text = str(info.value)
    assert text.startswith("invalid_argument: ")
    return text


@pytest.mark.parametrize("role", ["System", "USER", "bot", "function", "developer", "", " user"])
async def test_unknown_roles_are_refused(
    store: ConversationStore, raw: RawDB, user: str, role: str
) -> None:
    text = await _refused(store, raw, user, "role", role=role, content="hi")
    assert "system, user, assistant, tool" in text


@pytest.mark.parametrize("content", ["", " ", "\n\t  \r\n", "\u3000"])
@pytest.mark.parametrize(
    "fields",
    [
        {"role": "user"},
        {"role": "system"},
        {"role": "assistant"},
        {"role": "assistant", "tool_calls": []},
        {"role": "tool", "tool_call_id": "call_1"},
    ],
    ids=["user", "system", "assistant", "assistant-empty-tool-calls", "tool"],
)
async def test_empty_or_blank_content_is_refused(
    store: ConversationStore, raw: RawDB, user: str, content: str, fields: dict[str, Any]
) -> None:
    await _refused(store, raw, user, "content", content=content, **fields)


@pytest.mark.parametrize("content", ["", "   ", "\n"])
async def test_assistant_with_tool_calls_may_have_empty_content(
    store: ConversationStore, user: str, content: str
) -> None:
    conversation = await store.create_conversation(user=user)
    message = await store.append_message(
        user=user,
        conversation_id=conversation.id,
        role="assistant",
        content=content,
        tool_calls=[CALL],
    )
    assert message.content == content
    assert message.tool_calls == [CALL]


async def test_a_tool_message_needs_tool_call_id(
    store: ConversationStore, raw: RawDB, user: str
) -> None:
    await _refused(store, raw, user, "tool_call_id", role="tool", content="42")


@pytest.mark.parametrize("role", ["user", "system", "assistant"])
async def test_only_tool_messages_carry_tool_call_id(
    store: ConversationStore, raw: RawDB, user: str, role: str
) -> None:
    await _refused(store, raw, user, "tool_call_id", role=role, content="x", tool_call_id="c1")


@pytest.mark.parametrize("tool_call_id", ["", "   ", "x" * 201])
async def test_bad_tool_call_ids_are_refused(
    store: ConversationStore, raw: RawDB, user: str, tool_call_id: str
) -> None:
    await _refused(
        store, raw, user, "tool_call_id", role="tool", content="x", tool_call_id=tool_call_id
    )


@pytest.mark.parametrize("role", ["user", "system", "tool"])
async def test_only_assistant_messages_carry_tool_calls(
    store: ConversationStore, raw: RawDB, user: str, role: str
) -> None:
    extra = {"tool_call_id": "call_1"} if role == "tool" else {}
    await _refused(
        store, raw, user, "tool_calls", role=role, content="x", tool_calls=[CALL], **extra
    )


@pytest.mark.parametrize(
    "tool_calls",
    [
        {"id": "a", "name": "b"},
        "call",
        [["id", "name"]],
        ["call_1"],
        [None],
        [{"name": "f"}],
        [{"id": "a"}],
        [{"id": "", "name": "f"}],
        [{"id": "a", "name": ""}],
        [{"id": "  ", "name": "f"}],
        [{"id": 7, "name": "f"}],
        [{"id": "a", "name": None}],
        [{"id": "a", "name": ["f"]}],
        [CALL, {"id": "b"}],
        [{"id": "a", "name": "f", "arguments": float("nan")}],
        [{"id": "a", "name": "f", "arguments": {"x": math.inf}}],
        [{"id": "a", "name": "f", "arguments": {1: "int key"}}],
        [{"id": "a", "name": "f", "arguments": {"x": {1, 2}}}],
        [{"id": "a", "name": "f", "arguments": b"bytes"}],
    ],
)
async def test_malformed_tool_calls_are_refused(
    store: ConversationStore, raw: RawDB, user: str, tool_calls: Any
) -> None:
    await _refused(
        store, raw, user, "tool_calls", role="assistant", content="x", tool_calls=tool_calls
    )


@pytest.mark.pgbouncer
async def test_tool_calls_keep_every_other_key_exactly(store: ConversationStore, user: str) -> None:
    tool_calls: list[dict[str, Any]] = [
        {
            "id": "call_abc",
            "name": "search",
            "type": "function",
            "arguments": '{"q": "naïve café", "n": 3}',
            "function": {"name": "search", "arguments": {"q": "x", "filters": [1, 2.5, None]}},
            "index": 0,
            "flag": False,
            "nothing": None,
            "ключ": "✓ 😀",
            "empty": {},
            "list": [],
        },
        {"name": "second", "id": "call_def"},
    ]
    conversation = await store.create_conversation(user=user)
    message = await store.append_message(
        user=user,
        conversation_id=conversation.id,
        role="assistant",
        content="Looking it up.",
        tool_calls=tool_calls,
    )
    assert message.tool_calls == tool_calls
    stored = (await store.list_messages(user=user, conversation_id=conversation.id)).messages
    assert stored[0].tool_calls == tool_calls
    dumped = stored[0].model_dump(mode="json")["tool_calls"]
    assert dumped == tool_calls
    # Types survive the round trip: a float stays a float, a bool is not turned into 0/1.
    filters = dumped[0]["function"]["arguments"]["filters"]
    assert isinstance(filters[1], float)
    assert dumped[0]["flag"] is False
    assert isinstance(dumped[0]["index"], int)
    assert dumped[0]["index"] is not False


async def test_an_empty_tool_calls_list_means_none(store: ConversationStore, user: str) -> None:
    conversation = await store.create_conversation(user=user)
    message = await store.append_message(
        user=user, conversation_id=conversation.id, role="user", content="hi", tool_calls=[]
    )
    assert message.tool_calls is None


@pytest.mark.parametrize(
    "metadata",
    [
        ["a", "list"],
        "a string",
        7,
        1.5,
        True,
        {1: "int key"},
        {"x": {2: "nested int key"}},
        {"x": float("nan")},
        {"x": -math.inf},
        {"x": {1, 2}},
        {"x": (1, 2)},
        {"x": b"bytes"},
        {"x": datetime.now(UTC)},
    ],
)
async def test_metadata_must_be_a_json_object(
    store: ConversationStore, raw: RawDB, user: str, metadata: Any
) -> None:
    await _refused(store, raw, user, "metadata", role="user", content="x", metadata=metadata)
    with pytest.raises(InvalidArgument, match="metadata"):
        await store.create_conversation(user=user, metadata=metadata)
    assert await raw.conversations_of(user) == 1


async def test_metadata_nested_deeper_than_64_levels_is_refused(
    store: ConversationStore, raw: RawDB, user: str
) -> None:
    deep: dict[str, Any] = {}
    for _ in range(70):
        deep = {"d": deep}
    await _refused(store, raw, user, "metadata", role="user", content="x", metadata=deep)


async def test_message_metadata_is_kept_exactly(store: ConversationStore, user: str) -> None:
    metadata: dict[str, Any] = {
        "model": "gpt-x",
        "usage": {"prompt": 12, "completion": 3.5},
        "tags": ["a", None, True],
        "ünïcødé": "🙂",
    }
    conversation = await store.create_conversation(user=user)
    message = await store.append_message(
        user=user,
        conversation_id=conversation.id,
        role="assistant",
        content="ok",
        metadata=metadata,
    )
    assert message.metadata == metadata
    stored = (await store.list_messages(user=user, conversation_id=conversation.id)).messages
    assert stored[0].metadata == metadata
    default = await store.append_message(
        user=user, conversation_id=conversation.id, role="user", content="no metadata"
    )
    assert default.metadata == {}


async def test_content_is_kept_exactly(store: ConversationStore, user: str) -> None:
    texts = [
        "  leading and trailing whitespace  ",
        "multi\nline\r\nwith\ttabs",
        "emoji 😀👍🏽 and CJK 漢字 and RTL עברית",
        "a valid surrogate pair written out: \U0001f600",
        "quotes ' \" and backslash \\ and SQL '); DROP TABLE messages; --",
        "x" * 5000,
    ]
    conversation = await store.create_conversation(user=user)
    for text in texts:
        await store.append_message(
            user=user, conversation_id=conversation.id, role="user", content=text
        )
    stored = (await store.list_messages(user=user, conversation_id=conversation.id)).messages
    assert [m.content for m in stored] == texts
