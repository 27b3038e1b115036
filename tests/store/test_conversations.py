"""Conversations: create, get, list (most recently updated first, keyset cursor), delete, purge."""

from __future__ import annotations

import base64
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from store.errors import InvalidArgument, NotFound
from store.schemas import Conversation, ConversationPage
from store.store import ConversationStore
from tests.rawdb import RawDB
from tests.store.helpers import append_many, conversation_with, parse_rfc3339
from tests.support import CONVERSATION_KEYS


async def _all_pages(store: ConversationStore, user: str, limit: int) -> list[ConversationPage]:
    pages = [await store.list_conversations(user=user, limit=limit)]
    while pages[-1].next_cursor is not None:
        assert len(pages) < 100, "paging does not terminate"
        pages.append(
            await store.list_conversations(user=user, limit=limit, cursor=pages[-1].next_cursor)
        )
    return pages


def _ids(pages: list[ConversationPage]) -> list[uuid.UUID]:
    return [c.id for page in pages for c in page.conversations]


async def _bump(store: ConversationStore, user: str, conversation: Conversation) -> None:
    await store.append_message(
        user=user, conversation_id=conversation.id, role="user", content="bump"
    )


# -- create / get ------------------------------------------------------------------------


async def test_create_returns_the_contract_shape(store: ConversationStore, user: str) -> None:
    before = datetime.now(UTC)
    created = await store.create_conversation(user=user, title="Trip plans", metadata={"k": 1})
    dumped = created.model_dump(mode="json")

    assert set(dumped) == CONVERSATION_KEYS
    assert str(uuid.UUID(dumped["id"])) == dumped["id"]
    assert dumped["title"] == "Trip plans"
    assert dumped["metadata"] == {"k": 1}
    assert dumped["message_count"] == 0
    assert dumped["last_seq"] == 0
    created_at = parse_rfc3339(dumped["created_at"])
    assert parse_rfc3339(dumped["updated_at"]) == created_at
    # Both clocks are this host's (PostgreSQL's clock_timestamp() or Python's).
    assert before - timedelta(seconds=5) <= created_at <= datetime.now(UTC) + timedelta(seconds=5)


async def test_create_defaults_to_no_title_and_empty_metadata(
    store: ConversationStore, user: str
) -> None:
    created = await store.create_conversation(user=user)
    assert created.title is None
    assert created.metadata == {}
    assert created.model_dump(mode="json")["title"] is None


async def test_ids_are_unique(store: ConversationStore, user: str) -> None:
    ids = {(await store.create_conversation(user=user)).id for _ in range(5)}
    assert len(ids) == 5


async def test_metadata_is_kept_exactly(store: ConversationStore, user: str) -> None:
    metadata: dict[str, Any] = {
        "source": "slack",
        "n": 42,
        "big": 2**62,
        "ratio": 0.25,
        "neg": -1.5,
        "flags": [True, False, None],
        "nested": {"deep": {"deeper": ["a", {"b": []}]}, "empty": {}},
        "unicode ключ 🙂": "значение ✓ 😀",
        "": "empty key",
        'quote"back\\slash': "line\nbreak\ttab",
    }
    created = await store.create_conversation(user=user, title="", metadata=metadata)
    assert created.metadata == metadata
    assert created.title == ""
    fetched = await store.get_conversation(user=user, conversation_id=created.id)
    assert fetched.metadata == metadata
    listed = (await store.list_conversations(user=user)).conversations
    assert listed[0].metadata == metadata


async def test_get_returns_what_create_returned(store: ConversationStore, user: str) -> None:
    created = await store.create_conversation(user=user, title="t", metadata={"a": "b"})
    fetched = await store.get_conversation(user=user, conversation_id=created.id)
    assert fetched.model_dump(exclude={"messages", "has_more"}) == created.model_dump()
    assert fetched.messages == [] and fetched.has_more is False
    # Either id form works: the UUID object or its string.
    by_string = await store.get_conversation(user=user, conversation_id=str(created.id))
    assert by_string.id == created.id


