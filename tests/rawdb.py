"""What is really in the database, read and written with plain SQL beside the store.

``RawDB`` talks to the store's own database without going through the store (asyncpg on
PostgreSQL, the stdlib ``sqlite3`` on SQLite), so tests can check what was really written and
act like an operator with a ``psql``/``sqlite3`` shell. SQL is written once, in PostgreSQL's
``$N`` placeholder style; on SQLite it is rewritten to ``?N`` and ``UUID`` arguments are sent
as text.

``violations()`` states the invariants every fault and attack test ends with: for each
conversation, ``message_count`` = ``last_seq`` = ``count(*)`` = ``max(seq)`` = the number of
distinct ``seq`` values, the smallest ``seq`` is 1, every message belongs to the
conversation's own user, and no row has lost its parent.
"""

from __future__ import annotations

import re
import sqlite3
import uuid
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any, Literal

import asyncpg

from store.settings import Settings

__all__ = ["ConversationFacts", "RawDB", "consistent_messages_of"]

_PLACEHOLDER = re.compile(r"\$(\d+)")


class ConversationFacts:
    """One conversation's counters next to what its messages say."""

    def __init__(self, row: Sequence[Any]) -> None:
        (
            conversation_id,
            self.user_id,
            message_count,
            last_seq,
            count,
            max_seq,
            min_seq,
            distinct_seq,
            foreign,
        ) = row
        self.id = str(conversation_id)
        self.message_count = int(message_count)
        self.last_seq = int(last_seq)
        self.count = int(count)
        self.max_seq = int(max_seq)
        self.min_seq = int(min_seq)
        self.distinct_seq = int(distinct_seq)
        self.foreign = int(foreign)

    def problems(self) -> list[str]:
        out = []
        n = self.count
        if not (self.message_count == self.last_seq == n == self.max_seq == self.distinct_seq):
            out.append(
                f"conversation {self.id}: message_count={self.message_count} "
                f"last_seq={self.last_seq} count(*)={n} max(seq)={self.max_seq} "
                f"distinct seq={self.distinct_seq}"
            )
        if n and self.min_seq != 1:
            out.append(f"conversation {self.id}: smallest seq is {self.min_seq}, not 1")
        if self.foreign:
            out.append(f"conversation {self.id}: {self.foreign} messages of another user")
        return out


