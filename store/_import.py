"""Import: the export format (``store._export``) read back, a line at a time.

``Records`` walks the lines of an export and validates each as it goes: the header first, then
each conversation record (``ConversationRecord``) followed by its messages, each checked with
the append rules (``NewMessage``, under the store's limits) and for its place (the
conversation's id, the next seq, gapless from 1, exactly ``message_count`` of them, each
idempotency key once). The first line that breaks a rule raises ``BadImportLine`` naming it.

The messages of a conversation come out in chunks (``IMPORT_CHUNK`` messages, or about
``_CHUNK_BYTES`` of text), so a conversation of any length is written a chunk at a time inside
its one transaction, and memory holds a few chunks, not the conversation. ``load`` writes
them: short conversations several to a transaction, a long one in its own, while a thread
reads and validates what comes next (``_Pipe``).
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from contextlib import suppress
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from functools import partial
from itertools import chain
from typing import TYPE_CHECKING, Annotated, Any, Literal, cast
from uuid import UUID

from pydantic import BeforeValidator, Field, ValidationError, field_validator, model_validator

from store import contract
from store._export import FORMAT, VERSION
from store.contract import MAX_SEQ_CURSOR, Limits
from store.errors import BadImportLine, InvalidArgument
from store.schemas import (
    Imported,
    Key,
    Metadata,
    NewMessage,
    Summary,
    Title,
    _Input,
    check_user,
    describe_validation_error,
)

if TYPE_CHECKING:  # both import this module's records
    from store._guard import Guard
    from store.backends.base import Backend

__all__ = [
    "ConversationRecord",
    "ImportClash",
    "ImportedConversation",
    "ImportedMessage",
    "Records",
    "load",
    "token_total",
]

#: A chunk also ends once its messages hold about this much text and JSON.
_CHUNK_BYTES = 8 * 1024 * 1024


def _timestamp(value: object) -> datetime:
    """An exported timestamp: RFC 3339 text with its offset, within what both databases
    store (years 1 to 9999 in UTC, a day clear of either end: asyncpg writes the very first
    instant as -infinity)."""
    if not isinstance(value, str):
        raise ValueError("must be an RFC 3339 timestamp string, like 2026-12-01T09:28:44.123456Z")
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise ValueError(
            "must be an RFC 3339 timestamp, like 2026-12-01T09:28:44.123456Z"
        ) from None
    if parsed.tzinfo is None:
        raise ValueError("must give its UTC offset (Z, or +HH:MM)")
    if not _EARLIEST < parsed < _LATEST:
        raise ValueError("lies outside the years 1 to 9999")
    return parsed.astimezone(UTC)


_EARLIEST = datetime.min.replace(tzinfo=UTC) + timedelta(days=1)
_LATEST = datetime.max.replace(tzinfo=UTC) - timedelta(days=1)
#: A timestamp as exported (``_timestamp``).
Timestamp = Annotated[datetime, BeforeValidator(_timestamp)]


class ForkOrigin(_Input):
    conversation_id: UUID
    seq: int = Field(strict=True, ge=0, le=MAX_SEQ_CURSOR)


class ConversationRecord(_Input):
    """A conversation line. Counts and timestamps are kept as given; seqs being gapless,
    ``message_count`` equals ``last_seq``."""

    type: Literal["conversation"]
    id: UUID
    user: str
    title: Title = None
    metadata: Metadata = Field(default=None, validate_default=True)
    key: Key = None
    created_at: Timestamp
    updated_at: Timestamp
    message_count: int = Field(strict=True, ge=0, le=MAX_SEQ_CURSOR)
    last_seq: int = Field(strict=True, ge=0, le=MAX_SEQ_CURSOR)
    summary: Summary = None
    summary_up_to_seq: int | None = Field(default=None, strict=True, ge=0, le=MAX_SEQ_CURSOR)
    forked_from: ForkOrigin | None = None

    @field_validator("user")
    @classmethod
    def _user(cls, value: str) -> str:
        try:
            return check_user(value)
        except InvalidArgument as exc:
            raise ValueError(exc.message) from None

    @model_validator(mode="after")
    def _consistent(self) -> ConversationRecord:
        if self.message_count != self.last_seq:
            raise ValueError(
                f"message_count ({self.message_count}) and last_seq ({self.last_seq}) differ; "
                "seqs are gapless from 1, so they are equal"
            )
        if (self.summary is None) != (self.summary_up_to_seq is None):
            raise ValueError("summary and summary_up_to_seq are given together, or neither")
        if self.summary_up_to_seq is not None and self.summary_up_to_seq > self.last_seq:
            raise ValueError("summary_up_to_seq is past last_seq")
        if self.forked_from is not None and self.forked_from.conversation_id == self.id:
            raise ValueError("forked_from names the conversation itself")
        return self


class MessageRecord(NewMessage):
    """A message line: a message as ``append_message`` takes it (its rules, under the store's
    limits), with its place and time as exported."""

    type: Literal["message"]
    id: UUID
    conversation_id: UUID
    seq: int = Field(strict=True, ge=1, le=MAX_SEQ_CURSOR)
    created_at: Timestamp


@dataclass(frozen=True, slots=True)
class ImportedMessage:
    """A message line, validated (``message``: its token_count set once counted)."""

    message: MessageRecord
    user: str  # the conversation's
    line: int
    size: int  # about how many bytes its text and JSON take (``_size``): chunks are cut by it


@dataclass(frozen=True, slots=True)
class ImportedConversation:
    """A conversation line, validated, with the messages held for it: all of them, or the
    first chunk of a long one whose others follow."""

    record: ConversationRecord
    line: int
    summary_tokens: int | None
    messages: list[ImportedMessage]

    @property
    def tokens(self) -> int:
        return token_total(self.messages)


def token_total(messages: Iterable[ImportedMessage]) -> int:
    """The token counts of ``messages`` together (a conversation's token_total)."""
    return sum(m.message.token_count or 0 for m in messages)


class ImportClash(Exception):
    """An imported row hit a unique key: a conversation's key is its user's already
    (``chunk`` None), or a message id of ``chunk`` is stored already. Nothing of the call was
    written."""

    def __init__(self, chunk: list[ImportedMessage] | None) -> None:
        super().__init__()
        self.chunk = chunk


class Records:
    """The records of an export's lines, validated, with their line numbers."""

    def __init__(self, lines: Iterable[str | bytes], limits: Limits) -> None:
        self._lines = enumerate(lines, start=1)
        self._limits = limits
        self._ahead: tuple[int, dict[str, Any]] | None = None
        self.line = 0  # the number of the last line read

    def _read(self) -> tuple[int, dict[str, Any]] | None:
        if self._ahead is not None:
            ahead, self._ahead = self._ahead, None
            return ahead
        try:
            read = next(self._lines, None)
        except OSError as exc:
            raise BadImportLine(self.line + 1, f"cannot be read ({exc.strerror or exc})") from None
        if read is not None:
            number, text = read
            self.line = number
            if isinstance(text, bytes):
                try:
                    text = text.decode("utf-8")
                except UnicodeDecodeError:
                    raise BadImportLine(number, "not valid UTF-8") from None
            if not text.strip():
                raise BadImportLine(number, "empty (every line holds one JSON object)")
            try:
                record = json.loads(text)
            except (ValueError, RecursionError):  # JSONDecodeError, or a number too long
                raise BadImportLine(
                    number, "not a JSON object (is the file cut short, or not an export?)"
                ) from None
            if not isinstance(record, dict):
                raise BadImportLine(number, "not a JSON object")
            return number, record
        return None

    def header(self) -> None:
        """The first line: the format and its version."""
        read = self._read()
        expected = json.dumps({"format": FORMAT, "version": VERSION}, separators=(",", ":"))
        if read is None:
            raise BadImportLine(1, f"missing: an export starts with {expected}")
        number, record = read
        if record.get("format") != FORMAT or "version" not in record:
            raise BadImportLine(number, f"not the header of a chatstore export ({expected})")
        if type(record["version"]) is not int or record["version"] != VERSION:
            raise BadImportLine(
                number,
                f"an export of format version {record['version']!r}; "
                f"this chatstore reads version {VERSION}",
            )

    def conversation(self) -> tuple[int, ConversationRecord] | None:
        """The next conversation record (None at the end of the file)."""
        read = self._read()
        if read is None:
            return None
        number, record = read
        if record.get("type") != "conversation":
            raise BadImportLine(
                number,
                "a conversation record was expected (a conversation comes before its messages)",
            )
        try:
            return number, ConversationRecord.model_validate(record, context=self._limits)
        except ValidationError as exc:
            raise BadImportLine(number, describe_validation_error(exc)) from None

    def messages(
        self, at: int, conversation: ConversationRecord
    ) -> Iterator[list[ImportedMessage]]:
        """The conversation's messages in chunks, every one validated; it ends after its
        last message, having checked that there were ``message_count`` of them."""
        seq = 0
        # What must be unique within the conversation, checked here to name the line; the
        # database checks it against what is stored.
        ids: set[UUID] = set()
        keys: dict[str, int] = {}
        chunk: list[ImportedMessage] = []
        size = 0
        # Exactly message_count lines are read: a line after the last one is the next
        # conversation's to judge (a surplus message is named there, on its own line).
        while seq < conversation.message_count:
            read = self._read()
            if read is None or read[1].get("type") != "message":
                if read is not None:
                    self._ahead = read  # the next conversation's line
                raise BadImportLine(
                    self.line if read is None else read[0],
                    f"the conversation of line {at} has message_count "
                    f"{conversation.message_count} but {seq} messages follow it",
                )
            number, record = read
            imported = self._message(number, record, conversation, seq + 1)
            if imported.message.id in ids:
                raise BadImportLine(number, "id: an earlier message of this conversation has it")
            ids.add(imported.message.id)
            key = imported.message.idempotency_key
            if key is not None:
                if key in keys:
                    raise BadImportLine(
                        number,
                        f"idempotency_key: already used in this conversation, by line {keys[key]}",
                    )
                keys[key] = number
            seq += 1
            chunk.append(imported)
            size += imported.size
            if len(chunk) >= contract.IMPORT_CHUNK or size >= _CHUNK_BYTES:
                yield chunk
                chunk, size = [], 0
        if chunk:
            yield chunk

    def _message(
        self, number: int, record: dict[str, Any], conversation: ConversationRecord, seq: int
    ) -> ImportedMessage:
        try:
            message = MessageRecord.model_validate(record, context=self._limits)
        except ValidationError as exc:
            raise BadImportLine(number, describe_validation_error(exc)) from None
        if message.conversation_id != conversation.id:
            raise BadImportLine(
                number, "conversation_id: not the conversation this message follows"
            )
        if message.seq != seq:
            raise BadImportLine(
                number, f"seq: {message.seq} where {seq} comes next (seqs are gapless from 1)"
            )
        return ImportedMessage(message, conversation.user, number, _size(message))


def _size(message: NewMessage) -> int:
    return len(message.content) + sum(
        len(json.dumps(value)) for value in (message.tool_calls, message.raw) if value is not None
    )


@dataclass(frozen=True, slots=True)
class _Group:
    """Whole conversations, to be written in one transaction."""

    conversations: list[ImportedConversation]


@dataclass(frozen=True, slots=True)
class _Long:
    """A long conversation with its first chunk; its other chunks follow, then ``_END``."""

    conversation: ImportedConversation


_END = object()  # the end of a long conversation's chunks
_DONE = object()  # the end of the file


def _read_all(
    records: Records,
    counted: Callable[[MessageRecord], MessageRecord],
    count: Callable[[str], int],
    put: Callable[[object], None],
) -> None:
    """Every record of the file, validated, handed to ``put`` in file order: groups of short
    conversations, and each long one as ``_Long``, its chunks and ``_END``. A bad line is
    handed over too, after what was held before its conversation."""
    group: list[ImportedConversation] = []
    held = size = 0
    try:
        while (found := records.conversation()) is not None:
            at, record = found
            chunks = records.messages(at, record)
            first = [_counted(m, counted) for m in next(chunks, [])]
            second = next(chunks, None)
            summary = None if record.summary is None else count(record.summary)
            conversation = ImportedConversation(record, at, summary, first)
            weight = sum(m.size for m in first)
            full = held + len(first) > contract.IMPORT_CHUNK or size + weight > _CHUNK_BYTES
            # An id twice in a file: the second is written after the first, and skipped.
            again = any(c.record.id == record.id for c in group)
            if group and (second is not None or full or again):
                put(_Group(group))
                group, held, size = [], 0, 0
            if second is None:
                group.append(conversation)
                held, size = held + len(first), size + weight
                continue
            put(_Long(conversation))  # a transaction of its own, a chunk at a time
            for chunk in chain([second], chunks):
                put([_counted(m, counted) for m in chunk])
            put(_END)
    except Exception as exc:  # a bad line, or the file unreadable: what came before goes in
        if group:
            put(_Group(group))
        put(exc)
        return
    if group:
        put(_Group(group))
    put(_DONE)


class _Stopped(Exception):
    """The writer has stopped: the reader stops too."""


class _Pipe:
    """The reader (``_read_all``) in a thread of its own, the writer on the event loop, at
    most ``_AHEAD`` items apart: the file is parsed and validated while the database writes
    what came before (bench W13: they take comparable time), in memory that stays bounded."""

    _AHEAD = 2

    def __init__(self, read: Callable[[Callable[[object], None]], None]) -> None:
        self._read = read
        self._loop = asyncio.get_running_loop()
        self._items: asyncio.Queue[object] = asyncio.Queue()
        self._room = threading.Semaphore(self._AHEAD)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="chatstore-import", daemon=True)

    async def __aenter__(self) -> _Pipe:
        self._thread.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._stop.set()
        # A transaction still reading a long conversation's chunks (its caller cancelled)
        # gets this instead of waiting forever, and rolls back.
        self._items.put_nowait(_Stopped())
        # The reader may be blocked on input that never comes (a pipe left open): it is a
        # daemon thread, so it is waited for only briefly.
        await asyncio.to_thread(self._thread.join, 0 if exc[0] is not None else None)

    def _run(self) -> None:
        try:
            self._read(self._put)
        except _Stopped:
            pass
        except BaseException as exc:  # an unreadable file, say: the writer raises it
            with suppress(_Stopped):
                self._put(exc)

    def _put(self, item: object) -> None:
        while not self._room.acquire(timeout=0.1) or self._stop.is_set():
            if self._stop.is_set():
                raise _Stopped
        self._loop.call_soon_threadsafe(self._items.put_nowait, item)

    async def get(self) -> object:
        """The next item; a bad line (or the reader's failure) is raised here."""
        item = await self._items.get()
        if not isinstance(item, _Stopped):
            self._room.release()
        if isinstance(item, BaseException):
            raise item
        return item

    async def chunks(self) -> AsyncIterator[list[ImportedMessage]]:
        """The chunks of the long conversation being written, up to its ``_END``."""
        while (item := await self.get()) is not _END:
            yield cast(list[ImportedMessage], item)


