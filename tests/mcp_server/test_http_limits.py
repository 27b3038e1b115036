"""What a client may send over HTTP, and how slowly, on a real ``chatstore serve --http``
process over real sockets: a head past CHATSTORE_HTTP_MAX_HEADER_BYTES gets 431 and a target
past CHATSTORE_HTTP_MAX_URL_BYTES 414, before any work and without stalling other clients;
trickled heads and bodies are timed out (408); a client that leaves mid-body is one access
line; a reply its client never reads is dropped after CHATSTORE_HTTP_SEND_TIMEOUT; a big page
stays within CHATSTORE_MAX_RESPONSE_BYTES on the wire. The first test pins what
``mcp_server/_uvicorn.py`` relies on of uvicorn."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState

from mcp_server._uvicorn import HttpLimits, bounded_protocol
from store import ConversationStore, Settings
from tests.support import HttpServer, free_port, http_server, mint_token, server_env

pytestmark = pytest.mark.slow

HOOK = "mcp_server/_uvicorn.py relies on uvicorn's"
TIMEOUT = 1.5
BUDGET = 8 * 1024 * 1024
#: Long enough for any of the timeouts above, however loaded the machine: what a test waits
#: at most for the server to act (it acts after TIMEOUT seconds).
PATIENCE = 15.0
USER = "limits-user"
MESSAGES = 60
CONTENT = 100_000


@dataclass
class Limited:
    server: HttpServer
    conversation_id: str
    token: str

    @property
    def host(self) -> bytes:
        return f"127.0.0.1:{self.server.port}".encode()


@pytest.fixture(scope="module")
def limited(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Limited]:
    """One server with short timeouts, serving a conversation of 60 messages of 100,000
    characters (a page of them passes the 8 MiB reply budget)."""
    data_dir = tmp_path_factory.mktemp("limits-data")
    url = f"sqlite://{data_dir / 'limits.sqlite3'}"
    cid = asyncio.run(_populate(Settings(database_url=url, data_dir=data_dir)))
    env = server_env(
        url,
        data_dir,
        issuer=None,
        audience=None,
        CHATSTORE_HTTP_HEADER_TIMEOUT=str(TIMEOUT),
        CHATSTORE_HTTP_BODY_TIMEOUT=str(TIMEOUT),
        CHATSTORE_HTTP_SEND_TIMEOUT=str(TIMEOUT),
        CHATSTORE_MAX_RESPONSE_BYTES=str(BUDGET),
    )
    with http_server(env, tmp_path_factory.mktemp("limits-logs")) as running:
        yield Limited(running, cid, mint_token(USER, issuer=None, audience=None))
    assert running.process.returncode == 0, running.log()


async def _populate(settings: Settings) -> str:
    async with ConversationStore(settings) as store:
        conversation = await store.create_conversation(user=USER)
        filler = "lorem ipsum dolor sit amet " * (CONTENT // 27 + 1)
        for start in range(0, MESSAGES, 20):
            await store.append_messages(
                user=USER,
                conversation_id=conversation.id,
                messages=[
                    {"role": "user", "content": f"{n:04d}{filler}"[:CONTENT], "token_count": 1}
                    for n in range(start, start + 20)
                ],
            )
    return str(conversation.id)


# -- raw HTTP ---------------------------------------------------------------------------------


async def connect(target: Limited) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection("127.0.0.1", target.server.port, limit=1 << 26)


async def status_of(reader: asyncio.StreamReader) -> int:
    """The status of the response, or 0 when the connection ends without one."""
    try:
        line = await asyncio.wait_for(reader.readline(), PATIENCE)
    except (ConnectionError, TimeoutError):
        return 0
    return int(line.split()[1]) if line.startswith(b"HTTP/1.1 ") else 0


async def flood(target: Limited, head: bytes, size: int, tail: bytes) -> int:
    """Send ``head``, then up to ``size`` bytes of padding in 1 MiB writes until the server
    answers, then ``tail``; the answer's status."""
    reader, writer = await connect(target)
    answer = asyncio.ensure_future(status_of(reader))
    writer.write(head)
    chunk = b"a" * (1 << 20)
    try:
        for _ in range(size >> 20):
            if answer.done():
                break
            writer.write(chunk)
            await writer.drain()
        writer.write(tail)
        await writer.drain()
    except ConnectionError:
        pass
    status = await answer
    writer.close()
    return status


async def healthz_waits(target: Limited, stop: asyncio.Event) -> list[float]:
    """How long each of a stream of ``GET /healthz`` took, until ``stop``."""
    waits = []
    while not stop.is_set():
        started = time.perf_counter()
        reader, writer = await connect(target)
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: " + target.host + b"\r\n\r\n")
        assert await status_of(reader) == 200
        writer.close()
        waits.append(time.perf_counter() - started)
        await asyncio.sleep(0.02)
    return waits


