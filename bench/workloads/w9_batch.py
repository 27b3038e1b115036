"""W9: batch appends (``ConversationStore.append_messages``), 25 messages of ~400 characters.

Each side appends ``w9_batches`` batches to its own conversation, one batch at a time,
interleaved; the floor stores each batch in one hand-written statement (the counters moved
once, a multi-row INSERT from arrays), handed its token counts, while chatstore validates every
message, counts its tokens and checks nothing is replayed. The figure is messages/s, chatstore
÷ floor (target ≥ 0.8x). The same batches on chatstore's embedded SQLite (a file in a temporary
folder) are reported beside it, as messages/s.
"""

from __future__ import annotations

import itertools
import math
import tempfile
import time
import uuid
from pathlib import Path

from bench.checks import check_sequence
from bench.context import BenchContext
from bench.datagen import message_content
from bench.floor import APPEND_BATCH_SQL
from bench.harness import CHATSTORE, FLOOR, Figure, Stats, Target, interleave, round_ratios
from bench.report import WorkloadResult
from bench.workloads._common import ROLES, HotPath, hot_path_plans
from bench.workloads._workload import Workload
from store import ConversationStore, Settings

TARGET = Target(">=", 0.8)
USER = "bench-w9"


def _batch(counter: itertools.count[int], size: int) -> list[tuple[str, str]]:
    return [(ROLES[n % 2], message_content(n)) for n in itertools.islice(counter, size)]


def _throughput(batch: int, latencies_ms: list[float]) -> Stats:
    return Stats.of([batch * 1000 / ms for ms in latencies_ms if ms > 0])


async def run(ctx: BenchContext) -> WorkloadResult:
    p = ctx.profile
    size, batches = p.w9_batch, p.w9_batches
    result = WorkloadResult(
        "W9", WORKLOAD.title, parameters={"batch": size, "batches": batches, "chars": 400}
    )
    store, floor = ctx.store, ctx.floor
    counter = itertools.count()
    store_conv = await store.create_conversation(user=USER, title="W9")
    floor_conv = await floor.create_conversation(USER)

    acknowledged: list[tuple[uuid.UUID, int]] = []

    async def chatstore() -> None:
        messages = [{"role": r, "content": c} for r, c in _batch(counter, size)]
        stored = await store.append_messages(
            user=USER, conversation_id=store_conv.id, messages=messages
        )
        acknowledged.extend((m.id, m.seq) for m in stored)

    async def floor_side() -> None:
        await floor.append_batch(floor_conv, USER, _batch(counter, size))

    sampling = await interleave(
        {CHATSTORE: chatstore, FLOOR: floor_side},
        repetitions=batches,
        warmup=p.w1_warmup // 3,
        budget_s=p.budget_s,
    )
    chat, base = _throughput(size, sampling.ms(CHATSTORE)), _throughput(size, sampling.ms(FLOOR))
    result.figures.append(
        Figure(
            workload="W9",
            key="throughput",
            label=f"append_messages, batches of {size}, one conversation (PostgreSQL)",
            unit="msg/s",
            ratio=chat.median / base.median if base.median else math.nan,
            basis="median per-batch messages/s chatstore / floor, same run, interleaved",
            numerator=chat,
            denominator=base,
            round_ratios=round_ratios(sampling.ms(FLOOR), sampling.ms(CHATSTORE)),
            target=TARGET,
            truncated=sampling.truncated,
        )
    )
    result.figures.append(await _sqlite_throughput(ctx, size, batches))

    async with ctx.connection(ctx.store_url) as conn:
        checks = await check_sequence(conn, store_conv.id, acknowledged=acknowledged)
    checks["summary"] = (
        f"{checks['stored']:,} stored in batches: each acknowledged once, gapless seq, "
        "counters match"
    )
    result.checks = checks

    probe = [("user", "plan"), ("assistant", "plan")]
    result.plans += await hot_path_plans(
        ctx,
        "W9",
        {
            "batch": HotPath(
                lambda: store.append_messages(
                    user=USER,
                    conversation_id=store_conv.id,
                    messages=[{"role": r, "content": c} for r, c in probe],
                ),
                APPEND_BATCH_SQL,
                (
                    floor_conv,
                    USER,
                    2,
                    2,
                    [uuid.uuid4(), uuid.uuid4()],
                    ["user"] * 2,
                    ["p"] * 2,
                    [1, 1],
                ),
            )
        },
        # EXPLAIN ANALYZE runs the captured batch again: with new message ids.
        replace=_fresh_ids,
    )
    return result


def _fresh_ids(arg: object) -> object:
    if isinstance(arg, list) and arg and isinstance(arg[0], uuid.UUID):
        return [uuid.uuid4() for _ in arg]
    return arg


async def _sqlite_throughput(ctx: BenchContext, size: int, batches: int) -> Figure:
    """The same batches on an embedded SQLite file: messages/s, per batch."""
    counter = itertools.count()
    with tempfile.TemporaryDirectory() as folder:
        settings = Settings(database_url=f"sqlite://{Path(folder) / 'w9.sqlite3'}")
        async with ConversationStore(settings) as lite:
            conversation = await lite.create_conversation(user=USER)
            latencies: list[float] = []
            for _ in range(batches):
                messages = [{"role": r, "content": c} for r, c in _batch(counter, size)]
                started = time.perf_counter()
                await lite.append_messages(
                    user=USER, conversation_id=conversation.id, messages=messages
                )
                latencies.append((time.perf_counter() - started) * 1000)
    ctx.log(f"W9: SQLite {batches} batches")
    stats = _throughput(size, latencies)
    step = max(1, len(latencies) // 5)
    return Figure(
        workload="W9",
        key="sqlite",
        label=f"append_messages, batches of {size} (embedded SQLite)",
        unit="msg/s",
        ratio=math.nan,
        basis="median per-batch messages/s, chatstore on SQLite alone",
        numerator=stats,
        slice_values=[
            _throughput(size, latencies[i : i + step]).median
            for i in range(0, len(latencies), step)
        ],
    )


WORKLOAD = Workload("W9", "batch appends of 25 messages", run)
