"""Resources (list, template, read) and the ``resume_conversation`` prompt, on both backends.

Failures here are JSON-RPC errors (``MCPError``) whose message starts with the contract's code;
another user's conversation fails exactly like a random id.
"""

from __future__ import annotations

from typing import Any

from mcp import Client
from mcp_types import TextContent, TextResourceContents

from mcp_server.server import ChatstoreServer, create_server
from store import ConversationStore, Settings
from tests.mcp_server.helpers import (
    RESOURCE_PREFIX,
    new_conversation,
    ok,
    protocol_failure,
    random_id,
)

PROMPT = "resume_conversation"


def uri(conversation_id: str) -> str:
    return f"{RESOURCE_PREFIX}{conversation_id}"


# -- resources/list ---------------------------------------------------------------------------


async def test_resources_list_shows_own_conversations_most_recent_first(
    server: ChatstoreServer, other_server: ChatstoreServer
) -> None:
    async with Client(server) as mine, Client(other_server) as theirs:
        titled = await new_conversation(mine, "hi", title="Titled")
        untitled = await new_conversation(mine)
        await new_conversation(theirs, "not yours", title="Theirs")
        await ok(mine, "append_message", conversation_id=titled, role="user", content="bump")

        listed = (await mine.list_resources()).resources
        assert [r.uri for r in listed] == [uri(titled), uri(untitled)]
        first, second = listed
        assert first.name == "Titled"
        assert first.title == "Titled"
        assert "2 messages" in (first.description or "")
        assert "Untitled" in second.name
        assert all(r.mime_type == "text/markdown" for r in listed)

        other = (await theirs.list_resources()).resources
        assert [r.name for r in other] == ["Theirs"]


async def test_resources_list_shows_at_most_50(server: ChatstoreServer) -> None:
    async with Client(server) as client:
        ids = [await new_conversation(client) for _ in range(52)]
        listed = (await client.list_resources()).resources
    newest_first = [uri(cid) for cid in reversed(ids)]
    assert [r.uri for r in listed] == newest_first[:50]


async def test_resources_list_is_empty_for_a_new_user(server: ChatstoreServer) -> None:
    async with Client(server) as client:
        assert (await client.list_resources()).resources == []


async def test_resource_template(server: ChatstoreServer) -> None:
    async with Client(server) as client:
        templates = (await client.list_resource_templates()).resource_templates
    assert len(templates) == 1
    (template,) = templates
    assert template.uri_template == "chatstore://conversations/{conversation_id}"
    assert template.mime_type == "text/markdown"


# -- resources/read ---------------------------------------------------------------------------


async def test_read_a_conversation_as_a_markdown_transcript(server: ChatstoreServer) -> None:
    async with Client(server) as client:
        cid = await new_conversation(client, title="Weather chat")
        turns: list[dict[str, Any]] = [
            {"role": "system", "content": "You are helpful."},
            {"role": "user", "content": "Weather in Zürich?"},
            {
                "role": "assistant",
                "content": "",
                "tool_calls": [{"id": "call_1", "name": "get_weather"}],
            },
            {"role": "tool", "content": "21 degrees", "tool_call_id": "call_1"},
            {"role": "assistant", "content": "It is 21 degrees."},
        ]
        for turn in turns:
            await ok(client, "append_message", conversation_id=cid, **turn)
        result = await client.read_resource(uri(cid))

    (contents,) = result.contents
    assert isinstance(contents, TextResourceContents)
    assert contents.uri == uri(cid)
    assert contents.mime_type == "text/markdown"
    text = contents.text
    assert text.startswith("# Weather chat\n")
    assert cid in text
    for seq, turn in enumerate(turns, start=1):
        assert f"## {seq}. {turn['role']}" in text
        if turn["content"]:
            assert str(turn["content"]) in text
    assert "get_weather" in text
    assert "call_1" in text
    # Chronological order.
    positions = [text.index(f"## {seq}. ") for seq in range(1, 6)]
    assert positions == sorted(positions)


async def test_every_listed_resource_can_be_read(server: ChatstoreServer) -> None:
    async with Client(server) as client:
        await new_conversation(client, "one")
        await new_conversation(client, title="Two")
        for resource in (await client.list_resources()).resources:
            result = await client.read_resource(resource.uri)
            (contents,) = result.contents
            assert isinstance(contents, TextResourceContents)
            assert contents.text.startswith(f"# {resource.title}")


async def test_read_of_an_unknown_conversation_is_not_found(server: ChatstoreServer) -> None:
    async with Client(server) as client:
        error = await protocol_failure(client.read_resource(uri(random_id())), "not_found")
    assert error.code == -32002  # MCP's "resource not found"


async def test_read_of_a_malformed_id_is_invalid(server: ChatstoreServer) -> None:
    async with Client(server) as client:
        await protocol_failure(client.read_resource(uri("not-a-uuid")), "invalid_argument")


