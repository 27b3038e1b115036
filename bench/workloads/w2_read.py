"""W2: the latest page of a long conversation (``ConversationStore.list_messages``).

The latest ``w2_page`` (50) messages of a ``w2_messages`` (5,000)-message conversation of
~400-character messages, read ``w2_reads`` (500) times per side, interleaved. The floor is
the keyset query on ``(conversation_id, seq)`` returning raw records.
"""

from __future__ import annotations

from bench.context import BenchContext
from bench.fixtures import long_conversation
from bench.floor import LATEST_SQL
from bench.harness import CHATSTORE, FLOOR, Target, compare
from bench.report import WorkloadResult
from bench.workloads._common import HotPath, hot_path_plans, interleave_reads, plan_cache
from bench.workloads._workload import Workload

TARGET = Target("<=", 1.5)


async def run(ctx: BenchContext) -> WorkloadResult:
    p = ctx.profile
    conversation = await long_conversation(ctx)
    user, cid, limit = conversation.user, conversation.id, p.w2_page
    result = WorkloadResult(
        "W2",
        WORKLOAD.title,
        parameters={
            "messages": conversation.messages,
            "page": limit,
            "reads": p.w2_reads,
            "warmup": p.read_warmup,
        },
    )
    store, floor = ctx.store, ctx.floor

    async def chatstore() -> None:
        await store.list_messages(user=user, conversation_id=str(cid), limit=limit)

    async def floor_side() -> None:
        await floor.latest(cid, user, limit)

    # Same rows on both sides: the same page must come back.
    page = await store.list_messages(user=user, conversation_id=str(cid), limit=limit)
    rows, more = await floor.latest(cid, user, limit)
    same = [m.id for m in page.messages] == [r["id"] for r in rows] and page.has_more == more
    expected_seqs = list(range(conversation.messages - limit + 1, conversation.messages + 1))
    right = [m.seq for m in page.messages] == expected_seqs and page.has_more
    result.checks = {
        "passed": same and right,
        "summary": "chatstore and floor return the same page, seqs in ascending order",
        "same_page": same,
        "expected_seqs": right,
    }

    sampling = await interleave_reads(
        ctx, "W2", {CHATSTORE: chatstore, FLOOR: floor_side}, p.w2_reads
    )
    result.figures.append(
        compare(
            "W2",
            "latest_page",
            f"list_messages: latest {limit} of {conversation.messages:,}",
            sampling,
            target=TARGET,
        )
    )
    result.parameters["floor_plan_cache"] = await plan_cache(floor.conn, LATEST_SQL)
    result.plans += await hot_path_plans(
        ctx, "W2", {"latest page": HotPath(chatstore, LATEST_SQL, (cid, user, limit + 1))}
    )
    await ctx.profile_op("W2 list_messages", chatstore, 3000)
    return result


WORKLOAD = Workload("W2", "latest page of a 5,000-message conversation", run)
