"""LangChain's ``BaseChatMessageHistory`` on a chatstore store::

    from store.integrations.langchain import ChatstoreChatMessageHistory

    history = ChatstoreChatMessageHistory("session-1", user="alice", store=store)
    chain = RunnableWithMessageHistory(runnable, lambda sid: ChatstoreChatMessageHistory(
        sid, user="alice", store=store))

Each message is kept whole in ``raw`` (LangChain's own ``message_to_dict``) and comes back
equal through ``messages_from_dict``, whatever its type; beside it the message gets the role,
text and tool calls chatstore shows over MCP (human → user, ai → assistant with its
``tool_calls`` as ``{id, name, arguments}``, tool → tool, system → system).

``store`` is either an open ``ConversationStore`` (the async methods then run on it, in the
caller's event loop) or ``Settings``: the history then opens its own store on a private event
loop in a thread of its own, so the sync methods work from plain code too; ``close()`` closes
it.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Coroutine, Sequence
from concurrent.futures import Future
from typing import Any, TypeVar

try:
    from langchain_core.chat_history import BaseChatMessageHistory
    from langchain_core.messages import (
        AIMessage,
        BaseMessage,
        HumanMessage,
        SystemMessage,
        ToolMessage,
        message_to_dict,
        messages_from_dict,
    )
except ImportError as exc:  # pragma: no cover - exercised in a subprocess test
    raise ImportError(
        "store.integrations.langchain needs langchain-core: pip install 'chatstore[langchain]'"
    ) from exc

from store.contract import ROLES
from store.integrations._keyed import KeyedConversation
from store.schemas import Message, tool_call_name
from store.settings import Settings
from store.store import ConversationStore

__all__ = ["ChatstoreChatMessageHistory", "from_message", "to_message"]

T = TypeVar("T")

#: LangChain message types and the chatstore role each is shown as.
_ROLES = {
    "human": "user",
    "ai": "assistant",
    "AIMessageChunk": "assistant",
    "system": "system",
    "developer": "system",
    "tool": "tool",
    "function": "tool",
}


class ChatstoreChatMessageHistory(BaseChatMessageHistory):
    """The chat history of ``session_id`` (the conversation with that key) of ``user``."""

    def __init__(self, session_id: str, *, user: str, store: ConversationStore | Settings) -> None:
        self.session_id, self.user = session_id, user
        self._private: _PrivateLoop | None = None
        if isinstance(store, Settings):
            self._private = _PrivateLoop(store)
            self._conversation = KeyedConversation(self._private.store, user=user, key=session_id)
        else:
            self._conversation = KeyedConversation(store, user=user, key=session_id)

    # -- async: on the caller's loop (an open store), or on the private one --------------

    async def aget_messages(self) -> list[BaseMessage]:
        return await self._async(self._messages())

    async def aadd_messages(self, messages: Sequence[BaseMessage]) -> None:
        await self._async(self._add(messages))

    async def aclear(self) -> None:
        await self._async(self._conversation.clear())

    # -- sync: only with a private loop (store=Settings(...)) ----------------------------

    @property
    def messages(self) -> list[BaseMessage]:  # type: ignore[override]
        return self._sync(self._messages())

    def add_messages(self, messages: Sequence[BaseMessage]) -> None:
        self._sync(self._add(messages))

    def clear(self) -> None:
        self._sync(self._conversation.clear())

    def close(self) -> None:
        """Close the private store and its loop (nothing to do on a store given open)."""
        if self._private is not None:
            self._private.close()

    # -- plumbing ------------------------------------------------------------------------

    async def _messages(self) -> list[BaseMessage]:
        return [to_message(message) for message in await self._conversation.messages()]

    async def _add(self, messages: Sequence[BaseMessage]) -> None:
        if messages:
            await self._conversation.append([from_message(message) for message in messages])

    async def _async(self, work: Coroutine[Any, Any, T]) -> T:
        if self._private is None:
            return await work
        return await asyncio.wrap_future(self._private.submit(work))

    def _sync(self, work: Coroutine[Any, Any, T]) -> T:
        if self._private is None:
            work.close()
            raise RuntimeError(
                "this history was given an open store, whose event loop cannot be blocked: use "
                "the async methods (ainvoke, aget_messages …), or pass store=Settings(...)"
            )
        return self._private.submit(work).result()


class _PrivateLoop:
    """An event loop in a daemon thread, holding a store opened on first use."""

    def __init__(self, settings: Settings) -> None:
        self.store = ConversationStore(settings)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="chatstore-history", daemon=True
        )
        self._thread.start()
        self._opened = False
        self._lock = threading.Lock()

    def submit(self, work: Coroutine[Any, Any, T]) -> Future[T]:
        with self._lock:
            if self._loop.is_closed():
                work.close()
                raise RuntimeError("this history was closed")
            if not self._opened:
                asyncio.run_coroutine_threadsafe(self.store.open(), self._loop).result()
                self._opened = True
        return asyncio.run_coroutine_threadsafe(work, self._loop)

    def close(self) -> None:
        with self._lock:
            if self._loop.is_closed():
                return
            if self._opened:
                asyncio.run_coroutine_threadsafe(self.store.close(), self._loop).result()
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join()
            self._loop.close()


def _text(content: Any) -> str:
    """A message's words: its string content, or the text of its content blocks."""
    if isinstance(content, str):
        return content
    parts = []
    for block in content or []:
        if isinstance(block, str):
            parts.append(block)
        elif isinstance(block, dict):
            kind = block.get("type")
            parts.append(str(block["text"]) if "text" in block else f"[{kind or 'block'}]")
    return "\n".join(part for part in parts if part)


