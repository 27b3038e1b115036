"""The places ``mcp_server/_sdk.py`` reaches past the MCP SDK's public surface, or relies on
what the SDK does with input it cannot read.

Each test fails naming that module when an SDK upgrade changes what the hook relies on; the
stdio and in-process suites (and ``tests/security/test_protocol_errors.py`` over both
transports) then show what broke end to end.
"""

from __future__ import annotations

import inspect
import json
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import anyio
from mcp import Client
from mcp.server.mcpserver import MCPServer
from mcp.server.stdio import stdio_server
from mcp.shared.message import SessionMessage
from mcp_types import JSONRPCError, JSONRPCResponse
from pydantic import ValidationError

from mcp_server._sdk import build_tools, run_on_streams, tool_result
from mcp_server.server import create_server
from store import Message, MessagePage, Settings
from store.contract import DEFAULT_LIMITS
from tests.mcp_server.helpers import run_command
from tests.support import CHATSTORE, structured

HOOK = "mcp_server/_sdk.py relies on the SDK's"


def _page() -> MessagePage:
    messages = [
        Message(
            id=uuid.uuid4(),
            conversation_id=uuid.uuid4(),
            seq=seq,
            role="assistant" if seq % 2 else "user",
            content=f'message {seq} — with ünïcode and "quotes"',
            tool_calls=[{"id": "c1", "name": "search", "arguments": {"q": 1.5}}]
            if seq % 2
            else None,
            tool_call_id=None,
            metadata={"n": seq, "nested": {"ok": True}},
            created_at=datetime(2026, 12, 1, 9, 0, seq, 1, tzinfo=UTC),
            token_count=seq * 7,
            raw={"type": "message", "n": seq} if seq % 2 else None,
        )
        for seq in range(1, 6)
    ]
    return MessagePage(messages=messages, has_more=True)


def test_the_one_pass_result_is_the_sdks_own_conversion() -> None:
    (tool,) = [
        t
        for t in build_tools(DEFAULT_LIMITS, max_response_bytes=1 << 22)
        if t.name == "list_messages"
    ]
    metadata = getattr(tool, "fn_metadata", None)
    assert metadata is not None and hasattr(metadata, "convert_result"), (
        f"{HOOK} Tool.fn_metadata.convert_result"
    )
    assert getattr(metadata, "output_model", None) is MessagePage, (
        f"{HOOK} Tool.fn_metadata.output_model being the tool's return type"
    )
    page = _page()
    ours, sdks = tool_result(page), metadata.convert_result(page)
    assert ours.structured_content == sdks.structured_content, f"{HOOK} result shape"
    assert [c.model_dump() for c in ours.content] == [c.model_dump() for c in sdks.content], (
        f"{HOOK} result text (2-space indented JSON of the structured content)"
    )


def test_a_server_can_run_on_given_streams() -> None:
    lowlevel = getattr(MCPServer(name="probe"), "_lowlevel_server", None)
    assert lowlevel is not None, f"{HOOK} MCPServer._lowlevel_server"
    assert inspect.iscoroutinefunction(lowlevel.run), f"{HOOK} lowlevel Server.run"
    parameters = list(inspect.signature(lowlevel.run).parameters)
    assert parameters[:3] == ["read_stream", "write_stream", "initialization_options"], (
        f"{HOOK} lowlevel Server.run(read_stream, write_stream, initialization_options)"
    )
    assert callable(lowlevel.create_initialization_options), (
        f"{HOOK} lowlevel Server.create_initialization_options"
    )
    assert inspect.iscoroutinefunction(run_on_streams)


async def test_tools_called_in_process_answer_through_the_hooks(tmp_path: Path) -> None:
    settings = Settings(database_url=f"sqlite://{tmp_path / 'hooks.sqlite3'}", data_dir=tmp_path)
    async with Client(create_server(settings, stdio_user="hooks")) as client:
        created = structured(await client.call_tool("create_conversation", {"title": "t"}))
        page = structured(
            await client.call_tool("list_messages", {"conversation_id": created["id"]})
        )
    assert page == {"messages": [], "has_more": False}


