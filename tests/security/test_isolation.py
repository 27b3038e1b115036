"""Isolation matrix: user B addressing user A's data, through every tool, resource and prompt.

For every way of naming a conversation (six tools with their argument variants, the
``chatstore://conversations/{id}`` resource, the ``resume_conversation`` prompt), B asking for
A's conversation must get exactly what B gets for an id that does not exist: the same code and
the same words. ``list_conversations`` and ``resources/list`` never show A's rows, A's cursor
does not work for B, a cursor B forges at A's position pages only B's rows, and nothing B does
changes A's data. Run in-process on both backends and over HTTP with two users' tokens.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from mcp import Client
from mcp.shared.exceptions import MCPError
from mcp_types import CallToolResult

from mcp_server.server import create_server
from store import ConversationStore, Settings
from store._cursor import encode_cursor
from tests.leaks import clean
from tests.rawdb import RawDB
from tests.security.conftest import STDIO_FALLBACK_USER
from tests.support import HttpServer, error_code, error_text, http_client, mint_token


@dataclass
class Victim:
    """What A owns; none of it may appear in anything B receives."""

    user: str
    conversation: str
    other_conversation: str
    title: str
    contents: list[str]
    key: str
    cursor: str

    def secrets(self) -> list[str]:
        return [
            self.user,
            self.conversation,
            self.other_conversation,
            self.title,
            self.key,
            *self.contents,
        ]


@dataclass
class Tally:
    probes: int = 0
    texts: list[str] = field(default_factory=list)


def _data(result: CallToolResult) -> dict[str, Any]:
    assert not result.is_error, error_text(result)
    assert result.structured_content is not None
    return dict(result.structured_content)


async def _setup_victim(alice: Client, user: str) -> Victim:
    token = uuid.uuid4().hex[:8]
    title = f"alice secret plans {token}"
    created = _data(
        await alice.call_tool(
            "create_conversation", {"title": title, "metadata": {"secret": token}}
        )
    )
    cid = str(created["id"])
    contents = [f"alice private message {token} {n}" for n in range(3)]
    for n, content in enumerate(contents):
        _data(
            await alice.call_tool(
                "append_message",
                {
                    "conversation_id": cid,
                    "role": "user",
                    "content": content,
                    "idempotency_key": f"alice-key-{token}" if n == 0 else None,
                },
            )
        )
    other = _data(await alice.call_tool("create_conversation", {"title": f"{title} 2"}))
    page = _data(await alice.call_tool("list_conversations", {"limit": 1}))
    assert page["next_cursor"], "alice needs a second page for the cursor probes"
    return Victim(
        user=user,
        conversation=cid,
        other_conversation=str(other["id"]),
        title=title,
        contents=contents,
        key=f"alice-key-{token}",
        cursor=str(page["next_cursor"]),
    )


ToolProbe = tuple[str, Callable[[str, Victim], dict[str, Any]]]

TOOL_PROBES: list[ToolProbe] = [
    ("get_conversation", lambda cid, v: {"conversation_id": cid}),
    ("get_conversation", lambda cid, v: {"conversation_id": cid, "recent_messages": 200}),
    ("list_messages", lambda cid, v: {"conversation_id": cid}),
    ("list_messages", lambda cid, v: {"conversation_id": cid, "before_seq": 3}),
    ("list_messages", lambda cid, v: {"conversation_id": cid, "after_seq": 0, "limit": 1}),
    ("append_message", lambda cid, v: {"conversation_id": cid, "role": "user", "content": "hi"}),
    (
        "append_message",
        # A's own key and content: must not replay A's message to B.
        lambda cid, v: {
            "conversation_id": cid,
            "role": "user",
            "content": v.contents[0],
            "idempotency_key": v.key,
        },
    ),
    (
        "append_message",
        lambda cid, v: {
            "conversation_id": cid,
            "role": "tool",
            "content": "result",
            "tool_call_id": "call-1",
        },
    ),
    (
        "append_message",
        lambda cid, v: {
            "conversation_id": cid,
            "role": "assistant",
            "content": "",
            "tool_calls": [{"id": "c1", "name": "search"}],
        },
    ),
    ("delete_conversation", lambda cid, v: {"conversation_id": cid}),
]


async def _same_as_missing(
    bob: Client, name: str, args: Callable[[str, Victim], dict[str, Any]], victim: Victim
) -> str:
    missing = str(uuid.uuid4())
    foreign = await bob.call_tool(name, args(victim.conversation, victim))
    absent = await bob.call_tool(name, args(missing, victim))
    assert error_code(foreign) == "not_found", error_text(foreign)
    assert error_code(absent) == "not_found", error_text(absent)
    assert error_text(foreign) == error_text(absent)
    return clean(error_text(foreign), foreign=[*victim.secrets(), missing])


async def _protocol_error(call: Callable[[], Awaitable[Any]]) -> tuple[int, str]:
    try:
        await call()
    except MCPError as exc:
        return exc.code, exc.message
    raise AssertionError("the call succeeded")


async def isolation_matrix(alice: Client, bob: Client, alice_user: str, bob_user: str) -> Tally:
    """Run every probe of B against A's data; returns how many were made."""
    tally = Tally()
    victim = await _setup_victim(alice, alice_user)
    own = _data(await bob.call_tool("create_conversation", {"title": "bob's own"}))
    bob_ids = {str(own["id"])}
    before = _data(
        await alice.call_tool(
            "get_conversation", {"conversation_id": victim.conversation, "recent_messages": 10}
        )
    )

    # Tools: A's id behaves exactly like an id that does not exist.
    for name, args in TOOL_PROBES:
        tally.texts.append(await _same_as_missing(bob, name, args, victim))
        tally.probes += 1

    # The transcript resource and the resume prompt: the same protocol error as a missing id.
    missing = str(uuid.uuid4())
    for make in (
        lambda cid: lambda: bob.read_resource(f"chatstore://conversations/{cid}"),
        lambda cid: lambda: bob.get_prompt("resume_conversation", {"conversation_id": cid}),
    ):
        foreign_error = await _protocol_error(make(victim.conversation))
        absent_error = await _protocol_error(make(missing))
        assert foreign_error == absent_error
        assert foreign_error[1].startswith("not_found"), foreign_error
        tally.texts.append(clean(foreign_error[1], foreign=[*victim.secrets(), missing]))
        tally.probes += 1

    # Listings never show A's rows.
    listed = await bob.list_resources(cache_mode="bypass")
    uris = [str(r.uri) for r in listed.resources]
    assert all(victim.conversation not in u and victim.other_conversation not in u for u in uris)
    assert {u.rsplit("/", 1)[1] for u in uris} <= bob_ids | {
        str(c["id"]) for c in _data(await bob.call_tool("list_conversations", {}))["conversations"]
    }
    tally.probes += 1
    seen: list[str] = []
    cursor: str | None = None
    while True:
        arguments: dict[str, Any] = {"limit": 1}
        if cursor:
            arguments["cursor"] = cursor
        page = _data(await bob.call_tool("list_conversations", arguments))
        seen += [str(c["id"]) for c in page["conversations"]]
        for c in page["conversations"]:
            assert c["title"] != victim.title
        cursor = page["next_cursor"]
        if cursor is None:
            break
        assert len(seen) < 100
    assert victim.conversation not in seen and victim.other_conversation not in seen
    assert bob_ids <= set(seen)
    tally.probes += 1

    # A's cursor does not page for B; B's forged cursor at A's position pages only B's rows.
    stolen = await bob.call_tool("list_conversations", {"cursor": victim.cursor, "limit": 5})
    assert error_code(stolen) == "invalid_argument"
    tally.texts.append(clean(error_text(stolen), foreign=victim.secrets()))
    updated_at = datetime.fromisoformat(str(before["updated_at"]).replace("Z", "+00:00"))
    forged = encode_cursor(bob_user, (updated_at, uuid.UUID(victim.conversation)))
    page = _data(await bob.call_tool("list_conversations", {"cursor": forged, "limit": 100}))
    assert {str(c["id"]) for c in page["conversations"]} <= set(seen)
    tally.probes += 2

    # An extra `user` argument changes nothing about who B is.
    smuggled = await bob.call_tool("create_conversation", {"title": "smuggled", "user": alice_user})
    if not smuggled.is_error:
        bob_ids.add(str(_data(smuggled)["id"]))
        mine = _data(await bob.call_tool("list_conversations", {"limit": 100}))
        assert str(_data(smuggled)["id"]) in {str(c["id"]) for c in mine["conversations"]}
    alice_list = _data(await alice.call_tool("list_conversations", {"limit": 100}))
    assert {str(c["id"]) for c in alice_list["conversations"]} == {
        victim.conversation,
        victim.other_conversation,
    }
    tally.probes += 1

    # Nothing B did changed A's conversation.
    after = _data(
        await alice.call_tool(
            "get_conversation", {"conversation_id": victim.conversation, "recent_messages": 10}
        )
    )
    assert after == before
    return tally