def from_message(message: BaseMessage) -> dict[str, Any]:
    """The chatstore message for a LangChain message, the whole message as ``raw``."""
    raw = json.loads(json.dumps(message_to_dict(message), default=str))
    kind = message.type
    role = _ROLES.get(kind)
    if role is None:  # a ChatMessage with a role of its own
        given = getattr(message, "role", None)
        role = given if given in ROLES else "user"
    text = _text(message.content)
    fields: dict[str, Any] = {"role": role, "content": text, "raw": raw}
    if role == "tool":
        fields["tool_call_id"] = getattr(message, "tool_call_id", None) or message.name or "tool"
    tool_calls = getattr(message, "tool_calls", None) if role == "assistant" else None
    if tool_calls:
        fields["tool_calls"] = [
            {"id": call.get("id") or f"call_{n}", "name": call["name"], "arguments": call["args"]}
            for n, call in enumerate(tool_calls)
        ]
    elif not text.strip():
        fields["content"] = f"[{kind} message]"
    return fields


def to_message(message: Message) -> BaseMessage:
    """The LangChain message a chatstore message holds (its ``raw``), or, for one written
    without it (over MCP), the message its role, content and tool calls describe."""
    raw = message.raw
    if raw is not None and "type" in raw and "data" in raw:
        return messages_from_dict([raw])[0]
    if message.role == "tool":
        return ToolMessage(content=message.content, tool_call_id=message.tool_call_id or "")
    if message.role == "system":
        return SystemMessage(content=message.content)
    if message.role == "user":
        return HumanMessage(content=message.content)
    calls = []
    for call in message.tool_calls or []:
        function = call.get("function")
        arguments = (
            function.get("arguments") if isinstance(function, dict) else call.get("arguments")
        )
        if isinstance(arguments, str):
            try:
                arguments = json.loads(arguments)
            except ValueError:
                arguments = {"arguments": arguments}
        calls.append(
            {
                "id": call["id"],
                "name": str(tool_call_name(call)),
                "args": arguments if isinstance(arguments, dict) else {},
            }
        )
    return AIMessage(content=message.content, tool_calls=calls)