async def test_python_m_mcp_server_help_prints_help(tmp_path: Path) -> None:
    finished = await run_command(
        [CHATSTORE[0], "-m", "mcp_server", "--help"],
        env={"PATH": "/usr/bin:/bin"},
        cwd=tmp_path,
        seconds=30,
    )
    assert finished.returncode == 0, finished.stderr
    assert "usage:" in finished.stdout and "--http" in finished.stdout


class _Lines:
    """stdin for the SDK's stdio transport: the given lines, then end of input."""

    def __init__(self, lines: list[str]) -> None:
        self._lines = iter(lines)

    def __aiter__(self) -> _Lines:
        return self

    async def __anext__(self) -> str:
        try:
            return next(self._lines)
        except StopIteration:
            raise StopAsyncIteration from None


class _Out:
    """stdout for the SDK's stdio transport: what it writes, kept."""

    def __init__(self) -> None:
        self.written: list[str] = []

    async def write(self, data: str) -> None:
        self.written.append(data)

    async def flush(self) -> None:
        pass


async def _stdio_items(lines: list[str]) -> AsyncIterator[Any]:
    async with stdio_server(stdin=_Lines(lines), stdout=_Out()) as (read, write):  # type: ignore[arg-type]
        async with read, write:
            async for item in read:
                yield item


async def test_the_stdio_transport_hands_on_unreadable_lines_as_validation_errors() -> None:
    items = [item async for item in _stdio_items(["{not json\n", "[1, 2]\n", "\n"])]
    assert len(items) == 3 and all(isinstance(i, ValidationError) for i in items), (
        f"{HOOK} stdio transport putting a line it cannot read on the read stream as the "
        f"ValidationError of jsonrpc_message_adapter (got {items!r})"
    )
    kinds = [i.errors()[0]["type"] for i in items]
    assert kinds[0] == "json_invalid" and kinds[1] != "json_invalid", f"{HOOK} error types"
    assert kinds[2] == "json_invalid" and items[2].errors()[0]["input"] == "\n"


async def test_an_unreadable_line_is_answered_once(tmp_path: Path) -> None:
    # The SDK's dispatcher drops such items unanswered; run_on_streams answers them. An SDK
    # that began to answer them itself would answer twice.
    settings = Settings(database_url=f"sqlite://{tmp_path / 'hooks.sqlite3'}", data_dir=tmp_path)
    server = create_server(settings, stdio_user="hooks")
    to_server, read_stream = anyio.create_memory_object_stream[Any](8)
    write_stream, from_server = anyio.create_memory_object_stream[SessionMessage](8)
    answers: list[Any] = []
    with anyio.fail_after(20):
        async with (
            to_server,
            read_stream,
            write_stream,
            from_server,
            anyio.create_task_group() as tg,
        ):
            tg.start_soon(run_on_streams, server, read_stream, write_stream)
            bad = [item async for item in _stdio_items(["{not json\n", "[1]\n"])]
            for item in bad:
                await to_server.send(item)
            for wait in (5, 5, 0.5):  # two answers, then none more
                with anyio.move_on_after(wait):
                    answers.append((await from_server.receive()).message)
            tg.cancel_scope.cancel()
    assert len(answers) == 2, f"{HOOK} dispatcher leaving unreadable lines unanswered: {answers}"
    assert all(isinstance(a, JSONRPCError) and a.id is None for a in answers), answers
    assert [a.error.code for a in answers] == [-32700, -32600]
    assert not any(isinstance(a, JSONRPCResponse) for a in answers)
    wire = json.loads(answers[0].model_dump_json(by_alias=True, exclude_unset=True))
    assert wire["id"] is None and wire["error"]["message"].startswith("invalid_argument: ")
