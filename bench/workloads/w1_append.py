"""W1: sequential appends to one conversation (``ConversationStore.append_message``).

Each side appends ``w1_appends`` (2,000) messages of ~400 characters, one at a time, to
its own conversation; the two sides alternate operation by operation. The ratio is
chatstore's median latency over the floor's single-statement append. Durability is the
server's (``synchronous_commit`` as configured), identical for both sides.
"""

from __future__ import annotations

import itertools
import math
import time
import uuid
from typing import Any

from bench.checks import check_sequence, stored_messages
from bench.context import BenchContext
from bench.datagen import message_content
from bench.floor import APPEND_SQL
from bench.harness import (
    CHATSTORE,
    FLOOR,
    Figure,
    Op,
    Stats,
    Target,
    compare,
    interleave,
    percentile,
)
from bench.report import WorkloadResult
from bench.workloads._common import ROLES, HotPath, hot_path_plans
from bench.workloads._workload import Workload
from store import ConversationStore
from store.tokens import tokenizer

#: chatstore counts every message's tokens at append time (the floor is handed a count).
TARGET = Target("<=", 1.3)
USER = "bench-w1"


async def run(ctx: BenchContext) -> WorkloadResult:
    p = ctx.profile
    result = WorkloadResult(
        "W1",
        WORKLOAD.title,
        parameters={"appends": p.w1_appends, "warmup": p.w1_warmup, "content_chars": 400},
    )
    store, floor = ctx.store, ctx.floor
    counter = itertools.count()

    def ops(store_cid: str, floor_cid: uuid.UUID) -> dict[str, Op]:
        async def chatstore() -> None:
            i = next(counter)
            await store.append_message(
                user=USER, conversation_id=store_cid, role=ROLES[i % 2], content=message_content(i)
            )

        async def floor_side() -> None:
            i = next(counter)
            await floor.append(floor_cid, USER, ROLES[i % 2], message_content(i))

        return {CHATSTORE: chatstore, FLOOR: floor_side}

    # Warm-up in separate conversations: connections, prepared statements, caches.
    warm_store = await store.create_conversation(user=USER, title="W1 warm-up")
    warm_floor = await floor.create_conversation(USER)
    await interleave(
        ops(str(warm_store.id), warm_floor), repetitions=p.w1_warmup, warmup=0, budget_s=60
    )

    measured_store = await store.create_conversation(user=USER, title="W1")
    measured_floor = await floor.create_conversation(USER)
    ctx.log(f"W1: {p.w1_appends:,} appends per side, interleaved")
    sampling = await interleave(
        ops(str(measured_store.id), measured_floor),
        repetitions=p.w1_appends,
        warmup=0,
        budget_s=p.budget_s,
    )
    result.figures.append(
        compare(
            "W1",
            "append",
            "append_message, sequential, one conversation",
            sampling,
            target=TARGET,
        )
    )

    # Every append is in, in order, with the counters right (both sides).
    # The timed ops keep no record of what they were told: every stored message counts as
    # acknowledged, and the count must be the number of appends timed.
    checks: dict[str, Any] = {}
    for side, url, cid in (
        (CHATSTORE, ctx.store_url, measured_store.id),
        (FLOOR, ctx.floor_url, measured_floor),
    ):
        async with ctx.connection(url) as conn:
            stored = (await stored_messages(conn, [cid]))[cid]
            checks[side] = await check_sequence(conn, cid, acknowledged=stored)
    expected = len(sampling.samples_ns[CHATSTORE])
    passed = (
        all(side["passed"] for side in checks.values()) and checks[CHATSTORE]["stored"] == expected
    )
    checks["passed"] = passed
    checks["summary"] = f"{checks[CHATSTORE]['stored']:,} stored, gapless seq, counters match"
    result.checks = checks

    # Plans: the SQL chatstore sent for one more append, and the floor's statement.
    appended: list[uuid.UUID] = []

    async def one_append() -> None:
        message = await store.append_message(
            user=USER, conversation_id=str(measured_store.id), role="user", content="plan"
        )
        appended.append(message.id)

    started = time.perf_counter()
    fresh = uuid.uuid4()
    floor_args = (measured_floor, USER, uuid.uuid4(), "user", "plan", 1)
    result.plans += await hot_path_plans(
        ctx,
        "W1",
        {"append": HotPath(one_append, APPEND_SQL, floor_args)},
        replace=lambda arg: fresh if appended and arg == appended[0] else arg,
    )
    ctx.log(f"W1: plans in {time.perf_counter() - started:.1f} s")
    result.figures += [
        tokenizer_cost(store, 400, repetitions=2000),
        tokenizer_cost(store, 100_000, repetitions=40),
    ]
    await ctx.profile_op("W1 append_message", ops(str(warm_store.id), warm_floor)[CHATSTORE], 1000)
    return result


def tokenizer_cost(store: ConversationStore, chars: int, *, repetitions: int) -> Figure:
    """What counting one message's tokens costs (wall time on this process, per call)."""
    counter = tokenizer(store.settings.tokenizer)
    text = " ".join(message_content(n) for n in range(chars // 380 + 1))[:chars]
    samples = []
    for _ in range(repetitions):
        before = time.perf_counter_ns()
        counter.count_message(text, None)
        samples.append((time.perf_counter_ns() - before) / 1000)
    size = max(1, len(samples) // 5)
    slices = [percentile(samples[i : i + size], 50) for i in range(0, len(samples), size)]
    return Figure(
        workload="W1",
        key=f"tokenizer_{chars}",
        label=f"tokenizer ({counter.name}): one {chars:,}-character message (English words)",
        unit="µs",
        ratio=math.nan,
        basis="median time of Tokenizer.count_message per message, this process",
        numerator=Stats.of(samples),
        slice_values=slices,
    )


WORKLOAD = Workload("W1", "sequential appends to one conversation", run)
