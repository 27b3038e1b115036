"""A PostgreSQL restart behind PgBouncer (transaction pooling), under load.

A streamable-HTTP server reaches the private PostgreSQL instance through a private PgBouncer
(``tests/pgbouncer.py``), configured as the README says (``CHATSTORE_DB_STATEMENT_CACHE_SIZE=0``).
Appenders keep calling append_message while PostgreSQL is stopped cleanly and started again
(PgBouncer stays up: its client connections survive, its server connections do not). It checks
that calls during the outage fail fast with ``unavailable``, that the same server answers
again once PostgreSQL is back, and that every acknowledged append is stored exactly once,
with every conversation's counters agreeing with its messages.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest

from store.settings import Settings
from tests.conftest import REQUIRE_POSTGRES
from tests.pgbouncer import PgBouncer, find_pgbouncer
from tests.rawdb import RawDB
from tests.reliability.load import Appender, Ledger, acked_are_stored, wait_for_recovery
from tests.reliability.pg import PrivatePostgres
from tests.support import http_client, http_server, mint_token, server_env

DB_TIMEOUT = 1.5
#: No call may take longer: two attempts of DB_TIMEOUT each, plus slack for a loaded machine.
CALL_BOUND = 2 * DB_TIMEOUT + 4
#: How long PostgreSQL stays down: a call begun then may take both of its attempts.
OUTAGE = 2 * DB_TIMEOUT + 1.5
#: PgBouncer retries a failed server login after server_login_retry (1 s in the tests).
RECOVERY_BOUND = 15.0


@pytest.fixture
def bouncer(private_pg: PrivatePostgres) -> Iterator[PgBouncer]:
    binary = find_pgbouncer()
    if binary is None:
        message = "PgBouncer is not installed (apt-get install pgbouncer)"
        if REQUIRE_POSTGRES:
            pytest.fail(message + " (CHATSTORE_REQUIRE_POSTGRES is set)")
        pytest.skip(message)
    bouncer = PgBouncer(binary, "127.0.0.1", private_pg.port)
    try:
        bouncer.start()
        yield bouncer
    finally:
        bouncer.destroy()


async def test_a_restart_behind_pgbouncer_is_unavailable_then_recovers(
    private_pg: PrivatePostgres, fault_url: str, bouncer: PgBouncer, tmp_path: Path
) -> None:
    user = f"bounced-{uuid.uuid4().hex[:8]}"
    env = server_env(
        bouncer.url(fault_url),
        tmp_path,
        CHATSTORE_DB_STATEMENT_CACHE_SIZE="0",
        CHATSTORE_DB_TIMEOUT=str(DB_TIMEOUT),
        CHATSTORE_DB_CONNECT_TIMEOUT="1",
        CHATSTORE_DB_POOL_MAX="6",
    )
    ledger = Ledger()
    with http_server(env, tmp_path) as server:
        async with http_client(server.url, mint_token(user)) as client:
            conversations = []
            for _ in range(2):
                created = await client.call_tool("create_conversation", {"title": "bounced"})
                assert created.structured_content is not None
                conversations.append(created.structured_content["id"])
            appenders = [
                Appender(
                    name=f"{kind}{i}",
                    client=client,
                    conversations=conversations,
                    ledger=ledger,
                    keyed=kind == "keyed",
                    call_bound=CALL_BOUND,
                    pause=0.01,
                )
                for kind, count in (("keyed", 3), ("once", 2))
                for i in range(count)
            ]
            stop = asyncio.Event()
            async with anyio.create_task_group() as tg:
                for appender in appenders:
                    tg.start_soon(appender.run, stop, time.monotonic() + 60)
                await asyncio.sleep(1.0)
                before = len(ledger.calls)
                await asyncio.to_thread(private_pg.stop, "fast")
                down_at = time.monotonic()
                try:
                    # Long enough for a call begun after the stop to end before the start:
                    # behind PgBouncer a call may wait out its two attempts' DB_TIMEOUT.
                    await asyncio.sleep(OUTAGE)
                finally:
                    starting_at = time.monotonic()
                    await asyncio.to_thread(private_pg.start)
                up_at = time.monotonic()
                during = [
                    c
                    for c in ledger.calls[before:]
                    if down_at < c.started and c.ended < starting_at
                ]
                assert during, "no call ended while the database was down"
                assert {c.code for c in during} == {"unavailable"}, Counter(
                    (c.code, c.text[:120]) for c in during
                )
                recovery = await wait_for_recovery(ledger, RECOVERY_BOUND, ["keyed", "once"], up_at)
                await asyncio.sleep(0.5)
                stop.set()
            assert server.process.poll() is None
            listed = await client.call_tool("list_conversations", {})
            assert not listed.is_error

    odd = {
        (c.appender, c.code, c.text) for c in ledger.calls if c.code not in ("ok", "unavailable")
    }
    assert not odd, odd
    assert max(c.duration for c in ledger.calls) <= CALL_BOUND
    acked, found = await acked_are_stored(fault_url, ledger)
    assert acked == found > 0
    db = await RawDB.connect(Settings(database_url=fault_url))
    try:
        assert await db.violations() == []
        rows = await db.fetch("SELECT content FROM messages")
    finally:
        await db.close()
    contents = Counter(str(row[0]) for row in rows)
    assert max(contents.values()) == 1, "a message was stored twice"
    keyed_sent = {c.content for c in ledger.calls if c.key is not None}
    assert keyed_sent <= {a.content for a in ledger.acks}
    print(
        f"restart behind PgBouncer: {len(during)} calls unavailable while down "
        f"(slowest {max(c.duration for c in during):.2f} s), recovered after {recovery:.2f} s, "
        f"{acked} acknowledged, all stored once"
    )
