"""Nothing internal in any error: the texts provoked here, and every one the other suites saw.

Each suite records every error text a client received (tool errors, JSON-RPC error messages,
HTTP 401 bodies and challenges, store exceptions) through ``tests.leaks.clean``, which fails at
the spot on SQL, driver names, tracebacks, paths or another user's data. The tests here make
their own texts as well, on both backends, so the check can fail when this file runs alone:
every tool through an in-process MCP client with the bad-input matrix of ``inputs.py``
(unknown, foreign and malformed ids, out-of-range limits, wrong types, NUL characters, oversize
text and JSON, bad tool calls, both cursors, forged cursors, unknown arguments, an idempotency
conflict), resource reads and the resume prompt with bad and foreign ids, and a closed store.
Every text starts with a contract code. The last test runs after every other test of the
session (see ``conftest.py``), re-checks the whole corpus and reports what it covered.
"""

from __future__ import annotations

import pytest
from mcp import Client

from mcp_server.server import create_server
from store import ConversationStore, NotFound, Settings
from tests.leaks import CORPUS, Corpus, internal_markers
from tests.mcp_server.helpers import (
    RESOURCE_PREFIX,
    assert_everything_unavailable,
    protocol_failure,
    random_id,
    tool_failure,
)
from tests.security.inputs import CASES, prepare
from tests.support import error_text

#: The contract's error codes: every text provoked here starts with one.
CONTRACT_CODES = {"not_found", "invalid_argument", "conflict", "unavailable"}


async def test_every_tool_refuses_bad_input_cleanly(
    settings: Settings, store: ConversationStore, user: str, other_user: str
) -> None:
    ctx, foreign = await prepare(store, user, other_user)
    server = create_server(settings, stdio_user=user, store=store)
    async with Client(server) as client:
        for name, tool, make, code in CASES:
            assert code in CONTRACT_CODES, name
            result = await client.call_tool(tool, make(ctx))
            assert result.is_error, f"{name}: accepted: {result.structured_content}"
            tool_failure(tool, result, code, foreign)


async def test_resources_and_the_prompt_refuse_bad_ids_cleanly(
    settings: Settings, store: ConversationStore, user: str, other_user: str
) -> None:
    ctx, foreign = await prepare(store, user, other_user)
    server = create_server(settings, stdio_user=user, store=store)
    ids = [
        (random_id(), "not_found"),
        (ctx.foreign_conversation_id, "not_found"),
        ("not-a-uuid", "invalid_argument"),
        (ctx.conversation_id[:-1], "invalid_argument"),
        ("' OR '1'='1", "invalid_argument"),
    ]
    async with Client(server) as client:
        for conversation_id, code in ids:
            await protocol_failure(
                client.read_resource(f"{RESOURCE_PREFIX}{conversation_id}"), code, foreign
            )
            await protocol_failure(
                client.get_prompt("resume_conversation", {"conversation_id": conversation_id}),
                code,
                foreign,
            )


async def test_a_closed_store_is_unavailable_cleanly(
    settings: Settings, user: str, other_user: str
) -> None:
    async with ConversationStore(settings) as store:
        ctx, foreign = await prepare(store, user, other_user)
    server = create_server(settings, stdio_user=user, store=store)
    async with Client(server) as client:
        await assert_everything_unavailable(client, ctx.conversation_id, foreign)
        await assert_everything_unavailable(client, ctx.foreign_conversation_id, foreign)


def test_the_leak_detector_detects() -> None:
    """The checker itself must be able to fail."""
    assert internal_markers('File "/work/main/store/store.py", line 3')
    assert internal_markers("asyncpg.exceptions.DataError: invalid input")
    assert internal_markers("UPDATE conversations SET last_seq = last_seq + 1")
    assert internal_markers('duplicate key value violates unique constraint "x"')
    assert internal_markers("not_found: alice's trip", ["alice"])
    assert internal_markers("unavailable: [Errno 111] Connect call failed ('::1', 5432)")
    assert internal_markers("unavailable: Multiple exceptions: OSError, ConnectionRefusedError")
    assert not internal_markers("not_found: no conversation with that id")
    # Where the database is: for an operator only.
    where = "unavailable: cannot reach the database: PostgreSQL at 127.0.0.1:5432, database x"
    assert internal_markers(where) == ["127.0.0.1"]
    assert not internal_markers(where, audience="operator")
    assert internal_markers("unavailable: postgres://u:pw@db/x", audience="client")
    assert internal_markers("unavailable: asyncpg: 127.0.0.1", audience="operator") == ["asyncpg"]


async def test_a_leak_planted_in_a_tool_error_is_caught(
    settings: Settings, store: ConversationStore, user: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A store error that carried SQL and a path would reach the client, and fail the check."""
    planted = 'SELECT * FROM conversations WHERE id = $1 (File "/work/main/store/store.py")'

    async def leaky(**kwargs: object) -> None:
        raise NotFound(planted)

    monkeypatch.setattr(store, "get_conversation", leaky)
    server = create_server(settings, stdio_user=user, store=store)
    async with Client(server) as client:
        result = await client.call_tool("get_conversation", {"conversation_id": random_id()})
    text = error_text(result)
    assert planted in text
    corpus = Corpus()  # not the session's: this text is meant to fail
    with pytest.raises(AssertionError, match="internal detail"):
        corpus.check(text)
    with pytest.raises(AssertionError, match="foreign:"):
        corpus.check("not_found: their trip", foreign=["their trip"])
    assert set(corpus.leaking()) == {text, "not_found: their trip"}


def test_the_corpus_test_runs_last(request: pytest.FixtureRequest) -> None:
    """Every other test of the session comes before this file's (``conftest.py``)."""
    items = request.session.items
    first = next(n for n, item in enumerate(items) if item.path == request.node.path)
    assert all(item.path == request.node.path for item in items[first:])


def test_no_error_text_carries_anything_internal() -> None:
    assert CORPUS.entries, "no error text was recorded"
    leaking = CORPUS.leaking()
    assert not leaking, leaking
    codes = CORPUS.codes()
    assert set(codes) >= CONTRACT_CODES, codes
    distinct = len(set(CORPUS.texts))
    print(f"error corpus: {len(CORPUS.entries)} texts ({distinct} distinct), {codes}")
