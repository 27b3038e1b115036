"""The user-scoped conversation store: validate, then one backend call under the guard.

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

The SQL lives in ``store/backends/`` (one module per database). Whether the database is
answering is decided in one place, ``store/_guard.py``: there a driver error becomes
``Unavailable``, with the one retry.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any, Literal, TypeVar

from store import _export
from store._append import append
from store._budget import message_bytes, page_bytes
from store._context import build_context, check_summary_end
from store._cursor import (
    decode_cursor,
    decode_search_cursor,
    encode_cursor,
    encode_search_cursor,
)
from store._guard import Guard
from store._import import Records, load
from store._pydantic import trusted
from store._quota import conversations_full
from store._search import parse
from store.backends import Backend, QuotaReached, Window, backend_class
from store.contract import (
    DEFAULT_CONVERSATION_PAGE,
    DEFAULT_MESSAGE_PAGE,
    DEFAULT_SEARCH_PAGE,
    EXPORT_PAGE,
    MAX_SEARCH_DEPTH,
    PRUNE_BATCH,
)
from store.errors import (
    Conflict,
    InvalidArgument,
    LimitExceeded,
    NotFound,
    NotOpen,
)
from store.schemas import (
    UNSET,
    Context,
    ContextQuery,
    Conversation,
    ConversationChanges,
    ConversationPage,
    ConversationQuery,
    ConversationWithMessages,
    DeletedConversation,
    ForkQuery,
    Imported,
    Message,
    MessagePage,
    MessageQuery,
    NewConversation,
    NewMessage,
    Pruned,
    PurgedUser,
    RecentMessages,
    SearchPage,
    SearchQuery,
    StoreInfo,
    TruncateQuery,
    Unset,
    check_user,
    dump_json,
    parse_id,
    validate,
    validate_batch,
)
from store.settings import Settings
from store.tokens import tokenizer

__all__ = ["ConversationStore", "open_store"]

M = TypeVar("M", bound=NewMessage)

_NOT_FOUND = "no conversation with that id"
#: A page of messages is read this many rows at a time: a default page and its has_more row
#: in one statement, and a page of large messages stopped at the response budget without
#: reading the rest of it.
_PAGE_CHUNK = DEFAULT_MESSAGE_PAGE + 1


class ConversationStore:
    """Durable per-user conversation history on PostgreSQL or SQLite.

    Use as ``async with ConversationStore(settings) as store:`` (or ``open_store``). Every
    method is scoped to the keyword-only ``user``; errors are ``store.errors`` types only.
    """

    def __init__(self, settings: Settings | None = None) -> None:
        self._settings = settings or Settings()
        self._limits = self._settings.limits
        self._quota = self._settings.max_messages_per_conversation
        self._page_bytes = page_bytes(self._settings.max_response_bytes)
        self._backend: Backend = backend_class(self._settings)(self._settings)
        self._guard = Guard(self._backend, self._settings.db_timeout)
        self._open = False

    @property
    def settings(self) -> Settings:
        return self._settings

    @property
    def dialect(self) -> Literal["postgres", "sqlite"]:
        return self._backend.name

    # -- lifecycle -----------------------------------------------------------------------

    async def open(self) -> None:
        """Connect, and make sure the schema is at head.

        SQLite databases are migrated in place (the embedded default needs no set-up). A
        PostgreSQL database behind head is refused with ``SchemaBehind``, which names the
        command to run: migrations there are an operator's decision.
        """
        from store import migrate  # imported here: see store.backends.sqlite.open

        if self._open:
            return
        try:
            with self._guard.opening():
                await self._backend.open()
                applied = await self._backend.applied_migrations()
            migrate.at_head(self._backend.name, applied)
        except BaseException:
            await self._backend.close()
            raise
        self._open = True

    async def close(self) -> None:
        self._open = False
        await self._backend.close()

    async def info(self) -> StoreInfo:
        """The backend, where the database is, its schema version and what it holds (all
        users: for an operator, never a tool)."""
        db = self._db()
        users, conversations, messages = await self._guard.run(db.totals)
        return StoreInfo(
            database=db.name,
            location=db.location(),
            schema_version=await self.check_ready(),
            users=users,
            conversations=conversations,
            messages=messages,
        )

    async def check_ready(self) -> str:
        """The schema version (the newest migration) when the database answers and is at
        head; ``Unavailable`` when it does not answer, ``SchemaBehind`` when it is behind
        (another replica's ``chatstore migrate`` may be running). For readiness probes."""
        from store import migrate

        db = self._db()
        return migrate.at_head(db.name, await self._guard.run(db.applied_migrations))

    async def __aenter__(self) -> ConversationStore:
        await self.open()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    def _conversations_full(self) -> LimitExceeded:
        assert self._settings.max_conversations_per_user is not None
        return conversations_full(self._settings.max_conversations_per_user)

    def _db(self) -> Backend:
        if not self._open:
            raise NotOpen
        return self._backend

    # -- conversations -------------------------------------------------------------------

    async def create_conversation(
        self,
        *,
        user: str,
        title: str | None = None,
        metadata: dict[str, Any] | None = None,
        key: str | None = None,
    ) -> Conversation:
        """Start an empty conversation for ``user``. With ``key`` (a name of the caller's,
        unique per user), a conversation the user already has under that key is returned
        unchanged instead, and nothing is created: concurrent creates with one key make one
        conversation."""
        user = check_user(user)
        new = validate(NewConversation, self._limits, title=title, metadata=metadata, key=key)
        # Chosen once per call: a retry after a lost reply finds the conversation it made.
        conversation_id = uuid.uuid4()
        db = self._db()

        async def op() -> Conversation:
            try:
                created = await db.create_conversation(
                    user=user,
                    conversation_id=conversation_id,
                    title=new.title,
                    metadata=dump_json(new.metadata),
                    key=new.key,
                )
            except QuotaReached:
                raise self._conversations_full() from None
            if created is None:  # a retried call whose first attempt did commit
                return await self._conversation(db, user, conversation_id)
            return created

        return await self._guard.run(op)

    async def _conversation(self, db: Backend, user: str, cid: uuid.UUID) -> Conversation:
        found = await db.get_conversation(user=user, conversation_id=cid)
        if found is None:
            raise NotFound(_NOT_FOUND)
        return found

    async def list_conversations(
        self, *, user: str, limit: int = DEFAULT_CONVERSATION_PAGE, cursor: str | None = None
    ) -> ConversationPage:
        """The user's conversations, most recently updated first, ``limit`` per page."""
        user = check_user(user)
        query = validate(ConversationQuery, self._limits, limit=limit, cursor=cursor)
        after = decode_cursor(user, query.cursor) if query.cursor is not None else None
        db = self._db()

        async def op() -> ConversationPage:
            rows = await db.list_conversations(user=user, limit=query.limit + 1, after=after)
            page = rows[: query.limit]
            next_cursor = None
            if len(rows) > query.limit:
                next_cursor = encode_cursor(user, (page[-1].updated_at, page[-1].id))
            return trusted(ConversationPage, {"conversations": page, "next_cursor": next_cursor})

        return await self._guard.run(op)

    async def get_conversation(
        self, *, user: str, conversation_id: str | uuid.UUID, recent_messages: int = 0
    ) -> ConversationWithMessages:
        """One conversation, with its latest ``recent_messages`` messages oldest first (fewer
        where they would pass the response budget), and ``has_more``: whether it has older
        messages than those."""
        user = check_user(user)
        cid = parse_id(conversation_id)
        count = validate(RecentMessages, self._limits, recent_messages=recent_messages)
        db = self._db()

        async def op() -> ConversationWithMessages:
            conversation = await self._conversation(db, user, cid)
            messages: list[Message] = []
            has_more = conversation.message_count > 0
            if count.recent_messages:
                messages, has_more = await self._page(
                    db, user, cid, count.recent_messages, None, None
                )
            return ConversationWithMessages.model_construct(
                **dict(conversation), messages=messages, has_more=has_more
            )

        return await self._guard.run(op)

    async def update_conversation(
        self,
        *,
        user: str,
        conversation_id: str | uuid.UUID,
        title: str | Unset | None = UNSET,
        metadata: dict[str, Any] | Unset | None = UNSET,
        summary: str | Unset | None = UNSET,
        summary_up_to_seq: int | Unset | None = UNSET,
    ) -> Conversation:
        """Change only the fields given: ``title``, ``metadata`` (replaced whole; None is
        ``{}``), and the summary (``summary`` with ``summary_up_to_seq``, the last seq it
        covers; ``summary=None`` alone removes it). ``updated_at`` stays: it is the time of
        the last message. Messages are never touched."""
        user = check_user(user)
        cid = parse_id(conversation_id)
        given = {
            name: value
            for name, value in (
                ("title", title),
                ("metadata", metadata),
                ("summary", summary),
                ("summary_up_to_seq", summary_up_to_seq),
            )
            if value is not UNSET
        }
        changes = validate(ConversationChanges, self._limits, **given)
        columns: dict[str, Any] = {}
        for name in changes.model_fields_set:
            columns[name] = getattr(changes, name)
        if "metadata" in columns:
            columns["metadata"] = dump_json(changes.metadata)
        if "summary" in columns:
            columns["summary_up_to_seq"] = changes.summary_up_to_seq
            columns["summary_token_count"] = (
                None
                if changes.summary is None
                else tokenizer(self._settings.tokenizer).count(changes.summary)
            )

        seq = changes.summary_up_to_seq
        db = self._db()

        async def op() -> Conversation:
            if not columns:
                return await self._conversation(db, user, cid)
            updated = await db.update_conversation(
                user=user,
                conversation_id=cid,
                changes=columns,
                check=None if seq is None else partial(check_summary_end, seq),
            )
            if updated is None:
                raise NotFound(_NOT_FOUND)
            return updated

        return await self._guard.run(op)

    async def get_context(
        self,
        *,
        user: str,
        conversation_id: str | uuid.UUID,
        max_tokens: int,
        keep_system: bool = True,
    ) -> Context:
        """The part of the conversation that fits ``max_tokens``: its summary first (when it
        has one), then the longest suffix of the messages after it that starts at a turn and
        never splits a tool call from its results; with ``keep_system``, older system messages
        in what is left. The rules are in ``store/_context.py``; the cost grows with what is
        returned, not with the conversation's length."""
        user = check_user(user)
        cid = parse_id(conversation_id)
        query = validate(ContextQuery, self._limits, max_tokens=max_tokens, keep_system=keep_system)
        db = self._db()

        async def op() -> Context:
            return await build_context(
                db,
                user=user,
                conversation_id=cid,
                max_tokens=query.max_tokens,
                keep_system=query.keep_system,
                max_bytes=self._page_bytes,
            )

        return await self._guard.run(op)

    async def fork_conversation(
        self,
        *,
        user: str,
        conversation_id: str | uuid.UUID,
        at_seq: int,
        title: str | None = None,
    ) -> Conversation:
        """A new conversation of ``user`` holding copies of messages 1 … ``at_seq`` (0 …
        last_seq) of this one: same seqs, roles, content, tool calls, metadata, token counts
        and times, new ids, no idempotency keys. It has the parent's title unless ``title`` is
        given, its metadata, its summary when that covers no more than ``at_seq``, and
        ``forked_from``. The parent is unchanged, and deleting either leaves the other. To edit
        message N and regenerate: fork at N - 1, then append the edited message."""
        user = check_user(user)
        cid = parse_id(conversation_id)
        query = validate(ForkQuery, self._limits, at_seq=at_seq, title=title)
        # Chosen once per call: a retry after a lost reply finds the fork it made.
        fork_id = uuid.uuid4()
        db = self._db()

        def in_range(last_seq: int) -> None:
            if query.at_seq > last_seq:
                raise InvalidArgument(f"at_seq must lie in 0 … last_seq ({last_seq})")

        async def op() -> Conversation:
            try:
                fork = await db.fork_conversation(
                    user=user,
                    conversation_id=cid,
                    fork_id=fork_id,
                    at_seq=query.at_seq,
                    title=query.title,
                    check=in_range,
                )
            except QuotaReached:
                raise self._conversations_full() from None
            if fork is None:
                raise NotFound(_NOT_FOUND)
            return fork

        return await self._guard.run(op)

    async def truncate_messages(
        self,
        *,
        user: str,
        conversation_id: str | uuid.UUID,
        after_seq: int,
        if_last_seq: int | None = None,
    ) -> Conversation:
        """Delete the messages after ``after_seq`` (0 … last_seq; 0 deletes them all) and set
        last_seq and message_count back, atomically: the next append gets ``after_seq + 1``.
        A summary covering a deleted message is removed; ``updated_at`` is unchanged. With
        ``if_last_seq``, nothing is deleted unless last_seq is still that (else ``Conflict``):
        an undo of "the latest message" never takes a message appended meanwhile. Returns the
        conversation as it is afterwards. Not an MCP tool: it exists for framework adapters."""
        user = check_user(user)
        cid = parse_id(conversation_id)
        query = validate(TruncateQuery, self._limits, after_seq=after_seq, if_last_seq=if_last_seq)
        db = self._db()

        def allowed(last_seq: int) -> None:
            if query.if_last_seq is not None and query.if_last_seq != last_seq:
                raise Conflict(
                    f"last_seq is {last_seq}, not {query.if_last_seq}: the conversation "
                    "changed meanwhile; read it again"
                )
            if query.after_seq > last_seq:
                raise InvalidArgument(f"after_seq must lie in 0 … last_seq ({last_seq})")

        async def op() -> Conversation:
            truncated = await db.truncate_messages(
                user=user, conversation_id=cid, after_seq=query.after_seq, check=allowed
            )
            if truncated is None:
                raise NotFound(_NOT_FOUND)
            return truncated

        # Not retried: a retry could take a message appended after a first attempt committed
        # (or, with if_last_seq, report that attempt's own change as a conflict).
        return await self._guard.run(op, retry=False)

    async def delete_conversation(
        self, *, user: str, conversation_id: str | uuid.UUID
    ) -> DeletedConversation:
        """Delete a conversation and (by ON DELETE CASCADE) all its messages."""
        user = check_user(user)
        cid = parse_id(conversation_id)
        db = self._db()

        async def op() -> DeletedConversation:
            deleted = await db.delete_conversation(user=user, conversation_id=cid)
            if deleted is None:
                raise NotFound(_NOT_FOUND)
            return DeletedConversation(conversation_id=cid, messages_deleted=deleted)

        # Not retried: if a first attempt's outcome is unknown, a second would report
        # not_found for a conversation that this very call deleted.
        return await self._guard.run(op, retry=False)

    async def prune(
        self,
        *,
        idle_days: int,
        user: str | None = None,
        dry_run: bool = False,
        batch: int = PRUNE_BATCH,
        progress: Callable[[int, int], None] | None = None,
    ) -> Pruned:
        """Retention: delete the conversations (of ``user``, or of everyone) whose last message,
        or creation, is more than ``idle_days`` days old, with their messages, ``batch`` at a
        time, each batch a short transaction of its own, so appends elsewhere never wait long.
        Several prunes at once (server replicas) share the work and never count a
        conversation twice; one that an append touches meanwhile is kept. ``progress`` is
        called with the running totals after each batch. With ``dry_run``, nothing is
        deleted and the totals are what would be."""
        if isinstance(idle_days, bool) or not isinstance(idle_days, int) or idle_days < 0:
            raise InvalidArgument("idle_days must be a whole number of days, 0 or more")
        if user is not None:
            user = check_user(user)
        before = datetime.now(UTC) - timedelta(days=idle_days)
        db = self._db()
        conversations = messages = 0
        while True:

            async def op() -> tuple[int, int]:
                return await db.prune_batch(before=before, user=user, limit=batch, dry_run=dry_run)

            done, gone = await self._guard.run(op)
            conversations, messages = conversations + done, messages + gone
            if progress is not None and done:
                progress(conversations, messages)
            if dry_run or done == 0:
                return Pruned(
                    conversations_deleted=conversations, messages_deleted=messages, dry_run=dry_run
                )

    async def export(
        self, *, user: str | None = None, conversation_id: str | uuid.UUID | None = None
    ) -> AsyncIterator[dict[str, Any]]:
        """The export records (``store._export``), header first: every conversation, or one
        user's, or the one ``conversation_id`` (of ``user`` when given), each followed by its
        messages. Read a page at a time: memory does not grow with the history."""
        if user is not None:
            user = check_user(user)
        one = None if conversation_id is None else parse_id(conversation_id)
        db = self._db()
        yield _export.header()

        def fetch(
            conversation: Conversation, after_seq: int
        ) -> asyncio.Future[list[tuple[Message, Any]]]:
            # Up to its last_seq as its record says: a message appended meanwhile is left for
            # the next export, so the record's message_count holds for what follows it.
            op = partial(
                db.export_messages,
                conversation_id=conversation.id,
                after_seq=after_seq,
                up_to_seq=conversation.last_seq,
                limit=EXPORT_PAGE,
            )
            return asyncio.ensure_future(self._guard.run(op))

        after: uuid.UUID | None = None
        found = False
        while True:
            page = await self._guard.run(
                partial(
                    db.export_conversations,
                    after=after,
                    user=user,
                    conversation_id=one,
                    limit=EXPORT_PAGE,
                )
            )
            # One page of messages is always read ahead: its query runs in the database
            # while the page before it is turned into records (bench W13: 10,000
            # conversations, most of them one page, each a round trip).
            ahead = fetch(page[0][1], 0) if page else None
            try:
                for index, (owner, conversation) in enumerate(page):
                    found = True
                    yield _export.conversation_record(owner, conversation)
                    while ahead is not None:
                        rows = await ahead
                        more = len(rows) == EXPORT_PAGE
                        if more:
                            ahead = fetch(conversation, rows[-1][0].seq)
                        elif index + 1 < len(page):
                            ahead = fetch(page[index + 1][1], 0)
                        else:
                            ahead = None
                        await asyncio.sleep(0)  # the next query goes out now
                        for message, key in rows:
                            yield _export.message_record(message, key)
                        if not more:
                            break
            finally:
                if ahead is not None:
                    ahead.cancel()
            if len(page) < EXPORT_PAGE:
                break
            after = page[-1][1].id
        if one is not None and not found:
            raise NotFound(_NOT_FOUND)

    async def import_lines(
        self,
        lines: Iterable[str | bytes],
        *,
        progress: Callable[[Imported], None] | None = None,
    ) -> Imported:
        """Load an export (``export``'s records as JSONL lines, header first) back, keeping
        every id, key, timestamp, count and token count. A conversation whose id is stored
        already is skipped with its messages; each other one is written in one transaction,
        all of it or nothing. A fork whose parent comes later in the file is linked at the
        end. The first line that breaks the format or an append rule raises
        ``BadImportLine`` naming it: the conversations before it stay imported, so the import
        can be run again once it is fixed (or after an interruption) and adds only what is
        missing. Quotas do not apply: this is an operator's restore. ``progress`` is called
        as conversations are written, with the counts so far. Memory holds two chunks of
        messages (``IMPORT_CHUNK``) and the forks still waiting for their parent."""
        records = Records(lines, self._limits)
        records.header()
        count = tokenizer(self._settings.tokenizer).count
        return await load(
            self._db(), self._guard, records, counted=self._counted, count=count, progress=progress
        )

    async def purge_user(self, *, user: str) -> PurgedUser:
        """Delete everything of ``user``: the user row, conversations and messages (cascade)."""
        user = check_user(user)
        db = self._db()

        async def op() -> PurgedUser:
            conversations, messages = await db.purge_user(user=user)
            return PurgedUser(
                user=user, conversations_deleted=conversations, messages_deleted=messages
            )

        return await self._guard.run(op)

    # -- messages ------------------------------------------------------------------------

    async def append_message(
        self,
        *,
        user: str,
        conversation_id: str | uuid.UUID,
        role: str,
        content: str = "",
        tool_calls: list[dict[str, Any]] | None = None,
        tool_call_id: str | None = None,
        metadata: dict[str, Any] | None = None,
        idempotency_key: str | None = None,
        token_count: int | None = None,
        raw: dict[str, Any] | None = None,
    ) -> Message:
        """Append one message; it gets the next ``seq``.

        With ``idempotency_key``, appending again with the same key returns the message
        stored the first time and stores nothing; the same key with a different
        role/content/tool_calls raises ``Conflict``. ``token_count``, when given, is stored
        as it is; otherwise the store's tokenizer counts the content and tool_calls.
        """
        user = check_user(user)
        cid = parse_id(conversation_id)
        new = validate(
            NewMessage,
            self._limits,
            role=role,
            content=content,
            tool_calls=tool_calls,
            tool_call_id=tool_call_id,
            metadata=metadata,
            idempotency_key=idempotency_key,
            token_count=token_count,
            raw=raw,
        )
        # The id is chosen once per call: a retry after a lost reply finds its own row.
        batch = [(uuid.uuid4(), self._counted(new))]
        db = self._db()

        async def op() -> Message:
            (message,) = await append(
                db, user=user, conversation_id=cid, batch=batch, quota=self._quota
            )
            return message

        return await self._guard.run(op)

    async def append_messages(
        self,
        *,
        user: str,
        conversation_id: str | uuid.UUID,
        messages: Sequence[Mapping[str, Any]],
    ) -> list[Message]:
        """Append up to 1,000 messages as one atomic step, in order, with consecutive seqs:
        all are stored or none. Each is an object with ``append_message``'s fields; the first
        invalid one refuses the whole batch (its index in the message). With idempotency keys,
        a replayed batch returns the stored messages and stores nothing, one mixing stored
        keys and new messages stores the new ones; a key reused for a different message is a
        ``Conflict`` for the batch. Returns the messages as stored, in the batch's order."""
        user = check_user(user)
        cid = parse_id(conversation_id)
        news = validate_batch(messages, self._limits)
        batch = [(uuid.uuid4(), self._counted(new)) for new in news]
        db = self._db()

        async def op() -> list[Message]:
            return await append(db, user=user, conversation_id=cid, batch=batch, quota=self._quota)

        return await self._guard.run(op)

    def _counted(self, new: M) -> M:
        """``new`` with its token_count: the caller's, or the tokenizer's."""
        if new.token_count is not None:
            return new
        counted = tokenizer(self._settings.tokenizer).count_message(new.content, new.tool_calls)
        return new.model_copy(update={"token_count": counted})

    async def list_messages(
        self,
        *,
        user: str,
        conversation_id: str | uuid.UUID,
        limit: int = DEFAULT_MESSAGE_PAGE,
        before_seq: int | None = None,
        after_seq: int | None = None,
    ) -> MessagePage:
        """Messages in ascending ``seq``.

        No cursor: the latest ``limit``. ``before_seq=N``: the ``limit`` just before N.
        ``after_seq=N``: the ``limit`` just after N; fewer where they would pass the response
        budget (``CHATSTORE_MAX_RESPONSE_BYTES``). ``has_more`` says whether more exist in
        the direction being paged (older, or newer for ``after_seq``). Keyset on
        (conversation_id, seq): the cost does not grow with depth or store size.
        """
        user = check_user(user)
        cid = parse_id(conversation_id)
        query = validate(
            MessageQuery, self._limits, limit=limit, before_seq=before_seq, after_seq=after_seq
        )
        db = self._db()

        async def op() -> MessagePage:
            messages, has_more = await self._page(
                db, user, cid, query.limit, query.before_seq, query.after_seq
            )
            if not messages and not await db.conversation_exists(user=user, conversation_id=cid):
                raise NotFound(_NOT_FOUND)
            return trusted(MessagePage, {"messages": messages, "has_more": has_more})

        return await self._guard.run(op)

    async def search_messages(
        self,
        *,
        user: str,
        query: str,
        conversation_id: str | uuid.UUID | None = None,
        role: str | None = None,
        limit: int = DEFAULT_SEARCH_PAGE,
        cursor: str | None = None,
    ) -> SearchPage:
        """The user's messages matching ``query``, by relevance then newest first.

        Words are all required (case-insensitive, stemmed: ``trains`` finds ``train``);
        ``"a phrase"`` matches those words in a row; ``a or b`` wants either; ``-word``
        excludes. Any text is a valid query: nothing else in it is syntax. ``conversation_id``
        and ``role`` filter; ``next_cursor`` pages, at most ``MAX_SEARCH_DEPTH`` results deep.
        """
        user = check_user(user)
        cid = parse_id(conversation_id) if conversation_id is not None else None
        search = validate(
            SearchQuery, self._limits, query=query, role=role, limit=limit, cursor=cursor
        )
        terms = parse(search.query)
        # A cursor holds for the query and filters it was issued for, and only those.
        bound = "\x1f".join([search.query, str(cid or ""), search.role or ""])
        after, depth = None, 0
        if search.cursor is not None:
            after, depth = decode_search_cursor(user, bound, search.cursor)
        count = min(search.limit, MAX_SEARCH_DEPTH - depth)
        db = self._db()

        async def op() -> SearchPage:
            hits = []
            if terms.searchable and count > 0:
                hits = await db.search_messages(
                    user=user,
                    query=search.query,
                    terms=terms,
                    conversation_id=cid,
                    role=search.role,
                    count=count + 1,
                    after=after,
                )
            page, next_cursor = hits[:count], None
            if len(hits) > count and depth + count < MAX_SEARCH_DEPTH:
                last = page[-1]
                position = (last.rank, last.message.created_at, last.message.id)
                next_cursor = encode_search_cursor(user, bound, position, depth + count)
            if cid is not None and not page and depth == 0:
                if not await db.conversation_exists(user=user, conversation_id=cid):
                    raise NotFound(_NOT_FOUND)
            return trusted(SearchPage, {"results": page, "next_cursor": next_cursor})

        return await self._guard.run(op)

    async def _page(
        self,
        db: Backend,
        user: str,
        cid: uuid.UUID,
        limit: int,
        before_seq: int | None,
        after_seq: int | None,
    ) -> tuple[list[Message], bool]:
        """``limit`` messages in ascending seq, and whether more lie beyond them; fewer (and
        more do lie beyond) where they would pass the response budget, but never none when
        there is one. Read ``_PAGE_CHUNK`` rows at a time, then as many as the budget left
        looks like holding."""
        forward = after_seq is not None
        page: list[Message] = []
        size = 0
        count = min(limit + 1, _PAGE_CHUNK)
        more = False
        while True:
            window = Window(count=count, before_seq=before_seq, after_seq=after_seq)
            rows = await db.message_page(user=user, conversation_id=cid, window=window)
            for row in rows:
                if len(page) == limit:
                    more = True
                    break
                size += message_bytes(row)
                if page and size > self._page_bytes:
                    more = True
                    break
                page.append(row)
            if more or len(rows) < count:
                break
            if forward:
                after_seq = rows[-1].seq
            else:
                before_seq = rows[-1].seq
            room = (self._page_bytes - size) * len(page) // size + 1
            count = max(1, min(limit + 1 - len(page), room))
        if not forward:
            page.reverse()  # walked backwards from the cursor
        return page, more


@asynccontextmanager
async def open_store(settings: Settings | None = None) -> AsyncIterator[ConversationStore]:
    """``async with open_store(settings) as store`` — open, yield, close (the library's entry)."""
    store = ConversationStore(settings)
    await store.open()
    try:
        yield store
    finally:
        await store.close()