@pytest.mark.pgbouncer
async def test_get_with_recent_messages(store: ConversationStore, user: str) -> None:
    conversation = await conversation_with(store, user, 5)

    none = await store.get_conversation(user=user, conversation_id=conversation.id)
    assert none.messages == []
    assert none.message_count == 5
    assert none.last_seq == 5

    three = await store.get_conversation(
        user=user, conversation_id=conversation.id, recent_messages=3
    )
    assert [m.seq for m in three.messages] == [3, 4, 5]
    assert [m.content for m in three.messages] == ["m3", "m4", "m5"]

    exact = await store.get_conversation(
        user=user, conversation_id=conversation.id, recent_messages=5
    )
    assert [m.seq for m in exact.messages] == [1, 2, 3, 4, 5]

    most = await store.get_conversation(
        user=user, conversation_id=conversation.id, recent_messages=200
    )
    assert [m.seq for m in most.messages] == [1, 2, 3, 4, 5]
    dumped = most.model_dump(mode="json")
    assert [m["seq"] for m in dumped["messages"]] == [1, 2, 3, 4, 5]
    assert dumped["message_count"] == 5


@pytest.mark.parametrize("recent", [-1, 201, 10_000])
async def test_get_refuses_recent_messages_out_of_range(
    store: ConversationStore, user: str, recent: int
) -> None:
    conversation = await conversation_with(store, user, 1)
    with pytest.raises(InvalidArgument, match="recent_messages"):
        await store.get_conversation(
            user=user, conversation_id=conversation.id, recent_messages=recent
        )


async def test_unknown_conversation_is_not_found(store: ConversationStore, user: str) -> None:
    await store.create_conversation(user=user)
    with pytest.raises(NotFound) as info:
        await store.get_conversation(user=user, conversation_id=uuid.uuid4())
    assert str(info.value).startswith("not_found: ")


# -- list --------------------------------------------------------------------------------


async def test_list_for_a_new_user_is_empty(store: ConversationStore, user: str) -> None:
    page = await store.list_conversations(user=user)
    assert page.conversations == []
    assert page.next_cursor is None
    assert page.model_dump(mode="json") == {"conversations": [], "next_cursor": None}


async def test_list_is_most_recently_updated_first(store: ConversationStore, user: str) -> None:
    first = await store.create_conversation(user=user, title="first")
    second = await store.create_conversation(user=user, title="second")
    third = await store.create_conversation(user=user, title="third")
    listed = await store.list_conversations(user=user)
    assert [c.id for c in listed.conversations] == [third.id, second.id, first.id]

    await _bump(store, user, first)
    listed = await store.list_conversations(user=user)
    assert [c.id for c in listed.conversations] == [first.id, third.id, second.id]
    top = listed.conversations[0]
    assert top.message_count == 1
    assert top.last_seq == 1
    assert top.updated_at > top.created_at
    updated = [c.updated_at for c in listed.conversations]
    assert updated == sorted(updated, reverse=True)


