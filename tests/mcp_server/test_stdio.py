"""chatstore as a real stdio subprocess: ``chatstore serve`` and ``python -m mcp_server``.

History written by one server process is read back by the next (embedded SQLite default and
PostgreSQL); the user comes from ``CHATSTORE_USER`` or the OS login name and is logged on
stderr; stdout carries nothing but the protocol; SIGTERM and SIGINT end the process with
status 0 at once.
"""

from __future__ import annotations

import getpass
import json
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator, Mapping
from contextlib import asynccontextmanager, closing
from pathlib import Path
from typing import IO, Any, TextIO

import pytest
from mcp import Client
from mcp.client.stdio import stdio_client
from pydantic import ValidationError

from tests.conftest import fresh_user
from tests.mcp_server.helpers import TOOL_NAMES, ok
from tests.support import server_env, stdio_params

pytestmark = pytest.mark.slow

#: The handshake-era protocol version the raw tests speak (any version the SDK accepts).
PROTOCOL_VERSION = "2025-11-25"


@pytest.fixture
def stderr_log(tmp_path: Path) -> Iterator[TextIO]:
    """Where a stdio server's stderr goes (a real file: the SDK hands it to the child)."""
    with (tmp_path / "stderr.log").open("w+", encoding="utf-8") as log:
        yield log


def read_log(log: TextIO) -> str:
    log.flush()
    return Path(log.name).read_text(encoding="utf-8")


@asynccontextmanager
async def stdio_session(env: Mapping[str, str], errlog: TextIO) -> AsyncIterator[Client]:
    """An MCP client over a fresh ``chatstore serve`` child process."""
    async with Client(stdio_client(stdio_params(env), errlog=errlog)) as client:
        yield client


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request: pytest.FixtureRequest) -> str | None:
    """None: the embedded SQLite default (CHATSTORE_DATABASE_URL unset); else PostgreSQL."""
    if request.param == "postgres":
        return str(request.getfixturevalue("postgres_url"))
    return None


async def test_history_survives_a_restart(
    database_url: str | None, tmp_path: Path, stderr_log: TextIO
) -> None:
    user = fresh_user()
    data_dir = tmp_path / "data"
    env = server_env(database_url, data_dir, CHATSTORE_USER=user)

    async with stdio_session(env, stderr_log) as client:
        conversation = await ok(client, "create_conversation", title="survives restarts")
        cid = conversation["id"]
        written = [
            await ok(client, "append_message", conversation_id=cid, role="user", content="hi"),
            await ok(
                client,
                "append_message",
                conversation_id=cid,
                role="assistant",
                content="",
                tool_calls=[{"id": "c1", "name": "lookup", "arguments": {"q": "x"}}],
            ),
            await ok(
                client,
                "append_message",
                conversation_id=cid,
                role="tool",
                content="result",
                tool_call_id="c1",
                idempotency_key="k-3",
            ),
        ]

    if database_url is None:
        assert (data_dir / "chatstore.sqlite3").is_file()

    async with stdio_session(env, stderr_log) as client:  # a new process
        listed = await ok(client, "list_conversations")
        assert [c["id"] for c in listed["conversations"]] == [cid]
        assert listed["conversations"][0]["title"] == "survives restarts"
        page = await ok(client, "list_messages", conversation_id=cid)
        assert page["messages"] == written
        replay = await ok(
            client,
            "append_message",
            conversation_id=cid,
            role="tool",
            content="result",
            tool_call_id="c1",
            idempotency_key="k-3",
        )
        assert replay == written[2]
        fourth = await ok(client, "append_message", conversation_id=cid, role="user", content="4")
        assert fourth["seq"] == 4
        resources = (await client.list_resources()).resources
        assert [r.uri for r in resources] == [f"chatstore://conversations/{cid}"]

    log = read_log(stderr_log)
    assert log.count(f"serving user {user!r}") == 2, log


def _send(process: subprocess.Popen[bytes], message: Mapping[str, Any]) -> None:
    assert process.stdin is not None
    process.stdin.write(json.dumps(message).encode() + b"\n")
    process.stdin.flush()


def _receive(stdout: IO[bytes], request_id: int, lines: list[str]) -> dict[str, Any]:
    """Read stdout lines until the response to ``request_id``; every line is kept."""
    while True:
        raw = stdout.readline()
        assert raw, f"stdout closed before the response to {request_id}: {lines}"
        line = raw.decode("utf-8")
        lines.append(line)
        message: dict[str, Any] = json.loads(line)
        if message.get("id") == request_id:
            return message


