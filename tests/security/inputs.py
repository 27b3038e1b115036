"""The bad-input matrix: every argument of every tool, wrong.

``CASES`` are (id, tool, arguments, expected code): wrong types, out-of-bounds values, oversize
text and JSON, NUL characters (in text and inside JSON), malformed, unknown and foreign ids,
tampered, truncated and foreign cursors, both cursors at once, unknown roles, broken tool-call
rules, undeclared arguments and an idempotency conflict. Arguments are built from a ``Ctx``
that ``prepare`` makes for an acting user and another user.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from store import ConversationStore

__all__ = ["BAD", "CASES", "KEY", "TC", "Args", "Ctx", "prepare"]


@dataclass(frozen=True)
class Ctx:
    """What a case may refer to: the acting user's conversation and cursors, and another
    user's conversation and cursor."""

    conversation_id: str
    cursor: str
    foreign_cursor: str
    foreign_conversation_id: str


Args = Callable[[Ctx], dict[str, Any]]


def _nest(depth: int) -> dict[str, Any]:
    value: dict[str, Any] = {"leaf": 1}
    for _ in range(depth):
        value = {"a": value}
    return value


def _msg(**extra: Any) -> Args:
    """append_message arguments for the user's conversation, with ``extra`` merged in."""

    def build(ctx: Ctx) -> dict[str, Any]:
        args: dict[str, Any] = {
            "conversation_id": ctx.conversation_id,
            "role": "user",
            "content": "hello",
        }
        for key, value in extra.items():
            if value is _MISSING:
                args.pop(key, None)
            else:
                args[key] = value
        return args

    return build


def _page(**extra: Any) -> Args:
    return lambda ctx: {"conversation_id": ctx.conversation_id, **extra}


def _unknown() -> Args:
    """Arguments naming a conversation nobody has (a new random id each time)."""
    return lambda ctx: {"conversation_id": str(uuid.uuid4())}


def _theirs(**extra: Any) -> Args:
    """Arguments naming the other user's conversation."""
    return lambda ctx: {"conversation_id": ctx.foreign_conversation_id, **extra}


_MISSING = object()
TC = [{"id": "call-1", "name": "search"}]
BAD = "invalid_argument"
#: The idempotency key of the first message in both users' conversations.
KEY = "first-key"