async def test_read_of_another_users_conversation_looks_like_a_random_id(
    server: ChatstoreServer, other_server: ChatstoreServer
) -> None:
    async with Client(server) as owner, Client(other_server) as intruder:
        cid = await new_conversation(owner, "private", title="secret title")
        theirs = await protocol_failure(intruder.read_resource(uri(cid)), "not_found")
        unknown = await protocol_failure(intruder.read_resource(uri(random_id())), "not_found")
        assert (theirs.code, theirs.error.message) == (unknown.code, unknown.error.message)
        assert "secret" not in theirs.error.message
        # The owner still reads it.
        assert (await owner.read_resource(uri(cid))).contents


# -- the resume prompt ------------------------------------------------------------------------


async def test_prompt_is_listed(server: ChatstoreServer) -> None:
    async with Client(server) as client:
        prompts = (await client.list_prompts()).prompts
    assert [p.name for p in prompts] == [PROMPT]
    (prompt,) = prompts
    assert [(a.name, a.required) for a in prompt.arguments or []] == [("conversation_id", True)]


async def test_resume_returns_the_conversation_as_prompt_messages(
    server: ChatstoreServer,
) -> None:
    async with Client(server) as client:
        cid = await new_conversation(client, title="Trip")
        turns: list[dict[str, Any]] = [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Plan a trip"},
            {
                "role": "assistant",
                "content": "Checking.",
                "tool_calls": [
                    {"id": "c1", "name": "search_flights"},
                    {"id": "c2", "type": "function", "function": {"name": "hotels"}},
                ],
            },
            {"role": "tool", "content": "3 flights", "tool_call_id": "c1"},
            {"role": "tool", "content": "2 hotels", "tool_call_id": "c2"},
            {"role": "assistant", "content": "Found 3 flights."},
        ]
        for turn in turns:
            await ok(client, "append_message", conversation_id=cid, **turn)
        result = await client.get_prompt(PROMPT, {"conversation_id": cid})

    roles = [m.role for m in result.messages]
    texts = []
    for message in result.messages:
        assert isinstance(message.content, TextContent)
        texts.append(message.content.text)
    # The server's framing (naming the conversation, carrying its system instructions, which
    # are not the user's words), then each message in its role; tool results are the
    # assistant's, after the call.
    assert roles == ["user", "user", "assistant", "assistant", "assistant", "assistant"]
    assert cid in texts[0]
    assert "Trip" in texts[0]
    assert "Be brief." in texts[0]
    assert not any("Be brief." in text for text in texts[1:])
    assert texts[1] == "Plan a trip"
    assert texts[2].startswith("Checking.")
    assert "search_flights" in texts[2] and "hotels" in texts[2]
    assert "3 flights" in texts[3] and "c1" in texts[3]
    assert "2 hotels" in texts[4] and "c2" in texts[4]
    assert texts[5] == "Found 3 flights."


async def test_resume_carries_what_get_context_gives_for_the_resume_budget(
    settings: Settings, store: ConversationStore, user: str
) -> None:
    """CHATSTORE_RESUME_TOKENS is the budget; the summary comes first when there is one."""
    tight = settings.model_copy(update={"resume_tokens": 40})
    async with Client(create_server(tight, stdio_user=user, store=store)) as client:
        cid = await new_conversation(client, *(f"message number {n}" for n in range(1, 56)))
        await ok(
            client,
            "update_conversation",
            conversation_id=cid,
            summary="They counted to ten.",
            summary_up_to_seq=10,
        )
        result = await client.get_prompt(PROMPT, {"conversation_id": cid})
        context = await ok(client, "get_context", conversation_id=cid, max_tokens=40)
    texts = []
    for message in result.messages:
        assert isinstance(message.content, TextContent)
        texts.append(message.content.text)
    assert "They counted to ten." in texts[0]
    assert texts[1:] == [m["content"] for m in context["messages"]]
    assert context["truncated"] is True and 0 < len(context["messages"]) < 45


async def test_resume_of_an_unknown_or_malformed_id_fails(server: ChatstoreServer) -> None:
    async with Client(server) as client:
        await protocol_failure(
            client.get_prompt(PROMPT, {"conversation_id": random_id()}), "not_found"
        )
        await protocol_failure(
            client.get_prompt(PROMPT, {"conversation_id": "nope"}), "invalid_argument"
        )


async def test_resume_of_another_users_conversation_looks_like_a_random_id(
    server: ChatstoreServer, other_server: ChatstoreServer
) -> None:
    async with Client(server) as owner, Client(other_server) as intruder:
        cid = await new_conversation(owner, "private", title="secret title")
        theirs = await protocol_failure(
            intruder.get_prompt(PROMPT, {"conversation_id": cid}), "not_found"
        )
        unknown = await protocol_failure(
            intruder.get_prompt(PROMPT, {"conversation_id": random_id()}), "not_found"
        )
        assert (theirs.code, theirs.error.message) == (unknown.code, unknown.error.message)
        assert "secret" not in theirs.error.message
        assert (await owner.get_prompt(PROMPT, {"conversation_id": cid})).messages
