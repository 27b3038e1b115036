"""chatstore server processes for the MCP workloads (W6, W7), and what they cost in CPU.

The children themselves are started with the tests' helpers (``tests.support``:
``http_server``, ``stdio_params``, ``server_env``, ``mint_token``); this module adds what only
the benchmark needs:

- ``child_env(database_url, secret=…, data_dir=…)``: ``server_env`` as the benchmark runs its
  children: the run's database, a per-run HS256 secret (``new_secret()``), no issuer or
  audience, quiet logs (``CHATSTORE_LOG_LEVEL=WARNING``); ``bearer_token`` mints its tokens.
- ``RawStdio``: a ``chatstore serve`` (stdio) child driven with hand-written JSON-RPC lines,
  no SDK client: the cheapest possible stdio client.
- ``RawHttp``: the same over one keep-alive HTTP/1.1 connection, no HTTP library (W7's load
  generator, W6's raw HTTP round trip).
- ``tool_call`` / ``MCP_HEADERS``: the exact envelope and headers the SDK client (``mcp``
  2.3, protocol 2026-07-28) sends for a ``tools/call``: no ``initialize`` first; every
  request carries the protocol version, client info and capabilities in ``_meta``.
- ``cpu_seconds(pid)`` / ``SystemCpu``: CPU time from ``/proc`` (Linux), to tell how the
  machine's two cores were shared between load generator, servers and PostgreSQL.
- ``log_dir``: where a workload's server logs go (files, not the console).
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import signal
import subprocess
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from mcp_types.version import LATEST_MODERN_VERSION

from tests.support import CHATSTORE, REPO_ROOT, mint_token, server_env

__all__ = [
    "MCP_HEADERS",
    "PROTOCOL_VERSION",
    "RawHttp",
    "RawStdio",
    "SystemCpu",
    "bearer_token",
    "child_env",
    "cpu_seconds",
    "log_dir",
    "new_secret",
    "raw_stdio",
    "tool_call",
]

#: The protocol revision the SDK client negotiates with chatstore (``server/discover``).
PROTOCOL_VERSION = LATEST_MODERN_VERSION
_CLIENT_META = {
    "io.modelcontextprotocol/protocolVersion": PROTOCOL_VERSION,
    "io.modelcontextprotocol/clientInfo": {"name": "chatstore-bench", "version": "1"},
    "io.modelcontextprotocol/clientCapabilities": {},
}
#: Headers of a stateless POST to /mcp, as the SDK client sends them (plus Mcp-Name).
MCP_HEADERS = {
    "Accept": "application/json, text/event-stream",
    "Content-Type": "application/json",
    "MCP-Protocol-Version": PROTOCOL_VERSION,
    "Mcp-Method": "tools/call",
}


def tool_call(request_id: int, name: str, arguments: Mapping[str, Any]) -> dict[str, Any]:
    """A complete ``tools/call`` JSON-RPC request in the 2026-07-28 per-request envelope."""
    return {
        "jsonrpc": "2.0",
        "id": request_id,
        "method": "tools/call",
        "params": {"name": name, "arguments": dict(arguments), "_meta": _CLIENT_META},
    }


def new_secret() -> str:
    return secrets.token_urlsafe(48)


def bearer_token(secret: str, sub: str, *, ttl_s: int = 3600) -> str:
    """An HS256 JWT for ``sub`` signed with the run's secret (no issuer, no audience)."""
    return mint_token(sub, secret=secret, expires_in=ttl_s, issuer=None, audience=None)


def child_env(
    database_url: str, *, secret: str, data_dir: Path, user: str | None = None
) -> dict[str, str]:
    """The environment of a chatstore child: this checkout, the run's database, quiet logs."""
    extra = {"CHATSTORE_LOG_LEVEL": "WARNING"}
    if user is not None:
        extra["CHATSTORE_USER"] = user
    return server_env(database_url, data_dir, secret=secret, issuer=None, audience=None, **extra)


def log_dir(results_dir: Path, workload: str) -> Path:
    """``<results>/logs/<workload>/``, emptied of the previous run's server logs."""
    folder = results_dir / "logs" / workload
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.glob("*.log"):
        old.unlink()
    return folder


async def _stop(process: asyncio.subprocess.Process, grace_s: float = 15) -> int:
    if process.returncode is None:
        process.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(process.wait(), grace_s)
        except TimeoutError:
            process.kill()
            await process.wait()
    return int(process.returncode or 0)