@pytest.mark.parametrize("limit", [1, 2, 3, 6, 7, 100])
async def test_cursor_paging_visits_each_conversation_once(
    store: ConversationStore, user: str, limit: int
) -> None:
    created = [await store.create_conversation(user=user, title=str(n)) for n in range(6)]
    newest_first = [c.id for c in reversed(created)]

    result = await _all_pages(store, user, limit)
    assert _ids(result) == newest_first
    # Every page but the last is full and has a cursor; the last has none.
    assert [len(p.conversations) for p in result[:-1]] == [limit] * (len(result) - 1)
    assert 1 <= len(result[-1].conversations) <= limit
    assert result[-1].next_cursor is None
    # limit == count (6) fits on one page: no cursor to a page that would be empty.
    expected_pages = -(-6 // limit)
    assert len(result) == expected_pages


@pytest.mark.pgbouncer
async def test_cursor_paging_follows_appends_that_reorder(
    store: ConversationStore, user: str
) -> None:
    created = [await store.create_conversation(user=user, title=str(n)) for n in range(6)]
    for index in (0, 3, 1, 3):
        await _bump(store, user, created[index])
    # Most recently updated first: 3 (bumped last), 1, 0, then the untouched ones newest first.
    expected = [created[i].id for i in (3, 1, 0, 5, 4, 2)]
    assert _ids(await _all_pages(store, user, 2)) == expected
    assert _ids(await _all_pages(store, user, 4)) == expected
    listed = (await store.list_conversations(user=user)).conversations
    assert [c.message_count for c in listed] == [2, 1, 1, 0, 0, 0]


async def test_a_bump_while_paging_never_repeats_a_conversation(
    store: ConversationStore, user: str
) -> None:
    created = [await store.create_conversation(user=user) for _ in range(5)]
    first = await store.list_conversations(user=user, limit=2)
    assert [c.id for c in first.conversations] == [created[4].id, created[3].id]
    assert first.next_cursor is not None
    # A conversation already seen moves to the top: later pages must not show it again.
    await _bump(store, user, created[3])
    seen = [c.id for c in first.conversations]
    cursor: str | None = first.next_cursor
    while cursor is not None:
        page = await store.list_conversations(user=user, limit=2, cursor=cursor)
        seen.extend(c.id for c in page.conversations)
        cursor = page.next_cursor
    assert len(seen) == len(set(seen)) == 5
    assert seen[2:] == [created[2].id, created[1].id, created[0].id]


async def test_paging_is_exact_when_updated_at_ties(
    store: ConversationStore, user: str, raw: RawDB
) -> None:
    created = [await store.create_conversation(user=user) for _ in range(7)]
    # Give every conversation the same updated_at: the id breaks the tie, and the cursor must
    # still neither skip nor repeat any of them.
    await raw.execute(
        "UPDATE conversations SET updated_at = "
        "(SELECT updated_at FROM conversations WHERE id = $1) WHERE user_id = $2",
        created[0].id,
        user,
    )
    listed = (await store.list_conversations(user=user)).conversations
    assert len({c.updated_at for c in listed}) == 1
    by_id_desc = sorted((c.id for c in created), key=lambda i: str(i), reverse=True)
    for limit in (1, 2, 3):
        assert _ids(await _all_pages(store, user, limit)) == by_id_desc


async def test_whole_second_timestamps_keep_their_microseconds_and_order(
    store: ConversationStore, user: str, raw: RawDB
) -> None:
    older = await store.create_conversation(user=user)
    newer = await store.create_conversation(user=user)
    whole = datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)
    await raw.execute(
        "UPDATE conversations SET updated_at = $1 WHERE id = $2", raw.ts(whole), older.id
    )
    half = whole.replace(microsecond=500_000)
    await raw.execute(
        "UPDATE conversations SET updated_at = $1 WHERE id = $2", raw.ts(half), newer.id
    )

    fetched = await store.get_conversation(user=user, conversation_id=older.id)
    assert fetched.updated_at == whole
    assert fetched.model_dump(mode="json")["updated_at"] == "2030-01-02T03:04:05.000000Z"
    # 03:04:05 sorts before 03:04:05.5 on both backends (SQLite compares the stored text).
    pages = await _all_pages(store, user, 1)
    assert _ids(pages) == [newer.id, older.id]
    assert [c.updated_at for c in pages[0].conversations] == [half]


async def test_paging_continues_after_the_cursor_row_is_deleted(
    store: ConversationStore, user: str
) -> None:
    created = [await store.create_conversation(user=user) for _ in range(5)]
    first = await store.list_conversations(user=user, limit=2)
    assert first.next_cursor is not None
    await store.delete_conversation(user=user, conversation_id=first.conversations[-1].id)
    rest = await store.list_conversations(user=user, limit=10, cursor=first.next_cursor)
    assert [c.id for c in rest.conversations] == [created[2].id, created[1].id, created[0].id]


