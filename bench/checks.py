"""What the benchmark's writes left in the database: the one place it reads messages back.

Every check of chatstore's sequence invariants the workloads (and the large dataset) make is
here, in plain SQL of the benchmark's own, not chatstore's statements: ``seq`` exactly 1..N
in every conversation, ``message_count = last_seq = N``, and each acknowledged append stored
once with the ``seq`` it was told.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import asyncpg

__all__ = ["broken_sequences", "check_sequence", "stored_messages", "totals"]

#: The counts ``check_sequence`` reports, which ``totals`` adds up.
COUNTS = ("stored", "acknowledged", "lost", "duplicated", "seq_mismatch")


async def stored_messages(
    conn: asyncpg.Connection, conversation_ids: Sequence[uuid.UUID]
) -> dict[uuid.UUID, list[tuple[uuid.UUID, int]]]:
    """(message id, seq) of every stored message of each conversation, in ``seq`` order."""
    rows = await conn.fetch(
        "SELECT conversation_id, id, seq FROM messages WHERE conversation_id = ANY($1::uuid[]) "
        "ORDER BY conversation_id, seq",
        list(conversation_ids),
    )
    stored: dict[uuid.UUID, list[tuple[uuid.UUID, int]]] = {c: [] for c in conversation_ids}
    for row in rows:
        stored[row["conversation_id"]].append((row["id"], row["seq"]))
    return stored


async def check_sequence(
    conn: asyncpg.Connection,
    conversation_id: uuid.UUID,
    *,
    acknowledged: Sequence[tuple[uuid.UUID, int]],
) -> dict[str, Any]:
    """Compare what the database holds with what the appenders were told.

    ``acknowledged``: (message id, seq) for every append that returned. Lost: acknowledged
    but absent. Duplicated: stored more than once (same id) or stored without being
    acknowledged. Gapless: the stored seqs are exactly 1..N and the conversation's
    message_count and last_seq both equal N.
    """
    rows = (await stored_messages(conn, [conversation_id]))[conversation_id]
    counters = await conn.fetchrow(
        "SELECT message_count, last_seq FROM conversations WHERE id = $1", conversation_id
    )
    assert counters is not None
    stored = dict(rows)
    acked = dict(acknowledged)
    seqs = [seq for _, seq in rows]
    lost = sum(1 for message_id in acked if message_id not in stored)
    duplicated = (len(rows) - len(stored)) + sum(1 for mid in stored if mid not in acked)
    wrong_seq = sum(1 for mid, seq in acked.items() if stored.get(mid, seq) != seq)
    n = len(rows)
    gapless = seqs == list(range(1, n + 1))
    counters_ok = counters["message_count"] == n and counters["last_seq"] == n
    return {
        "stored": n,
        "acknowledged": len(acknowledged),
        "lost": lost,
        "duplicated": duplicated + (len(acknowledged) - len(acked)),
        "seq_mismatch": wrong_seq,
        "gapless": gapless,
        "counters_match": counters_ok,
        "passed": lost == 0
        and duplicated == 0
        and len(acked) == len(acknowledged)
        and wrong_seq == 0
        and gapless
        and counters_ok
        and n == len(acknowledged),
    }


def totals(checks: Iterable[Mapping[str, Any]]) -> dict[str, int]:
    """The counts of several ``check_sequence`` results, added up."""
    listed = list(checks)
    return {key: sum(int(check[key]) for check in listed) for key in COUNTS}


async def broken_sequences(conn: asyncpg.Connection) -> int:
    """Conversations whose seqs are not exactly 1..last_seq or whose counters disagree
    (0 when the invariants hold), over the whole database in one statement."""
    value = await conn.fetchval(
        """
        SELECT count(*) FROM conversations AS c
        LEFT JOIN (SELECT conversation_id, count(*) AS n, min(seq) AS lo, max(seq) AS hi
                   FROM messages GROUP BY conversation_id) AS m ON m.conversation_id = c.id
        WHERE coalesce(m.n, 0) <> c.last_seq OR c.message_count <> c.last_seq
           OR (m.n > 0 AND (m.lo <> 1 OR m.hi <> c.last_seq))
        """
    )
    return int(value)
