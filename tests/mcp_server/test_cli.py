"""``chatstore purge-user USER``: deletes everything of that user and nothing of anyone else's."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from store import ConversationStore, NotFound, Settings
from tests.conftest import fresh_user
from tests.mcp_server.helpers import run_command
from tests.support import CHATSTORE, server_env

pytestmark = pytest.mark.slow


async def test_purge_user_deletes_that_users_data_only(
    settings: Settings, store: ConversationStore, tmp_path: Path
) -> None:
    doomed, bystander = fresh_user(), fresh_user()
    doomed_ids = []
    for title in ("one", "two"):
        conversation = await store.create_conversation(user=doomed, title=title)
        doomed_ids.append(conversation.id)
    for n in range(3):
        await store.append_message(
            user=doomed, conversation_id=doomed_ids[0], role="user", content=f"m{n}"
        )
    kept = await store.create_conversation(user=bystander, title="kept")
    await store.append_message(user=bystander, conversation_id=kept.id, role="user", content="hi")

    env = server_env(settings.resolved_database_url, tmp_path / "data")
    finished = await run_command([*CHATSTORE, "purge-user", doomed], env=env, cwd=tmp_path)
    assert finished.returncode == 0, finished.stderr
    assert json.loads(finished.stdout) == {
        "user": doomed,
        "conversations_deleted": 2,
        "messages_deleted": 3,
    }

    assert (await store.list_conversations(user=doomed)).conversations == []
    for conversation_id in doomed_ids:
        with pytest.raises(NotFound):
            await store.list_messages(user=doomed, conversation_id=conversation_id)
    survivor = await store.get_conversation(
        user=bystander, conversation_id=kept.id, recent_messages=10
    )
    assert survivor.message_count == 1
    assert [m.content for m in survivor.messages] == ["hi"]
