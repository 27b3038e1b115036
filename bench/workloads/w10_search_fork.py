"""W10: ``search_messages`` in the 1M-message store, for a user holding 100,450 messages, and
``fork_conversation`` of a 5,000-message conversation.

Search: the first page (20) for a rare word (9 of the user's messages) and for a common one
(10,000), against a raw-asyncpg floor running the same indexed query (GIN, ``ts_rank_cd``,
``ts_headline`` for the page); target ≤ 1.5x each. Beside it, what a LIKE-based history store
does (``content ILIKE '%word%'`` over the user's messages, newest first), reported as its
factor over chatstore. Without the large dataset the search figures are skipped.

Fork: W2's 5,000-message conversation forked at its last seq, against the floor's lock,
``INSERT … SELECT`` of the conversation and of its messages in one transaction; reported
(no target). The forks are deleted afterwards.
"""

from __future__ import annotations

import uuid

from bench.context import BenchContext
from bench.datagen import COMMON_WORD, RARE_WORD
from bench.fixtures import long_conversation
from bench.floor import SEARCH_SQL, Floor
from bench.harness import CHATSTORE, FLOOR, Op, Target, compare, derived, interleave
from bench.report import WorkloadResult
from bench.workloads._common import HotPath, hot_path_plans, interleave_reads
from bench.workloads._workload import Workload
from store import ConversationStore
from store.contract import DEFAULT_SEARCH_PAGE

TARGET = Target("<=", 1.5)
TERMS = {"rare": RARE_WORD, "common": COMMON_WORD}


async def run(ctx: BenchContext) -> WorkloadResult:
    result = WorkloadResult("W10", WORKLOAD.title, parameters={"page": DEFAULT_SEARCH_PAGE})
    await _search(ctx, result)
    await _fork(ctx, result)
    return result


async def _search(ctx: BenchContext, result: WorkloadResult) -> None:
    large = await ctx.large()
    if isinstance(large, str):
        result.notes.append(f"search is skipped: {large}")
        return

    async def clients() -> tuple[ConversationStore, Floor]:
        return (
            await ctx.open_store(large.url),
            Floor(await ctx.connect(large.url, application_name="bench_floor")),
        )

    store, floor = await ctx.fixture("w3_clients", clients)
    user, page = large.search_user, DEFAULT_SEARCH_PAGE
    result.parameters.update(large=large.as_dict(), search_user=user, terms=TERMS)
    ops: dict[str, Op] = {}
    for name, term in TERMS.items():
        found = await store.search_messages(user=user, query=term)
        rows = await floor.search(user, term, page)
        matches = await floor.conn.fetchval(
            "SELECT count(*) FROM messages WHERE user_id = $1 "
            "AND search @@ websearch_to_tsquery('english', $2)",
            user,
            term,
        )
        result.parameters[f"{name}_matches"] = matches
        result.checks[f"{name}_same_as_floor"] = [h.message.id for h in found.results] == [
            r["id"] for r in rows
        ]
        result.checks[f"{name}_found"] = bool(found.results) and all(
            f"**{term}**" in h.snippet.lower() for h in found.results
        )

        async def chatstore(term: str = term) -> None:
            await store.search_messages(user=user, query=term)

        async def floor_side(term: str = term) -> None:
            await floor.search(user, term, page)

        async def ilike(term: str = term) -> None:
            await floor.search_ilike(user, term, page)

        ops |= {f"chatstore@{name}": chatstore, f"floor@{name}": floor_side}
        ops[f"ilike@{name}"] = ilike
    sampling = await interleave_reads(ctx, "W10", ops, ctx.profile.w10_reads)
    for name, term in TERMS.items():
        matches = result.parameters[f"{name}_matches"]
        result.figures += [
            compare(
                "W10",
                name,
                f"search_messages, {name} word ({matches:,} of 100,450 messages), 1M store",
                sampling,
                numerator=f"chatstore@{name}",
                denominator=f"floor@{name}",
                target=TARGET,
            ),
            derived(
                "W10",
                f"ilike_{name}",
                f"ILIKE '%{term}%' scan ÷ chatstore search ({name} word)",
                sampling,
                numerator=f"ilike@{name}",
                denominator=f"chatstore@{name}",
                basis="median ILIKE floor / median chatstore, same run, interleaved",
            ),
        ]
    result.plans += await hot_path_plans(
        ctx,
        "W10",
        {
            "search (common word)": HotPath(
                lambda: store.search_messages(user=user, query=COMMON_WORD),
                SEARCH_SQL,
                (user, COMMON_WORD, page + 1),
            )
        },
        url=large.url,
    )
    await ctx.profile_op("W10 search", ops["chatstore@common"], 200)


async def _fork(ctx: BenchContext, result: WorkloadResult) -> None:
    conversation = await long_conversation(ctx)
    user, cid, at_seq = conversation.user, conversation.id, conversation.messages
    made: dict[str, list[uuid.UUID]] = {CHATSTORE: [], FLOOR: []}

    async def chatstore() -> None:
        fork = await ctx.store.fork_conversation(user=user, conversation_id=cid, at_seq=at_seq)
        made[CHATSTORE].append(fork.id)

    async def floor_side() -> None:
        made[FLOOR].append(await ctx.floor.fork(cid, user, at_seq))

    ctx.log(f"W10: forks of a {at_seq:,}-message conversation x {ctx.profile.w10_forks}")
    sampling = await interleave(
        {CHATSTORE: chatstore, FLOOR: floor_side},
        repetitions=ctx.profile.w10_forks,
        warmup=2,
        budget_s=ctx.profile.budget_s,
    )
    result.figures.append(
        compare("W10", "fork", f"fork_conversation of {at_seq:,} messages", sampling)
    )
    last = made[CHATSTORE][-1]
    async with ctx.connection(ctx.store_url) as conn:
        copied = await conn.fetchval(
            "SELECT count(*) FROM messages WHERE conversation_id = $1", last
        )
        await conn.execute("DELETE FROM conversations WHERE id = ANY($1::uuid[])", made[CHATSTORE])
    async with ctx.connection(ctx.floor_url) as conn:
        await conn.execute("DELETE FROM conversations WHERE id = ANY($1::uuid[])", made[FLOOR])
    result.checks["fork_copies_every_message"] = copied == at_seq
    result.checks["passed"] = all(bool(value) for value in result.checks.values())
    result.checks["summary"] = (
        "search: the floor's page, every snippet marks the word; fork: every message copied"
    )


WORKLOAD = Workload("W10", "search in the 1M store; fork of 5,000 messages", run)
