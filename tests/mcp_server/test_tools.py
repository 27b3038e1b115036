"""The six tools through an in-process MCP client, on SQLite and PostgreSQL.

Each tool is checked for its result shape and its mapping of arguments onto the store, and for
every error code it can return in-process (``not_found``, ``invalid_argument``, ``conflict``;
``unavailable`` is in ``test_unavailable.py``). Cross-user attempts go through a second server
that shares the store but serves another user: they must look exactly like a random id.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest
from mcp import Client

from mcp_server.server import ChatstoreServer, create_server
from store import ConversationStore, Settings
from tests.mcp_server.helpers import (
    ID_TOOLS,
    args_for,
    fail,
    new_conversation,
    ok,
    random_id,
)
from tests.support import CONVERSATION_KEYS, MESSAGE_KEYS, RFC3339_MICROS


def seqs(page: dict[str, Any]) -> list[int]:
    return [m["seq"] for m in page["messages"]]


# -- create_conversation ----------------------------------------------------------------------


async def test_create_conversation_returns_the_contract_shape(server: ChatstoreServer) -> None:
    metadata = {"project": "ünïcode ✓", "nested": {"list": [1, 2.5, None, True]}}
    async with Client(server) as client:
        result = await client.call_tool(
            "create_conversation", {"title": "Trip planning", "metadata": metadata}
        )
    assert not result.is_error
    conversation = result.structured_content
    assert conversation is not None
    assert set(conversation) == CONVERSATION_KEYS
    assert str(uuid.UUID(conversation["id"])) == conversation["id"]
    assert conversation["title"] == "Trip planning"
    assert conversation["metadata"] == metadata
    assert conversation["message_count"] == 0
    assert conversation["last_seq"] == 0
    assert RFC3339_MICROS.match(conversation["created_at"])
    assert conversation["updated_at"] == conversation["created_at"]
    # The text content carries the same object, for clients that ignore structuredContent.
    text = result.content[0]
    assert text.type == "text"
    assert json.loads(text.text) == conversation


async def test_create_conversation_without_arguments(server: ChatstoreServer) -> None:
    async with Client(server) as client:
        conversation = await ok(client, "create_conversation")
    assert conversation["title"] is None
    assert conversation["metadata"] == {}


async def test_a_user_argument_cannot_change_the_user(
    server: ChatstoreServer, other_server: ChatstoreServer, other_user: str
) -> None:
    async with Client(server) as mine, Client(other_server) as theirs:
        # No tool declares a user; naming one is refused and creates nothing for anyone.
        await fail(mine, "create_conversation", "invalid_argument", user=other_user)
        await fail(mine, "create_conversation", "invalid_argument", user_id=other_user)
        conversation = await ok(mine, "create_conversation")
        await fail(theirs, "get_conversation", "not_found", conversation_id=conversation["id"])
        listed = await ok(theirs, "list_conversations")
        own = await ok(mine, "list_conversations")
    assert listed["conversations"] == []
    assert [c["id"] for c in own["conversations"]] == [conversation["id"]]


async def test_create_conversation_title_at_the_limit(server: ChatstoreServer) -> None:
    async with Client(server) as client:
        conversation = await ok(client, "create_conversation", title="t" * 200)
    assert conversation["title"] == "t" * 200


# -- list_conversations -----------------------------------------------------------------------


async def test_list_conversations_is_most_recently_updated_first_and_pages(
    server: ChatstoreServer,
) -> None:
    async with Client(server) as client:
        first = await new_conversation(client, title="first")
        second = await new_conversation(client, title="second")
        third = await new_conversation(client, title="third")
        await ok(client, "append_message", conversation_id=first, role="user", content="bump")

        everything = await ok(client, "list_conversations")
        assert [c["id"] for c in everything["conversations"]] == [first, third, second]
        assert everything["next_cursor"] is None
        assert all(set(c) == CONVERSATION_KEYS for c in everything["conversations"])

        page1 = await ok(client, "list_conversations", limit=2)
        assert [c["id"] for c in page1["conversations"]] == [first, third]
        assert isinstance(page1["next_cursor"], str)
        page2 = await ok(client, "list_conversations", limit=2, cursor=page1["next_cursor"])
        assert [c["id"] for c in page2["conversations"]] == [second]
        assert page2["next_cursor"] is None


async def test_list_conversations_default_limit_is_20(server: ChatstoreServer) -> None:
    async with Client(server) as client:
        for _ in range(21):
            await ok(client, "create_conversation")
        page = await ok(client, "list_conversations")
        assert len(page["conversations"]) == 20
        assert page["next_cursor"] is not None
        rest = await ok(client, "list_conversations", limit=100, cursor=page["next_cursor"])
        assert len(rest["conversations"]) == 1


async def test_list_conversations_shows_only_the_users_own(
    server: ChatstoreServer, other_server: ChatstoreServer
) -> None:
    async with Client(server) as mine, Client(other_server) as theirs:
        own = await new_conversation(mine, "mine")
        await new_conversation(theirs, "theirs")
        listed = await ok(mine, "list_conversations", limit=100)
    assert [c["id"] for c in listed["conversations"]] == [own]


async def test_a_cursor_from_another_user_is_invalid(
    server: ChatstoreServer, other_server: ChatstoreServer
) -> None:
    async with Client(server) as mine, Client(other_server) as theirs:
        for _ in range(3):
            await new_conversation(mine)
            await new_conversation(theirs)
        page = await ok(mine, "list_conversations", limit=1)
        await fail(theirs, "list_conversations", "invalid_argument", cursor=page["next_cursor"])


# -- get_conversation -------------------------------------------------------------------------


async def test_get_conversation_with_recent_messages(server: ChatstoreServer) -> None:
    async with Client(server) as client:
        cid = await new_conversation(client, "one", "two", "three", "four", "five", title="t")
        bare = await ok(client, "get_conversation", conversation_id=cid)
        recent = await ok(client, "get_conversation", conversation_id=cid, recent_messages=3)
        everything = await ok(client, "get_conversation", conversation_id=cid, recent_messages=200)
    assert set(bare) == CONVERSATION_KEYS | {"messages", "has_more"}
    assert bare["messages"] == [] and bare["has_more"] is True
    assert (bare["id"], bare["title"], bare["message_count"], bare["last_seq"]) == (cid, "t", 5, 5)
    assert [m["content"] for m in recent["messages"]] == ["three", "four", "five"]
    assert seqs(recent) == [3, 4, 5] and recent["has_more"] is True
    assert seqs(everything) == [1, 2, 3, 4, 5] and everything["has_more"] is False
    assert bare["updated_at"] >= everything["messages"][-1]["created_at"]


# -- append_message ---------------------------------------------------------------------------


async def test_append_message_assigns_seq_and_updates_the_conversation(
    server: ChatstoreServer,
) -> None:
    async with Client(server) as client:
        conversation = await ok(client, "create_conversation")
        cid = conversation["id"]
        messages = [
            await ok(
                client,
                "append_message",
                conversation_id=cid,
                role=role,
                content=f"{role} says hi",
                metadata={"n": n},
            )
            for n, role in enumerate(["system", "user", "assistant"])
        ]
        after = await ok(client, "get_conversation", conversation_id=cid)
    for seq, message in enumerate(messages, start=1):
        assert set(message) == MESSAGE_KEYS
        assert message["seq"] == seq
        assert message["conversation_id"] == cid
        assert message["metadata"] == {"n": seq - 1}
        assert message["tool_calls"] is None
        assert message["tool_call_id"] is None
        assert RFC3339_MICROS.match(message["created_at"])
        uuid.UUID(message["id"])
    assert [m["role"] for m in messages] == ["system", "user", "assistant"]
    assert len({m["id"] for m in messages}) == 3
    assert after["message_count"] == 3
    assert after["last_seq"] == 3
    assert after["updated_at"] > conversation["updated_at"]


async def test_tool_calls_and_tool_results_round_trip(server: ChatstoreServer) -> None:
    calls = [
        {
            "id": "call_1",
            "name": "get_weather",
            "type": "function",
            "arguments": '{"city": "Zürich"}',
            "extra": {"nested": [1, {"deep": None}]},
        },
        {"id": "call_2", "name": "noop"},
    ]
    async with Client(server) as client:
        cid = await new_conversation(client, "what's the weather?")
        call = await ok(
            client,
            "append_message",
            conversation_id=cid,
            role="assistant",
            content="",
            tool_calls=calls,
        )
        result = await ok(
            client,
            "append_message",
            conversation_id=cid,
            role="tool",
            content='{"temp": 21}',
            tool_call_id="call_1",
        )
        page = await ok(client, "list_messages", conversation_id=cid)
    assert call["tool_calls"] == calls
    assert call["content"] == ""
    assert result["tool_call_id"] == "call_1"
    assert page["messages"][1:] == [call, result]


async def test_an_empty_tool_calls_list_means_none(server: ChatstoreServer) -> None:
    async with Client(server) as client:
        cid = await new_conversation(client)
        message = await ok(
            client,
            "append_message",
            conversation_id=cid,
            role="assistant",
            content="plain",
            tool_calls=[],
        )
    assert message["tool_calls"] is None


async def test_idempotency_key_replays_and_conflicts(server: ChatstoreServer) -> None:
    async with Client(server) as client:
        cid = await new_conversation(client)
        other = await new_conversation(client)
        args = {"conversation_id": cid, "role": "user", "content": "once", "idempotency_key": "k1"}
        first = await ok(client, "append_message", **args)
        again = await ok(client, "append_message", **args)
        assert again == first
        assert (await ok(client, "get_conversation", conversation_id=cid))["message_count"] == 1

        await fail(client, "append_message", "conflict", **(args | {"content": "twice"}))
        await fail(client, "append_message", "conflict", **(args | {"role": "assistant"}))
        after = await ok(client, "list_messages", conversation_id=cid)
        assert after["messages"] == [first]

        # Keys are per conversation.
        elsewhere = await ok(client, "append_message", **(args | {"conversation_id": other}))
        assert elsewhere["id"] != first["id"]
        assert elsewhere["seq"] == 1


# -- list_messages ----------------------------------------------------------------------------


async def test_list_messages_pages_both_ways(server: ChatstoreServer) -> None:
    async with Client(server) as client:
        cid = await new_conversation(client, *(f"m{n}" for n in range(1, 8)))

        async def page(**arguments: Any) -> tuple[list[int], bool]:
            result = await ok(client, "list_messages", conversation_id=cid, **arguments)
            assert [m["content"] for m in result["messages"]] == [f"m{s}" for s in seqs(result)]
            return seqs(result), result["has_more"]

        assert await page() == ([1, 2, 3, 4, 5, 6, 7], False)
        assert await page(limit=3) == ([5, 6, 7], True)
        assert await page(limit=3, before_seq=5) == ([2, 3, 4], True)
        assert await page(limit=3, before_seq=2) == ([1], False)
        assert await page(limit=3, before_seq=1) == ([], False)
        assert await page(limit=3, after_seq=0) == ([1, 2, 3], True)
        assert await page(limit=3, after_seq=4) == ([5, 6, 7], False)
        assert await page(limit=3, after_seq=7) == ([], False)
        assert await page(limit=1, after_seq=6) == ([7], False)


async def test_list_messages_default_limit_is_50(server: ChatstoreServer) -> None:
    async with Client(server) as client:
        cid = await new_conversation(client, *(f"m{n}" for n in range(1, 56)))
        result = await ok(client, "list_messages", conversation_id=cid)
    assert seqs(result) == list(range(6, 56))
    assert result["has_more"] is True


async def test_list_messages_of_an_empty_conversation(server: ChatstoreServer) -> None:
    async with Client(server) as client:
        cid = await new_conversation(client)
        result = await ok(client, "list_messages", conversation_id=cid)
    assert result == {"messages": [], "has_more": False}


# -- delete_conversation ----------------------------------------------------------------------


async def test_delete_conversation_removes_it_and_its_messages(server: ChatstoreServer) -> None:
    async with Client(server) as client:
        cid = await new_conversation(client, "a", "b", "c")
        keep = await new_conversation(client, "stays")
        deleted = await ok(client, "delete_conversation", conversation_id=cid)
        assert deleted == {"conversation_id": cid, "deleted": True, "messages_deleted": 3}

        for tool in ID_TOOLS:
            await fail(client, tool, "not_found", **args_for(tool, cid))
        listed = await ok(client, "list_conversations")
        assert [c["id"] for c in listed["conversations"]] == [keep]
        kept = await ok(client, "list_messages", conversation_id=keep)
        assert [m["content"] for m in kept["messages"]] == ["stays"]


async def test_delete_of_an_empty_conversation(server: ChatstoreServer) -> None:
    async with Client(server) as client:
        cid = await new_conversation(client)
        deleted = await ok(client, "delete_conversation", conversation_id=cid)
    assert deleted["messages_deleted"] == 0


# -- errors -----------------------------------------------------------------------------------


async def test_unknown_ids_are_not_found_with_one_wording(server: ChatstoreServer) -> None:
    messages = set()
    async with Client(server) as client:
        for tool in ID_TOOLS:
            text = await fail(client, tool, "not_found", **args_for(tool, random_id()))
            messages.add(text.split(": ", 1)[1])
    assert len(messages) == 1, messages


MALFORMED_IDS = ["not-a-uuid", "", "' OR 1=1 --", "00000000-0000-0000-0000-00000000000g", "a\x00b"]


async def test_malformed_ids_are_invalid_arguments(server: ChatstoreServer) -> None:
    async with Client(server) as client:
        for bad_id in MALFORMED_IDS:
            for tool in ID_TOOLS:
                text = await fail(client, tool, "invalid_argument", **args_for(tool, bad_id))
                assert "conversation_id" in text


CID = "<conversation id>"
SECRET = "SECRET-VALUE-7f3a"

#: (tool, arguments, words the message must contain); CID is replaced by a real id.
INVALID: list[tuple[str, dict[str, Any], str]] = [
    ("create_conversation", {"title": "t" * 201}, "title"),
    ("create_conversation", {"title": "nul\x00"}, "title"),
    ("create_conversation", {"title": "lone \ud800"}, "title"),
    ("create_conversation", {"metadata": [1, 2]}, "metadata"),
    ("create_conversation", {"metadata": SECRET}, "metadata"),
    ("create_conversation", {"metadata": {"big": "x" * 17_000}}, "metadata"),
    ("create_conversation", {"metadata": {"k": "nul\x00"}}, "metadata"),
    ("list_conversations", {"limit": 0}, "limit"),
    ("list_conversations", {"limit": 101}, "limit"),
    ("list_conversations", {"limit": "many"}, "limit"),
    ("list_conversations", {"cursor": "garbage"}, "cursor"),
    ("list_conversations", {"cursor": "nul\x00"}, "cursor"),
    ("get_conversation", {}, "conversation_id"),
    ("get_conversation", {"conversation_id": CID, "recent_messages": -1}, "recent_messages"),
    ("get_conversation", {"conversation_id": CID, "recent_messages": 201}, "recent_messages"),
    ("append_message", {"conversation_id": CID, "role": "robot", "content": "x"}, "role"),
    ("append_message", {"conversation_id": CID, "role": "user"}, "content"),
    ("append_message", {"conversation_id": CID, "role": "user", "content": ""}, "content"),
    ("append_message", {"conversation_id": CID, "role": "user", "content": " \n\t"}, "content"),
    (
        "append_message",
        {"conversation_id": CID, "role": "user", "content": SECRET * 10_000},
        "content",
    ),
    ("append_message", {"conversation_id": CID, "role": "user", "content": "a\x00b"}, "content"),
    ("append_message", {"conversation_id": CID, "role": "user", "content": "\udfff"}, "content"),
    ("append_message", {"conversation_id": CID, "role": "tool", "content": "r"}, "tool_call_id"),
    (
        "append_message",
        {"conversation_id": CID, "role": "user", "content": "x", "tool_call_id": "c1"},
        "tool_call_id",
    ),
    (
        "append_message",
        {
            "conversation_id": CID,
            "role": "user",
            "content": "x",
            "tool_calls": [{"id": "c1", "name": "n"}],
        },
        "tool_calls",
    ),
    (
        "append_message",
        {"conversation_id": CID, "role": "assistant", "content": "", "tool_calls": ["call"]},
        "tool_calls",
    ),
    (
        "append_message",
        {
            "conversation_id": CID,
            "role": "assistant",
            "content": "",
            "tool_calls": [{"id": "", "name": "n"}],
        },
        "id",
    ),
    (
        "append_message",
        {
            "conversation_id": CID,
            "role": "assistant",
            "content": "",
            "tool_calls": [{"id": "c1"}],
        },
        "name",
    ),
    (
        "append_message",
        {
            "conversation_id": CID,
            "role": "assistant",
            "content": "",
            "tool_calls": [{"id": "c1", "name": "n", "args": "x" * 70_000}],
        },
        "tool_calls",
    ),
    (
        "append_message",
        {"conversation_id": CID, "role": "user", "content": "x", "metadata": "notjson"},
        "metadata",
    ),
    (
        "append_message",
        {"conversation_id": CID, "role": "user", "content": "x", "idempotency_key": "k" * 201},
        "idempotency_key",
    ),
    ("list_messages", {"conversation_id": CID, "limit": 0}, "limit"),
    ("list_messages", {"conversation_id": CID, "limit": 201}, "limit"),
    ("list_messages", {"conversation_id": CID, "before_seq": 0}, "before_seq"),
    ("list_messages", {"conversation_id": CID, "after_seq": -1}, "after_seq"),
    ("list_messages", {"conversation_id": CID, "before_seq": 3, "after_seq": 1}, "before_seq"),
    ("delete_conversation", {}, "conversation_id"),
]


@pytest.mark.parametrize("tool", sorted({tool for tool, _, _ in INVALID}))
async def test_invalid_arguments(server: ChatstoreServer, tool: str) -> None:
    async with Client(server) as client:
        cid = await new_conversation(client, "before")
        for name, arguments, mentions in INVALID:
            if name != tool:
                continue
            filled = {k: cid if v == CID else v for k, v in arguments.items()}
            text = await fail(client, tool, "invalid_argument", **filled)
            assert mentions in text, (arguments, text)
            assert SECRET not in text, "rejected values are not echoed back"
        # Nothing was written by the failed calls.
        page = await ok(client, "list_messages", conversation_id=cid)
        assert [m["content"] for m in page["messages"]] == ["before"]
        listed = await ok(client, "list_conversations", limit=100)
        assert [c["id"] for c in listed["conversations"]] == [cid]


async def test_limits_follow_the_settings(settings: Settings, user: str) -> None:
    tight = settings.model_copy(update={"max_content_chars": 10, "max_title_chars": 5})
    async with (
        ConversationStore(tight) as store,
        Client(create_server(tight, stdio_user=user, store=store)) as client,
    ):
        schemas = {tool.name: tool.input_schema for tool in (await client.list_tools()).tools}
        assert schemas["append_message"]["properties"]["content"]["maxLength"] == 10
        assert (
            "at most 10 characters"
            in schemas["append_message"]["properties"]["content"]["description"]
        )
        await fail(client, "create_conversation", "invalid_argument", title="x" * 6)
        cid = (await ok(client, "create_conversation", title="x" * 5))["id"]
        await fail(
            client,
            "append_message",
            "invalid_argument",
            conversation_id=cid,
            role="user",
            content="x" * 11,
        )
        await ok(client, "append_message", conversation_id=cid, role="user", content="x" * 10)


# -- cross-user -------------------------------------------------------------------------------


@pytest.mark.parametrize("tool", ID_TOOLS)
async def test_another_users_conversation_looks_like_a_random_id(
    server: ChatstoreServer, other_server: ChatstoreServer, tool: str
) -> None:
    async with Client(server) as owner, Client(other_server) as intruder:
        cid = await new_conversation(owner, "private", title="secret title")
        before = await ok(owner, "get_conversation", conversation_id=cid, recent_messages=10)

        theirs = await fail(intruder, tool, "not_found", **args_for(tool, cid))
        unknown = await fail(intruder, tool, "not_found", **args_for(tool, random_id()))
        assert theirs == unknown
        assert cid not in theirs
        assert "secret" not in theirs

        # ... and nothing of the owner's changed.
        after = await ok(owner, "get_conversation", conversation_id=cid, recent_messages=10)
        assert after == before


async def test_another_users_idempotency_key_is_not_theirs(
    server: ChatstoreServer, other_server: ChatstoreServer
) -> None:
    async with Client(server) as owner, Client(other_server) as intruder:
        cid = await new_conversation(owner)
        args = {"conversation_id": cid, "role": "user", "content": "x", "idempotency_key": "k"}
        await ok(owner, "append_message", **args)
        # A replay by someone else must not return the owner's message.
        await fail(intruder, "append_message", "not_found", **args)


async def test_create_by_one_user_is_invisible_to_the_other(
    server: ChatstoreServer, other_server: ChatstoreServer
) -> None:
    async with Client(server) as mine, Client(other_server) as theirs:
        await new_conversation(mine, "hello")
        listed = await ok(theirs, "list_conversations", limit=100)
    assert listed == {"conversations": [], "next_cursor": None}


# -- a server that opens its own store --------------------------------------------------------


async def test_a_server_without_a_store_opens_its_own(
    settings: Settings, store: ConversationStore, user: str
) -> None:
    server = create_server(settings, stdio_user=user)
    async with Client(server) as client:
        cid = await new_conversation(client, "persisted", title="own store")
    # Written to the configured database, for the configured user.
    conversation = await store.get_conversation(user=user, conversation_id=cid, recent_messages=5)
    assert conversation.title == "own store"
    assert [m.content for m in conversation.messages] == ["persisted"]


def test_a_stdio_server_needs_a_user(settings: Settings) -> None:
    with pytest.raises(ValueError, match="user"):
        create_server(settings)


@pytest.mark.parametrize(
    ("tool", "arguments"),
    [
        ("list_messages", {"befor_seq": 3}),
        ("create_conversation", {"user": "someone-else"}),
        ("list_conversations", {"user_id": "someone-else"}),
    ],
)
async def test_unknown_arguments_are_refused(
    server: ChatstoreServer, tool: str, arguments: dict[str, object]
) -> None:
    async with Client(server) as client:
        cid = await new_conversation(client, "one")
        if tool == "list_messages":
            arguments = {"conversation_id": cid, **arguments}
        before = await ok(client, "list_conversations", limit=100)
        await fail(client, tool, "invalid_argument", **arguments)
        after = await ok(client, "list_conversations", limit=100)
    assert after == before


@pytest.mark.parametrize("limit", [True, 2.5, "twenty", [20]])
async def test_limits_must_be_json_integers(server: ChatstoreServer, limit: object) -> None:
    async with Client(server) as client:
        await fail(client, "list_conversations", "invalid_argument", limit=limit)
