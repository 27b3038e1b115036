"""Shared helpers for the store tests: raw SQL beside the store, and small builders.

``RawDB`` talks to the store's own database without going through the store (asyncpg on
PostgreSQL, the stdlib ``sqlite3`` on SQLite), so tests can check what was really written and
act like an operator with a ``psql``/``sqlite3`` shell. SQL is written once, in PostgreSQL's
``$N`` placeholder style.
"""

from __future__ import annotations

import json
import re
import sqlite3
import uuid
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from datetime import UTC, datetime
from typing import Any

import asyncpg

from store.schemas import Conversation, Message
from store.settings import Settings
from store.store import ConversationStore

_PLACEHOLDER = re.compile(r"\$(\d+)")

#: RFC 3339 UTC with exactly six fractional digits, as the contract promises.
RFC3339_MICROS = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}Z$")

#: Text the store must refuse anywhere: NUL, and unpaired surrogates (high, low, inside text).
BAD_TEXTS = ["nul\x00inside", "\ud800", "lone \udfff low"]


def sqlite_path(settings: Settings) -> str:
    """The file behind a ``sqlite://`` URL."""
    return settings.resolved_database_url.split("://", 1)[1].split("?", 1)[0]


def compact_json_size(value: Any) -> int:
    """Bytes of ``value`` as compact UTF-8 JSON: how the contract measures metadata/tool_calls."""
    return len(json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode("utf-8"))


class RawDB:
    """Plain SQL on the store's database, outside the store."""

    def __init__(
        self, dialect: str, pg: asyncpg.Connection | None, lite: sqlite3.Connection | None
    ) -> None:
        self.dialect = dialect
        self._pg = pg
        self._lite = lite

    @classmethod
    async def connect(cls, settings: Settings) -> RawDB:
        if settings.dialect == "postgres":
            conn = await asyncpg.connect(settings.resolved_database_url, timeout=5)
            return cls("postgres", conn, None)
        lite = sqlite3.connect(sqlite_path(settings), isolation_level=None, timeout=15)
        # Off by default for every new sqlite3 connection: without it the ON DELETE CASCADE
        # in the DDL would not fire for this raw connection.
        lite.execute("PRAGMA foreign_keys = ON")
        return cls("sqlite", None, lite)

    async def close(self) -> None:
        if self._pg is not None:
            await self._pg.close()
        if self._lite is not None:
            self._lite.close()

    def _sqlite_args(self, args: tuple[Any, ...]) -> tuple[Any, ...]:
        return tuple(str(a) if isinstance(a, uuid.UUID) else a for a in args)

    async def fetch(self, sql: str, *args: Any) -> list[tuple[Any, ...]]:
        if self._pg is not None:
            return [tuple(row) for row in await self._pg.fetch(sql, *args)]
        assert self._lite is not None
        cursor = self._lite.execute(_PLACEHOLDER.sub(r"?\1", sql), self._sqlite_args(args))
        return [tuple(row) for row in cursor.fetchall()]

    async def fetchval(self, sql: str, *args: Any) -> Any:
        rows = await self.fetch(sql, *args)
        return rows[0][0] if rows else None

    def ts(self, value: datetime) -> Any:
        """``value`` as this backend stores timestamps (SQLite: the store's text form)."""
        if self.dialect == "postgres":
            return value
        return value.astimezone(UTC).isoformat(" ")

    async def execute(self, sql: str, *args: Any) -> None:
        if self._pg is not None:
            await self._pg.execute(sql, *args)
            return
        assert self._lite is not None
        self._lite.execute(_PLACEHOLDER.sub(r"?\1", sql), self._sqlite_args(args))

    # -- what is really stored ---------------------------------------------------------

    async def messages_in(self, conversation_id: uuid.UUID) -> int:
        return int(
            await self.fetchval(
                "SELECT count(*) FROM messages WHERE conversation_id = $1", conversation_id
            )
        )

    async def seqs_in(self, conversation_id: uuid.UUID) -> list[int]:
        rows = await self.fetch(
            "SELECT seq FROM messages WHERE conversation_id = $1 ORDER BY seq", conversation_id
        )
        return [int(row[0]) for row in rows]

    async def messages_of(self, user: str) -> int:
        return int(await self.fetchval("SELECT count(*) FROM messages WHERE user_id = $1", user))

    async def conversations_of(self, user: str) -> int:
        return int(
            await self.fetchval("SELECT count(*) FROM conversations WHERE user_id = $1", user)
        )

    async def user_rows(self, user: str) -> int:
        return int(await self.fetchval("SELECT count(*) FROM users WHERE id = $1", user))

    async def orphans(self) -> tuple[int, int]:
        """(messages without a conversation, conversations without a user), database-wide."""
        messages = await self.fetchval(
            "SELECT count(*) FROM messages m "
            "WHERE NOT EXISTS (SELECT 1 FROM conversations c WHERE c.id = m.conversation_id) "
            "OR NOT EXISTS (SELECT 1 FROM users u WHERE u.id = m.user_id)"
        )
        conversations = await self.fetchval(
            "SELECT count(*) FROM conversations c "
            "WHERE NOT EXISTS (SELECT 1 FROM users u WHERE u.id = c.user_id)"
        )
        return int(messages), int(conversations)


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
