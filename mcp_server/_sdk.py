"""chatstore's adaptation of the MCP SDK, in one module: tools that speak the contract, store
errors on the wire, and the two places that reach past the SDK's public surface.

Store errors become contract codes here and nowhere else: a tool's failure is a tool error whose
text, after the SDK's ``Error executing tool NAME: `` prefix, is ``code: message``; a resource's
or prompt's is a JSON-RPC error whose message is ``code: message``.

Hooks into the SDK's internals, each measured and each pinned by
``tests/mcp_server/test_sdk_hooks.py``, which fails naming this module when an upgrade breaks
what it relies on:

- ``Tool.fn_metadata`` (``output_model``, ``convert_result``): a tool's result is dumped once
  and its text rendered from that dict (``tool_result``). The SDK's own conversion serialises
  the model twice and revalidates it; measured with the bench, it made W6's in-process
  ``list_messages(50)`` round trip 20 % slower (2.67-2.71x → 3.22-3.25x the bare store call).
- ``MCPServer._lowlevel_server``: the only way to run a server over streams of one's own
  (``run_on_streams``), which the stdio transport of ``mcp_server._stdio`` needs: the SDK's
  stdio streams block a shutdown until the client sends another line, and their worker threads
  cost W6's stdio ``append_message`` round trip 25-30 % (3.06-3.29x → 3.96-4.21x).

A reply is kept within ``CHATSTORE_MAX_RESPONSE_BYTES`` here, where it is built: a page whose
reply would pass it is read again, smaller (``ContractTool``), so that its ``has_more``,
``next_cursor`` or ``truncated`` are the store's own for what the reply holds.

One public but provisional SDK interface is used here and in ``mcp_server.resources``: server
middleware. ``ProtocolErrors`` words the protocol failures the SDK words itself (an unknown
tool or prompt, missing or unknown prompt arguments, malformed params, an unknown method) in
the contract's codes, quoting at most a short prefix of what was sent and logging no
traceback; ``mcp_server.resources.ConversationResources`` answers ``resources/list`` per user
(the SDK lists static resources only) and refuses URIs that name no conversation.
``tests/mcp_server/test_protocol_errors.py`` and ``test_resources_prompts.py`` cover them.

Two more adapt what the SDK's transports answer to input that is not one JSON-RPC message
(JSON-RPC's -32700 parse error, -32600 invalid request), relying only on the wire: over stdio
the SDK's dispatcher drops such a line unanswered, so ``run_on_streams`` answers it; over
streamable HTTP the SDK's answer carries pydantic's whole report (the input, the library's
version), so ``EnvelopeErrors`` replaces it with a short one.
"""

from __future__ import annotations

import inspect
import json
import logging
import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, replace
from types import TracebackType
from typing import Any

import pydantic_core
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream
from mcp.server.context import CallNext, HandlerResult, ServerRequestContext
from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError, UnexpectedToolError
from mcp.server.mcpserver.tools import Tool
from mcp.shared.exceptions import MCPError
from mcp.shared.message import SessionMessage
from mcp_types import (
    INTERNAL_ERROR,
    INVALID_PARAMS,
    INVALID_REQUEST,
    METHOD_NOT_FOUND,
    PARSE_ERROR,
    CallToolResult,
    ErrorData,
    JSONRPCError,
    TextContent,
)
from pydantic import BaseModel, Field, ValidationError
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from mcp_server.tools import TOOLS, ToolSpec
from store import (
    Context,
    ConversationPage,
    ConversationWithMessages,
    InvalidArgument,
    MessagePage,
    NotFound,
    SearchPage,
    StoreError,
)
from store.contract import MAX_ECHOED_CHARS, Limits
from store.schemas import describe_validation_error, echoed, echoed_names

__all__ = [
    "OVERSIZE_LINE",
    "ContractTool",
    "EnvelopeErrors",
    "ProtocolErrors",
    "build_tools",
    "protocol_errors",
    "run_on_streams",
    "tool_result",
]

