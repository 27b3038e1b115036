"""The HTTP server's operator side on a real ``chatstore serve --http`` process: /healthz and
/readyz without a token, one access-log line per request (never a token or content), JSON
logs, and the periodic prune under CHATSTORE_RETENTION_DAYS."""

from __future__ import annotations

import asyncio
import json
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from mcp_server.operations import _tool_name
from store import ConversationStore, Settings
from tests.conftest import fresh_user
from tests.mcp_server.helpers import ok
from tests.rawdb import RawDB
from tests.support import http_client, http_server, mint_token, server_env

pytestmark = pytest.mark.slow

SECRET_CONTENT = "my card number is 4111"


async def test_probes_and_access_log(postgres_url: str, tmp_path: Path) -> None:
    env = server_env(postgres_url, tmp_path / "data")
    with http_server(env, tmp_path) as server:
        base = f"http://127.0.0.1:{server.port}"
        async with httpx.AsyncClient() as http:
            health = await http.get(base + "/healthz")
            ready = await http.get(base + "/readyz")
        assert (health.status_code, health.json()) == (200, {"status": "ok"})
        assert ready.status_code == 200
        assert ready.json()["status"] == "ready" and ready.json()["database"] == "postgres"
        user = fresh_user()
        token = mint_token(user)
        async with http_client(server.url, token) as client:
            cid = (await ok(client, "create_conversation"))["id"]
            await ok(
                client,
                "append_message",
                conversation_id=cid,
                role="user",
                content=SECRET_CONTENT,
            )
        async with httpx.AsyncClient() as http:
            refused = await http.post(server.url, json={})
        assert refused.status_code == 401
        log = server.log()
    lines = [line for line in log.splitlines() if " chatstore.access: " in line]
    assert any(" GET /healthz 200 user=None tool=None " in line for line in lines), lines
    assert any(" GET /readyz 200 " in line for line in lines), lines
    assert any(f" POST /mcp 200 user={user} tool=append_message " in line for line in lines)
    assert any(f" POST /mcp 200 user={user} tool=create_conversation " in line for line in lines)
    assert any(" POST /mcp 401 user=None tool=None " in line for line in lines), lines
    assert token not in log and SECRET_CONTENT not in log


async def test_json_logs(postgres_url: str, tmp_path: Path) -> None:
    env = server_env(postgres_url, tmp_path / "data", CHATSTORE_LOG_FORMAT="json")
    with http_server(env, tmp_path) as server:
        user = fresh_user()
        async with http_client(server.url, mint_token(user)) as client:
            await ok(client, "list_conversations")
        log = server.log()
    records = [json.loads(line) for line in log.splitlines() if line.startswith("{")]
    assert records and all({"time", "level", "logger", "message"} <= set(r) for r in records)
    calls = [r for r in records if r["logger"] == "chatstore.access" and r["tool"]]
    assert calls and calls[0]["tool"] == "list_conversations"
    assert (calls[0]["method"], calls[0]["path"], calls[0]["status"], calls[0]["user"]) == (
        "POST",
        "/mcp",
        200,
        user,
    )
    assert isinstance(calls[0]["duration_ms"], float)


async def test_the_server_prunes_under_retention_days(postgres_url: str, tmp_path: Path) -> None:
    settings = Settings(database_url=postgres_url)
    user = fresh_user()
    async with ConversationStore(settings) as store:
        idle = await store.create_conversation(user=user, title="old")
        await store.append_message(user=user, conversation_id=idle.id, role="user", content="x")
        kept = await store.create_conversation(user=user, title="new")
    raw = await RawDB.connect(settings)
    try:
        old = datetime.now(UTC) - timedelta(days=45)
        await raw.execute("UPDATE conversations SET updated_at = $1 WHERE id = $2", old, idle.id)
        env = server_env(
            postgres_url,
            tmp_path / "data",
            CHATSTORE_RETENTION_DAYS="30",
            CHATSTORE_RETENTION_INTERVAL="0.5",
        )
        with http_server(env, tmp_path) as server:
            deadline = time.monotonic() + 20
            while await raw.fetchval("SELECT count(*) FROM conversations WHERE id = $1", idle.id):
                assert time.monotonic() < deadline, server.log()
                await asyncio.sleep(0.2)
            log = server.log()
        assert "retention: deleted 1 conversations (1 messages) idle for over 30 days" in log
        assert await raw.fetchval("SELECT count(*) FROM conversations WHERE id = $1", kept.id) == 1
    finally:
        await raw.close()


def test_the_access_log_reads_a_tool_name_from_any_body() -> None:
    deep = b'{"jsonrpc":"2.0","method":"tools/call","params":' + b"[" * 5_000 + b"]" * 5_000 + b"}"
    assert _tool_name(deep) is None  # nested past the parser's depth: no name, no exception
    cut = b'{"jsonrpc":"2.0","method":"tools/call","params":{"name":"append_message","argu'
    assert _tool_name(cut) == "append_message"