def reset_peak_rss(pid: int) -> None:
    Path(f"/proc/{pid}/clear_refs").write_text("5")


def peak_rss_mb(pid: int) -> float:
    status = Path(f"/proc/{pid}/status").read_text()
    (line,) = [line for line in status.splitlines() if line.startswith("VmHWM:")]
    return int(line.split()[1]) / 1024


def post(target: Limited, body: bytes, *, length: int | None = None, token: bool = True) -> bytes:
    authorization = b"Authorization: Bearer " + target.token.encode() + b"\r\n" if token else b""
    return (
        b"POST /mcp HTTP/1.1\r\nHost: " + target.host + b"\r\n"
        b"Content-Type: application/json\r\nAccept: application/json, text/event-stream\r\n"
        + authorization
        + b"Content-Length: "
        + str(len(body) if length is None else length).encode()
        + b"\r\n\r\n"
    ) + body


def tool_call(tool: str, **arguments: Any) -> bytes:
    params = {"name": tool, "arguments": arguments}
    return json.dumps(
        {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": params}
    ).encode()


def log_since(target: Limited, mark: int) -> list[str]:
    return target.server.log().splitlines()[mark:]


# -- what this relies on of uvicorn ----------------------------------------------------------


class _Transport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.buffered = 0
        self.aborted = False
        self.written = bytearray()

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return ("127.0.0.1", 5000) if name in ("peername", "sockname") else default

    def get_write_buffer_size(self) -> int:
        return self.buffered

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.written += data

    def is_closing(self) -> bool:
        return self.aborted

    def abort(self) -> None:
        self.aborted = True

    def close(self) -> None:
        self.aborted = True

    def can_write_eof(self) -> bool:
        return False

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


async def _app(scope: Any, receive: Any, send: Any) -> None:
    raise AssertionError("no request gets this far")


async def test_the_protocol_hooks_are_uvicorns() -> None:
    for name in (
        "data_received",
        "connection_made",
        "connection_lost",
        "on_message_begin",
        "on_url",
        "on_header",
        "on_headers_complete",
        "on_body",
        "on_message_complete",
        "on_response_complete",
        "pause_writing",
        "resume_writing",
    ):
        assert callable(getattr(HttpToolsProtocol, name, None)), f"{HOOK} HttpToolsProtocol.{name}"
    limits = HttpLimits(
        max_header_bytes=1024,
        max_url_bytes=256,
        header_timeout=60,
        body_timeout=60,
        send_timeout=0.05,
    )
    cls = bounded_protocol(limits)
    config = uvicorn.Config(app=_app, http=cls, log_config=None)
    config.load()
    assert config.http_protocol_class is cls, f"{HOOK} Config(http=<class>)"
    protocol = cls(config=config, server_state=ServerState(), app_state={})
    transport = _Transport()
    protocol.connection_made(transport)
    for attribute in ("transport", "loop", "client", "cycle", "server_state", "flow", "parser"):
        assert hasattr(protocol, attribute), f"{HOOK} HttpToolsProtocol.{attribute}"
    # A reply that stays in the buffer is dropped; one the client reads, however slowly, not.
    transport.buffered = 1 << 20
    protocol.pause_writing()
    for _ in range(3):
        await asyncio.sleep(0.04)
        transport.buffered -= 1000
    assert not transport.aborted
    await asyncio.sleep(0.15)
    assert transport.aborted
    # The parser's callbacks carry the head: a long target is refused as it arrives.
    protocol = cls(config=config, server_state=ServerState(), app_state={})
    transport = _Transport()
    protocol.connection_made(transport)
    protocol.data_received(b"GET /" + b"a" * 300)
    assert transport.written.startswith(b"HTTP/1.1 414 "), f"{HOOK} parser callbacks"
    protocol.connection_lost(None)


# -- heads ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "head",
    [
        b"GET /healthz HTTP/1.1\r\nHost: HOST\r\nX-Padding: ",
        b"POST /mcp HTTP/1.1\r\nHost: HOST\r\nContent-Length: 2\r\nAuthorization: Bearer ",
    ],
    ids=["header", "authorization"],
)
async def test_a_64_mb_header_gets_431_without_stalling_anyone(
    limited: Limited, head: bytes
) -> None:
    pid = limited.server.pid
    reset_peak_rss(pid)
    before = peak_rss_mb(pid)
    stop = asyncio.Event()
    others = asyncio.ensure_future(healthz_waits(limited, stop))
    await asyncio.sleep(0.2)
    status = await flood(limited, head.replace(b"HOST", limited.host), 64 << 20, b"\r\n\r\n{}")
    await asyncio.sleep(0.2)
    stop.set()
    waits = await others
    assert status == 431
    # Unbounded, the 64 MB took the loop 3.8 s and the server's RSS +130 MB (measured).
    assert max(waits) < 1.5, waits
    assert peak_rss_mb(pid) - before < 32


