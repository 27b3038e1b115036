"""Opaque cursors: a keyset position, tied to the user (and, for search, the query) it was
issued for.

A cursor is base64 of its fields and a tag: a hash of the user, what the cursor is bound to and
the fields. Another user's cursor, one issued for another query, or an edited one, is refused
rather than read.

- ``list_conversations``: ``1.<updated_at µs>.<id hex>``;
- ``search_messages``: ``s1.<rank, a big-endian double in hex>.<created_at µs>.<id hex>.<results
  so far>``, bound to the query and its filters.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
import struct
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TypeVar

from store.backends.base import Position, SearchPosition
from store.errors import InvalidArgument

__all__ = ["decode_cursor", "decode_search_cursor", "encode_cursor", "encode_search_cursor"]

T = TypeVar("T")


def _tag(user: str, bound: str, payload: str) -> str:
    key = f"{user}\x1f{bound}\x1f{payload}" if bound else f"{user}\x1f{payload}"
    return hashlib.sha256(key.encode()).hexdigest()[:16]


def _encode(user: str, bound: str, fields: list[str]) -> str:
    payload = ".".join(fields)
    raw = f"{payload}.{_tag(user, bound, payload)}"
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def _decode(user: str, bound: str, cursor: str, read: Callable[[list[str]], T], refusal: str) -> T:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode("ascii")
        *fields, tag = raw.split(".")
        if tag != _tag(user, bound, ".".join(fields)):
            raise ValueError("not this user's cursor")
        return read(fields)
    except (ValueError, binascii.Error, struct.error, UnicodeDecodeError, OverflowError, OSError):
        raise InvalidArgument(refusal) from None


#: A cursor's fields are read only in the spelling ``_encode`` wrote them (``int`` and ``UUID``
#: would also take ``+1``, ``1_0``, braces or upper case): one position, one cursor.
_DIGITS = re.compile(r"0|[1-9][0-9]*")
_HEX_ID = re.compile(r"[0-9a-f]{32}")
_HEX_DOUBLE = re.compile(r"[0-9a-f]{16}")


def _field(pattern: re.Pattern[str], text: str) -> str:
    if pattern.fullmatch(text) is None:
        raise ValueError("not a field this server writes")
    return text


def _micros(value: datetime) -> str:
    return str(int(value.timestamp()) * 1_000_000 + value.microsecond)


def _time(micros: str) -> datetime:
    seconds, rest = divmod(int(_field(_DIGITS, micros)), 1_000_000)
    return datetime.fromtimestamp(seconds, UTC).replace(microsecond=rest)


def encode_cursor(user: str, position: Position) -> str:
    updated_at, conversation_id = position
    return _encode(user, "", ["1", _micros(updated_at), conversation_id.hex])


def decode_cursor(user: str, cursor: str) -> Position:
    def read(fields: list[str]) -> Position:
        version, micros, hex_id = fields
        if version != "1":
            raise ValueError("unknown cursor version")
        return _time(micros), uuid.UUID(hex=_field(_HEX_ID, hex_id))

    return _decode(
        user,
        "",
        cursor,
        read,
        "cursor is not a next_cursor this server returned for your conversations; "
        "list again without a cursor",
    )


def encode_search_cursor(user: str, bound: str, position: SearchPosition, depth: int) -> str:
    rank, created_at, message_id = position
    return _encode(
        user,
        bound,
        ["s1", struct.pack(">d", rank).hex(), _micros(created_at), message_id.hex, str(depth)],
    )


def decode_search_cursor(user: str, bound: str, cursor: str) -> tuple[SearchPosition, int]:
    """The position after which the next page starts, and how many results came before."""

    def read(fields: list[str]) -> tuple[SearchPosition, int]:
        version, rank, micros, hex_id, depth = fields
        if version != "s1":
            raise ValueError("unknown cursor version")
        return (
            struct.unpack(">d", bytes.fromhex(_field(_HEX_DOUBLE, rank)))[0],
            _time(micros),
            uuid.UUID(hex=_field(_HEX_ID, hex_id)),
        ), int(_field(_DIGITS, depth))

    return _decode(
        user,
        bound,
        cursor,
        read,
        "cursor is not a next_cursor this server returned for this search; "
        "search again without a cursor",
    )
