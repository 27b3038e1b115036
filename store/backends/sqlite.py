"""SQLite through aiosqlite: every statement of the store in ``?N`` style, on one connection.

Writes run in ``BEGIN IMMEDIATE`` transactions, which take the file's write lock up front: every
writer, in this process or another one sharing the file (a CLI beside a server), is serialised,
so ``last_seq + 1`` is never handed out twice. Within the process one connection serves every
call, one statement or transaction at a time. Ids are stored as text and timestamps as the text
Tortoise writes (``2026-12-01 09:28:44.123456+00:00``), so they sort as they should.

A file is migrated in place when it is opened: the embedded default needs no set-up.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, TypeVar
from uuid import UUID

import aiosqlite

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
from store.errors import NotOpen
from store.schemas import Conversation, Message, NewMessage, SearchHit, dump_json
from store.settings import APP_LABEL, Settings, database_credentials

__all__ = ["SqliteBackend"]

log = logging.getLogger("chatstore.store")

T = TypeVar("T")


_CONVERSATION = f"SELECT {CONVERSATION_COLUMNS} FROM conversations WHERE id = ?1 AND user_id = ?2"
_DELETE_CONVERSATION = (
    "DELETE FROM conversations WHERE id = ?1 AND user_id = ?2 RETURNING message_count"
)
# get_context's window, in one statement: as in the PostgreSQL backend (see there).
_NO_MESSAGE = ", ".join("NULL" for _ in MESSAGE_COLUMNS.split(", "))
_CONTEXT_WINDOW = f"""
WITH c AS (
    SELECT summary, summary_up_to_seq, summary_token_count, last_seq,
           coalesce(summary_up_to_seq, 0) AS bound,
           ?3 - CASE WHEN summary IS NULL THEN 0 ELSE summary_token_count END AS budget,
           min(?6, 16 + CAST(2.0 * ?3 * max(message_count, 1) / max(token_total, 1) AS INTEGER))
               AS reads
    FROM conversations WHERE id = ?1 AND user_id = ?2
),
w AS (
    SELECT {MESSAGE_COLUMNS}, sum(token_count) OVER (ORDER BY seq DESC) AS running
    FROM messages
    WHERE conversation_id = ?1 AND seq > (SELECT bound FROM c) AND (SELECT budget FROM c) >= 0
    ORDER BY seq DESC LIMIT coalesce((SELECT reads FROM c), 0)
),
walked AS (SELECT * FROM w WHERE running - token_count <= (SELECT budget FROM c))
SELECT 0, summary, summary_up_to_seq, summary_token_count, last_seq, {_NO_MESSAGE} FROM c
UNION ALL
SELECT 1, NULL, NULL, NULL, NULL, {MESSAGE_COLUMNS} FROM walked
UNION ALL
SELECT * FROM (
    SELECT 2, NULL, NULL, NULL, NULL, {MESSAGE_COLUMNS} FROM messages
    WHERE ?4 AND conversation_id = ?1 AND role = 'system'
      AND seq < (SELECT coalesce(min(seq), (SELECT last_seq + 1 FROM c)) FROM walked)
    ORDER BY seq LIMIT ?5
)
"""
_SYSTEM_MESSAGES = (
    f"SELECT {MESSAGE_COLUMNS} FROM messages WHERE conversation_id = ?1 AND EXISTS "
    "(SELECT 1 FROM conversations c WHERE c.id = ?1 AND c.user_id = ?2) "
    "AND role = 'system' AND seq > ?3 AND seq < ?4 ORDER BY seq LIMIT ?5"
)
# A fork, as in the PostgreSQL backend (see there), inside BEGIN IMMEDIATE; message ids are
# made by SQLite, in the UUID version 4 form.
_FORK = f"""
INSERT INTO conversations
    (id, user_id, title, metadata, created_at, updated_at, message_count, last_seq, summary,
     summary_up_to_seq, summary_token_count, token_total, forked_from_id, forked_from_seq)
SELECT ?3, p.user_id, coalesce(?4, p.title), p.metadata, ?6, ?6, ?5, ?5,
       CASE WHEN p.summary_up_to_seq <= ?5 THEN p.summary END,
       CASE WHEN p.summary_up_to_seq <= ?5 THEN p.summary_up_to_seq END,
       CASE WHEN p.summary_up_to_seq <= ?5 THEN p.summary_token_count END,
       (SELECT coalesce(sum(token_count), 0) FROM messages
        WHERE conversation_id = ?1 AND seq <= ?5),
       p.id, ?5
FROM conversations p WHERE p.id = ?1 AND p.user_id = ?2
ON CONFLICT (id) DO NOTHING
RETURNING {CONVERSATION_COLUMNS}
"""
_UUID4 = (
    "lower(hex(randomblob(4)) || '-' || hex(randomblob(2)) || '-4' || "
    "substr(hex(randomblob(2)), 2) || '-' || substr('89ab', 1 + abs(random()) % 4, 1) || "
    "substr(hex(randomblob(2)), 2) || '-' || hex(randomblob(6)))"
)
_FORK_MESSAGES = f"""
INSERT INTO messages (id, conversation_id, user_id, seq, role, content, tool_calls, tool_call_id,
                      metadata, created_at, token_count, raw)
