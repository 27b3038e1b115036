"""Retention (``ConversationStore.prune``, ``chatstore prune``): idle conversations go with
their messages, in short batches; racing appenders lose nothing of a kept conversation; two
prunes at once (replicas) never count a conversation twice; ``--dry-run`` deletes nothing."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from store import ConversationStore, InvalidArgument, NotFound, Settings
from tests.mcp_server.helpers import run_command, run_main
from tests.rawdb import RawDB
from tests.store.helpers import separate_stores
from tests.support import CHATSTORE, server_env


async def _age(raw: RawDB, conversation_id: uuid.UUID, days: float) -> None:
    """Make a conversation look last updated ``days`` ago."""
    when = raw.ts(datetime.now(UTC) - timedelta(days=days))
    await raw.execute(
        "UPDATE conversations SET updated_at = $1 WHERE id = $2", when, conversation_id
    )


async def _conversation(store: ConversationStore, user: str, messages: int) -> uuid.UUID:
    made = await store.create_conversation(user=user)
    if messages:
        await store.append_messages(
            user=user,
            conversation_id=made.id,
            messages=[{"role": "user", "content": f"m{n}"} for n in range(messages)],
        )
    return made.id


async def test_idle_conversations_go_with_their_messages(
    store: ConversationStore, raw: RawDB, user: str, other_user: str
) -> None:
    idle = [await _conversation(store, user, n) for n in (0, 3, 5)]
    theirs = await _conversation(store, other_user, 2)
    recent = await _conversation(store, user, 4)
    for cid in [*idle, theirs]:
        await _age(raw, cid, 40)
    seen: list[tuple[int, int]] = []

    dry = await store.prune(idle_days=30, user=user, dry_run=True)
    assert (dry.conversations_deleted, dry.messages_deleted, dry.dry_run) == (3, 8, True)
    assert await raw.conversations_of(user) == 4

    done = await store.prune(
        idle_days=30, user=user, batch=2, progress=lambda c, m: seen.append((c, m))
    )
    assert (done.conversations_deleted, done.messages_deleted) == (3, 8)
    assert [c for c, _ in seen] == [2, 3]  # batches of 2, running totals
    assert await raw.conversations_of(user) == 1
    assert await raw.messages_in(recent) == 4
    with pytest.raises(NotFound):
        await store.get_conversation(user=user, conversation_id=idle[1])
    assert (await raw.orphans()) == (0, 0)
    # Everyone's: the other user's idle one goes too, and nothing recent.
    everyone = await store.prune(idle_days=30)
    assert everyone.conversations_deleted >= 1
    assert await raw.messages_in(recent) == 4 and await raw.conversations_of(other_user) == 0
    assert (await store.prune(idle_days=0, user=user)).conversations_deleted == 1
    for bad in (-1, 1.5, True):
        with pytest.raises(InvalidArgument, match="idle_days"):
            await store.prune(idle_days=bad)  # type: ignore[arg-type]


@pytest.mark.pgbouncer
async def test_prune_racing_appenders_loses_nothing_that_is_kept(
    settings: Settings, raw: RawDB, user: str
) -> None:
    async with separate_stores(settings, 3) as (setup, writer_store, pruner):
        idle = [await _conversation(setup, user, 20) for _ in range(40)]
        kept = [await _conversation(setup, user, 1) for _ in range(8)]
        for cid in idle:
            await _age(raw, cid, 10)
        acknowledged: dict[uuid.UUID, list[int]] = {cid: [] for cid in kept}

        async def appender(cid: uuid.UUID) -> None:
            for n in range(30):
                message = await writer_store.append_message(
                    user=user, conversation_id=cid, role="user", content=f"a{n}"
                )
                acknowledged[cid].append(message.seq)

        before = await raw.messages_of(user)
        results = await asyncio.gather(
            *(appender(cid) for cid in kept), pruner.prune(idle_days=5, batch=3)
        )
    pruned = results[-1]
    assert pruned is not None
    assert (pruned.conversations_deleted, pruned.messages_deleted) == (40, 800)
    for cid in kept:
        assert await raw.seqs_in(cid) == list(range(1, 32))
        assert acknowledged[cid] == list(range(2, 32))
    assert await raw.messages_of(user) == before - 800 + 8 * 30
    assert await raw.violations([user]) == []


async def test_two_prunes_at_once_share_the_work(settings: Settings, raw: RawDB, user: str) -> None:
    async with separate_stores(settings, 2) as (first, second):
        idle = [await _conversation(first, user, 2) for _ in range(60)]
        for cid in idle:
            await _age(raw, cid, 3)
        a, b = await asyncio.gather(
            first.prune(idle_days=1, user=user, batch=5),
            second.prune(idle_days=1, user=user, batch=5),
        )
    assert a.conversations_deleted + b.conversations_deleted == 60
    assert a.messages_deleted + b.messages_deleted == 120
    assert await raw.conversations_of(user) == 0


@pytest.mark.slow
async def test_the_prune_command(
    settings: Settings, store: ConversationStore, raw: RawDB, user: str, tmp_path: Path
) -> None:
    idle = await _conversation(store, user, 3)
    await _age(raw, idle, 100)
    env = server_env(settings.resolved_database_url, tmp_path / "data")
    args = [*CHATSTORE, "prune", "--idle-days", "90", "--user", user]
    dry = await run_command([*args, "--dry-run"], env=env, cwd=tmp_path)
    assert dry.returncode == 0, dry.stderr
    assert dry.stdout == "would delete 1 conversations, 3 messages\n"
    assert await raw.conversations_of(user) == 1
    code, out = await run_main(args[len(CHATSTORE) :], env)
    assert (code, out) == (0, "deleted 1 conversations, 3 messages\n")
    assert await raw.conversations_of(user) == 0
    refused = await run_command([*CHATSTORE, "prune", "--idle-days", "-3"], env=env, cwd=tmp_path)
    assert refused.returncode == 2 and "must be 0 or more" in refused.stderr
    assert len(refused.stderr.strip().splitlines()) <= 2