class RawStdio:
    """JSON-RPC lines to and from a ``chatstore serve`` child: no SDK on the client side."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        assert process.stdin is not None and process.stdout is not None
        self.process = process
        self._stdin = process.stdin
        self._stdout = process.stdout
        self._next_id = 0
        self._lock = asyncio.Lock()

    @property
    def pid(self) -> int:
        return self.process.pid

    async def call(self, name: str, arguments: Mapping[str, Any]) -> dict[str, Any]:
        """One ``tools/call``; returns the JSON-RPC ``result`` (raises on a protocol error)."""
        async with self._lock:
            self._next_id += 1
            request_id = self._next_id
            line = json.dumps(tool_call(request_id, name, arguments), separators=(",", ":"))
            self._stdin.write(line.encode() + b"\n")
            await self._stdin.drain()
            while True:
                raw = await self._stdout.readline()
                if not raw:
                    raise RuntimeError("the stdio server closed its stdout")
                message = json.loads(raw)
                if message.get("id") == request_id:
                    break  # anything else is a notification; none is expected
        if "error" in message:
            raise RuntimeError(f"{name}: JSON-RPC error {message['error']}")
        result: dict[str, Any] = message["result"]
        return result


@asynccontextmanager
async def raw_stdio(env: Mapping[str, str], log_dir: Path) -> AsyncIterator[RawStdio]:
    """A stdio child for ``RawStdio``; closing its stdin ends it (SIGTERM if it lingers)."""
    with (log_dir / f"stdio-raw-{secrets.token_hex(3)}.log").open("wb") as log_file:
        process = await asyncio.create_subprocess_exec(
            *CHATSTORE,
            "serve",
            env=dict(env),
            cwd=str(REPO_ROOT),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=log_file,
            limit=64 * 1024 * 1024,
        )
    try:
        yield RawStdio(process)
    finally:
        if process.stdin is not None:
            process.stdin.close()
        try:
            await asyncio.wait_for(process.wait(), 5)
        except TimeoutError:
            await _stop(process)


class RawHttp:
    """One keep-alive HTTP/1.1 connection POSTing JSON-RPC to /mcp: no HTTP library.

    The load generator shares the machine's two cores with the servers, so it must be
    cheap: measured on a 70 KB ``list_messages`` reply, this costs ~0.45 ms of CPU per call
    (JSON parsing included) against ~1.8 ms for ``httpx2.AsyncClient`` and ~2.3 ms for
    ``httpx``. It speaks just what uvicorn answers a JSON-response server with: a status
    line, headers, a ``Content-Length`` body; anything else is an error.
    """

    def __init__(self, url: str, headers: Mapping[str, str]) -> None:
        parts = urlsplit(url)
        assert parts.hostname is not None and parts.port is not None
        self.host, self.port, self.path = parts.hostname, parts.port, parts.path or "/"
        lines = [f"Host: {self.host}:{self.port}", *(f"{k}: {v}" for k, v in headers.items())]
        self._head = "\r\n".join(lines)
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def _connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        if self._reader is None or self._writer is None:
            self._reader, self._writer = await asyncio.open_connection(
                self.host, self.port, limit=64 * 1024 * 1024
            )
        return self._reader, self._writer

    async def post(self, body: bytes, headers: str = "") -> tuple[int, bytes]:
        """POST ``body`` (``headers``: extra ``Name: value\\r\\n`` lines); (status, body)."""
        reader, writer = await self._connect()
        try:
            writer.write(
                f"POST {self.path} HTTP/1.1\r\n{self._head}\r\n{headers}"
                f"Content-Length: {len(body)}\r\n\r\n".encode()
                + body
            )
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.split(b"\r\n")
            status = int(lines[0].split(b" ", 2)[1])
            length: int | None = None
            close = False
            for line in lines[1:]:
                name, _, value = line.partition(b":")
                name = name.strip().lower()
                if name == b"content-length":
                    length = int(value)
                elif name == b"connection" and value.strip().lower() == b"close":
                    close = True
                elif name == b"transfer-encoding":
                    raise RuntimeError("chunked responses are not supported by RawHttp")
            data = await reader.readexactly(length) if length else b""
        except BaseException:
            await self.close()
            raise
        if close:
            await self.close()
        return status, data

    async def close(self) -> None:
        writer, self._reader, self._writer = self._writer, None, None
        if writer is not None:
            writer.close()
            with suppress(OSError):
                await writer.wait_closed()


_CLOCK_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds a process has used so far (None: not readable here)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may hold spaces; the fields after it are plain numbers.
    fields = stat.rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS


@dataclass(frozen=True, slots=True)
class SystemCpu:
    """The machine's CPU counters (``/proc/stat``), in core-seconds: busy (user, nice,
    system, irq, softirq), stolen by the hypervisor, and the total including idle."""

    busy_s: float
    steal_s: float
    total_s: float

    @classmethod
    def read(cls) -> SystemCpu | None:
        try:
            first = Path("/proc/stat").read_text().splitlines()[0].split()
            ticks = [int(x) for x in first[1:9]]
            user, nice, system, _idle, _iowait, irq, softirq, steal = ticks
        except (OSError, IndexError, ValueError):
            return None
        busy = user + nice + system + irq + softirq
        # guest time is already counted in user/nice: leave it out of the total
        return cls(busy / _CLOCK_TICKS, steal / _CLOCK_TICKS, sum(ticks) / _CLOCK_TICKS)
