"""What an operator needs from the HTTP server beside MCP: ``/healthz`` and ``/readyz`` for a load
balancer, one access-log line per request, JSON logs (``CHATSTORE_LOG_FORMAT=json``), and a
deadline on request bodies.

The probes are the SDK's custom routes (outside its bearer-token auth, as probes must be). The
access log is an ASGI middleware around the whole app: it sees the status the app sent, the
user the SDK's auth middleware put in the request's scope, and the tool named by a
``tools/call`` body, which it peeks at as the app reads it; it never logs a token, an argument
or any content. A request whose client goes away before the response is logged with status
499 (nginx's "client closed request"), in that one line.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections import deque
from collections.abc import Awaitable, Callable, MutableMapping
from datetime import UTC, datetime
from typing import Any

import anyio
from mcp.server.mcpserver import MCPServer
from mcp.server.transport_security import DEFAULT_MAX_REQUEST_BODY_SIZE
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from store import ConversationStore, StoreError

__all__ = ["AccessLog", "JsonFormatter", "RequestBody", "add_probes"]

access_log = logging.getLogger("chatstore.access")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

#: How much of a request body the access log reads to find the tool's name (a tools/call
#: names it near the start; arguments after it are never parsed for the log).
_PEEK_BYTES = 64 * 1024


def add_probes(server: MCPServer[Any], store: ConversationStore) -> None:
    """``GET /healthz``: 200 while the process serves. ``GET /readyz``: 200 when the database
    answers and its schema is at head, else 503 with the reason (no auth on either)."""

    async def healthz(_: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def readyz(_: Request) -> Response:
        try:
            schema = await store.check_ready()
        except StoreError as exc:
            return JSONResponse({"status": "unavailable", "reason": str(exc)}, status_code=503)
        return JSONResponse({"status": "ready", "database": store.dialect, "schema": schema})

    server.custom_route("/healthz", methods=["GET"], include_in_schema=False)(healthz)
    server.custom_route("/readyz", methods=["GET"], include_in_schema=False)(readyz)


class AccessLog:
    """One ``chatstore.access`` line per HTTP request: method, path, status, user, tool and
    duration."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 0
        gone = False
        body = bytearray()

        async def peek() -> Message:
            nonlocal gone
            message = await receive()
            if message["type"] == "http.request" and len(body) < _PEEK_BYTES:
                body.extend(message.get("body", b"")[: _PEEK_BYTES - len(body)])
            elif message["type"] == "http.disconnect":
                gone = True
            return message

        async def sent(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, peek, sent)
        finally:
            user = scope.get("user")
            token = getattr(user, "access_token", None)
            fields = {
                "method": scope.get("method", ""),
                "path": scope.get("path", ""),
                "status": status or (CLIENT_CLOSED if gone else 500),
                "user": getattr(token, "subject", None),
                "tool": _tool_name(bytes(body)),
                "duration_ms": round((time.perf_counter() - started) * 1000, 3),
            }
            access_log.info(
                "%(method)s %(path)s %(status)d user=%(user)s tool=%(tool)s %(duration_ms).1f ms",
                fields,
                extra={"access": fields},
            )


#: The status an access line shows for a request whose client left before any response.
CLIENT_CLOSED = 499


class RequestBody:
    """A request's whole body read before the app sees the request, within ``timeout``
    seconds of its headers: a client that trickles it gets 408 and its connection closed,
    and one that goes away halfway leaves nothing for the app to fail on (without this, the
    SDK logged each such request as a ClientDisconnect traceback).

    Bodies are held as the chunks that arrived, replayed to the app as they came; past the
    SDK's own cap (``DEFAULT_MAX_REQUEST_BODY_SIZE``) the app gets the request at once, and
    the SDK answers 413 without reading the rest.
    """

    def __init__(
        self, app: ASGIApp, timeout: float, max_bytes: int = DEFAULT_MAX_REQUEST_BODY_SIZE
    ) -> None:
        self.app = app
        self.timeout = timeout
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or _declared_length(scope) > self.max_bytes:
            await self.app(scope, receive, send)  # the SDK refuses an oversize body unread
            return
        arrived: deque[Message] = deque()
        size = 0
        with anyio.move_on_after(self.timeout) as deadline:
            while size <= self.max_bytes:
                message = await receive()
                if message["type"] == "http.disconnect":
                    return  # nobody to answer; AccessLog logs the one line
                arrived.append(message)
                size += len(message.get("body", b""))
                if not message.get("more_body", False):
                    break
        if deadline.cancelled_caught:
            await _too_slow(send, self.timeout)
            return

        async def replay() -> Message:
            return arrived.popleft() if arrived else await receive()

        await self.app(scope, replay, send)


def _declared_length(scope: Scope) -> int:
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            return int(value) if value.isdigit() else 0
    return 0


async def _too_slow(send: Send, seconds: float) -> None:
    body = f"408 Request Timeout: the request body did not arrive within {seconds:g} s\n"
    await send(
        {
            "type": "http.response.start",
            "status": 408,
            "headers": [
                (b"content-type", b"text/plain; charset=utf-8"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body.encode()})


#: A body longer than the peek: the first "name" of its params (clients send the tool's name
#: before its arguments).
_PARAMS_NAME = re.compile(rb'"params"\s*:\s*\{\s*"name"\s*:\s*"([A-Za-z0-9_.-]{1,100})"')


def _tool_name(body: bytes) -> str | None:
    """The tool a JSON-RPC ``tools/call`` body names (None for anything else)."""
    if b"tools/call" not in body:
        return None
    try:
        request = json.loads(body)
    except ValueError:
        found = _PARAMS_NAME.search(body)
        return found.group(1).decode() if found else None
    if isinstance(request, dict) and request.get("method") == "tools/call":
        params = request.get("params")
        name = params.get("name") if isinstance(params, dict) else None
        return name[:100] if isinstance(name, str) else None
    return None


class JsonFormatter(logging.Formatter):
    """A log record as one JSON object: time, level, logger, message, and an access line's
    fields at the top level."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        access = getattr(record, "access", None)
        if isinstance(access, dict):
            out.update(access)
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        return json.dumps(out, ensure_ascii=False)
