"""The floor: chatstore's operations written by hand on one raw asyncpg connection.

This is the least a Python service can do for the same contract on the same schema and the
same server settings (durability included): one statement per operation, no pool, no
validation, no models; rows come back as asyncpg ``Record`` objects. Every chatstore figure
is divided by the floor's figure from the same run.

- append: ONE statement, ``UPDATE conversations … RETURNING`` feeding the ``INSERT``, scoped
  to the user, setting ``last_seq``, ``message_count`` and ``updated_at`` like chatstore.
  It returns only what the caller does not already know (id, seq, created_at).
- list: keyset on ``(conversation_id, seq)``, ``limit + 1`` rows to learn ``has_more``,
  reversed into chronological order; the owner is checked on the conversation row in the
  same statement (see ``LATEST_SQL``).
- list conversations: keyset on ``(user_id, updated_at, id)``; the "cursor" is the raw
  ``(updated_at, id)`` of the last row.
"""

from __future__ import annotations

import uuid
from datetime import datetime

import asyncpg

__all__ = ["Floor", "Position"]

Position = tuple[datetime, uuid.UUID]

_MESSAGE_COLUMNS = (
    "id, conversation_id, seq, role, content, tool_calls, tool_call_id, metadata, created_at, "
    "token_count"
)
_CONVERSATION_COLUMNS = (
    "id, title, metadata, created_at, updated_at, message_count, last_seq, "
    "summary, summary_up_to_seq, forked_from_id, forked_from_seq"
)

APPEND_SQL = """
WITH c AS (
    UPDATE conversations
    SET last_seq = last_seq + 1, message_count = message_count + 1,
        token_total = token_total + $6::int,
        updated_at = GREATEST(updated_at, clock_timestamp())
    WHERE id = $1 AND user_id = $2 RETURNING id, user_id, last_seq, updated_at
)
INSERT INTO messages (id, conversation_id, user_id, seq, role, content, metadata, created_at,
                      token_count)
SELECT $3, c.id, c.user_id, c.last_seq, $4, $5, '{}'::jsonb, c.updated_at, $6::int FROM c
RETURNING id, seq, created_at
"""

# A batch in one statement: the counters moved by the batch's size, one multi-row INSERT
# from arrays, numbered WITH ORDINALITY.
APPEND_BATCH_SQL = """
WITH c AS (
    UPDATE conversations
    SET last_seq = last_seq + $3::bigint, message_count = message_count + $3::bigint,
        token_total = token_total + $4::bigint,
        updated_at = GREATEST(updated_at, clock_timestamp())
    WHERE id = $1 AND user_id = $2 RETURNING id, user_id, last_seq, updated_at
)
INSERT INTO messages (id, conversation_id, user_id, seq, role, content, metadata, created_at,
                      token_count)
SELECT v.id, c.id, c.user_id, c.last_seq - $3::bigint + v.n, v.role, v.content, '{}'::jsonb,
       c.updated_at, v.tokens
FROM c, unnest($5::uuid[], $6::text[], $7::text[], $8::int[])
        WITH ORDINALITY AS v(id, role, content, tokens, n)
RETURNING id, seq, created_at
"""

