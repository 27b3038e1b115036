"""Connection pool exhaustion: more concurrent calls than pooled connections.

A server process with ``CHATSTORE_DB_POOL_MAX=2`` gets 50 concurrent calls:

- with a healthy database they queue for the two connections and all complete;
- with the database blocking them (another session holds the conversation's row lock, or the
  SQLite write lock) every call ends within a bounded wait, as a result or ``unavailable`` —
  never a deadlock — and once the blocker goes away the same process serves again, with the
  data consistent.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
from mcp import Client

from store.settings import Settings
from tests.leaks import clean
from tests.rawdb import RawDB, consistent_messages_of
from tests.support import (
    error_code,
    error_text,
    http_client,
    http_server,
    mint_token,
    server_env,
)

CONCURRENT = 50
POOL_MAX = 2
DB_TIMEOUT = 2.5
#: A call may wait DB_TIMEOUT for the pool/database, twice (one retry), plus slack.
CALL_BOUND = 2 * DB_TIMEOUT + 4
BLOCK_FOR = 4.5


async def _call(client: Client, name: str, arguments: dict[str, Any]) -> tuple[str, float, Any]:
    started = time.monotonic()
    with anyio.fail_after(CALL_BOUND):
        result = await client.call_tool(name, arguments)
    elapsed = time.monotonic() - started
    if result.is_error:
        clean(error_text(result))
        return error_code(result), elapsed, None
    return "ok", elapsed, result.structured_content


@asynccontextmanager
async def _blocked(settings: Settings, conversation_id: str) -> AsyncIterator[None]:
    """Another session holds the write lock that appends to ``conversation_id`` need."""
    db = await RawDB.connect(settings)
    try:
        if db.dialect == "postgres":
            await db.execute("BEGIN")
            await db.execute(
                "SELECT 1 FROM conversations WHERE id = $1 FOR UPDATE", uuid.UUID(conversation_id)
            )
        else:
            await db.execute("BEGIN IMMEDIATE")
        yield
        await db.execute("ROLLBACK")
    finally:
        await db.close()


async def test_more_concurrent_calls_than_connections(
    settings: Settings, backend: str, tmp_path: Path
) -> None:
    user = f"pool-{uuid.uuid4().hex[:8]}"
    env = server_env(
        settings.resolved_database_url,
        tmp_path,
        CHATSTORE_DB_POOL_MIN="1",
        CHATSTORE_DB_POOL_MAX=str(POOL_MAX),
        CHATSTORE_DB_TIMEOUT=str(DB_TIMEOUT),
        CHATSTORE_DB_CONNECT_TIMEOUT="1",
    )
    figures: dict[str, Any] = {}
    acked: list[dict[str, Any]] = []
    attempted: set[str] = set()
    with http_server(env, tmp_path) as server:
        async with http_client(server.url, mint_token(user)) as client:
            ids = []
            for _ in range(2):
                created = await client.call_tool("create_conversation", {})
                assert created.structured_content is not None
                ids.append(str(created.structured_content["id"]))
            hot, cold = ids

            def batch(tag: str) -> list[tuple[str, dict[str, Any]]]:
                calls: list[tuple[str, dict[str, Any]]] = []
                for n in range(CONCURRENT):
                    if n % 2:
                        calls.append(("list_messages", {"conversation_id": cold, "limit": 50}))
                    else:
                        attempted.add(f"{tag}-{n}")
                        calls.append(
                            (
                                "append_message",
                                {"conversation_id": hot, "role": "user", "content": f"{tag}-{n}"},
                            )
                        )
                return calls

            async def run_batch(tag: str) -> list[tuple[str, float, Any]]:
                outcomes = await asyncio.gather(
                    *(_call(client, name, args) for name, args in batch(tag))
                )
                acked.extend(
                    data for code, _, data in outcomes if code == "ok" and "seq" in (data or {})
                )
                return outcomes

            # 1. A healthy database: everything queues for the two connections and completes.
            started = time.monotonic()
            healthy = await run_batch("healthy")
            figures["healthy"] = {
                "codes": dict(Counter(code for code, _, _ in healthy)),
                "wall_s": round(time.monotonic() - started, 2),
                "slowest_s": round(max(t for _, t, _ in healthy), 2),
            }
            assert {code for code, _, _ in healthy} == {"ok"}, figures["healthy"]

            # 2. The database blocks the appends: bounded waits, then `unavailable`.
            async with _blocked(settings, hot):
                started = time.monotonic()
                blocked = await run_batch("blocked")
                wall = time.monotonic() - started
                await asyncio.sleep(max(0.0, BLOCK_FOR - wall))
            codes = Counter(code for code, _, _ in blocked)
            figures["blocked"] = {
                "codes": dict(codes),
                "wall_s": round(wall, 2),
                "slowest_s": round(max(t for _, t, _ in blocked), 2),
            }
            assert set(codes) <= {"ok", "unavailable"}, codes
            assert codes["unavailable"] > 0, "the blocked appends never timed out"

            # 3. The blocker is gone: the same process serves everything again.
            after = await run_batch("after")
            figures["after"] = dict(Counter(code for code, _, _ in after))
            assert {code for code, _, _ in after} == {"ok"}, figures["after"]
            assert server.process.poll() is None

    await asyncio.sleep(0.5)  # work a cancelled call left running may still land
    rows = await consistent_messages_of(settings, user)
    contents = Counter(str(r[2]) for r in rows)
    assert max(contents.values()) == 1, "a message was stored twice"
    assert set(contents) <= attempted
    stored = {str(r[0]): (int(r[1]), str(r[2])) for r in rows}
    for message in acked:
        assert stored[str(message["id"])] == (int(message["seq"]), message["content"])
    figures["stored_without_ack"] = len(rows) - len(acked)
    print(f"[{backend}] pool exhaustion: {figures}")
    # Every append told `unavailable` was blocked for longer than the timeout: none may land
    # later (found on SQLite: the shielded transaction went on waiting for the write lock and
    # committed once it was free, so a client's retry would have stored the message twice).
    assert figures["stored_without_ack"] == 0
