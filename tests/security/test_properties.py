"""Property-based: any sequence of operations from several users matches a simple model.

Hypothesis generates lists of creates, appends (with and without idempotency keys, valid and
invalid content, to one's own, another user's and missing conversations), deletes, message
pages in every direction and conversation listings, for three users at once. Each operation's
outcome is checked against an in-memory model (per-user isolation, gapless ``seq``, replays
and conflicts, counters), and after every example the database itself is checked with SQL.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from store import Conflict, ConversationStore, InvalidArgument, NotFound, Settings
from tests.leaks import clean
from tests.rawdb import RawDB

USERS = 3
STATS = {"examples": 0, "operations": 0}

texts = st.text(
    alphabet=st.characters(codec="utf-8", exclude_characters="\x00"),
    min_size=1,
    max_size=12,
).filter(lambda s: s.strip() != "")
bad_texts = st.sampled_from(["", "   ", "a\x00b", "\ud800", "x" * 100_001])

user_ix = st.integers(0, USERS - 1)
conv_ix = st.integers(0, 6)  # an index into every conversation so far, or past them: missing

ops = st.one_of(
    st.tuples(st.just("create"), user_ix),
    st.tuples(
        st.just("append"),
        user_ix,
        conv_ix,
        st.sampled_from(["user", "assistant", "system"]),
        st.one_of(texts, texts, texts, bad_texts),
        st.one_of(st.none(), st.sampled_from(["k1", "k2", "k3"])),
    ),
    st.tuples(st.just("delete"), user_ix, conv_ix),
    st.tuples(
        st.just("page"),
        user_ix,
        conv_ix,
        st.integers(1, 4),
        st.sampled_from(["latest", "before", "after"]),
        st.integers(0, 8),
    ),
    st.tuples(st.just("list"), user_ix, st.integers(1, 3)),
    st.tuples(st.just("get"), user_ix, conv_ix, st.integers(0, 5)),
)


@dataclass
class ModelConversation:
    id: str
    owner: str
    alive: bool = True
    messages: list[tuple[str, str, str]] = field(default_factory=list)  # (id, role, content)
    keys: dict[str, int] = field(default_factory=dict)  # key -> index into messages


@dataclass
class Model:
    users: list[str]
    conversations: list[ModelConversation] = field(default_factory=list)

    def target(self, index: int) -> tuple[str, ModelConversation | None]:
        if index < len(self.conversations):
            conversation = self.conversations[index]
            return conversation.id, conversation
        return str(uuid.UUID(int=index + 1)), None

    def visible(self, user: str, conversation: ModelConversation | None) -> bool:
        return conversation is not None and conversation.alive and conversation.owner == user


async def _expect_not_found(call: Any, foreign: list[str]) -> None:
    with pytest.raises(NotFound) as raised:
        await call
    clean(str(raised.value), foreign=foreign)


async def _run(store: ConversationStore, operations: list[tuple[Any, ...]]) -> Model:
    tag = uuid.uuid4().hex[:8]
    model = Model(users=[f"prop-{tag}-{n}" for n in range(USERS)])
    for op in operations:
        kind, user = op[0], model.users[op[1]]
        others = [u for u in model.users if u != user]
        if kind == "create":
            created = await store.create_conversation(user=user)
            assert created.message_count == 0 and created.last_seq == 0
            model.conversations.append(ModelConversation(str(created.id), user))
        elif kind == "append":
            _, _, index, role, content, key = op
            cid, conversation = model.target(index)
            call = store.append_message(
                user=user, conversation_id=cid, role=role, content=content, idempotency_key=key
            )
            valid = content.strip() != "" and "\x00" not in content and len(content) <= 100_000
            valid = valid and "\ud800" not in content
            if not valid:
                with pytest.raises(InvalidArgument) as refused:
                    await call
                clean(str(refused.value), foreign=others)
            elif not model.visible(user, conversation):
                await _expect_not_found(call, others)
            else:
                assert conversation is not None
                if key is not None and key in conversation.keys:
                    stored = conversation.messages[conversation.keys[key]]
                    if (stored[1], stored[2]) != (role, content):
                        with pytest.raises(Conflict) as conflicted:
                            await call
                        clean(str(conflicted.value), foreign=others)
                        continue
                    replayed = await call
                    assert (str(replayed.id), replayed.seq) == (
                        stored[0],
                        conversation.keys[key] + 1,
                    )
                    continue
                message = await call
                assert message.seq == len(conversation.messages) + 1
                assert (message.role, message.content) == (role, content)
                if key is not None:
                    conversation.keys[key] = len(conversation.messages)
                conversation.messages.append((str(message.id), role, content))
        elif kind == "delete":
            cid, conversation = model.target(op[2])
            call_d = store.delete_conversation(user=user, conversation_id=cid)
            if not model.visible(user, conversation):
                await _expect_not_found(call_d, others)
            else:
                assert conversation is not None
                deleted = await call_d
                assert deleted.messages_deleted == len(conversation.messages)
                conversation.alive = False
        elif kind == "page":
            _, _, index, limit, direction, n = op
            cid, conversation = model.target(index)
            kwargs: dict[str, Any] = {"limit": limit}
            if direction == "before":
                kwargs["before_seq"] = n + 1
            elif direction == "after":
                kwargs["after_seq"] = n
            call_p = store.list_messages(user=user, conversation_id=cid, **kwargs)
            if not model.visible(user, conversation):
                await _expect_not_found(call_p, others)
                continue
            assert conversation is not None
            seqs = list(range(1, len(conversation.messages) + 1))
            if direction == "latest":
                expected, more = seqs[-limit:], len(seqs) > limit
            elif direction == "before":
                older = [s for s in seqs if s < n + 1]
                expected, more = older[-limit:], len(older) > limit
            else:
                newer = [s for s in seqs if s > n]
                expected, more = newer[:limit], len(newer) > limit
            page = await call_p
            assert [m.seq for m in page.messages] == expected
            assert [m.content for m in page.messages] == [
                conversation.messages[s - 1][2] for s in expected
            ]
            assert page.has_more == more
        elif kind == "list":
            seen: list[str] = []
            cursor: str | None = None
            last_updated = None
            while True:
                page_c = await store.list_conversations(user=user, limit=op[2], cursor=cursor)
                for c in page_c.conversations:
                    if last_updated is not None:
                        assert c.updated_at <= last_updated
                    last_updated = c.updated_at
                seen += [str(c.id) for c in page_c.conversations]
                cursor = page_c.next_cursor
                if cursor is None:
                    break
            mine = [c.id for c in model.conversations if c.alive and c.owner == user]
            assert sorted(seen) == sorted(mine), "listing shows another user's or lost rows"
            assert len(seen) == len(set(seen))
        else:
            _, _, index, recent = op
            cid, conversation = model.target(index)
            call_g = store.get_conversation(user=user, conversation_id=cid, recent_messages=recent)
            if not model.visible(user, conversation):
                await _expect_not_found(call_g, others)
                continue
            assert conversation is not None
            got = await call_g
            count = len(conversation.messages)
            assert got.message_count == got.last_seq == count
            expected_seqs = list(range(1, count + 1))[-recent:] if recent else []
            assert [m.seq for m in got.messages] == expected_seqs
    return model


async def _check_database(settings_: Settings, model: Model) -> None:
    db = await RawDB.connect(settings_)
    try:
        assert await db.violations(model.users) == []
        for user in model.users:
            alive = [c for c in model.conversations if c.alive and c.owner == user]
            assert await db.rows_of(user) == (
                len(alive),
                sum(len(c.messages) for c in alive),
            )
    finally:
        await db.close()


@pytest.fixture(autouse=True, scope="module")
def _report() -> Any:
    yield
    print(f"property examples: {STATS}")


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(operations=st.lists(ops, min_size=5, max_size=60))
async def test_any_operation_sequence_matches_the_model(
    operations: list[tuple[Any, ...]], store: ConversationStore, settings: Settings
) -> None:
    model = await _run(store, operations)
    await _check_database(settings, model)
    STATS["examples"] += 1
    STATS["operations"] += len(operations)
