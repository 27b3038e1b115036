"""The export format (JSONL, version 1): what ``chatstore export`` writes and ``import`` reads.

One JSON object per line: a header first, ``{"format": "chatstore", "version": 1}``; then each
conversation, ``{"type": "conversation", …}``, followed by its messages in seq order,
``{"type": "message", …}``. Every field is there: the user, ids, key, summary, forked_from,
timestamps (RFC 3339 UTC, microseconds), and each message's idempotency key, raw and
token_count. Keys are sorted and the JSON compact, so a line does not depend on how the
backend stores JSON (PostgreSQL's jsonb reorders keys).
"""

from __future__ import annotations

import json
from typing import Any

from store.schemas import Conversation, Message, rfc3339

__all__ = ["FORMAT", "VERSION", "conversation_record", "header", "line", "message_record"]

FORMAT = "chatstore"
VERSION = 1


def header() -> dict[str, Any]:
    return {"format": FORMAT, "version": VERSION}


def conversation_record(user: str, conversation: Conversation) -> dict[str, Any]:
    record = conversation.model_dump(mode="json")
    record.update(type="conversation", user=user)
    return record


def message_record(message: Message, idempotency_key: str | None) -> dict[str, Any]:
    record = message.model_dump(mode="json")
    record.update(type="message", idempotency_key=idempotency_key)
    record["created_at"] = rfc3339(message.created_at)
    return record


def line(record: dict[str, Any]) -> str:
    """One record as its line (without the newline)."""
    return json.dumps(record, ensure_ascii=False, sort_keys=True, separators=(",", ":"))
