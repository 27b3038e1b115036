"""W4: concurrent appenders into one conversation.

``w4_workers`` (8) tasks each append ``w4_per_worker`` (250) messages to the same
conversation as fast as they can. chatstore: one ``ConversationStore`` (its pool, default
size) shared by the 8 tasks. Floor: 8 raw asyncpg connections, each doing the
single-statement append. The row lock on the conversation serialises the appends, so this
measures how well each side keeps that lock busy.

Rounds alternate which side goes first; each round appends into a fresh conversation.
Throughput is messages per second of wall-clock time for the whole round; the figure is
the ratio of the median round throughputs (target >= 1.0x). After every round the
conversation is checked: no acknowledged message lost, none stored twice, seq exactly
1..N, message_count = last_seq = N.
"""

from __future__ import annotations

import asyncio
import math
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import asyncpg

from bench.checks import check_sequence, totals
from bench.context import BenchContext
from bench.datagen import message_content
from bench.floor import Floor
from bench.harness import CHATSTORE, FLOOR, Figure, Stats, Target, percentile
from bench.report import WorkloadResult
from bench.workloads._common import ROLES
from bench.workloads._workload import Workload

TARGET = Target(">=", 1.0)
USER = "bench-w4"

Append = Callable[[int, int], Awaitable[tuple[uuid.UUID, int]]]


@dataclass(slots=True)
class Round:
    side: str
    elapsed_s: float
    messages: int
    latencies_ms: list[float] = field(default_factory=list)
    check: dict[str, Any] = field(default_factory=dict)

    @property
    def throughput(self) -> float:
        return self.messages / self.elapsed_s


async def _round(
    side: str, workers: int, per_worker: int, append: Append
) -> tuple[Round, list[tuple[uuid.UUID, int]]]:
    acknowledged: list[tuple[uuid.UUID, int]] = []
    latencies: list[float] = []

    async def worker(w: int) -> None:
        for i in range(per_worker):
            before = time.perf_counter_ns()
            acknowledged.append(await append(w, i))
            latencies.append((time.perf_counter_ns() - before) / 1e6)

    started = time.perf_counter()
    await asyncio.gather(*(worker(w) for w in range(workers)))
    elapsed = time.perf_counter() - started
    return Round(side, elapsed, len(acknowledged), latencies), acknowledged


async def run(ctx: BenchContext) -> WorkloadResult:
    p = ctx.profile
    workers, per_worker, rounds = p.w4_workers, p.w4_per_worker, p.w4_rounds
    result = WorkloadResult(
        "W4",
        WORKLOAD.title,
        parameters={
            "workers": workers,
            "per_worker": per_worker,
            "rounds_per_side": rounds,
            "chatstore_pool_max": ctx.store.settings.db_pool_max,
        },
    )
    store = ctx.store

    async def open_floor_connections() -> list[asyncpg.Connection]:
        return [
            await ctx.connect(ctx.floor_url, application_name="bench_floor") for _ in range(workers)
        ]

    floor_conns = await ctx.fixture(f"w4_floor_connections_{workers}", open_floor_connections)
    floors = [Floor(conn) for conn in floor_conns]

    async def store_conversation() -> tuple[Append, uuid.UUID]:
        conversation = await store.create_conversation(user=USER, title="W4")
        cid = str(conversation.id)

        async def append(w: int, i: int) -> tuple[uuid.UUID, int]:
            n = w * per_worker + i
            message = await store.append_message(
                user=USER,
                conversation_id=cid,
                role=ROLES[n % 2],
                content=f"w{w}-{i} {message_content(n)}",
            )
            return message.id, message.seq

        return append, conversation.id

    async def floor_conversation() -> tuple[Append, uuid.UUID]:
        cid = await floors[0].create_conversation(USER)

        async def append(w: int, i: int) -> tuple[uuid.UUID, int]:
            n = w * per_worker + i
            row = await floors[w].append(cid, USER, ROLES[n % 2], f"w{w}-{i} {message_content(n)}")
            return row["id"], row["seq"]

        return append, cid

    makers = {CHATSTORE: store_conversation, FLOOR: floor_conversation}
    check_urls = {CHATSTORE: ctx.store_url, FLOOR: ctx.floor_url}

    # Warm-up: every pooled connection opened, statements prepared, on both sides.
    for side in (CHATSTORE, FLOOR):
        append, _ = await makers[side]()
        await _round(side, workers, 10, append)

    measured: list[Round] = []
    ctx.log(f"W4: {rounds} rounds per side of {workers} x {per_worker} appends")
    started = time.perf_counter()
    for r in range(rounds):
        order = (CHATSTORE, FLOOR) if r % 2 == 0 else (FLOOR, CHATSTORE)
        for side in order:
            append, cid = await makers[side]()
            outcome, acknowledged = await _round(side, workers, per_worker, append)
            async with ctx.connection(check_urls[side]) as conn:
                outcome.check = await check_sequence(conn, cid, acknowledged=acknowledged)
            measured.append(outcome)
        if time.perf_counter() - started > p.budget_s * 2 and r + 1 < rounds:
            result.notes.append(f"stopped after {r + 1} rounds: time budget")
            break

    by_side = {side: [m for m in measured if m.side == side] for side in (CHATSTORE, FLOOR)}
    throughput = {side: Stats.of([m.throughput for m in by_side[side]]) for side in by_side}
    latency = {
        side: Stats.of([x for m in by_side[side] for x in m.latencies_ms]) for side in by_side
    }
    pairs = list(zip(by_side[CHATSTORE], by_side[FLOOR], strict=False))
    ratio = throughput[CHATSTORE].median / throughput[FLOOR].median
    result.figures.append(
        Figure(
            workload="W4",
            key="throughput",
            label=f"{workers} concurrent appenders x {per_worker}, one conversation",
            unit="msg/s",
            ratio=ratio,
            basis="median round throughput chatstore / floor (rounds alternate order)",
            numerator=throughput[CHATSTORE],
            denominator=throughput[FLOOR],
            ratio_p99=None,
            round_ratios=[a.throughput / b.throughput for a, b in pairs],
            target=TARGET,
        )
    )
    lat_c, lat_f = latency[CHATSTORE], latency[FLOOR]
    result.figures.append(
        Figure(
            workload="W4",
            key="latency",
            label="append latency under contention",
            unit="ms",
            ratio=lat_c.median / lat_f.median if lat_f.median else math.nan,
            basis="median per-append latency chatstore / floor, all rounds",
            numerator=lat_c,
            denominator=lat_f,
            ratio_p99=lat_c.p99 / lat_f.p99 if lat_f.p99 else math.nan,
            round_ratios=[
                percentile(a.latencies_ms, 50) / percentile(b.latencies_ms, 50) for a, b in pairs
            ],
        )
    )
    summed = totals(m.check for m in measured)
    passed = all(m.check["passed"] for m in measured)
    result.checks = {
        "passed": passed,
        "summary": (
            f"{len(measured)} rounds: {summed['lost']} lost, {summed['duplicated']} duplicated, "
            f"gapless={'yes' if all(m.check['gapless'] for m in measured) else 'NO'}"
        ),
        "totals": summed,
        "rounds": [
            {"side": m.side, "elapsed_s": m.elapsed_s, "throughput": m.throughput, **m.check}
            for m in measured
        ],
    }
    return result


WORKLOAD = Workload("W4", "8 concurrent appenders into one conversation", run)