@pytest.mark.parametrize("limit", [0, -1, 101, 1000])
async def test_list_refuses_a_bad_limit(store: ConversationStore, user: str, limit: int) -> None:
    with pytest.raises(InvalidArgument, match="limit"):
        await store.list_conversations(user=user, limit=limit)


async def test_list_limit_bounds_are_inclusive(store: ConversationStore, user: str) -> None:
    await store.create_conversation(user=user)
    await store.create_conversation(user=user)
    one = await store.list_conversations(user=user, limit=1)
    assert len(one.conversations) == 1
    assert one.next_cursor is not None
    hundred = await store.list_conversations(user=user, limit=100)
    assert len(hundred.conversations) == 2
    assert hundred.next_cursor is None


def _tampered(cursor: str) -> list[str]:
    raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
    version, micros, hex_id, tag = raw.split(".")

    def encode(text: str) -> str:
        return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")

    # A character in the middle: all six of its bits count (the last one may be padding).
    middle = len(cursor) // 2
    flipped = cursor[:middle] + ("A" if cursor[middle] != "A" else "B") + cursor[middle + 1 :]
    return [
        flipped,
        cursor + "x",
        cursor[:-3],
        cursor[::-1],
        "",
        "not a cursor",
        "é",
        encode(f"{version}.{int(micros) + 1}.{hex_id}.{tag}"),  # moved position, old tag
        encode(f"{version}.{micros}.{uuid.uuid4().hex}.{tag}"),
        encode(f"2.{micros}.{hex_id}.{tag}"),
        encode(f"{version}.{micros}.{hex_id}"),
        encode(f"{version}.{micros}.{hex_id}.{tag}.extra"),
        encode(f"{version}.99999999999999999999999.{hex_id}.{tag}"),
    ]


def _respelled(user: str, cursor: str) -> list[str]:
    """The cursor's position in other spellings of its fields, each correctly tagged."""
    from store._cursor import _tag

    raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
    version, micros, hex_id, _ = raw.split(".")

    def signed(*fields: str) -> str:
        payload = ".".join(fields)
        text = f"{payload}.{_tag(user, '', payload)}"
        return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")

    arabic = "".join(chr(0x0660 + int(ch)) for ch in micros)
    return [
        signed(version, arabic, hex_id),
        signed(version, f"+{micros}", hex_id),
        signed(version, f"{micros[:3]}_{micros[3:]}", hex_id),
        signed(version, f"0{micros}", hex_id),
        signed(version, micros, hex_id.upper()),
        signed(version, micros, "{" + hex_id + "}"),
        signed(version, micros, str(uuid.UUID(hex=hex_id))),
    ]


async def test_a_cursor_is_read_only_as_the_server_spelt_it(
    store: ConversationStore, user: str
) -> None:
    for _ in range(2):
        await store.create_conversation(user=user)
    page = await store.list_conversations(user=user, limit=1)
    assert page.next_cursor is not None
    for bad in _respelled(user, page.next_cursor):
        with pytest.raises(InvalidArgument, match="cursor"):
            await store.list_conversations(user=user, limit=1, cursor=bad)
    again = await store.list_conversations(user=user, limit=1, cursor=page.next_cursor)
    assert len(again.conversations) == 1


async def test_tampered_cursors_are_invalid(store: ConversationStore, user: str) -> None:
    for _ in range(3):
        await store.create_conversation(user=user)
    page = await store.list_conversations(user=user, limit=1)
    assert page.next_cursor is not None
    for bad in _tampered(page.next_cursor):
        with pytest.raises(InvalidArgument, match="cursor") as info:
            await store.list_conversations(user=user, limit=1, cursor=bad)
        assert str(info.value).startswith("invalid_argument: ")
    # The genuine cursor still works afterwards.
    again = await store.list_conversations(user=user, limit=1, cursor=page.next_cursor)
    assert len(again.conversations) == 1


