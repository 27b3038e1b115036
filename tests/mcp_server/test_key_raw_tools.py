"""Conversation keys and raw messages through MCP: in-process on both backends and over real
stdio, for an owner and an intruder who uses the same key; and the quotas' limit_exceeded."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from mcp import Client

from mcp_server.server import ChatstoreServer, create_server
from store import ConversationStore, Settings
from tests.mcp_server.helpers import fail, ok, stdio_owner_and_intruder

ITEM: dict[str, Any] = {
    "type": "function_call",
    "call_id": "call_1",
    "name": "weather",
    "arguments": '{"city": "Lyon"}',
    "numbers": [1e23, -0.0, 1.5],
}


async def scenario(owner: Client, intruder: Client) -> None:
    made = await ok(owner, "create_conversation", title="Session", key="session-1")
    assert made["key"] == "session-1"
    again = await ok(owner, "create_conversation", title="Other title", key="session-1")
    assert again == made
    theirs = await ok(intruder, "create_conversation", key="session-1")
    assert theirs["id"] != made["id"]

    stored = await ok(
        owner,
        "append_message",
        conversation_id=made["id"],
        role="assistant",
        tool_calls=[{"id": "call_1", "name": "weather", "arguments": ITEM["arguments"]}],
        raw=ITEM,
    )
    assert stored["raw"] == ITEM
    page = await ok(owner, "list_messages", conversation_id=made["id"])
    assert page["messages"][0]["raw"] == ITEM
    plain = await ok(owner, "append_message", conversation_id=made["id"], role="user", content="hi")
    assert plain["raw"] is None

    await fail(owner, "create_conversation", "invalid_argument", key="")
    await fail(owner, "create_conversation", "invalid_argument", key="k" * 201)
    await fail(owner, "create_conversation", "invalid_argument", key="a\x00b")
    for bad in (["not", "an", "object"], "text", {"a": "nul\x00"}, {"big": "x" * 262_144}):
        await fail(
            owner,
            "append_message",
            "invalid_argument",
            conversation_id=made["id"],
            role="user",
            content="hi",
            raw=bad,
        )
    assert (await ok(owner, "get_conversation", conversation_id=made["id"]))["last_seq"] == 2
    assert (await ok(intruder, "list_messages", conversation_id=theirs["id"]))["messages"] == []


async def test_in_process(server: ChatstoreServer, other_server: ChatstoreServer) -> None:
    async with Client(server) as owner, Client(other_server) as intruder:
        await scenario(owner, intruder)


@pytest.mark.slow
async def test_over_stdio(tmp_path: Path) -> None:
    async with stdio_owner_and_intruder(tmp_path) as (owner, intruder):
        await scenario(owner, intruder)


async def test_quotas_are_limit_exceeded(settings: Settings, user: str) -> None:
    limited = settings.model_copy(
        update={"max_conversations_per_user": 1, "max_messages_per_conversation": 1}
    )
    async with ConversationStore(limited) as store:
        async with Client(create_server(limited, stdio_user=user, store=store)) as client:
            cid = (await ok(client, "create_conversation"))["id"]
            text = await fail(client, "create_conversation", "limit_exceeded")
            assert "CHATSTORE_MAX_CONVERSATIONS_PER_USER" in text
            await ok(client, "append_message", conversation_id=cid, role="user", content="a")
            text = await fail(
                client,
                "append_message",
                "limit_exceeded",
                conversation_id=cid,
                role="user",
                content="b",
            )
            assert "CHATSTORE_MAX_MESSAGES_PER_CONVERSATION" in text
            await fail(client, "fork_conversation", "limit_exceeded", conversation_id=cid, at_seq=1)