log = logging.getLogger("chatstore.server")

#: Arguments whose length limit an operator configures: their schemas state the configured
#: value (the store enforces it, with the same message wherever it is called from).
CONFIGURED_MAX_LENGTH = {
    "title": "max_title_chars",
    "content": "max_content_chars",
    "summary": "max_summary_chars",
}


#: Each page-shaped result: where its items are and the argument that sizes it.
PAGES: dict[type[BaseModel], tuple[str, str]] = {
    MessagePage: ("messages", "limit"),
    ConversationWithMessages: ("messages", "recent_messages"),
    ConversationPage: ("conversations", "limit"),
    SearchPage: ("results", "limit"),
    Context: ("messages", "max_tokens"),
}
#: A reply beside its structured content and text: the JSON-RPC envelope, with room for the
#: request's id.
ENVELOPE_BYTES = 1024


class ContractTool(Tool):
    """A tool whose every failure carries the contract's code, and whose reply stays within
    ``max_response_bytes``.

    Arguments the schema refuses become ``invalid_argument: <field>: <what is wrong>``,
    without echoing the rejected values; unknown arguments are refused too (a misspelt
    ``befor_seq`` silently dropped would return the wrong page, and a ``user`` argument must
    not look as if it did anything); a store error keeps its ``code: message`` text.

    A page (``PAGES``) whose reply would pass ``max_response_bytes`` is read again with a
    smaller ``limit`` (``max_tokens`` for get_context), in proportion, until it fits or holds
    one item: the store already stops its pages of messages near the budget, this holds the
    bound exactly, for every page, whatever its text's escaping adds.
    """

    #: None: no bound (the tools ``build_tools`` makes always have one).
    max_response_bytes: int | None = Field(default=None, exclude=True)

    async def run(
        self, arguments: dict[str, Any], context: Any, convert_result: bool = False
    ) -> Any:
        known = self.parameters.get("properties", {})
        unknown = sorted(name for name in arguments if name not in known)
        if unknown:
            raise ToolError(
                f"Error executing tool {self.name}: invalid_argument: unknown argument(s) "
                f"{echoed_names(unknown)}; this tool takes {', '.join(known)}"
            )
        result = await self._call(arguments, context)
        if not convert_result:
            return result
        if type(result) is not self.fn_metadata.output_model:
            return self.fn_metadata.convert_result(result)  # not ours: the SDK's way
        budget = self.max_response_bytes
        try:
            reply, size = _reply(result, budget)
            # Each re-read holds fewer items (or tokens), so this ends; ratios converge in one
            # or two, and only a page whose kept end is all heavy takes more.
            while budget is not None and size > budget:
                smaller = _smaller(result, arguments, budget / size)
                if smaller is None:
                    break  # one item: it goes out whole
                arguments = smaller
                result = await self._call(arguments, context)
                reply, size = _reply(result, budget)
        except ToolError:
            raise
        except Exception as exc:  # as the SDK does: no internal text reaches the client
            raise UnexpectedToolError(f"Error executing tool {self.name}") from exc
        return reply

    async def _call(self, arguments: dict[str, Any], context: Any) -> Any:
        try:
            return await super().run(arguments, context, convert_result=False)
        except ToolError as exc:  # UnexpectedToolError included
            cause = exc.__cause__
            if isinstance(cause, StoreError):
                raise ToolError(f"Error executing tool {self.name}: {cause}") from cause
            if isinstance(cause, ValidationError) and cause.title.endswith("Arguments"):
                raise ToolError(
                    f"Error executing tool {self.name}: "
                    f"invalid_argument: {describe_validation_error(cause)}"
                ) from cause
            raise


