"""What the store needs from a database: the ``Backend`` protocol, one class per database.

``ConversationStore`` validates its input, then makes one call on its backend under the guard
(``store._guard``), which bounds the call's time, translates what ``is_unavailable`` recognises
into ``Unavailable`` and retries once after ``recover``. A backend holds all of its dialect's
SQL (in its own placeholder style), its transactions and its connection handling; it returns
the output models of ``store.schemas`` and never a driver row. What its statements find it
says in the store's terms: no such row is None, a unique key taken is ``Duplicate``.

Every method takes the acting user and every statement filters on it: a conversation of
another user is not found, exactly like one that does not exist. Only the operator's methods
(totals, export, import, prune) act across users, as an operator's command asks. Sequence
numbers are assigned inside the database's own transaction (``append_message``), so they are
gapless under any number of concurrent appenders, in this process or others.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal, Protocol
from uuid import UUID

from store._import import ImportClash, ImportedConversation, ImportedMessage
from store._search import Terms
from store.schemas import Conversation, Message, NewMessage, SearchHit
from store.settings import Settings

__all__ = [
    "Backend",
    "ContextWindow",
    "Duplicate",
    "ImportClash",
    "Position",
    "SearchPosition",
    "SummaryEnd",
    "Window",
    "summary_end",
]

#: A place in ``list_conversations``' order: (updated_at, id) of the last row of a page.
Position = tuple[datetime, UUID]
#: A place in ``search_messages``' order: (rank, created_at, id) of the last hit of a page.
SearchPosition = tuple[float, datetime, UUID]


@dataclass(frozen=True, slots=True)
class Window:
    """Up to ``count`` messages walking away from a cursor, nearest first: ascending from
    ``after_seq + 1``, else descending from ``before_seq - 1`` (or from the latest)."""

    count: int
    before_seq: int | None = None
    after_seq: int | None = None


@dataclass(frozen=True, slots=True)
class ContextWindow:
    """What get_context reads of a conversation, in one statement.

    The summary and ``last_seq``; ``recent``: the candidates (after ``summary_up_to_seq``)
    from the last one back to the first whose running token sum passes the budget left beside
    the summary, or to the first candidate, descending seq (or fewer: see context_window);
    ``older_systems``: the system messages before those (a summary's included), ascending
    seq, at most as many as asked for.
    """

    summary: str | None
    summary_up_to_seq: int | None
    summary_tokens: int
    last_seq: int
    recent: list[Message]
    older_systems: list[Message]


@dataclass(frozen=True, slots=True)
class SummaryEnd:
    """Where a summary would end, as the conversation stands under its row lock: ``last_seq``,
    the role of the message at ``summary_up_to_seq`` and whether it made tool calls, and the
    role of the message after it (None where there is no such message)."""

    last_seq: int
    ending_role: str | None
    ending_calls: bool
    next_role: str | None


def summary_end(
    last_seq: int, ending: Sequence[Any] | None, after: Sequence[Any] | None
) -> SummaryEnd:
    """A ``SummaryEnd`` from two (seq, role, has tool_calls) rows (None: no such message)."""
    return SummaryEnd(
        last_seq,
        None if ending is None else str(ending[1]),
        bool(ending is not None and ending[2]),
        None if after is None else str(after[1]),
    )


class Duplicate(Exception):
    """An insert hit a unique key: a retried append finding its own first attempt's row, or a
    concurrent append with the same idempotency key. Nothing was written by the statement."""


class QuotaReached(Exception):
    """Creating a conversation would pass ``Settings.max_conversations_per_user``; nothing
    was written (the count and the insert ran under the user's lock)."""


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

    def location(self) -> str:
        """Where the database is, for ``chatstore info``: ``host:port/database`` or a file."""

    async def totals(self) -> tuple[int, int, int]:
        """Users, conversations and messages stored (messages from the counters)."""

    def is_unavailable(self, exc: BaseException) -> bool:
        """Whether ``exc`` means the database is not answering right now. The failed
        statement then committed nothing, so the call may be retried."""

    def open_failure(self, exc: BaseException) -> str | None:
        """Why opening the database failed, in one sentence naming the fix, when ``exc`` is
        something an operator can act on (no such database, refused login, nothing listening,
        an unreadable file); None for anything else."""

    async def recover(self) -> None:
        """After an unavailable error: drop pooled connections, so a retry opens fresh ones."""

    async def applied_migrations(self) -> set[str]:
        """The migration file names recorded as applied (empty when none ever was)."""

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
        """Insert the user's row (on first use) and an empty conversation, atomically. With a
        ``key`` the user already has, nothing is inserted and that conversation is returned,
        unchanged. None when ``conversation_id`` exists already (a retried call whose first
        attempt committed). ``metadata`` is compact JSON text."""

    async def get_conversation(
        self, *, user: str, conversation_id: UUID
    ) -> Conversation | None: ...

    async def list_conversations(
        self, *, user: str, limit: int, after: Position | None
    ) -> list[Conversation]:
        """Up to ``limit`` of the user's conversations, most recently updated first (ties by
        id, descending), starting after ``after``."""

    async def update_conversation(
        self,
        *,
        user: str,
        conversation_id: UUID,
        changes: dict[str, Any],
        check: Callable[[SummaryEnd], None] | None,
    ) -> Conversation | None:
        """Set the given columns (title, metadata as JSON text, summary, summary_up_to_seq,
        summary_token_count), leaving updated_at; None when there is no such conversation.
        With ``check``, the conversation's row is locked first (appends wait) and ``check``
        is given the ``SummaryEnd`` at ``changes["summary_up_to_seq"]``: it raises to refuse,
        and then nothing is written."""

    async def export_conversations(
        self, *, after: UUID | None, user: str | None, conversation_id: UUID | None, limit: int
    ) -> list[tuple[str, Conversation]]:
        """Up to ``limit`` conversations with their users, by id, after ``after``: all of them,
        one user's, or the one ``conversation_id`` (export)."""

    async def export_messages(
        self, *, conversation_id: UUID, after_seq: int, up_to_seq: int, limit: int
    ) -> list[tuple[Message, str | None]]:
        """Up to ``limit`` messages with ``after_seq < seq <= up_to_seq``, by seq, each with
        its idempotency key (export: the conversation was read just before, for its user, and
        ``up_to_seq`` is its last_seq then)."""

    async def import_conversations(
        self,
        group: list[ImportedConversation],
        *,
        more: AsyncIterator[list[ImportedMessage]] | None = None,
    ) -> dict[UUID, bool]:
        """Write exported conversations in one transaction: their users' rows (on first
        use), each conversation with its recorded ids, counts and timestamps (forked_from set
        when that parent is stored already, the same user's), and its messages. A
        conversation whose id exists is skipped with its messages. ``more``: further messages
        of the group's last conversation, a chunk at a time (one too long to hold), written
        after it when it is written (an exception from ``more`` rolls everything back).
        Returns the ids written, each with whether its forked_from was set; ``ImportClash``
        (nothing written) when a key or a message id is taken. Each statement is bounded by
        ``db_timeout``, not the whole."""

    async def link_forks(self, forks: list[tuple[UUID, UUID]]) -> int:
        """For each (fork, parent): set the fork's forked_from to the parent where it is
        unset and the parent exists, of the same user; how many were set."""

    async def existing_message_ids(self, message_ids: list[UUID]) -> set[UUID]:
        """Which of these message ids are stored, anyone's (import names a clash)."""

    async def prune_batch(
        self, *, before: datetime, user: str | None, limit: int, dry_run: bool
    ) -> tuple[int, int]:
        """Delete (with ``dry_run``: only count) up to ``limit`` conversations, of ``user`` or
        of everyone, last updated before ``before``, in one short transaction; conversations
        another pruner holds are skipped, and one updated meanwhile is kept. Returns the
        conversations and messages deleted (or that would be: ``dry_run`` counts them all)."""

    async def truncate_messages(
        self,
        *,
        user: str,
        conversation_id: UUID,
        after_seq: int,
        check: Callable[[int], None],
    ) -> Conversation | None:
        """Delete the messages after ``after_seq`` and move last_seq, message_count and
        token_total back (a summary covering a deleted message goes too), in one transaction
        with the conversation locked against writes. ``check`` is given last_seq first and
        raises to refuse. None when there is no such conversation."""

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
        """A new conversation ``fork_id`` holding copies of messages 1 … ``at_seq`` (new ids,
        the rest kept, no idempotency keys), with the parent's title (unless ``title``), its
        metadata, its summary when that covers no more than ``at_seq``, and forked_from, in one
        transaction with the parent locked against writes. ``check`` is given the parent's
        last_seq first and raises to refuse. None when there is no such parent; the existing
        fork when ``fork_id`` exists already (a retried call whose first attempt committed)."""

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

    async def append_messages(
        self, *, user: str, conversation_id: UUID, batch: list[tuple[UUID, NewMessage]]
    ) -> list[Message] | None:
        """Store ``batch`` (message ids and messages) in order, with consecutive seqs from
        ``last_seq + 1``, moving the conversation's counters and ``updated_at`` once, all
        atomically. None when there is no such conversation; ``Duplicate`` (nothing stored)
        when an id or idempotency key exists."""

    async def messages_by_ids(self, *, user: str, message_ids: list[UUID]) -> list[Message]:
        """Those of the user's messages with these ids (any order)."""

    async def messages_by_keys(
        self, *, user: str, conversation_id: UUID, keys: list[str]
    ) -> dict[str, Message]:
        """The conversation's messages stored under these idempotency keys, by key."""

    async def message_page(
        self, *, user: str, conversation_id: UUID, window: Window
    ) -> list[Message]:
        """The messages of ``window``. Keyset on (conversation_id, seq): the cost does not
        grow with how deep the window is or how large the store is."""

    async def conversation_exists(self, *, user: str, conversation_id: UUID) -> bool: ...

    # -- search --------------------------------------------------------------------------

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
        """Up to ``count`` of the user's messages matching ``query`` (``terms``: the same,
        parsed by ``store._search``), by rank (higher first), then newest first, after
        ``after``. The rank comes from the message and the query alone, never from other
        messages, so no one else's history can move it. Only the user's messages are read
        into the result, counted or ranked."""

    # -- context windows (store._context) --------------------------------------------------

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
        """The conversation's ``ContextWindow`` for a budget of ``max_tokens`` (up to
        ``systems`` older system messages when ``keep_system``), or None when there is no
        such conversation. The walk reads at most ``reads`` messages, sized from the
        conversation's tokens per message: its cost grows with what fits, not with the
        conversation's length. ``recent`` may stop short of the budget when the conversation's
        messages are larger than their average; the caller reads on."""

    async def system_messages(
        self, *, user: str, conversation_id: UUID, above: int, below: int, count: int
    ) -> list[Message]:
        """Up to ``count`` system messages with ``above < seq < below``, ascending seq."""
