"""PostgreSQL through asyncpg: every statement of the store in ``$N`` style, one round trip each.

The hot paths are single statements: an append is one ``UPDATE conversations … RETURNING``
feeding the ``INSERT`` of the message (the row lock serialises concurrent appenders to one
conversation; if the insert fails, the counter update is rolled back with it), and a page of
messages walks the ``(conversation_id, seq)`` index with the owner checked on the conversation
row. Timestamps come from the database clock, so replicas on different hosts agree.

Connections: an asyncpg pool, and ``IdleConnections`` in front of it (below). Multi-statement
writes run in a shielded task, so a cancelled caller never leaves a transaction half-done.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any, Literal, TypeVar
from uuid import UUID

import asyncpg

from store._import import ImportClash, ImportedConversation, ImportedMessage, token_total
from store._rows import (
    CONVERSATION_COLUMNS,
    MESSAGE_COLUMNS,
    context_window,
    conversation,
    message,
    search_hit,
    stored_message,
)
from store._search import Terms
from store.backends.base import (
    ContextWindow,
    Duplicate,
    Position,
    QuotaReached,
    SearchPosition,
    SummaryEnd,
    Window,
    summary_end,
)
from store.errors import NotOpen, Unavailable
from store.schemas import Conversation, Message, NewMessage, SearchHit, dump_json
from store.settings import APP_LABEL, Settings, database_credentials

__all__ = ["IdleConnections", "PostgresBackend"]

log = logging.getLogger("chatstore.store")

T = TypeVar("T")

# Errors that mean "the database is not answering right now": nothing was committed by the
# failed statement (each write is a single statement or one transaction), so a retry is safe.
_UNAVAILABLE: tuple[type[BaseException], ...] = (
    OSError,
    TimeoutError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    # A pooled connection whose backend was terminated (pg_terminate_backend, a restart) may
    # already hold the server's FATAL error when it is handed out; the next query then fails
    # with "cannot switch to state …; another operation is in progress" before sending
    # anything. Seen under load in tests/reliability; a fresh connection works.
    asyncpg.InternalClientError,
    asyncpg.CannotConnectNowError,
    # The database does not exist (yet, or any more): an operator's matter, not a bug.
    asyncpg.InvalidCatalogNameError,
    asyncpg.OperatorInterventionError,
    asyncpg.TooManyConnectionsError,
    asyncpg.InsufficientResourcesError,
    asyncpg.QueryCanceledError,
    asyncpg.SerializationError,
    asyncpg.DeadlockDetectedError,
)


_CREATE_CONVERSATION = f"""
WITH t AS (SELECT clock_timestamp() AS now),
u AS (
    INSERT INTO users (id, created_at) SELECT $1, t.now FROM t ON CONFLICT (id) DO NOTHING
)
INSERT INTO conversations
    (id, user_id, title, metadata, created_at, updated_at, message_count, last_seq, key)
SELECT $2, $1, $3, $4::jsonb, t.now, t.now, 0, 0, $5 FROM t
ON CONFLICT DO NOTHING
RETURNING {CONVERSATION_COLUMNS}
"""
_CONVERSATION_BY_KEY = (
    f"SELECT {CONVERSATION_COLUMNS} FROM conversations WHERE user_id = $1 AND key = $2"
)
# With a conversation quota, a create (or a fork) first takes the user's row lock, so that
# counting the user's conversations and inserting one are a single step for concurrent
# creators, in every process. FOR NO KEY UPDATE: it does not wait for (nor hold up) the
# KEY SHARE lock every message insert's foreign key takes on the user row, so an append
# holding its conversation's lock and a fork waiting for that lock cannot deadlock.
_NEW_USER = (
    "INSERT INTO users (id, created_at) VALUES ($1, clock_timestamp()) ON CONFLICT DO NOTHING"
)
_LOCK_USER = "SELECT 1 FROM users WHERE id = $1 FOR NO KEY UPDATE"
_COUNT_CONVERSATIONS = "SELECT count(*) FROM conversations WHERE user_id = $1"

# An append: the counters moved on the conversation's locked row, unless that would pass the
# message quota ($12; far beyond any count when unlimited): then no row, and no insert.
_APPEND = f"""
WITH c AS (
    UPDATE conversations
    SET last_seq = last_seq + 1,
        message_count = message_count + 1,
        token_total = token_total + $10,
        updated_at = GREATEST(updated_at, clock_timestamp())
    WHERE id = $1 AND user_id = $2 AND message_count < $12::bigint
    RETURNING id, user_id, last_seq, updated_at
)
INSERT INTO messages ({MESSAGE_COLUMNS}, user_id, idempotency_key)
SELECT $3, c.id, c.last_seq, $4, $5, $6::jsonb, $7, $8::jsonb, c.updated_at, $10,
       $11::json, c.user_id, $9
FROM c
RETURNING seq, created_at
"""

# A batch: the same counter update, moved by the batch's size ($3) at once, feeding one
# multi-row INSERT from arrays (one element per message, in order: WITH ORDINALITY numbers
# them, and message n gets seq last_seq - size + n).
_APPEND_BATCH = f"""
WITH c AS (
    UPDATE conversations
    SET last_seq = last_seq + $3::bigint,
        message_count = message_count + $3::bigint,
        token_total = token_total + $4::bigint,
        updated_at = GREATEST(updated_at, clock_timestamp())
    WHERE id = $1 AND user_id = $2 AND message_count + $3::bigint <= $14::bigint
    RETURNING id, user_id, last_seq, updated_at
)
INSERT INTO messages ({MESSAGE_COLUMNS}, user_id, idempotency_key)
SELECT v.id, c.id, c.last_seq - $3::bigint + v.n, v.role, v.content, v.tool_calls::jsonb,
       v.tool_call_id, v.metadata::jsonb, c.updated_at, v.token_count, v.raw::json,
       c.user_id, v.key