def _smaller(result: BaseModel, arguments: dict[str, Any], ratio: float) -> dict[str, Any] | None:
    """``arguments`` asking for about ``ratio`` of the page ``result`` is (at least one item),
    or None when it is not a page or holds one item."""
    page = PAGES.get(type(result))
    if page is None:
        return None
    items_name, argument = page
    items: list[Any] = getattr(result, items_name)
    if len(items) <= 1:
        return None
    if isinstance(result, Context):
        # Tokens for its summary and newest message at least: get_context then still
        # returns that message (unless it is a lone tool result), never an empty window.
        least = result.token_count - sum(m.token_count for m in items[:-1])
        tokens = max(least, int(result.token_count * ratio))
        return {**arguments, argument: tokens} if tokens < result.token_count else None
    return {**arguments, argument: max(1, min(len(items) - 1, int(len(items) * ratio)))}


def _reply(result: BaseModel, budget: int | None = None) -> tuple[CallToolResult, int]:
    """``tool_result(result)`` and the bytes its JSON-RPC reply takes at most: exactly (but for
    the envelope) where a looser bound would pass ``budget``."""
    structured = result.model_dump(mode="json", by_alias=True)
    text = pydantic_core.to_json(structured, indent=2)
    # In the reply the text is a JSON string: its quotes, backslashes and (indentation)
    # newlines are escaped, one byte more each; nothing else in it needs escaping. The
    # structured content is the same JSON without the indentation: at most the text less its
    # newlines, exactly its compact dump (a second dump, made only when the bound is over).
    # Escaping at most doubles the text, so a reply of up to three times it is counted only
    # where that could pass the budget (counting a 50-message page costs ~30 µs).
    size = ENVELOPE_BYTES + 3 * len(text)
    if budget is not None and size > budget:
        newlines = text.count(b"\n")
        escaped = len(text) + text.count(b'"') + text.count(b"\\") + newlines
        size = ENVELOPE_BYTES + escaped + len(text) - newlines
        if size > budget:
            size = ENVELOPE_BYTES + escaped + len(pydantic_core.to_json(structured))
    reply = CallToolResult(
        content=[TextContent(type="text", text=text.decode())], structured_content=structured
    )
    return reply, size


def tool_result(result: BaseModel) -> CallToolResult:
    """The tool's model as structured content plus the same JSON as text, dumped once: byte
    for byte the SDK's text (2-space indent) and structured content, in ~60 % of the CPU
    (0.28 instead of 0.47 ms for a 50-message page, measured)."""
    return _reply(result)[0]


def build_tools(limits: Limits, *, max_response_bytes: int) -> list[Tool]:
    """Every tool of ``mcp_server.tools``, its schema stating the configured ``limits``, each
    reply within ``max_response_bytes``."""
    return [_tool(spec, limits, max_response_bytes) for spec in TOOLS]


def _tool(spec: ToolSpec, limits: Limits, max_response_bytes: int) -> Tool:
    fn, title, annotations = spec
    tool = ContractTool.from_function(
        fn, title=title, description=inspect.cleandoc(fn.__doc__ or ""), annotations=annotations
    )
    assert isinstance(tool, ContractTool)
    tool.max_response_bytes = max_response_bytes
    values = asdict(limits)
    for name, schema in tool.parameters.get("properties", {}).items():
        if "description" in schema:
            for limit_name, value in values.items():
                placeholder = "{" + limit_name + "}"
                schema["description"] = schema["description"].replace(placeholder, str(value))
        if name in CONFIGURED_MAX_LENGTH:
            limit = values[CONFIGURED_MAX_LENGTH[name]]
            for branch in schema.get("anyOf", [schema]):
                if branch.get("type") == "string":
                    branch["maxLength"] = limit
    return tool


@contextmanager
def protocol_errors(not_found_code: int) -> Iterator[None]:
    """Store errors as JSON-RPC errors (resources and prompts have no ``isError`` result)."""
    try:
        yield
    except NotFound as exc:
        raise MCPError(code=not_found_code, message=str(exc)) from exc
    except InvalidArgument as exc:
        raise MCPError(code=INVALID_PARAMS, message=str(exc)) from exc
    except StoreError as exc:
        raise MCPError(code=INTERNAL_ERROR, message=str(exc)) from exc


