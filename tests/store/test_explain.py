"""PostgreSQL plans for the list queries: keyset index scans, whatever the depth or store size.

A separate database is seeded with a realistic spread (thousands of messages over many
users and conversations) and ANALYZEd, so the planner chooses on its own: no
``enable_seqscan = off``. The statements explained are the ones the store really sends
(captured from it) and must equal the copies below, so a change to the store's SQL shows up
here. ``EXPLAIN ANALYZE`` also shows that a page reads about ``limit`` rows, not the history.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import asyncpg
import asyncpg.connection
import pytest

from store import migrate
from store.settings import Settings
from store.store import ConversationStore
from tests.conftest import create_postgres_database, drop_postgres_database

pytestmark = pytest.mark.postgres_only

_MESSAGE_SELECT = (
    "SELECT id, conversation_id, seq, role, content, tool_calls, tool_call_id, metadata, "
    "created_at, token_count, raw FROM messages WHERE conversation_id = $1 AND EXISTS "
    "(SELECT 1 FROM conversations c WHERE c.id = $1 AND c.user_id = $2) "
)
MESSAGES_LATEST = _MESSAGE_SELECT + "ORDER BY seq DESC LIMIT $3"
MESSAGES_BEFORE = _MESSAGE_SELECT + "AND seq < $3 ORDER BY seq DESC LIMIT $4"
MESSAGES_AFTER = _MESSAGE_SELECT + "AND seq > $3 AND seq <= $3 + $4 ORDER BY seq ASC LIMIT $4"

_CONVERSATION_SELECT = (
    "SELECT id, title, metadata, created_at, updated_at, message_count, last_seq, "
    "summary, summary_up_to_seq, forked_from_id, forked_from_seq, key "
    "FROM conversations WHERE user_id = $1 "
)
CONVERSATIONS_FIRST = _CONVERSATION_SELECT + "ORDER BY updated_at DESC, id DESC LIMIT $2"
CONVERSATIONS_NEXT = (
    _CONVERSATION_SELECT + "AND (updated_at, id) < ($2, $3) ORDER BY updated_at DESC, id DESC "
    "LIMIT $4"
)

USERS = 100
CONVERSATIONS_PER_USER = 20
#: seed-1 is a heavy user with many conversations (for list_conversations).
HEAVY_USER = "seed-1"
HEAVY_USER_CONVERSATIONS = 300
#: seed-2 is an ordinary user, one of whose conversations grew long (for list_messages).
USER = "seed-2"
LONG_CONVERSATION = 600

SEED = f"""
INSERT INTO users (id, created_at)
SELECT 'seed-' || u, now() - interval '30 days' FROM generate_series(1, {USERS}) u;

INSERT INTO conversations
    (id, user_id, title, metadata, created_at, updated_at, message_count, last_seq)
SELECT gen_random_uuid(), 'seed-' || u, 'conversation ' || c, '{{"source": "seed"}}'::jsonb,
       now() - (c || ' hours')::interval,
       now() - (c || ' hours')::interval + ((u * 13 + c * 7) % 3000 || ' seconds')::interval,
       n, n
FROM generate_series(1, {USERS}) u,
     LATERAL generate_series(1, CASE WHEN u = 1 THEN {HEAVY_USER_CONVERSATIONS}
                                     ELSE {CONVERSATIONS_PER_USER} END) c,
     LATERAL (SELECT CASE WHEN u = 2 AND c = 1 THEN {LONG_CONVERSATION}
                          ELSE (u * 7 + c * 13) % 20 + 1 END AS n) counts;

INSERT INTO messages
    (id, conversation_id, user_id, seq, role, content, tool_calls, tool_call_id, metadata,
     idempotency_key, created_at, token_count)
SELECT gen_random_uuid(), c.id, c.user_id, s,
       CASE WHEN s % 2 = 1 THEN 'user' ELSE 'assistant' END,
       repeat('words of a message ', (1 + s % 12)::int), NULL, NULL, '{{}}'::jsonb,
       CASE WHEN s % 3 = 0 THEN 'key-' || s END,
       c.created_at + (s || ' seconds')::interval, 4 * (1 + s % 12)
