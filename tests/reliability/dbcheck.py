"""What is really in the database, read with plain SQL beside the store.

``Db`` talks to the store's database directly (asyncpg on PostgreSQL, the stdlib ``sqlite3`` on
SQLite). ``violations()`` states the invariants every fault and attack test ends with: for each
conversation, ``message_count`` = ``last_seq`` = ``count(*)`` = ``max(seq)`` = the number of
distinct ``seq`` values, the smallest ``seq`` is 1, and every message belongs to the
conversation's own user.
"""

from __future__ import annotations

import re
import sqlite3
import uuid
from collections.abc import Iterable, Sequence
from typing import Any

import asyncpg

from store.settings import Settings

__all__ = ["ConversationFacts", "Db"]

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


class Db:
    """Plain SQL on a chatstore database (written in PostgreSQL's ``$N`` style)."""

    def __init__(self, pg: asyncpg.Connection | None, lite: sqlite3.Connection | None) -> None:
        self._pg = pg
        self._lite = lite

    @classmethod
    async def connect(cls, settings: Settings) -> Db:
        if settings.dialect == "postgres":
            return cls(await asyncpg.connect(settings.resolved_database_url, timeout=10), None)
        path = settings.resolved_database_url.split("://", 1)[1].split("?", 1)[0]
        lite = sqlite3.connect(path, isolation_level=None, timeout=30)
        return cls(None, lite)

    @property
    def dialect(self) -> str:
        return "postgres" if self._pg is not None else "sqlite"

    async def close(self) -> None:
        if self._pg is not None:
            await self._pg.close()
        if self._lite is not None:
            self._lite.close()

    async def fetch(self, sql: str, *args: Any) -> list[tuple[Any, ...]]:
        if self._pg is not None:
            return [tuple(row) for row in await self._pg.fetch(sql, *args)]
        assert self._lite is not None
        params = tuple(str(a) if isinstance(a, uuid.UUID) else a for a in args)
        return [tuple(r) for r in self._lite.execute(_PLACEHOLDER.sub(r"?\1", sql), params)]

    async def value(self, sql: str, *args: Any) -> Any:
        rows = await self.fetch(sql, *args)
        return rows[0][0] if rows else None

    # -- the invariants ----------------------------------------------------------------------

    async def facts(self, users: Iterable[str] | None = None) -> list[ConversationFacts]:
        """Counters and message aggregates per conversation (of ``users``, or all)."""
        sql = (
            "SELECT c.id, c.user_id, c.message_count, c.last_seq, count(m.id), "
            "coalesce(max(m.seq), 0), coalesce(min(m.seq), 0), count(DISTINCT m.seq), "
            "coalesce(sum(CASE WHEN m.user_id <> c.user_id THEN 1 ELSE 0 END), 0) "
            "FROM conversations c LEFT JOIN messages m ON m.conversation_id = c.id "
        )
        rows: list[tuple[Any, ...]] = []
        if users is None:
            rows = await self.fetch(sql + "GROUP BY c.id, c.user_id, c.message_count, c.last_seq")
        else:
            for user in users:
                rows += await self.fetch(
                    sql
                    + "WHERE c.user_id = $1 GROUP BY c.id, c.user_id, c.message_count, c.last_seq",
                    user,
                )
        return [ConversationFacts(row) for row in rows]

    async def violations(self, users: Iterable[str] | None = None) -> list[str]:
        """Every broken invariant, in words (empty when the data is consistent)."""
        problems: list[str] = []
        for facts in await self.facts(users):
            problems += facts.problems()
        orphans = await self.value(
            "SELECT count(*) FROM messages m WHERE NOT EXISTS "
            "(SELECT 1 FROM conversations c WHERE c.id = m.conversation_id)"
        )
        if orphans:
            problems.append(f"{orphans} messages without a conversation")
        return problems

    async def messages_of(self, user: str) -> int:
        return int(await self.value("SELECT count(*) FROM messages WHERE user_id = $1", user))

    async def conversations_of(self, user: str) -> int:
        return int(await self.value("SELECT count(*) FROM conversations WHERE user_id = $1", user))

    async def rows_of(self, user: str) -> tuple[int, int]:
        """(conversations, messages) stored for ``user``."""
        return await self.conversations_of(user), await self.messages_of(user)

    async def seqs(self, conversation_id: str | uuid.UUID) -> list[int]:
        rows = await self.fetch(
            "SELECT seq FROM messages WHERE conversation_id = $1 ORDER BY seq",
            _db_uuid(self, conversation_id),
        )
        return [int(r[0]) for r in rows]

    async def messages(self, conversation_id: str | uuid.UUID) -> list[tuple[Any, ...]]:
        """(id, seq, content, idempotency_key) of every stored message, in seq order."""
        return await self.fetch(
            "SELECT id, seq, content, idempotency_key FROM messages "
            "WHERE conversation_id = $1 ORDER BY seq",
            _db_uuid(self, conversation_id),
        )


def _db_uuid(db: Db, value: str | uuid.UUID) -> Any:
    parsed = value if isinstance(value, uuid.UUID) else uuid.UUID(str(value))
    return parsed if db.dialect == "postgres" else str(parsed)
