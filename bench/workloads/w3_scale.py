"""W3: the W2 read, and a page 500,000 messages deep, in a store of >= 1,000,000 messages.

The large dataset (``bench/large.py``: 1,000 users, 10,000 conversations, 1,104,950
messages, one conversation of 500,100) is built once and reused. Eight variants are timed
in one interleaved loop, so noise cancels between all of them:

- W2's read on this run's small database (chatstore and floor) — the baseline;
- the same read (latest 50 of a 5,000-message conversation) on the large database;
- the first page (no cursor) and the page ``before_seq = last_seq + 1 - 500,000`` of the
  500,100-message conversation.

Two more floor variants pin PostgreSQL's plan cache to generic plans on both databases:
on the small database PostgreSQL keeps re-planning the read on every call (a custom plan,
~50-75 µs) while on the large one it settles on the generic plan, which makes the measured
growth come out below 1; the pinned pair shows the growth due to the data alone.

Targets: growth (large ÷ small, chatstore) <= 1.2x; deep page ÷ first page (chatstore)
<= 1.2x. The floor's own growth and depth ratios, and chatstore ÷ floor on the large
database, are reported alongside.
"""

from __future__ import annotations

from bench.context import BenchContext
from bench.fixtures import long_conversation
from bench.floor import BEFORE_SQL, LATEST_SQL, Floor
from bench.harness import Target, compare, derived
from bench.report import WorkloadResult
from bench.workloads._common import HotPath, hot_path_plans, interleave_reads, plan_cache
from bench.workloads._workload import Workload
from store.store import ConversationStore

GROWTH_TARGET = Target("<=", 1.2)
DEPTH_TARGET = Target("<=", 1.2)


