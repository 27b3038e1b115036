"""Appending: one message or a batch, with idempotency keys, as one atomic step.

Every message of a call gets its id once, before any attempt, so a retry after a lost reply
finds the rows its first attempt stored instead of storing them twice. Keys are looked up
first: a stored key with the same role, content and tool_calls is a replay (that message is
returned, nothing is stored), with anything else a ``Conflict`` for the whole call. The rest
is stored in order, with consecutive seqs, in one statement (PostgreSQL) or one transaction
(SQLite). A concurrent call taking one of the keys meanwhile makes the insert fail as a whole;
the keys are then looked up again.
"""

from __future__ import annotations

from uuid import UUID

from store._quota import conversation_full
from store.backends.base import Backend, Duplicate
from store.errors import Conflict, NotFound, Unavailable
from store.schemas import Message, NewMessage, json_identity

__all__ = ["append", "replay"]

_NOT_FOUND = "no conversation with that id"
#: Rounds of "look the keys up, store the rest" before giving up to concurrent writers.
_ROUNDS = 3


def replay(stored: Message, new: NewMessage) -> Message:
    """The stored message for a replayed idempotency key, or ``Conflict`` if it differs."""
    if (stored.role, stored.content, json_identity(stored.tool_calls)) != (
        new.role,
        new.content,
        json_identity(new.tool_calls),
    ):
        raise Conflict(
            "idempotency_key was already used in this conversation for a different "
            "message (role, content or tool_calls differ); use a new key for a new message"
        )
    return stored


async def append(
    db: Backend,
    *,
    user: str,
    conversation_id: UUID,
    batch: list[tuple[UUID, NewMessage]],
    quota: int | None = None,
) -> list[Message]:
    """Store ``batch`` (each message with its id, validated, token_count set), in order;
    the messages as stored, replays included, in the batch's order. ``quota``: the most
    messages the conversation may hold (the backend enforces it; here it is only named)."""
    if not batch:
        if not await db.conversation_exists(user=user, conversation_id=conversation_id):
            raise NotFound(_NOT_FOUND)
        return []
    keys = [new.idempotency_key for _, new in batch if new.idempotency_key is not None]
    for _ in range(_ROUNDS):
        stored: dict[str | None, Message] = {}
        if keys:
            stored.update(
                await db.messages_by_keys(user=user, conversation_id=conversation_id, keys=keys)
            )
        fresh = [(mid, new) for mid, new in batch if new.idempotency_key not in stored]
        for _, new in batch:
            if new.idempotency_key in stored:
                replay(stored[new.idempotency_key], new)
        try:
            inserted = await _insert(db, user, conversation_id, fresh, quota)
        except Duplicate:
            # A retry of this very call finds its first attempt's rows (stored as a whole),
            # or a concurrent call took one of the keys: then look them up again.
            ids = [mid for mid, _ in fresh]
            found = await db.messages_by_ids(user=user, message_ids=ids)
            if len(found) != len(fresh):
                if not keys:
                    raise
                continue
            inserted = found
        by_id = {message.id: message for message in inserted}
        return [
            stored[new.idempotency_key] if new.idempotency_key in stored else by_id[mid]
            for mid, new in batch
        ]
    raise Unavailable(
        "concurrent appends kept taking this call's idempotency keys; retrying is safe"
    )


async def _insert(
    db: Backend,
    user: str,
    conversation_id: UUID,
    fresh: list[tuple[UUID, NewMessage]],
    quota: int | None,
) -> list[Message]:
    if not fresh:
        return []
    if len(fresh) == 1:  # one statement built for it: the append hot path
        ((message_id, new),) = fresh
        one = await db.append_message(
            user=user, conversation_id=conversation_id, message_id=message_id, message=new
        )
        inserted = None if one is None else [one]
    else:
        inserted = await db.append_messages(user=user, conversation_id=conversation_id, batch=fresh)
    if inserted is None:
        # No counters moved: no such conversation, or (with a quota) no room in it.
        if quota is not None and await db.conversation_exists(
            user=user, conversation_id=conversation_id
        ):
            raise conversation_full(quota, len(fresh))
        raise NotFound(_NOT_FOUND)
    return inserted
