"""Bad input, table-driven, through a real MCP client in-process on both backends.

Every argument of every tool gets wrong types, out-of-bounds values, oversize text and JSON,
NUL characters (in text and inside JSON), malformed and foreign ids and cursors, both cursors
at once, unknown roles and broken tool-call rules (the table is ``tests/security/inputs.py``).
Each case asserts the contract's error code
and that *no row was written*: the user's conversations and messages are counted with SQL
before and after, and the conversation's counters are unchanged. Unpaired surrogates cannot be
sent by the SDK client (it cannot encode them), so they are tried at the store layer on both
backends. SQL-looking text in every field is stored verbatim and read back, never executed.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from mcp import Client

from mcp_server.server import create_server
from store import ConversationStore, InvalidArgument, Settings
from tests.leaks import clean
from tests.mcp_server.helpers import tool_failure
from tests.rawdb import RawDB
from tests.security.inputs import CASES, TC, Args, prepare
from tests.support import error_text


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


@pytest.mark.parametrize(
    ("tool", "make", "code"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
async def test_bad_input_is_refused_and_writes_nothing(
    tool: str, make: Args, code: str, matrix_store: ConversationStore, matrix_settings: Settings
) -> None:
    user = f"input-{uuid.uuid4().hex[:10]}"
    ctx, secrets = await prepare(matrix_store, user, f"other-{uuid.uuid4().hex[:8]}")
    db = await RawDB.connect(matrix_settings)
    try:
        rows_before = await db.rows_of(user)
        facts_before = [(f.id, f.message_count, f.last_seq) for f in await db.facts([user])]
        server = create_server(matrix_settings, stdio_user=user, store=matrix_store)
        async with Client(server) as client:
            result = await client.call_tool(tool, make(ctx))
        assert result.is_error, f"accepted: {result.structured_content}"
        tool_failure(tool, result, code, foreign=secrets)
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
