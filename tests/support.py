"""Helpers for tests that drive chatstore through real MCP clients and real processes.

Open MCP clients inside the test body (``async with http_client(...)``), never in a
pytest-asyncio yield fixture: the SDK's cancel scopes must exit in the task they entered.
The benchmarks (``bench/``) start their server processes and mint their tokens with these too.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator, Mapping
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import httpx2
import jwt
from mcp import Client, StdioServerParameters
from mcp.client.streamable_http import streamable_http_client
from mcp_types import CallToolResult

#: HS256 secret the test servers verify tokens with.
JWT_SECRET = "chatstore-test-secret-0123456789abcdef"
JWT_ISSUER = "https://issuer.chatstore.test"
JWT_AUDIENCE = "chatstore-test"

#: This checkout: first on a child's ``PYTHONPATH``, and its working directory.
REPO_ROOT = Path(__file__).resolve().parents[1]
CHATSTORE = [sys.executable, "-m", "mcp_server.cli"]

#: RFC 3339 UTC with exactly six fractional digits, as the contract promises.
RFC3339_MICROS = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}Z$")

#: The keys of a Conversation and of a Message, as the contract lists them.
CONVERSATION_KEYS = {
    "id",
    "title",
    "metadata",
    "created_at",
    "updated_at",
    "message_count",
    "last_seq",
    "summary",
    "summary_up_to_seq",
    "forked_from",
    "key",
}
MESSAGE_KEYS = {
    "id",
    "conversation_id",
    "seq",
    "role",
    "content",
    "tool_calls",
    "tool_call_id",
    "metadata",
    "created_at",
    "token_count",
    "raw",
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def mint_token(
    sub: str | None,
    *,
    secret: str = JWT_SECRET,
    algorithm: str = "HS256",
    expires_in: float = 600,
    issuer: str | None = JWT_ISSUER,
    audience: str | None = JWT_AUDIENCE,
    extra: Mapping[str, Any] | None = None,
) -> str:
    now = int(time.time())
    claims: dict[str, Any] = {"iat": now, "exp": now + int(expires_in)}
    if sub is not None:
        claims["sub"] = sub
    if issuer is not None:
        claims["iss"] = issuer
    if audience is not None:
        claims["aud"] = audience
    claims.update(extra or {})
    return jwt.encode(claims, secret, algorithm=algorithm)


def server_env(
    database_url: str | None,
    data_dir: Path,
    *,
    secret: str = JWT_SECRET,
    issuer: str | None = JWT_ISSUER,
    audience: str | None = JWT_AUDIENCE,
    **extra: str,
) -> dict[str, str]:
    """The environment for a chatstore server process (database, JWT settings, user).

    ``issuer`` / ``audience`` None: the server checks neither. This checkout goes first on
    ``PYTHONPATH`` (before any inherited entries); ``extra`` is applied last.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHATSTORE_")}
    env["CHATSTORE_DATA_DIR"] = str(data_dir)
    if database_url is not None:
        env["CHATSTORE_DATABASE_URL"] = database_url
    env["CHATSTORE_JWT_SECRET"] = secret
    if issuer is not None:
        env["CHATSTORE_JWT_ISSUER"] = issuer
    if audience is not None:
        env["CHATSTORE_JWT_AUDIENCE"] = audience
    path = env.get("PYTHONPATH")
    env["PYTHONPATH"] = str(REPO_ROOT) + (os.pathsep + path if path else "")
    env.update(extra)
    return env


def stdio_params(env: Mapping[str, str]) -> StdioServerParameters:
    return StdioServerParameters(
        command=CHATSTORE[0], args=[*CHATSTORE[1:], "serve"], env=dict(env), cwd=str(REPO_ROOT)
    )


class HttpServer:
    """A ``chatstore serve --http`` child process on 127.0.0.1."""

    def __init__(self, process: subprocess.Popen[bytes], port: int, log_path: Path) -> None:
        self.process = process
        self.port = port
        self.log_path = log_path

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/mcp"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, timeout: float = 15) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                return self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
                raise
        return int(self.process.returncode)


@contextmanager
def http_server(
    env: Mapping[str, str], log_dir: Path, *, startup: float = 30
) -> Iterator[HttpServer]:
    """Start ``chatstore serve --http`` and wait until it answers; stop it afterwards."""
    port = free_port()
    log_path = log_dir / f"server-{port}-{uuid.uuid4().hex[:6]}.log"
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(
            [*CHATSTORE, "serve", "--http", "--host", "127.0.0.1", "--port", str(port)],
            env=dict(env),
            cwd=REPO_ROOT,
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
    server = HttpServer(process, port, log_path)
    try:
        deadline = time.monotonic() + startup
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"server exited at start:\n{server.log()}")
            try:
                httpx2.post(server.url, json={}, timeout=1)
                break
            except httpx2.TransportError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"server did not start:\n{server.log()}") from None
                time.sleep(0.1)
        yield server
    finally:
        server.stop()


@asynccontextmanager
async def http_client(url: str, token: str | None) -> AsyncIterator[Client]:
    """An MCP client over streamable HTTP sending ``token`` as its bearer token."""
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    async with (
        httpx2.AsyncClient(headers=headers, timeout=30) as http,
        Client(streamable_http_client(url, http_client=http)) as client,
    ):
        yield client


def error_text(result: CallToolResult) -> str:
    """The text of a failed tool call (asserts that it failed)."""
    assert result.is_error, result
    text = result.content[0]
    assert text.type == "text"
    return str(text.text)


def error_code(result: CallToolResult) -> str:
    """The contract code of a failed tool call: the word after the SDK's prefix."""
    text = error_text(result)
    _, _, rest = text.partition(": ")
    return rest.split(":", 1)[0]


def structured(result: CallToolResult) -> dict[str, Any]:
    assert not result.is_error, result.content
    assert result.structured_content is not None
    return dict(result.structured_content)
