"""W8: ``get_context`` with an 8,000-token budget, on a 5,000-message conversation and on the
500,100-message conversation of the 1M-message store.

The floor fetches the same messages by keyset in one statement, already knowing where they
start (``seq >= S``, S taken from chatstore's answer): what is left is chatstore's own work,
the walk back from the end through the briefs, and the choice of the cut. Targets: each ≤ 2x
the floor, and flat: the long conversation ÷ the 5,000-message one (chatstore) ≤ 1.2x. Without
the large dataset, only the 5,000-message figure is measured.
"""

from __future__ import annotations

import uuid

from bench.context import BenchContext
from bench.fixtures import long_conversation
from bench.floor import FROM_SEQ_SQL, Floor
from bench.harness import Op, Target, compare, derived
from bench.report import WorkloadResult
from bench.workloads._common import HotPath, hot_path_plans, interleave_reads
from bench.workloads._workload import Workload
from store import ConversationStore

TARGET = Target("<=", 2.0)
FLAT_TARGET = Target("<=", 1.2)


async def run(ctx: BenchContext) -> WorkloadResult:
    p = ctx.profile
    small = await long_conversation(ctx)
    result = WorkloadResult(
        "W8",
        WORKLOAD.title,
        parameters={"budget": p.w8_budget, "reads": p.w8_reads, "messages": small.messages},
    )
    sides: list[tuple[str, ConversationStore, Floor, str, uuid.UUID]] = [
        ("small", ctx.store, ctx.floor, small.user, small.id)
    ]
    large = await ctx.large()
    if isinstance(large, str):
        result.notes.append(f"the long conversation is skipped: {large}")
    else:

        async def clients() -> tuple[ConversationStore, Floor]:
            return (
                await ctx.open_store(large.url),
                Floor(await ctx.connect(large.url, application_name="bench_floor")),
            )

        big_store, big_floor = await ctx.fixture("w3_clients", clients)
        deep_user, deep_id = large.deep_conversation
        sides.append(("large", big_store, big_floor, deep_user, deep_id))
        result.parameters["large"] = large.as_dict()

    ops: dict[str, Op] = {}
    checks: dict[str, object] = {}
    paths: dict[str, HotPath] = {}
    for name, store, floor, user, cid in sides:
        context = await store.get_context(user=user, conversation_id=cid, max_tokens=p.w8_budget)
        start = context.messages[0].seq
        rows = await floor.from_seq(cid, user, start)
        checks[f"{name}_same_as_floor"] = [m.id for m in context.messages] == [
            r["id"] for r in rows
        ]
        checks[f"{name}_fits"] = 0 < context.token_count <= p.w8_budget and context.truncated
        checks[f"{name}_starts_at_a_user_turn"] = context.messages[0].role == "user"
        result.parameters[f"{name}_returned"] = len(context.messages)

        async def chatstore(
            store: ConversationStore = store, user: str = user, cid: uuid.UUID = cid
        ) -> None:
            await store.get_context(user=user, conversation_id=cid, max_tokens=p.w8_budget)

        async def floor_side(
            floor: Floor = floor, user: str = user, cid: uuid.UUID = cid, start: int = start
        ) -> None:
            await floor.from_seq(cid, user, start)

        ops[f"chatstore@{name}"] = chatstore
        ops[f"floor@{name}"] = floor_side
        paths[f"get_context ({name})"] = HotPath(chatstore, FROM_SEQ_SQL, (cid, user, start))
    result.checks = {
        **checks,
        "passed": all(bool(v) for v in checks.values()),
        "summary": "same messages as the floor, within the budget, cut at a user turn",
    }
    sampling = await interleave_reads(ctx, "W8", ops, p.w8_reads)
    result.figures.append(
        compare(
            "W8",
            "small",
            f"get_context({p.w8_budget:,} tokens), {small.messages:,}-message conversation",
            sampling,
            numerator="chatstore@small",
            denominator="floor@small",
            target=TARGET,
        )
    )
    if len(sides) > 1:
        result.figures += [
            compare(
                "W8",
                "large",
                f"get_context({p.w8_budget:,} tokens), 500,100-message conversation, 1M store",
                sampling,
                numerator="chatstore@large",
                denominator="floor@large",
                target=TARGET,
            ),
            derived(
                "W8",
                "flat",
                "flat: 500,100-message ÷ 5,000-message conversation (chatstore)",
                sampling,
                numerator="chatstore@large",
                denominator="chatstore@small",
                target=FLAT_TARGET,
                basis="median chatstore on the long conversation / on the 5,000-message one",
            ),
        ]
    result.plans += await hot_path_plans(
        ctx, "W8", {"get_context (small)": paths["get_context (small)"]}
    )
    await ctx.profile_op("W8 get_context", ops["chatstore@small"], 2000)
    return result


WORKLOAD = Workload("W8", "get_context, 8,000 tokens, 5,000 and 500,100 messages", run)
