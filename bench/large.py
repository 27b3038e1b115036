"""The large W3 dataset: >= 1,000,000 messages, kept between runs in its own database.

Building it takes a few minutes, so it lives in a dedicated database
(``chatstore_bench_large`` unless overridden) and is reused when present. The database
comment records the spec it was built from; it is written last, so a build that died half
way is never mistaken for a finished one. On reuse the spec is compared and the real row
counts are checked against it; any mismatch rebuilds (or skips W3 when building is off).
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import timedelta
from typing import Any

import asyncpg

from bench import databases
from bench.checks import broken_sequences
from bench.datagen import EPOCH, ConversationSpec, populate, stable_id, vacuum_analyze

__all__ = ["LargeDataset", "LargeSpec", "ensure_large"]

_MARKER = "chatstore-bench large dataset "


@dataclass(frozen=True, slots=True)
class LargeSpec:
    """1,000 users, 10,000 conversations, one of 500,100 messages and one of 100,000 messages
    of English words (search's), 1,104,950 in all."""

    #: 3: messages carry token_count, conversations token_total (context-window schema).
    #: 4: the search conversation; the search column and forked_from (migration 3).
    version: int = 4
    users: int = 1_000
    conversations: int = 10_000
    deep_messages: int = 500_100
    long_messages: int = 5_000
    search_messages: int = 100_000
    other_messages: int = 50

    @property
    def total_messages(self) -> int:
        big = self.deep_messages + self.long_messages + self.search_messages
        return big + (self.conversations - 3) * self.other_messages

    @staticmethod
    def user(index: int) -> str:
        return f"bench-user-{index:05d}"

    @staticmethod
    def conversation_id(index: int) -> uuid.UUID:
        return stable_id("large", "conversation", index)

    def specs(self) -> list[ConversationSpec]:
        """Conversation 0 is the deep one, 1 the W2-shaped one, 2 the search one (English
        words); the rest are small."""
        specs = []
        for index in range(self.conversations):
            messages = {0: self.deep_messages, 1: self.long_messages, 2: self.search_messages}
            count = messages.get(index, self.other_messages)
            specs.append(
                ConversationSpec(
                    id=self.conversation_id(index),
                    user=self.user(index % self.users),
                    messages=count,
                    created_at=EPOCH + timedelta(seconds=index),
                    title=f"bench conversation {index}",
                    words=index == 2,
                )
            )
        return specs

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "total_messages": self.total_messages}


@dataclass(frozen=True, slots=True)
class LargeDataset:
    name: str
    url: str
    spec: LargeSpec
    built: bool
    build_s: float | None
    counts: dict[str, int]

    @property
    def deep_conversation(self) -> tuple[str, uuid.UUID]:
        return self.spec.user(0), self.spec.conversation_id(0)

    @property
    def long_conversation(self) -> tuple[str, uuid.UUID]:
        return self.spec.user(1 % self.spec.users), self.spec.conversation_id(1)

    @property
    def search_user(self) -> str:
        """The owner of the search conversation (and of 9 small ones): 100,450 messages."""
        return self.spec.user(2 % self.spec.users)

    def as_dict(self) -> dict[str, Any]:
        return {
            "database": self.name,
            "spec": self.spec.as_dict(),
            "built_this_run": self.built,
            "build_s": self.build_s,
            "counts": self.counts,
        }


async def _marker(admin: asyncpg.Connection, name: str) -> dict[str, Any] | None:
    comment = await admin.fetchval(
        "SELECT shobj_description(oid, 'pg_database') FROM pg_database WHERE datname = $1",
        name,
    )
    if not isinstance(comment, str) or not comment.startswith(_MARKER):
        return None
    try:
        value = json.loads(comment[len(_MARKER) :])
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