async def test_a_long_target_gets_414(limited: Limited) -> None:
    status = await flood(
        limited, b"GET /", 48 << 20, b" HTTP/1.1\r\nHost: " + limited.host + b"\r\n\r\n"
    )
    assert status == 414
    reader, writer = await connect(limited)
    writer.write(
        b"GET /healthz?" + b"q" * 6000 + b" HTTP/1.1\r\nHost: " + limited.host + b"\r\n\r\n"
    )
    assert await status_of(reader) == 200
    writer.close()


@pytest.mark.parametrize(("size", "status"), [(24 * 1024, 200), (40 * 1024, 431)])
async def test_the_header_limit_holds_however_the_head_arrives(
    limited: Limited, size: int, status: int
) -> None:
    reader, writer = await connect(limited)
    head = b"GET /healthz HTTP/1.1\r\nHost: " + limited.host + b"\r\nX-Padding: " + b"p" * size
    for start in range(0, len(head), 4096):  # separate reads: most of them no callback
        writer.write(head[start : start + 4096])
        await writer.drain()
        await asyncio.sleep(0.01)
    writer.write(b"\r\n\r\n")
    assert await status_of(reader) == status
    writer.close()


async def test_trickled_heads_are_timed_out(limited: Limited) -> None:
    async def trickle() -> tuple[int, float]:
        started = time.monotonic()
        reader, writer = await connect(limited)
        writer.write(b"POST /mcp HTTP/1.1\r\nHost: " + limited.host + b"\r\nX-Slow: ")
        answer = asyncio.ensure_future(status_of(reader))
        try:
            while not answer.done() and time.monotonic() - started < PATIENCE:
                writer.write(b"s")
                await writer.drain()
                await asyncio.wait([answer], timeout=0.2)
        except ConnectionError:
            pass
        status = await answer
        writer.close()
        return status, time.monotonic() - started

    async def silent() -> tuple[int, float]:
        started = time.monotonic()
        reader, writer = await connect(limited)
        status = await status_of(reader)
        writer.close()
        return status, time.monotonic() - started

    done = await asyncio.gather(*(trickle() for _ in range(5)), silent(), silent())
    assert [status for status, _ in done] == [408] * 5 + [0, 0]
    assert all(TIMEOUT * 0.9 < took < PATIENCE for _, took in done), done


async def test_bare_line_ends_between_requests_do_not_hold_a_connection(limited: Limited) -> None:
    # The parser skips a CRLF before a request, and its arrival cancelled uvicorn's keep-alive
    # timer: sent every few seconds after an answer, it used to keep the connection for ever.
    reader, writer = await connect(limited)
    writer.write(b"GET /healthz HTTP/1.1\r\nHost: " + limited.host + b"\r\n\r\n")
    assert await status_of(reader) == 200
    started = time.monotonic()
    try:
        while not reader.at_eof() and time.monotonic() - started < PATIENCE:
            writer.write(b"\r\n")
            await writer.drain()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(reader.read(1 << 16), 0.3)
    except ConnectionError:
        pass
    took = time.monotonic() - started
    writer.close()
    assert took < PATIENCE, "the connection was still open"


async def _echo_slowly(scope: Any, receive: Any, send: Any) -> None:
    """Answers with the body it read; ``/slow`` after 2.5 s."""
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    if scope["path"] == "/slow":
        await asyncio.sleep(2.5)
    headers = [(b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def test_a_pipelined_request_waits_its_turn_before_its_deadlines() -> None:
    # Behind a request being answered, uvicorn stops reading: the next request's body, and the
    # head after it, arrive only once that answer is out, and their 1 s deadlines must not run
    # meanwhile (they closed the connection under the slow request's answer).
    limits = HttpLimits(
        max_header_bytes=32 * 1024,
        max_url_bytes=8 * 1024,
        header_timeout=1.0,
        body_timeout=1.0,
        send_timeout=30.0,
    )
    port = free_port()
    config = uvicorn.Config(
        _echo_slowly,
        host="127.0.0.1",
        port=port,
        http=bounded_protocol(limits),
        lifespan="off",
        log_level="warning",
    )
    server = uvicorn.Server(config)
    serving = asyncio.ensure_future(server.serve())
    try:
        for _ in range(int(PATIENCE / 0.05)):
            if server.started:
                break
            await asyncio.sleep(0.05)
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        body = b"b" * 300_000
        writer.write(
            b"POST /slow HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n"
            + b"POST /next HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % len(body)
            + body[:1_000]
        )
        await writer.drain()
        await asyncio.sleep(0.3)
        writer.write(body[1_000:] + b"GET /last HTTP/1.1\r\nHost: x\r\n")
        await writer.drain()
        await asyncio.sleep(0.3)
        writer.write(b"\r\n")
        await writer.drain()
        lengths = []
        for _ in range(3):
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), PATIENCE)
            assert head.startswith(b"HTTP/1.1 200"), head
            length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
            await reader.readexactly(length)
            lengths.append(length)
        assert lengths == [0, len(body), 0]
        writer.close()
    finally:
        server.should_exit = True
        await serving