#: An error message that already starts with one of the contract's codes.
_CODED = re.compile(r"(not_found|invalid_argument|conflict|limit_exceeded|unavailable): ")
#: How much of an SDK message without a code is kept when one is put in front of it.
_SDK_MESSAGE_CHARS = 200


class ProtocolErrors:
    """Server middleware (the innermost): the protocol failures the SDK words itself, in the
    contract's words.

    - ``tools/call`` of a tool that does not exist: the SDK's tool error says
      ``not_found: no tool named '…'`` (the SDK's own text echoed the whole name, and logged
      it twice). The SDK still answers, with the name cut short, so the result keeps the
      envelope each protocol version needs.
    - ``prompts/get``: an unknown prompt is ``not_found``, a missing or undeclared argument
      ``invalid_argument`` (the SDK answered them with JSON-RPC code 0 and logged a traceback
      for each).
    - Params the SDK refuses (a ``ValidationError``) are ``invalid_argument`` naming what is
      wrong; any other SDK error without a code gets one (``not_found`` for an unknown method),
      its message cut short and its ``data`` (which may echo the request) dropped.
    """

    def __init__(self, server: MCPServer[Any]) -> None:
        self._server = server
        self._tools: frozenset[str] | None = None

    async def __call__(
        self, ctx: ServerRequestContext[Any, Any], call_next: CallNext
    ) -> HandlerResult:
        if ctx.request_id is None:  # a notification: nothing is answered
            return await call_next(ctx)
        params = ctx.params if isinstance(ctx.params, Mapping) else None
        try:
            if ctx.method == "tools/call" and params is not None:
                name = params.get("name")
                if isinstance(name, str) and name not in await self._tool_names():
                    return await self._unknown_tool(ctx, params, name, call_next)
            elif ctx.method == "prompts/get" and params is not None:
                await self._check_prompt(params)
            return await call_next(ctx)
        except ValidationError as exc:
            raise MCPError(
                code=INVALID_PARAMS,
                message=f"invalid_argument: malformed params for {echoed(ctx.method)}: "
                f"{describe_validation_error(exc)}",
            ) from None
        except MCPError as exc:
            if _CODED.match(exc.error.message):
                raise
            raise _coded(exc.error, ctx.method) from None

    async def _tool_names(self) -> frozenset[str]:
        if self._tools is None:  # the tools are fixed once the server is built
            self._tools = frozenset(tool.name for tool in await self._server.list_tools())
        return self._tools

    async def _unknown_tool(
        self,
        ctx: ServerRequestContext[Any, Any],
        params: Mapping[str, Any],
        name: str,
        call_next: CallNext,
    ) -> HandlerResult:
        cut = name[:MAX_ECHOED_CHARS] + ("…" if len(name) > MAX_ECHOED_CHARS else "")
        result = await call_next(replace(ctx, params={**params, "name": cut}))
        if isinstance(result, BaseModel):
            result = result.model_dump(mode="json", by_alias=True, exclude_none=True)
        if not isinstance(result, dict) or not result.get("isError"):
            raise TypeError(f"tools/call of an unknown tool answered {result!r:.200}")
        text = f"not_found: no tool named {echoed(name)}; tools/list names this server's tools"
        return {**result, "content": [{"type": "text", "text": text}]}

    async def _check_prompt(self, params: Mapping[str, Any]) -> None:
        name, arguments = params.get("name"), params.get("arguments")
        if not isinstance(name, str) or not isinstance(arguments, Mapping | None):
            return  # malformed: the SDK's params validation refuses it
        prompt = next((p for p in await self._server.list_prompts() if p.name == name), None)
        if prompt is None:
            raise MCPError(
                code=INVALID_PARAMS,
                message=f"not_found: no prompt named {echoed(name)}; prompts/list names them",
            )
        declared = {a.name: a.required for a in prompt.arguments or []}
        takes = f"{name} takes {', '.join(declared) or 'no arguments'}"
        unknown = sorted(str(key) for key in arguments or {} if key not in declared)
        if unknown:
            raise MCPError(
                code=INVALID_PARAMS,
                message=f"invalid_argument: unknown argument(s) {echoed_names(unknown)}; {takes}",
            )
        missing = [n for n, required in declared.items() if required and n not in (arguments or {})]
        if missing:
            raise MCPError(
                code=INVALID_PARAMS,
                message=f"invalid_argument: missing argument(s) {', '.join(missing)}; {takes}",
            )