async def test_another_users_cursor_is_invalid(
    store: ConversationStore, user: str, other_user: str
) -> None:
    for _ in range(3):
        await store.create_conversation(user=user)
        await store.create_conversation(user=other_user)
    mine = await store.list_conversations(user=user, limit=1)
    assert mine.next_cursor is not None
    with pytest.raises(InvalidArgument, match="cursor") as info:
        await store.list_conversations(user=other_user, limit=1, cursor=mine.next_cursor)
    # The refusal says nothing about whose cursor it was.
    assert user not in str(info.value)


# -- delete ------------------------------------------------------------------------------


@pytest.mark.pgbouncer
async def test_delete_removes_the_conversation_and_its_messages(
    store: ConversationStore, user: str, raw: RawDB
) -> None:
    doomed = await conversation_with(store, user, 3)
    kept = await conversation_with(store, user, 2)

    deleted = await store.delete_conversation(user=user, conversation_id=str(doomed.id))
    assert deleted.model_dump(mode="json") == {
        "conversation_id": str(doomed.id),
        "deleted": True,
        "messages_deleted": 3,
    }
    assert await raw.messages_in(doomed.id) == 0
    assert await raw.messages_in(kept.id) == 2
    assert await raw.orphans() == (0, 0)
    for call in (
        store.get_conversation(user=user, conversation_id=doomed.id),
        store.list_messages(user=user, conversation_id=doomed.id),
        store.append_message(user=user, conversation_id=doomed.id, role="user", content="x"),
    ):
        with pytest.raises(NotFound):
            await call
    assert [c.id for c in (await store.list_conversations(user=user)).conversations] == [kept.id]


async def test_second_delete_is_not_found(store: ConversationStore, user: str) -> None:
    conversation = await store.create_conversation(user=user)
    first = await store.delete_conversation(user=user, conversation_id=conversation.id)
    assert first.messages_deleted == 0
    assert first.deleted is True
    with pytest.raises(NotFound):
        await store.delete_conversation(user=user, conversation_id=conversation.id)


# -- purge_user --------------------------------------------------------------------------


@pytest.mark.pgbouncer
async def test_purge_user_deletes_everything_of_that_user_only(
    store: ConversationStore, user: str, other_user: str, raw: RawDB
) -> None:
    await conversation_with(store, user, 2)
    await conversation_with(store, user, 3)
    await store.create_conversation(user=user)
    survivor = await conversation_with(store, other_user, 4)

    purged = await store.purge_user(user=user)
    assert purged.model_dump(mode="json") == {
        "user": user,
        "conversations_deleted": 3,
        "messages_deleted": 5,
    }
    assert await raw.conversations_of(user) == 0
    assert await raw.messages_of(user) == 0
    assert await raw.user_rows(user) == 0
    assert await raw.orphans() == (0, 0)
    assert (await store.list_conversations(user=user)).conversations == []

    kept = await store.get_conversation(
        user=other_user, conversation_id=survivor.id, recent_messages=10
    )
    assert kept.message_count == 4
    assert [m.content for m in kept.messages] == ["m1", "m2", "m3", "m4"]
    assert await raw.messages_of(other_user) == 4

    # A purged user can start again from nothing.
    again = await store.create_conversation(user=user)
    await append_many(store, user, again.id, 1)
    assert [c.id for c in (await store.list_conversations(user=user)).conversations] == [again.id]


async def test_purge_of_an_unknown_user_deletes_nothing(
    store: ConversationStore, user: str, other_user: str, raw: RawDB
) -> None:
    await conversation_with(store, other_user, 1)
    purged = await store.purge_user(user=user)
    assert (purged.conversations_deleted, purged.messages_deleted) == (0, 0)
    assert await raw.messages_of(other_user) == 1
