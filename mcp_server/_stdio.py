"""MCP over stdio: the protocol's lines on this process's stdin and stdout.

When both are pipes (as MCP clients start a server) they are served on the event loop; else
(a terminal, a file, Windows) through the SDK's stdio streams, fed by a stdin reader that a
shutdown can abandon. Either way SIGINT/SIGTERM ends the server at once.
"""

from __future__ import annotations

import asyncio
import os
import stat
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, BinaryIO, cast

import anyio
from mcp.server.mcpserver import MCPServer
from mcp.server.stdio import stdio_server

from mcp_server._sdk import OVERSIZE_LINE, run_on_streams

__all__ = ["MAX_STDIO_LINE", "run_stdio"]


class _StdinLines:
    """stdin as async lines, read in worker threads that a shutdown may abandon.

    The SDK's default stdin reader blocks shutdown until the client sends another line;
    with this one SIGINT/SIGTERM ends the server at once.
    """

    def __init__(self, stream: BinaryIO) -> None:
        self._stream = stream

    def __aiter__(self) -> _StdinLines:
        return self

    async def __anext__(self) -> str:
        line = await anyio.to_thread.run_sync(self._stream.readline, abandon_on_cancel=True)
        if not line:
            raise StopAsyncIteration
        return line.decode("utf-8", errors="replace")


#: A stdio request line longer than this is skipped, and answered with an invalid-request
#: error (``mcp_server._sdk.OVERSIZE``).
MAX_STDIO_LINE = 64 * 1024 * 1024


class _PipeLines:
    """Lines from the stdin pipe, read on the event loop."""

    def __init__(self, reader: asyncio.StreamReader) -> None:
        self._reader = reader

    def __aiter__(self) -> _PipeLines:
        return self

    async def __anext__(self) -> str:
        try:
            line = await self._reader.readuntil(b"\n")
        except asyncio.IncompleteReadError as exc:
            if not exc.partial:
                raise StopAsyncIteration from None
            line = exc.partial
        except asyncio.LimitOverrunError:
            while True:
                try:
                    await self._reader.readuntil(b"\n")
                    break
                except asyncio.LimitOverrunError as more:
                    await self._reader.readexactly(more.consumed)
                except asyncio.IncompleteReadError:  # the input ended inside the line
                    break
            return OVERSIZE_LINE
        return line.decode("utf-8", errors="replace")


class _PipeWriter(asyncio.BaseProtocol):
    """The stdout pipe on the event loop: ``write`` queues, ``flush`` waits for room."""

    def __init__(self) -> None:
        self._transport: asyncio.WriteTransport | None = None
        self._paused = False
        self._lost = False
        self._waiter: asyncio.Future[None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.WriteTransport, transport)

    def pause_writing(self) -> None:
        self._paused = True

    def resume_writing(self) -> None:
        self._paused = False
        self._wake()

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost = True
        self._wake()

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    async def write(self, data: str) -> None:
        if self._lost or self._transport is None:
            raise BrokenPipeError("the client closed the server's stdout")
        self._transport.write(data.encode("utf-8"))

    async def flush(self) -> None:
        while self._paused and not self._lost:
            self._waiter = asyncio.get_running_loop().create_future()
            await self._waiter
        if self._lost:
            raise BrokenPipeError("the client closed the server's stdout")


def _is_pipe(fd: int) -> bool:
    try:
        mode = os.fstat(fd).st_mode
    except OSError:
        return False
    return stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode)


@asynccontextmanager
async def _pipe_stdio() -> AsyncIterator[tuple[_PipeLines, _PipeWriter] | None]:
    """stdin and stdout served on the event loop when both are pipes, as MCP clients start a
    server; None otherwise (a terminal, a file, Windows: the SDK's threaded streams then).

    The SDK reads and writes stdio in worker threads: three thread round trips per request
    (the line, the write, the flush). Measured on this project's 2-core machine, serving the
    pipes on the event loop instead takes ~0.8 ms of server CPU off every call.
    As the SDK does, the wire moves to private descriptors and fd 0 and fd 1 point at
    /dev/null and stderr (for the rest of the process, which ends with the session), so a
    stray read or print cannot touch the protocol.
    """
    if sys.platform == "win32" or not (_is_pipe(0) and _is_pipe(1)):
        yield None
        return
    loop = asyncio.get_running_loop()
    wire_in, wire_out = os.dup(0), os.dup(1)
    devnull = os.open(os.devnull, os.O_RDWR)
    try:
        os.dup2(devnull, 0)
        try:
            os.dup2(2, 1)
        except OSError:
            os.dup2(devnull, 1)
    finally:
        os.close(devnull)
    reader = asyncio.StreamReader(limit=MAX_STDIO_LINE)
    read_transport, _ = await loop.connect_read_pipe(
        lambda: asyncio.StreamReaderProtocol(reader), os.fdopen(wire_in, "rb", buffering=0)
    )
    write_transport, writer = await loop.connect_write_pipe(
        _PipeWriter, os.fdopen(wire_out, "wb", buffering=0)
    )
    try:
        yield _PipeLines(reader), writer
    finally:
        read_transport.close()
        write_transport.close()


async def run_stdio(server: MCPServer[Any]) -> None:
    """Serve one MCP session over this process's stdin and stdout."""
    async with _pipe_stdio() as pipes:
        stdin = cast(
            "anyio.AsyncFile[str]", _StdinLines(sys.stdin.buffer) if pipes is None else pipes[0]
        )
        stdout = None if pipes is None else cast("anyio.AsyncFile[str]", pipes[1])
        async with stdio_server(stdin=stdin, stdout=stdout) as (read_stream, write_stream):
            await run_on_streams(server, read_stream, write_stream)