def _coded(error: ErrorData, method: str) -> MCPError:
    """An SDK error without a contract code, with one (and without its ``data``)."""
    if error.code == METHOD_NOT_FOUND:
        return MCPError(code=METHOD_NOT_FOUND, message=f"not_found: no method {echoed(method)}")
    if error.code in (INVALID_PARAMS, INVALID_REQUEST, PARSE_ERROR):
        text = error.message[:_SDK_MESSAGE_CHARS]
        return MCPError(code=error.code, message=f"invalid_argument: {text}")
    return MCPError(code=error.code, message=error.message[:_SDK_MESSAGE_CHARS])


#: The answers to input that is not one JSON-RPC message, over either transport.
NOT_JSON = ErrorData(code=PARSE_ERROR, message="invalid_argument: the message is not valid JSON")
NOT_A_MESSAGE = ErrorData(
    code=INVALID_REQUEST,
    message="invalid_argument: not a JSON-RPC request: send one JSON-RPC 2.0 request or "
    "notification object (batches are not supported)",
)


#: What the stdio transport reads in place of a line too long to read (not JSON, so the SDK's
#: transport hands it on as unreadable), and its answer.
OVERSIZE_LINE = "\x00 a line over the stdio limit\n"
OVERSIZE = ErrorData(
    code=INVALID_REQUEST,
    message="invalid_argument: the message is longer than this server reads over stdio",
)


def _envelope_error(exc: Exception) -> ErrorData | None:
    """The answer to what a transport could not read as a message (None: a blank line)."""
    if isinstance(exc, ValidationError):
        errors = exc.errors(include_url=False)
        if errors and errors[0]["type"] == "json_invalid":
            text = errors[0].get("input")
            if text == OVERSIZE_LINE:
                return OVERSIZE
            return None if isinstance(text, str) and not text.strip() else NOT_JSON
    return NOT_A_MESSAGE


class _AnsweredReadStream:
    """A session's read stream, minus what the transport could not read as a message: each of
    those is answered on the write stream with a parse or invalid-request error (the SDK's
    dispatcher drops them unanswered, and the client would wait for its timeout)."""

    def __init__(self, inner: Any, write_stream: Any) -> None:
        self._inner = inner
        self._write = write_stream

    @property
    def last_context(self) -> Any:  # the dispatcher reads the sender's context here
        return getattr(self._inner, "last_context", None)

    async def _answer(self, exc: Exception) -> None:
        error = _envelope_error(exc)
        if error is not None:
            log.info("answered a line that is not a JSON-RPC message: %s", error.message)
            await self._write.send(
                SessionMessage(JSONRPCError(jsonrpc="2.0", id=None, error=error))
            )

    async def receive(self) -> Any:
        while isinstance(item := await self._inner.receive(), Exception):
            await self._answer(item)
        return item

    def __aiter__(self) -> _AnsweredReadStream:
        return self

    async def __anext__(self) -> Any:
        while isinstance(item := await self._inner.__anext__(), Exception):
            await self._answer(item)
        return item

    async def aclose(self) -> None:
        await self._inner.aclose()

    async def __aenter__(self) -> _AnsweredReadStream:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc_val: BaseException | None,
        exc_tb: TracebackType | None,
    ) -> None:
        await self.aclose()


