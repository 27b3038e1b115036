"""Quotas: CHATSTORE_MAX_CONVERSATIONS_PER_USER and CHATSTORE_MAX_MESSAGES_PER_CONVERSATION,
enforced inside the write they bound, so that concurrent writers in separate stores (separate
connections, as separate processes would be) never pass them; ``limit_exceeded`` writes
nothing."""

from __future__ import annotations

import asyncio

import pytest

from store import ConversationStore, LimitExceeded, Settings
from tests.rawdb import RawDB
from tests.store.helpers import separate_stores, snapshot


@pytest.fixture
def limited(settings: Settings) -> Settings:
    return settings.model_copy(
        update={"max_conversations_per_user": 10, "max_messages_per_conversation": 5}
    )


@pytest.mark.pgbouncer
async def test_concurrent_creates_at_the_limit_make_exactly_the_limit(
    limited: Settings, raw: RawDB, user: str
) -> None:
    async with separate_stores(limited, 4) as stores:
        outcomes = await asyncio.gather(
            *(stores[n % 4].create_conversation(user=user, title=f"c{n}") for n in range(16)),
            return_exceptions=True,
        )
    refused = [o for o in outcomes if isinstance(o, LimitExceeded)]
    assert len(refused) == 6, outcomes
    assert not [o for o in outcomes if isinstance(o, BaseException) and o not in refused]
    assert await raw.conversations_of(user) == 10
    assert str(refused[0]) == (
        "limit_exceeded: this user has 10 conversations, the most allowed "
        "(CHATSTORE_MAX_CONVERSATIONS_PER_USER); delete one to make room"
    )


async def test_at_the_limit_a_key_still_finds_its_conversation_and_a_fork_is_refused(
    limited: Settings, raw: RawDB, user: str, other_user: str
) -> None:
    async with ConversationStore(limited) as store:
        keyed = await store.create_conversation(user=user, key="kept")
        for n in range(9):
            await store.create_conversation(user=user, title=f"c{n}")
        assert (await store.create_conversation(user=user, key="kept")).id == keyed.id
        with pytest.raises(LimitExceeded):
            await store.create_conversation(user=user, key="new")
        with pytest.raises(LimitExceeded):
            await store.fork_conversation(user=user, conversation_id=keyed.id, at_seq=0)
        assert await raw.conversations_of(user) == 10
        # The quota is per user; deleting one makes room.
        await store.create_conversation(user=other_user)
        await store.delete_conversation(user=user, conversation_id=keyed.id)
        made = await store.create_conversation(user=user, key="new")
        assert made.key == "new"


async def test_appends_stop_at_the_message_limit_and_nothing_is_half_written(
    limited: Settings, raw: RawDB, user: str
) -> None:
    async with ConversationStore(limited) as store:
        conversation = await store.create_conversation(user=user)
        cid = conversation.id
        await store.append_messages(
            user=user,
            conversation_id=cid,
            messages=[{"role": "user", "content": f"m{n}"} for n in range(3)],
        )
        before = await snapshot(store, raw, user, cid)
        with pytest.raises(LimitExceeded, match="adding 3 messages would pass the 5 messages"):
            await store.append_messages(
                user=user,
                conversation_id=cid,
                messages=[{"role": "user", "content": f"x{n}"} for n in range(3)],
            )
        assert await snapshot(store, raw, user, cid) == before
        for n in range(2):
            await store.append_message(user=user, conversation_id=cid, role="user", content=f"y{n}")
        with pytest.raises(LimitExceeded, match="adding a message would pass"):
            await store.append_message(user=user, conversation_id=cid, role="user", content="z")
        # A replayed key is not a new message: it is answered at the limit too.
        await store.truncate_messages(user=user, conversation_id=cid, after_seq=4)
        first = await store.append_message(
            user=user, conversation_id=cid, role="user", content="k", idempotency_key="k"
        )
        again = await store.append_message(
            user=user, conversation_id=cid, role="user", content="k", idempotency_key="k"
        )
        assert again == first
        assert await raw.violations([user]) == []


@pytest.mark.pgbouncer
async def test_concurrent_appenders_never_pass_the_message_limit(
    limited: Settings, raw: RawDB, user: str
) -> None:
    async with separate_stores(limited, 4) as stores:
        conversation = await stores[0].create_conversation(user=user)
        outcomes = await asyncio.gather(
            *(
                stores[n % 4].append_message(
                    user=user, conversation_id=conversation.id, role="user", content=f"m{n}"
                )
                for n in range(12)
            ),
            return_exceptions=True,
        )
    assert sum(isinstance(o, LimitExceeded) for o in outcomes) == 7, outcomes
    assert await raw.messages_in(conversation.id) == 5
    assert await raw.violations([user]) == []


async def test_without_quotas_nothing_is_counted(store: ConversationStore, user: str) -> None:
    assert store.settings.max_conversations_per_user is None
    conversation = await store.create_conversation(user=user)
    stored = await store.append_messages(
        user=user,
        conversation_id=conversation.id,
        messages=[{"role": "user", "content": f"m{n}"} for n in range(1000)],
    )
    assert stored[-1].seq == 1000
