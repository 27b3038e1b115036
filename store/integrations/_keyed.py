"""What every adapter does the same way: a framework's session id names one conversation of
the user (``key``), found or created on first use and found again if it was deleted; history
read in pages, oldest first; the latest messages taken back without taking a newer one."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TypeVar
from uuid import UUID

from store.contract import MAX_BATCH_MESSAGES, MAX_MESSAGE_PAGE
from store.errors import Conflict, NotFound
from store.schemas import Message
from store.store import ConversationStore

__all__ = ["KeyedConversation"]

T = TypeVar("T")


class KeyedConversation:
    """The conversation ``key`` of ``user`` in ``store``, created on first use."""

    def __init__(self, store: ConversationStore, *, user: str, key: str) -> None:
        self.store, self.user, self.key = store, user, key
        self._id: UUID | None = None

    async def id(self) -> UUID:
        if self._id is None:
            created = await self.store.create_conversation(user=self.user, key=self.key)
            self._id = created.id
        return self._id

    async def run(self, call: Callable[[UUID], Awaitable[T]]) -> T:
        """``call`` with the conversation's id; once more with a new one if the conversation
        was deleted meanwhile (over MCP, say): the session then starts again, empty."""
        try:
            return await call(await self.id())
        except NotFound:
            self._id = None
            return await call(await self.id())

    async def append(self, messages: list[dict[str, object]]) -> None:
        """Append in order, ``MAX_BATCH_MESSAGES`` at a time (each batch atomic)."""
        for start in range(0, len(messages), MAX_BATCH_MESSAGES):
            chunk = messages[start : start + MAX_BATCH_MESSAGES]

            async def append(cid: UUID, chunk: list[dict[str, object]] = chunk) -> None:
                await self.store.append_messages(
                    user=self.user, conversation_id=cid, messages=chunk
                )

            await self.run(append)

    async def messages(self, limit: int | None = None) -> list[Message]:
        """The latest ``limit`` messages (all of them when None), oldest first."""
        if limit is not None and limit <= 0:
            return []

        async def read(cid: UUID) -> list[Message]:
            if limit is None:  # forwards from the start, a page at a time
                out: list[Message] = []
                after = 0
                while True:
                    page = await self.store.list_messages(
                        user=self.user, conversation_id=cid, limit=MAX_MESSAGE_PAGE, after_seq=after
                    )
                    out += page.messages
                    if not page.has_more or not page.messages:
                        return out
                    after = page.messages[-1].seq
            chunks: list[list[Message]] = []
            left, before = limit, None
            while left > 0:
                page = await self.store.list_messages(
                    user=self.user,
                    conversation_id=cid,
                    limit=min(left, MAX_MESSAGE_PAGE),
                    before_seq=before,
                )
                chunks.append(page.messages)
                left -= len(page.messages)
                if not page.has_more or not page.messages:
                    break
                before = page.messages[0].seq
            return [message for chunk in reversed(chunks) for message in chunk]

        return await self.run(read)

    async def pop(self) -> Message | None:
        """Delete and return the latest message (None when there is none). A message appended
        between reading it and deleting it is never taken: the deletion is conditional on
        last_seq, and is tried again on the new latest message."""

        async def pop(cid: UUID) -> Message | None:
            while True:
                page = await self.store.list_messages(user=self.user, conversation_id=cid, limit=1)
                if not page.messages:
                    return None
                latest = page.messages[0]
                try:
                    await self.store.truncate_messages(
                        user=self.user,
                        conversation_id=cid,
                        after_seq=latest.seq - 1,
                        if_last_seq=latest.seq,
                    )
                except Conflict:
                    continue
                return latest

        return await self.run(pop)

    async def clear(self) -> None:
        """Delete every message; the conversation (and its key) stays."""

        async def clear(cid: UUID) -> None:
            await self.store.truncate_messages(user=self.user, conversation_id=cid, after_seq=0)

        await self.run(clear)
