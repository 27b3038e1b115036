"""Synthetic data, generated inside PostgreSQL (``INSERT … SELECT generate_series``).

The rows keep every invariant chatstore keeps: a ``users`` row for every owner, ``seq``
1…N without gaps, ``message_count = last_seq = N``, ``created_at`` rising with ``seq`` and
``updated_at`` equal to the last message's ``created_at``. Ids are derived from md5 of a
stable name, so the chatstore and floor databases hold byte-identical rows and a page read
from one can be compared with the same page read from the other.

Messages alternate ``user``/``assistant`` with 380-420 characters of content (400 on
average), stored inline (below PostgreSQL's TOAST threshold), like a typical chat turn. The
content is hex digests, except in conversations generated with ``words``: English words drawn
from ``WORDS``, with two marker words for search (``COMMON_WORD`` in every 10th message,
``RARE_WORD`` in every 10,007th).
"""

from __future__ import annotations

import hashlib
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import asyncpg

__all__ = [
    "COMMON_WORD",
    "EPOCH",
    "RARE_WORD",
    "WORDS",
    "ConversationSpec",
    "message_content",
    "populate",
    "stable_id",
    "vacuum_analyze",
]

#: The generated history starts here (fixed, so reruns produce the same rows).
EPOCH = datetime(2026, 1, 1, tzinfo=UTC)

#: ``{content}`` is the content expression: hex digests, or ``_WORDS_CONTENT``.
_MESSAGE_SQL = """
INSERT INTO messages (id, conversation_id, user_id, seq, role, content, tool_calls,
                      tool_call_id, metadata, idempotency_key, created_at, token_count)
SELECT md5('chatstore-bench:message:' || c.id::text || ':' || s)::uuid,
       c.id, c.user_id, s,
       CASE WHEN s % 2 = 1 THEN 'user' ELSE 'assistant' END,
       {content},
       NULL, NULL, '{{}}'::jsonb, NULL,
       c.created_at + s * interval '1 millisecond',
       -- synthetic counts (these are not tokenized): one token per four characters
       (380 + (s % 41)::int) / 4
FROM conversations AS c
CROSS JOIN LATERAL generate_series($2::bigint, LEAST($3::bigint, c.last_seq)) AS s
WHERE c.id = ANY($1::uuid[])
"""
_HEX_CONTENT = "left(repeat(md5(c.id::text || ':' || s) || ' ', 13), 380 + (s % 41)::int)"
# 90 words drawn from $4 by md5 bytes (the same rows on every run), after the markers.
_WORDS_CONTENT = """left(
    CASE WHEN s % 10007 = 0 THEN $5::text || ' ' ELSE '' END
    || CASE WHEN s % 10 = 0 THEN $6::text || ' ' ELSE '' END
    || array_to_string(ARRAY(
        SELECT ($4::text[])[1 + get_byte(decode(md5(c.id::text || ':' || s || ':' || k), 'hex'), 0)
                             % array_length($4::text[], 1)]
        FROM generate_series(1, 90) AS k), ' '),
    380 + (s % 41)::int)"""

_CONVERSATION_SQL = """
INSERT INTO conversations (id, user_id, title, metadata, created_at, updated_at,
                           message_count, last_seq)
SELECT t.id, t.user_id, t.title, '{}'::jsonb, t.created_at,
       t.created_at + t.n * interval '1 millisecond', t.n, t.n
FROM unnest($1::uuid[], $2::text[], $3::text[], $4::timestamptz[], $5::bigint[])
     AS t(id, user_id, title, created_at, n)
"""


def stable_id(*parts: object) -> uuid.UUID:
    """A UUID derived from a name: the same rows in every database and every run."""
    name = ":".join(str(part) for part in ("chatstore-bench", *parts))
    return uuid.UUID(hashlib.md5(name.encode()).hexdigest())


#: Words for the messages the benchmark writes itself: English text, as agents' messages are
#: (a tokenizer's cost depends on the text: random hex takes ~2.5x as many tokens).
WORDS = (
    "the of and to in is you that it he was for on are as with his they at be this have from "
    "or one had by word but not what all were we when your can said there use an each which "
    "she do how their if will up other about out many then them these so some her would make "
    "like him into time has look two more write go see number no way could people my than "
    "first water been call who oil its now find long down day did get come made may part "
    "train ticket station morning evening weather hotel booking flight seat window price"
).split()
#: Search markers in ``words`` conversations: in every 10th message, in every 10,007th.
COMMON_WORD, RARE_WORD = "weather", "zanzibar"
_DRAWN = [word for word in WORDS if word != COMMON_WORD]


