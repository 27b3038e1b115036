"""Token counts: the tokenizer's own count for content and tool_calls, or the caller's; the
OpenAI Chat Completions shape of tool_calls; content left out beside tool_calls."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

import bpe_openai
import pytest

from store import ConversationStore, InvalidArgument, Settings
from store.schemas import dump_json
from store.tokens import tokenizer
from tests.rawdb import RawDB
from tests.store.helpers import snapshot

OPENAI_CALL = {
    "id": "call_9",
    "type": "function",
    "function": {"name": "get_weather", "arguments": json.dumps({"city": "Lyon"})},
}


def own_count(encoding: str, text: str) -> int:
    """The count bpe-openai itself gives ``text``."""
    return len(bpe_openai.get_encoding(encoding).encode_ordinary(text))


@pytest.mark.parametrize(
    "content",
    [
        "Find me a train to Lyon tomorrow morning, preferably before 9am.",
        "héllo 👋 مرحبا 你好 — <|endoftext|> counted as text",
        "x" * 5000,
    ],
)
async def test_content_is_counted_with_the_tokenizer(
    store: ConversationStore, user: str, content: str
) -> None:
    conversation = await store.create_conversation(user=user)
    message = await store.append_message(
        user=user, conversation_id=conversation.id, role="user", content=content
    )
    assert message.token_count == own_count("o200k_base", content) > 0
    page = await store.list_messages(user=user, conversation_id=conversation.id)
    assert page.messages[0].token_count == message.token_count


async def test_tool_calls_count_as_compact_json(store: ConversationStore, user: str) -> None:
    conversation = await store.create_conversation(user=user)
    calls = [OPENAI_CALL, {"id": "c2", "name": "search", "arguments": {"q": "trains"}}]
    message = await store.append_message(
        user=user,
        conversation_id=conversation.id,
        role="assistant",
        content="Let me look.",
        tool_calls=calls,
    )
    expected = own_count("o200k_base", "Let me look.") + own_count("o200k_base", dump_json(calls))
    assert message.token_count == expected


async def test_a_supplied_count_is_kept(store: ConversationStore, user: str) -> None:
    conversation = await store.create_conversation(user=user)
    for supplied in (0, 7, 2**31 - 1):
        message = await store.append_message(
            user=user,
            conversation_id=conversation.id,
            role="user",
            content="counted by the model",
            token_count=supplied,
        )
        assert message.token_count == supplied
    stored = await store.list_messages(user=user, conversation_id=conversation.id)
    assert [m.token_count for m in stored.messages] == [0, 7, 2**31 - 1]


@pytest.mark.parametrize("bad", [-1, 2**31, 1.5, "12", True])
async def test_bad_token_counts_are_refused(
    store: ConversationStore, raw: RawDB, user: str, bad: Any
) -> None:
    conversation = await store.create_conversation(user=user)
    before = await snapshot(store, raw, user, conversation.id)
    with pytest.raises(InvalidArgument, match="token_count"):
        await store.append_message(
            user=user, conversation_id=conversation.id, role="user", content="x", token_count=bad
        )
    assert await snapshot(store, raw, user, conversation.id) == before


async def test_the_tokenizer_is_configurable(settings: Settings, user: str) -> None:
    text = "Réservez-moi un billet de train pour Lyon, s'il vous plaît. " * 3
    counts = {}
    for name in ("o200k_base", "cl100k_base"):
        async with ConversationStore(settings.model_copy(update={"tokenizer": name})) as store:
            conversation = await store.create_conversation(user=user)
            message = await store.append_message(
                user=user, conversation_id=conversation.id, role="user", content=text
            )
            counts[name] = message.token_count
            assert message.token_count == own_count(name, text)
    assert counts["o200k_base"] != counts["cl100k_base"]


def test_an_unknown_tokenizer_is_refused_by_the_settings() -> None:
    with pytest.raises(ValueError, match="tokenizer"):
        Settings(tokenizer="gpt2")


def test_very_long_text_is_counted_in_slices() -> None:
    counter = tokenizer("o200k_base")
    text = "word " * 300_000  # 1.5 million characters: more than the encoder takes at once
    assert counter.count(text) == 3 * own_count("o200k_base", "word " * 100_000)


async def test_openai_shaped_tool_calls_are_kept_verbatim(
    store: ConversationStore, user: str
) -> None:
    conversation = await store.create_conversation(user=user)
    message = await store.append_message(
        user=user, conversation_id=conversation.id, role="assistant", tool_calls=[OPENAI_CALL]
    )
    assert message.content == ""
    assert message.tool_calls == [OPENAI_CALL]
    await store.append_message(
        user=user,
        conversation_id=conversation.id,
        role="tool",
        tool_call_id="call_9",
        content='{"temp": 4}',
    )
    page = await store.list_messages(user=user, conversation_id=conversation.id)
    assert page.messages[0].tool_calls == [OPENAI_CALL]
    context = await store.get_context(user=user, conversation_id=conversation.id, max_tokens=500)
    assert [m.seq for m in context.messages] == [1, 2]


@pytest.mark.parametrize(
    ("call", "mentions"),
    [
        ({"id": "c", "type": "function", "function": {"arguments": "{}"}}, "function.name"),
        ({"id": "c", "type": "function", "function": {"name": ""}}, "function.name"),
        ({"id": "c", "function": "get_weather"}, "name"),
        ({"type": "function", "function": {"name": "f"}}, "'id'"),
    ],
)
async def test_malformed_openai_tool_calls_are_refused(
    store: ConversationStore, user: str, call: dict[str, Any], mentions: str
) -> None:
    conversation = await store.create_conversation(user=user)
    with pytest.raises(InvalidArgument, match=mentions):
        await store.append_message(
            user=user, conversation_id=conversation.id, role="assistant", tool_calls=[call]
        )


async def test_content_may_be_left_out_only_beside_tool_calls(
    store: ConversationStore, user: str
) -> None:
    conversation = await store.create_conversation(user=user)
    for role in ("user", "assistant", "system"):
        with pytest.raises(InvalidArgument, match="content must not be empty"):
            await store.append_message(user=user, conversation_id=conversation.id, role=role)


def test_the_tokenizer_loads_with_no_network() -> None:
    """Its encodings ship in the bpe-openai wheel: loading one opens no socket."""
    script = (
        "import socket\n"
        "def refuse(*args, **kwargs):\n"
        "    raise OSError('no network here')\n"
        "socket.socket.connect = refuse\n"
        "socket.create_connection = refuse\n"
        "socket.getaddrinfo = refuse\n"
        "from store.tokens import tokenizer\n"
        "for name in ('o200k_base', 'cl100k_base'):\n"
        "    print(tokenizer(name).count('Find me a train to Lyon'))\n"
    )
    finished = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "HTTPS_PROXY": "http://127.0.0.1:9", "HTTP_PROXY": "http://127.0.0.1:9"},
        check=False,
    )
    assert finished.returncode == 0, finished.stderr
    assert [int(line) for line in finished.stdout.split()] == [
        own_count("o200k_base", "Find me a train to Lyon"),
        own_count("cl100k_base", "Find me a train to Lyon"),
    ]


async def test_a_flat_name_counts_beside_a_function_object(
    store: ConversationStore, user: str
) -> None:
    conversation = await store.create_conversation(user=user)
    call = {"id": "c", "name": "lookup", "function": {"arguments": "{}"}}
    message = await store.append_message(
        user=user, conversation_id=conversation.id, role="assistant", tool_calls=[call]
    )
    assert message.tool_calls == [call]
