"""chatstore over streamable HTTP: a real ``chatstore serve --http`` process on PostgreSQL.

Identity comes only from a verified bearer JWT: each user sees only their own data, every bad
token is a 401 with ``WWW-Authenticate``, and ``CHATSTORE_USER`` in the server's environment is
never used. Without a verification key the server refuses to start.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2
import jwt
import pytest

from store import ConversationStore, Settings
from tests.conftest import fresh_user
from tests.mcp_server.helpers import (
    RESOURCE_PREFIX,
    TOOLS_SNAPSHOT,
    fail,
    listing_json,
    new_conversation,
    ok,
    protocol_failure,
    random_id,
    tool_listing,
)
from tests.support import (
    CHATSTORE,
    JWT_AUDIENCE,
    JWT_ISSUER,
    JWT_SECRET,
    HttpServer,
    http_client,
    http_server,
    mint_token,
    server_env,
)

pytestmark = pytest.mark.slow

#: The server's CHATSTORE_USER: a stdio identity that HTTP requests must never act as.
STDIO_DECOY = "stdio-decoy-user"

INITIALIZE = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {
        "protocolVersion": "2025-11-25",
        "capabilities": {},
        "clientInfo": {"name": "raw", "version": "1"},
    },
}
MCP_HEADERS = {"Accept": "application/json, text/event-stream"}


@pytest.fixture(scope="module")
def chatstore_http(
    postgres_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[HttpServer]:
    """One HTTP server process for the module (synchronous: no MCP client lives here)."""
    data_dir = tmp_path_factory.mktemp("http-data")
    env = server_env(postgres_url, data_dir, CHATSTORE_USER=STDIO_DECOY)
    with http_server(env, tmp_path_factory.mktemp("http-logs")) as running:
        yield running
    assert running.process.returncode == 0, running.log()


async def raw_post(target: HttpServer, token: str | None) -> httpx2.Response:
    headers = dict(MCP_HEADERS)
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    async with httpx2.AsyncClient(timeout=10) as raw:
        return await raw.post(target.url, json=INITIALIZE, headers=headers)


async def test_each_user_sees_only_their_own_data(chatstore_http: HttpServer) -> None:
    alice, bob = fresh_user(), fresh_user()
    async with (
        http_client(chatstore_http.url, mint_token(alice)) as as_alice,
        http_client(chatstore_http.url, mint_token(bob)) as as_bob,
    ):
        alices = await new_conversation(as_alice, "alice's secret", title="Alice")
        bobs = await new_conversation(as_bob, "bob's secret", title="Bob")

        for client, own, other in ((as_alice, alices, bobs), (as_bob, bobs, alices)):
            listed = await ok(client, "list_conversations", limit=100)
            assert [c["id"] for c in listed["conversations"]] == [own]
            got = await ok(client, "get_conversation", conversation_id=own, recent_messages=5)
            assert got["message_count"] == 1
            messages = await ok(client, "list_messages", conversation_id=own)
            assert len(messages["messages"]) == 1
            resources = (await client.list_resources()).resources
            assert [r.uri for r in resources] == [f"{RESOURCE_PREFIX}{own}"]

            for tool in ("get_conversation", "list_messages", "delete_conversation"):
                theirs = await fail(client, tool, "not_found", conversation_id=other)
                unknown = await fail(client, tool, "not_found", conversation_id=random_id())
                assert theirs == unknown
            await fail(
                client,
                "append_message",
                "not_found",
                conversation_id=other,
                role="user",
                content="intrusion",
            )
            await protocol_failure(client.read_resource(f"{RESOURCE_PREFIX}{other}"), "not_found")
            await protocol_failure(
                client.get_prompt("resume_conversation", {"conversation_id": other}), "not_found"
            )

        # Nothing of either user was changed by the other's attempts.
        for client, own, content in ((as_alice, alices, "alice's"), (as_bob, bobs, "bob's")):
            page = await ok(client, "list_messages", conversation_id=own)
            assert [m["content"] for m in page["messages"]] == [f"{content} secret"]


def _unsigned(sub: str) -> str:
    header = jwt.utils.base64url_encode(json.dumps({"alg": "none", "typ": "JWT"}).encode())
    claims = jwt.utils.base64url_encode(
        json.dumps(
            {"sub": sub, "exp": 4_102_444_800, "iss": JWT_ISSUER, "aud": JWT_AUDIENCE}
        ).encode()
    )
    return f"{header.decode()}.{claims.decode()}."


BAD_TOKENS: dict[str, Any] = {
    "missing": None,
    "expired": lambda: mint_token("mallory", expires_in=-60),
    "wrongly signed": lambda: mint_token("mallory", secret="another-secret-0123456789abcdefgh"),
    "wrong audience": lambda: mint_token("mallory", audience="someone-else"),
    "wrong issuer": lambda: mint_token("mallory", issuer="https://evil.example"),
    "no audience": lambda: mint_token("mallory", audience=None),
    "no sub": lambda: mint_token(None),
    "empty sub": lambda: mint_token(""),
    "alg none": lambda: _unsigned("mallory"),
    "garbage": lambda: "not.a.jwt",
    "stdio user as sub, bad signature": lambda: mint_token(STDIO_DECOY, secret="x" * 40),
    "not yet valid": lambda: mint_token("mallory", extra={"nbf": 4_102_444_800}),
    "NUL in sub": lambda: mint_token("mallory\x00"),
    "oversize sub": lambda: mint_token("mallory" * 40),
}


@pytest.mark.parametrize("case", list(BAD_TOKENS))
async def test_a_bad_token_gets_401_with_www_authenticate(
    chatstore_http: HttpServer, case: str
) -> None:
    make = BAD_TOKENS[case]
    token = None if make is None else make()
    response = await raw_post(chatstore_http, token)
    assert response.status_code == 401, response.text
    challenge = response.headers.get("www-authenticate", "")
    assert challenge.startswith("Bearer"), response.headers
    assert "resource_metadata=" in challenge
    assert "mallory" not in response.text


async def test_a_good_token_is_accepted(chatstore_http: HttpServer) -> None:
    # The control for the 401 cases above: the same request with a valid token succeeds.
    response = await raw_post(chatstore_http, mint_token(fresh_user()))
    assert response.status_code == 200, response.text
    assert response.json()["result"]["serverInfo"]["name"] == "chatstore"


async def test_chatstore_user_is_never_used_over_http(
    chatstore_http: HttpServer, postgres_url: str
) -> None:
    # The decoy (the server's CHATSTORE_USER) owns a conversation in the same database.
    async with ConversationStore(Settings(database_url=postgres_url)) as store:
        decoys = await store.create_conversation(user=STDIO_DECOY, title="decoy")
    try:
        response = await raw_post(chatstore_http, None)
        assert response.status_code == 401

        async with http_client(chatstore_http.url, mint_token(fresh_user())) as client:
            listed = await ok(client, "list_conversations", limit=100)
            assert listed["conversations"] == []
            await fail(client, "get_conversation", "not_found", conversation_id=str(decoys.id))
            assert (await client.list_resources()).resources == []
            created = await ok(client, "create_conversation", title="mine")

        async with ConversationStore(Settings(database_url=postgres_url)) as store:
            page = await store.list_conversations(user=STDIO_DECOY, limit=100)
        assert [c.id for c in page.conversations] == [decoys.id]
        assert created["id"] != str(decoys.id)
        assert STDIO_DECOY not in chatstore_http.log()
    finally:
        async with ConversationStore(Settings(database_url=postgres_url)) as store:
            await store.purge_user(user=STDIO_DECOY)


async def test_protected_resource_metadata(chatstore_http: HttpServer) -> None:
    base = chatstore_http.url.removesuffix("/mcp")
    async with httpx2.AsyncClient(timeout=10) as raw:
        response = await raw.get(f"{base}/.well-known/oauth-protected-resource/mcp")
    assert response.status_code == 200
    metadata = response.json()
    assert metadata["resource"] == chatstore_http.url
    assert metadata["authorization_servers"]
    assert "header" in metadata["bearer_methods_supported"]
    challenge = (await raw_post(chatstore_http, None)).headers["www-authenticate"]
    assert f"{base}/.well-known/oauth-protected-resource/mcp" in challenge


async def test_tools_over_http_match_the_snapshot(chatstore_http: HttpServer) -> None:
    async with http_client(chatstore_http.url, mint_token(fresh_user())) as client:
        listing = tool_listing((await client.list_tools()).tools)
    assert listing_json(listing) == TOOLS_SNAPSHOT.read_text(encoding="utf-8")


NO_BINDING_WARNING = "neither CHATSTORE_JWT_AUDIENCE nor CHATSTORE_JWT_ISSUER is set"


@pytest.mark.timeout(60)
def test_http_warns_at_start_when_tokens_name_no_audience_or_issuer(
    tmp_path: Path, chatstore_http: HttpServer
) -> None:
    env = server_env(
        f"sqlite://{tmp_path / 'unbound.sqlite3'}", tmp_path / "data", issuer=None, audience=None
    )
    with http_server(env, tmp_path) as unbound:
        # It still serves: any token the key verifies, whatever its aud.
        assert asyncio.run(raw_post(unbound, mint_token("anyone", audience="other"))).is_success
        log = unbound.log()
    (warning,) = [line for line in log.splitlines() if NO_BINDING_WARNING in line]
    assert " WARNING " in warning and "CHATSTORE_JWT_AUDIENCE" in warning
    assert NO_BINDING_WARNING not in chatstore_http.log()  # audience and issuer set there


@pytest.mark.timeout(60)
def test_http_refuses_to_start_without_a_key(tmp_path: Path) -> None:
    env = server_env(None, tmp_path / "data", CHATSTORE_USER="someone")
    del env["CHATSTORE_JWT_SECRET"]
    finished = subprocess.run(
        [*CHATSTORE, "serve", "--http", "--host", "127.0.0.1", "--port", "0"],
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert finished.returncode != 0
    assert "CHATSTORE_JWT_SECRET" in finished.stderr
    assert "Uvicorn running" not in finished.stderr
    assert finished.stdout == ""


@pytest.mark.timeout(60)
def test_http_refuses_a_short_secret(tmp_path: Path) -> None:
    env = server_env(None, tmp_path / "data", CHATSTORE_JWT_SECRET="short")
    finished = subprocess.run(
        [*CHATSTORE, "serve", "--http", "--port", "0"],
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert finished.returncode != 0
    assert "CHATSTORE_JWT_SECRET" in finished.stderr
    assert JWT_SECRET not in finished.stderr