#: (id, tool, arguments, expected code)
CASES: list[tuple[str, str, Args, str]] = [
    # create_conversation
    ("create-title-not-string", "create_conversation", lambda c: {"title": 5}, BAD),
    ("create-title-oversize", "create_conversation", lambda c: {"title": "t" * 201}, BAD),
    ("create-title-nul", "create_conversation", lambda c: {"title": "a\x00b"}, BAD),
    ("create-metadata-list", "create_conversation", lambda c: {"metadata": [1]}, BAD),
    # (A string holding a JSON object is parsed by the SDK first, for clients that send
    # stringified JSON; text that is not JSON is refused.)
    ("create-metadata-string", "create_conversation", lambda c: {"metadata": "not json"}, BAD),
    ("create-metadata-json-list", "create_conversation", lambda c: {"metadata": "[1, 2]"}, BAD),
    (
        "create-metadata-oversize",
        "create_conversation",
        lambda c: {"metadata": {"k": "v" * 17_000}},
        BAD,
    ),
    (
        "create-metadata-nul-value",
        "create_conversation",
        lambda c: {"metadata": {"k": "\x00"}},
        BAD,
    ),
    ("create-metadata-nul-key", "create_conversation", lambda c: {"metadata": {"\x00k": 1}}, BAD),
    (
        "create-metadata-nested-nul",
        "create_conversation",
        lambda c: {"metadata": {"a": [{"b": ["ok", "x\x00y"]}]}},
        BAD,
    ),
    ("create-metadata-too-deep", "create_conversation", lambda c: {"metadata": _nest(70)}, BAD),
    # Undeclared arguments, a `user` above all: nothing a model sends picks the user.
    ("create-extra-user-argument", "create_conversation", lambda c: {"user": "alice"}, BAD),
    ("append-extra-user-argument", "append_message", _msg(user="alice"), BAD),
    ("list-extra-misspelt-cursor", "list_messages", _page(befor_seq=2), BAD),
    # append_message: the conversation id
    ("append-id-not-uuid", "append_message", _msg(conversation_id="not-a-uuid"), BAD),
    ("append-id-empty", "append_message", _msg(conversation_id=""), BAD),
    ("append-id-integer", "append_message", _msg(conversation_id=42), BAD),
    ("append-id-nul", "append_message", _msg(conversation_id=f"{uuid.uuid4()}\x00"), BAD),
    ("append-id-sql", "append_message", _msg(conversation_id="' OR '1'='1"), BAD),
    ("append-id-missing", "append_message", _msg(conversation_id=_MISSING), BAD),
    ("append-id-unknown", "append_message", _msg(conversation_id=str(uuid.uuid4())), "not_found"),
    ("append-id-foreign", "append_message", _theirs(role="user", content="hi"), "not_found"),
    (
        "append-key-replay-foreign",
        "append_message",
        _theirs(role="user", content="theirs", idempotency_key=KEY),
        "not_found",
    ),
    # append_message: role and content
    ("append-role-unknown", "append_message", _msg(role="admin"), BAD),
    ("append-role-empty", "append_message", _msg(role=""), BAD),
    ("append-role-uppercase", "append_message", _msg(role="USER"), BAD),
    ("append-role-missing", "append_message", _msg(role=_MISSING), BAD),
    ("append-content-missing", "append_message", _msg(content=_MISSING), BAD),
    ("append-content-empty", "append_message", _msg(content=""), BAD),
    ("append-content-whitespace", "append_message", _msg(content=" \n\t\u3000 "), BAD),
    ("append-content-oversize", "append_message", _msg(content="x" * 100_001), BAD),
    ("append-content-nul", "append_message", _msg(content="a\x00b"), BAD),
    ("append-content-not-string", "append_message", _msg(content=123), BAD),
    ("append-content-object", "append_message", _msg(content={"text": "hi"}), BAD),
    (
        "append-assistant-empty-without-tool-calls",
        "append_message",
        _msg(role="assistant", content=""),
        BAD,
    ),
    # append_message: tool-call rules
    ("append-tool-without-tool-call-id", "append_message", _msg(role="tool"), BAD),
    ("append-tool-call-id-on-user", "append_message", _msg(tool_call_id="call-1"), BAD),
    ("append-tool-calls-on-user", "append_message", _msg(tool_calls=TC), BAD),
    (
        "append-tool-calls-on-tool",
        "append_message",
        _msg(role="tool", tool_call_id="c", tool_calls=TC),
        BAD,
    ),
    (
        "append-tool-calls-not-list",
        "append_message",
        _msg(role="assistant", tool_calls={"id": "a", "name": "b"}),
        BAD,
    ),
    (
        "append-tool-calls-item-not-object",
        "append_message",
        _msg(role="assistant", tool_calls=[1]),
        BAD,
    ),
    (
        "append-tool-calls-missing-id",
        "append_message",
        _msg(role="assistant", tool_calls=[{"name": "search"}]),
        BAD,
    ),
    (
        "append-tool-calls-empty-name",
        "append_message",
        _msg(role="assistant", tool_calls=[{"id": "a", "name": " "}]),
        BAD,
    ),
    (
        "append-tool-calls-id-not-string",
        "append_message",
        _msg(role="assistant", tool_calls=[{"id": 1, "name": "search"}]),
        BAD,
    ),
    (
        "append-tool-calls-nul-in-arguments",
        "append_message",
        _msg(role="assistant", tool_calls=[{**TC[0], "arguments": {"q": "a\x00"}}]),
        BAD,
    ),
    (
        "append-tool-calls-oversize",
        "append_message",
        _msg(role="assistant", tool_calls=[{**TC[0], "arguments": "x" * 70_000}]),
        BAD,
    ),
    (
        "append-tool-calls-too-deep",
        "append_message",
        _msg(role="assistant", tool_calls=[{**TC[0], "arguments": _nest(70)}]),
        BAD,
    ),
    ("append-tool-call-id-nul", "append_message", _msg(role="tool", tool_call_id="c\x00"), BAD),
    ("append-tool-call-id-blank", "append_message", _msg(role="tool", tool_call_id="  "), BAD),
    (
        "append-tool-call-id-oversize",
        "append_message",
        _msg(role="tool", tool_call_id="c" * 201),
        BAD,
    ),
    # append_message: metadata and idempotency key
    ("append-metadata-list", "append_message", _msg(metadata=[1, 2]), BAD),
    ("append-metadata-oversize", "append_message", _msg(metadata={"k": "v" * 17_000}), BAD),
    ("append-metadata-nul-key", "append_message", _msg(metadata={"k\x00": "v"}), BAD),
    ("append-metadata-nul-deep", "append_message", _msg(metadata={"a": {"b": ["\x00"]}}), BAD),
    ("append-key-empty", "append_message", _msg(idempotency_key=""), BAD),
    ("append-key-oversize", "append_message", _msg(idempotency_key="k" * 201), BAD),
    ("append-key-nul", "append_message", _msg(idempotency_key="k\x00"), BAD),
    ("append-key-not-string", "append_message", _msg(idempotency_key=7), BAD),
    (
        "append-key-conflict",
        "append_message",
        _msg(content="not the first", idempotency_key=KEY),
        "conflict",
    ),
    # list_messages
    ("list-both-cursors", "list_messages", _page(before_seq=5, after_seq=1), BAD),
    ("list-limit-zero", "list_messages", _page(limit=0), BAD),
    ("list-limit-negative", "list_messages", _page(limit=-1), BAD),
    ("list-limit-201", "list_messages", _page(limit=201), BAD),
    ("list-limit-huge", "list_messages", _page(limit=10**12), BAD),
    ("list-limit-fraction", "list_messages", _page(limit=1.5), BAD),
    ("list-limit-word", "list_messages", _page(limit="ten"), BAD),
    ("list-before-zero", "list_messages", _page(before_seq=0), BAD),
    ("list-before-negative", "list_messages", _page(before_seq=-5), BAD),
    ("list-after-negative", "list_messages", _page(after_seq=-1), BAD),
    ("list-before-beyond-bigint", "list_messages", _page(before_seq=2**63), BAD),
    ("list-after-huge", "list_messages", _page(after_seq=10**30), BAD),
    ("list-id-not-uuid", "list_messages", lambda c: {"conversation_id": "xyz"}, BAD),
    ("list-id-unknown", "list_messages", _unknown(), "not_found"),
    ("list-id-foreign", "list_messages", _theirs(), "not_found"),
    # list_conversations
    ("conversations-limit-zero", "list_conversations", lambda c: {"limit": 0}, BAD),
    ("conversations-limit-101", "list_conversations", lambda c: {"limit": 101}, BAD),
    ("conversations-limit-negative", "list_conversations", lambda c: {"limit": -3}, BAD),
    ("conversations-cursor-garbage", "list_conversations", lambda c: {"cursor": "abc"}, BAD),
    ("conversations-cursor-empty", "list_conversations", lambda c: {"cursor": ""}, BAD),
    (
        "conversations-cursor-tampered",
        "list_conversations",
        lambda c: {"cursor": c.cursor[:-3] + ("AAA" if c.cursor[-3:] != "AAA" else "BBB")},
        BAD,
    ),
    (
        "conversations-cursor-truncated",
        "list_conversations",
        lambda c: {"cursor": c.cursor[: len(c.cursor) // 2]},
        BAD,
    ),
    (
        "conversations-cursor-foreign",
        "list_conversations",
        lambda c: {"cursor": c.foreign_cursor},
        BAD,
    ),
    (
        "conversations-cursor-nul",
        "list_conversations",
        lambda c: {"cursor": c.cursor + "\x00"},
        BAD,
    ),
    ("conversations-cursor-huge", "list_conversations", lambda c: {"cursor": "A" * 100_000}, BAD),
    ("conversations-cursor-sql", "list_conversations", lambda c: {"cursor": "1' OR '1'='1"}, BAD),
    ("conversations-cursor-number", "list_conversations", lambda c: {"cursor": 12345}, BAD),
    # get_conversation
    ("get-recent-negative", "get_conversation", _page(recent_messages=-1), BAD),
    ("get-recent-201", "get_conversation", _page(recent_messages=201), BAD),
    ("get-recent-huge", "get_conversation", _page(recent_messages=2**70), BAD),
    ("get-id-not-uuid", "get_conversation", lambda c: {"conversation_id": "123"}, BAD),
    ("get-id-unknown", "get_conversation", _unknown(), "not_found"),
    ("get-id-foreign", "get_conversation", _theirs(recent_messages=5), "not_found"),
    # delete_conversation
    ("delete-id-not-uuid", "delete_conversation", lambda c: {"conversation_id": "nope"}, BAD),
    ("delete-id-nul", "delete_conversation", lambda c: {"conversation_id": "\x00"}, BAD),
    (
        "delete-id-list",
        "delete_conversation",
        lambda c: {"conversation_id": [c.conversation_id]},
        BAD,
    ),
    ("delete-id-unknown", "delete_conversation", _unknown(), "not_found"),
    ("delete-id-foreign", "delete_conversation", _theirs(), "not_found"),
]


async def _conversations(store: ConversationStore, user: str, title: str) -> tuple[str, str]:
    """A conversation titled ``title`` whose first message (``title``'s words) has the
    idempotency key ``KEY``, then an untitled one; the first's id and a page-1 cursor."""
    conversation = await store.create_conversation(user=user, title=title)
    await store.create_conversation(user=user)
    await store.append_message(
        user=user,
        conversation_id=conversation.id,
        role="user",
        content=f"{title} first",
        idempotency_key=KEY,
    )
    page = await store.list_conversations(user=user, limit=1)
    assert page.next_cursor
    return str(conversation.id), page.next_cursor


async def prepare(store: ConversationStore, user: str, other: str) -> tuple[Ctx, list[str]]:
    """What the cases refer to, made through ``store``; returns what must not leak to ``user``.

    ``user`` and ``other`` each get a titled conversation whose first message has the
    idempotency key ``KEY``, and an untitled one (so each has a ``list_conversations`` cursor).
    """
    mine, cursor = await _conversations(store, user, "mine")
    theirs, foreign_cursor = await _conversations(store, other, "other's")
    return Ctx(mine, cursor, foreign_cursor, theirs), [other, theirs, "other's"]
