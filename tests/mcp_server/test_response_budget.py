"""CHATSTORE_MAX_RESPONSE_BYTES at the MCP layer: every page-shaped tool's reply stays within
it, however much its text's escaping adds (quotes and backslashes are escaped twice in the text
block), and says how to go on (``has_more``, ``next_cursor``, ``truncated``); paging on reads
everything exactly once. One item larger than the budget still comes, whole."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from mcp import Client
from mcp_types import CallToolResult
from pydantic import ValidationError

from mcp_server.server import create_server
from store import ConversationStore, Settings
from tests.support import structured

BUDGET = 64 * 1024
#: Text whose JSON escaping weighs: in the reply's text block each quote and backslash takes
#: four bytes, in its structured content two.
AWKWARD = 'say "needle" \\ and "more" \\ ' * 350
#: The JSON-RPC envelope around a result (``{"jsonrpc":"2.0","id":N,"result":...}``).
ENVELOPE = 48


@pytest.fixture
async def budgeted(settings: Settings) -> AsyncIterator[ConversationStore]:
    async with ConversationStore(
        settings.model_copy(update={"max_response_bytes": BUDGET})
    ) as store:
        yield store


def wire(result: CallToolResult) -> int:
    return ENVELOPE + len(result.model_dump_json(by_alias=True, exclude_none=True))


async def call(client: Client, tool: str, **arguments: Any) -> dict[str, Any]:
    result = await client.call_tool(tool, arguments)
    assert wire(result) <= BUDGET, (tool, arguments, wire(result))
    return structured(result)


async def test_every_page_tool_stays_within_the_budget_and_pages_on(
    budgeted: ConversationStore, user: str
) -> None:
    conversation = await budgeted.create_conversation(user=user, title="big")
    cid = conversation.id
    await budgeted.append_messages(
        user=user,
        conversation_id=cid,
        messages=[
            {"role": "user", "content": f"{n} {AWKWARD}", "token_count": 10} for n in range(30)
        ],
    )
    for n in range(12):
        other = await budgeted.create_conversation(user=user, title=f"summarised {n}")
        await budgeted.update_conversation(
            user=user, conversation_id=other.id, summary=AWKWARD[:20_000], summary_up_to_seq=0
        )
    server = create_server(budgeted.settings, stdio_user=user, store=budgeted)
    async with Client(server) as client:
        latest = await call(client, "list_messages", conversation_id=str(cid), limit=200)
        assert 1 < len(latest["messages"]) < 30 and latest["has_more"]
        seen = [m["seq"] for m in latest["messages"]]
        page = latest
        while page["has_more"]:
            page = await call(
                client,
                "list_messages",
                conversation_id=str(cid),
                limit=200,
                before_seq=page["messages"][0]["seq"],
            )
            seen = [m["seq"] for m in page["messages"]] + seen
        assert seen == list(range(1, 31))

        recent = await call(
            client, "get_conversation", conversation_id=str(cid), recent_messages=200
        )
        assert recent["has_more"] and 1 < len(recent["messages"]) < 30
        assert recent["messages"][-1]["seq"] == 30

        context = await call(client, "get_context", conversation_id=str(cid), max_tokens=2_000_000)
        assert context["truncated"] and 1 < len(context["messages"]) < 30
        assert context["messages"][-1]["seq"] == 30

        hits: list[str] = []
        cursor = None
        while True:
            found = await call(client, "search_messages", query="needle", limit=100, cursor=cursor)
            hits += [h["message"]["id"] for h in found["results"]]
            if (cursor := found["next_cursor"]) is None:
                break
            assert found["results"]
        assert len(hits) == len(set(hits)) == 30

        listed: list[str] = []
        cursor = None
        while True:
            found = await call(client, "list_conversations", limit=100, cursor=cursor)
            listed += [c["id"] for c in found["conversations"]]
            if (cursor := found["next_cursor"]) is None:
                break
        assert len(listed) == len(set(listed)) == 13


async def test_an_item_larger_than_the_budget_comes_whole(
    budgeted: ConversationStore, user: str
) -> None:
    conversation = await budgeted.create_conversation(user=user)
    await budgeted.append_messages(
        user=user,
        conversation_id=conversation.id,
        messages=[
            {"role": "user", "content": "small one", "token_count": 1},
            {"role": "user", "content": AWKWARD * 6, "token_count": 1},
        ],
    )
    server = create_server(budgeted.settings, stdio_user=user, store=budgeted)
    async with Client(server) as client:
        result = await client.call_tool("list_messages", {"conversation_id": str(conversation.id)})
        page = structured(result)
        assert wire(result) > BUDGET
        assert [m["seq"] for m in page["messages"]] == [2] and page["has_more"]
        assert page["messages"][0]["content"] == AWKWARD * 6
        rest = structured(
            await client.call_tool(
                "list_messages", {"conversation_id": str(conversation.id), "before_seq": 2}
            )
        )
        assert [m["seq"] for m in rest["messages"]] == [1] and not rest["has_more"]


def test_the_budget_is_a_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    assert Settings().max_response_bytes == 4 * 1024 * 1024
    monkeypatch.setenv("CHATSTORE_MAX_RESPONSE_BYTES", str(1 << 20))
    assert Settings().max_response_bytes == 1 << 20
    monkeypatch.setenv("CHATSTORE_MAX_RESPONSE_BYTES", "1000")
    with pytest.raises(ValidationError, match="max_response_bytes"):
        Settings()


async def test_messages_counted_as_no_tokens_and_heavy_escapes_stay_within_it(
    budgeted: ConversationStore, user: str
) -> None:
    # A caller may count a message as 0 tokens, so get_context's token budget alone would take
    # them all; control characters weigh six bytes each as JSON (seven in the text block),
    # which the first estimate of a page does not see.
    conversation = await budgeted.create_conversation(user=user)
    cid = str(conversation.id)
    await budgeted.append_messages(
        user=user,
        conversation_id=cid,
        messages=[{"role": "user", "content": "hi", "token_count": 0} for _ in range(195)]
        + [{"role": "user", "content": "\x01" * 1_500, "token_count": 0} for _ in range(5)],
    )
    await budgeted.append_messages(
        user=user,
        conversation_id=cid,
        messages=[{"role": "user", "content": "y" * 20_000, "token_count": 0} for _ in range(8)],
    )
    server = create_server(budgeted.settings, stdio_user=user, store=budgeted)
    async with Client(server) as client:
        context = await call(client, "get_context", conversation_id=cid, max_tokens=1)
        assert context["truncated"] and 1 <= len(context["messages"]) < 8
        page = await call(client, "list_messages", conversation_id=cid, limit=200)
        assert page["has_more"] and page["messages"][-1]["seq"] == 208
        older = await call(client, "list_messages", conversation_id=cid, limit=200, before_seq=201)
        assert older["has_more"] and older["messages"][-1]["seq"] == 200
