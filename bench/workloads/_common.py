"""Helpers shared by the workloads: plans of the SQL each side sends, and how PostgreSQL
cached them (the sequence checks are in ``bench.checks``)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import asyncpg

from bench.context import BenchContext
from bench.explain import PlanRecord, capture, plan_record
from bench.harness import Op

__all__ = ["ROLES", "floor_plan", "plan_cache", "store_plans"]

ROLES = ("user", "assistant")


async def store_plans(
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


async def floor_plan(
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