async def run_on_streams(
    server: MCPServer[Any],
    read_stream: MemoryObjectReceiveStream[Any],
    write_stream: MemoryObjectSendStream[Any],
) -> None:
    """Serve one session over the given streams, as ``MCPServer.run_stdio_async`` does over
    the SDK's own stdio streams, answering lines that are not JSON-RPC messages."""
    lowlevel = server._lowlevel_server
    await lowlevel.run(
        _AnsweredReadStream(read_stream, write_stream),
        write_stream,
        lowlevel.create_initialization_options(),
    )


#: An error answer longer than this is passed on as it is (the SDK's are a few hundred bytes).
_HELD_BODY_BYTES = 64 * 1024


class EnvelopeErrors:
    """ASGI middleware around the streamable HTTP app: its 4xx JSON-RPC error answers (what
    it refuses before any handler runs) in the contract's words.

    The SDK's handshake-era transport answers a body that is not one JSON-RPC message (a
    batch, ``params: "…"``) with -32602 and pydantic's whole report (the input echoed, the
    library's version in a URL), and bad JSON with the parser's words: the first becomes
    JSON-RPC's -32600 and both a short message. Its other refusals (and those of the
    stateless protocol's checks: a routing header that does not match the body, an
    unsupported version) keep their fixed text behind a code, cut short. Only 4xx JSON
    answers are held, and only until their body is complete."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start: Message | None = None
        body = bytearray()

        async def sending(message: Message) -> None:
            nonlocal start
            if message["type"] == "http.response.start" and _held(message):
                start = message
                return
            if start is None or message["type"] != "http.response.body":
                await send(message)
                return
            body.extend(message.get("body", b""))
            if message.get("more_body") and len(body) <= _HELD_BODY_BYTES:
                return
            held, start = start, None
            answer = _rewritten(bytes(body)) if not message.get("more_body") else None
            if answer is None:
                await send(held)
                await send({**message, "body": bytes(body)})
                return
            headers = [(k, v) for k, v in held.get("headers", []) if k.lower() != b"content-length"]
            headers.append((b"content-length", str(len(answer)).encode()))
            await send({**held, "headers": headers})
            await send({"type": "http.response.body", "body": answer, "more_body": False})

        await self.app(scope, receive, sending)


def _held(start: Message) -> bool:
    if not 400 <= int(start["status"]) < 500:
        return False
    return any(
        k.lower() == b"content-type" and v.split(b";")[0].strip() == b"application/json"
        for k, v in start.get("headers", [])
    )


def _rewritten(body: bytes) -> bytes | None:
    """The answer in the contract's words, or None to keep ``body`` as it is."""
    try:
        answer = json.loads(body)
    except ValueError:
        return None
    if not isinstance(answer, dict) or answer.get("jsonrpc") != "2.0":
        return None
    error = answer.get("error")
    if not isinstance(error, dict) or not isinstance(error.get("code"), int):
        return None
    message = str(error.get("message", ""))
    if _CODED.match(message):
        return None
    request_id = answer.get("id")
    if request_id is None and error["code"] == PARSE_ERROR:
        replacement = NOT_JSON
    elif request_id is None and error["code"] == INVALID_PARAMS:
        replacement = NOT_A_MESSAGE
    else:
        data = error.get("data")
        small = data is not None and len(json.dumps(data)) <= _SDK_MESSAGE_CHARS
        replacement = ErrorData(
            code=error["code"],
            message=f"invalid_argument: {message[:_SDK_MESSAGE_CHARS]}",
            data=data if small else None,
        )
    wire = replacement.model_dump(mode="json", by_alias=True, exclude_none=True)
    return json.dumps(
        {"jsonrpc": "2.0", "id": request_id, "error": wire}, separators=(",", ":")
    ).encode()
