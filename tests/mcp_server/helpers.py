"""Helpers for the MCP-layer tests: calling tools, reading their errors, the tool snapshot.

Tool failures are ``isError`` results whose text is ``Error executing tool NAME: CODE: message``;
resource and prompt failures are ``MCPError``s whose message is ``CODE: message``.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Awaitable, Iterable, Mapping, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from mcp import Client, MCPError
from mcp.client.stdio import stdio_client
from mcp_types import CallToolResult, Tool

from tests.leaks import clean
from tests.support import error_text, server_env, stdio_params, structured

#: Every tool, by name, sorted.
TOOL_NAMES = [
    "append_message",
    "create_conversation",
    "delete_conversation",
    "fork_conversation",
    "get_context",
    "get_conversation",
    "list_conversations",
    "list_messages",
    "search_messages",
    "update_conversation",
]

#: The tools that require a ``conversation_id`` (search_messages takes one only as a filter).
ID_TOOLS = (
    "get_conversation",
    "append_message",
    "list_messages",
    "delete_conversation",
    "get_context",
    "update_conversation",
    "fork_conversation",
)
READ_TOOLS = (
    "list_conversations",
    "get_conversation",
    "list_messages",
    "get_context",
    "search_messages",
)

RESOURCE_PREFIX = "chatstore://conversations/"

SNAPSHOT_DIR = Path(__file__).parent / "snapshots"
TOOLS_SNAPSHOT = SNAPSHOT_DIR / "tools.json"


@asynccontextmanager
async def stdio_owner_and_intruder(folder: Path) -> AsyncIterator[tuple[Client, Client]]:
    """Two server processes over real stdio on one embedded SQLite file (under ``folder``),
    each acting for a user of its own; their stderr goes to ``folder/<name>.log``."""
    async with AsyncExitStack() as stack:
        clients = []
        for name in ("owner", "intruder"):
            env = server_env(None, folder / "data", CHATSTORE_USER=f"{name}-{uuid.uuid4().hex[:8]}")
            errlog = stack.enter_context((folder / f"{name}.log").open("w"))
            client = Client(stdio_client(stdio_params(env), errlog=errlog))
            clients.append(await stack.enter_async_context(client))
        yield clients[0], clients[1]


def random_id() -> str:
    return str(uuid.uuid4())


def args_for(tool: str, conversation_id: str) -> dict[str, Any]:
    """Minimal valid arguments for one of the ``ID_TOOLS``."""
    if tool == "append_message":
        return {"conversation_id": conversation_id, "role": "user", "content": "hello"}
    if tool == "get_context":
        return {"conversation_id": conversation_id, "max_tokens": 1000}
    if tool == "update_conversation":
        return {"conversation_id": conversation_id, "title": "renamed"}
    if tool == "fork_conversation":
        return {"conversation_id": conversation_id, "at_seq": 0}
    return {"conversation_id": conversation_id}


async def ok(client: Client, tool: str, **arguments: Any) -> dict[str, Any]:
    """Call a tool that must succeed; its structured result."""
    return structured(await client.call_tool(tool, arguments))


def tool_failure(tool: str, result: CallToolResult, code: str, foreign: Iterable[str] = ()) -> str:
    """The whole error text of a call to ``tool`` that must have failed with ``code``.

    The text is checked (and recorded) by ``tests.leaks.clean``: nothing internal, and none of
    ``foreign`` (another user's ids, names or titles).
    """
    text = error_text(result)
    prefix = f"Error executing tool {tool}: {code}: "
    assert text.startswith(prefix), text
    assert text[len(prefix) :].strip(), "the message after the code says what was wrong"
    assert result.structured_content is None
    return clean(text, foreign=foreign)


async def fail(client: Client, tool: str, code: str, **arguments: Any) -> str:
    """Call a tool that must fail with ``code``; the whole error text."""
    return tool_failure(tool, await client.call_tool(tool, arguments), code)


async def protocol_failure(
    call: Awaitable[object], code: str, foreign: Iterable[str] = ()
) -> MCPError:
    """Await a resource read or prompt get that must fail with ``code``."""
    with pytest.raises(MCPError) as info:
        await call
    message = info.value.error.message
    assert message.startswith(f"{code}: "), message
    clean(message, foreign=foreign)
    return info.value


async def assert_everything_unavailable(
    client: Client, conversation_id: str, foreign: Iterable[str] = ()
) -> None:
    """Every tool, the resource list and read, and the prompt fail with ``unavailable``."""
    calls: list[tuple[str, dict[str, Any]]] = [
        ("create_conversation", {"title": "t"}),
        ("list_conversations", {}),
    ]
    calls += [(tool, args_for(tool, conversation_id)) for tool in ID_TOOLS]
    for tool, arguments in calls:
        tool_failure(tool, await client.call_tool(tool, arguments), "unavailable", foreign)
    await protocol_failure(client.list_resources(), "unavailable", foreign)
    await protocol_failure(
        client.read_resource(f"{RESOURCE_PREFIX}{conversation_id}"), "unavailable", foreign
    )
    await protocol_failure(
        client.get_prompt("resume_conversation", {"conversation_id": conversation_id}),
        "unavailable",
        foreign,
    )


async def new_conversation(client: Client, *messages: str, title: str | None = None) -> str:
    """Create a conversation holding ``messages`` as user turns; its id."""
    arguments: dict[str, Any] = {} if title is None else {"title": title}
    conversation = await ok(client, "create_conversation", **arguments)
    for content in messages:
        await ok(
            client,
            "append_message",
            conversation_id=conversation["id"],
            role="user",
            content=content,
        )
    return str(conversation["id"])


def tool_listing(tools: Sequence[Tool]) -> list[dict[str, Any]]:
    """The contract-relevant part of ``tools/list`` as MCP clients see it on the wire."""
    keep = ("name", "title", "description", "inputSchema", "outputSchema", "annotations")
    listing = []
    for tool in sorted(tools, key=lambda t: t.name):
        wire = tool.model_dump(mode="json", by_alias=True, exclude_none=True)
        listing.append({key: wire[key] for key in keep if key in wire})
    return listing


def listing_json(listing: list[dict[str, Any]]) -> str:
    return json.dumps(listing, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


@dataclass(frozen=True)
class Finished:
    returncode: int
    stdout: str
    stderr: str


async def run_command(
    args: Sequence[str],
    *,
    env: Mapping[str, str],
    cwd: Path | None = None,
    seconds: float = 60,
) -> Finished:
    """Run a command to completion without blocking the event loop (stdin is empty)."""
    process = await asyncio.create_subprocess_exec(
        *args,
        env=dict(env),
        cwd=cwd,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(process.communicate(), seconds)
    except TimeoutError:
        process.kill()
        await process.wait()
        raise
    assert process.returncode is not None
    return Finished(process.returncode, out.decode(errors="replace"), err.decode(errors="replace"))


async def run_main(args: Sequence[str], env: Mapping[str, str]) -> tuple[int, str]:
    """``chatstore ARGS`` run in this process (the command's own ``main``, in a thread of its
    own, with ``env`` as its environment): its exit status and stdout. A subprocess costs ~2 s
    of interpreter start-up a call; tests that run a command many times use this, and
    ``run_command`` where the process itself matters (exit codes, stderr, the entry point)."""
    import contextlib
    import io
    import os

    from mcp_server.cli import main

    def run() -> tuple[int, str]:
        out = io.StringIO()
        saved = dict(os.environ)
        os.environ.clear()
        os.environ.update(env)
        try:
            with contextlib.redirect_stdout(out):
                try:
                    code = main(list(args))
                except SystemExit as exc:
                    code = int(exc.code or 0)
        finally:
            os.environ.clear()
            os.environ.update(saved)
        return code, out.getvalue()

    return await asyncio.to_thread(run)