SELECT {_UUID4}, ?2, user_id, seq, role, content, tool_calls, tool_call_id, metadata,
       created_at, token_count, raw
FROM messages WHERE conversation_id = ?1 AND seq <= ?3 ORDER BY seq
"""
# A truncation, inside BEGIN IMMEDIATE: what the tail holds, then its deletion and the
# counters moved back by it (a summary covering a deleted message goes too).
_TAIL = (
    "SELECT count(*), coalesce(sum(token_count), 0) FROM messages "
    "WHERE conversation_id = ?1 AND seq > ?2"
)
_DELETE_TAIL = "DELETE FROM messages WHERE conversation_id = ?1 AND seq > ?2"
_TRUNCATE = f"""
UPDATE conversations
SET last_seq = ?3, message_count = message_count - ?4, token_total = token_total - ?5,
    summary = CASE WHEN summary_up_to_seq > ?3 THEN NULL ELSE summary END,
    summary_token_count = CASE WHEN summary_up_to_seq > ?3 THEN NULL ELSE summary_token_count END,
    summary_up_to_seq = CASE WHEN summary_up_to_seq > ?3 THEN NULL ELSE summary_up_to_seq END
WHERE id = ?1 AND user_id = ?2
RETURNING {CONVERSATION_COLUMNS}
"""
_LAST_SEQ = "SELECT last_seq FROM conversations WHERE id = ?1 AND user_id = ?2"
_SUMMARY_END = (
    "SELECT seq, role, tool_calls IS NOT NULL FROM messages "
    "WHERE conversation_id = ?1 AND seq IN (?2, ?2 + 1)"
)
_M_COLUMNS = ", ".join(f"m.{column}" for column in MESSAGE_COLUMNS.split(", "))
# Search: FTS5 (porter over unicode61) through message_search, whose INTEGER ids stay stable.
# FTS5 is read first (CROSS JOIN fixes the order): SQLite otherwise walks the user's messages
# and probes FTS5 once for each (measured: 11.6 s instead of 0.34 s for a word in 105,622 of
# 200,000 messages). The rank is how many of the query's terms the message holds; only terms
# that are alternatives (`a or b`) can differ between hits, so only those are looked up, each
# once, in FTS5's index ({rank}). It depends on the message and the query alone: bm25() would
# weigh words by how many messages of all users hold them, so other users' histories would
# move a user's ranks; highlight()-based term counts re-tokenize every hit (2.0 s for the
# 105,622 above). Excerpts are made for the page only. The filters ({where}) are per call.
_SEARCH = f"""
WITH hits AS (
    SELECT s.id AS sid, m.id AS mid, m.created_at AS created_at, {{rank}} AS rank
    FROM messages_fts
    CROSS JOIN message_search s ON s.id = messages_fts.rowid
    CROSS JOIN messages m ON m.id = s.message_id
    WHERE messages_fts MATCH ?2 AND m.user_id = ?1{{where}}
),
page AS (
    SELECT * FROM hits{{after}} ORDER BY rank DESC, created_at DESC, mid DESC LIMIT ?3
)
SELECT {_M_COLUMNS}, c.title, page.rank,
       (SELECT snippet(messages_fts, -1, '**', '**', '…', 16) FROM messages_fts
        WHERE messages_fts MATCH ?2 AND rowid = page.sid)
FROM page JOIN messages m ON m.id = page.mid JOIN conversations c ON c.id = m.conversation_id
ORDER BY page.rank DESC, page.created_at DESC, page.mid DESC
"""
_HAS_TERM = "(s.id IN (SELECT rowid FROM messages_fts WHERE messages_fts MATCH ?{}))"
_UPDATABLE = ("title", "metadata", "summary", "summary_up_to_seq", "summary_token_count")
_TOTALS = (
    "SELECT (SELECT count(*) FROM users), count(*), coalesce(sum(message_count), 0) "
    "FROM conversations"
)
# Retention, inside BEGIN IMMEDIATE (no append can land between the choice and the delete).
_PRUNE_CHOOSE = (
    "SELECT id, message_count FROM conversations "
    "WHERE updated_at < ?1 AND (?2 IS NULL OR user_id = ?2) ORDER BY updated_at LIMIT ?3"
)
_PRUNE_COUNT = (
    "SELECT count(*), coalesce(sum(message_count), 0) FROM conversations "
    "WHERE updated_at < ?1 AND (?2 IS NULL OR user_id = ?2)"
)
# Export, as in the PostgreSQL backend (ids are lowercase text, so they sort as uuids do).
_EXPORT_CONVERSATIONS = (
    f"SELECT user_id, {CONVERSATION_COLUMNS} FROM conversations "
    "WHERE (?1 IS NULL OR id > ?1) AND (?2 IS NULL OR user_id = ?2) "
    "AND (?3 IS NULL OR id = ?3) ORDER BY id LIMIT ?4"
)
_EXPORT_MESSAGES = (
    f"SELECT {MESSAGE_COLUMNS}, idempotency_key FROM messages "
    "WHERE conversation_id = ?1 AND seq > ?2 AND seq <= ?4 ORDER BY seq LIMIT ?3"
)
# Import, as in the PostgreSQL backend (see there), inside BEGIN IMMEDIATE; messages by
# executemany, a chunk at a time (the search triggers index them as they arrive). The parent
# is looked up first: with it written as a subquery of the INSERT, RETURNING gave 1 for
# "forked_from_id IS NOT NULL" on every row (SQLite 3.40).
_NEW_USER = "INSERT INTO users (id, created_at) VALUES (?1, ?2) ON CONFLICT (id) DO NOTHING"
_IMPORT_CONVERSATION = """
INSERT INTO conversations
    (id, user_id, title, metadata, key, created_at, updated_at, message_count, last_seq,
     summary, summary_up_to_seq, summary_token_count, token_total, forked_from_id,
     forked_from_seq)
VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?8, ?9, ?10, ?11, ?12, ?13, ?14)
ON CONFLICT (id) DO NOTHING
RETURNING 1
"""
_IMPORT_MESSAGE = (
    f"INSERT INTO messages ({MESSAGE_COLUMNS}, user_id, idempotency_key) "
    "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)"
)
_IMPORTED_TOKENS = "UPDATE conversations SET token_total = token_total + ?2 WHERE id = ?1"
_LINK_FORK = (
    "UPDATE conversations SET forked_from_id = ?2 WHERE id = ?1 AND forked_from_id IS NULL "
    "AND EXISTS (SELECT 1 FROM conversations p WHERE p.id = ?2 "
    "AND p.user_id = conversations.user_id)"
)
_EXISTING_MESSAGES = "SELECT id FROM messages WHERE id IN (SELECT value FROM json_each(?1))"
_USER_TOTALS = (
    "SELECT count(*), coalesce(sum(message_count), 0) FROM conversations WHERE user_id = ?1"
)
_CONVERSATION_EXISTS = "SELECT 1 FROM conversations WHERE id = ?1 AND user_id = ?2"
_MESSAGES_BY_ID = (
    f"SELECT {MESSAGE_COLUMNS} FROM messages "
    "WHERE id IN (SELECT value FROM json_each(?1)) AND user_id = ?2"
)
_CONVERSATIONS = f"SELECT {CONVERSATION_COLUMNS} FROM conversations WHERE user_id = ?1 "
_CONVERSATIONS_FIRST = _CONVERSATIONS + "ORDER BY updated_at DESC, id DESC LIMIT ?2"
_CONVERSATIONS_AFTER = (
    _CONVERSATIONS + "AND (updated_at, id) < (?2, ?3) ORDER BY updated_at DESC, id DESC LIMIT ?4"
)
# The counters moved for a batch of ?5, unless that would pass the message quota (?6): then
# no row, and the messages are not inserted.
_APPEND_COUNTERS = (
    "UPDATE conversations SET last_seq = last_seq + ?5, message_count = message_count + ?5, "
    "token_total = token_total + ?4, updated_at = MAX(updated_at, ?1) "
    "WHERE id = ?2 AND user_id = ?3 AND message_count + ?5 <= ?6 "
    "RETURNING last_seq, updated_at"
)
_COUNT_CONVERSATIONS = "SELECT count(*) FROM conversations WHERE user_id = ?1"
_CREATE_CONVERSATION = (
    "INSERT INTO conversations (id, user_id, title, metadata, created_at, updated_at, "
    "message_count, last_seq, key) VALUES (?1, ?2, ?3, ?4, ?5, ?5, 0, 0, ?6) "
    f"ON CONFLICT DO NOTHING RETURNING {CONVERSATION_COLUMNS}"
)
_CONVERSATION_BY_KEY = (
    f"SELECT {CONVERSATION_COLUMNS} FROM conversations WHERE user_id = ?1 AND key = ?2"
)
_APPEND_MESSAGE = (
    f"INSERT INTO messages ({MESSAGE_COLUMNS}, user_id, idempotency_key) "
    "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)"
)
_PAGE = (
    f"SELECT {MESSAGE_COLUMNS} FROM messages WHERE conversation_id = ?1 AND EXISTS "
    "(SELECT 1 FROM conversations c WHERE c.id = ?1 AND c.user_id = ?2) "
)
_LATEST = _PAGE + "ORDER BY seq DESC LIMIT ?3"
_BEFORE = _PAGE + "AND seq < ?3 ORDER BY seq DESC LIMIT ?4"
_AFTER = _PAGE + "AND seq > ?3 ORDER BY seq ASC LIMIT ?4"
_MESSAGES_BY_KEY = (
    f"SELECT {MESSAGE_COLUMNS}, idempotency_key FROM messages WHERE conversation_id = ?1 "
    "AND idempotency_key IN (SELECT value FROM json_each(?2)) AND user_id = ?3"
)


def _busy_timeout(settings: Settings) -> int:
    # Several processes may share one file (a CLI beside a server): wait for the writer
    # instead of failing at once with "database is locked".
    return int(settings.db_timeout * 1000)


def _pragmas(settings: Settings) -> dict[str, Any]:
    """What every connection to the file sets, as Tortoise sets it on the ones aerich migrates
    through: the URL's query parameters over its defaults (WAL journal, journal_size_limit),
    foreign keys on (the ON DELETE CASCADE in the DDL needs them) and the busy timeout."""
    pragmas = database_credentials(settings.resolved_database_url)
    del pragmas["file_path"]
    defaults = {"journal_mode": "WAL", "journal_size_limit": 16384, "foreign_keys": "ON"}
    return {**defaults, "busy_timeout": _busy_timeout(settings), **pragmas}


def _private_folders(folder: Path) -> None:
    """Create ``folder`` and its missing parents 0700, whatever the umask. A folder that
    exists already keeps its mode: it may be shared on purpose."""
    missing: list[Path] = []
    while not folder.exists() and folder != folder.parent:
        missing.append(folder)
        folder = folder.parent
    for path in reversed(missing):
        try:
            os.mkdir(path, 0o700)
        except FileExistsError:
            if not path.is_dir():
                raise
            continue  # another process made it just now
        os.chmod(path, 0o700)


def _private_file(file: Path) -> None:
    """Create an empty database file 0600, whatever the umask, before SQLite does (0644):
    SQLite gives its -wal and -shm files the mode of the database. A database that exists
    already keeps its mode, as the folder does."""
    try:
        fd = os.open(file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return
    try:
        os.fchmod(fd, 0o600)
    finally:
        os.close(fd)


def _ts(value: datetime) -> str:
    return value.astimezone(UTC).isoformat(" ")


def _parse_ts(value: str) -> datetime:
    parsed = datetime.fromisoformat(value)
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _conversation(row: Sequence[Any]) -> Conversation:
    # SQLite hands back ids and timestamps as text: the ids, and columns 3 and 4.
    cid, title, metadata, created_at, updated_at, count, last, summary, up_to, parent, at, key = row
    created, updated = _parse_ts(created_at), _parse_ts(updated_at)
    forked = None if parent is None else UUID(parent)
    fields = (count, last, summary, up_to, forked, at, key)
    return conversation(UUID(cid), title, metadata, created, updated, *fields)


def _message(row: Sequence[Any]) -> Message:
    # Text ids in columns 0 and 1, the text timestamp in column 8.
    mid, cid, seq, role, content, tool_calls, tool_call_id, metadata, created_at, tokens, raw = row
    created = _parse_ts(created_at)
    fields = (seq, role, content, tool_calls, tool_call_id, metadata, created, tokens, raw)
    return message(UUID(mid), UUID(cid), *fields)


def _phrase(text: str) -> str:
    # Quoted, an FTS5 string is a phrase of its words and never an operator.
    return '"' + text.replace('"', '""') + '"'


def _fts_query(terms: Terms) -> str:
    """The FTS5 query for ``terms``: every group, each any one of its phrases, and none of
    the excluded phrases."""
    groups = " AND ".join(
        "(" + " OR ".join(_phrase(term) for term in group) + ")" for group in terms.groups
    )
    return "".join([f"({groups})", *(f" NOT {_phrase(term)}" for term in terms.excluded)])


def _retrieve(task: asyncio.Future[Any]) -> None:
    # A shielded transaction whose caller has gone: its outcome is nobody's to report.
    if not task.cancelled():
        task.exception()


async def _exec(conn: aiosqlite.Connection, sql: str, params: Sequence[Any] = ()) -> None:
    cursor = await conn.execute(sql, params)
    await cursor.close()


async def _rows(conn: aiosqlite.Connection, sql: str, params: Sequence[Any]) -> list[Any]:
    return list(await conn.execute_fetchall(sql, params))


def _imported_row(imported: ImportedMessage) -> tuple[Any, ...]:
    """An imported message as its row (``_IMPORT_MESSAGE``)."""
    m = imported.message
    tool_calls, metadata, raw = m.json_columns()
    return (
        str(m.id),
        str(m.conversation_id),
        m.seq,
        m.role,
        m.content,
        tool_calls,
        m.tool_call_id,
        metadata,
        _ts(m.created_at),
        m.token_count,
        raw,
        imported.user,
        m.idempotency_key,
    )


class SqliteBackend:
    name: Literal["sqlite"] = "sqlite"

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._conn: aiosqlite.Connection | None = None
        self._lock = asyncio.Lock()

    # -- lifecycle -------------------------------------------------------------------------

    @classmethod
    def prepare(cls, settings: Settings) -> None:
        path = settings.sqlite_path
        if path == ":memory:":
            return
        file = Path(path)
        _private_folders(file.absolute().parent)
        _private_file(file)
        # Opened once here, plainly and as every later connection is: through Tortoise
        # (aerich) a file that cannot be opened or read (a directory, no permission, a
        # read-only folder, not a database) never fails, the migration just hangs.
        conn = sqlite3.connect(path, timeout=settings.db_timeout, isolation_level=None)
        try:
            for pragma, value in _pragmas(settings).items():
                conn.execute(f"PRAGMA {pragma}={value}")
            conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
        finally:
            conn.close()

    @classmethod
    def tortoise_connection(cls, settings: Settings) -> dict[str, Any]:
        credentials = database_credentials(settings.resolved_database_url)
        credentials.setdefault("busy_timeout", _busy_timeout(settings))
        # Tortoise's SQLite client, but a migration's script runs inside its transaction.
        return {"engine": "store.backends._sqlite_migrations", "credentials": credentials}

    async def open(self) -> None:
        # Imported here: ``python -m store.migrate`` runs that module as __main__, and the
        # package must not have imported it first.
        from store import migrate

        try:
            applied = await migrate.upgrade(self._settings)
        except Exception:
            # Another process may be migrating the same file right now; if the schema is at
            # head afterwards, all is well.
            await asyncio.sleep(0.2)
            applied = await migrate.upgrade(self._settings)
        if applied:
            log.info("migrated the SQLite database: applied %s", ", ".join(applied))
        conn = await aiosqlite.connect(self._settings.sqlite_path, isolation_level=None)
        try:
            for pragma, value in _pragmas(self._settings).items():
                await _exec(conn, f"PRAGMA {pragma}={value}")
        except BaseException:
            await conn.close()
            raise
        self._conn = conn

    async def close(self) -> None:
        # Under the lock: the statement or transaction running now finishes first, and every
        # call still waiting for the connection then finds the store closed.
        async with self._lock:
            conn, self._conn = self._conn, None
        if conn is not None:
            await conn.close()

    def where(self) -> str:
        return "the SQLite file could not be opened"

    def location(self) -> str:
        return self._settings.sqlite_path

    async def totals(self) -> tuple[int, int, int]:
        row = await self._one(_TOTALS)
        return int(row[0]), int(row[1]), int(row[2])

    def open_failure(self, exc: BaseException) -> str | None:
        if isinstance(exc, FileExistsError | NotADirectoryError):
            return (
                f"cannot create the SQLite database {self._settings.sqlite_path}: part of its "
                "folder path is a file, not a folder; fix the path in CHATSTORE_DATABASE_URL "
                "(or CHATSTORE_DATA_DIR)"
            )
        path = self._settings.sqlite_path
        code = getattr(exc, "sqlite_errorname", "")
        if code.startswith(("SQLITE_NOTADB", "SQLITE_CORRUPT")):
            return (
                f"cannot open the SQLite database {path} ({exc}): it is damaged or not a "
                "database; restore it from a backup, or point CHATSTORE_DATABASE_URL elsewhere"
            )
        if code == "SQLITE_READONLY_DIRECTORY":
            return (
                f"cannot open the SQLite database {path}: its folder is read-only, and SQLite "
                "keeps its -wal and -shm files beside it; make the folder writable for this "
                "user, or point CHATSTORE_DATABASE_URL elsewhere"
            )
        if isinstance(exc, sqlite3.Error | OSError):
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            return (
                f"cannot open the SQLite database {path} ({reason}): check the path in "
                "CHATSTORE_DATABASE_URL (or CHATSTORE_DATA_DIR) and its permissions"
            )
        return None

    def is_unavailable(self, exc: BaseException) -> bool:
        if isinstance(exc, OSError | TimeoutError):
            return True
        text = str(exc).lower()
        return isinstance(exc, sqlite3.OperationalError) and (
            "locked" in text or "busy" in text or "disk i/o" in text or "unable to open" in text
        )

    async def recover(self) -> None:
        return None  # one connection, nothing pooled to drop

    async def applied_migrations(self) -> set[str]:
        try:
            rows = await self._fetch("SELECT version FROM aerich WHERE app = ?1", APP_LABEL)
        except sqlite3.OperationalError as exc:
            if "no such table" not in str(exc):
                raise
            return set()  # no aerich table: nothing was ever migrated
        return {str(row[0]) for row in rows}

    # -- plumbing --------------------------------------------------------------------------

    def _connection(self) -> aiosqlite.Connection:
        if self._conn is None:
            raise NotOpen
        return self._conn

    async def _fetch(self, sql: str, *params: Any) -> list[Any]:
        async with self._lock:
            return await _rows(self._connection(), sql, params)

    async def _one(self, sql: str, *params: Any) -> Any:
        rows = await self._fetch(sql, *params)
        return rows[0] if rows else None

    async def _transaction(self, work: Callable[[aiosqlite.Connection], Awaitable[T]]) -> T:
        abandoned = False

        async def run() -> T:
            async with self._lock:
                conn = self._connection()
                if abandoned:
                    raise asyncio.CancelledError
                await _exec(conn, "BEGIN IMMEDIATE")
                try:
                    if abandoned:
                        # The caller gave up (cancelled, or timed out and was told
                        # `unavailable`) while this waited for the write lock: write nothing,
                        # or a retry would store the message twice.
                        raise asyncio.CancelledError
                    result = await work(conn)
                except BaseException:
                    await _exec(conn, "ROLLBACK")
                    raise
                await _exec(conn, "COMMIT")
                return result

        # The transaction runs in its own task that the caller's cancellation cannot reach: it
        # always ends in COMMIT or ROLLBACK with the connection lock held, so a cancelled call
        # leaves the whole write or none of it, and never an open transaction.
        task = asyncio.ensure_future(run())
        task.add_done_callback(_retrieve)
        try:
            return await asyncio.shield(task)
        except asyncio.CancelledError:
            abandoned = True
            raise

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
        now, cid = _ts(datetime.now(UTC)), str(conversation_id)

        async def work(conn: aiosqlite.Connection) -> list[Any]:
            await _exec(conn, _NEW_USER, (user, now))
            if self._settings.max_conversations_per_user is not None:
                # Under BEGIN IMMEDIATE's write lock: no other writer counts meanwhile.
                if key is not None:
                    found = await _rows(conn, _CONVERSATION_BY_KEY, (user, key))
                    if found:
                        return found
                if not await _rows(conn, _CONVERSATION_EXISTS, (cid, user)):
                    await self._check_quota(conn, user)
            created = await _rows(
                conn, _CREATE_CONVERSATION, (cid, user, title, metadata, now, key)
            )
            if created or key is None:
                return created
            # The user already has this key (or this id, from a first attempt): theirs.
            return await _rows(conn, _CONVERSATION_BY_KEY, (user, key))

        rows = await self._transaction(work)
        return _conversation(rows[0]) if rows else None

    async def _check_quota(self, conn: aiosqlite.Connection, user: str) -> None:
        """Inside a write transaction: refuse one more conversation past the quota."""
        limit = self._settings.max_conversations_per_user
        if limit is not None and (await _rows(conn, _COUNT_CONVERSATIONS, (user,)))[0][0] >= limit:
            raise QuotaReached

    async def get_conversation(self, *, user: str, conversation_id: UUID) -> Conversation | None:
        row = await self._one(_CONVERSATION, str(conversation_id), user)
        return None if row is None else _conversation(row)

    async def list_conversations(
        self, *, user: str, limit: int, after: Position | None
    ) -> list[Conversation]:
        if after is None:
            rows = await self._fetch(_CONVERSATIONS_FIRST, user, limit)
        else:
            rows = await self._fetch(
                _CONVERSATIONS_AFTER, user, _ts(after[0]), str(after[1]), limit
            )
        return [_conversation(row) for row in rows]

    async def update_conversation(
        self,
        *,
        user: str,
        conversation_id: UUID,
        changes: dict[str, Any],
        check: Callable[[SummaryEnd], None] | None,
    ) -> Conversation | None:
        cid = str(conversation_id)
        args: list[Any] = [cid, user]
        sets = []
        for column, value in changes.items():
            if column not in _UPDATABLE:
                raise KeyError(column)
            args.append(value)
            sets.append(f"{column} = ?{len(args)}")
        update = (
            f"UPDATE conversations SET {', '.join(sets)} WHERE id = ?1 AND user_id = ?2 "
            f"RETURNING {CONVERSATION_COLUMNS}"
        )

        async def work(conn: aiosqlite.Connection) -> Conversation | None:
            # Inside BEGIN IMMEDIATE no append can land between the check and the update.
            if check is not None:
                head = await _rows(conn, _LAST_SEQ, (cid, user))
                if not head:
                    return None
                seq = changes["summary_up_to_seq"]
                ends = {r[0]: r for r in await _rows(conn, _SUMMARY_END, (cid, seq))}
                check(summary_end(head[0][0], ends.get(seq), ends.get(seq + 1)))
            rows = await _rows(conn, update, args)
            return _conversation(rows[0]) if rows else None

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
        parent, fork = str(conversation_id), str(fork_id)
        now = _ts(datetime.now(UTC))

        async def work(conn: aiosqlite.Connection) -> Conversation | None:
            head = await _rows(conn, _LAST_SEQ, (parent, user))
            if not head:
                return None
            check(head[0][0])
            if not await _rows(conn, _CONVERSATION_EXISTS, (fork, user)):
                await self._check_quota(conn, user)
            rows = await _rows(conn, _FORK, (parent, user, fork, title, at_seq, now))
            if not rows:  # this very fork, stored by a first attempt
                rows = await _rows(conn, _CONVERSATION, (fork, user))
                return _conversation(rows[0]) if rows else None
            await _exec(conn, _FORK_MESSAGES, (parent, fork, at_seq))
            return _conversation(rows[0])

        return await self._transaction(work)

    async def truncate_messages(
        self,
        *,
        user: str,
        conversation_id: UUID,
        after_seq: int,
        check: Callable[[int], None],
    ) -> Conversation | None:
        cid = str(conversation_id)

        async def work(conn: aiosqlite.Connection) -> Conversation | None:
            head = await _rows(conn, _LAST_SEQ, (cid, user))
            if not head:
                return None
            check(head[0][0])
            ((count, tokens),) = await _rows(conn, _TAIL, (cid, after_seq))
            await _exec(conn, _DELETE_TAIL, (cid, after_seq))
            rows = await _rows(conn, _TRUNCATE, (cid, user, after_seq, count, tokens))
            return _conversation(rows[0])

        return await self._transaction(work)

    async def delete_conversation(self, *, user: str, conversation_id: UUID) -> int | None:
        row = await self._one(_DELETE_CONVERSATION, str(conversation_id), user)
        return None if row is None else int(row[0])

    # -- messages --------------------------------------------------------------------------

    async def append_message(
        self, *, user: str, conversation_id: UUID, message_id: UUID, message: NewMessage
    ) -> Message | None:
        stored = await self.append_messages(
            user=user, conversation_id=conversation_id, batch=[(message_id, message)]
        )
        return None if stored is None else stored[0]

    async def append_messages(
        self, *, user: str, conversation_id: UUID, batch: list[tuple[UUID, NewMessage]]
    ) -> list[Message] | None:
        cid = str(conversation_id)
        tokens = sum(new.token_count or 0 for _, new in batch)

        async def work(conn: aiosqlite.Connection) -> list[Any]:
            # BEGIN IMMEDIATE holds the write lock from here to COMMIT: appenders (in this
            # and other processes) are serialised, so no seq is ever handed out twice, and
            # the clock is read under the lock, so updated_at follows commit order.
            now = _ts(datetime.now(UTC))
            quota = self._settings.message_quota
            counters = (now, cid, user, tokens, len(batch), quota)
            updated = await _rows(conn, _APPEND_COUNTERS, counters)
            if updated:
                last_seq, created_at = updated[0]
                first = last_seq - len(batch) + 1
                rows = []
                for n, (mid, new) in enumerate(batch):
                    tool_calls, metadata, raw = new.json_columns()
                    rows.append(
                        (
                            str(mid),
                            cid,
                            first + n,
                            new.role,
                            new.content,
                            tool_calls,
                            new.tool_call_id,
                            metadata,
                            created_at,
                            new.token_count,
                            raw,
                            user,
                            new.idempotency_key,
                        )
                    )
                await conn.executemany(_APPEND_MESSAGE, rows)
            return updated

        try:
            updated = await self._transaction(work)
        except sqlite3.IntegrityError as exc:
            raise Duplicate from exc
        if not updated:
            return None
        last_seq, created_at = updated[0]
        first, created = last_seq - len(batch) + 1, _parse_ts(created_at)
        return [
            stored_message(mid, conversation_id, first + n, created, new)
            for n, (mid, new) in enumerate(batch)
        ]

    async def messages_by_ids(self, *, user: str, message_ids: list[UUID]) -> list[Message]:
        ids = json.dumps([str(mid) for mid in message_ids])
        return [_message(row) for row in await self._fetch(_MESSAGES_BY_ID, ids, user)]

    async def messages_by_keys(
        self, *, user: str, conversation_id: UUID, keys: list[str]
    ) -> dict[str, Message]:
        rows = await self._fetch(_MESSAGES_BY_KEY, str(conversation_id), json.dumps(keys), user)
        return {row[-1]: _message(row[:-1]) for row in rows}

    async def message_page(
        self, *, user: str, conversation_id: UUID, window: Window
    ) -> list[Message]:
        cid, count = str(conversation_id), window.count
        if window.after_seq is not None:
            rows = await self._fetch(_AFTER, cid, user, window.after_seq, count)
        elif window.before_seq is not None:
            rows = await self._fetch(_BEFORE, cid, user, window.before_seq, count)
        else:
            rows = await self._fetch(_LATEST, cid, user, count)
        return [_message(row) for row in rows]

    async def conversation_exists(self, *, user: str, conversation_id: UUID) -> bool:
        row = await self._one(_CONVERSATION_EXISTS, str(conversation_id), user)
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
        args: list[Any] = [user, _fts_query(terms), count]
        # Every hit holds one term of each group: a group of one adds the same to every rank.
        rank = [str(sum(len(group) == 1 for group in terms.groups))]
        for group in terms.groups:
            for term in dict.fromkeys(group) if len(group) > 1 else ():
                args.append(_phrase(term))
                rank.append(_HAS_TERM.format(len(args)))
        where = after_clause = ""
        if conversation_id is not None:
            args.append(str(conversation_id))
            where += f" AND m.conversation_id = ?{len(args)}"
        if role is not None:
            args.append(role)
            where += f" AND m.role = ?{len(args)}"
        if after is not None:
            rank_after, created_at, message_id = after
            args += [rank_after, _ts(created_at), str(message_id)]
            n = len(args)
            after_clause = f" WHERE (rank, created_at, mid) < (?{n - 2}, ?{n - 1}, ?{n})"
        sql = _SEARCH.format(rank=" + ".join(rank), where=where, after=after_clause)
        rows = await self._fetch(sql, *args)
        return [search_hit(_message(row[:-3]), *row[-3:]) for row in rows]

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
            _CONTEXT_WINDOW, str(conversation_id), user, max_tokens, keep_system, systems, reads
        )
        return context_window(rows, _message)

    async def system_messages(
        self, *, user: str, conversation_id: UUID, above: int, below: int, count: int
    ) -> list[Message]:
        rows = await self._fetch(_SYSTEM_MESSAGES, str(conversation_id), user, above, below, count)
        return [_message(row) for row in rows]

    # -- users -----------------------------------------------------------------------------

    async def export_conversations(
        self, *, after: UUID | None, user: str | None, conversation_id: UUID | None, limit: int
    ) -> list[tuple[str, Conversation]]:
        text = None if after is None else str(after)
        one = None if conversation_id is None else str(conversation_id)
        rows = await self._fetch(_EXPORT_CONVERSATIONS, text, user, one, limit)
        return [(str(row[0]), _conversation(row[1:])) for row in rows]

    async def export_messages(
        self, *, conversation_id: UUID, after_seq: int, up_to_seq: int, limit: int
    ) -> list[tuple[Message, str | None]]:
        rows = await self._fetch(
            _EXPORT_MESSAGES, str(conversation_id), after_seq, limit, up_to_seq
        )
        return [(_message(row[:-1]), row[-1]) for row in rows]

    async def import_conversations(
        self,
        group: list[ImportedConversation],
        *,
        more: AsyncIterator[list[ImportedMessage]] | None = None,
    ) -> dict[UUID, bool]:
        async def insert(conn: aiosqlite.Connection, chunk: list[ImportedMessage]) -> None:
            try:
                await conn.executemany(_IMPORT_MESSAGE, [_imported_row(m) for m in chunk])
            except sqlite3.IntegrityError as exc:
                raise ImportClash(chunk) from exc

        async def work(conn: aiosqlite.Connection) -> dict[UUID, bool]:
            now = _ts(datetime.now(UTC))
            await conn.executemany(
                _NEW_USER, [(user, now) for user in {c.record.user for c in group}]
            )
            written: dict[UUID, bool] = {}
            for c in group:
                r, parent = c.record, c.record.forked_from
                found = parent is not None and bool(
                    await _rows(conn, _CONVERSATION_EXISTS, (str(parent.conversation_id), r.user))
                )
                fields = (
                    str(r.id),
                    r.user,
                    r.title,
                    dump_json(r.metadata),
                    r.key,
                    _ts(r.created_at),
                    _ts(r.updated_at),
                    r.message_count,
                    r.summary,
                    r.summary_up_to_seq,
                    c.summary_tokens,
                    c.tokens,
                    str(parent.conversation_id) if found and parent is not None else None,
                    None if parent is None else parent.seq,
                )
                try:
                    inserted = await _rows(conn, _IMPORT_CONVERSATION, fields)
                except sqlite3.IntegrityError as exc:
                    raise ImportClash(None) from exc
                if inserted:
                    written[r.id] = found
                    await insert(conn, c.messages)
            last = group[-1].record
            if more is not None and last.id in written:
                added = 0
                async for chunk in more:
                    await insert(conn, chunk)
                    added += token_total(chunk)
                await _exec(conn, _IMPORTED_TOKENS, (str(last.id), added))
            return written

        return await self._transaction(work)

    async def link_forks(self, forks: list[tuple[UUID, UUID]]) -> int:
        async def work(conn: aiosqlite.Connection) -> int:
            linked = 0
            for fork, parent in forks:
                cursor = await conn.execute(_LINK_FORK, (str(fork), str(parent)))
                linked += cursor.rowcount
                await cursor.close()
            return linked

        return await self._transaction(work)

    async def existing_message_ids(self, message_ids: list[UUID]) -> set[UUID]:
        ids = json.dumps([str(mid) for mid in message_ids])
        return {UUID(row[0]) for row in await self._fetch(_EXISTING_MESSAGES, ids)}

    async def prune_batch(
        self, *, before: datetime, user: str | None, limit: int, dry_run: bool
    ) -> tuple[int, int]:
        cutoff = _ts(before)
        if dry_run:
            row = await self._one(_PRUNE_COUNT, cutoff, user)
            return int(row[0]), int(row[1])

        async def work(conn: aiosqlite.Connection) -> tuple[int, int]:
            chosen = await _rows(conn, _PRUNE_CHOOSE, (cutoff, user, limit))
            ids = json.dumps([row[0] for row in chosen])
            await _exec(
                conn,
                "DELETE FROM conversations WHERE id IN (SELECT value FROM json_each(?1))",
                (ids,),
            )
            return len(chosen), sum(int(row[1]) for row in chosen)

        return await self._transaction(work)

    async def purge_user(self, *, user: str) -> tuple[int, int]:
        async def work(conn: aiosqlite.Connection) -> tuple[int, int]:
            # Inside BEGIN IMMEDIATE no append can land between the count and the delete.
            (counts,) = await _rows(conn, _USER_TOTALS, (user,))
            await _exec(conn, "DELETE FROM users WHERE id = ?1", (user,))
            return int(counts[0]), int(counts[1])

        return await self._transaction(work)
