"""Import: the export format (``store._export``) read back, a line at a time.

``Records`` walks the lines of an export and validates each as it goes: the header first, then
each conversation record (``ConversationRecord``) followed by its messages, each checked with
the append rules (``NewMessage``, under the store's limits) and for its place (the
conversation's id, the next seq, gapless from 1, exactly ``message_count`` of them, each
idempotency key once). The first line that breaks a rule raises ``BadImportLine`` naming it.

The messages of a conversation come out in chunks (``IMPORT_CHUNK`` messages, or about
``_CHUNK_BYTES`` of text), so a conversation of any length is written a chunk at a time inside
its one transaction, and memory holds a chunk, not the conversation.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal
from uuid import UUID

from pydantic import AwareDatetime, Field, ValidationError, field_validator, model_validator

from store._export import FORMAT, VERSION
from store.contract import IMPORT_CHUNK, MAX_SEQ_CURSOR, Limits
from store.errors import BadImportLine, InvalidArgument
from store.schemas import (
    Key,
    Metadata,
    NewMessage,
    Summary,
    Title,
    _Input,
    check_user,
    describe_validation_error,
    validate,
)

__all__ = ["ConversationRecord", "ImportedMessage", "Records"]

#: A chunk also ends once its messages hold about this much text and JSON.
_CHUNK_BYTES = 8 * 1024 * 1024


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
    created_at: AwareDatetime
    updated_at: AwareDatetime
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
        return self


@dataclass(frozen=True, slots=True)
class ImportedMessage:
    """A message line, validated: its id, place and time as exported, and the message."""

    id: UUID
    seq: int
    created_at: datetime
    message: NewMessage
    line: int


class _Placement(_Input):
    type: Literal["message"]
    id: UUID
    conversation_id: UUID
    seq: int = Field(strict=True, ge=1, le=MAX_SEQ_CURSOR)
    created_at: AwareDatetime


_PLACEMENT = frozenset(_Placement.model_fields)


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
        for number, text in self._lines:
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
            except (json.JSONDecodeError, RecursionError):
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
        if record["version"] != VERSION:
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
        while True:
            read = self._read()
            if read is not None and read[1].get("type") != "message":
                self._ahead = read  # the next conversation's line
                read = None
            if read is None:
                if seq != conversation.message_count:
                    raise BadImportLine(
                        self.line if self._ahead is None else self._ahead[0],
                        f"the conversation of line {at} has message_count "
                        f"{conversation.message_count} but {seq} messages follow it",
                    )
                if chunk:
                    yield chunk
                return
            number, record = read
            imported = self._message(number, record, conversation.id, seq + 1)
            if imported.id in ids:
                raise BadImportLine(number, "id: an earlier message of this conversation has it")
            ids.add(imported.id)
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
            size += _size(imported.message)
            if len(chunk) >= IMPORT_CHUNK or size >= _CHUNK_BYTES:
                yield chunk
                chunk, size = [], 0

    def _message(
        self, number: int, record: dict[str, Any], conversation_id: UUID, seq: int
    ) -> ImportedMessage:
        try:
            placement = _Placement.model_validate(
                {name: record[name] for name in _PLACEMENT if name in record}
            )
        except ValidationError as exc:
            raise BadImportLine(number, describe_validation_error(exc)) from None
        if placement.conversation_id != conversation_id:
            raise BadImportLine(
                number, "conversation_id: not the conversation this message follows"
            )
        if placement.seq != seq:
            raise BadImportLine(
                number, f"seq: {placement.seq} where {seq} comes next (seqs are gapless from 1)"
            )
        fields = {name: value for name, value in record.items() if name not in _PLACEMENT}
        try:
            message = validate(NewMessage, self._limits, **fields)
        except InvalidArgument as exc:
            raise BadImportLine(number, exc.message) from None
        return ImportedMessage(placement.id, seq, placement.created_at, message, number)

    def drain(self, chunks: Iterator[list[ImportedMessage]]) -> int:
        """Validate the rest of a conversation that is not written; how many messages."""
        return sum(len(chunk) for chunk in chunks)


def _size(message: NewMessage) -> int:
    return len(message.content) + sum(
        len(json.dumps(value)) for value in (message.tool_calls, message.raw) if value is not None
    )