FROM c, unnest($5::uuid[], $6::text[], $7::text[], $8::text[], $9::text[], $10::text[],
               $11::int[], $12::text[], $13::text[])
        WITH ORDINALITY AS v(id, role, content, tool_calls, tool_call_id, metadata,
                             token_count, key, raw, n)
RETURNING id, seq, created_at
"""

# The user scope of a page is checked once, on the conversation row, rather than as a filter
# on messages.user_id: PostgreSQL takes that column to be independent of conversation_id,
# underestimates the page by the user's share of all messages and picks a bitmap-AND with
# messages_user plus a sort, whose cost grows with the user's whole history.
_PAGE = (
    f"SELECT {MESSAGE_COLUMNS} FROM messages WHERE conversation_id = $1 AND EXISTS "
    "(SELECT 1 FROM conversations c WHERE c.id = $1 AND c.user_id = $2) "
)
_LATEST = _PAGE + "ORDER BY seq DESC LIMIT $3"
_BEFORE = _PAGE + "AND seq < $3 ORDER BY seq DESC LIMIT $4"
# seq is gapless, so the page lies within N+1 .. N+count. The upper bound is what the LIMIT
# implies, written out: the planner estimates "seq > N" from all conversations' seqs, badly
# underestimates a deep page of a long one and would otherwise read every newer message of it
# (bitmap scan plus sort).
_AFTER = _PAGE + "AND seq > $3 AND seq <= $3 + $4 ORDER BY seq ASC LIMIT $4"

_CONVERSATIONS = f"SELECT {CONVERSATION_COLUMNS} FROM conversations WHERE user_id = $1 "
_CONVERSATIONS_FIRST = _CONVERSATIONS + "ORDER BY updated_at DESC, id DESC LIMIT $2"
_CONVERSATIONS_AFTER = (
    _CONVERSATIONS + "AND (updated_at, id) < ($2, $3) ORDER BY updated_at DESC, id DESC LIMIT $4"
)


async def _no_session_reset(connection: Any) -> None:
    # chatstore never leaves session state behind (no SET, LISTEN, advisory locks or cursors),
    # so returning a connection to the pool skips asyncpg's reset query: one round trip less
    # per call. An open transaction is still rolled back by the pool.
    return None


_CONVERSATION = f"SELECT {CONVERSATION_COLUMNS} FROM conversations WHERE id = $1 AND user_id = $2"
_DELETE_CONVERSATION = (
    "DELETE FROM conversations WHERE id = $1 AND user_id = $2 RETURNING message_count"
)
# get_context's window, in one statement. c: the conversation (no row when it is not this
# user's), its summary's bound, the budget left beside the summary, and how many rows to read:
# twice what the budget holds at this conversation's tokens per message (token_total), plus
# some. w: those rows from the last one back with their running token sum (one backwards
# index range scan, stopped by the LIMIT), of which only the ones up to the first that passes
# the budget go back. Then the system messages before those, a summary's included
# (messages_system, a partial index), oldest first. Rows: part 0 is c, 1 w, 2 the system
# messages; the message columns follow the conversation's. Too few rows read (a stale
# token_total): store._context reads on.
_NO_MESSAGE = (
    "NULL::uuid, NULL::uuid, NULL::bigint, NULL, NULL, NULL::jsonb, NULL, NULL::jsonb, "
    "NULL::timestamptz, NULL::int, NULL::json"
)
_CONTEXT_WINDOW = f"""
WITH c AS (
    SELECT summary, summary_up_to_seq, summary_token_count, last_seq,
           coalesce(summary_up_to_seq, 0) AS bound,
           $3 - CASE WHEN summary IS NULL THEN 0 ELSE summary_token_count END AS budget,
           least($6::bigint, 16 + ceil(2.0 * $3 * greatest(message_count, 1)
                                        / greatest(token_total, 1))::bigint) AS reads
    FROM conversations WHERE id = $1 AND user_id = $2
),
w AS (
    SELECT seq, token_count, sum(token_count) OVER (ORDER BY seq DESC) AS running
    FROM messages
    WHERE conversation_id = $1 AND seq > (SELECT bound FROM c) AND (SELECT budget FROM c) >= 0
    ORDER BY seq DESC LIMIT coalesce((SELECT reads FROM c), 0)
),
reach AS (SELECT min(seq) AS seq FROM w WHERE running - token_count <= (SELECT budget FROM c)),
walked AS (
    SELECT {MESSAGE_COLUMNS} FROM messages
    WHERE conversation_id = $1 AND seq >= (SELECT seq FROM reach)
    ORDER BY seq DESC LIMIT coalesce((SELECT reads FROM c), 0)
)
SELECT 0, summary, summary_up_to_seq, summary_token_count, last_seq, {_NO_MESSAGE} FROM c
UNION ALL
SELECT 1, NULL, NULL, NULL, NULL, {MESSAGE_COLUMNS} FROM walked
UNION ALL
(SELECT 2, NULL, NULL, NULL, NULL, {MESSAGE_COLUMNS} FROM messages
 WHERE $4 AND conversation_id = $1 AND role = 'system'
   AND seq < coalesce((SELECT seq FROM reach), (SELECT last_seq + 1 FROM c))
 ORDER BY seq LIMIT $5)
"""
_SYSTEM_MESSAGES = (
    f"SELECT {MESSAGE_COLUMNS} FROM messages WHERE conversation_id = $1 AND EXISTS "
    "(SELECT 1 FROM conversations c WHERE c.id = $1 AND c.user_id = $2) "
    "AND role = 'system' AND seq > $3 AND seq < $4 ORDER BY seq LIMIT $5"
)
# A fork: the parent held (FOR SHARE: appends, updates and deletes wait) while the new
# conversation and the copies of its messages 1 … $5 are written, one INSERT … SELECT each.
_LOCK_PARENT = "SELECT last_seq FROM conversations WHERE id = $1 AND user_id = $2 FOR SHARE"
_FORK = f"""
WITH t AS (SELECT clock_timestamp() AS now)
INSERT INTO conversations
    (id, user_id, title, metadata, created_at, updated_at, message_count, last_seq, summary,
     summary_up_to_seq, summary_token_count, token_total, forked_from_id, forked_from_seq)