def message_content(index: int) -> str:
    """About 400 characters of English words for a message written by the benchmark."""
    digest = hashlib.sha256(f"chatstore-bench:{index}".encode()).digest()
    length = 380 + index % 41
    words = [f"{index:08d}"]
    k = 0
    while sum(len(word) + 1 for word in words) <= length:
        words.append(WORDS[(digest[k % len(digest)] + 7 * k) % len(WORDS)])
        k += 1
    return " ".join(words)[:length]


@dataclass(frozen=True, slots=True)
class ConversationSpec:
    """A conversation to generate: its owner, its size and when it started."""

    id: uuid.UUID
    user: str
    messages: int
    created_at: datetime
    title: str
    #: English words with search markers (see the module docstring), instead of hex.
    words: bool = False

    @property
    def updated_at(self) -> datetime:
        return self.created_at + timedelta(milliseconds=self.messages)


def _chunks(
    specs: Sequence[ConversationSpec], rows: int
) -> Iterator[tuple[list[uuid.UUID], int, int, bool]]:
    """(ids, first seq, last seq, words) batches of about ``rows`` messages each: many small
    conversations per batch, or one slice of a large (or a words) conversation."""
    batch: list[uuid.UUID] = []
    batch_rows = batch_max = 0
    for spec in specs:
        if spec.messages == 0:
            continue
        if spec.messages >= rows or spec.words:
            for lo in range(1, spec.messages + 1, rows):
                yield [spec.id], lo, min(lo + rows - 1, spec.messages), spec.words
            continue
        batch.append(spec.id)
        batch_rows += spec.messages
        batch_max = max(batch_max, spec.messages)
        if batch_rows >= rows:
            yield batch, 1, batch_max, False
            batch, batch_rows, batch_max = [], 0, 0
    if batch:
        yield batch, 1, batch_max, False


async def populate(
    conn: asyncpg.Connection,
    specs: Sequence[ConversationSpec],
    *,
    chunk_rows: int = 50_000,
    progress: Callable[[int, int, float], None] | None = None,
) -> int:
    """Insert users, conversations and their messages; returns the number of messages.

    ``progress(done, total, elapsed_s)`` is called after each batch of messages.
    """
    started = time.perf_counter()
    total = sum(spec.messages for spec in specs)
    # Loading only: the measured statements run later with the server's own settings.
    await conn.execute("SET synchronous_commit = off")
    users = sorted({spec.user for spec in specs})
    await conn.execute(
        "INSERT INTO users (id, created_at) SELECT u, $2 FROM unnest($1::text[]) AS u "
        "ON CONFLICT (id) DO NOTHING",
        users,
        min(spec.created_at for spec in specs),
    )
    for lo in range(0, len(specs), 5_000):
        part = specs[lo : lo + 5_000]
        await conn.execute(
            _CONVERSATION_SQL,
            [spec.id for spec in part],
            [spec.user for spec in part],
            [spec.title for spec in part],
            [spec.created_at for spec in part],
            [spec.messages for spec in part],
        )
    done = 0
    for ids, first, last, words in _chunks(specs, chunk_rows):
        if words:
            sql = _MESSAGE_SQL.format(content=_WORDS_CONTENT)
            status = await conn.execute(sql, ids, first, last, _DRAWN, RARE_WORD, COMMON_WORD)
        else:
            status = await conn.execute(_MESSAGE_SQL.format(content=_HEX_CONTENT), ids, first, last)
        done += int(status.rsplit(" ", 1)[1])
        if progress is not None:
            progress(done, total, time.perf_counter() - started)
    # What chatstore's appends keep on the conversation row: the sum of its token counts.
    for lo in range(0, len(specs), 5_000):
        await conn.execute(
            "UPDATE conversations SET token_total = (SELECT coalesce(sum(token_count), 0) "
            "FROM messages WHERE conversation_id = conversations.id) WHERE id = ANY($1::uuid[])",
            [spec.id for spec in specs[lo : lo + 5_000]],
        )
    await conn.execute("RESET synchronous_commit")
    if done != total:
        raise RuntimeError(f"generated {done} messages, expected {total}")
    return done


async def vacuum_analyze(conn: asyncpg.Connection) -> None:
    """Set hint bits and the visibility map and refresh statistics, so the first timed
    read does not pay for the bulk load (and the planner sees the real sizes)."""
    await conn.execute("VACUUM (ANALYZE) users, conversations, messages")
