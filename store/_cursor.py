"""``list_conversations`` cursors: a keyset position, tied to the user it was issued to.

A cursor is opaque to clients: base64 of ``1.<updated_at µs>.<id hex>.<tag>``, where the tag
is a hash of the user and the position, so another user's cursor (or an edited one) is refused
rather than read.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import uuid
from datetime import UTC, datetime

from store.backends.base import Position
from store.errors import InvalidArgument

__all__ = ["decode_cursor", "encode_cursor"]


def _tag(user: str, payload: str) -> str:
    return hashlib.sha256(f"{user}\x1f{payload}".encode()).hexdigest()[:16]


def encode_cursor(user: str, position: Position) -> str:
    updated_at, conversation_id = position
    micros = int(updated_at.timestamp()) * 1_000_000 + updated_at.microsecond
    payload = f"1.{micros}.{conversation_id.hex}"
    raw = f"{payload}.{_tag(user, payload)}"
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode_cursor(user: str, cursor: str) -> Position:
    bad = InvalidArgument(
        "cursor is not a next_cursor this server returned for your conversations; "
        "list again without a cursor"
    )
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode("ascii")
        version, micros, hex_id, tag = raw.split(".")
        payload = f"{version}.{micros}.{hex_id}"
        if version != "1" or tag != _tag(user, payload):
            raise bad
        seconds, rest = divmod(int(micros), 1_000_000)
        updated_at = datetime.fromtimestamp(seconds, UTC).replace(microsecond=rest)
        return updated_at, uuid.UUID(hex=hex_id)
    except (ValueError, binascii.Error, UnicodeDecodeError, OverflowError, OSError):
        raise bad from None