# The user scope is checked on the conversation row (an InitPlan evaluated once), not as
# `messages.user_id = $2`: PostgreSQL takes user_id to be independent of conversation_id,
# underestimates the page and, on the 1M-message store, picks a BitmapAnd of two indexes
# plus a sort (measured: 5.7 ms for the latest page, 566 ms for the first page of the
# 500,100-message conversation) instead of walking (conversation_id, seq) backwards.
_OWNED = "EXISTS (SELECT 1 FROM conversations WHERE id = $1 AND user_id = $2)"
LATEST_SQL = (
    f"SELECT {_MESSAGE_COLUMNS} FROM messages WHERE conversation_id = $1 AND {_OWNED} "
    "ORDER BY seq DESC LIMIT $3"
)
BEFORE_SQL = (
    f"SELECT {_MESSAGE_COLUMNS} FROM messages WHERE conversation_id = $1 AND {_OWNED} "
    "AND seq < $3 ORDER BY seq DESC LIMIT $4"
)
# get_context's floor: the same messages, when the caller already knows where they start.
FROM_SEQ_SQL = (
    f"SELECT {_MESSAGE_COLUMNS} FROM messages WHERE conversation_id = $1 AND {_OWNED} "
    "AND seq >= $3 ORDER BY seq"
)
# Search, the indexed way: the user's matches through the GIN index on (user_id, search),
# ranked by ts_rank_cd, the page's excerpts by ts_headline. The same work chatstore's query
# has to do; what chatstore adds is parsing, validation, the cursor and the models.
_M_COLUMNS = ", ".join(f"m.{column}" for column in _MESSAGE_COLUMNS.split(", "))
SEARCH_SQL = f"""
WITH q AS (SELECT websearch_to_tsquery('english', $2) AS q),
hits AS (
    SELECT m.id, ts_rank_cd(m.search, q.q) AS rank, m.created_at FROM messages m, q
    WHERE m.user_id = $1 AND m.search @@ q.q
    ORDER BY rank DESC, m.created_at DESC, m.id DESC LIMIT $3
)
SELECT {_M_COLUMNS}, c.title, hits.rank,
       ts_headline('english', m.content || ' ' || coalesce(m.tool_calls::text, ''), q.q,
                   'StartSel=**, StopSel=**, MaxWords=24, MinWords=10, MaxFragments=2')
FROM hits JOIN messages m ON m.id = hits.id JOIN conversations c ON c.id = m.conversation_id, q
ORDER BY hits.rank DESC, hits.created_at DESC, hits.id DESC
"""
# Search the way a LIKE-based history store does it: every message of the user's scanned
# for the substring, newest matches first.
ILIKE_SQL = (
    f"SELECT {_MESSAGE_COLUMNS} FROM messages WHERE user_id = $1 "
    "AND content ILIKE '%' || $2 || '%' ORDER BY created_at DESC, id DESC LIMIT $3"
)
# A fork: the parent's row locked against appends, the new conversation, then the messages
# copied by one INSERT … SELECT, in one transaction.
FORK_LOCK_SQL = "SELECT last_seq FROM conversations WHERE id = $1 AND user_id = $2 FOR SHARE"
FORK_CONVERSATION_SQL = """
INSERT INTO conversations (id, user_id, title, metadata, created_at, updated_at, message_count,
                           last_seq, token_total, forked_from_id, forked_from_seq)
SELECT $3, user_id, title, metadata, clock_timestamp(), clock_timestamp(), $4, $4,
       (SELECT coalesce(sum(token_count), 0) FROM messages
        WHERE conversation_id = $1 AND seq <= $4),
       id, $4
FROM conversations WHERE id = $1 AND user_id = $2
"""
FORK_MESSAGES_SQL = """
INSERT INTO messages (id, conversation_id, user_id, seq, role, content, tool_calls, tool_call_id,
                      metadata, created_at, token_count)
SELECT gen_random_uuid(), $2, user_id, seq, role, content, tool_calls, tool_call_id, metadata,
       created_at, token_count
FROM messages WHERE conversation_id = $1 AND seq <= $3
"""
CONVERSATIONS_FIRST_SQL = (
    f"SELECT {_CONVERSATION_COLUMNS} FROM conversations WHERE user_id = $1 "
    "ORDER BY updated_at DESC, id DESC LIMIT $2"
)
CONVERSATIONS_AFTER_SQL = (
    f"SELECT {_CONVERSATION_COLUMNS} FROM conversations WHERE user_id = $1 "
    "AND (updated_at, id) < ($2, $3) ORDER BY updated_at DESC, id DESC LIMIT $4"
)


