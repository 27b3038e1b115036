"""Refused input: bad text (NUL, unpaired surrogates) anywhere, size limits, ids, page arguments.

Every refusal is ``InvalidArgument`` and writes nothing; the error text never echoes the input.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from store.errors import InvalidArgument
from store.settings import Settings
from store.store import ConversationStore
from tests.rawdb import RawDB
from tests.store.helpers import BAD_TEXTS, compact_json_size, snapshot

CALL: dict[str, Any] = {"id": "call_1", "name": "lookup"}


# -- NUL and unpaired surrogates ----------------------------------------------------------


def _conversation_inputs(bad: str) -> list[dict[str, Any]]:
    return [
        {"title": bad},
        {"title": f"ok {bad}"},
        {"metadata": {"k": bad}},
        {"metadata": {bad: "v"}},
        {"metadata": {"outer": {"inner": [1, {"deep": bad}]}}},
        {"metadata": {"outer": {bad: 1}}},
        {"metadata": {"list": ["fine", bad]}},
    ]


def _message_inputs(bad: str) -> list[dict[str, Any]]:
    user = {"role": "user", "content": "fine"}
    assistant = {"role": "assistant", "content": "fine"}
    return [
        {"role": "user", "content": bad},
        {"role": "user", "content": f"text around {bad} it"},
        {"role": "tool", "content": "fine", "tool_call_id": bad},
        {"role": bad, "content": "fine"},
        {**user, "idempotency_key": bad},
        {**user, "metadata": {"k": bad}},
        {**user, "metadata": {bad: "v"}},
        {**user, "metadata": {"a": {"b": [bad]}}},
        {**user, "metadata": {"a": {bad: None}}},
        {**assistant, "tool_calls": [{"id": bad, "name": "f"}]},
        {**assistant, "tool_calls": [{"id": "c", "name": bad}]},
        {**assistant, "tool_calls": [{"id": "c", "name": "f", "arguments": bad}]},
        {**assistant, "tool_calls": [{"id": "c", "name": "f", bad: "v"}]},
        {**assistant, "tool_calls": [{"id": "c", "name": "f", "args": {"x": [bad]}}]},
        {**assistant, "tool_calls": [{"id": "c", "name": "f", "args": {bad: 1}}]},
        {**assistant, "tool_calls": [CALL, {"id": "d", "name": "g", "arguments": bad}]},
    ]


@pytest.mark.parametrize("bad", BAD_TEXTS)
async def test_bad_text_in_a_new_conversation_is_refused(
    store: ConversationStore, raw: RawDB, user: str, bad: str
) -> None:
    for fields in _conversation_inputs(bad):
        with pytest.raises(InvalidArgument) as info:
            await store.create_conversation(user=user, **fields)
        assert bad not in str(info.value)
    # Nothing at all was written, not even the user row a first conversation creates.
    assert await raw.conversations_of(user) == 0
    assert await raw.user_rows(user) == 0


@pytest.mark.parametrize("bad", BAD_TEXTS)
async def test_bad_text_in_a_message_is_refused(
    store: ConversationStore, raw: RawDB, user: str, bad: str
) -> None:
    conversation = await store.create_conversation(user=user)
    await store.append_message(user=user, conversation_id=conversation.id, role="user", content="a")
    before = await snapshot(store, raw, user, conversation.id)
    for fields in _message_inputs(bad):
        with pytest.raises(InvalidArgument) as info:
            await store.append_message(user=user, conversation_id=conversation.id, **fields)
        assert bad not in str(info.value), fields
    assert await snapshot(store, raw, user, conversation.id) == before


@pytest.mark.parametrize("bad", BAD_TEXTS)
async def test_bad_text_in_ids_cursors_and_users_is_refused(
    store: ConversationStore, raw: RawDB, user: str, bad: str
) -> None:
    conversation = await store.create_conversation(user=user)
    cid = str(conversation.id)
    await store.append_message(user=user, conversation_id=cid, role="user", content="a")
    before = await snapshot(store, raw, user, conversation.id)
    for bad_id in (bad, cid + bad, bad + cid):
        for call in _calls_with_id(store, user, bad_id):
            with pytest.raises(InvalidArgument, match="conversation_id"):
                await call()
    with pytest.raises(InvalidArgument, match="cursor"):
        await store.list_conversations(user=user, cursor=bad)
    for bad_user in (bad, user + bad):
        for call in _calls_as(store, bad_user, cid):
            with pytest.raises(InvalidArgument, match="user"):
                await call()
    assert await snapshot(store, raw, user, conversation.id) == before


# -- users and ids ------------------------------------------------------------------------


def _calls_with_id(
    store: ConversationStore, user: str, conversation_id: Any
) -> list[Callable[[], Awaitable[object]]]:
    return [
        lambda: store.get_conversation(user=user, conversation_id=conversation_id),
        lambda: store.append_message(
            user=user, conversation_id=conversation_id, role="user", content="x"
        ),
        lambda: store.list_messages(user=user, conversation_id=conversation_id),
        lambda: store.delete_conversation(user=user, conversation_id=conversation_id),
    ]


def _calls_as(
    store: ConversationStore, user: Any, conversation_id: str
) -> list[Callable[[], Awaitable[object]]]:
    return [
        *_calls_with_id(store, user, conversation_id),
        lambda: store.create_conversation(user=user),
        lambda: store.list_conversations(user=user),
        lambda: store.purge_user(user=user),
    ]


@pytest.mark.parametrize(
    "bad_id",
    [
        "",
        "not-a-uuid",
        "1234",
        "00000000-0000-0000-0000-00000000000",
        "00000000-0000-0000-0000-0000000000000",
        "zzzzzzzz-zzzz-zzzz-zzzz-zzzzzzzzzzzz",
        "../../etc/passwd",
        "' OR 1=1 --",
        5,
        None,
        ["00000000-0000-0000-0000-000000000000"],
    ],
)
async def test_malformed_conversation_ids_are_refused(
    store: ConversationStore, raw: RawDB, user: str, bad_id: Any
) -> None:
    conversation = await store.create_conversation(user=user)
    before = await snapshot(store, raw, user, conversation.id)
    for call in _calls_with_id(store, user, bad_id):
        with pytest.raises(InvalidArgument, match="conversation_id must be a UUID") as info:
            await call()
        if isinstance(bad_id, str) and bad_id:
            assert bad_id not in str(info.value)
    assert await snapshot(store, raw, user, conversation.id) == before


def _other_spellings(cid: str) -> list[str]:
    """The id ``cid`` spelled with characters that ``uuid.UUID`` reads as the same digits."""
    digit = next(i for i, ch in enumerate(cid) if ch.isdigit())
    letter = next(i for i, ch in enumerate(cid) if ch in "abcdef")
    return [
        cid[:digit] + chr(0x0660 + int(cid[digit])) + cid[digit + 1 :],  # Arabic-Indic digit
        cid[:digit] + chr(0xFF10 + int(cid[digit])) + cid[digit + 1 :],  # fullwidth digit
        cid[:digit] + chr(0x1D7CE + int(cid[digit])) + cid[digit + 1 :],  # mathematical digit
        cid[:letter] + chr(ord(cid[letter]) - ord("a") + 0xFF41) + cid[letter + 1 :],
        cid.replace("-", "_"),  # int() takes underscores between digits
        cid.replace("-", "") + "\n",
        f" {cid} ",
        "+" + cid.replace("-", "")[1:],
        cid.replace("-", "")[:10] + "-" + cid.replace("-", "")[10:],  # a hyphen anywhere
        "URN:UUID:" + cid,
        "{" + cid,
    ]


async def test_ids_resolve_only_from_ascii_spellings(store: ConversationStore, user: str) -> None:
    conversation = await store.create_conversation(user=user)
    cid = str(conversation.id)
    for spelling in (cid.upper(), cid.replace("-", ""), "{" + cid + "}", "urn:uuid:" + cid):
        found = await store.get_conversation(user=user, conversation_id=spelling)
        assert found.id == conversation.id, spelling
    for spelling in _other_spellings(cid):
        for call in _calls_with_id(store, user, spelling):
            with pytest.raises(InvalidArgument, match="conversation_id must be a UUID"):
                await call()
    assert (await store.get_conversation(user=user, conversation_id=cid)).message_count == 0


@pytest.mark.parametrize("bad_user", ["", "u" * 256, None, 7])
async def test_bad_users_are_refused(
    store: ConversationStore, raw: RawDB, user: str, bad_user: Any
) -> None:
    conversation = await store.create_conversation(user=user)
    before = await snapshot(store, raw, user, conversation.id)
    for call in _calls_as(store, bad_user, str(conversation.id)):
        with pytest.raises(InvalidArgument, match="user"):
            await call()
    assert await snapshot(store, raw, user, conversation.id) == before


async def test_a_255_character_user_is_fine(store: ConversationStore) -> None:
    long_user = f"long-{uuid.uuid4().hex}".ljust(255, "x")
    conversation = await store.create_conversation(user=long_user)
    page = await store.list_conversations(user=long_user)
    assert [c.id for c in page.conversations] == [conversation.id]
    await store.purge_user(user=long_user)


# -- list_messages arguments ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("arguments", "match"),
    [
        ({"limit": 0}, "limit"),
        ({"limit": -5}, "limit"),
        ({"limit": 201}, "limit"),
        ({"before_seq": 0}, "before_seq"),
        ({"before_seq": -1}, "before_seq"),
        ({"after_seq": -1}, "after_seq"),
        # Beyond BIGINT: refused as invalid_argument, never a driver error.
        ({"before_seq": 2**63}, "before_seq"),
        ({"after_seq": 2**63}, "after_seq"),
        ({"before_seq": 10**30}, "before_seq"),
        ({"after_seq": 2**63 - 1}, "after_seq"),
        ({"before_seq": 3, "after_seq": 1}, "at most one"),
        ({"before_seq": 1, "after_seq": 0}, "at most one"),
    ],
)
async def test_bad_list_messages_arguments_are_refused(
    store: ConversationStore, user: str, arguments: dict[str, Any], match: str
) -> None:
    conversation = await store.create_conversation(user=user)
    with pytest.raises(InvalidArgument, match=match):
        await store.list_messages(user=user, conversation_id=conversation.id, **arguments)
    # Arguments are checked before the conversation is looked up: a bad page request for a
    # conversation that does not exist is still invalid_argument.
    with pytest.raises(InvalidArgument, match=match):
        await store.list_messages(user=user, conversation_id=uuid.uuid4(), **arguments)


async def test_huge_but_accepted_cursors(store: ConversationStore, user: str) -> None:
    conversation = await store.create_conversation(user=user)
    for n in range(3):
        await store.append_message(
            user=user, conversation_id=conversation.id, role="user", content=f"m{n}"
        )
    latest = await store.list_messages(
        user=user, conversation_id=conversation.id, limit=2, before_seq=2**62
    )
    assert ([m.seq for m in latest.messages], latest.has_more) == ([2, 3], True)
    beyond = await store.list_messages(
        user=user, conversation_id=conversation.id, limit=200, after_seq=2**62
    )
    assert (beyond.messages, beyond.has_more) == ([], False)


# -- size limits ---------------------------------------------------------------------------


def _metadata_of_size(size: int, char: str = "x") -> dict[str, Any]:
    base = compact_json_size({"k": ""})
    per_char = len(char.encode("utf-8"))
    assert (size - base) % per_char == 0
    value = {"k": char * ((size - base) // per_char)}
    assert compact_json_size(value) == size
    return value


def _tool_calls_of_size(size: int) -> list[dict[str, Any]]:
    base = compact_json_size([{"id": "c", "name": "f", "arguments": ""}])
    value = [{"id": "c", "name": "f", "arguments": "x" * (size - base)}]
    assert compact_json_size(value) == size
    return value


async def _check_limits(
    store: ConversationStore,
    raw: RawDB,
    user: str,
    *,
    content_chars: int,
    title_chars: int,
    metadata_bytes: int,
    tool_calls_bytes: int,
) -> None:
    """Exactly at each limit is accepted; one over is refused and writes nothing."""
    titled = await store.create_conversation(user=user, title="t" * title_chars)
    assert titled.title == "t" * title_chars
    with pytest.raises(InvalidArgument, match="title"):
        await store.create_conversation(user=user, title="t" * (title_chars + 1))
    # Characters, not bytes: a title of multi-byte characters at the limit is fine.
    await store.create_conversation(user=user, title="é" * title_chars)

    meta = await store.create_conversation(user=user, metadata=_metadata_of_size(metadata_bytes))
    assert meta.metadata == _metadata_of_size(metadata_bytes)
    with pytest.raises(InvalidArgument, match="metadata"):
        await store.create_conversation(user=user, metadata=_metadata_of_size(metadata_bytes + 1))
    assert await raw.conversations_of(user) == 3

    cid = titled.id
    m1 = await store.append_message(
        user=user, conversation_id=cid, role="user", content="c" * content_chars
    )
    assert len(m1.content) == content_chars
    # Characters, not bytes: four-byte characters up to the limit are fine.
    await store.append_message(
        user=user, conversation_id=cid, role="user", content="😀" * content_chars
    )
    await store.append_message(
        user=user,
        conversation_id=cid,
        role="user",
        content="m",
        metadata=_metadata_of_size(metadata_bytes),
    )
    await store.append_message(
        user=user,
        conversation_id=cid,
        role="assistant",
        content="",
        tool_calls=_tool_calls_of_size(tool_calls_bytes),
    )
    before = await snapshot(store, raw, user, cid)
    assert before[0]["last_seq"] == 4
    refusals: list[tuple[str, dict[str, Any]]] = [
        ("content", {"role": "user", "content": "c" * (content_chars + 1)}),
        ("content", {"role": "user", "content": "😀" * (content_chars + 1)}),
        (
            "metadata",
            {"role": "user", "content": "m", "metadata": _metadata_of_size(metadata_bytes + 1)},
        ),
        (
            "tool_calls",
            {
                "role": "assistant",
                "content": "",
                "tool_calls": _tool_calls_of_size(tool_calls_bytes + 1),
            },
        ),
    ]
    for match, fields in refusals:
        with pytest.raises(InvalidArgument, match=match) as info:
            await store.append_message(user=user, conversation_id=cid, **fields)
        assert len(str(info.value)) < 300  # the oversize value is not echoed back
    assert await snapshot(store, raw, user, cid) == before


async def test_default_limits(store: ConversationStore, raw: RawDB, user: str) -> None:
    await _check_limits(
        store,
        raw,
        user,
        content_chars=100_000,
        title_chars=200,
        metadata_bytes=16 * 1024,
        tool_calls_bytes=64 * 1024,
    )


async def test_metadata_is_measured_in_utf8_bytes(
    store: ConversationStore, raw: RawDB, user: str
) -> None:
    # 16384 bytes of JSON made of two-byte characters: accepted; one more character is not,
    # although the character count is far below the limit.
    at_limit = _metadata_of_size(16 * 1024, char="é")
    await store.create_conversation(user=user, metadata=at_limit)
    over = {"k": at_limit["k"] + "é"}
    with pytest.raises(InvalidArgument, match="metadata"):
        await store.create_conversation(user=user, metadata=over)
    assert await raw.conversations_of(user) == 1


async def test_custom_limits(
    store: ConversationStore, settings: Settings, raw: RawDB, user: str
) -> None:
    custom = settings.model_copy(
        update={
            "max_content_chars": 10,
            "max_title_chars": 5,
            "max_metadata_bytes": 40,
            "max_tool_calls_bytes": 100,
        }
    )
    async with ConversationStore(custom) as small:
        await _check_limits(
            small,
            raw,
            user,
            content_chars=10,
            title_chars=5,
            metadata_bytes=40,
            tool_calls_bytes=100,
        )
    # The limits belong to the store they were configured on, not to the data: the default
    # store on the same database still takes a message the small one refused.
    listed = (await store.list_conversations(user=user)).conversations
    conversation = next(c for c in listed if c.title == "ttttt")
    message = await store.append_message(
        user=user, conversation_id=conversation.id, role="user", content="c" * 11
    )
    assert message.seq == 5


@pytest.mark.parametrize("key_length", [1, 200])
async def test_idempotency_key_length_bounds_accepted(
    store: ConversationStore, user: str, key_length: int
) -> None:
    conversation = await store.create_conversation(user=user)
    message = await store.append_message(
        user=user,
        conversation_id=conversation.id,
        role="user",
        content="x",
        idempotency_key="k" * key_length,
    )
    assert message.seq == 1


@pytest.mark.parametrize("key", ["", "k" * 201])
async def test_bad_idempotency_keys_are_refused(
    store: ConversationStore, raw: RawDB, user: str, key: str
) -> None:
    conversation = await store.create_conversation(user=user)
    before = await snapshot(store, raw, user, conversation.id)
    with pytest.raises(InvalidArgument, match="idempotency_key"):
        await store.append_message(
            user=user,
            conversation_id=conversation.id,
            role="user",
            content="x",
            idempotency_key=key,
        )
    assert await snapshot(store, raw, user, conversation.id) == before
