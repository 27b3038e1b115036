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
from datetime import UTC, datetime
from typing import Any

import anyio
from mcp.server.mcpserver import MCPServer
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from store import ConversationStore, StoreError

__all__ = ["AccessLog", "JsonFormatter", "RequestBody", "add_probes"]

access_log = logging.getLogger("chatstore.access")


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
    """A deadline on a request's body: it must have arrived ``timeout`` seconds after its
    headers, else 408 and the connection closed; and a client that goes away halfway ends the
    request quietly (without this, the SDK logged each one as a ClientDisconnect traceback).

    The body is not read here but as the app reads it, so nothing is held for a request the
    app refuses unread (no token: 401; the body's deadline is then the HTTP protocol's, in
    ``mcp_server._uvicorn``). Either way out is ``_Abandoned``, raised from
    ``receive`` into the app (the SDK reads a body whole, in its body-size middleware, before
    any handler that would log an error), and caught here; what the app still tries to send
    after it is dropped. ``tests/mcp_server/test_http_limits.py`` fails when an SDK upgrade logs
    such a request after all (it expects the one access line).
    """

    def __init__(self, app: ASGIApp, timeout: float) -> None:
        self.app = app
        self.timeout = timeout

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        deadline = anyio.current_time() + self.timeout
        complete = False
        abandoned: str | None = None

        async def timed() -> Message:
            nonlocal complete, abandoned
            if complete:
                return await receive()  # after the body: a disconnect, whenever it comes
            with anyio.move_on_after(deadline - anyio.current_time()):
                message = await receive()
                if message["type"] == "http.disconnect":
                    abandoned = "gone"
                    raise _Abandoned
                complete = not message.get("more_body", False)
                return message
            abandoned = "late"
            raise _Abandoned

        async def guarded(message: Message) -> None:
            if abandoned is None:
                await send(message)

        try:
            await self.app(scope, timed, guarded)
        except _Abandoned:
            pass
        except BaseExceptionGroup as group:
            abandon, rest = group.split(_Abandoned)
            if abandon is None:
                raise
            if rest is not None:
                raise rest from None
        if abandoned == "late":
            await _too_slow(send, self.timeout)


class _Abandoned(BaseException):
    """The request's body will not come: its client left, or took too long. A BaseException,
    like cancellation, since it is control flow: no ``except Exception`` on the way out should
    turn it into an error response or a logged traceback."""


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
    except (ValueError, RecursionError):  # RecursionError: nested too deep to parse
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
