"""W5: ``list_conversations`` for a user with 10,000 conversations, first and 100th page.

The 100th page (page size 20) starts after 1,980 rows. chatstore reaches it by following
its own opaque cursors; the floor by its keyset position ``(updated_at, id)``. Both pages are
then read ``w5_reads`` (500) times per side, all four variants interleaved. The floor is the
keyset query on ``(user_id, updated_at, id)`` returning raw records.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from typing import TypeVar

from bench.context import BenchContext
from bench.fixtures import conversation_list
from bench.floor import CONVERSATIONS_AFTER_SQL, CONVERSATIONS_FIRST_SQL, Position
from bench.harness import Target, compare, derived
from bench.report import WorkloadResult
from bench.workloads._common import HotPath, hot_path_plans, interleave_reads, plan_cache
from bench.workloads._workload import Workload

TARGET = Target("<=", 1.5)
C = TypeVar("C")


async def _walk(
    fetch: Callable[[C | None], Awaitable[tuple[list[uuid.UUID], C | None]]], number: int
) -> tuple[list[uuid.UUID], C | None]:
    """Follow ``fetch``'s cursors from the first page to the last: every id in order, and
    the cursor that fetches page ``number``."""
    ids: list[uuid.UUID] = []
    cursor: C | None = None
    start: C | None = None
    pages = 0
    while True:
        pages += 1
        page, cursor = await fetch(cursor)
        ids += page
        if pages == number - 1:
            start = cursor
        if cursor is None:
            return ids, start


async def run(ctx: BenchContext) -> WorkloadResult:
    p = ctx.profile
    listing = await conversation_list(ctx)
    user, size, number = listing.user, p.w5_page, p.w5_page_number
    result = WorkloadResult(
        "W5",
        WORKLOAD.title,
        parameters={
            "conversations": listing.conversations,
            "page": size,
            "page_number": number,
            "rows_skipped": size * (number - 1),
            "reads": p.w5_reads,
            "warmup": p.read_warmup,
        },
    )
    store, floor = ctx.store, ctx.floor

    # Walk every page on both sides once: the order must be the same, nothing skipped
    # or repeated; remember where page `number` starts.
    async def store_page(cursor: str | None) -> tuple[list[uuid.UUID], str | None]:
        page = await store.list_conversations(user=user, limit=size, cursor=cursor)
        return [c.id for c in page.conversations], page.next_cursor

    async def floor_page(position: Position | None) -> tuple[list[uuid.UUID], Position | None]:
        rows, following = await floor.conversations(user, size, position)
        return [r["id"] for r in rows], following

    store_ids, store_cursor = await _walk(store_page, number)
    floor_ids, floor_position = await _walk(floor_page, number)
    assert store_cursor is not None and floor_position is not None
    deep_store = await store.list_conversations(user=user, limit=size, cursor=store_cursor)
    deep_rows, _ = await floor.conversations(user, size, floor_position)
    skipped = size * (number - 1)
    checks = {
        "all_listed_once": len(store_ids) == len(set(store_ids)) == listing.conversations,
        "same_order_as_floor": store_ids == floor_ids,
        "deep_page_rows": [c.id for c in deep_store.conversations]
        == store_ids[skipped : skipped + size]
        == [r["id"] for r in deep_rows],
    }
    result.checks = {
        **checks,
        "passed": all(checks.values()),
        "summary": f"all {listing.conversations:,} listed once, same order as the floor",
    }

    async def cs_first() -> None:
        await store.list_conversations(user=user, limit=size)

    async def fl_first() -> None:
        await floor.conversations(user, size)

    async def cs_deep() -> None:
        await store.list_conversations(user=user, limit=size, cursor=store_cursor)

    async def fl_deep() -> None:
        await floor.conversations(user, size, floor_position)

    sampling = await interleave_reads(
        ctx,
        "W5",
        {
            "chatstore@first": cs_first,
            "floor@first": fl_first,
            "chatstore@deep": cs_deep,
            "floor@deep": fl_deep,
        },
        p.w5_reads,
    )
    result.figures += [
        compare(
            "W5",
            "first_page",
            f"list_conversations: first page of {listing.conversations:,}",
            sampling,
            numerator="chatstore@first",
            denominator="floor@first",
            target=TARGET,
        ),
        compare(
            "W5",
            "deep_page",
            f"list_conversations: page {number} ({skipped:,} rows deep)",
            sampling,
            numerator="chatstore@deep",
            denominator="floor@deep",
            target=TARGET,
        ),
        derived(
            "W5",
            "deep_vs_first",
            f"page {number} ÷ first page (chatstore)",
            sampling,
            numerator="chatstore@deep",
            denominator="chatstore@first",
            basis="median chatstore deep page / median chatstore first page",
        ),
    ]
    result.parameters["floor_plan_cache"] = {
        "first": await plan_cache(floor.conn, CONVERSATIONS_FIRST_SQL),
        "after": await plan_cache(floor.conn, CONVERSATIONS_AFTER_SQL),
    }
    deep_args = (user, floor_position[0], floor_position[1], size + 1)
    result.plans += await hot_path_plans(
        ctx,
        "W5",
        {
            "first page": HotPath(cs_first, CONVERSATIONS_FIRST_SQL, (user, size + 1)),
            f"page {number} (cursor)": HotPath(cs_deep, CONVERSATIONS_AFTER_SQL, deep_args),
        },
    )
    await ctx.profile_op("W5 list_conversations deep", cs_deep, 3000)
    return result


WORKLOAD = Workload("W5", "list_conversations, 10,000 conversations", run)
