"""Database outages under load: restart, crash and killed backends, through running servers.

A streamable-HTTP server process and a stdio server process share a database on the private
PostgreSQL instance. Appenders keep calling append_message through both while the test stops
PostgreSQL cleanly, crashes it (``pg_ctl stop -m immediate``) and terminates the servers'
backends with ``pg_terminate_backend``. It checks that:

- during an outage calls fail fast with ``unavailable`` (never another code, never a hang past
  ``CALL_BOUND``), and the error text carries nothing internal;
- after each fault the *same* server processes answer again, without a restart;
- every acknowledged append is in the database exactly once (keyed appenders retry with their
  idempotency key, so each of their messages is stored exactly once in the end), and no
  conversation's counters disagree with its messages (SQL: count(*), max(seq), gapless seq).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import anyio
import httpx
from mcp import Client
from mcp.client.stdio import stdio_client

from store.settings import Settings
from tests.rawdb import RawDB
from tests.reliability.load import Appender, Ledger, acked_are_stored, wait_for_recovery
from tests.reliability.pg import PrivatePostgres
from tests.support import http_client, http_server, mint_token, server_env, stdio_params

DB_TIMEOUT = 1.5
CONNECT_TIMEOUT = 1.0
#: No call may take longer: two attempts of DB_TIMEOUT each, plus slack for a loaded machine.
CALL_BOUND = 2 * DB_TIMEOUT + 4
#: After PostgreSQL is back, each server must answer again within this many seconds.
RECOVERY_BOUND = 15.0


async def _terminate_backends(pg: PrivatePostgres, database: str) -> int:
    conn = await pg.connect()
    try:
        killed = await conn.fetchval(
            "SELECT count(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = $1 AND application_name = 'chatstore' "
            "AND pid <> pg_backend_pid()) AS t",
            database,
        )
    finally:
        await conn.close()
    return int(killed)


async def test_restart_crash_and_killed_backends_under_load(
    private_pg: PrivatePostgres, fault_url: str, tmp_path: Path
) -> None:
    http_user = f"http-{uuid.uuid4().hex[:8]}"
    stdio_user = f"stdio-{uuid.uuid4().hex[:8]}"
    env = server_env(
        fault_url,
        tmp_path,
        CHATSTORE_USER=stdio_user,
        CHATSTORE_DB_TIMEOUT=str(DB_TIMEOUT),
        CHATSTORE_DB_CONNECT_TIMEOUT=str(CONNECT_TIMEOUT),
        CHATSTORE_DB_POOL_MAX="4",
    )
    ledger = Ledger()
    figures: dict[str, Any] = {}
    database = fault_url.rsplit("/", 1)[1]
    with (
        (tmp_path / "stdio-server.log").open("w") as stdio_log,
        http_server(env, tmp_path) as server,
    ):
        http_pid = server.process.pid
        async with AsyncExitStack() as stack:
            http = await stack.enter_async_context(http_client(server.url, mint_token(http_user)))
            stdio = await stack.enter_async_context(
                Client(stdio_client(stdio_params(env), errlog=stdio_log))
            )
            appenders: list[Appender] = []
            for transport, client, user in (
                ("http", http, http_user),
                ("stdio", stdio, stdio_user),
            ):
                conversations = []
                for _ in range(2):
                    created = await client.call_tool("create_conversation", {"title": transport})
                    assert created.structured_content is not None
                    conversations.append(created.structured_content["id"])
                other = stdio_user if user == http_user else http_user
                for kind, count in (("keyed", 3), ("once", 2)):
                    for i in range(count):
                        appenders.append(
                            Appender(
                                name=f"{transport}-{kind}{i}",
                                client=client,
                                conversations=conversations,
                                ledger=ledger,
                                keyed=kind == "keyed",
                                call_bound=CALL_BOUND,
                                foreign=[other],
                                pause=0.01,
                            )
                        )
            stop = asyncio.Event()
            give_up_at = time.monotonic() + 90
            async with anyio.create_task_group() as tg:
                for appender in appenders:
                    tg.start_soon(appender.run, stop, give_up_at)
                await asyncio.sleep(1.0)

                # 1. A clean restart (every session ends, new connections are refused), a
                # crash, and a freeze (connections stay open, nothing answers).
                for label, down_for in (("restart", 2.0), ("crash", 1.5), ("freeze", 4.5)):
                    before = len(ledger.calls)
                    if label == "freeze":
                        private_pg.freeze()
                    else:
                        mode = "fast" if label == "restart" else "immediate"
                        await asyncio.to_thread(private_pg.stop, mode)
                    down_at = time.monotonic()
                    try:
                        await asyncio.sleep(down_for)
                    finally:
                        starting_at = time.monotonic()
                        if label == "freeze":
                            private_pg.thaw()
                        else:
                            await asyncio.to_thread(private_pg.start)
                    up_at = time.monotonic()
                    during = [
                        c
                        for c in ledger.calls[before:]
                        if down_at < c.started and c.ended < starting_at
                    ]
                    assert during, f"{label}: no call ended while the database was down"
                    assert {c.code for c in during} == {"unavailable"}, Counter(
                        c.code for c in during
                    )
                    recovery = await wait_for_recovery(
                        ledger, RECOVERY_BOUND, ["http", "stdio"], up_at
                    )
                    acked, found = await acked_are_stored(fault_url, ledger)
                    figures[label] = {
                        "calls_failed_while_down": len(during),
                        "slowest_failure_s": round(max(c.duration for c in during), 3),
                        "recovered_after_s": round(recovery, 2),
                        "acknowledged": acked,
                        "found": found,
                    }
                    await asyncio.sleep(0.5)

                # 2. Kill the servers' backends (the pooled connections) a few times.
                killed = 0
                for _ in range(4):
                    killed += await _terminate_backends(private_pg, database)
                    await asyncio.sleep(0.4)
                since = time.monotonic()
                await wait_for_recovery(ledger, RECOVERY_BOUND, ["http", "stdio"], since)
                acked, found = await acked_are_stored(fault_url, ledger)
                figures["terminate"] = {
                    "backends_killed": killed,
                    "acknowledged": acked,
                    "found": found,
                }
                assert killed > 0, "no chatstore backend was found to terminate"

                await asyncio.sleep(0.5)
                stop.set()

            # The same processes still serve both transports.
            assert server.process.poll() is None and server.process.pid == http_pid
            for client in (http, stdio):
                listed = await client.call_tool("list_conversations", {})
                assert not listed.is_error

    # Every call ended as ok or unavailable, and none hung.
    codes = ledger.codes()
    odd = {
        (c.appender, c.code, c.text) for c in ledger.calls if c.code not in ("ok", "unavailable")
    }
    assert not odd, odd
    assert max(c.duration for c in ledger.calls) <= CALL_BOUND

    # What is in the database.
    db = await RawDB.connect(Settings(database_url=fault_url))
    try:
        assert await db.violations() == []
        rows = await db.fetch("SELECT id::text, seq, content, idempotency_key FROM messages")
    finally:
        await db.close()
    contents = Counter(str(r[2]) for r in rows)
    assert max(contents.values()) == 1, "a message was stored twice"
    assert set(contents) <= ledger.attempted()
    by_id = {str(r[0]): r for r in rows}
    for ack in ledger.acks:
        assert ack.id in by_id and (by_id[ack.id][1], by_id[ack.id][2]) == (ack.seq, ack.content)
    acked_contents = {a.content for a in ledger.acks}
    assert len(acked_contents) == len(ledger.acks), "one message acknowledged twice with two ids"
    # Keyed appenders retried until acknowledged: each of their messages exactly once.
    keyed_sent = {c.content for c in ledger.calls if c.key is not None}
    assert keyed_sent <= acked_contents
    # Only unkeyed calls that failed may have left a message behind (a call told
    # `unavailable` while its statement still committed); a keyed retry found its first
    # attempt's row instead of storing a second one.
    unacked_stored = set(contents) - acked_contents
    assert all(c.key is None for c in ledger.calls if c.content in unacked_stored)
    attempts = Counter(c.key for c in ledger.calls if c.key is not None)
    figures["total"] = {
        "calls": len(ledger.calls),
        "codes": dict(codes),
        "acknowledged": len(ledger.acks),
        "found": len(rows),
        "stored_without_ack": len(unacked_stored),
        "keyed_messages_retried": sum(1 for n in attempts.values() if n > 1),
        "slowest_call_s": round(max(c.duration for c in ledger.calls), 3),
    }
    print(f"database faults: {figures}")


async def test_readyz_follows_the_database(
    private_pg: PrivatePostgres, fault_url: str, tmp_path: Path
) -> None:
    """/readyz is 503 while PostgreSQL is down, 200 again once it is back; /healthz stays 200."""
    env = server_env(
        fault_url,
        tmp_path,
        CHATSTORE_DB_TIMEOUT=str(DB_TIMEOUT),
        CHATSTORE_DB_CONNECT_TIMEOUT=str(CONNECT_TIMEOUT),
    )
    with http_server(env, tmp_path) as server:
        base = f"http://127.0.0.1:{server.port}"
        async with httpx.AsyncClient(timeout=CALL_BOUND) as http:
            assert (await http.get(base + "/readyz")).status_code == 200
            await asyncio.to_thread(private_pg.stop, "fast")
            down = await http.get(base + "/readyz")
            assert down.status_code == 503
            assert down.json()["reason"].startswith("unavailable: ")
            assert (await http.get(base + "/healthz")).status_code == 200
            await asyncio.to_thread(private_pg.start)
            deadline = time.monotonic() + RECOVERY_BOUND
            while (await http.get(base + "/readyz")).status_code != 200:
                assert time.monotonic() < deadline, "not ready again after PostgreSQL came back"
                await asyncio.sleep(0.2)
