"""Cancellation: a caller that gives up on append_message mid-flight leaves all of it or none.

Appends are cancelled at random points (after a random number of event-loop turns, or a random
delay, both scaled to how long an append takes on this machine) many times, on both backends,
at the store level and through a real in-process MCP client (the client abandons the call).
Afterwards every conversation's ``message_count``/``last_seq`` agree with its messages
(checked with SQL), every append that did return is stored exactly once, nothing is stored
twice, and the store still answers: a cancelled call never leaks a pooled connection or leaves a
transaction open.
"""

from __future__ import annotations

import asyncio
import random
import statistics
import time
import uuid
from collections import Counter, deque
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import anyio
from mcp import Client

from mcp_server.server import create_server
from store import ConversationStore, Message, Settings
from tests.leaks import clean
from tests.rawdb import consistent_messages_of
from tests.support import error_code, error_text

T = TypeVar("T")

#: Cancelled appends per backend at the store level, and through MCP.
STORE_ROUNDS = 300
MCP_ROUNDS = 120


def _small_pool(settings: Settings) -> Settings:
    # Two connections: a cancelled call that leaked one would starve the store quickly.
    return settings.model_copy(update={"db_pool_min": 1, "db_pool_max": 2, "db_timeout": 10.0})


class CancelPoints:
    """Random points in an append's life, scaled to how long an append takes here.

    Half the points are counted in event-loop turns (exact places between awaits), half in
    wall-clock time (inside driver calls and worker threads); both range over about 1.5x an
    uncancelled append, so some calls finish and most are cut somewhere in the middle.
    """

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.turns = 1
        self.seconds = 0.001

    async def calibrate(self, make: Callable[[int], Awaitable[Any]]) -> None:
        turns, seconds = [], []
        for n in range(10):
            started = time.perf_counter()
            task = asyncio.ensure_future(make(n))
            count = 0
            while not task.done():
                await asyncio.sleep(0)
                count += 1
            await task
            turns.append(count)
            seconds.append(time.perf_counter() - started)
        self.turns = max(2, int(statistics.median(turns)))
        self.seconds = max(0.0005, statistics.median(seconds))

    async def run(self, coro: Awaitable[T]) -> tuple[T | None, bool]:
        """Run ``coro`` as a task and cancel it at a random point; (its result, cancelled?)."""
        task = asyncio.ensure_future(coro)
        if self.rng.random() < 0.5:
            for _ in range(self.rng.randrange(0, int(self.turns * 1.5) + 1)):
                await asyncio.sleep(0)
        else:
            await asyncio.sleep(self.rng.uniform(0, self.seconds * 1.5))
        task.cancel()
        try:
            return await task, False
        except asyncio.CancelledError:
            return None, True


async def _check_store(
    settings: Settings, user: str, acked: list[Message], attempted: set[str]
) -> dict[str, int]:
    rows = await consistent_messages_of(settings, user)
    contents = Counter(str(row[2]) for row in rows)
    duplicates = {c: n for c, n in contents.items() if n > 1}
    assert not duplicates, f"stored twice: {duplicates}"
    assert set(contents) <= attempted, "a message nobody appended was stored"
    by_id = {str(row[0]): row for row in rows}
    for message in acked:
        row = by_id.get(str(message.id))
        assert row is not None, f"acknowledged message {message.seq} is missing"
        assert (int(row[1]), row[2]) == (message.seq, message.content)
        assert contents[message.content] == 1
    return {"acknowledged": len(acked), "stored": sum(contents.values())}


