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

One public but provisional SDK interface is used elsewhere: server middleware, through which
``mcp_server.resources.ConversationList`` answers ``resources/list`` per user (the SDK lists
static resources only); ``tests/mcp_server/test_resources_prompts.py`` covers it.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict
from typing import Any

import pydantic_core
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream
from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError, UnexpectedToolError
from mcp.server.mcpserver.tools import Tool
from mcp.shared.exceptions import MCPError
from mcp_types import INTERNAL_ERROR, INVALID_PARAMS, CallToolResult, TextContent
from pydantic import BaseModel, Field, ValidationError

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
from store.contract import Limits
from store.schemas import describe_validation_error

__all__ = ["ContractTool", "build_tools", "protocol_errors", "run_on_streams", "tool_result"]

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
#: How many times a page is read again, smaller, to fit the reply budget.
MAX_SHRINKS = 4


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
                f"{', '.join(repr(n[:64]) for n in unknown)}; this tool takes "
                f"{', '.join(known)}"
            )
        result = await self._call(arguments, context)
        if not convert_result:
            return result
        if type(result) is not self.fn_metadata.output_model:
            return self.fn_metadata.convert_result(result)  # not ours: the SDK's way
        budget = self.max_response_bytes
        try:
            reply, size = _reply(result, budget)
            for _ in range(MAX_SHRINKS):
                if budget is None or size <= budget:
                    break
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


async def run_on_streams(
    server: MCPServer[Any],
    read_stream: MemoryObjectReceiveStream[Any],
    write_stream: MemoryObjectSendStream[Any],
) -> None:
    """Serve one session over the given streams, as ``MCPServer.run_stdio_async`` does over
    the SDK's own stdio streams."""
    lowlevel = server._lowlevel_server
    await lowlevel.run(read_stream, write_stream, lowlevel.create_initialization_options())
