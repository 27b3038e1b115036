"""Appenders that keep calling append_message through a real MCP client, and their ledger.

Each ``Appender`` sends numbered messages to its conversations. A *keyed* appender gives each
logical message an ``idempotency_key`` and retries it until it is acknowledged, as a careful
agent would; an *unkeyed* one tries each message once. Every call is recorded with its timing
and outcome, so a test can check afterwards that acknowledged messages are stored exactly once
and that failures were fast, clean ``unavailable`` errors.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import anyio
import asyncpg
from mcp import Client

from tests.leaks import clean
from tests.support import error_code, error_text


@dataclass(frozen=True)
class Call:
    appender: str
    content: str
    key: str | None
    started: float
    ended: float
    code: str  # "ok", a contract code, or "hang"/"exception:<type>"
    text: str = ""

    @property
    def duration(self) -> float:
        return self.ended - self.started


@dataclass(frozen=True)
class Ack:
    id: str
    conversation_id: str
    seq: int
    content: str
    key: str | None
    at: float


@dataclass
class Ledger:
    calls: list[Call] = field(default_factory=list)
    acks: list[Ack] = field(default_factory=list)

    def attempted(self) -> set[str]:
        return {c.content for c in self.calls}

    def codes(self) -> Counter[str]:
        return Counter(c.code for c in self.calls)

    def failures(self) -> list[Call]:
        return [c for c in self.calls if c.code != "ok"]

    def successes_after(self, appender_prefix: str, moment: float) -> list[Call]:
        return [
            c
            for c in self.calls
            if c.code == "ok" and c.appender.startswith(appender_prefix) and c.started > moment
        ]


@dataclass
class Appender:
    name: str
    client: Client
    conversations: list[str]
    ledger: Ledger
    keyed: bool
    call_bound: float
    foreign: list[str] = field(default_factory=list)
    pause: float = 0.0
    retry_pause: float = 0.05
    sent: int = 0

    async def _call(self, conversation_id: str, content: str, key: str | None) -> Any:
        arguments: dict[str, Any] = {
            "conversation_id": conversation_id,
            "role": "user",
            "content": content,
        }
        if key is not None:
            arguments["idempotency_key"] = key
        started = time.monotonic()
        code = "ok"
        text = ""
        result: Any = None
        try:
            with anyio.fail_after(self.call_bound):
                result = await self.client.call_tool("append_message", arguments)
            if result.is_error:
                code = error_code(result)
                text = clean(error_text(result), foreign=self.foreign)
        except TimeoutError:
            code = "hang"
        except Exception as exc:  # recorded; the test fails on anything but ok/unavailable
            code = f"exception:{type(exc).__name__}"
            text = str(exc)
        ended = time.monotonic()
        self.ledger.calls.append(Call(self.name, content, key, started, ended, code, text))
        if code == "ok":
            data = result.structured_content
            self.ledger.acks.append(
                Ack(
                    id=data["id"],
                    conversation_id=data["conversation_id"],
                    seq=int(data["seq"]),
                    content=data["content"],
                    key=key,
                    at=ended,
                )
            )
            return data
        return None

    async def run(self, stop: asyncio.Event, give_up_at: float) -> None:
        """Append until ``stop``; a keyed message in flight is retried until acknowledged
        (or ``give_up_at``, a monotonic deadline)."""
        while not stop.is_set():
            n = self.sent
            self.sent += 1
            conversation_id = self.conversations[n % len(self.conversations)]
            content = f"{self.name}-{n}"
            key = content if self.keyed else None
            while True:
                data = await self._call(conversation_id, content, key)
                if data is not None or not self.keyed or time.monotonic() > give_up_at:
                    break
                await asyncio.sleep(self.retry_pause)
            if data is None:
                await asyncio.sleep(self.retry_pause)
            elif self.pause:
                await asyncio.sleep(self.pause)


async def wait_for_recovery(
    ledger: Ledger, bound: float, prefixes: list[str], since: float
) -> float:
    """Seconds until every appender prefix has an acknowledged append started after
    ``since``; fails past ``bound`` seconds."""
    deadline = time.monotonic() + bound
    while True:
        if all(ledger.successes_after(prefix, since) for prefix in prefixes):
            return time.monotonic() - since
        assert time.monotonic() < deadline, (
            f"no recovery within {bound}s after the fault: {ledger.codes()}"
        )
        await asyncio.sleep(0.05)


async def acked_are_stored(url: str, ledger: Ledger) -> tuple[int, int]:
    """(acknowledged so far, of them found in the PostgreSQL database at ``url``); each found
    exactly once."""
    acks = list(ledger.acks)
    conn = await asyncpg.connect(url, timeout=10)
    try:
        rows = await conn.fetch(
            "SELECT id::text, seq, content FROM messages WHERE id = ANY($1::uuid[])",
            [a.id for a in acks],
        )
    finally:
        await conn.close()
    stored = {r["id"]: (r["seq"], r["content"]) for r in rows}
    for ack in acks:
        assert stored.get(ack.id) == (ack.seq, ack.content), f"acknowledged {ack} is missing"
    return len(acks), len(stored)
