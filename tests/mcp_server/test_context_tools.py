"""get_context, update_conversation, token counts and OpenAI-shaped tool calls through MCP:
in-process on both backends, and over real stdio (embedded SQLite) and HTTP (PostgreSQL)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from mcp import Client
from mcp.client.stdio import stdio_client
from mcp_types import TextContent

from mcp_server.server import ChatstoreServer
from tests.conftest import fresh_user
from tests.mcp_server.helpers import fail, ok
from tests.support import HttpServer, http_client, http_server, mint_token, server_env, stdio_params

OPENAI_CALL = {
    "id": "call_1",
    "type": "function",
    "function": {"name": "find_trains", "arguments": '{"to": "Lyon"}'},
}


async def scenario(client: Client) -> None:
    cid = (await ok(client, "create_conversation", title="Lyon"))["id"]
    turns: list[dict[str, Any]] = [
        {"role": "system", "content": "Answer briefly."},
        {"role": "user", "content": "Find me a train to Lyon."},
        {"role": "assistant", "tool_calls": [OPENAI_CALL]},  # content left out
        {"role": "tool", "tool_call_id": "call_1", "content": "9:04, 10:04"},
        {"role": "assistant", "content": "The 9:04.", "token_count": 3},
        {"role": "user", "content": "Thanks!"},
    ]
    stored = [await ok(client, "append_message", conversation_id=cid, **t) for t in turns]
    assert stored[2]["content"] == "" and stored[2]["tool_calls"] == [OPENAI_CALL]
    assert stored[4]["token_count"] == 3
    assert all(m["token_count"] > 0 for m in stored)

    whole = await ok(client, "get_context", conversation_id=cid, max_tokens=10_000)
    assert [m["seq"] for m in whole["messages"]] == [1, 2, 3, 4, 5, 6]
    assert whole["token_count"] == sum(m["token_count"] for m in stored)
    assert (whole["truncated"], whole["summary"], whole["summary_up_to_seq"]) == (False, None, None)

    # A budget that cannot hold the tool group: the last turn, and the instructions.
    last_two = stored[0]["token_count"] + stored[5]["token_count"]
    tight = await ok(client, "get_context", conversation_id=cid, max_tokens=last_two)
    assert [m["seq"] for m in tight["messages"]] == [1, 6]
    assert tight["truncated"] is True
    bare = await ok(
        client, "get_context", conversation_id=cid, max_tokens=last_two, keep_system=False
    )
    assert [m["seq"] for m in bare["messages"]] == [6]

    summed = await ok(
        client,
        "update_conversation",
        conversation_id=cid,
        summary="The user wants a train to Lyon.",
        summary_up_to_seq=2,
    )
    assert (summed["summary_up_to_seq"], summed["title"]) == (2, "Lyon")
    assert summed["updated_at"] == stored[-1]["created_at"]
    with_summary = await ok(client, "get_context", conversation_id=cid, max_tokens=10_000)
    assert with_summary["summary"] == "The user wants a train to Lyon."
    # The messages after the summary, and the system message it covers (instructions).
    assert [m["seq"] for m in with_summary["messages"]] == [1, 3, 4, 5, 6]

    # Leaving an argument out changes nothing; null removes the summary.
    renamed = await ok(client, "update_conversation", conversation_id=cid, title="To Lyon")
    assert (renamed["title"], renamed["summary_up_to_seq"]) == ("To Lyon", 2)
    cleared = await ok(client, "update_conversation", conversation_id=cid, summary=None)
    assert (cleared["title"], cleared["summary"], cleared["summary_up_to_seq"]) == (
        "To Lyon",
        None,
        None,
    )

    for arguments in (
        {"max_tokens": 0},
        {"max_tokens": 2_000_001},
        {"max_tokens": "100"},
        {"max_tokens": 10, "keep_system": "yes"},
    ):
        await fail(client, "get_context", "invalid_argument", conversation_id=cid, **arguments)
    await fail(client, "update_conversation", "invalid_argument", conversation_id=cid, summary="s")
    await fail(
        client,
        "update_conversation",
        "invalid_argument",
        conversation_id=cid,
        summary="s",
        summary_up_to_seq=3,  # the message after it is the tool result
    )
    await fail(
        client,
        "append_message",
        "invalid_argument",
        conversation_id=cid,
        role="assistant",
        tool_calls=[{"id": "x", "type": "function", "function": {"arguments": "{}"}}],
    )
    await fail(client, "append_message", "invalid_argument", conversation_id=cid, role="user")

    # The prompt: the summary first, then what get_context gives.
    await ok(
        client,
        "update_conversation",
        conversation_id=cid,
        summary="Asked for a train.",
        summary_up_to_seq=2,
    )
    prompt = await client.get_prompt("resume_conversation", {"conversation_id": cid})
    first = prompt.messages[0].content
    assert isinstance(first, TextContent) and "Asked for a train." in first.text
    assert [m.role for m in prompt.messages] == [
        "user",
        "assistant",
        "assistant",
        "assistant",
        "user",
    ]


async def test_in_process(server: ChatstoreServer) -> None:
    async with Client(server) as client:
        await scenario(client)


@pytest.mark.slow
async def test_over_stdio(tmp_path: Path) -> None:
    env = server_env(None, tmp_path / "data", CHATSTORE_USER=fresh_user())
    with (tmp_path / "stderr.log").open("w") as errlog:
        async with Client(stdio_client(stdio_params(env), errlog=errlog)) as client:
            await scenario(client)


@pytest.fixture(scope="module")
def context_http(
    postgres_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[HttpServer]:
    env = server_env(postgres_url, tmp_path_factory.mktemp("context-data"))
    with http_server(env, tmp_path_factory.mktemp("context-logs")) as running:
        yield running


@pytest.mark.slow
async def test_over_http(context_http: HttpServer) -> None:
    async with http_client(context_http.url, mint_token(fresh_user())) as client:
        await scenario(client)