async def run(ctx: BenchContext) -> WorkloadResult:
    p = ctx.profile
    result = WorkloadResult("W3", WORKLOAD.title)
    large = await ctx.large()
    if isinstance(large, str):
        result.status = "skipped"
        result.notes.append(large)
        return result
    small = await long_conversation(ctx)
    limit = p.w2_page

    async def clients() -> tuple[ConversationStore, Floor]:
        return (
            await ctx.open_store(large.url),
            Floor(await ctx.connect(large.url, application_name="bench_floor")),
        )

    big_store, big_floor = await ctx.fixture("w3_clients", clients)

    async def generic_floors() -> tuple[Floor, Floor]:
        # Reference only: the floor with PostgreSQL's plan cache pinned to generic plans on
        # both databases, so the growth it shows is the data's, not a re-planning choice.
        generic = {"plan_cache_mode": "force_generic_plan"}
        return (
            Floor(await ctx.connect(ctx.floor_url, server_settings=generic)),
            Floor(await ctx.connect(large.url, server_settings=generic)),
        )

    generic_small, generic_large = await ctx.fixture("w3_generic_floors", generic_floors)
    long_user, long_id = large.long_conversation
    deep_user, deep_id = large.deep_conversation
    last_seq = large.spec.deep_messages
    before_seq = last_seq + 1 - p.w3_deep
    result.parameters = {
        "large": large.as_dict(),
        "page": limit,
        "reads": p.w3_reads,
        "warmup": p.read_warmup,
        "deep_before_seq": before_seq,
        "deep_depth": p.w3_deep,
    }
    store, floor = ctx.store, ctx.floor

    async def cs_small() -> None:
        await store.list_messages(user=small.user, conversation_id=str(small.id), limit=limit)

    async def fl_small() -> None:
        await floor.latest(small.id, small.user, limit)

    async def cs_large() -> None:
        await big_store.list_messages(user=long_user, conversation_id=str(long_id), limit=limit)

    async def fl_large() -> None:
        await big_floor.latest(long_id, long_user, limit)

    async def fg_small() -> None:
        await generic_small.latest(small.id, small.user, limit)

    async def fg_large() -> None:
        await generic_large.latest(long_id, long_user, limit)

    async def cs_first() -> None:
        await big_store.list_messages(user=deep_user, conversation_id=str(deep_id), limit=limit)

    async def fl_first() -> None:
        await big_floor.latest(deep_id, deep_user, limit)

    async def cs_deep() -> None:
        await big_store.list_messages(
            user=deep_user, conversation_id=str(deep_id), limit=limit, before_seq=before_seq
        )

    async def fl_deep() -> None:
        await big_floor.before(deep_id, deep_user, before_seq, limit)

    # The pages are right, and both sides agree.
    deep_page = await big_store.list_messages(
        user=deep_user, conversation_id=str(deep_id), limit=limit, before_seq=before_seq
    )
    deep_rows, deep_more = await big_floor.before(deep_id, deep_user, before_seq, limit)
    first_page = await big_store.list_messages(
        user=deep_user, conversation_id=str(deep_id), limit=limit
    )
    large_page = await big_store.list_messages(
        user=long_user, conversation_id=str(long_id), limit=limit
    )
    large_rows, _ = await big_floor.latest(long_id, long_user, limit)
    checks = {
        "deep_page_seqs": [m.seq for m in deep_page.messages]
        == list(range(before_seq - limit, before_seq)),
        "deep_page_has_more": deep_page.has_more == (before_seq - limit > 1) == deep_more,
        "deep_same_as_floor": [m.id for m in deep_page.messages] == [r["id"] for r in deep_rows],
        "first_page_seqs": [m.seq for m in first_page.messages]
        == list(range(last_seq - limit + 1, last_seq + 1)),
        "large_same_as_floor": [m.id for m in large_page.messages] == [r["id"] for r in large_rows],
    }
    result.checks = {
        **checks,
        "passed": all(checks.values()),
        "summary": "deep and first pages hold the expected seqs; chatstore = floor",
    }

    sampling = await interleave_reads(
        ctx,
        "W3",
        {
            "chatstore@small": cs_small,
            "floor@small": fl_small,
            "chatstore@large": cs_large,
            "floor@large": fl_large,
            "chatstore@first": cs_first,
            "floor@first": fl_first,
            "chatstore@deep": cs_deep,
            "floor@deep": fl_deep,
            "floor-generic@small": fg_small,
            "floor-generic@large": fg_large,
        },
        p.w3_reads,
    )
    # Whether each database kept re-planning the read (see plan_cache): it explains most
    # of any difference between the small and the large database.
    result.parameters["floor_plan_cache"] = {
        "small_latest": await plan_cache(floor.conn, LATEST_SQL),
        "large_latest": await plan_cache(big_floor.conn, LATEST_SQL),
        "large_before": await plan_cache(big_floor.conn, BEFORE_SQL),
    }
    total = f"{large.counts['messages']:,}"
    result.figures += [
        compare(
            "W3",
            "large_latest",
            f"W2 read, store of {total} msgs",
            sampling,
            numerator="chatstore@large",
            denominator="floor@large",
        ),
        derived(
            "W3",
            "growth",
            "growth: W2 read at 1M msgs ÷ at 5k (chatstore)",
            sampling,
            numerator="chatstore@large",
            denominator="chatstore@small",
            target=GROWTH_TARGET,
            basis="median chatstore on the large database / median chatstore on the small one",
        ),
        derived(
            "W3",
            "growth_floor",
            "growth: same, floor (reference)",
            sampling,
            numerator="floor@large",
            denominator="floor@small",
            basis="median floor on the large database / median floor on the small one",
        ),
        derived(
            "W3",
            "growth_floor_generic",
            "growth: floor, generic plans on both (reference)",
            sampling,
            numerator="floor-generic@large",
            denominator="floor-generic@small",
            basis="as growth_floor, both connections with plan_cache_mode=force_generic_plan",
        ),
        compare(
            "W3",
            "deep_page",
            f"before_seq page {p.w3_deep:,} deep",
            sampling,
            numerator="chatstore@deep",
            denominator="floor@deep",
        ),
        derived(
            "W3",
            "deep_vs_first",
            "deep page ÷ first page (chatstore)",
            sampling,
            numerator="chatstore@deep",
            denominator="chatstore@first",
            target=DEPTH_TARGET,
            basis="median chatstore deep page / median chatstore first page, same conversation",
        ),
        derived(
            "W3",
            "deep_vs_first_floor",
            "deep page ÷ first page (floor, reference)",
            sampling,
            numerator="floor@deep",
            denominator="floor@first",
            basis="median floor deep page / median floor first page, same conversation",
        ),
    ]
    result.plans += await hot_path_plans(
        ctx,
        "W3",
        {
            "latest page (1M store)": HotPath(
                cs_large, LATEST_SQL, (long_id, long_user, limit + 1)
            ),
            "deep page (before_seq)": HotPath(
                cs_deep, BEFORE_SQL, (deep_id, deep_user, before_seq, limit + 1)
            ),
        },
        url=large.url,
    )
    await ctx.profile_op("W3 deep page", cs_deep, 3000)
    return result


WORKLOAD = Workload("W3", "scale: 1M-message store, page 500,000 deep", run)