FROM conversations c, generate_series(1, c.last_seq) s;

ANALYZE;
"""


@dataclass(frozen=True)
class Seeded:
    url: str
    long_conversation: uuid.UUID
    short_conversation: uuid.UUID
    message_seq_index: str


@pytest.fixture(scope="module")
async def seeded(postgres_url: str) -> AsyncIterator[Seeded]:
    """A database of its own, migrated with the real migrations and seeded, then dropped."""
    del postgres_url  # only here to skip (or fail) when PostgreSQL is not reachable
    url = await create_postgres_database("chatstore_explain")
    try:
        await migrate.upgrade(Settings(database_url=url))
        conn = await asyncpg.connect(url, timeout=5)
        try:
            await conn.execute(SEED)
            messages = await conn.fetchval("SELECT count(*) FROM messages")
            assert messages > 5000
            long_id = await conn.fetchval(
                "SELECT id FROM conversations WHERE user_id = $1 AND last_seq = $2",
                USER,
                LONG_CONVERSATION,
            )
            short_id = await conn.fetchval(
                "SELECT id FROM conversations WHERE user_id = $1 AND last_seq < 10 LIMIT 1", USER
            )
            # The unique (conversation_id, seq) index, whatever aerich named it.
            index = await conn.fetchval(
                "SELECT indexname FROM pg_indexes WHERE tablename = 'messages' "
                "AND indexdef LIKE 'CREATE UNIQUE INDEX % (conversation_id, seq)'"
            )
            assert index is not None
        finally:
            await conn.close()
        yield Seeded(url, long_id, short_id, index)
    finally:
        await drop_postgres_database(url)


def _normal(sql: str) -> str:
    return " ".join(sql.split())


def _nodes(plan: Mapping[str, Any]) -> Iterator[Mapping[str, Any]]:
    yield plan
    for child in plan.get("Plans", []):
        yield from _nodes(child)


class Captured:
    """The statements a store sends, recorded on their way to the database (every asyncpg
    connection's ``fetch``, which the PostgreSQL backend sends its reads through)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.statements: list[tuple[str, tuple[Any, ...]]] = []
        real = asyncpg.connection.Connection.fetch

        async def spy(conn: Any, sql: str, *args: Any, **kwargs: Any) -> Any:
            self.statements.append((sql, args))
            return await real(conn, sql, *args, **kwargs)

        monkeypatch.setattr(asyncpg.connection.Connection, "fetch", spy)

    def only(self, table: str) -> tuple[str, tuple[Any, ...]]:
        matching = [
            (sql, args)
            for sql, args in self.statements
            if _normal(sql).split(" WHERE ", 1)[0].endswith(f" FROM {table}")
        ]
        assert len(matching) == 1, self.statements
        self.statements.clear()
        return matching[0]


def _literal(value: Any) -> str:
    if isinstance(value, int):
        return str(value)
    return "'" + str(value).replace("'", "''") + "'"


async def _explain(
    url: str, sql: str, args: tuple[Any, ...], *, generic: bool = False
) -> list[Mapping[str, Any]]:
    """The executed plan of ``sql`` with ``args``.

    ``generic``: the plan PostgreSQL caches for a prepared statement once it stops planning
    per call, which is what the store's (asyncpg's) prepared statements may end up running.
    """
    conn = await asyncpg.connect(url, timeout=5)
    try:
        if generic:
            await conn.execute("SET plan_cache_mode = force_generic_plan")
            await conn.execute(f"PREPARE explained AS {sql}")
            # EXECUTE takes no protocol parameters: the values go in as SQL literals.
            values = ", ".join(_literal(arg) for arg in args)
            text = await conn.fetchval(
                f"EXPLAIN (ANALYZE, FORMAT JSON) EXECUTE explained({values})"
            )
        else:
            text = await conn.fetchval("EXPLAIN (ANALYZE, FORMAT JSON) " + sql, *args)
    finally:
        await conn.close()
    return list(_nodes(json.loads(text)[0]["Plan"]))


def _describe(nodes: list[Mapping[str, Any]]) -> list[tuple[str, str | None, str | None]]:
    return [(n["Node Type"], n.get("Relation Name"), n.get("Index Name")) for n in nodes]


def _assert_keyset_access(
    nodes: list[Mapping[str, Any]], table: str, index: str, limit: int
) -> None:
    """``table`` is read only through ``index``, and only about one page of rows."""
    described = _describe(nodes)
    assert not any(n["Node Type"] == "Seq Scan" for n in nodes), described
    scans = [n for n in nodes if n.get("Relation Name") == table]
    assert len(scans) == 1, described
    scan = scans[0]
    if scan["Node Type"] in {"Index Scan", "Index Only Scan"}:
        assert scan["Index Name"] == index, described
        # Rows come out of the index already in order: nothing sorts them.
        assert not any("Sort" in n["Node Type"] for n in nodes), described
        read = scan["Actual Rows"] + scan.get("Rows Removed by Filter", 0)
    else:
        # A bitmap scan is fine when its index condition bounds it to the page: it then
        # sorts at most limit + 1 rows.
        assert scan["Node Type"] == "Bitmap Heap Scan", described
        bitmaps = [n for n in _nodes(scan) if n["Node Type"] == "Bitmap Index Scan"]
        assert [n["Index Name"] for n in bitmaps] == [index], described
        read = bitmaps[0]["Actual Rows"]
    # The page costs its own size (+1 row for has_more/next_cursor), not its depth.
    assert read <= limit + 1, (read, described)


@pytest.mark.parametrize(
    ("arguments", "expected_sql"),
    [
        ({}, MESSAGES_LATEST),
        ({"before_seq": 100}, MESSAGES_BEFORE),
        ({"before_seq": LONG_CONVERSATION - 5}, MESSAGES_BEFORE),
        ({"after_seq": 0}, MESSAGES_AFTER),
        ({"after_seq": 400}, MESSAGES_AFTER),
    ],
    ids=["latest", "deep-before", "shallow-before", "after-start", "deep-after"],
)
@pytest.mark.parametrize("plan", ["custom", "generic"])
async def test_list_messages_uses_the_conversation_seq_index(
    seeded: Seeded,
    monkeypatch: pytest.MonkeyPatch,
    arguments: dict[str, int],
    expected_sql: str,
    plan: str,
) -> None:
    async with ConversationStore(Settings(database_url=seeded.url)) as store:
        captured = Captured(monkeypatch)
        page = await store.list_messages(
            user=USER, conversation_id=seeded.long_conversation, limit=50, **arguments
        )
        assert len(page.messages) == 50
        assert page.has_more is True
        sql, args = captured.only("messages")
    assert _normal(sql) == _normal(expected_sql)
    nodes = await _explain(seeded.url, sql, args, generic=plan == "generic")
    _assert_keyset_access(nodes, "messages", seeded.message_seq_index, 50)
    assert all(n.get("Index Name") != "messages_user" for n in nodes)


async def test_a_short_conversation_is_read_through_its_own_rows(
    seeded: Seeded, monkeypatch: pytest.MonkeyPatch
) -> None:
    # For a handful of rows the planner may fetch them all and sort; what it must never do is
    # start from the user's whole history (messages_user) or the whole table.
    async with ConversationStore(Settings(database_url=seeded.url)) as store:
        captured = Captured(monkeypatch)
        await store.list_messages(user=USER, conversation_id=seeded.short_conversation)
        sql, args = captured.only("messages")
    assert _normal(sql) == _normal(MESSAGES_LATEST)
    nodes = await _explain(seeded.url, sql, args)
    described = _describe(nodes)
    assert not any(n["Node Type"] == "Seq Scan" for n in nodes), described
    assert all(n.get("Index Name") != "messages_user" for n in nodes), described
    message_scans = [n for n in nodes if n.get("Relation Name") == "messages"]
    assert message_scans, described
    assert all(n["Actual Rows"] < 10 for n in message_scans), described


@pytest.mark.parametrize("plan", ["custom", "generic"])
async def test_list_conversations_uses_conversations_user_recent(
    seeded: Seeded, monkeypatch: pytest.MonkeyPatch, plan: str
) -> None:
    async with ConversationStore(Settings(database_url=seeded.url)) as store:
        captured = Captured(monkeypatch)
        first = await store.list_conversations(user=HEAVY_USER, limit=10)
        first_sql, first_args = captured.only("conversations")
        assert first.next_cursor is not None
        # A page deep into the list: the cursor of the fourth page.
        cursor = first.next_cursor
        for _ in range(3):
            page = await store.list_conversations(user=HEAVY_USER, limit=10, cursor=cursor)
            assert page.next_cursor is not None
            cursor = page.next_cursor
        captured.statements.clear()
        deep = await store.list_conversations(user=HEAVY_USER, limit=10, cursor=cursor)
        assert len(deep.conversations) == 10
        next_sql, next_args = captured.only("conversations")
    assert _normal(first_sql) == _normal(CONVERSATIONS_FIRST)
    assert _normal(next_sql) == _normal(CONVERSATIONS_NEXT)
    for sql, args in ((first_sql, first_args), (next_sql, next_args)):
        nodes = await _explain(seeded.url, sql, args, generic=plan == "generic")
        _assert_keyset_access(nodes, "conversations", "conversations_user_recent", 10)


#: A user with a long history of their own, added by the search test (the other tests never
#: read it).
SEARCHER = "seed-searcher"
SEARCHER_MESSAGES = 20_000


async def test_search_reads_only_the_users_matches_through_messages_search(
    seeded: Seeded, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A rare word, in every 500th message of a long history and in a few of other users':
    # GIN (search) alone would hand the heap every user's matches, or AND them with
    # messages_user (the whole history); GIN (user_id, search) finds exactly this user's.
    conn = await asyncpg.connect(seeded.url, timeout=5)
    try:
        await conn.execute(
            "UPDATE messages SET content = content || ' zanzibar' WHERE seq % 100 = 0"
        )
        await conn.execute(
            f"""
            INSERT INTO users (id, created_at) VALUES ('{SEARCHER}', now());
            INSERT INTO conversations
                (id, user_id, title, metadata, created_at, updated_at, message_count, last_seq)
            VALUES (gen_random_uuid(), '{SEARCHER}', 'long', '{{}}', now(), now(),
                    {SEARCHER_MESSAGES}, {SEARCHER_MESSAGES});
            INSERT INTO messages (id, conversation_id, user_id, seq, role, content, metadata,
                                  created_at, token_count)
            SELECT gen_random_uuid(), c.id, c.user_id, s, 'user',
                   'a message about the weather' || CASE WHEN s % 500 = 0 THEN ' zanzibar'
                                                         ELSE '' END,
                   '{{}}', now(), 6
            FROM conversations c, generate_series(1, {SEARCHER_MESSAGES}) s
            WHERE c.user_id = '{SEARCHER}';
            """
        )
        # New GIN entries wait in the index's pending list, which every search scans, until
        # (auto)vacuum merges them: the steady state is the merged index.
        await conn.execute("VACUUM ANALYZE messages")
        others = await conn.fetchval(
            "SELECT count(*) FROM messages WHERE user_id <> $1 AND content LIKE '%zanzibar'",
            SEARCHER,
        )
    finally:
        await conn.close()
    matches = SEARCHER_MESSAGES // 500
    assert others > 0
    async with ConversationStore(Settings(database_url=seeded.url)) as store:
        captured = Captured(monkeypatch)
        page = await store.search_messages(user=SEARCHER, query="zanzibar", limit=20)
        assert len(page.results) == 20
        searches = [(sql, args) for sql, args in captured.statements if "@@" in sql]
    assert len(searches) == 1, captured.statements
    sql, args = searches[0]
    for plan in ("custom", "generic"):
        nodes = await _explain(seeded.url, sql, args, generic=plan == "generic")
        described = _describe(nodes)
        assert not any(n["Node Type"] == "Seq Scan" for n in nodes), (plan, described)
        bitmaps = [n for n in nodes if n["Node Type"] == "Bitmap Index Scan"]
        assert [n["Index Name"] for n in bitmaps] == ["messages_search"], (plan, described)
        assert bitmaps[0]["Actual Rows"] == matches, (plan, matches, described)