SELECT $3, p.user_id, coalesce($4, p.title), p.metadata, t.now, t.now, $5, $5,
       CASE WHEN p.summary_up_to_seq <= $5 THEN p.summary END,
       CASE WHEN p.summary_up_to_seq <= $5 THEN p.summary_up_to_seq END,
       CASE WHEN p.summary_up_to_seq <= $5 THEN p.summary_token_count END,
       (SELECT coalesce(sum(token_count), 0) FROM messages
        WHERE conversation_id = $1 AND seq <= $5),
       p.id, $5
FROM conversations p, t WHERE p.id = $1 AND p.user_id = $2
ON CONFLICT (id) DO NOTHING
RETURNING {CONVERSATION_COLUMNS}
"""
_FORK_MESSAGES = """
INSERT INTO messages (id, conversation_id, user_id, seq, role, content, tool_calls, tool_call_id,
                      metadata, created_at, token_count, raw)
SELECT gen_random_uuid(), $2, user_id, seq, role, content, tool_calls, tool_call_id, metadata,
       created_at, token_count, raw
FROM messages WHERE conversation_id = $1 AND seq <= $3
"""
# A truncation: under the conversation's row lock (_LOCK_CONVERSATION), the tail deleted and
# the counters moved back by what was deleted, in one statement.
_TRUNCATE = f"""
WITH d AS (DELETE FROM messages WHERE conversation_id = $1 AND seq > $3 RETURNING token_count)
UPDATE conversations
SET last_seq = $3,
    message_count = message_count - (SELECT count(*) FROM d),
    token_total = token_total - (SELECT coalesce(sum(token_count), 0) FROM d),
    summary = CASE WHEN summary_up_to_seq > $3 THEN NULL ELSE summary END,
    summary_token_count = CASE WHEN summary_up_to_seq > $3 THEN NULL ELSE summary_token_count END,
    summary_up_to_seq = CASE WHEN summary_up_to_seq > $3 THEN NULL ELSE summary_up_to_seq END
WHERE id = $1 AND user_id = $2
RETURNING {CONVERSATION_COLUMNS}
"""
_LOCK_CONVERSATION = "SELECT last_seq FROM conversations WHERE id = $1 AND user_id = $2 FOR UPDATE"
_SUMMARY_END = (
    "SELECT seq, role, tool_calls IS NOT NULL FROM messages "
    "WHERE conversation_id = $1 AND seq IN ($2::bigint, $2::bigint + 1)"
)
# Search: the query parsed by websearch_to_tsquery (never an error), the user's matching
# messages found through the GIN index on (user_id, search), ranked by ts_rank_cd (cover
# density: from the message and the query alone), paged by keyset on (rank, created_at, id);
# excerpts are made for the page only. The filters ({where}) are added per call. The query is
# written out in the WHERE clause, where the planner sees its words and estimates from the
# index's statistics how rare they are (an index condition is evaluated once per scan), and
# computed once in q for the per-row ranking: under a generic plan (a prepared statement
# reused) websearch_to_tsquery written into ts_rank_cd would be parsed again for every hit
# (bench W10, a word in 10,000 messages: 49.6 ms instead of 34 ms).
_M_COLUMNS = ", ".join(f"m.{column}" for column in MESSAGE_COLUMNS.split(", "))
_SEARCH_TEXT = "m.content || ' ' || coalesce(m.tool_calls::text, '')"
_HEADLINE_OPTIONS = (
    "StartSel=**, StopSel=**, MaxWords=24, MinWords=10, ShortWord=2, MaxFragments=2, "
    'FragmentDelimiter=" … "'
)
_SEARCH = f"""
WITH q AS MATERIALIZED (SELECT websearch_to_tsquery('english', $2) AS q),
page AS (
    SELECT m.id, ts_rank_cd(m.search, q.q) AS rank, m.created_at
    FROM messages m, q
    WHERE m.user_id = $1 AND m.search @@ websearch_to_tsquery('english', $2){{where}}
    ORDER BY rank DESC, m.created_at DESC, m.id DESC LIMIT $3
)
SELECT {_M_COLUMNS}, c.title, page.rank,
       ts_headline('english', {_SEARCH_TEXT}, q.q, '{_HEADLINE_OPTIONS}')
