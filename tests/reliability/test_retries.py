"""Retries: 1,000 appends replayed with their idempotency keys, also racing the original.

Each logical message is sent as an original and one or two replays *at the same time* (so the
replay often arrives while the original is still in its transaction), then the whole set is
replayed again later in a shuffled order. Every call must return the same message (same id and
seq); the database must hold each message exactly once with gapless seqs; and the same key with
a different content is a ``conflict`` that stores nothing. Store level on both backends, and
through an in-process MCP client.
"""

from __future__ import annotations

import asyncio
import random
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from mcp import Client

from mcp_server.server import create_server
from store import Conflict, ConversationStore, Message, Settings
from tests.leaks import clean
from tests.rawdb import RawDB
from tests.support import error_code, error_text

MESSAGES = 1000
MCP_MESSAGES = 200
CONVERSATIONS = 10
CONCURRENCY = 16

Send = Callable[[str, str, str], Awaitable[dict[str, Any]]]


async def _replay_storm(send: Send, conversations: list[str], count: int, seed: str) -> int:
    """Send ``count`` keyed messages, each raced by replays, then replay them all; returns the
    number of calls made. ``send(conversation_id, key, content)`` returns the message as JSON."""
    rng = random.Random(seed)
    plan = [
        (conversations[n % len(conversations)], f"key-{n}", f"content {n}") for n in range(count)
    ]
    first: dict[str, dict[str, Any]] = {}
    calls = 0
    gate = asyncio.Semaphore(CONCURRENCY)

    async def race(conversation_id: str, key: str, content: str) -> None:
        nonlocal calls
        async with gate:
            copies = 2 if rng.random() < 0.7 else 3
            results = await asyncio.gather(
                *(send(conversation_id, key, content) for _ in range(copies))
            )
            calls += copies
        ids = {(r["id"], r["seq"]) for r in results}
        assert len(ids) == 1, f"racing replays of {key} got different messages: {ids}"
        first[key] = results[0]

    await asyncio.gather(*(race(*item) for item in plan))

    # Replay everything again, later and out of order.
    shuffled = list(plan)
    rng.shuffle(shuffled)

    async def replay(conversation_id: str, key: str, content: str) -> None:
        nonlocal calls
        async with gate:
            again = await send(conversation_id, key, content)
            calls += 1
        original = first[key]
        assert (again["id"], again["seq"], again["content"]) == (
            original["id"],
            original["seq"],
            original["content"],
        ), f"replay of {key} returned a different message"

    await asyncio.gather(*(replay(*item) for item in shuffled))
    return calls


async def _check(settings: Settings, user: str, count: int) -> None:
    db = await RawDB.connect(settings)
    try:
        assert await db.violations([user]) == []
        rows = await db.fetch(
            "SELECT conversation_id, idempotency_key, count(*) FROM messages "
            "WHERE user_id = $1 GROUP BY conversation_id, idempotency_key",
            user,
        )
    finally:
        await db.close()
    per_key = {(str(c), str(k)): int(n) for c, k, n in rows}
    assert len(per_key) == count, f"{len(per_key)} keys stored, expected {count}"
    assert set(per_key.values()) == {1}, "a key was stored more than once"


async def test_store_replays_racing_the_original(settings: Settings, backend: str) -> None:
    user = f"retry-{uuid.uuid4().hex[:8]}"
    async with ConversationStore(settings) as store:
        conversations = [str((await store.create_conversation(user=user)).id) for _ in range(10)]

        async def send(conversation_id: str, key: str, content: str) -> dict[str, Any]:
            message = await store.append_message(
                user=user,
                conversation_id=conversation_id,
                role="user",
                content=content,
                idempotency_key=key,
            )
            return message.model_dump(mode="json")

        calls = await _replay_storm(send, conversations, MESSAGES, f"store-{backend}")

        # The same key with another message is a conflict and stores nothing.
        conflicts = 0
        for n in range(0, MESSAGES, 50):
            try:
                await store.append_message(
                    user=user,
                    conversation_id=conversations[n % CONVERSATIONS],
                    role="user",
                    content=f"something else {n}",
                    idempotency_key=f"key-{n}",
                )
            except Conflict as exc:
                clean(str(exc))
                conflicts += 1
        assert conflicts == MESSAGES // 50
        # A key is scoped to its conversation: reusing it elsewhere is a new message.
        other = await store.append_message(
            user=user,
            conversation_id=conversations[1],
            role="user",
            content="content 0",
            idempotency_key="key-0",
        )
        assert isinstance(other, Message) and other.seq == MESSAGES // CONVERSATIONS + 1
    print(f"[{backend}] store retries: {MESSAGES} messages, {calls} calls, {conflicts} conflicts")
    await _check(settings, user, MESSAGES + 1)


async def test_mcp_replays_racing_the_original(settings: Settings, backend: str) -> None:
    user = f"mcp-retry-{uuid.uuid4().hex[:8]}"
    async with ConversationStore(settings) as store:
        server = create_server(store.settings, stdio_user=user, store=store)
        async with Client(server) as client:
            conversations = []
            for _ in range(4):
                created = await client.call_tool("create_conversation", {})
                assert created.structured_content is not None
                conversations.append(str(created.structured_content["id"]))

            async def send(conversation_id: str, key: str, content: str) -> dict[str, Any]:
                result = await client.call_tool(
                    "append_message",
                    {
                        "conversation_id": conversation_id,
                        "role": "user",
                        "content": content,
                        "idempotency_key": key,
                    },
                )
                assert not result.is_error, error_text(result)
                assert result.structured_content is not None
                return dict(result.structured_content)

            calls = await _replay_storm(send, conversations, MCP_MESSAGES, f"mcp-{backend}")
            conflict = await client.call_tool(
                "append_message",
                {
                    "conversation_id": conversations[0],
                    "role": "assistant",
                    "content": "content 0",
                    "idempotency_key": "key-0",
                },
            )
            assert error_code(conflict) == "conflict"
            clean(error_text(conflict))
    print(f"[{backend}] mcp retries: {MCP_MESSAGES} messages, {calls} calls")
    await _check(settings, user, MCP_MESSAGES)
