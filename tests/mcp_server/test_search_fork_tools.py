"""search_messages and fork_conversation through MCP, for an owner and an intruder: in-process
on both backends, over real stdio (two server processes on one embedded SQLite file) and over
HTTP (PostgreSQL, two users' tokens)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from mcp import Client

from mcp_server.server import ChatstoreServer
from tests.conftest import fresh_user
from tests.mcp_server.helpers import fail, ok, stdio_owner_and_intruder
from tests.support import HttpServer, http_client, http_server, mint_token, server_env

TURNS: list[dict[str, Any]] = [
    {"role": "user", "content": "Which trains go to Lyon on Friday?"},
    {
        "role": "assistant",
        "tool_calls": [{"id": "c1", "name": "timetable", "arguments": '{"to": "Marseille"}'}],
    },
    {"role": "tool", "tool_call_id": "c1", "content": "9:04 and 10:04"},
    {"role": "assistant", "content": "Take the 9:04 train to Lyon."},
    {"role": "user", "content": "Book the 10:04 instead."},
]


def found(page: dict[str, Any]) -> list[tuple[str, int]]:
    return sorted(
        (hit["message"]["conversation_id"], hit["message"]["seq"]) for hit in page["results"]
    )


async def scenario(owner: Client, intruder: Client) -> None:
    cid = (await ok(owner, "create_conversation", title="Trip"))["id"]
    for turn in TURNS:
        await ok(owner, "append_message", conversation_id=cid, **turn)

    [hit] = (await ok(owner, "search_messages", query="marseille"))["results"]
    assert (hit["message"]["seq"], hit["conversation_title"]) == (2, "Trip")
    assert hit["rank"] > 0 and "**" in hit["snippet"]
    assert found(await ok(owner, "search_messages", query="train")) == [(cid, 1), (cid, 4)]
    assert found(await ok(owner, "search_messages", query='"train to lyon"')) == [(cid, 4)]
    assert found(await ok(owner, "search_messages", query="friday or book")) == [(cid, 1), (cid, 5)]
    assert found(await ok(owner, "search_messages", query="lyon -friday")) == [(cid, 4)]
    assert found(await ok(owner, "search_messages", query="lyon", role="user")) == [(cid, 1)]
    weird = await ok(owner, "search_messages", query='"unclosed NEAR(* content: lyon OR')
    assert weird["next_cursor"] is None

    first = await ok(owner, "search_messages", query="lyon", limit=1)
    assert first["next_cursor"] is not None
    rest = await ok(owner, "search_messages", query="lyon", limit=1, cursor=first["next_cursor"])
    assert sorted(found(first) + found(rest)) == [(cid, 1), (cid, 4)]
    assert rest["next_cursor"] is None

    # Edit message 5 and regenerate: fork at 4, append the edited message.
    fork = await ok(owner, "fork_conversation", conversation_id=cid, at_seq=4, title="Edited")
    assert fork["forked_from"] == {"conversation_id": cid, "seq": 4}
    assert (fork["title"], fork["message_count"], fork["last_seq"]) == ("Edited", 4, 4)
    edited = await ok(
        owner, "append_message", conversation_id=fork["id"], role="user", content="Book the 9:04."
    )
    assert edited["seq"] == 5
    parent = await ok(owner, "get_conversation", conversation_id=cid, recent_messages=1)
    assert parent["messages"][0]["content"] == "Book the 10:04 instead."
    copies = await ok(owner, "search_messages", query="lyon")
    assert found(copies) == sorted([(cid, 1), (cid, 4), (fork["id"], 1), (fork["id"], 4)])

    await fail(owner, "search_messages", "invalid_argument", query="")
    await fail(owner, "search_messages", "invalid_argument", query="a\x00b")
    await fail(owner, "search_messages", "invalid_argument", query="x" * 501)
    await fail(owner, "search_messages", "invalid_argument", query="lyon", limit=0)
    await fail(owner, "search_messages", "invalid_argument", query="lyon", role="robot")
    text = await fail(owner, "fork_conversation", "invalid_argument", conversation_id=cid, at_seq=6)
    assert "0 … last_seq (5)" in text
    await fail(owner, "fork_conversation", "invalid_argument", conversation_id=cid, at_seq=-1)

    # The intruder finds nothing of the owner's, and learns nothing from trying.
    assert (await ok(intruder, "search_messages", query="lyon"))["results"] == []
    await fail(intruder, "search_messages", "not_found", query="lyon", conversation_id=cid)
    await fail(
        intruder, "search_messages", "invalid_argument", query="lyon", cursor=first["next_cursor"]
    )
    theirs = await fail(intruder, "fork_conversation", "not_found", conversation_id=cid, at_seq=1)
    assert cid not in theirs
    assert len((await ok(owner, "list_conversations"))["conversations"]) == 2


async def test_in_process(server: ChatstoreServer, other_server: ChatstoreServer) -> None:
    async with Client(server) as owner, Client(other_server) as intruder:
        await scenario(owner, intruder)


@pytest.mark.slow
async def test_over_stdio(tmp_path: Path) -> None:
    async with stdio_owner_and_intruder(tmp_path) as (owner, intruder):
        await scenario(owner, intruder)


@pytest.fixture(scope="module")
def search_http(
    postgres_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[HttpServer]:
    env = server_env(postgres_url, tmp_path_factory.mktemp("search-data"))
    with http_server(env, tmp_path_factory.mktemp("search-logs")) as running:
        yield running


@pytest.mark.slow
async def test_over_http(search_http: HttpServer) -> None:
    async with (
        http_client(search_http.url, mint_token(fresh_user())) as owner,
        http_client(search_http.url, mint_token(fresh_user())) as intruder,
    ):
        await scenario(owner, intruder)
