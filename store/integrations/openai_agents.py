"""The OpenAI Agents SDK's ``Session`` on a chatstore store::

    from store.integrations.openai_agents import ChatstoreSession

    session = ChatstoreSession("session-1", user="alice", store=store)
    result = await Runner.run(agent, "Hi", session=session)

Every item the SDK adds is kept verbatim in the message's ``raw`` and handed back exactly so by
``get_items``. Beside it the message gets a role, content and tool calls derived from the item,
so the same history reads naturally over MCP (Claude Desktop) and in ``get_context``:

- a message item (``role`` user, assistant, system or developer; ``type`` "message" or none):
  that role (developer as system), its text parts joined, other parts named (``[input_image]``);
- ``function_call``: an assistant message with one tool call ``{id: call_id, name, arguments}``;
- ``function_call_output``: a tool message answering ``call_id``, the output as its content;
- anything else (``reasoning``, hosted tool calls, …): an assistant message with its summary or
  text, or ``[its type]``.

A message written by someone else (over MCP) has no ``raw``; ``get_items`` then rebuilds input
items from it (an easy input message, ``function_call`` items for its tool calls, a
``function_call_output`` for a tool message). ``limit`` counts messages.
"""

from __future__ import annotations

import json
from typing import Any, cast

try:
    from agents.items import TResponseInputItem
    from agents.memory.session_settings import (
        SessionSettings,
        coerce_session_settings,
        resolve_session_limit,
    )
except ImportError as exc:  # pragma: no cover - exercised in a subprocess test
    raise ImportError(
        "store.integrations.openai_agents needs the OpenAI Agents SDK: "
        "pip install 'chatstore[agents]'"
    ) from exc

from store.integrations._keyed import KeyedConversation
from store.schemas import Message, tool_call_name
from store.store import ConversationStore

__all__ = ["ChatstoreSession", "item_message", "message_items"]

_ROLES = {"user": "user", "assistant": "assistant", "system": "system", "developer": "system"}
#: Content parts whose text is the message's words.
_TEXT_PARTS = ("input_text", "output_text", "text", "summary_text", "reasoning_text")


class ChatstoreSession:
    """An Agents SDK session (the SDK's ``Session`` protocol) kept in a chatstore store: the
    conversation whose key is ``session_id``, of ``user``. ``store`` is an open
    ``ConversationStore``; ``session_settings`` (``SessionSettings(limit=…)``) sets how many
    items ``get_items`` returns by default."""

    session_settings: SessionSettings | None = None

    def __init__(
        self,
        session_id: str,
        *,
        user: str,
        store: ConversationStore,
        session_settings: SessionSettings | dict[str, Any] | None = None,
    ) -> None:
        self.session_id = session_id
        self.session_settings = (
            coerce_session_settings(session_settings)
            if session_settings is not None
            else SessionSettings()
        )
        self._conversation = KeyedConversation(store, user=user, key=session_id)

    async def get_items(self, limit: int | None = None) -> list[TResponseInputItem]:
        """The latest ``limit`` items (all when None and the settings set no limit), oldest
        first, exactly as they were added."""
        limit = resolve_session_limit(limit, self.session_settings)
        messages = await self._conversation.messages(limit)
        return [item for message in messages for item in message_items(message)]

    async def add_items(self, items: list[TResponseInputItem]) -> None:
        """Append ``items`` in order, atomically (up to 1,000 at a time)."""
        if items:
            await self._conversation.append([item_message(item) for item in items])

    async def pop_item(self) -> TResponseInputItem | None:
        """Remove and return the latest item (None when the session is empty)."""
        message = await self._conversation.pop()
        if message is None:
            return None
        return message_items(message)[-1]

    async def clear_session(self) -> None:
        """Remove every item; the conversation stays (empty), under its key."""
        await self._conversation.clear()


def _plain(item: Any) -> dict[str, Any]:
    if isinstance(item, dict):
        return item
    dump = getattr(item, "model_dump", None)  # an SDK/openai pydantic object
    if callable(dump):
        return cast(dict[str, Any], dump(mode="json", exclude_unset=True))
    raise TypeError(f"a session item must be a dict, not {type(item).__name__}")


def _text(value: Any) -> str:
    """The words of an item's content: a string, or the text of its parts (others named)."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        parts = []
        for part in value:
            if isinstance(part, str):
                parts.append(part)
            elif isinstance(part, dict):
                kind = part.get("type")
                text = part.get("text", part.get("refusal"))
                if kind in _TEXT_PARTS or kind == "refusal" or (kind is None and text):
                    parts.append(str(text or ""))
                else:
                    parts.append(f"[{kind or 'part'}]")
        return "\n".join(part for part in parts if part)
    return json.dumps(value, ensure_ascii=False)


def item_message(item: TResponseInputItem | dict[str, Any]) -> dict[str, Any]:
    """The chatstore message for one Responses input item, the item itself as ``raw``."""
    raw = _plain(item)
    kind, role = raw.get("type"), raw.get("role")
    if kind == "function_call" and raw.get("call_id") and raw.get("name"):
        call = {"id": raw["call_id"], "name": raw["name"], "arguments": raw.get("arguments")}
        return {"role": "assistant", "content": "", "tool_calls": [call], "raw": raw}
    if kind == "function_call_output" and raw.get("call_id"):
        output = _text(raw.get("output"))
        return {
            "role": "tool",
            "tool_call_id": raw["call_id"],
            "content": output if output.strip() else "[no output]",
            "raw": raw,
        }
    if kind in (None, "message") and role in _ROLES:
        text = _text(raw.get("content"))
        return {
            "role": _ROLES[role],
            "content": text if text.strip() else f"[{role} message]",
            "raw": raw,
        }
    text = _text(raw.get("summary") or raw.get("content"))
    return {
        "role": "assistant",
        "content": text if text.strip() else f"[{kind or 'item'}]",
        "raw": raw,
    }


def message_items(message: Message) -> list[TResponseInputItem]:
    """The items a message stands for: its ``raw`` as stored, or, for a message written
    without one (over MCP), input items rebuilt from its role, content and tool calls."""
    if message.raw is not None:
        return [cast(TResponseInputItem, message.raw)]
    if message.role == "tool":
        output = {
            "type": "function_call_output",
            "call_id": message.tool_call_id,
            "output": message.content,
        }
        return [cast(TResponseInputItem, output)]
    items: list[dict[str, Any]] = []
    if message.content.strip():
        items.append({"role": message.role, "content": message.content})
    for call in message.tool_calls or []:
        function = call.get("function")
        arguments = (
            function.get("arguments") if isinstance(function, dict) else call.get("arguments")
        )
        items.append(
            {
                "type": "function_call",
                "call_id": call["id"],
                "name": tool_call_name(call),
                "arguments": arguments
                if isinstance(arguments, str)
                else json.dumps(arguments or {}),
            }
        )
    return [cast(TResponseInputItem, item) for item in items]