# -- bodies -----------------------------------------------------------------------------------


async def test_trickled_bodies_are_timed_out(limited: Limited) -> None:
    async def trickle(token: bool) -> tuple[int, float]:
        """The status, and how long until the connection closed."""
        started = time.monotonic()
        reader, writer = await connect(limited)
        writer.write(post(limited, b"{", length=10_000, token=token))
        answer = asyncio.ensure_future(status_of(reader))
        try:
            while not reader.at_eof() and time.monotonic() - started < PATIENCE:
                writer.write(b" ")
                await writer.drain()
                await asyncio.wait([answer], timeout=0.2)
                if answer.done():  # read on to the end: a 401 does not close it
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(reader.read(1 << 16), 0.2)
        except ConnectionError:
            pass
        status = await answer
        writer.close()
        return status, time.monotonic() - started

    done = await asyncio.gather(*(trickle(token=True) for _ in range(5)), trickle(token=False))
    # The app reads a body it has a token for (408), and answers 401 without reading one it
    # has none for: the connection is closed all the same, once the body is overdue.
    assert [status for status, _ in done] == [408] * 5 + [401]
    assert all(TIMEOUT * 0.9 < took < PATIENCE for _, took in done), done


async def test_a_client_gone_mid_body_is_one_log_line(limited: Limited) -> None:
    mark = len(limited.server.log().splitlines())
    _, writer = await connect(limited)
    writer.write(post(limited, b'{"jsonrpc": "2.0", "id": 1, "meth', length=1000))
    await writer.drain()
    await asyncio.sleep(0.3)
    writer.close()
    for _ in range(int(PATIENCE * 10)):
        if log_since(limited, mark):
            break
        await asyncio.sleep(0.1)
    await asyncio.sleep(0.5)  # anything else it would log, it logs by now
    lines = log_since(limited, mark)
    assert len(lines) == 1 and " chatstore.access: POST /mcp 499 " in lines[0], lines


# -- replies ----------------------------------------------------------------------------------


async def read_reply(reader: asyncio.StreamReader) -> tuple[int, int, bytes]:
    """Status, Content-Length and as much of the body as arrives before the connection ends."""
    status = await status_of(reader)
    length = 0
    while (line := await reader.readline()) not in (b"\r\n", b""):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":")[1])
    body = bytearray()
    try:
        while len(body) < length and (chunk := await reader.read(1 << 20)):
            body += chunk
    except ConnectionError:
        pass
    return status, length, bytes(body)


async def test_a_big_page_stays_within_the_reply_budget(limited: Limited) -> None:
    reader, writer = await connect(limited)
    call = tool_call(
        "get_conversation", conversation_id=limited.conversation_id, recent_messages=200
    )
    writer.write(post(limited, call))
    status, length, body = await read_reply(reader)
    writer.close()
    assert status == 200 and len(body) == length
    # Unbounded, this page was 12 MB: the 60 messages, twice.
    assert length <= BUDGET
    page = json.loads(body)["result"]["structuredContent"]
    assert page["has_more"] and 1 < len(page["messages"]) < MESSAGES
    assert page["messages"][-1]["content"].startswith(f"{MESSAGES - 1:04d}")


async def test_a_reply_never_read_is_dropped_after_the_send_timeout(limited: Limited) -> None:
    mark = len(limited.server.log().splitlines())
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # before connecting
        sock.connect(("127.0.0.1", limited.server.port))
        call = tool_call(
            "get_conversation", conversation_id=limited.conversation_id, recent_messages=200
        )
        sock.sendall(post(limited, call))
        for _ in range(int(PATIENCE * 5)):
            await asyncio.sleep(0.2)
            if any("read nothing of its reply" in line for line in log_since(limited, mark)):
                break
        reader, writer = await asyncio.open_connection(sock=sock, limit=1 << 26)
        status, length, body = await read_reply(reader)
        writer.close()
    assert status == 200 and len(body) < length  # what the kernel had; the rest dropped
    (line,) = [line for line in log_since(limited, mark) if "chatstore.http" in line]
    assert f"read nothing of its reply for {TIMEOUT:g} s: dropped the connection" in line