async def _counts(conn: asyncpg.Connection, spec: LargeSpec) -> dict[str, int]:
    row = await conn.fetchrow(
        """
        SELECT (SELECT count(*) FROM users) AS users,
               (SELECT count(*) FROM conversations) AS conversations,
               (SELECT count(*) FROM messages) AS messages,
               (SELECT coalesce(sum(message_count), 0) FROM conversations) AS message_count_sum,
               (SELECT coalesce(sum(last_seq), 0) FROM conversations) AS last_seq_sum,
               (SELECT last_seq FROM conversations WHERE id = $1) AS deep_last_seq,
               (SELECT count(*) FROM messages WHERE conversation_id = $1) AS deep_messages,
               (SELECT max(seq) FROM messages WHERE conversation_id = $1) AS deep_max_seq
        """,
        spec.conversation_id(0),
    )
    assert row is not None
    return {key: int(value or 0) for key, value in dict(row).items()}


def _problems(counts: dict[str, int], spec: LargeSpec) -> list[str]:
    expected = {
        "users": spec.users,
        "conversations": spec.conversations,
        "messages": spec.total_messages,
        "message_count_sum": spec.total_messages,
        "last_seq_sum": spec.total_messages,
        "deep_last_seq": spec.deep_messages,
        "deep_messages": spec.deep_messages,
        "deep_max_seq": spec.deep_messages,
    }
    return [
        f"{key}: {counts.get(key)} != {value}"
        for key, value in expected.items()
        if counts.get(key) != value
    ]


async def ensure_large(
    admin: asyncpg.Connection,
    server_url: str,
    name: str,
    *,
    build: bool,
    rebuild: bool,
    log: Callable[[str], None],
    spec: LargeSpec | None = None,
) -> LargeDataset | str:
    """The large dataset, reused or (re)built; a reason string when it is unavailable."""
    spec = spec or LargeSpec()
    url = databases.database_url(server_url, name)
    if not rebuild and await databases.database_exists(admin, name):
        marker = await _marker(admin, name)
        if marker == spec.as_dict():
            # Pending migrations (if any) are applied the way an operator would.
            await databases.migrate_database(url)
            conn = await databases.connect(url)
            try:
                counts = await _counts(conn, spec)
            finally:
                await conn.close()
            problems = _problems(counts, spec)
            if not problems:
                log(f"reusing {name}: {counts['messages']:,} messages")
                return LargeDataset(name, url, spec, False, None, counts)
            log(f"{name} does not match its spec ({'; '.join(problems)})")
        else:
            log(f"{name} exists but was not finished with this spec")
        if not build:
            return f"{name} is not a finished large dataset; run the full benchmark to build it"
    elif not build:
        return f"{name} does not exist; run the full benchmark (or --build-large) to build it"

    log(f"building {name}: {spec.total_messages:,} messages (a few minutes, once)")
    started = time.perf_counter()
    await databases.drop_database(admin, name)
    await databases.create_database(admin, name)
    await databases.migrate_database(url)
    conn = await databases.connect(url)
    try:
        last_report = [0.0]

        def progress(done: int, total: int, elapsed: float) -> None:
            if elapsed - last_report[0] >= 10 or done == total:
                last_report[0] = elapsed
                log(f"  {done:,}/{total:,} messages ({elapsed:.0f} s)")

        await populate(conn, spec.specs(), progress=progress)
        log("  VACUUM ANALYZE")
        await vacuum_analyze(conn)
        gaps = await broken_sequences(conn)
        counts = await _counts(conn, spec)
    finally:
        await conn.close()
    problems = _problems(counts, spec) + ([f"{gaps} conversations break seq"] if gaps else [])
    if problems:
        raise RuntimeError(f"the large dataset came out wrong: {'; '.join(problems)}")
    comment = _MARKER + json.dumps(spec.as_dict(), sort_keys=True)
    await admin.execute(f"COMMENT ON DATABASE \"{name}\" IS '{comment}'")
    build_s = time.perf_counter() - started
    log(f"built {name} in {build_s:.0f} s")
    return LargeDataset(name, url, spec, True, build_s, counts)