FROM page JOIN messages m ON m.id = page.id JOIN conversations c ON c.id = m.conversation_id, q
ORDER BY page.rank DESC, page.created_at DESC, page.id DESC
"""
_AFTER_HIT = (
    " AND (ts_rank_cd(m.search, q.q), m.created_at, m.id)"
    " < (${}::real, ${}::timestamptz, ${}::uuid)"
)

#: update_conversation's columns, with the cast each parameter needs.
_UPDATABLE = {
    "title": "",
    "metadata": "::jsonb",
    "summary": "",
    "summary_up_to_seq": "",
    "summary_token_count": "",
}
_TOTALS = (
    "SELECT (SELECT count(*) FROM users), count(*), coalesce(sum(message_count), 0) "
    "FROM conversations"
)
# Retention: a batch of idle conversations locked (SKIP LOCKED: rows another pruner holds are
# left to it) and deleted with their messages by the cascade. FOR UPDATE re-checks updated_at
# on the newest row version, so a conversation an append touched meanwhile is kept.
_PRUNE = """
WITH doomed AS (
    SELECT id FROM conversations WHERE updated_at < $1 AND ($2::text IS NULL OR user_id = $2)
    ORDER BY updated_at LIMIT $3 FOR UPDATE SKIP LOCKED
)
DELETE FROM conversations c USING doomed WHERE c.id = doomed.id RETURNING c.message_count
"""
_PRUNE_COUNT = (
    "SELECT count(*), coalesce(sum(message_count), 0) FROM conversations "
    "WHERE updated_at < $1 AND ($2::text IS NULL OR user_id = $2)"
)
# Export: conversations by id (the primary key), messages by (conversation_id, seq).
_EXPORT_CONVERSATIONS = (
    f"SELECT user_id, {CONVERSATION_COLUMNS} FROM conversations "
    "WHERE ($1::uuid IS NULL OR id > $1) AND ($2::text IS NULL OR user_id = $2) "
    "AND ($3::uuid IS NULL OR id = $3) ORDER BY id LIMIT $4"
)
_EXPORT_MESSAGES = (
    f"SELECT {MESSAGE_COLUMNS}, idempotency_key FROM messages "
    "WHERE conversation_id = $1 AND seq > $2 AND seq <= $4 ORDER BY seq LIMIT $3"
)
# Import: conversations as exported, many in one statement (ON CONFLICT (id): one that exists
# is skipped, a key its user has already raises), each linked to its parent when that is
# stored already; then their messages by COPY (the search column is generated as they arrive).
_IMPORT_USERS = (
    "INSERT INTO users (id, created_at) SELECT DISTINCT unnest($1::text[]), clock_timestamp() "
    "ON CONFLICT DO NOTHING"
)
_IMPORT_CONVERSATIONS = """
INSERT INTO conversations
    (id, user_id, title, metadata, key, created_at, updated_at, message_count, last_seq,
     summary, summary_up_to_seq, summary_token_count, token_total, forked_from_id,
     forked_from_seq)
SELECT v.id, v.user_id, v.title, v.metadata::jsonb, v.key, v.created_at, v.updated_at, v.count,
       v.count, v.summary, v.up_to, v.summary_tokens, v.tokens,
       (SELECT p.id FROM conversations p WHERE p.id = v.parent AND p.user_id = v.user_id),
       v.parent_seq
FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::text[], $6::timestamptz[],
            $7::timestamptz[], $8::bigint[], $9::text[], $10::bigint[], $11::int[],
            $12::bigint[], $13::uuid[], $14::bigint[])
     AS v(id, user_id, title, metadata, key, created_at, updated_at, count, summary, up_to,
          summary_tokens, tokens, parent, parent_seq)
ON CONFLICT (id) DO NOTHING
RETURNING id, forked_from_id IS NOT NULL
"""
_IMPORTED_COLUMNS = (
    "id",
    "conversation_id",
    "user_id",
    "seq",
    "role",
    "content",
    "tool_calls",
    "tool_call_id",
    "metadata",
    "idempotency_key",
    "created_at",
    "token_count",
    "raw",
)
_IMPORTED_TOKENS = "UPDATE conversations SET token_total = token_total + $2 WHERE id = $1"
_LINK_FORKS = """
UPDATE conversations c SET forked_from_id = f.parent
FROM unnest($1::uuid[], $2::uuid[]) AS f(fork, parent), conversations p
WHERE c.id = f.fork AND c.forked_from_id IS NULL AND p.id = f.parent AND p.user_id = c.user_id
"""
_EXISTING_MESSAGES = "SELECT id FROM messages WHERE id = ANY($1::uuid[])"
_USER_TOTALS = (
    "SELECT count(*), coalesce(sum(message_count), 0) FROM conversations WHERE user_id = $1"
)
_CONVERSATION_EXISTS = "SELECT 1 FROM conversations WHERE id = $1 AND user_id = $2"
_MESSAGES_BY_ID = (
    f"SELECT {MESSAGE_COLUMNS} FROM messages WHERE id = ANY($1::uuid[]) AND user_id = $2"
)
_MESSAGES_BY_KEY = (
    f"SELECT {MESSAGE_COLUMNS}, idempotency_key FROM messages "
    "WHERE conversation_id = $1 AND idempotency_key = ANY($2::text[]) AND user_id = $3"
)


def _imported_row(imported: ImportedMessage) -> tuple[Any, ...]:
    """An imported message as its COPY row (``_IMPORTED_COLUMNS``)."""
    m = imported.message
    tool_calls, metadata, raw = m.json_columns()
    return (
        m.id,
        m.conversation_id,
        imported.user,
        m.seq,
        m.role,
        m.content,
        tool_calls,
        m.tool_call_id,
        metadata,
        m.idempotency_key,
        m.created_at,
        m.token_count,
        raw,
    )


#: Seconds ``close()`` waits for calls in flight before terminating their connections.
_CLOSE_GRACE = 10


def _pool_options(settings: Settings) -> dict[str, Any]:
    """asyncpg pool arguments: the URL's (as Tortoise reads it, so the store and aerich agree
    on what a URL means) over the settings' pool bounds and timeouts."""
    options = database_credentials(settings.resolved_database_url)
    server_settings = {"application_name": "chatstore", **options.pop("server_settings", {})}
    # Tortoise's own spellings: schema, application_name, minsize and maxsize (as text).
    if "schema" in options:
        server_settings["search_path"] = options.pop("schema")
    if "application_name" in options:
        server_settings["application_name"] = options.pop("application_name")
    options.setdefault("min_size", int(options.pop("minsize", settings.db_pool_min)))
    options.setdefault("max_size", int(options.pop("maxsize", settings.db_pool_max)))
    options.setdefault("timeout", settings.db_connect_timeout)
    options.setdefault("statement_cache_size", settings.db_statement_cache_size)
    # No command_timeout: every store call already runs under one deadline
    # (CHATSTORE_DB_TIMEOUT, pool wait included), and a second timer per query measured ~10 µs
    # an append (bench W1).
    options.setdefault("reset", _no_session_reset)
    options["server_settings"] = server_settings
    return options


