"""Shared helpers for the store tests: small builders, and snapshots of what a call could change.

Raw SQL beside the store is ``tests.rawdb.RawDB``.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from datetime import datetime
from typing import Any

from store.schemas import Conversation, Message
from store.settings import Settings
from store.store import ConversationStore
from tests.rawdb import RawDB
from tests.support import RFC3339_MICROS

#: Text the store must refuse anywhere: NUL, and unpaired surrogates (high, low, inside text).
BAD_TEXTS = ["nul\x00inside", "\ud800", "lone \udfff low"]


def compact_json_size(value: Any) -> int:
    """Bytes of ``value`` as compact UTF-8 JSON: how the contract measures metadata/tool_calls."""
    return len(json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode("utf-8"))


async def append_many(
    store: ConversationStore, user: str, conversation_id: uuid.UUID, count: int
) -> list[Message]:
    """Append ``count`` user messages whose content is ``m<seq>``."""
    messages = []
    for n in range(1, count + 1):
        messages.append(
            await store.append_message(
                user=user, conversation_id=conversation_id, role="user", content=f"m{n}"
            )
        )
    return messages


async def conversation_with(store: ConversationStore, user: str, count: int) -> Conversation:
    """A new conversation holding ``count`` messages ``m1`` … ``m<count>``."""
    conversation = await store.create_conversation(user=user)
    await append_many(store, user, conversation.id, count)
    return conversation


def parse_rfc3339(text: str) -> datetime:
    assert RFC3339_MICROS.match(text), text
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


async def snapshot(
    store: ConversationStore, raw: RawDB, user: str, conversation_id: uuid.UUID
) -> tuple[Any, ...]:
    """Everything a write could change for ``user``: compare before and after a refused call."""
    conversation = await store.get_conversation(user=user, conversation_id=conversation_id)
    return (
        conversation.model_dump(),
        await raw.messages_in(conversation_id),
        await raw.messages_of(user),
        await raw.conversations_of(user),
        await raw.user_rows(user),
    )


@asynccontextmanager
async def separate_stores(settings: Settings, count: int) -> AsyncIterator[list[ConversationStore]]:
    """``count`` independently opened stores on one database: separate connections/pools."""
    async with AsyncExitStack() as stack:
        stores = [
            await stack.enter_async_context(ConversationStore(settings)) for _ in range(count)
        ]
        yield stores
