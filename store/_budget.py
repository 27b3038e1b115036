"""What a message weighs in a reply: pages of messages are cut by it where their reply would
pass ``CHATSTORE_MAX_RESPONSE_BYTES``.

An MCP reply carries a page twice, as structured content and as that JSON in a text block, so
a page of messages holds what fits in half the budget, each message weighed as its JSON: its
content and JSON fields exactly, the rest (ids, timestamp, numbers, keys, the text's
indentation and escaped quotes) as ``MESSAGE_OVERHEAD``. The MCP layer still checks each
reply's exact size (``mcp_server._sdk``): this keeps a page of large messages from being read
whole only to be cut there.
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
    """``message``'s JSON size, near enough to cut pages by."""
    size = MESSAGE_OVERHEAD + len(pydantic_core.to_json(message.content))
    if message.tool_calls is not None:
        size += len(pydantic_core.to_json(message.tool_calls))
    if message.metadata:
        size += len(pydantic_core.to_json(message.metadata))
    if message.raw is not None:
        size += len(pydantic_core.to_json(message.raw))
    if message.tool_call_id is not None:
        size += len(message.tool_call_id)
    return size
