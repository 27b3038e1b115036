"""chatstore's adaptation of uvicorn, in one module: an HTTP/1.1 protocol that bounds what a
client may send, and how slowly, before any work is done for it.

uvicorn's httptools protocol takes a request's head at any size and speed: llhttp hands a long
header or URL over in pieces that httptools and uvicorn join with ``+=``, so one socket sending
a 64 MB header kept the event loop busy for 3.4-3.8 s (every other client waited that long;
5.6-6.4 s with three such sockets, RSS +260 MB); a head trickled a byte at a time never timed
out; and a reply its client never reads stays in memory for as long as the connection lives
(20 such clients of 40 MB pages held 770 MB, measured). ``bounded_protocol`` returns uvicorn's
``HttpToolsProtocol`` (chosen with ``Config(http=...)``, uvicorn's public way to pass one) with:

- the request target at most ``max_url_bytes`` (else 414) and the request line and headers at
  most ``max_header_bytes`` (else 431), counted as they arrive, before uvicorn keeps them;
- the head complete within ``header_timeout`` seconds of the connection's opening, of the
  request's first byte, or of the last answer when bytes that begin no request keep coming
  (else 408; a connection that sent nothing is closed silently);
- the body complete within ``body_timeout`` seconds of the head, or the connection closed once
  the app has answered (an app that reads the body answers 408 itself:
  ``mcp_server.operations.RequestBody``; this covers a body nobody reads, after a 401);
- a pipelined request's deadlines counted from its turn (uvicorn reads nothing more while the
  request before it is answered);
- a connection whose reply sits in its send buffer, above the high-water mark, without
  shrinking for ``send_timeout`` seconds is dropped, and the reply's memory with it.

A refusal is one warning on ``chatstore.http``; its answer is followed by a short lingering
close, so that a client still sending the rest of its head reads the status instead of a reset.

What this relies on of uvicorn's internals (``HttpToolsProtocol``'s parser callbacks
``on_message_begin``, ``on_url``, ``on_header``, ``on_headers_complete``, ``on_body`` and
``on_message_complete``, its ``data_received``, ``on_response_complete``,
``pause_writing``/``resume_writing``,
``connection_made``/``connection_lost``, and its ``transport``, ``loop``, ``client``, ``cycle``
and ``server_state`` attributes) is pinned by ``tests/mcp_server/test_http_limits.py``, which
fails naming this module when an upgrade breaks it.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any, ClassVar

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from store import Settings

__all__ = ["HttpLimits", "bounded_protocol"]

log = logging.getLogger("chatstore.http")

#: How long a refused connection is still read (and what arrives dropped) after its answer.
LINGER_SECONDS = 2.0
#: The request line beside its target (method, version, separators), counted up front.
_REQUEST_LINE = 16
#: A header's separators (": " and CRLF) beside its name and value.
_HEADER_SEPARATORS = 4

_REASONS = {
    408: ("Request Timeout", "the request's headers did not arrive in time"),
    414: ("URI Too Long", "the request target is too long"),
    431: ("Request Header Fields Too Large", "the request's headers are too large"),
}


@dataclass(frozen=True, slots=True)
class HttpLimits:
    """What a client may send, and how slowly (``CHATSTORE_HTTP_*``)."""

    max_header_bytes: int
    max_url_bytes: int
    header_timeout: float
    body_timeout: float
    send_timeout: float

    @classmethod
    def from_settings(cls, settings: Settings) -> HttpLimits:
        return cls(
            max_header_bytes=settings.http_max_header_bytes,
            max_url_bytes=settings.http_max_url_bytes,
            header_timeout=settings.http_header_timeout,
            body_timeout=settings.http_body_timeout,
            send_timeout=settings.http_send_timeout,
        )


def bounded_protocol(limits: HttpLimits) -> type[BoundedHttpProtocol]:
    """The protocol class to give ``uvicorn.Config(http=...)``, bound to ``limits``."""

    class Bounded(BoundedHttpProtocol):
        pass

    Bounded.limits = limits
    return Bounded


class BoundedHttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with bounds on a request's head and on unread replies."""

    limits: ClassVar[HttpLimits]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        #: Bytes of the current request's head seen so far; None between heads.
        self._head: int | None = None
        self._url = 0
        #: Head bytes that arrived in whole reads during which no parser callback ran: part
        #: of a header name or value that httptools holds but has not handed over yet.
        self._unreported = 0
        self._reported = False
        self._refused: int | None = None
        self._head_timer: asyncio.TimerHandle | None = None
        self._body_timer: asyncio.TimerHandle | None = None
        #: The body's deadline passed while the app was still on the request.
        self._body_late = False
        # A pipelined request waits behind the one being answered, with reading paused: its
        # head and body deadlines start when its turn comes, not when its first bytes came.
        self._head_waiting = False
        self._body_waiting = False
        self._send_timer: asyncio.TimerHandle | None = None
        self._send_buffered = 0

    # -- the connection ------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)  # type: ignore[arg-type]
        self._arm_head_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_head_timer()
        self._cancel_body_timer()
        if self._send_timer is not None:
            self._send_timer.cancel()
            self._send_timer = None
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._refused is not None:
            return  # lingering after a refusal: what arrives is dropped unread
        self._reported = False
        super().data_received(data)
        if self._refused is None and self._head is not None:
            self._unreported = 0 if self._reported else self._unreported + len(data)
            if self._head + self._unreported > self.limits.max_header_bytes:
                self._refused = 431
        if self._refused is not None:
            self._refuse(self._refused)
        elif self._head is None and self._idle():
            # Bytes that begin no request (a bare CRLF between requests, which the parser
            # skips) cancelled uvicorn's keep-alive timer: the head deadline stands in for it,
            # or such bytes could hold a connection open for ever.
            self._arm_head_timer()

    def _idle(self) -> bool:
        """No request in progress: none yet, or the last one answered."""
        return self.cycle is None or self.cycle.response_complete

    # -- the parser's callbacks ----------------------------------------------------------

    def on_message_begin(self) -> None:
        self._reported = True
        if self._refused is not None:
            return
        super().on_message_begin()
        self._head, self._url, self._unreported = _REQUEST_LINE, 0, 0
        if self._idle():
            self._arm_head_timer()
        else:
            self._cancel_head_timer()
            self._head_waiting = True

    def on_url(self, url: bytes) -> None:
        self._reported = True
        if self._refused is not None or self._head is None:
            return
        self._url += len(url)
        self._head += len(url)
        if self._url > self.limits.max_url_bytes:
            self._refused = 414
        elif self._head > self.limits.max_header_bytes:
            self._refused = 431
        else:
            super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._reported = True
        if self._refused is not None or self._head is None:
            return
        self._head += len(name) + len(value) + _HEADER_SEPARATORS
        if self._head > self.limits.max_header_bytes:
            self._refused = 431
        else:
            super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._reported = True
        self._head = None
        self._cancel_head_timer()
        self._head_waiting = False
        if self._refused is None:
            self._cancel_body_timer()
            self._body_late = False
            if self._idle():
                self._arm_body_timer()
            else:
                self._body_waiting = True
            super().on_headers_complete()

    def on_body(self, body: bytes) -> None:
        if self._refused is None:
            super().on_body(body)

    def on_message_complete(self) -> None:
        self._cancel_body_timer()
        self._body_late = self._body_waiting = False
        if self._refused is None:
            super().on_message_complete()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if self._body_late:
            self._close_for_body()
        elif not self.transport.is_closing():
            # The next pipelined request's turn: its deadlines start now.
            if self._body_waiting:
                self._body_waiting = False
                self._arm_body_timer()
            if self._head_waiting:
                self._head_waiting = False
                self._arm_head_timer()

    def _arm_body_timer(self) -> None:
        self._cancel_body_timer()
        self._body_timer = self.loop.call_later(self.limits.body_timeout, self._body_overdue)

    # -- refusals ------------------------------------------------------------------------

    def _arm_head_timer(self) -> None:
        if self._head_timer is None:
            self._head_timer = self.loop.call_later(
                self.limits.header_timeout, self._head_timed_out
            )

    def _cancel_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if self._refused is not None or self.transport.is_closing():
            return
        if self._head is None and self._idle():
            self.transport.close()  # no request begun since the last answer (or ever)
            return
        if self._head is not None:
            self._refused = 408
            self._refuse(408)

    def _cancel_body_timer(self) -> None:
        if self._body_timer is not None:
            self._body_timer.cancel()
            self._body_timer = None

    def _body_overdue(self) -> None:
        self._body_timer = None
        if self.cycle is not None and self.cycle.response_complete:
            self._close_for_body()  # answered without it: nobody will read the rest
        else:
            self._body_late = True  # the app's own deadline answers; close after that

    def _close_for_body(self) -> None:
        self._body_late = False
        if not self.transport.is_closing():
            log.warning(
                "%s: the request body did not arrive within %g s: closed the connection",
                self._who(),
                self.limits.body_timeout,
            )
            self.transport.close()

    def _refuse(self, status: int) -> None:
        """Answer ``status`` (unless a reply is under way) and close after a short linger."""
        self._cancel_head_timer()
        self._head = None
        reason, detail = _REASONS[status]
        limit = {414: self.limits.max_url_bytes, 431: self.limits.max_header_bytes}.get(status)
        detail += f" (at most {limit} bytes)" if limit else f" ({self.limits.header_timeout:g} s)"
        log.warning("%s: %s: answered %d and closed the connection", self._who(), detail, status)
        if self.transport.is_closing():
            return
        if self.cycle is None or self.cycle.response_complete:
            body = f"{status} {reason}: {detail}\n".encode()
            head = [f"HTTP/1.1 {status} {reason}\r\n".encode()]
            for name, value in self.server_state.default_headers:
                head.append(name + b": " + value + b"\r\n")
            head.append(b"content-type: text/plain; charset=utf-8\r\n")
            head.append(b"content-length: %d\r\nconnection: close\r\n\r\n" % len(body))
            self.transport.write(b"".join(head) + body)
            if self.transport.can_write_eof():
                self.transport.write_eof()
        self.flow.resume_reading()
        self.loop.call_later(LINGER_SECONDS, self.transport.close)

    def _who(self) -> str:
        return f"{self.client[0]}:{self.client[1]}" if self.client else "a client"

    # -- replies the client does not read ------------------------------------------------

    def pause_writing(self) -> None:
        super().pause_writing()
        if self._send_timer is None:
            self._send_buffered = self.transport.get_write_buffer_size()
            self._send_timer = self.loop.call_later(self.limits.send_timeout, self._send_check)

    def resume_writing(self) -> None:
        super().resume_writing()
        if self._send_timer is not None:
            self._send_timer.cancel()
            self._send_timer = None

    def _send_check(self) -> None:
        buffered = self.transport.get_write_buffer_size()
        if buffered < self._send_buffered:  # the client is reading, however slowly
            self._send_buffered = buffered
            self._send_timer = self.loop.call_later(self.limits.send_timeout, self._send_check)
            return
        self._send_timer = None
        log.warning(
            "%s read nothing of its reply for %g s: dropped the connection (%d bytes unsent)",
            self._who(),
            self.limits.send_timeout,
            buffered,
        )
        self.transport.abort()
