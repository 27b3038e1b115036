"""pg_terminate_backend at the store level: a pooled connection killed under load.

The server-level test kills backends a few times; this one does it many times in a few
seconds with appenders and readers hammering a small pool, so that connections are killed
while idle in the pool, mid-query and mid-acquire. Every call must end as a result or a clean
``unavailable`` (found: a connection that had already received the server's FATAL error was
handed out and failed with asyncpg's ``InternalClientError``, which escaped as a crash), and
the data must stay consistent.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter

from store import ConversationStore, Message, Settings, StoreError
from tests.leaks import clean
from tests.rawdb import consistent_messages_of
from tests.reliability.pg import PrivatePostgres

ROUNDS = 25
WORKERS = 8


async def test_store_survives_terminated_backends(
    private_pg: PrivatePostgres, fault_url: str
) -> None:
    settings = Settings(
        database_url=fault_url, db_pool_max=4, db_timeout=3.0, db_connect_timeout=2.0
    )
    user = f"kill-{uuid.uuid4().hex[:8]}"
    outcomes: Counter[str] = Counter()
    acked: list[Message] = []
    slowest = 0.0
    stop = asyncio.Event()
    database = fault_url.rsplit("/", 1)[1]
    async with ConversationStore(settings) as store:
        conversations = [await store.create_conversation(user=user) for _ in range(2)]

        async def worker(index: int) -> None:
            nonlocal slowest
            n = 0
            while not stop.is_set():
                n += 1
                conversation = conversations[n % 2]
                started = time.monotonic()
                try:
                    if index % 4 == 3:
                        await store.list_messages(user=user, conversation_id=conversation.id)
                    else:
                        acked.append(
                            await store.append_message(
                                user=user,
                                conversation_id=conversation.id,
                                role="user",
                                content=f"w{index}-{n}",
                                idempotency_key=f"w{index}-{n}" if index % 2 else None,
                            )
                        )
                    outcomes["ok"] += 1
                except StoreError as exc:
                    clean(str(exc))
                    outcomes[exc.code] += 1
                except Exception as exc:  # the bug: anything else escaping the store
                    outcomes[f"{type(exc).__module__}.{type(exc).__name__}"] += 1
                slowest = max(slowest, time.monotonic() - started)
                await asyncio.sleep(0.002)

        tasks = [asyncio.create_task(worker(i)) for i in range(WORKERS)]
        killed = 0
        admin = await private_pg.connect()
        try:
            for _ in range(ROUNDS):
                await asyncio.sleep(0.12)
                killed += await admin.fetchval(
                    "SELECT count(*) FROM (SELECT pg_terminate_backend(pid) "
                    "FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()) t",
                    database,
                )
        finally:
            await admin.close()
            stop.set()
            await asyncio.gather(*tasks)

        # The same store goes on working.
        after = await store.append_message(
            user=user, conversation_id=conversations[0].id, role="user", content="after"
        )
        acked.append(after)

    print(f"killed backends: {killed} killed, outcomes {dict(outcomes)}, slowest {slowest:.2f}s")
    assert killed >= ROUNDS // 2, "the test did not manage to kill the store's backends"
    assert set(outcomes) <= {"ok", "unavailable"}, outcomes
    assert slowest < 2 * settings.db_timeout + 2
    rows = await consistent_messages_of(settings, user)
    stored = {str(r[0]): (int(r[1]), str(r[2])) for r in rows}
    assert len({r[2] for r in rows}) == len(rows), "a message was stored twice"
    for message in acked:
        assert stored.get(str(message.id)) == (message.seq, message.content)
