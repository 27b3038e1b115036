"""W11: the Agents SDK adapter (``ChatstoreSession``) against the SDK's own sessions.

The peers are what an Agents SDK user would pick instead: ``SQLAlchemySession`` on the same
PostgreSQL server (asyncpg driver, its own tables in the floor database, created by it) and
``SQLiteSession`` on a local file. Measured, interleaved: ``add_items`` of one item (the
per-turn write) and ``get_items(limit=50)`` from a 5,000-item session (the per-turn read);
target: chatstore ≥ 2x faster than ``SQLAlchemySession`` on both (latency ratio ≤ 0.5x).
Then 8 writers add their items concurrently, one at a time, to one fresh session per
backend: the items each session returns are checked for loss and for each writer's order.
"""

from __future__ import annotations

import asyncio
import tempfile
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from agents import SQLiteSession
from agents.extensions.memory.sqlalchemy_session import SQLAlchemySession
from agents.memory import Session

from bench.context import BenchContext
from bench.datagen import message_content
from bench.harness import CHATSTORE, Figure, Sampling, Target, compare, interleave
from bench.report import WorkloadResult
from bench.workloads._workload import Workload
from store.integrations.openai_agents import ChatstoreSession

TARGET = Target("<=", 0.5)
USER = "bench-w11"
SQLALCHEMY = "SQLAlchemySession"
SQLITE = "SQLiteSession"


def _item(n: int) -> dict[str, Any]:
    """A turn's item: a user message, or an assistant output message (~400 characters)."""
    if n % 2 == 0:
        return {"role": "user", "content": message_content(n)}
    return {
        "id": f"msg_{n}",
        "type": "message",
        "role": "assistant",
        "status": "completed",
        "content": [{"type": "output_text", "text": message_content(n), "annotations": []}],
    }


def _sessions(ctx: BenchContext, folder: Path, name: str) -> dict[str, Session]:
    """A session of each kind; the name is new for every call (the passes of a run share
    their databases)."""
    name = f"{name}-{uuid.uuid4().hex[:8]}"
    url = ctx.floor_url.replace("postgres://", "postgresql+asyncpg://", 1)
    return {
        CHATSTORE: ChatstoreSession(name, user=USER, store=ctx.store),
        SQLALCHEMY: SQLAlchemySession.from_url(name, url=url, create_tables=True),
        SQLITE: SQLiteSession(name, db_path=folder / "w11.sqlite3"),
    }


async def _close(sessions: dict[str, Session]) -> None:
    for session in sessions.values():
        if isinstance(session, SQLAlchemySession):
            await session.engine.dispose()
        elif isinstance(session, SQLiteSession):
            session.close()


async def _fill(session: Session, count: int) -> None:
    for start in range(0, count, 500):
        await session.add_items([_item(n) for n in range(start, min(start + 500, count))])  # type: ignore[misc]


async def _writers(session: Session, writers: int, per_writer: int) -> tuple[int, int]:
    """Lost items, and writers whose items came back out of their order."""

    async def write(w: int) -> None:
        for i in range(per_writer):
            await session.add_items([{"role": "user", "content": f"w{w}-{i}"}])

    await asyncio.gather(*(write(w) for w in range(writers)))
    seen = [str(item.get("content")) for item in await session.get_items()]
    lost = writers * per_writer - len(seen)
    misordered = sum(
        [c for c in seen if c.startswith(f"w{w}-")] != [f"w{w}-{i}" for i in range(per_writer)]
        for w in range(writers)
    )
    return lost, misordered


def _against_peers(key: str, what: str, sampling: Sampling) -> list[Figure]:
    """``what`` for ChatstoreSession over each peer: SQLAlchemySession (the target) and
    SQLiteSession (reported)."""
    return [
        compare(
            "W11",
            key,
            f"{what}: ChatstoreSession ÷ SQLAlchemySession (asyncpg)",
            sampling,
            denominator=SQLALCHEMY,
            target=TARGET,
        ),
        compare(
            "W11",
            f"{key}-sqlite",
            f"{what}: ChatstoreSession ÷ SQLiteSession (local file)",
            sampling,
            denominator=SQLITE,
        ),
    ]


async def run(ctx: BenchContext) -> WorkloadResult:
    p = ctx.profile
    result = WorkloadResult(
        "W11",
        WORKLOAD.title,
        parameters={"items": p.w11_items, "writers": p.w11_writers, "per_writer": p.w11_per_writer},
    )
    with tempfile.TemporaryDirectory() as folder:
        adds = _sessions(ctx, Path(folder), "w11-adds")
        reads = _sessions(ctx, Path(folder), "w11-reads")
        try:
            counter = iter(range(10**9))

            def add(session: Session) -> Callable[[], Awaitable[None]]:
                return lambda: session.add_items([_item(next(counter))])  # type: ignore[list-item]

            sampling = await interleave(
                {name: add(session) for name, session in adds.items()},
                repetitions=p.w11_adds,
                warmup=10,
                budget_s=p.budget_s,
            )
            result.figures += _against_peers("add", "add_items of one item", sampling)
            for session in reads.values():
                await _fill(session, p.w11_items)
            ctx.log(f"W11: three sessions of {p.w11_items:,} items")

            def read(session: Session) -> Callable[[], Awaitable[None]]:
                async def op() -> None:
                    items = await session.get_items(limit=50)
                    assert len(items) == 50

                return op

            sampling = await interleave(
                {name: read(session) for name, session in reads.items()},
                repetitions=p.w11_reads,
                warmup=p.read_warmup,
                budget_s=p.budget_s,
            )
            result.figures += _against_peers(
                "get", f"get_items(limit=50) of {p.w11_items:,}", sampling
            )
            same = {name: await s.get_items(limit=50) for name, s in reads.items()}
        finally:
            await _close(adds)
            await _close(reads)

        outcomes: dict[str, tuple[int, int]] = {}
        for round_ in range(3):
            concurrent = _sessions(ctx, Path(folder), f"w11-writers-{round_}")
            try:
                for name, session in concurrent.items():
                    lost, misordered = await _writers(session, p.w11_writers, p.w11_per_writer)
                    before = outcomes.get(name, (0, 0))
                    outcomes[name] = (before[0] + lost, before[1] + misordered)
            finally:
                await _close(concurrent)
    total = 3 * p.w11_writers * p.w11_per_writer
    ours = outcomes[CHATSTORE]
    result.checks = {
        "passed": ours == (0, 0) and same[CHATSTORE] == same[SQLALCHEMY] == same[SQLITE],
        "outcomes": {
            name: {"lost": o[0], "misordered_writers": o[1]} for name, o in outcomes.items()
        },
        "summary": (
            f"get_items(50) equal on all three; {p.w11_writers} concurrent writers x 3 rounds, "
            f"{total:,} items per session: "
            + ", ".join(
                f"{name} {o[0]} lost / {o[1]} writers misordered" for name, o in outcomes.items()
            )
        ),
    }
    return result


WORKLOAD = Workload("W11", "Agents SDK sessions: ChatstoreSession vs the SDK's own", run)