async def test_isolation_in_process(settings: Settings, backend: str) -> None:
    alice_user = f"alice-{uuid.uuid4().hex[:8]}"
    bob_user = f"bob-{uuid.uuid4().hex[:8]}"
    async with ConversationStore(settings) as store:
        alice_server = create_server(settings, stdio_user=alice_user, store=store)
        bob_server = create_server(settings, stdio_user=bob_user, store=store)
        async with Client(alice_server) as alice, Client(bob_server) as bob:
            tally = await isolation_matrix(alice, bob, alice_user, bob_user)
    db = await RawDB.connect(settings)
    try:
        assert await db.rows_of(alice_user) == (2, 3)
        assert await db.violations([alice_user, bob_user]) == []
    finally:
        await db.close()
    print(f"[{backend}] isolation in-process: {tally.probes} probes")


async def test_isolation_over_http(hs_server: HttpServer, postgres_url: str) -> None:
    alice_user = f"alice-{uuid.uuid4().hex[:8]}"
    bob_user = f"bob-{uuid.uuid4().hex[:8]}"
    async with (
        http_client(hs_server.url, mint_token(alice_user)) as alice,
        http_client(hs_server.url, mint_token(bob_user)) as bob,
    ):
        tally = await isolation_matrix(alice, bob, alice_user, bob_user)
    db = await RawDB.connect(Settings(database_url=postgres_url))
    try:
        assert await db.rows_of(alice_user) == (2, 3)
        # HTTP never falls back to the stdio user configured in the server's environment.
        assert await db.rows_of(STDIO_FALLBACK_USER) == (0, 0)
        assert await db.violations([alice_user, bob_user]) == []
    finally:
        await db.close()
    print(f"[postgres] isolation over HTTP: {tally.probes} probes")
