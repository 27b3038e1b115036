"""Helpers shared by the workloads: the read loop, plans of the SQL each side sends, and how
PostgreSQL cached them (the sequence checks are in ``bench.checks``)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

import asyncpg

from bench.context import BenchContext
from bench.explain import PlanRecord, capture, plan_record
from bench.harness import Op, Sampling, interleave

__all__ = ["ROLES", "HotPath", "hot_path_plans", "interleave_reads", "plan_cache"]

ROLES = ("user", "assistant")


async def interleave_reads(
    ctx: BenchContext, workload: str, ops: Mapping[str, Op], reads: int
) -> Sampling:
    """Time each read ``reads`` times, interleaved, after the profile's read warm-up."""
    ctx.log(f"{workload}: {len(ops)} variants x {reads:,} reads, interleaved")
    p = ctx.profile
    return await interleave(ops, repetitions=reads, warmup=p.read_warmup, budget_s=p.budget_s)


class HotPath(NamedTuple):
    """One hot path to EXPLAIN: the chatstore call, and the floor's statement with its
    arguments."""

    call: Op
    query: str
    args: Sequence[Any]


async def hot_path_plans(
    ctx: BenchContext,
    workload: str,
    paths: Mapping[str, HotPath],
    *,
    url: str | None = None,
    replace: Callable[[Any], Any] | None = None,
) -> list[PlanRecord]:
    """The plans of each named hot path, chatstore's then the floor's.

    chatstore's: the SQL it sends for ``call``, captured (see ``_store_plans``, also for
    ``replace``); the floor's: its ``query`` with ``args``. ``url``: one database holding
    both sides' data (W3's large one); by default each side's own run database.
    """
    store_url, floor_url = (url, url) if url is not None else (ctx.store_url, ctx.floor_url)
    plans: list[PlanRecord] = []
    for name, path in paths.items():
        plans += await _store_plans(
            ctx, workload=workload, name=name, url=store_url, call=path.call, replace=replace
        )
        plans.append(
            await _floor_plan(
                ctx, workload=workload, name=name, url=floor_url, query=path.query, args=path.args
            )
        )
    return plans


async def _store_plans(
    ctx: BenchContext,
    *,
    workload: str,
    name: str,
    url: str,
    call: Op,
    replace: Callable[[Any], Any] | None = None,
) -> list[PlanRecord]:
    """Run one chatstore call, capture the SQL it sends, and EXPLAIN each statement.

    ``replace`` maps captured arguments before EXPLAIN ANALYZE re-runs a write (a fresh
    message id, say, so the re-run does not collide with the row the call stored).
    """
    with capture() as seen:
        await call()
    trips = len(seen)
    plans = []
    async with ctx.connection(url, application_name="bench_explain") as conn:
        for statement in seen:
            if statement.is_pool_reset:
                continue
            args = tuple(replace(a) for a in statement.args) if replace else statement.args
            plans.append(
                await plan_record(
                    conn,
                    workload=workload,
                    name=name,
                    side="chatstore",
                    query=statement.query,
                    args=args,
                    round_trips_per_call=trips,
                )
            )
    resets = sum(1 for statement in seen if statement.is_pool_reset)
    for plan in plans:
        if resets:
            plan.warnings.append(
                f"{resets} of the {trips} round trips per call is the connection pool's "
                "reset query (asyncpg Pool.release)"
            )
    return plans


async def _floor_plan(
    ctx: BenchContext,
    *,
    workload: str,
    name: str,
    url: str,
    query: str,
    args: Sequence[Any],
) -> PlanRecord:
    async with ctx.connection(url, application_name="bench_explain") as conn:
        return await plan_record(
            conn,
            workload=workload,
            name=name,
            side="floor",
            query=query,
            args=args,
            round_trips_per_call=1,
        )


async def plan_cache(conn: asyncpg.Connection, query: str) -> dict[str, int] | None:
    """How PostgreSQL ran ``query`` as a prepared statement on ``conn`` so far.

    From its sixth execution on, PostgreSQL either reuses one generic plan or keeps planning
    each call anew (a custom plan, ~50 µs here) when it estimates the generic plan to be
    dearer. The choice depends on the statement and the table statistics, not the client,
    so chatstore's connections make the same choice as the floor's for the same SQL.
    """
    row = await conn.fetchrow(
        "SELECT generic_plans, custom_plans FROM pg_prepared_statements WHERE statement = $1",
        query,
    )
    return None if row is None else {"generic": row["generic_plans"], "custom": row["custom_plans"]}