class IdleConnections:
    """Connections kept checked out of asyncpg's pool between calls.

    asyncpg's ``Pool.release()`` runs in a shielded task (two extra event-loop turns per call)
    and re-arms an idle timer: 50-190 µs a call on a 2-core machine, 15-25 % of a 50-message
    read (bench W2/W5). A connection that finished its work cleanly is parked here and handed
    to the next call (or a waiting one) directly. Anything else (an error, a cancellation, an
    open transaction) goes back to asyncpg's pool, which rolls back, resets or closes it. At
    most ``size`` connections are out of the pool at once, so callers beyond that wait here,
    never in the pool's queue where parked connections could not reach them.
    """

    def __init__(self, pool: asyncpg.Pool, size: int) -> None:
        self._pool = pool
        self._size = size
        self._out = 0  # checked out of the pool: parked or in use
        self._idle: list[Any] = []
        self._waiters: collections.deque[asyncio.Future[Any]] = collections.deque()
        self._closing = False

    def _hand(self, conn: Any) -> None:
        """Give a connection (or, with None, a free slot) to the first live waiter."""
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(conn)
                return
        if conn is not None:
            self._idle.append(conn)

    async def _acquire(self) -> Any:
        while True:
            if self._idle:
                return self._idle.pop()
            if self._out < self._size:
                self._out += 1
                try:
                    return await self._pool.acquire()
                except BaseException:
                    self._out -= 1
                    self._hand(None)
                    raise
            waiter = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            try:
                conn = await waiter
            except BaseException:
                if waiter.done() and not waiter.cancelled():
                    self._hand(waiter.result())  # pass on what this caller was given
                raise
            if conn is not None:
                return conn

    async def _discard(self, conn: Any) -> None:
        self._out -= 1
        try:
            await self._pool.release(conn)
        finally:
            self._hand(None)

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[Any]:
        conn = await self._acquire()
        clean = False
        try:
            yield conn
            clean = not (self._closing or conn.is_closed() or conn.is_in_transaction())
        finally:
            if clean:
                self._hand(conn)
            else:
                await self._discard(conn)

    async def close(self) -> None:
        """Park nothing from now on, and return what is parked: the pool can then close."""
        self._closing = True
        await self.drain()

    async def drain(self) -> None:
        """Return every parked connection to the pool (before expiring or closing it)."""
        idle, self._idle = self._idle, []
        for conn in idle:
            try:
                await self._discard(conn)
            except asyncpg.InternalClientError:
                # Its server connection died while parked and the pool took it back already
                # ("release() called on a free connection holder"): nothing left to return.
                log.debug("a parked connection was already released", exc_info=True)


