"""The store's basic round trip on both backends."""

from __future__ import annotations

from store.store import ConversationStore


async def test_create_append_read(store: ConversationStore, user: str) -> None:
    conversation = await store.create_conversation(user=user, title="first")
    for text in ("one", "two", "three"):
        await store.append_message(
            user=user, conversation_id=conversation.id, role="user", content=text
        )
    page = await store.list_messages(user=user, conversation_id=conversation.id)
    assert [m.content for m in page.messages] == ["one", "two", "three"]
    assert [m.seq for m in page.messages] == [1, 2, 3]
    assert page.has_more is False
