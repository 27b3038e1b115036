"""Datasets shared by several workloads, built once per run in both run databases, and
``load``, which the workloads' own datasets are generated with.

Both databases receive byte-identical rows (ids are derived from names), so the chatstore
side and the floor side read the same pages, and a workload can check that they agree.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import timedelta

from bench.context import BenchContext
from bench.datagen import EPOCH, ConversationSpec, populate, stable_id, vacuum_analyze

__all__ = [
    "ConversationList",
    "LongConversation",
    "conversation_list",
    "load",
    "long_conversation",
]


@dataclass(frozen=True, slots=True)
class LongConversation:
    user: str
    id: uuid.UUID
    messages: int


@dataclass(frozen=True, slots=True)
class ConversationList:
    user: str
    conversations: int


async def load(ctx: BenchContext, specs: list[ConversationSpec], *, floor: bool = True) -> None:
    """Generate ``specs`` in both run databases (``floor=False``: the store's only, for the
    MCP workloads, which have no floor side), then VACUUM ANALYZE."""
    for url in (ctx.store_url, ctx.floor_url) if floor else (ctx.store_url,):
        async with ctx.connection(url, application_name="bench_loader") as conn:
            await populate(conn, specs)
            await vacuum_analyze(conn)


async def long_conversation(ctx: BenchContext) -> LongConversation:
    """W2's conversation: ``w2_messages`` (5,000) messages of ~400 characters."""

    async def build() -> LongConversation:
        spec = ConversationSpec(
            id=stable_id("w2", "conversation"),
            user="bench-w2",
            messages=ctx.profile.w2_messages,
            created_at=EPOCH,
            title="bench W2",
        )
        await load(ctx, [spec])
        return LongConversation(spec.user, spec.id, spec.messages)

    return await ctx.fixture("long_conversation", build)


async def conversation_list(ctx: BenchContext) -> ConversationList:
    """W5's user: ``w5_conversations`` (10,000) empty conversations.

    Pairs of conversations share an ``updated_at``, so paging must break ties by id (as
    chatstore's ``ORDER BY updated_at DESC, id DESC`` does) to be correct.
    """

    async def build() -> ConversationList:
        user = "bench-w5"
        count = ctx.profile.w5_conversations
        specs = [
            ConversationSpec(
                id=stable_id("w5", "conversation", index),
                user=user,
                messages=0,
                created_at=EPOCH + timedelta(seconds=index // 2),
                title=f"bench W5 conversation {index}",
            )
            for index in range(count)
        ]
        await load(ctx, specs)
        return ConversationList(user, count)

    return await ctx.fixture("conversation_list", build)
