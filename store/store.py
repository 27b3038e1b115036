"""The user-scoped conversation store.

Every operation takes the acting user as a keyword-only ``user`` and every statement filters
on it, so there is no way to reach a row by id alone: another user's conversation looks
exactly like one that does not exist.

Ordering guarantees:

- ``list_conversations`` returns the user's conversations most recently updated first
  (ties broken by id), paged with an opaque keyset cursor.
- ``list_messages`` and ``get_conversation`` return messages in ascending ``seq``: the latest
  ``limit`` messages, or the ``limit`` just before/after a given ``seq``.
- ``append_message`` assigns ``seq`` = previous ``last_seq`` + 1 in the same atomic step that
  stores the row and updates the conversation's ``updated_at``/``message_count``/``last_seq``,
  so sequences are gapless under any number of concurrent appenders.

Hot paths run hand-written SQL on Tortoise's own connections (one statement per call on
PostgreSQL); model hydration measured ~4x a raw fetch for a 50-message page.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import json
import logging
import re
import sqlite3
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from contextlib import asynccontextmanager, contextmanager
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, Literal, TypeVar

import asyncpg
from pydantic import BaseModel, ValidationError
from tortoise.context import TortoiseContext
from tortoise.context import _current_context as _tortoise_current_context
from tortoise.exceptions import DBConnectionError, IntegrityError

from store._connections import IdleConnections
from store.errors import Conflict, InvalidArgument, NotFound, StoreError, Unavailable
from store.schemas import (
    Conversation,
    ConversationPage,
    ConversationQuery,
    ConversationWithMessages,
    DeletedConversation,
    Limits,
    Message,
    MessagePage,
    MessageQuery,
    NewConversation,
    NewMessage,
    PurgedUser,
    RecentMessages,
    check_text,
    dump_json,
)
from store.settings import APP_LABEL, Settings, tortoise_config

__all__ = ["ConversationStore"]

log = logging.getLogger("chatstore.store")

T = TypeVar("T")
M = TypeVar("M", bound=BaseModel)

_NOT_FOUND = "no conversation with that id"
_USER_MAX_CHARS = 255

_CONVERSATION_COLUMNS = "id, title, metadata, created_at, updated_at, message_count, last_seq"
_MESSAGE_COLUMNS = (
    "id, conversation_id, seq, role, content, tool_calls, tool_call_id, metadata, created_at"
)

# Errors that mean "the database is not answering right now": nothing was committed by the
# failed statement (each write is a single statement or one transaction), so a retry is safe.
_CONNECTION_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    TimeoutError,
    DBConnectionError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    # A pooled connection whose backend was terminated (pg_terminate_backend, a restart) may
    # already hold the server's FATAL error when it is handed out; the next query then fails
    # with "cannot switch to state …; another operation is in progress" before sending
    # anything. Seen under load in tests/reliability; a fresh connection works.
    asyncpg.InternalClientError,
    asyncpg.CannotConnectNowError,
    asyncpg.OperatorInterventionError,
    asyncpg.TooManyConnectionsError,
    asyncpg.InsufficientResourcesError,
    asyncpg.QueryCanceledError,
    asyncpg.SerializationError,
    asyncpg.DeadlockDetectedError,
)


def _sqlite_busy(exc: BaseException) -> bool:
    text = str(exc).lower()
    return isinstance(exc, sqlite3.OperationalError) and (
        "locked" in text or "busy" in text or "disk i/o" in text or "unable to open" in text
    )


@contextmanager
def _bound(ctx: TortoiseContext) -> Any:
    # Tortoise finds its connections through a contextvar. MCP handlers run in tasks that
    # never saw the lifespan's context, so each call binds the store's context itself.
    # (TortoiseContext.__enter__ keeps one token on the instance and is not safe for
    # concurrent tasks, hence the contextvar directly.)
    token = _tortoise_current_context.set(ctx)
    try:
        yield
    finally:
        _tortoise_current_context.reset(token)


def _validate(model: type[M], limits: Limits, **values: Any) -> M:
    try:
        return model.model_validate(values, context=limits)
    except ValidationError as exc:
        raise InvalidArgument(describe_validation_error(exc)) from None


def describe_validation_error(exc: ValidationError) -> str:
    """A ValidationError in words, without echoing the rejected values back."""
    parts = []
    for error in exc.errors(include_url=False, include_input=False):
        where = ".".join(str(p) for p in error["loc"])
        message = error["msg"].removeprefix("Value error, ")
        if error["type"] == "extra_forbidden":
            message = "is not a known argument"
        elif error["type"] == "literal_error" and where == "role":
            message = "must be one of system, user, assistant, tool"
        parts.append(f"{where}: {message}" if where else message)
    return "; ".join(parts)


def _parse_id(value: Any, what: str = "conversation_id") -> uuid.UUID:
    if isinstance(value, uuid.UUID):
        return value
    if not isinstance(value, str):
        raise InvalidArgument(f"{what} must be a UUID string")
    try:
        check_text(value, what)
        return uuid.UUID(value)
    except ValueError:
        raise InvalidArgument(
            f"{what} must be a UUID string, like the ids this server returns"
        ) from None


def _check_user(user: str) -> str:
    if not isinstance(user, str) or not user or len(user) > _USER_MAX_CHARS:
        raise InvalidArgument(
            f"user must be a non-empty string of at most {_USER_MAX_CHARS} characters"
        )
    try:
        check_text(user, "user")
    except ValueError as exc:
        raise InvalidArgument(str(exc)) from None
    return user


# ---------------------------------------------------------------------------------------
# Cursors for list_conversations: the keyset position, tied to the user it was issued to.


def _cursor_tag(user: str, payload: str) -> str:
    return hashlib.sha256(f"{user}\x1f{payload}".encode()).hexdigest()[:16]


def _encode_cursor(user: str, updated_at: datetime, conversation_id: uuid.UUID) -> str:
    micros = int(updated_at.timestamp()) * 1_000_000 + updated_at.microsecond
    payload = f"1.{micros}.{conversation_id.hex}"
    raw = f"{payload}.{_cursor_tag(user, payload)}"
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def _decode_cursor(user: str, cursor: str) -> tuple[datetime, uuid.UUID]:
    bad = InvalidArgument(
        "cursor is not a next_cursor this server returned for your conversations; "
        "list again without a cursor"
    )
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode("ascii")
        version, micros, hex_id, tag = raw.split(".")
        payload = f"{version}.{micros}.{hex_id}"
        if version != "1" or tag != _cursor_tag(user, payload):
            raise bad
        seconds, rest = divmod(int(micros), 1_000_000)
        updated_at = datetime.fromtimestamp(seconds, UTC).replace(microsecond=rest)
        return updated_at, uuid.UUID(hex=hex_id)
    except (ValueError, binascii.Error, UnicodeDecodeError, OverflowError, OSError):
        raise bad from None


# ---------------------------------------------------------------------------------------
# Dialects: the SQL is written once in PostgreSQL's placeholder style; SQLite gets ?N.


_PLACEHOLDER = re.compile(r"\$(\d+)")
_CAST = re.compile(r"::(jsonb|uuid|text|timestamptz)")


class _Dialect:
    name: Literal["postgres", "sqlite"]

    def sql(self, text: str) -> str:
        return text

    def ts(self, value: datetime) -> Any:
        return value

    def uid(self, value: uuid.UUID) -> Any:
        return value


class _Postgres(_Dialect):
    name = "postgres"


class _Sqlite(_Dialect):
    name = "sqlite"

    def sql(self, text: str) -> str:
        return _CAST.sub("", _PLACEHOLDER.sub(r"?\1", text))

    def ts(self, value: datetime) -> Any:
        # The same text form Tortoise writes, so ORM and hand-written rows order alike.
        return value.astimezone(UTC).isoformat(" ")

    def uid(self, value: uuid.UUID) -> Any:
        return str(value)


def _sqlite_ts(value: str) -> datetime:
    parsed = datetime.fromisoformat(value)
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _json(value: Any) -> Any:
    if value == "{}":
        return {}  # the usual metadata; skips a parse per row on hot reads
    return json.loads(value) if isinstance(value, str | bytes) else value


_FIELDS_SET: dict[type[BaseModel], set[str]] = {}
_object_new = object.__new__
_object_setattr = object.__setattr__


def _trusted(model: type[M], values: dict[str, Any]) -> M:
    """An output model from values the database returned, without validating them again.

    What ``model_construct`` does, minus its per-field default handling: every field is
    given. Measured ~1 µs against ~8 µs a row, which is most of a 50-message page's cost.
    """
    fields_set = _FIELDS_SET.get(model)
    if fields_set is None:
        fields_set = _FIELDS_SET[model] = set(model.model_fields)
    instance = _object_new(model)
    _object_setattr(instance, "__dict__", values)
    _object_setattr(instance, "__pydantic_fields_set__", fields_set)
    _object_setattr(instance, "__pydantic_extra__", None)
    _object_setattr(instance, "__pydantic_private__", None)
    return instance


def _json_identity(value: Any) -> Any:
    """``value`` in a form whose ``==`` is JSON equality.

    Python's ``==`` says ``True == 1``, and jsonb hands back 1e23 as the int
    100000000000000000000000, which is not the float 1e23: numbers compare here as the
    exact decimals written to the database, and booleans apart from numbers.
    """
    if isinstance(value, dict):
        return {key: _json_identity(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_json_identity(item) for item in value]
    if isinstance(value, bool):
        return ("bool", value)
    if isinstance(value, int | float):
        return ("number", Decimal(repr(value)))
    return value


def _retrieve(task: asyncio.Future[Any]) -> None:
    # A shielded transaction whose caller has gone: its outcome is nobody's to report.
    if not task.cancelled():
        task.exception()


async def _exec(conn: Any, sql: str, params: Sequence[Any] = ()) -> None:
    cursor = await conn.execute(sql, params)
    await cursor.close()


class ConversationStore:
    """Durable per-user conversation history on PostgreSQL or SQLite.

    Use as ``async with ConversationStore(settings) as store:``. Every method is scoped to
    the keyword-only ``user``; errors are ``store.errors`` types only.
    """

    def __init__(self, settings: Settings | None = None) -> None:
        self._settings = settings or Settings()
        self._limits = Limits(
            max_content_chars=self._settings.max_content_chars,
            max_title_chars=self._settings.max_title_chars,
            max_metadata_bytes=self._settings.max_metadata_bytes,
            max_tool_calls_bytes=self._settings.max_tool_calls_bytes,
        )
        self._dialect: _Dialect = _Postgres() if self._settings.dialect == "postgres" else _Sqlite()
        self._ctx: TortoiseContext | None = None
        self._client: Any = None
        self._idle: IdleConnections | None = None

    @property
    def settings(self) -> Settings:
        return self._settings

    @property
    def dialect(self) -> Literal["postgres", "sqlite"]:
        return self._dialect.name

    # -- lifecycle -----------------------------------------------------------------------

    async def open(self) -> None:
        """Connect, and make sure the schema is at head.

        SQLite databases are migrated in place (the embedded default needs no set-up). A
        PostgreSQL database behind head is refused with ``SchemaBehind``, which names the
        command to run: migrations there are an operator's decision.
        """
        if self._ctx is not None:
            return
        try:
            if self._dialect.name == "sqlite":
                await self._migrate_sqlite()
            ctx = TortoiseContext()
            self._ctx = ctx
            with _bound(ctx):
                await ctx.init(config=tortoise_config(self._settings))
            self._client = ctx.db()
            if self._dialect.name == "postgres":
                async with self._client.acquire_connection():
                    pass  # Tortoise creates its pool on first use
                self._idle = IdleConnections(self._client._pool, self._settings.db_pool_max)
            await self._check_head()
        except StoreError:
            await self.close()
            raise
        except Exception as exc:
            await self.close()
            if isinstance(exc, _CONNECTION_ERRORS) or _sqlite_busy(exc):
                raise Unavailable(f"cannot reach the database: {self._where()}") from exc
            raise

    async def close(self) -> None:
        idle, self._idle = self._idle, None
        if idle is not None:
            await idle.drain()
        ctx, self._ctx, self._client = self._ctx, None, None
        if ctx is not None:
            await ctx.close_connections()

    async def __aenter__(self) -> ConversationStore:
        await self.open()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    def _where(self) -> str:
        if self._dialect.name == "sqlite":
            return "the SQLite file could not be opened"
        config = tortoise_config(self._settings)["connections"][self._dialect.name]
        creds = config["credentials"]
        host, port, database = creds.get("host"), creds.get("port"), creds.get("database")
        return f"PostgreSQL at {host}:{port}, database {database}"

    async def _migrate_sqlite(self) -> None:
        from store import migrate

        try:
            applied = await migrate.upgrade(self._settings)
        except Exception:
            # Another process may be migrating the same file right now; if the schema is
            # at head afterwards, all is well.
            await asyncio.sleep(0.2)
            applied = await migrate.upgrade(self._settings)
        if applied:
            log.info("migrated the SQLite database: applied %s", ", ".join(applied))

    async def _check_head(self) -> None:
        from store import migrate

        try:
            rows = await self._fetch("SELECT version FROM aerich WHERE app = $1", APP_LABEL)
            applied = {str(row["version"]) for row in rows}
        except (asyncpg.UndefinedTableError, sqlite3.OperationalError) as exc:
            if isinstance(exc, sqlite3.OperationalError) and "no such table" not in str(exc):
                raise
            applied = set()  # no aerich table: nothing was ever migrated
        missing = [v for v in migrate.shipped_versions(self._dialect.name) if v not in applied]
        if missing:
            raise migrate.behind_error(missing)

    # -- plumbing ------------------------------------------------------------------------

    def _require_open(self) -> tuple[TortoiseContext, Any]:
        if self._ctx is None or self._client is None:
            raise Unavailable("the store is not open")
        return self._ctx, self._client

    async def _fetch(self, sql: str, *args: Any) -> Sequence[Mapping[str, Any]]:
        _, client = self._require_open()
        if self._idle is not None:
            async with self._idle.connection() as conn:
                return list(await conn.fetch(sql, *args))
        async with client.acquire_connection() as conn:
            rows = await conn.execute_fetchall(self._dialect.sql(sql), args)
            return list(rows)

    async def _sqlite_transaction(self, work: Callable[[Any], Awaitable[T]]) -> T:
        _, client = self._require_open()

        abandoned = False

        async def run() -> T:
            async with client.acquire_connection() as conn:
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

        # The transaction runs in its own task that the caller's cancellation cannot reach:
        # it always ends in COMMIT or ROLLBACK with the connection lock held, so a cancelled
        # call leaves the whole write or none of it, and never an open transaction.
        task = asyncio.ensure_future(run())
        task.add_done_callback(_retrieve)
        try:
            return await asyncio.shield(task)
        except asyncio.CancelledError:
            abandoned = True
            raise

    async def _pg_transaction(self, work: Callable[[Any], Awaitable[T]]) -> T:
        self._require_open()
        idle = self._idle
        assert idle is not None  # PostgreSQL stores always have one once open

        async def run() -> T:
            async with idle.connection() as conn, conn.transaction():
                return await work(conn)

        return await asyncio.shield(asyncio.ensure_future(run()))

    async def _expire_pool(self) -> None:
        client = self._client
        if self._dialect.name == "postgres" and client is not None:
            try:
                if self._idle is not None:
                    await self._idle.drain()
                await client._expire_connections()
            except Exception:  # pragma: no cover - best effort
                log.debug("could not expire pooled connections", exc_info=True)

    async def _run(self, op: Callable[[], Awaitable[T]], *, retry: bool = True) -> T:
        """Run one store operation: bound ORM context, time limit, errors translated once.

        A connection failure (say, the database restarted and every pooled connection is
        dead) gets one retry on fresh connections when ``retry`` says the operation is
        safe to repeat.
        """
        ctx, _ = self._require_open()
        attempts = 2 if retry else 1
        with _bound(ctx):
            for attempt in range(attempts):
                try:
                    async with asyncio.timeout(self._settings.db_timeout):
                        return await op()
                except StoreError:
                    raise
                except TimeoutError as exc:
                    raise Unavailable(
                        "the database did not answer in time; nothing was half-written, "
                        "so retrying is safe"
                    ) from exc
                except Exception as exc:
                    if not (isinstance(exc, _CONNECTION_ERRORS) or _sqlite_busy(exc)):
                        raise
                    log.warning("database unavailable (%s)", type(exc).__name__)
                    await self._expire_pool()
                    if attempt + 1 >= attempts:
                        raise Unavailable(
                            "the database cannot be reached right now; nothing was "
                            "half-written, so retrying is safe"
                        ) from exc
            raise AssertionError("unreachable")  # pragma: no cover

    # -- rows ----------------------------------------------------------------------------

    # Every conversation query selects exactly _CONVERSATION_COLUMNS and every message query
    # _MESSAGE_COLUMNS, in that order, so a row unpacks by position (asyncpg records and
    # sqlite3 rows both iterate their values): ~0.4 µs a row against ~0.7 µs by name (bench
    # W2, 50 rows a call). asyncpg already hands back UUID, int and aware UTC datetime values;
    # SQLite gives text for ids and timestamps, converted here.

    def _conversation(self, row: Iterable[Any]) -> Conversation:
        cid, title, metadata, created_at, updated_at, message_count, last_seq = row
        if self._dialect.name == "sqlite":
            cid = uuid.UUID(cid)
            created_at = _sqlite_ts(created_at)
            updated_at = _sqlite_ts(updated_at)
        return _trusted(
            Conversation,
            {
                "id": cid,
                "title": title,
                "metadata": _json(metadata),
                "created_at": created_at,
                "updated_at": updated_at,
                "message_count": message_count,
                "last_seq": last_seq,
            },
        )

    def _message(self, row: Iterable[Any]) -> Message:
        mid, cid, seq, role, content, tool_calls, tool_call_id, metadata, created_at = row
        if self._dialect.name == "sqlite":
            mid, cid = uuid.UUID(mid), uuid.UUID(cid)
            created_at = _sqlite_ts(created_at)
        return _trusted(
            Message,
            {
                "id": mid,
                "conversation_id": cid,
                "seq": seq,
                "role": role,
                "content": content,
                "tool_calls": None if tool_calls is None else _json(tool_calls),
                "tool_call_id": tool_call_id,
                "metadata": _json(metadata),
                "created_at": created_at,
            },
        )

    # -- conversations -------------------------------------------------------------------

    async def create_conversation(
        self, *, user: str, title: str | None = None, metadata: dict[str, Any] | None = None
    ) -> Conversation:
        """Start an empty conversation for ``user``."""
        user = _check_user(user)
        data = _validate(NewConversation, self._limits, title=title, metadata=metadata)
        conversation_id = uuid.uuid4()
        d = self._dialect
        meta = dump_json(data.metadata)

        async def op() -> Conversation:
            if d.name == "postgres":
                # One statement: the user row (first use) and the conversation together.
                for attempt in range(3):
                    try:
                        rows = await self._fetch(
                            f"""
                            WITH t AS (SELECT clock_timestamp() AS now),
                            u AS (
                                INSERT INTO users (id, created_at) SELECT $1, t.now FROM t
                                ON CONFLICT (id) DO NOTHING
                            )
                            INSERT INTO conversations
                                (id, user_id, title, metadata, created_at, updated_at,
                                 message_count, last_seq)
                            SELECT $2, $1, $3, $4::jsonb, t.now, t.now, 0, 0 FROM t
                            ON CONFLICT (id) DO NOTHING
                            RETURNING {_CONVERSATION_COLUMNS}
                            """,
                            user,
                            conversation_id,
                            data.title,
                            meta,
                        )
                        break
                    except asyncpg.ForeignKeyViolationError as exc:
                        # The user row existed when the statement began and an operator's
                        # purge deleted it before the foreign-key check: run it again, and
                        # the user row is created anew.
                        if attempt == 2:
                            raise Unavailable(
                                "the user's data was being deleted at the same time; "
                                "retrying is safe"
                            ) from exc
            else:
                now = d.ts(datetime.now(UTC))

                async def work(conn: Any) -> list[Any]:
                    await _exec(
                        conn,
                        "INSERT INTO users (id, created_at) VALUES (?1, ?2) "
                        "ON CONFLICT (id) DO NOTHING",
                        (user, now),
                    )
                    return list(
                        await conn.execute_fetchall(
                            "INSERT INTO conversations (id, user_id, title, metadata, created_at, "
                            "updated_at, message_count, last_seq) "
                            "VALUES (?1, ?2, ?3, ?4, ?5, ?5, 0, 0) ON CONFLICT (id) DO NOTHING "
                            f"RETURNING {_CONVERSATION_COLUMNS}",
                            (str(conversation_id), user, data.title, meta, now),
                        )
                    )

                rows = await self._sqlite_transaction(work)
            if not rows:
                # A retried call whose first attempt did commit: the id is ours.
                return await self._get_conversation_row(user, conversation_id)
            return self._conversation(rows[0])

        return await self._run(op)

    async def _get_conversation_row(self, user: str, conversation_id: uuid.UUID) -> Conversation:
        rows = await self._fetch(
            f"SELECT {_CONVERSATION_COLUMNS} FROM conversations WHERE id = $1 AND user_id = $2",
            self._dialect.uid(conversation_id),
            user,
        )
        if not rows:
            raise NotFound(_NOT_FOUND)
        return self._conversation(rows[0])

    async def list_conversations(
        self, *, user: str, limit: int = 20, cursor: str | None = None
    ) -> ConversationPage:
        """The user's conversations, most recently updated first, ``limit`` per page."""
        user = _check_user(user)
        query = _validate(ConversationQuery, self._limits, limit=limit, cursor=cursor)
        d = self._dialect
        position = _decode_cursor(user, query.cursor) if query.cursor is not None else None

        async def op() -> ConversationPage:
            if position is None:
                rows = await self._fetch(
                    f"SELECT {_CONVERSATION_COLUMNS} FROM conversations WHERE user_id = $1 "
                    "ORDER BY updated_at DESC, id DESC LIMIT $2",
                    user,
                    query.limit + 1,
                )
            else:
                rows = await self._fetch(
                    f"SELECT {_CONVERSATION_COLUMNS} FROM conversations WHERE user_id = $1 "
                    "AND (updated_at, id) < ($2, $3) "
                    "ORDER BY updated_at DESC, id DESC LIMIT $4",
                    user,
                    d.ts(position[0]),
                    d.uid(position[1]),
                    query.limit + 1,
                )
            conversations = [self._conversation(row) for row in rows[: query.limit]]
            next_cursor = None
            if len(rows) > query.limit:
                last = conversations[-1]
                next_cursor = _encode_cursor(user, last.updated_at, last.id)
            return _trusted(
                ConversationPage, {"conversations": conversations, "next_cursor": next_cursor}
            )

        return await self._run(op)

    async def get_conversation(
        self, *, user: str, conversation_id: str | uuid.UUID, recent_messages: int = 0
    ) -> ConversationWithMessages:
        """One conversation, with its latest ``recent_messages`` messages oldest first."""
        user = _check_user(user)
        cid = _parse_id(conversation_id)
        count = _validate(RecentMessages, self._limits, recent_messages=recent_messages)

        async def op() -> ConversationWithMessages:
            conversation = await self._get_conversation_row(user, cid)
            messages: list[Message] = []
            if count.recent_messages:
                rows, _ = await self._page(user, cid, count.recent_messages, None, None)
                messages = [self._message(row) for row in rows]
            return ConversationWithMessages.model_construct(**dict(conversation), messages=messages)

        return await self._run(op)

    async def delete_conversation(
        self, *, user: str, conversation_id: str | uuid.UUID
    ) -> DeletedConversation:
        """Delete a conversation and (by ON DELETE CASCADE) all its messages."""
        user = _check_user(user)
        cid = _parse_id(conversation_id)

        async def op() -> DeletedConversation:
            # The row lock DELETE takes orders it after any append in flight, so the
            # returned message_count is exactly the number of messages the cascade removed.
            rows = await self._fetch(
                "DELETE FROM conversations WHERE id = $1 AND user_id = $2 RETURNING message_count",
                self._dialect.uid(cid),
                user,
            )
            if not rows:
                raise NotFound(_NOT_FOUND)
            return DeletedConversation(
                conversation_id=cid, messages_deleted=int(rows[0]["message_count"])
            )

        # Not retried: if a first attempt's outcome is unknown, a second would report
        # not_found for a conversation that this very call deleted.
        return await self._run(op, retry=False)

    async def purge_user(self, *, user: str) -> PurgedUser:
        """Delete everything of ``user``: the user row, conversations and messages (cascade)."""
        user = _check_user(user)

        async def work(conn: Any) -> PurgedUser:
            d = self._dialect
            if d.name == "postgres":
                row = await conn.fetchrow(
                    "SELECT count(*) AS conversations, "
                    "coalesce(sum(message_count), 0) AS messages "
                    "FROM conversations WHERE user_id = $1",
                    user,
                )
                await conn.execute("DELETE FROM users WHERE id = $1", user)
            else:
                rows = await conn.execute_fetchall(
                    "SELECT count(*) AS conversations, "
                    "coalesce(sum(message_count), 0) AS messages "
                    "FROM conversations WHERE user_id = ?1",
                    (user,),
                )
                row = rows[0]
                await _exec(conn, "DELETE FROM users WHERE id = ?1", (user,))
            return PurgedUser(
                user=user,
                conversations_deleted=int(row["conversations"]),
                messages_deleted=int(row["messages"]),
            )

        async def op() -> PurgedUser:
            if self._dialect.name == "postgres":
                # Lock the user's conversations first so the counts match what the cascade
                # removes even with appends in flight.
                async def pg_work(conn: Any) -> PurgedUser:
                    await conn.execute(
                        "SELECT 1 FROM conversations WHERE user_id = $1 FOR UPDATE", user
                    )
                    return await work(conn)

                return await self._pg_transaction(pg_work)
            return await self._sqlite_transaction(work)

        return await self._run(op)

    # -- messages ------------------------------------------------------------------------

    async def append_message(
        self,
        *,
        user: str,
        conversation_id: str | uuid.UUID,
        role: str,
        content: str,
        tool_calls: list[dict[str, Any]] | None = None,
        tool_call_id: str | None = None,
        metadata: dict[str, Any] | None = None,
        idempotency_key: str | None = None,
    ) -> Message:
        """Append one message; it gets the next ``seq``.

        With ``idempotency_key``, appending again with the same key returns the message
        stored the first time and stores nothing; the same key with a different
        role/content/tool_calls raises ``Conflict``.
        """
        user = _check_user(user)
        cid = _parse_id(conversation_id)
        new = _validate(
            NewMessage,
            self._limits,
            role=role,
            content=content,
            tool_calls=tool_calls,
            tool_call_id=tool_call_id,
            metadata=metadata,
            idempotency_key=idempotency_key,
        )
        # Chosen once per call: a retry after a lost reply finds its own row by this id
        # instead of storing the message twice.
        message_id = uuid.uuid4()
        tool_calls_json = None if new.tool_calls is None else dump_json(new.tool_calls)
        metadata_json = dump_json(new.metadata)
        d = self._dialect

        async def op() -> Message:
            if new.idempotency_key is not None:
                existing = await self._by_idempotency_key(user, cid, new.idempotency_key)
                if existing is not None:
                    return self._replay(existing, new)
            try:
                if d.name == "postgres":
                    rows = await self._fetch(
                        f"""
                        WITH c AS (
                            UPDATE conversations
                            SET last_seq = last_seq + 1,
                                message_count = message_count + 1,
                                updated_at = GREATEST(updated_at, clock_timestamp())
                            WHERE id = $1 AND user_id = $2
                            RETURNING id, user_id, last_seq, updated_at
                        )
                        INSERT INTO messages ({_MESSAGE_COLUMNS}, user_id, idempotency_key)
                        SELECT $3, c.id, c.last_seq, $4, $5, $6::jsonb, $7, $8::jsonb,
                               c.updated_at, c.user_id, $9
                        FROM c
                        RETURNING seq, created_at
                        """,
                        cid,
                        user,
                        message_id,
                        new.role,
                        new.content,
                        tool_calls_json,
                        new.tool_call_id,
                        metadata_json,
                        new.idempotency_key,
                    )
                else:
                    rows = await self._sqlite_transaction(
                        lambda conn: self._sqlite_append(
                            conn, user, cid, message_id, new, tool_calls_json, metadata_json
                        )
                    )
            except (IntegrityError, asyncpg.UniqueViolationError, sqlite3.IntegrityError):
                # Either a concurrent append with the same idempotency key won, or a retry
                # of this very call finds its first attempt's row.
                existing = await self._by_id(user, message_id)
                if existing is not None:
                    return self._message(existing)
                if new.idempotency_key is not None:
                    existing = await self._by_idempotency_key(user, cid, new.idempotency_key)
                    if existing is not None:
                        return self._replay(existing, new)
                raise
            if not rows:
                raise NotFound(_NOT_FOUND)
            row = rows[0]
            if d.name != "postgres":
                return self._message(row)
            # Only what the database decided comes back over the wire (seq, created_at); the
            # rest is the validated input just stored, not an echo of a 100 KB content.
            return _trusted(
                Message,
                {
                    "id": message_id,
                    "conversation_id": cid,
                    "seq": row["seq"],
                    "role": new.role,
                    "content": new.content,
                    "tool_calls": new.tool_calls,
                    "tool_call_id": new.tool_call_id,
                    "metadata": new.metadata,
                    "created_at": row["created_at"],
                },
            )

        return await self._run(op)

    async def _sqlite_append(
        self,
        conn: Any,
        user: str,
        cid: uuid.UUID,
        message_id: uuid.UUID,
        new: NewMessage,
        tool_calls_json: str | None,
        metadata_json: str,
    ) -> list[Any]:
        # BEGIN IMMEDIATE holds the write lock from here to COMMIT: appenders (in this and
        # other processes) are serialised, so last_seq + 1 is never handed out twice.
        now = self._dialect.ts(datetime.now(UTC))
        updated = list(
            await conn.execute_fetchall(
                "UPDATE conversations SET last_seq = last_seq + 1, "
                "message_count = message_count + 1, updated_at = MAX(updated_at, ?1) "
                "WHERE id = ?2 AND user_id = ?3 RETURNING last_seq, updated_at",
                (now, str(cid), user),
            )
        )
        if not updated:
            return []
        seq, created_at = updated[0]["last_seq"], updated[0]["updated_at"]
        return list(
            await conn.execute_fetchall(
                f"INSERT INTO messages ({_MESSAGE_COLUMNS}, user_id, idempotency_key) "
                "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11) "
                f"RETURNING {_MESSAGE_COLUMNS}",
                (
                    str(message_id),
                    str(cid),
                    seq,
                    new.role,
                    new.content,
                    tool_calls_json,
                    new.tool_call_id,
                    metadata_json,
                    created_at,
                    user,
                    new.idempotency_key,
                ),
            )
        )

    async def _by_id(self, user: str, message_id: uuid.UUID) -> Mapping[str, Any] | None:
        rows = await self._fetch(
            f"SELECT {_MESSAGE_COLUMNS} FROM messages WHERE id = $1 AND user_id = $2",
            self._dialect.uid(message_id),
            user,
        )
        return rows[0] if rows else None

    async def _by_idempotency_key(
        self, user: str, cid: uuid.UUID, key: str
    ) -> Mapping[str, Any] | None:
        rows = await self._fetch(
            f"SELECT {_MESSAGE_COLUMNS} FROM messages "
            "WHERE conversation_id = $1 AND idempotency_key = $2 AND user_id = $3",
            self._dialect.uid(cid),
            key,
            user,
        )
        return rows[0] if rows else None

    def _replay(self, row: Mapping[str, Any], new: NewMessage) -> Message:
        stored = self._message(row)
        if (stored.role, stored.content, _json_identity(stored.tool_calls)) != (
            new.role,
            new.content,
            _json_identity(new.tool_calls),
        ):
            raise Conflict(
                "idempotency_key was already used in this conversation for a different "
                "message (role, content or tool_calls differ); use a new key for a new message"
            )
        return stored

    async def list_messages(
        self,
        *,
        user: str,
        conversation_id: str | uuid.UUID,
        limit: int = 50,
        before_seq: int | None = None,
        after_seq: int | None = None,
    ) -> MessagePage:
        """Messages in ascending ``seq``.

        No cursor: the latest ``limit``. ``before_seq=N``: the ``limit`` just before N.
        ``after_seq=N``: the ``limit`` just after N. ``has_more`` says whether more exist in
        the direction being paged (older, or newer for ``after_seq``). Keyset on
        (conversation_id, seq): the cost does not grow with depth or store size.
        """
        user = _check_user(user)
        cid = _parse_id(conversation_id)
        query = _validate(
            MessageQuery, self._limits, limit=limit, before_seq=before_seq, after_seq=after_seq
        )

        async def op() -> MessagePage:
            rows, has_more = await self._page(
                user, cid, query.limit, query.before_seq, query.after_seq
            )
            if not rows:
                await self._require_conversation(user, cid)
            return _trusted(
                MessagePage,
                {"messages": [self._message(row) for row in rows], "has_more": has_more},
            )

        return await self._run(op)

    async def _require_conversation(self, user: str, cid: uuid.UUID) -> None:
        rows = await self._fetch(
            "SELECT 1 AS one FROM conversations WHERE id = $1 AND user_id = $2",
            self._dialect.uid(cid),
            user,
        )
        if not rows:
            raise NotFound(_NOT_FOUND)

    async def _page(
        self,
        user: str,
        cid: uuid.UUID,
        limit: int,
        before_seq: int | None,
        after_seq: int | None,
    ) -> tuple[list[Mapping[str, Any]], bool]:
        uid = self._dialect.uid(cid)
        # The user scope is checked once, on the conversation row, rather than as a filter on
        # messages.user_id: PostgreSQL takes that column to be independent of conversation_id,
        # underestimates the page by the user's share of all messages and picks a bitmap-AND
        # with messages_user plus a sort, whose cost grows with the user's whole history.
        where = (
            "WHERE conversation_id = $1 AND EXISTS "
            "(SELECT 1 FROM conversations c WHERE c.id = $1 AND c.user_id = $2) "
        )
        if after_seq is not None:
            rows = await self._fetch(
                f"SELECT {_MESSAGE_COLUMNS} FROM messages "
                # seq is gapless, so the page lies within N+1 .. N+limit+1. The upper bound
                # is what the LIMIT implies, written out: the planner estimates "seq > N" from
                # all conversations' seqs, badly underestimates a deep page of a long one and
                # would otherwise read every newer message of it (bitmap scan plus sort).
                f"{where}AND seq > $3 AND seq <= $3 + $4 "
                "ORDER BY seq ASC LIMIT $4",
                uid,
                user,
                after_seq,
                limit + 1,
            )
            return list(rows[:limit]), len(rows) > limit
        if before_seq is not None:
            rows = await self._fetch(
                f"SELECT {_MESSAGE_COLUMNS} FROM messages "
                f"{where}AND seq < $3 "
                "ORDER BY seq DESC LIMIT $4",
                uid,
                user,
                before_seq,
                limit + 1,
            )
        else:
            rows = await self._fetch(
                f"SELECT {_MESSAGE_COLUMNS} FROM messages {where}ORDER BY seq DESC LIMIT $3",
                uid,
                user,
                limit + 1,
            )
        page = list(rows[:limit])
        page.reverse()
        return page, len(rows) > limit


@asynccontextmanager
async def open_store(settings: Settings | None = None) -> AsyncIterator[ConversationStore]:
    """``async with open_store(settings) as store`` — open, yield, close."""
    store = ConversationStore(settings)
    await store.open()
    try:
        yield store
    finally:
        await store.close()