async def load(
    db: Backend,
    guard: Guard,
    records: Records,
    *,
    counted: Callable[[MessageRecord], MessageRecord],
    count: Callable[[str], int],
    progress: Callable[[Imported], None] | None,
) -> Imported:
    """``ConversationStore.import_lines``: ``records`` written to ``db``. Conversations of up
    to a chunk are written several to a transaction (``IMPORT_CHUNK`` messages at most); a
    longer one in a transaction of its own, a chunk at a time. When a line is bad, what came
    before its conversation is written first. ``counted``: a message with its token_count;
    ``count``: a summary's tokens."""
    counts = dict.fromkeys(Imported.model_fields, 0)
    waiting: list[tuple[UUID, UUID]] = []  # (fork, parent): linked at the end

    async def write(
        batch: list[ImportedConversation], more: AsyncIterator[list[ImportedMessage]] | None
    ) -> None:
        # Not retried (the lines read are gone); bounded per statement, not as a whole.
        op = partial(db.import_conversations, batch, more=more)
        try:
            written = await guard.run(op, retry=False, bounded=False)
        except ImportClash as clash:
            if len(batch) == 1:
                raise await _named(db, guard, batch[0], clash) from None
            for one in batch:  # each alone, to name the one that clashes
                await write([one], None)
            return
        for c in batch:
            r = c.record
            if r.id in written:
                counts["conversations_imported"] += 1
                counts["messages_imported"] += r.message_count
            else:
                counts["conversations_skipped"] += 1
                counts["messages_skipped"] += r.message_count
            if r.forked_from is not None and not written.get(r.id):
                waiting.append((r.id, r.forked_from.conversation_id))
        if more is not None:
            async for _ in more:  # a long conversation that was skipped: its lines still checked
                pass
        if progress is not None:
            progress(Imported(**counts))

    async with _Pipe(partial(_read_all, records, counted, count)) as pipe:
        try:
            while (item := await pipe.get()) is not _DONE:
                if isinstance(item, _Group):
                    await write(item.conversations, None)
                else:
                    await write([cast(_Long, item).conversation], pipe.chunks())
        except BadImportLine:
            counts["forks_linked"] = await _link(db, guard, waiting)
            raise
    counts["forks_linked"] = await _link(db, guard, waiting)
    return Imported(**counts)


def _counted(
    imported: ImportedMessage, counted: Callable[[MessageRecord], MessageRecord]
) -> ImportedMessage:
    if imported.message.token_count is not None:  # as exported: kept
        return imported
    return replace(imported, message=counted(imported.message))


async def _link(db: Backend, guard: Guard, waiting: list[tuple[UUID, UUID]]) -> int:
    return await guard.run(partial(db.link_forks, waiting)) if waiting else 0


async def _named(
    db: Backend, guard: Guard, conversation: ImportedConversation, clash: ImportClash
) -> BadImportLine:
    """The line a clash is about: the conversation's (its key), or a message's (its id)."""
    if clash.chunk is None:
        user = conversation.record.user
        return BadImportLine(
            conversation.line, f"key: user {user!r} has another conversation with this key"
        )
    ids = [m.message.id for m in clash.chunk]
    stored = await guard.run(partial(db.existing_message_ids, ids))
    line = next((m.line for m in clash.chunk if m.message.id in stored), clash.chunk[0].line)
    return BadImportLine(
        line, "id: a message with this id is stored already, in another conversation"
    )