async def test_store_append_cancelled_at_random_points(settings: Settings, backend: str) -> None:
    rng = random.Random(f"cancel-{backend}")
    user = f"cancel-{uuid.uuid4().hex[:8]}"
    acked: list[Message] = []
    attempted: set[str] = set()
    cancelled = 0
    async with ConversationStore(_small_pool(settings)) as store:
        conversations = [await store.create_conversation(user=user) for _ in range(3)]
        points = CancelPoints(rng)

        def warm_up(n: int) -> Awaitable[Message]:
            attempted.add(f"w{n}")
            return store.append_message(
                user=user, conversation_id=conversations[0].id, role="user", content=f"w{n}"
            )

        await points.calibrate(warm_up)
        for n in range(STORE_ROUNDS):
            conversation = rng.choice(conversations)
            content = f"m{n}"
            attempted.add(content)
            key = f"k{n}" if n % 2 else None
            result, was_cancelled = await points.run(
                store.append_message(
                    user=user,
                    conversation_id=conversation.id,
                    role="user",
                    content=content,
                    idempotency_key=key,
                ),
            )
            cancelled += was_cancelled
            if result is not None:
                acked.append(result)
            if n % 50 == 49:
                # Bursts: several appends to one conversation, all cancelled together.
                burst = [
                    asyncio.ensure_future(
                        store.append_message(
                            user=user,
                            conversation_id=conversation.id,
                            role="user",
                            content=f"b{n}-{i}",
                        )
                    )
                    for i in range(8)
                ]
                attempted.update(f"b{n}-{i}" for i in range(8))
                await asyncio.sleep(rng.uniform(0, points.seconds * 4))
                for task in burst:
                    task.cancel()
                for outcome in await asyncio.gather(*burst, return_exceptions=True):
                    if isinstance(outcome, Message):
                        acked.append(outcome)
                    else:
                        assert isinstance(outcome, asyncio.CancelledError), outcome
        # Cancelled calls may finish their work in the background (SQLite shields its
        # transaction); let them land before counting.
        await asyncio.sleep(0.3)
        # The store still answers promptly with its two connections.
        async with asyncio.timeout(10):
            for index, conversation in enumerate(conversations):
                last = await store.append_message(
                    user=user,
                    conversation_id=conversation.id,
                    role="user",
                    content=f"after{index}",
                )
                attempted.add(f"after{index}")
                page = await store.list_messages(
                    user=user, conversation_id=conversation.id, limit=200
                )
                assert [m.seq for m in page.messages][-1] == last.seq
    # Enough of the calls were really interrupted for the check above to mean something
    # (timing-calibrated, so how many varies with the machine's load; typically half).
    assert cancelled > STORE_ROUNDS // 10, "the random points never interrupted an append"
    assert len(acked) >= 5, "almost no append completed: the cancel points are all too early"
    figures = await _check_store(settings, user, acked, attempted)
    print(f"[{backend}] store: {len(attempted)} appends, {cancelled} cancelled, {figures}")


async def test_mcp_append_cancelled_by_the_client(
    settings: Settings, backend: str, tmp_path: Path
) -> None:
    """The same through an in-process MCP client: the client abandons the call mid-flight."""
    rng = random.Random(f"mcp-cancel-{backend}")
    user = f"mcp-cancel-{uuid.uuid4().hex[:8]}"
    attempted: set[str] = set()
    acked: list[Message] = []
    cancelled = 0
    async with ConversationStore(_small_pool(settings)) as store:
        server = create_server(store.settings, stdio_user=user, store=store)
        async with Client(server) as client:
            created = await client.call_tool("create_conversation", {})
            assert created.structured_content is not None
            cid = created.structured_content["id"]
            # The cancel points follow how long an uncancelled call took recently (every tenth
            # call is left alone to measure it), so they stay inside a call's lifetime when
            # the machine speeds up or slows down.
            durations: deque[float] = deque(maxlen=10)
            for n in range(10):
                started = time.perf_counter()
                warm = await client.call_tool(
                    "append_message", {"conversation_id": cid, "role": "user", "content": f"w{n}"}
                )
                durations.append(time.perf_counter() - started)
                acked.append(Message.model_validate(warm.structured_content))
                attempted.add(f"w{n}")
            for n in range(MCP_ROUNDS):
                content = f"m{n}"
                attempted.add(content)
                outcome: Any = None
                started = time.perf_counter()
                probe = n % 10 == 0
                limit = 30.0 if probe else rng.uniform(0, statistics.median(durations) * 1.5)
                with anyio.move_on_after(limit) as scope:
                    outcome = await client.call_tool(
                        "append_message",
                        {"conversation_id": cid, "role": "user", "content": content},
                    )
                if scope.cancelled_caught:
                    cancelled += 1
                    continue
                assert outcome is not None and not outcome.is_error, outcome
                if probe:
                    durations.append(time.perf_counter() - started)
                acked.append(Message.model_validate(outcome.structured_content))
            await asyncio.sleep(0.3)
            with anyio.fail_after(10):
                result = await client.call_tool(
                    "get_conversation", {"conversation_id": cid, "recent_messages": 200}
                )
            assert not result.is_error, error_text(result)
            assert result.structured_content is not None
            seqs = [m["seq"] for m in result.structured_content["messages"]]
            assert seqs == list(range(1, len(seqs) + 1))
            assert result.structured_content["message_count"] == len(seqs)
            missing = await client.call_tool(
                "append_message",
                {"conversation_id": str(uuid.uuid4()), "role": "user", "content": "x"},
            )
            assert error_code(missing) == "not_found"
            clean(error_text(missing))
    assert cancelled > 0, "no call was cancelled mid-flight"
    figures = await _check_store(settings, user, acked, attempted)
    print(f"[{backend}] mcp: {len(attempted)} appends, {cancelled} cancelled, {figures}")
