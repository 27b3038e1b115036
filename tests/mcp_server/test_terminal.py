"""``chatstore conversations``, ``show`` and ``info`` as a person (or a script) runs them, on
both backends: scoped to the user like the tools, readable tables, ``--json``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from store import ConversationStore, Settings, migrate
from tests.conftest import fresh_user
from tests.mcp_server.helpers import run_command, run_main
from tests.support import CHATSTORE, server_env

pytestmark = pytest.mark.slow


async def _run(
    settings: Settings, tmp_path: Path, *args: str, user: str | None = None
) -> tuple[int, str, str]:
    extra = {"CHATSTORE_USER": user} if user else {}
    env = server_env(settings.resolved_database_url, tmp_path / "data", **extra)
    done = await run_command([*CHATSTORE, *args], env=env, cwd=tmp_path)
    return done.returncode, done.stdout, done.stderr


async def _main(
    settings: Settings, tmp_path: Path, *args: str, user: str | None = None
) -> tuple[int, str, str]:
    """The command's main run in this process (its stdout; no process start-up to pay)."""
    extra = {"CHATSTORE_USER": user} if user else {}
    env = server_env(settings.resolved_database_url, tmp_path / "data", **extra)
    code, out = await run_main(args, env)
    return code, out, ""


async def test_conversations_show_and_info(
    settings: Settings, store: ConversationStore, tmp_path: Path
) -> None:
    user, other = fresh_user(), fresh_user()
    trip = await store.create_conversation(user=user, title="Trip to Lyon", key="trip")
    await store.append_messages(
        user=user,
        conversation_id=trip.id,
        messages=[
            {"role": "user", "content": "Trains to Lyon? ünïcode"},
            {"role": "assistant", "tool_calls": [{"id": "c1", "name": "trains"}]},
            {"role": "tool", "tool_call_id": "c1", "content": "9:04"},
            *({"role": "assistant", "content": f"reply {n}"} for n in range(250)),
        ],
    )
    await store.create_conversation(user=user, title="Second")
    theirs = await store.create_conversation(user=other, title="Not yours")

    code, out, err = await _run(settings, tmp_path, "conversations", user=user)
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].split() == ["id", "title", "messages", "updated", "key"]
    assert [line.split()[0] for line in lines[1:]] == [
        str(c.id) for c in (await store.list_conversations(user=user)).conversations
    ]
    assert "Not yours" not in out and str(trip.id) in out and "253" in out

    code, out, err = await _main(
        settings, tmp_path, "conversations", "--user", user, "--json", "--limit", "1"
    )
    assert code == 0, err
    [listed] = json.loads(out)
    assert listed["title"] == "Second"

    code, out, err = await _main(settings, tmp_path, "show", str(trip.id), "--user", user)
    assert code == 0, err
    assert out.startswith("# Trip to Lyon\n") and "- messages: 253\n" in out
    assert "## 1. user\n\n```\nTrains to Lyon? ünïcode\n```\n" in out
    assert "## 253. assistant\n\n```\nreply 249\n```\n" in out
    assert "_calls tool `trains` (id `c1`)_" in out

    code, out, err = await _main(settings, tmp_path, "show", str(trip.id), "--json", user=user)
    assert code == 0, err
    shown = json.loads(out)
    assert shown["conversation"]["key"] == "trip"
    assert [m["seq"] for m in shown["messages"]] == list(range(1, 254))

    code, out, err = await _run(settings, tmp_path, "show", str(theirs.id), "--user", user)
    assert code == 1 and out == ""
    assert err.strip().endswith("not_found: no conversation with that id")

    code, out, err = await _main(settings, tmp_path, "info", "--json")
    assert code == 0, err
    info = json.loads(out)
    assert info["database"] == settings.dialect
    assert info["schema_version"] == migrate.shipped_versions(settings.dialect)[-1][:-3]
    assert info["conversations"] >= 3 and info["messages"] >= 253 and info["users"] >= 2
    code, out, err = await _main(settings, tmp_path, "info")
    assert code == 0, err
    assert out.splitlines()[0].split()[:2] == ["database", settings.dialect]
    assert "(at head)" in out