class RawDB:
    """Plain SQL on the store's database, outside the store."""

    def __init__(self, pg: asyncpg.Connection | None, lite: sqlite3.Connection | None) -> None:
        self._pg = pg
        self._lite = lite

    @classmethod
    async def connect(cls, settings: Settings) -> RawDB:
        if settings.dialect == "postgres":
            conn = await asyncpg.connect(
                settings.resolved_database_url,
                timeout=10,
                statement_cache_size=settings.db_statement_cache_size,
            )
            return cls(conn, None)
        lite = sqlite3.connect(settings.sqlite_path, isolation_level=None, timeout=30)
        # Off by default for every new sqlite3 connection: without it the ON DELETE CASCADE
        # in the DDL would not fire for this raw connection.
        lite.execute("PRAGMA foreign_keys = ON")
        return cls(None, lite)

    @property
    def dialect(self) -> Literal["postgres", "sqlite"]:
        return "postgres" if self._pg is not None else "sqlite"

    async def close(self) -> None:
        if self._pg is not None:
            await self._pg.close()
        if self._lite is not None:
            self._lite.close()

    def _sqlite(self, sql: str, args: tuple[Any, ...]) -> sqlite3.Cursor:
        assert self._lite is not None
        params = tuple(str(a) if isinstance(a, uuid.UUID) else a for a in args)
        return self._lite.execute(_PLACEHOLDER.sub(r"?\1", sql), params)

    async def fetch(self, sql: str, *args: Any) -> list[tuple[Any, ...]]:
        if self._pg is not None:
            return [tuple(row) for row in await self._pg.fetch(sql, *args)]
        return [tuple(row) for row in self._sqlite(sql, args).fetchall()]

    async def fetchval(self, sql: str, *args: Any) -> Any:
        rows = await self.fetch(sql, *args)
        return rows[0][0] if rows else None

    async def execute(self, sql: str, *args: Any) -> None:
        if self._pg is not None:
            await self._pg.execute(sql, *args)
            return
        self._sqlite(sql, args)

    def ts(self, value: datetime) -> Any:
        """``value`` as this backend stores timestamps (SQLite: the store's text form)."""
        if self.dialect == "postgres":
            return value
        return value.astimezone(UTC).isoformat(" ")

    # -- what is really stored ---------------------------------------------------------

    async def messages_in(self, conversation_id: str | uuid.UUID) -> int:
        return int(
            await self.fetchval(
                "SELECT count(*) FROM messages WHERE conversation_id = $1", _uuid(conversation_id)
            )
        )

    async def seqs_in(self, conversation_id: str | uuid.UUID) -> list[int]:
        rows = await self.fetch(
            "SELECT seq FROM messages WHERE conversation_id = $1 ORDER BY seq",
            _uuid(conversation_id),
        )
        return [int(row[0]) for row in rows]

    async def message_rows(self, conversation_id: str | uuid.UUID) -> list[tuple[Any, ...]]:
        """(id, seq, content, idempotency_key) of every stored message, in seq order."""
        return await self.fetch(
            "SELECT id, seq, content, idempotency_key FROM messages "
            "WHERE conversation_id = $1 ORDER BY seq",
            _uuid(conversation_id),
        )

    async def messages_of(self, user: str) -> int:
        return int(await self.fetchval("SELECT count(*) FROM messages WHERE user_id = $1", user))

    async def conversations_of(self, user: str) -> int:
        return int(
            await self.fetchval("SELECT count(*) FROM conversations WHERE user_id = $1", user)
        )

    async def rows_of(self, user: str) -> tuple[int, int]:
        """(conversations, messages) stored for ``user``."""
        return await self.conversations_of(user), await self.messages_of(user)

    async def user_rows(self, user: str) -> int:
        return int(await self.fetchval("SELECT count(*) FROM users WHERE id = $1", user))

    async def orphans(self) -> tuple[int, int]:
        """(messages without a conversation or user, conversations without a user), in all."""
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

    # -- the invariants ----------------------------------------------------------------------

    async def facts(self, users: Iterable[str] | None = None) -> list[ConversationFacts]:
        """Counters and message aggregates per conversation (of ``users``, or all)."""
        sql = (
            "SELECT c.id, c.user_id, c.message_count, c.last_seq, count(m.id), "
            "coalesce(max(m.seq), 0), coalesce(min(m.seq), 0), count(DISTINCT m.seq), "
            "coalesce(sum(CASE WHEN m.user_id <> c.user_id THEN 1 ELSE 0 END), 0) "
            "FROM conversations c LEFT JOIN messages m ON m.conversation_id = c.id "
        )
        group = "GROUP BY c.id, c.user_id, c.message_count, c.last_seq"
        rows: list[tuple[Any, ...]] = []
        if users is None:
            rows = await self.fetch(sql + group)
        else:
            for user in users:
                rows += await self.fetch(sql + "WHERE c.user_id = $1 " + group, user)
        return [ConversationFacts(row) for row in rows]

    async def violations(self, users: Iterable[str] | None = None) -> list[str]:
        """Every broken invariant, in words (empty when the data is consistent)."""
        problems: list[str] = []
        for facts in await self.facts(users):
            problems += facts.problems()
        messages, conversations = await self.orphans()
        if messages:
            problems.append(f"{messages} messages without a conversation or a user")
        if conversations:
            problems.append(f"{conversations} conversations without a user")
        return problems


async def consistent_messages_of(settings: Settings, user: str) -> list[tuple[Any, ...]]:
    """(id, seq, content) of every stored message of ``user``, once the invariants hold."""
    db = await RawDB.connect(settings)
    try:
        assert await db.violations([user]) == []
        return await db.fetch("SELECT id, seq, content FROM messages WHERE user_id = $1", user)
    finally:
        await db.close()


def _uuid(value: str | uuid.UUID) -> uuid.UUID:
    return value if isinstance(value, uuid.UUID) else uuid.UUID(str(value))