def _handshake(process: subprocess.Popen[bytes], lines: list[str]) -> dict[str, Any]:
    assert process.stdout is not None
    _send(
        process,
        {
            "jsonrpc": "2.0",
            "id": 1,
            "method": "initialize",
            "params": {
                "protocolVersion": PROTOCOL_VERSION,
                "capabilities": {},
                "clientInfo": {"name": "chatstore-tests", "version": "1"},
            },
        },
    )
    response = _receive(process.stdout, 1, lines)
    _send(process, {"jsonrpc": "2.0", "method": "notifications/initialized"})
    return response


def _wait_for_log(path: Path, needle: str, process: subprocess.Popen[bytes]) -> str:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        text = path.read_text(encoding="utf-8", errors="replace")
        if needle in text:
            return text
        assert process.poll() is None, f"the server exited early:\n{text}"
        time.sleep(0.05)
    raise AssertionError(f"{needle!r} never appeared in the server log")


@pytest.mark.timeout(60)
def test_python_m_mcp_server_serves_the_os_user_with_only_protocol_on_stdout(
    tmp_path: Path,
) -> None:
    # CHATSTORE_USER unset (server_env drops every inherited CHATSTORE_ variable).
    env = server_env(None, tmp_path / "data")
    assert "CHATSTORE_USER" not in env
    log_path = tmp_path / "stderr.log"
    lines: list[str] = []
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "mcp_server"],
            env=env,
            cwd=tmp_path,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=log,
        )
    try:
        assert process.stdout is not None and process.stdin is not None
        initialized = _handshake(process, lines)
        assert initialized["result"]["serverInfo"]["name"] == "chatstore"
        _send(process, {"jsonrpc": "2.0", "id": 2, "method": "tools/list"})
        tools = _receive(process.stdout, 2, lines)["result"]["tools"]
        assert sorted(tool["name"] for tool in tools) == TOOL_NAMES
        _send(
            process,
            {
                "jsonrpc": "2.0",
                "id": 3,
                "method": "tools/call",
                "params": {"name": "create_conversation", "arguments": {"title": "as me"}},
            },
        )
        created = _receive(process.stdout, 3, lines)["result"]
        assert created["isError"] is False
        process.stdin.close()  # end of the session: the server exits by itself
        assert process.wait(timeout=15) == 0
        lines += [raw.decode("utf-8") for raw in process.stdout.readlines()]
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(5)
        if process.stdout is not None:
            process.stdout.close()

    for line in lines:
        assert json.loads(line)["jsonrpc"] == "2.0", line
    login = getpass.getuser()
    log_text = log_path.read_text(encoding="utf-8")
    assert f"serving user {login!r}" in log_text, log_text
    conversation = created["structuredContent"]
    assert conversation["title"] == "as me"
    # Stored for the OS login name, in the embedded SQLite file under CHATSTORE_DATA_DIR.
    with closing(sqlite3.connect(tmp_path / "data" / "chatstore.sqlite3")) as db:
        rows = db.execute(
            "SELECT user_id, title FROM conversations WHERE id = ?", (conversation["id"],)
        ).fetchall()
    assert rows == [(login, "as me")]


@pytest.mark.timeout(60)
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_ends_the_server_promptly_with_status_0(
    tmp_path: Path, sig: signal.Signals
) -> None:
    env = server_env(None, tmp_path / "data", CHATSTORE_USER="signal-test")
    log_path = tmp_path / "stderr.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "mcp_server.cli", "serve"],
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=log,
        )
    try:
        lines: list[str] = []
        _handshake(process, lines)  # a live session whose client keeps stdin open
        _wait_for_log(log_path, "serving user 'signal-test'", process)
        started = time.monotonic()
        process.send_signal(sig)
        status = process.wait(timeout=10)
        elapsed = time.monotonic() - started
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(5)
        for pipe in (process.stdin, process.stdout):
            if pipe is not None:
                pipe.close()
    assert status == 0, log_path.read_text()
    assert elapsed < 5, f"took {elapsed:.1f}s to stop"
    assert "stopped" in log_path.read_text()


async def test_a_line_over_the_limit_is_skipped_and_answered() -> None:
    import asyncio

    import mcp_types

    from mcp_server._sdk import OVERSIZE, OVERSIZE_LINE, _envelope_error
    from mcp_server._stdio import _PipeLines

    reader = asyncio.StreamReader(limit=64)
    reader.feed_data(b"x" * 1000 + b"\n" + b'{"jsonrpc": "2.0", "method": "m"}\n' + b"y" * 500)
    reader.feed_eof()
    lines = [line async for line in _PipeLines(reader)]
    assert lines == [OVERSIZE_LINE, '{"jsonrpc": "2.0", "method": "m"}\n', OVERSIZE_LINE]
    with pytest.raises(ValidationError) as unreadable:
        mcp_types.jsonrpc_message_adapter.validate_json(OVERSIZE_LINE, by_name=False)
    assert _envelope_error(unreadable.value) == OVERSIZE
