"""``tools/list`` is part of the contract: names, schemas and annotations are pinned.

The listing (name, title, description, input and output schemas, annotations, as MCP clients
see them on the wire) is compared with the committed ``snapshots/tools.json``, so an accidental
change to a tool's contract fails here. After an intended change, regenerate the snapshot and
review its diff:

    CHATSTORE_UPDATE_SNAPSHOTS=1 .venv/bin/pytest tests/mcp_server/test_tool_listing.py
"""

from __future__ import annotations

import difflib
import os
from pathlib import Path
from typing import Any

from mcp import Client

from mcp_server.server import create_server
from store import Settings
from tests.mcp_server.helpers import (
    ID_TOOLS,
    READ_TOOLS,
    TOOL_NAMES,
    TOOLS_SNAPSHOT,
    listing_json,
    tool_listing,
)


def contract_settings(data_dir: Path) -> Settings:
    # The limits appear in the schemas; pin the contract's defaults whatever the environment.
    return Settings(
        database_url=f"sqlite://{data_dir / 'listing.sqlite3'}",
        data_dir=data_dir,
        max_content_chars=100_000,
        max_title_chars=200,
        max_metadata_bytes=16 * 1024,
        max_tool_calls_bytes=64 * 1024,
        max_summary_chars=100_000,
    )


async def listed_tools(tmp_path: Path) -> list[dict[str, Any]]:
    server = create_server(contract_settings(tmp_path), stdio_user="listing")
    async with Client(server) as client:
        return tool_listing((await client.list_tools()).tools)


async def test_tool_listing_matches_the_snapshot(tmp_path: Path) -> None:
    current = listing_json(await listed_tools(tmp_path))
    if os.environ.get("CHATSTORE_UPDATE_SNAPSHOTS") == "1":
        TOOLS_SNAPSHOT.parent.mkdir(parents=True, exist_ok=True)
        TOOLS_SNAPSHOT.write_text(current, encoding="utf-8")
    committed = TOOLS_SNAPSHOT.read_text(encoding="utf-8")
    diff = "".join(
        difflib.unified_diff(
            committed.splitlines(keepends=True),
            current.splitlines(keepends=True),
            "snapshots/tools.json (committed)",
            "tools/list (now)",
        )
    )
    assert current == committed, (
        "tools/list changed; if that is intended, regenerate with "
        "CHATSTORE_UPDATE_SNAPSHOTS=1 and review the diff:\n" + diff
    )


async def test_tool_names_annotations_and_schemas(tmp_path: Path) -> None:
    listing = {tool["name"]: tool for tool in await listed_tools(tmp_path)}
    assert sorted(listing) == TOOL_NAMES
    for name, tool in listing.items():
        hints = tool["annotations"]
        assert hints["readOnlyHint"] is (name in READ_TOOLS), name
        assert hints["openWorldHint"] is False, name
        assert tool["description"].strip(), name
        assert tool["outputSchema"]["type"] == "object", name
        if name in READ_TOOLS:
            assert hints.get("destructiveHint") is not True, name
    delete = listing["delete_conversation"]["annotations"]
    assert delete["destructiveHint"] is True
    assert delete["idempotentHint"] is True
    for name in ("create_conversation", "append_message", "update_conversation"):
        assert listing[name]["annotations"]["destructiveHint"] is False
    assert listing["update_conversation"]["annotations"]["idempotentHint"] is True


async def test_no_tool_takes_a_user(tmp_path: Path) -> None:
    for tool in await listed_tools(tmp_path):
        properties = tool["inputSchema"].get("properties", {})
        assert not [p for p in properties if "user" in p.lower() or p in ("sub", "subject")]


async def test_input_schemas_state_the_contract_bounds(tmp_path: Path) -> None:
    listing = {tool["name"]: tool["inputSchema"] for tool in await listed_tools(tmp_path)}

    def prop(tool: str, name: str) -> dict[str, Any]:
        value: dict[str, Any] = listing[tool]["properties"][name]
        return value

    def bounds(tool: str, name: str) -> tuple[Any, Any, Any]:
        schema = prop(tool, name)
        return schema["minimum"], schema["maximum"], schema["default"]

    assert bounds("list_conversations", "limit") == (1, 100, 20)
    assert bounds("list_messages", "limit") == (1, 200, 50)
    assert bounds("get_conversation", "recent_messages") == (0, 200, 0)
    roles = prop("append_message", "role")["enum"]
    assert sorted(roles) == ["assistant", "system", "tool", "user"]
    for tool in ID_TOOLS:
        assert "conversation_id" in listing[tool]["required"], tool
    # content may be left out (v2): it is "" then, allowed only beside tool_calls.
    assert set(listing["append_message"]["required"]) == {"conversation_id", "role"}
    assert prop("append_message", "content")["default"] == ""
    assert prop("append_message", "content")["maxLength"] == 100_000
    assert set(listing["get_context"]["required"]) == {"conversation_id", "max_tokens"}
    budget = prop("get_context", "max_tokens")
    assert (budget["minimum"], budget["maximum"]) == (1, 2_000_000)
    assert prop("get_context", "keep_system")["default"] is True
    assert set(listing["update_conversation"]["required"]) == {"conversation_id"}
    summary = prop("update_conversation", "summary")["anyOf"][0]
    assert summary["maxLength"] == 100_000
    assert "required" not in listing["create_conversation"]
