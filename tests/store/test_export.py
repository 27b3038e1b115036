"""Export (``ConversationStore.export``, ``chatstore export``): the versioned JSONL format,
every field, in id and seq order a page at a time, scoped by user or conversation; Markdown
transcripts."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from store import ConversationStore, NotFound, Settings
from store._export import line
from store.contract import EXPORT_PAGE
from tests.mcp_server.helpers import run_command, run_main
from tests.support import CHATSTORE, MESSAGE_KEYS, server_env


async def _everything(store: ConversationStore, user: str) -> Any:
    """A conversation with every feature in use, a fork of it, and a long one."""
    trip = await store.create_conversation(
        user=user, title="Trip ✈ Lyon", metadata={"team": "ops", "n": 1.5}, key="trip"
    )
    await store.append_messages(
        user=user,
        conversation_id=trip.id,
        messages=[
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Trains to Lyon? ünïcode 🚆", "idempotency_key": "q1"},
            {
                "role": "assistant",
                "tool_calls": [
                    {
                        "id": "c1",
                        "type": "function",
                        "function": {"name": "trains", "arguments": "{}"},
                    }
                ],
                "raw": {"type": "function_call", "call_id": "c1", "name": "trains"},
            },
            {"role": "tool", "tool_call_id": "c1", "content": "9:04", "token_count": 3},
            {"role": "assistant", "content": "Take the 9:04.", "metadata": {"model": "m"}},
        ],
    )
    await store.update_conversation(
        user=user, conversation_id=trip.id, summary="Lyon by train.", summary_up_to_seq=5
    )
    fork = await store.fork_conversation(user=user, conversation_id=trip.id, at_seq=2)
    long = await store.create_conversation(user=user, title="long")
    await store.append_messages(
        user=user,
        conversation_id=long.id,
        messages=[{"role": "user", "content": f"m{n}"} for n in range(EXPORT_PAGE + 20)],
    )
    return trip, fork, long


@pytest.mark.pgbouncer
async def test_export_writes_every_field_in_order(
    store: ConversationStore, user: str, other_user: str
) -> None:
    trip, fork, long = await _everything(store, user)
    await store.create_conversation(user=other_user, title="theirs")
    records = [r async for r in store.export(user=user)]
    assert records[0] == {"format": "chatstore", "version": 1}
    conversations = [r for r in records if r.get("type") == "conversation"]
    assert [c["id"] for c in conversations] == sorted(str(c.id) for c in (trip, fork, long))
    assert {c["user"] for c in conversations} == {user}
    by_id = {c["id"]: c for c in conversations}
    assert by_id[str(trip.id)]["key"] == "trip"
    assert by_id[str(trip.id)]["summary"] == "Lyon by train."
    assert by_id[str(fork.id)]["forked_from"] == {"conversation_id": str(trip.id), "seq": 2}
    # Each conversation is followed by exactly its messages, in seq order.
    current: str | None = None
    seqs: dict[str | None, list[int]] = {}
    for record in records[1:]:
        if record.get("type") == "conversation":
            current = record["id"]
            seqs[current] = []
        else:
            assert record["conversation_id"] == current
            seqs[current].append(record["seq"])
    assert seqs[str(long.id)] == list(range(1, EXPORT_PAGE + 21))
    assert seqs[str(trip.id)] == [1, 2, 3, 4, 5] and seqs[str(fork.id)] == [1, 2]
    messages = [
        r for r in records if r.get("type") == "message" and r["conversation_id"] == str(trip.id)
    ]
    assert messages[1]["idempotency_key"] == "q1" and messages[1]["content"].endswith("🚆")
    assert messages[2]["raw"] == {"type": "function_call", "call_id": "c1", "name": "trains"}
    assert messages[3]["token_count"] == 3 and messages[4]["metadata"] == {"model": "m"}
    assert set(messages[0]) == MESSAGE_KEYS | {"type", "idempotency_key"}
    # Lines are canonical: sorted keys, compact, UTF-8.
    assert line(records[0]) == '{"format":"chatstore","version":1}'
    everyone = [r async for r in store.export()]
    assert any(r.get("user") == other_user for r in everyone)


async def test_one_conversation_and_a_missing_one(store: ConversationStore, user: str) -> None:
    trip, _, _ = await _everything(store, user)
    records = [r async for r in store.export(conversation_id=trip.id)]
    assert [r.get("type") for r in records] == [None, "conversation"] + ["message"] * 5
    with pytest.raises(NotFound):
        _ = [r async for r in store.export(user="someone-else", conversation_id=trip.id)]


@pytest.mark.slow
async def test_the_export_command(
    settings: Settings, store: ConversationStore, user: str, tmp_path: Path
) -> None:
    trip, _, _ = await _everything(store, user)
    env = server_env(settings.resolved_database_url, tmp_path / "data")
    done = await run_command([*CHATSTORE, "export", "--user", user], env=env, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert json.loads(lines[0]) == {"format": "chatstore", "version": 1}
    assert len(lines) == 1 + 3 + 5 + 2 + EXPORT_PAGE + 20
    assert done.stderr.strip() == f"exported 3 conversations, {5 + 2 + EXPORT_PAGE + 20:,} messages"
    target = tmp_path / "trip.md"
    args = ["export", "--conversation", str(trip.id), "--format", "markdown", "-o", str(target)]
    code, _ = await run_main(args, env)
    assert code == 0
    text = target.read_text(encoding="utf-8")
    assert text.startswith("# Trip ✈ Lyon\n")
    assert "## 2. user\n\n```\nTrains to Lyon? ünïcode 🚆" in text
    missing = await run_command(
        [*CHATSTORE, "export", "--conversation", "00000000-0000-4000-8000-000000000000"],
        env=env,
        cwd=tmp_path,
    )
    assert missing.returncode == 1 and "not_found" in missing.stderr
    assert len(missing.stderr.strip().splitlines()) <= 2
