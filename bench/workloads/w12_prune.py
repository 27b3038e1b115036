"""W12: appends while a retention prune deletes 100,000 messages.

1,000 idle conversations of 100 messages each (written by SQL, then aged 60 days) are pruned
by ``ConversationStore.prune(idle_days=30)`` while one writer appends to a conversation of
its own, one message at a time. The figure is the appends' p99 during the prune over their
p99 alone, measured just before on the same conversation (target ≤ 2x); the prune's own
throughput (messages deleted per second) is reported beside it.
"""

from __future__ import annotations

import asyncio
import math
import time

from bench.context import BenchContext
from bench.harness import Figure, Stats, Target
from bench.report import WorkloadResult
from bench.workloads._workload import Workload
from store.contract import PRUNE_BATCH

TARGET = Target("<=", 2.0)
USER = "bench-w12"
CONVERSATIONS = 1_000
PER_CONVERSATION = 100

_SEED = f"""
INSERT INTO users (id, created_at) VALUES ($1, now()) ON CONFLICT DO NOTHING;
WITH c AS (
    INSERT INTO conversations
        (id, user_id, title, metadata, created_at, updated_at, message_count, last_seq,
         token_total)
    SELECT gen_random_uuid(), $1, 'idle ' || n, '{{}}', now() - interval '60 days',
           now() - interval '60 days', {PER_CONVERSATION}, {PER_CONVERSATION},
           {PER_CONVERSATION * 20}
    FROM generate_series(1, {CONVERSATIONS}) n
    RETURNING id
)
INSERT INTO messages (id, conversation_id, user_id, seq, role, content, metadata, created_at,
                      token_count)
SELECT gen_random_uuid(), c.id, $1, s, 'user', 'an idle message about the weather ' || s,
       '{{}}', now() - interval '60 days', 20
FROM c, generate_series(1, {PER_CONVERSATION}) s;
"""


async def run(ctx: BenchContext) -> WorkloadResult:
    result = WorkloadResult(
        "W12",
        WORKLOAD.title,
        parameters={"conversations": CONVERSATIONS, "messages": CONVERSATIONS * PER_CONVERSATION},
    )
    store = ctx.store
    hot = await store.create_conversation(user=USER, title="W12 hot")

    async def append() -> float:
        started = time.perf_counter()
        await store.append_message(
            user=USER, conversation_id=hot.id, role="user", content="a message while pruning"
        )
        return (time.perf_counter() - started) * 1000

    # A prune of 100,000 messages takes well under a second here: several rounds, each
    # seeding, appending alone, then appending while pruning, so that the p99s rest on
    # hundreds of samples each.
    alone: list[float] = []
    during: list[float] = []
    totals = [0, 0]
    elapsed = 0.0
    for _ in range(ctx.profile.w12_rounds):
        async with ctx.connection(ctx.store_url) as conn:
            # asyncpg runs only a parameterless script of several statements.
            await conn.execute(_SEED.replace("$1", f"'{USER}'"))
            await conn.execute("ANALYZE conversations")
        alone += [await append() for _ in range(300)]
        prune = asyncio.ensure_future(store.prune(idle_days=30, user=USER))
        started = time.perf_counter()
        while not prune.done():
            during.append(await append())
        pruned = await prune
        elapsed += time.perf_counter() - started
        totals[0] += pruned.conversations_deleted
        totals[1] += pruned.messages_deleted
    rounds = ctx.profile.w12_rounds
    ctx.log(f"W12: {rounds} prunes of {totals[1] // rounds:,} messages in {elapsed:.1f} s")

    a, b = Stats.of(during), Stats.of(alone)
    result.figures.append(
        Figure(
            workload="W12",
            key="p99",
            label=f"append p99 while pruning {CONVERSATIONS * PER_CONVERSATION:,} messages ÷ alone",
            unit="ms",
            ratio=a.p99 / b.p99 if b.p99 else math.nan,
            basis="p99 of appends during the prune / p99 of appends just before, same conversation",
            numerator_name="during prune",
            denominator_name="alone",
            numerator=a,
            denominator=b,
            target=TARGET,
        )
    )
    rate = totals[1] / elapsed if elapsed else math.nan
    result.figures.append(
        Figure(
            workload="W12",
            key="rate",
            label=f"prune throughput (batches of {PRUNE_BATCH} conversations)",
            unit="msg/s",
            ratio=math.nan,
            basis="messages deleted / seconds the prune took, appends running beside it",
            numerator=Stats.of([rate]),
        )
    )
    expected = [rounds * CONVERSATIONS, rounds * CONVERSATIONS * PER_CONVERSATION]
    async with ctx.connection(ctx.store_url) as conn:
        stored = await conn.fetchval(
            "SELECT count(*) FROM messages WHERE conversation_id = $1", hot.id
        )
    appended = len(alone) + len(during)
    result.checks = {
        "passed": totals == expected and len(during) > 0 and stored == appended,
        "summary": (
            f"{rounds} prunes: {totals[0]:,} conversations, {totals[1]:,} messages deleted "
            f"(expected {expected[0]:,}, {expected[1]:,}); {len(during):,} appends during them, "
            f"{stored:,} of {appended:,} appends stored"
        ),
    }
    return result


WORKLOAD = Workload("W12", "appends during a prune of 100,000 messages", run)