class Floor:
    """Hand-written SQL on one asyncpg connection (which it does not own)."""

    def __init__(self, conn: asyncpg.Connection) -> None:
        self.conn = conn

    async def create_conversation(self, user: str) -> uuid.UUID:
        """Set-up only (not timed): a user row and an empty conversation."""
        cid = uuid.uuid4()
        await self.conn.execute(
            """
            WITH u AS (
                INSERT INTO users (id, created_at) VALUES ($1, clock_timestamp())
                ON CONFLICT (id) DO NOTHING
            )
            INSERT INTO conversations (id, user_id, title, metadata, created_at, updated_at,
                                       message_count, last_seq)
            VALUES ($2, $1, NULL, '{}'::jsonb, clock_timestamp(), clock_timestamp(), 0, 0)
            """,
            user,
            cid,
        )
        return cid

    async def append(
        self, conversation_id: uuid.UUID, user: str, role: str, content: str
    ) -> asyncpg.Record:
        row = await self.conn.fetchrow(
            # The floor is handed a token count (it runs no tokenizer): chatstore's counting
            # is part of what its ratio measures.
            APPEND_SQL,
            conversation_id,
            user,
            uuid.uuid4(),
            role,
            content,
            len(content) // 4,
        )
        if row is None:
            raise LookupError("no conversation with that id")
        return row

    async def append_batch(
        self, conversation_id: uuid.UUID, user: str, messages: list[tuple[str, str]]
    ) -> list[asyncpg.Record]:
        """``messages`` ((role, content) pairs) in one statement, handed their token counts."""
        tokens = [len(content) // 4 for _, content in messages]
        rows: list[asyncpg.Record] = await self.conn.fetch(
            APPEND_BATCH_SQL,
            conversation_id,
            user,
            len(messages),
            sum(tokens),
            [uuid.uuid4() for _ in messages],
            [role for role, _ in messages],
            [content for _, content in messages],
            tokens,
        )
        return rows

    async def latest(
        self, conversation_id: uuid.UUID, user: str, limit: int
    ) -> tuple[list[asyncpg.Record], bool]:
        rows = await self.conn.fetch(LATEST_SQL, conversation_id, user, limit + 1)
        page = rows[:limit]
        page.reverse()
        return page, len(rows) > limit

    async def before(
        self, conversation_id: uuid.UUID, user: str, before_seq: int, limit: int
    ) -> tuple[list[asyncpg.Record], bool]:
        rows = await self.conn.fetch(BEFORE_SQL, conversation_id, user, before_seq, limit + 1)
        page = rows[:limit]
        page.reverse()
        return page, len(rows) > limit

    async def from_seq(
        self, conversation_id: uuid.UUID, user: str, seq: int
    ) -> list[asyncpg.Record]:
        """Every message from ``seq`` on, ascending: a context window whose start is known."""
        rows: list[asyncpg.Record] = await self.conn.fetch(FROM_SEQ_SQL, conversation_id, user, seq)
        return rows

    async def search(self, user: str, query: str, limit: int) -> list[asyncpg.Record]:
        rows: list[asyncpg.Record] = await self.conn.fetch(SEARCH_SQL, user, query, limit + 1)
        return rows[:limit]

    async def search_ilike(self, user: str, text: str, limit: int) -> list[asyncpg.Record]:
        rows: list[asyncpg.Record] = await self.conn.fetch(ILIKE_SQL, user, text, limit + 1)
        return rows[:limit]

    async def fork(self, conversation_id: uuid.UUID, user: str, at_seq: int) -> uuid.UUID:
        fork_id = uuid.uuid4()
        async with self.conn.transaction():
            last_seq = await self.conn.fetchval(FORK_LOCK_SQL, conversation_id, user)
            if last_seq is None or at_seq > last_seq:
                raise LookupError("no such conversation or seq")
            await self.conn.execute(FORK_CONVERSATION_SQL, conversation_id, user, fork_id, at_seq)
            await self.conn.execute(FORK_MESSAGES_SQL, conversation_id, fork_id, at_seq)
        return fork_id

    async def conversations(
        self, user: str, limit: int, position: Position | None = None
    ) -> tuple[list[asyncpg.Record], Position | None]:
        if position is None:
            rows = await self.conn.fetch(CONVERSATIONS_FIRST_SQL, user, limit + 1)
        else:
            rows = await self.conn.fetch(
                CONVERSATIONS_AFTER_SQL, user, position[0], position[1], limit + 1
            )
        page = rows[:limit]
        following = None
        if len(rows) > limit:
            following = (page[-1]["updated_at"], page[-1]["id"])
        return page, following
