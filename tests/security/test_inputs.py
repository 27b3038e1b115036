"""Bad input, table-driven, through a real MCP client in-process on both backends.

Every argument of every tool gets wrong types, out-of-bounds values, oversize text and JSON,
NUL characters (in text and inside JSON), malformed and foreign ids and cursors, both cursors
at once, unknown roles and broken tool-call rules. Each case asserts the contract's error code
and that *no row was written*: the user's conversations and messages are counted with SQL
before and after, and the conversation's counters are unchanged. Unpaired surrogates cannot be
sent by the SDK client (it cannot encode them), so they are tried at the store layer on both
backends. SQL-looking text in every field is stored verbatim and read back, never executed.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from mcp import Client

from mcp_server.server import create_server
from store import ConversationStore, InvalidArgument, Settings
from tests.leaks import clean
from tests.rawdb import RawDB
from tests.support import error_code, error_text


@dataclass(frozen=True)
class Ctx:
    """What a case may refer to: the acting user's conversation and cursors."""

    conversation_id: str
    cursor: str
    foreign_cursor: str


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


_MISSING = object()
TC = [{"id": "call-1", "name": "search"}]
BAD = "invalid_argument"

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
    (
        "list-id-unknown",
        "list_messages",
        lambda c: {"conversation_id": str(uuid.uuid4())},
        "not_found",
    ),
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
    (
        "get-id-unknown",
        "get_conversation",
        lambda c: {"conversation_id": str(uuid.uuid4())},
        "not_found",
    ),
    # delete_conversation
    ("delete-id-not-uuid", "delete_conversation", lambda c: {"conversation_id": "nope"}, BAD),
    ("delete-id-nul", "delete_conversation", lambda c: {"conversation_id": "\x00"}, BAD),
    (
        "delete-id-list",
        "delete_conversation",
        lambda c: {"conversation_id": [c.conversation_id]},
        BAD,
    ),
    (
        "delete-id-unknown",
        "delete_conversation",
        lambda c: {"conversation_id": str(uuid.uuid4())},
        "not_found",
    ),
]


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def matrix_settings(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Settings:
    """One database per backend for the whole module (each case acts as a fresh user)."""
    if request.param == "postgres":
        url = request.getfixturevalue("postgres_url")
        return Settings(database_url=url)
    folder: Path = tmp_path_factory.mktemp("inputs")
    return Settings(database_url=f"sqlite://{folder / 'inputs.sqlite3'}", data_dir=folder)


@pytest.fixture(scope="module")
async def matrix_store(matrix_settings: Settings) -> AsyncIterator[ConversationStore]:
    async with ConversationStore(matrix_settings) as store:
        yield store


async def _prepare(store: ConversationStore, user: str) -> tuple[Ctx, list[str]]:
    """The user's conversation (one message) and cursors; returns what must not leak."""
    conversation = await store.create_conversation(user=user, title="mine")
    await store.create_conversation(user=user)
    await store.append_message(
        user=user, conversation_id=conversation.id, role="user", content="first"
    )
    page = await store.list_conversations(user=user, limit=1)
    other = f"other-{uuid.uuid4().hex[:8]}"
    other_conversation = await store.create_conversation(user=other, title="other's")
    await store.create_conversation(user=other)
    foreign = await store.list_conversations(user=other, limit=1)
    assert page.next_cursor and foreign.next_cursor
    ctx = Ctx(str(conversation.id), page.next_cursor, foreign.next_cursor)
    return ctx, [other, str(other_conversation.id), "other's"]


@pytest.mark.parametrize(
    ("tool", "make", "code"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
async def test_bad_input_is_refused_and_writes_nothing(
    tool: str, make: Args, code: str, matrix_store: ConversationStore, matrix_settings: Settings
) -> None:
    user = f"input-{uuid.uuid4().hex[:10]}"
    ctx, secrets = await _prepare(matrix_store, user)
    db = await RawDB.connect(matrix_settings)
    try:
        rows_before = await db.rows_of(user)
        facts_before = [(f.id, f.message_count, f.last_seq) for f in await db.facts([user])]
        server = create_server(matrix_settings, stdio_user=user, store=matrix_store)
        async with Client(server) as client:
            result = await client.call_tool(tool, make(ctx))
        assert result.is_error, f"accepted: {result.structured_content}"
        assert error_code(result) == code, error_text(result)
        clean(error_text(result), foreign=secrets)
        assert await db.rows_of(user) == rows_before, "a refused call wrote a row"
        facts_after = [(f.id, f.message_count, f.last_seq) for f in await db.facts([user])]
        assert sorted(facts_after) == sorted(facts_before)
        assert await db.violations([user]) == []
    finally:
        await db.close()


def test_the_matrix_is_large_enough() -> None:
    assert len(CASES) >= 40
    assert len({c[0] for c in CASES}) == len(CASES)


# -- unpaired surrogates: the store layer, both backends ------------------------------------

LONE = "\ud800"

SURROGATE_CASES: list[tuple[str, str, dict[str, Any]]] = [
    ("title", "create", {"title": f"a{LONE}b"}),
    ("metadata-value", "create", {"metadata": {"k": LONE}}),
    ("metadata-key", "create", {"metadata": {f"k{LONE}": 1}}),
    ("content-high", "append", {"content": f"x{LONE}"}),
    ("content-low", "append", {"content": "lone \udfff low"}),
    ("content-reversed-pair", "append", {"content": "\udc00\ud800"}),
    ("message-metadata", "append", {"metadata": {"deep": [{"x": LONE}]}}),
    ("tool-calls-value", "append", {"role": "assistant", "tool_calls": [{**TC[0], "q": LONE}]}),
    ("tool-calls-name", "append", {"role": "assistant", "tool_calls": [{"id": "c", "name": LONE}]}),
    ("tool-call-id", "append", {"role": "tool", "tool_call_id": LONE}),
    ("idempotency-key", "append", {"idempotency_key": f"k{LONE}"}),
    ("conversation-id", "append", {"conversation_id": f"{uuid.uuid4()}{LONE}"}),
    ("cursor", "list_conversations", {"cursor": f"abc{LONE}"}),
    ("list-id", "list_messages", {"conversation_id": LONE}),
    ("user", "create", {"user": f"u{LONE}"}),
]


@pytest.mark.parametrize(
    ("operation", "args"), [c[1:] for c in SURROGATE_CASES], ids=[c[0] for c in SURROGATE_CASES]
)
async def test_unpaired_surrogates_are_refused_at_the_store(
    operation: str, args: dict[str, Any], store: ConversationStore, settings: Settings, user: str
) -> None:
    conversation = await store.create_conversation(user=user)
    db = await RawDB.connect(settings)
    try:
        before = await db.rows_of(user)
        kwargs: dict[str, Any] = {"user": user, **args}
        with pytest.raises(InvalidArgument) as refused:
            if operation == "create":
                await store.create_conversation(**kwargs)
            elif operation == "append":
                kwargs.setdefault("conversation_id", conversation.id)
                kwargs.setdefault("role", "user")
                kwargs.setdefault("content", "" if kwargs["role"] == "assistant" else "text")
                await store.append_message(**kwargs)
            elif operation == "list_conversations":
                await store.list_conversations(**kwargs)
            else:
                await store.list_messages(**kwargs)
        text = str(refused.value)
        assert text.startswith("invalid_argument: ")
        # The message names the problem but never echoes the bad text back.
        assert LONE not in text and "\udfff" not in text and "\udc00" not in text
        clean(text)
        assert await db.rows_of(user) == before
        assert await db.violations([user]) == []
    finally:
        await db.close()


# -- SQL-looking text: stored verbatim, read back, never executed ----------------------------

SQL_TEXTS = [
    "'; DROP TABLE messages; --",
    "Robert'); DELETE FROM conversations WHERE ('1'='1",
    '" OR ""="',
    "$1; SELECT pg_sleep(10); --",
    "1; UPDATE conversations SET user_id = 'mallory'",
    "?1 ?2 %s %(x)s {0} :name",
    "\\u0000 \\x00 (escaped, not a NUL)",
    "/* comment */ -- trailing",
]


@pytest.mark.parametrize("text", SQL_TEXTS, ids=[f"sql{n}" for n in range(len(SQL_TEXTS))])
async def test_sql_looking_text_is_stored_verbatim(
    text: str, matrix_store: ConversationStore, matrix_settings: Settings
) -> None:
    user = f"sql-{uuid.uuid4().hex[:10]}"
    db = await RawDB.connect(matrix_settings)
    try:
        total_before = await db.fetchval("SELECT count(*) FROM messages")
        server = create_server(matrix_settings, stdio_user=user, store=matrix_store)
        async with Client(server) as client:
            created = await client.call_tool(
                "create_conversation", {"title": text[:200], "metadata": {text: text}}
            )
            assert not created.is_error, error_text(created)
            assert created.structured_content is not None
            cid = created.structured_content["id"]
            sent: list[dict[str, Any]] = [
                {"role": "user", "content": text, "metadata": {text: [text]}},
                {
                    "role": "assistant",
                    "content": text,
                    "tool_calls": [{"id": text, "name": text, "arguments": {text: text}}],
                    "idempotency_key": text[:200],
                },
                {"role": "tool", "content": text, "tool_call_id": text},
            ]
            for message in sent:
                result = await client.call_tool(
                    "append_message", {"conversation_id": cid, **message}
                )
                assert not result.is_error, error_text(result)
            # The keyed message replays as itself.
            replay = await client.call_tool("append_message", {"conversation_id": cid, **sent[1]})
            assert replay.structured_content is not None
            assert replay.structured_content["seq"] == 2
            got = await client.call_tool(
                "get_conversation", {"conversation_id": cid, "recent_messages": 10}
            )
            assert got.structured_content is not None
            data = got.structured_content
            assert data["title"] == text[:200] and data["metadata"] == {text: text}
            stored = data["messages"]
            assert [m["content"] for m in stored] == [text] * 3
            assert stored[0]["metadata"] == {text: [text]}
            assert stored[1]["tool_calls"] == sent[1]["tool_calls"]
            assert stored[2]["tool_call_id"] == text
            listed = await client.call_tool("list_conversations", {})
            assert listed.structured_content is not None
            assert [c["title"] for c in listed.structured_content["conversations"]] == [text[:200]]
        # Nothing was executed: every table is still there and only our 3 rows were added.
        assert await db.fetchval("SELECT count(*) FROM messages") == total_before + 3
        assert await db.rows_of(user) == (1, 3)
        assert await db.fetchval("SELECT count(*) FROM users WHERE id = 'mallory'") in (0, 1)
        assert await db.violations([user]) == []
    finally:
        await db.close()
