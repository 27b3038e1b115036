"""What the store needs from a database: the ``Backend`` protocol, one class per database.

``ConversationStore`` validates its input, then makes one call on its backend under the guard
(``store._guard``), which bounds the call's time, translates what ``is_unavailable`` recognises
into ``Unavailable`` and retries once after ``recover``. A backend holds all of its dialect's
SQL (in its own placeholder style), its transactions and its connection handling; it returns
the output models of ``store.schemas`` and never a driver row. What its statements find it
says in the store's terms: no such row is None, a unique key taken is ``Duplicate``.

Every method takes the acting user and every statement filters on it: a conversation of
another user is not found, exactly like one that does not exist. Sequence numbers are assigned
inside the database's own transaction (``append_message``), so they are gapless under any
number of concurrent appenders, in this process or others.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal, Protocol
from uuid import UUID

from store.schemas import Conversation, Message, NewMessage
from store.settings import Settings

__all__ = ["Backend", "Brief", "ContextHead", "Duplicate", "Position", "Window"]

#: A place in ``list_conversations``' order: (updated_at, id) of the last row of a page.
Position = tuple[datetime, UUID]


@dataclass(frozen=True, slots=True)
class Window:
    """Up to ``count`` messages walking away from a cursor, nearest first: ascending from
    ``after_seq + 1``, else descending from ``before_seq - 1`` (or from the latest)."""

    count: int
    before_seq: int | None = None
    after_seq: int | None = None


@dataclass(frozen=True, slots=True)
class Brief:
    """What get_context needs to know of a message before reading it whole."""

    seq: int
    role: str
    tokens: int
    tool_call_id: str | None
    #: The ids of an assistant message's tool_calls (empty for any other message).
    call_ids: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class ContextHead:
    """A conversation's summary and last seq, and its latest candidate messages (``rows``:
    after ``summary_up_to_seq``, descending seq)."""

    summary: str | None
    summary_up_to_seq: int | None
    summary_tokens: int
    last_seq: int
    rows: list[Brief]


class Duplicate(Exception):
    """An insert hit a unique key: a retried append finding its own first attempt's row, or a
    concurrent append with the same idempotency key. Nothing was written by the statement."""


class Backend(Protocol):
    def __init__(self, settings: Settings) -> None: ...

    @property
    def name(self) -> Literal["postgres", "sqlite"]: ...

    # -- lifecycle -------------------------------------------------------------------------

    @classmethod
    def prepare(cls, settings: Settings) -> None:
        """Make the database's location usable before anything connects (SQLite: its folder)."""

    @classmethod
    def tortoise_connection(cls, settings: Settings) -> dict[str, Any]:
        """The Tortoise connection (engine and credentials) aerich migrates this database on."""

    async def open(self) -> None:
        """Connect (SQLite: after migrating the file in place; PostgreSQL is migrated by
        an operator and only checked)."""

    async def close(self) -> None: ...

    def where(self) -> str:
        """The database in words an operator can act on (no password)."""

    def is_unavailable(self, exc: BaseException) -> bool:
        """Whether ``exc`` means the database is not answering right now. The failed
        statement then committed nothing, so the call may be retried."""

    async def recover(self) -> None:
        """After an unavailable error: drop pooled connections, so a retry opens fresh ones."""

    async def applied_migrations(self) -> set[str]:
        """The migration file names recorded as applied (empty when none ever was)."""

    # -- conversations ---------------------------------------------------------------------

    async def create_conversation(
        self, *, user: str, conversation_id: UUID, title: str | None, metadata: str
    ) -> Conversation | None:
        """Insert the user's row (on first use) and an empty conversation, atomically. None
        when ``conversation_id`` exists already (a retried call whose first attempt committed).
        ``metadata`` is compact JSON text."""

    async def get_conversation(
        self, *, user: str, conversation_id: UUID
    ) -> Conversation | None: ...

    async def list_conversations(
        self, *, user: str, limit: int, after: Position | None
    ) -> list[Conversation]:
        """Up to ``limit`` of the user's conversations, most recently updated first (ties by
        id, descending), starting after ``after``."""

    async def update_conversation(
        self, *, user: str, conversation_id: UUID, changes: dict[str, Any]
    ) -> Conversation | None:
        """Set the given columns (title, metadata as JSON text, summary, summary_up_to_seq,
        summary_token_count), leaving updated_at. With a summary_up_to_seq, only when it is
        at most last_seq and the message after it is not a tool message, checked in the same
        statement. None when no row was updated (no such conversation, or those checks)."""

    async def delete_conversation(self, *, user: str, conversation_id: UUID) -> int | None:
        """Delete it (its messages by ON DELETE CASCADE); how many messages went with it, or
        None when there was no such conversation."""

    async def purge_user(self, *, user: str) -> tuple[int, int]:
        """Delete the user's row and (by cascade) everything of theirs; (conversations,
        messages) deleted, counted in the same transaction."""

    # -- messages --------------------------------------------------------------------------

    async def append_message(
        self, *, user: str, conversation_id: UUID, message_id: UUID, message: NewMessage
    ) -> Message | None:
        """Store ``message`` with the next ``seq``, and move the conversation's ``last_seq``,
        ``message_count`` and ``updated_at`` with it, atomically. None when there is no such
        conversation; ``Duplicate`` when ``message_id`` or its idempotency key exists."""

    async def message_by_id(self, *, user: str, message_id: UUID) -> Message | None: ...

    async def message_by_key(
        self, *, user: str, conversation_id: UUID, key: str
    ) -> Message | None: ...

    async def message_page(
        self, *, user: str, conversation_id: UUID, window: Window
    ) -> list[Message]:
        """The messages of ``window``. Keyset on (conversation_id, seq): the cost does not
        grow with how deep the window is or how large the store is."""

    async def conversation_exists(self, *, user: str, conversation_id: UUID) -> bool: ...

    # -- context windows (store._context) --------------------------------------------------

    async def context_head(
        self, *, user: str, conversation_id: UUID, count: int
    ) -> ContextHead | None:
        """The summary and the latest ``count`` candidates, in one consistent read."""

    async def context_rows(
        self, *, user: str, conversation_id: UUID, below: int, above: int, count: int
    ) -> list[Brief]:
        """Up to ``count`` messages with ``above < seq < below``, descending seq."""

    async def context_messages(
        self,
        *,
        user: str,
        conversation_id: UUID,
        from_seq: int,
        system_after: int,
        system_budget: int | None,
    ) -> list[Message]:
        """Messages from ``from_seq`` on and, with a ``system_budget``, the system messages
        between ``system_after`` and ``from_seq`` whose running token sum (oldest first) stays
        within it; all in ascending seq."""