class PostgresBackend:
    name: Literal["postgres"] = "postgres"

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._pool: asyncpg.Pool | None = None
        self._idle: IdleConnections | None = None

    # -- lifecycle -------------------------------------------------------------------------

    @classmethod
    def prepare(cls, settings: Settings) -> None:
        return None

    @classmethod
    def tortoise_connection(cls, settings: Settings) -> dict[str, Any]:
        credentials = database_credentials(settings.resolved_database_url)
        credentials.setdefault("timeout", settings.db_connect_timeout)
        credentials.setdefault("statement_cache_size", settings.db_statement_cache_size)
        credentials.setdefault("server_settings", {}).setdefault("application_name", "chatstore")
        return {"engine": "tortoise.backends.asyncpg", "credentials": credentials}

    async def open(self) -> None:
        options = _pool_options(self._settings)
        self._pool = await asyncpg.create_pool(**options)
        self._idle = IdleConnections(self._pool, options["max_size"])

    async def close(self) -> None:
        idle, pool, self._idle, self._pool = self._idle, self._pool, None, None
        if idle is not None:
            await idle.close()
        if pool is not None:
            # Calls still running hold their connections; after a grace period they are cut
            # off (their transactions roll back), so closing never hangs.
            try:
                await asyncio.wait_for(pool.close(), _CLOSE_GRACE)
            except TimeoutError:
                pool.terminate()

    def where(self) -> str:
        credentials = database_credentials(self._settings.resolved_database_url)
        host, port = credentials.get("host"), credentials.get("port")
        return f"PostgreSQL at {host}:{port}, database {credentials.get('database')}"

    def is_unavailable(self, exc: BaseException) -> bool:
        return isinstance(exc, _UNAVAILABLE)

    def location(self) -> str:
        credentials = database_credentials(self._settings.resolved_database_url)
        host, port = credentials.get("host"), credentials.get("port")
        return f"{host}:{port}/{credentials.get('database')}"

    async def totals(self) -> tuple[int, int, int]:
        row = await self._one(_TOTALS)
        return int(row[0]), int(row[1]), int(row[2])

    def open_failure(self, exc: BaseException) -> str | None:
        credentials = database_credentials(self._settings.resolved_database_url)
        host, port = credentials.get("host"), credentials.get("port")
        user, database = credentials.get("user"), credentials.get("database")
        at = f"PostgreSQL at {host}:{port}"
        if isinstance(exc, asyncpg.InvalidCatalogNameError):
            return (
                f'the database "{database}" does not exist on {at}: create it '
                f"(createdb -h {host} -p {port} -U {user} {database}), then run chatstore migrate"
            )
        if isinstance(
            exc, asyncpg.InvalidPasswordError | asyncpg.InvalidAuthorizationSpecificationError
        ):
            return (
                f"{at} refused the login of user {user!r}: check the user and password in "
                "CHATSTORE_DATABASE_URL (and the server's pg_hba.conf)"
            )
        if isinstance(exc, socket.gaierror):
            return f"the host {host!r} in CHATSTORE_DATABASE_URL cannot be resolved: check it"
        if isinstance(exc, ConnectionRefusedError):
            return (
                f"nothing accepts connections at {host}:{port}: start PostgreSQL there, or fix "
                "the host and port in CHATSTORE_DATABASE_URL"
            )
        if isinstance(exc, TimeoutError):
            return (
                f"{at} did not answer within {self._settings.db_connect_timeout:g} s "
                "(CHATSTORE_DB_CONNECT_TIMEOUT): check that it runs and is reachable from here"
            )
        if isinstance(exc, asyncpg.ProtocolViolationError):
            # What a pooler answers (PgBouncer: "unsupported startup parameter: search_path"
            # for a URL's schema, "no more connections allowed (max_client_conn)", …).
            reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            return f"{at} refused the connection ({reason}): check CHATSTORE_DATABASE_URL"
        if isinstance(
            exc, OSError | asyncpg.PostgresConnectionError | asyncpg.CannotConnectNowError
        ):
            kind = type(exc).__name__
            return f"cannot connect to {at} ({kind}): check that it runs and is reachable"
        return None

    async def recover(self) -> None:
        idle, pool = self._idle, self._pool
        if idle is None or pool is None:
            return
        try:
            await idle.drain()
            await pool.expire_connections()
        except Exception:  # best effort: the retry (or the next call) opens fresh connections
            log.debug("could not expire pooled connections", exc_info=True)

    async def applied_migrations(self) -> set[str]:
        try:
            rows = await self._fetch("SELECT version FROM aerich WHERE app = $1", APP_LABEL)
        except asyncpg.UndefinedTableError:
            return set()  # no aerich table: nothing was ever migrated
        return {str(row[0]) for row in rows}

    # -- plumbing --------------------------------------------------------------------------

    def _connections(self) -> IdleConnections:
        if self._idle is None:
            raise NotOpen
        return self._idle

    async def _fetch(self, sql: str, *args: Any) -> Sequence[Any]:
        async with self._connections().connection() as conn:
            rows: Sequence[Any] = await conn.fetch(sql, *args)
            return rows

    async def _one(self, sql: str, *args: Any) -> Any:
        rows = await self._fetch(sql, *args)
        return rows[0] if rows else None

    async def _execute(self, sql: str, *args: Any) -> str:
        async with self._connections().connection() as conn:
            status: str = await conn.execute(sql, *args)
            return status

    async def _transaction(self, work: Callable[[Any], Awaitable[T]]) -> T:
        idle = self._connections()

        async def run() -> T:
            async with idle.connection() as conn, conn.transaction():
                return await work(conn)

        # Shielded: a cancelled caller leaves the transaction to end in COMMIT or ROLLBACK.
        return await asyncio.shield(asyncio.ensure_future(run()))

    # -- conversations ---------------------------------------------------------------------

    async def create_conversation(
        self,
        *,
        user: str,
        conversation_id: UUID,
        title: str | None,
        metadata: str,
        key: str | None,
    ) -> Conversation | None:
        if self._settings.max_conversations_per_user is not None:
            return await self._create_counted(user, conversation_id, title, metadata, key)
        # One statement: the user row (first use) and the conversation together. A key the
        # user already has (or this id, stored by a first attempt) inserts nothing; the
        # conversation holding it is then read, and is there: rows are never re-keyed.
        for attempt in range(3):
            try:
                rows = await self._fetch(
                    _CREATE_CONVERSATION, user, conversation_id, title, metadata, key
                )
                if not rows and key is not None:
                    rows = await self._fetch(_CONVERSATION_BY_KEY, user, key)
                return conversation(*rows[0]) if rows else None
            except asyncpg.ForeignKeyViolationError as exc:
                # The user row existed when the statement began and an operator's purge
                # deleted it before the foreign-key check: run it again, and the user row is
                # created anew.
                if attempt == 2:
                    raise Unavailable(
                        "the user's data was being deleted at the same time; retrying is safe"
                    ) from exc
        raise AssertionError("unreachable")  # pragma: no cover

    async def _create_counted(
        self, user: str, conversation_id: UUID, title: str | None, metadata: str, key: str | None
    ) -> Conversation | None:
        """create_conversation under the conversation quota, in one transaction."""

        async def work(conn: Any) -> Conversation | None:
            await conn.execute(_NEW_USER, user)
            await conn.execute(_LOCK_USER, user)
            if key is not None:
                row = await conn.fetchrow(_CONVERSATION_BY_KEY, user, key)
                if row is not None:
                    return conversation(*row)
            if await conn.fetchval(_CONVERSATION_EXISTS, conversation_id, user):
                return None  # a retried call whose first attempt committed
            await self._check_quota(conn, user)
            row = await conn.fetchrow(
                _CREATE_CONVERSATION, user, conversation_id, title, metadata, key
            )
            return None if row is None else conversation(*row)

        return await self._transaction(work)

    async def _check_quota(self, conn: Any, user: str) -> None:
        """Under the user's row lock: refuse one more conversation past the quota."""
        limit = self._settings.max_conversations_per_user
        if limit is not None and await conn.fetchval(_COUNT_CONVERSATIONS, user) >= limit:
            raise QuotaReached

    async def get_conversation(self, *, user: str, conversation_id: UUID) -> Conversation | None:
        row = await self._one(_CONVERSATION, conversation_id, user)
        return None if row is None else conversation(*row)

    async def list_conversations(
        self, *, user: str, limit: int, after: Position | None
    ) -> list[Conversation]:
        if after is None:
            rows = await self._fetch(_CONVERSATIONS_FIRST, user, limit)
        else:
            rows = await self._fetch(_CONVERSATIONS_AFTER, user, after[0], after[1], limit)
        return [conversation(*row) for row in rows]

    async def update_conversation(
        self,
        *,
        user: str,
        conversation_id: UUID,
        changes: dict[str, Any],
        check: Callable[[SummaryEnd], None] | None,
    ) -> Conversation | None:
        args: list[Any] = [conversation_id, user]
        sets = []
        for column, value in changes.items():
            args.append(value)
            sets.append(f"{column} = ${len(args)}{_UPDATABLE[column]}")
        update = (
            f"UPDATE conversations SET {', '.join(sets)} WHERE id = $1 AND user_id = $2 "
            f"RETURNING {CONVERSATION_COLUMNS}"
        )

        async def work(conn: Any) -> Conversation | None:
            if check is not None:
                # Under the row lock appends take too: the check sees every message.
                last_seq = await conn.fetchval(_LOCK_CONVERSATION, conversation_id, user)
                if last_seq is None:
                    return None
                seq = changes["summary_up_to_seq"]
                ends = {r[0]: r for r in await conn.fetch(_SUMMARY_END, conversation_id, seq)}
                check(summary_end(last_seq, ends.get(seq), ends.get(seq + 1)))
            row = await conn.fetchrow(update, *args)
            return None if row is None else conversation(*row)

        return await self._transaction(work)

    async def fork_conversation(
        self,
        *,
        user: str,
        conversation_id: UUID,
        fork_id: UUID,
        at_seq: int,
        title: str | None,
        check: Callable[[int], None],
    ) -> Conversation | None:
        async def work(conn: Any) -> Conversation | None:
            if self._settings.max_conversations_per_user is not None:
                await conn.execute(_LOCK_USER, user)
            last_seq = await conn.fetchval(_LOCK_PARENT, conversation_id, user)
            if last_seq is None:
                return None
            check(last_seq)
            if not await conn.fetchval(_CONVERSATION_EXISTS, fork_id, user):
                await self._check_quota(conn, user)
            row = await conn.fetchrow(_FORK, conversation_id, user, fork_id, title, at_seq)
            if row is None:  # this very fork, stored by a first attempt
                row = await conn.fetchrow(_CONVERSATION, fork_id, user)
                return None if row is None else conversation(*row)
            await conn.execute(_FORK_MESSAGES, conversation_id, fork_id, at_seq)
            return conversation(*row)

        return await self._transaction(work)

    async def truncate_messages(
        self,
        *,
        user: str,
        conversation_id: UUID,
        after_seq: int,
        check: Callable[[int], None],
    ) -> Conversation | None:
        async def work(conn: Any) -> Conversation | None:
            last_seq = await conn.fetchval(_LOCK_CONVERSATION, conversation_id, user)
            if last_seq is None:
                return None
            check(last_seq)
            row = await conn.fetchrow(_TRUNCATE, conversation_id, user, after_seq)
            return None if row is None else conversation(*row)

        return await self._transaction(work)

    async def delete_conversation(self, *, user: str, conversation_id: UUID) -> int | None:
        # The row lock DELETE takes orders it after any append in flight, so the returned
        # message_count is exactly the number of messages the cascade removed.
        row = await self._one(_DELETE_CONVERSATION, conversation_id, user)
        return None if row is None else int(row[0])

    # -- messages --------------------------------------------------------------------------

    async def append_message(
        self, *, user: str, conversation_id: UUID, message_id: UUID, message: NewMessage
    ) -> Message | None:
        tool_calls, metadata, raw = message.json_columns()
        try:
            rows = await self._fetch(
                _APPEND,
                conversation_id,
                user,
                message_id,
                message.role,
                message.content,
                tool_calls,
                message.tool_call_id,
                metadata,
                message.idempotency_key,
                message.token_count,
                raw,
                self._settings.message_quota,
            )
        except asyncpg.UniqueViolationError as exc:
            raise Duplicate from exc
        if not rows:
            return None
        seq, created_at = rows[0]
        return stored_message(message_id, conversation_id, seq, created_at, message)

    async def append_messages(
        self, *, user: str, conversation_id: UUID, batch: list[tuple[UUID, NewMessage]]
    ) -> list[Message] | None:
        columns = [new.json_columns() for _, new in batch]
        try:
            rows = await self._fetch(
                _APPEND_BATCH,
                conversation_id,
                user,
                len(batch),
                sum(new.token_count or 0 for _, new in batch),
                [mid for mid, _ in batch],
                [new.role for _, new in batch],
                [new.content for _, new in batch],
                [tool_calls for tool_calls, _, _ in columns],
                [new.tool_call_id for _, new in batch],
                [metadata for _, metadata, _ in columns],
                [new.token_count for _, new in batch],
                [new.idempotency_key for _, new in batch],
                [raw for _, _, raw in columns],
                self._settings.message_quota,
            )
        except asyncpg.UniqueViolationError as exc:
            raise Duplicate from exc
        if not rows:
            return None
        placed = {mid: (seq, created_at) for mid, seq, created_at in rows}
        return [stored_message(mid, conversation_id, *placed[mid], new) for mid, new in batch]

    async def messages_by_ids(self, *, user: str, message_ids: list[UUID]) -> list[Message]:
        rows = await self._fetch(_MESSAGES_BY_ID, message_ids, user)
        return [message(*row) for row in rows]

    async def messages_by_keys(
        self, *, user: str, conversation_id: UUID, keys: list[str]
    ) -> dict[str, Message]:
        rows = await self._fetch(_MESSAGES_BY_KEY, conversation_id, keys, user)
        return {row[-1]: message(*row[:-1]) for row in rows}

    async def message_page(
        self, *, user: str, conversation_id: UUID, window: Window
    ) -> list[Message]:
        cid, count = conversation_id, window.count
        if window.after_seq is not None:
            rows = await self._fetch(_AFTER, cid, user, window.after_seq, count)
        elif window.before_seq is not None:
            rows = await self._fetch(_BEFORE, cid, user, window.before_seq, count)
        else:
            rows = await self._fetch(_LATEST, cid, user, count)
        return [message(*row) for row in rows]

    async def conversation_exists(self, *, user: str, conversation_id: UUID) -> bool:
        row = await self._one(_CONVERSATION_EXISTS, conversation_id, user)
        return row is not None

    # -- search -----------------------------------------------------------------------------

    async def search_messages(
        self,
        *,
        user: str,
        query: str,
        terms: Terms,
        conversation_id: UUID | None,
        role: str | None,
        count: int,
        after: SearchPosition | None,
    ) -> list[SearchHit]:
        args: list[Any] = [user, query, count]
        where = ""
        if conversation_id is not None:
            args.append(conversation_id)
            where += f" AND m.conversation_id = ${len(args)}"
        if role is not None:
            args.append(role)
            where += f" AND m.role = ${len(args)}"
        if after is not None:
            args += after
            n = len(args)
            where += _AFTER_HIT.format(n - 2, n - 1, n)
        rows = await self._fetch(_SEARCH.format(where=where), *args)
        return [search_hit(message(*row[:-3]), *row[-3:]) for row in rows]

    # -- context windows -------------------------------------------------------------------

    async def context_window(
        self,
        *,
        user: str,
        conversation_id: UUID,
        max_tokens: int,
        keep_system: bool,
        systems: int,
        reads: int,
    ) -> ContextWindow | None:
        rows = await self._fetch(
            _CONTEXT_WINDOW, conversation_id, user, max_tokens, keep_system, systems, reads
        )
        return context_window(rows, lambda row: message(*row))

    async def system_messages(
        self, *, user: str, conversation_id: UUID, above: int, below: int, count: int
    ) -> list[Message]:
        rows = await self._fetch(_SYSTEM_MESSAGES, conversation_id, user, above, below, count)
        return [message(*row) for row in rows]

    # -- users -----------------------------------------------------------------------------

    async def export_conversations(
        self, *, after: UUID | None, user: str | None, conversation_id: UUID | None, limit: int
    ) -> list[tuple[str, Conversation]]:
        rows = await self._fetch(_EXPORT_CONVERSATIONS, after, user, conversation_id, limit)
        return [(str(row[0]), conversation(*row[1:])) for row in rows]

    async def export_messages(
        self, *, conversation_id: UUID, after_seq: int, up_to_seq: int, limit: int
    ) -> list[tuple[Message, str | None]]:
        rows = await self._fetch(_EXPORT_MESSAGES, conversation_id, after_seq, limit, up_to_seq)
        return [(message(*row[:-1]), row[-1]) for row in rows]

    async def import_conversations(
        self,
        group: list[ImportedConversation],
        *,
        more: AsyncIterator[list[ImportedMessage]] | None = None,
    ) -> dict[UUID, bool]:
        timeout = self._settings.db_timeout
        columns: list[list[Any]] = [[] for _ in range(14)]
        for c in group:
            r, parent = c.record, c.record.forked_from
            values = (
                r.id,
                r.user,
                r.title,
                dump_json(r.metadata),
                r.key,
                r.created_at,
                r.updated_at,
                r.message_count,
                r.summary,
                r.summary_up_to_seq,
                c.summary_tokens,
                c.tokens,
                None if parent is None else parent.conversation_id,
                None if parent is None else parent.seq,
            )
            for column, value in zip(columns, values, strict=True):
                column.append(value)

        async def copy(conn: Any, chunk: list[ImportedMessage]) -> None:
            if not chunk:
                return
            try:
                await conn.copy_records_to_table(
                    "messages",
                    records=[_imported_row(m) for m in chunk],
                    columns=_IMPORTED_COLUMNS,
                    timeout=timeout,
                )
            except asyncpg.UniqueViolationError as exc:
                raise ImportClash(chunk) from exc

        async def work(conn: Any) -> dict[UUID, bool]:
            await conn.execute(_IMPORT_USERS, columns[1], timeout=timeout)
            try:
                rows = await conn.fetch(_IMPORT_CONVERSATIONS, *columns, timeout=timeout)
            except asyncpg.UniqueViolationError as exc:
                raise ImportClash(None) from exc
            written = {row[0]: bool(row[1]) for row in rows}
            await copy(conn, [m for c in group if c.record.id in written for m in c.messages])
            last = group[-1].record
            if more is not None and last.id in written:
                added = 0
                async for chunk in more:
                    await copy(conn, chunk)
                    added += token_total(chunk)
                await conn.execute(_IMPORTED_TOKENS, last.id, added, timeout=timeout)
            return written

        return await self._transaction(work)

    async def link_forks(self, forks: list[tuple[UUID, UUID]]) -> int:
        status = await self._execute(
            _LINK_FORKS, [fork for fork, _ in forks], [parent for _, parent in forks]
        )
        return int(status.rsplit(" ", 1)[1])

    async def existing_message_ids(self, message_ids: list[UUID]) -> set[UUID]:
        return {row[0] for row in await self._fetch(_EXISTING_MESSAGES, message_ids)}

    async def prune_batch(
        self, *, before: datetime, user: str | None, limit: int, dry_run: bool
    ) -> tuple[int, int]:
        if dry_run:
            row = await self._one(_PRUNE_COUNT, before, user)
            return int(row[0]), int(row[1])
        rows = await self._fetch(_PRUNE, before, user, limit)
        return len(rows), sum(int(row[0]) for row in rows)

    async def purge_user(self, *, user: str) -> tuple[int, int]:
        async def work(conn: Any) -> tuple[int, int]:
            # Lock the user's conversations first so the counts match what the cascade
            # removes even with appends in flight.
            await conn.execute("SELECT 1 FROM conversations WHERE user_id = $1 FOR UPDATE", user)
            row = await conn.fetchrow(_USER_TOTALS, user)
            await conn.execute("DELETE FROM users WHERE id = $1", user)
            return int(row[0]), int(row[1])

        return await self._transaction(work)
