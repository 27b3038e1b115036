"""What a message weighs in a reply: pages of messages are cut by it where their reply would
pass ``CHATSTORE_MAX_RESPONSE_BYTES``.

An MCP reply carries a page twice, as structured content and as that JSON in a text block, so
a page of messages holds what fits in half the budget, each message weighed about as its JSON:
its content's UTF-8 bytes (``len`` for ASCII; where it holds what JSON escapes, its JSON and
half the escapes the text block adds), its JSON fields as JSON, the rest (ids, timestamp,
numbers, keys, the text's indentation) as ``MESSAGE_OVERHEAD``. The MCP layer checks
each reply's exact size (``mcp_server._sdk``) and reads a page again, smaller, when escaping
makes it pass; this keeps a page of large messages from being read whole only to be cut there,
at ~0.1 µs a message of plain text.
"""

from __future__ import annotations

import pydantic_core

from store.schemas import Message

__all__ = ["MESSAGE_OVERHEAD", "message_bytes", "page_bytes"]

#: A message's JSON besides its content and JSON fields, with room for its text's indentation.
MESSAGE_OVERHEAD = 400


def page_bytes(max_response_bytes: int) -> int:
    """The JSON a page may hold for its reply to stay within ``max_response_bytes``."""
    return max_response_bytes // 2


def message_bytes(message: Message) -> int:
    """``message``'s JSON size, near enough to cut pages by: its text as UTF-8 (escapes
    aside), its JSON fields as JSON, and ``MESSAGE_OVERHEAD``."""
    content = message.content
    size = MESSAGE_OVERHEAD + (len(content) if content.isascii() else len(content.encode()))
    if not content.isprintable() or '"' in content or "\\" in content:
        # Escapes: a control character weighs six bytes as JSON, and the reply's text block
        # escapes each quote and backslash of that JSON again. The reply holds the JSON twice
        # plus those, so half of them is this message's share against half the budget (as
        # exact as the MCP layer's own count: get_context has no smaller re-read to fall back
        # on when its messages are counted as 0 tokens).
        escaped = pydantic_core.to_json(content)
        again = escaped.count(b'"') + escaped.count(b"\\")
        size = MESSAGE_OVERHEAD + len(escaped) + again // 2 + 1
    if message.tool_calls is not None:
        size += len(pydantic_core.to_json(message.tool_calls))
    if message.metadata:
        size += len(pydantic_core.to_json(message.metadata))
    if message.raw is not None:
        size += len(pydantic_core.to_json(message.raw))
    if message.tool_call_id is not None:
        size += len(message.tool_call_id)
    return size
