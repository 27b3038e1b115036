"""Two ``chatstore serve --http`` processes on one PostgreSQL database, like replicas behind a
load balancer: concurrent appends to one conversation from several clients, through both, give
``seq`` 1..N with no gap, nothing lost and nothing duplicated, retries included.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import ExitStack

import pytest

from tests.conftest import fresh_user
from tests.mcp_server.helpers import ok
from tests.support import HttpServer, http_client, http_server, mint_token, server_env

pytestmark = pytest.mark.slow

WORKERS_PER_REPLICA = 3
APPENDS_PER_WORKER = 15
#: Every RETRY_EVERY-th append is sent again, with the same idempotency key, via the other replica.
RETRY_EVERY = 5


@pytest.fixture(scope="module")
def replicas(
    postgres_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[HttpServer, HttpServer]]:
    env = server_env(postgres_url, tmp_path_factory.mktemp("replica-data"))
    logs = tmp_path_factory.mktemp("replica-logs")
    with ExitStack() as stack:
        first = stack.enter_context(http_server(env, logs))
        second = stack.enter_context(http_server(env, logs))
        yield first, second


@pytest.mark.timeout(90)
async def test_concurrent_appends_through_two_replicas_are_gapless_and_exact(
    replicas: tuple[HttpServer, HttpServer],
) -> None:
    user = fresh_user()
    token = mint_token(user)
    first, second = replicas
    async with http_client(first.url, token) as client:
        cid = (await ok(client, "create_conversation", title="busy"))["id"]

    async def worker(name: str, home: HttpServer, away: HttpServer) -> list[tuple[str, int]]:
        stored: list[tuple[str, int]] = []
        async with http_client(home.url, token) as here, http_client(away.url, token) as there:
            for n in range(APPENDS_PER_WORKER):
                content = f"{name}-{n}"
                args = {
                    "conversation_id": cid,
                    "role": "user",
                    "content": content,
                    "idempotency_key": content,
                }
                message = await ok(here, "append_message", **args)
                if n % RETRY_EVERY == 0:
                    # A client retry that lands on the other replica stores nothing new.
                    assert await ok(there, "append_message", **args) == message
                stored.append((content, message["seq"]))
        return stored

    jobs = [
        worker(f"w{replica}{n}", *(replicas if replica == 0 else replicas[::-1]))
        for replica in (0, 1)
        for n in range(WORKERS_PER_REPLICA)
    ]
    results = await asyncio.gather(*jobs)
    sent = {content: seq for stored in results for content, seq in stored}
    total = 2 * WORKERS_PER_REPLICA * APPENDS_PER_WORKER
    assert len(sent) == total

    async with http_client(second.url, token) as client:
        page = await ok(client, "list_messages", conversation_id=cid, limit=200, after_seq=0)
        conversation = await ok(client, "get_conversation", conversation_id=cid)

    messages = page["messages"]
    assert page["has_more"] is False
    assert [m["seq"] for m in messages] == list(range(1, total + 1))  # gapless, no repeats
    assert {m["content"]: m["seq"] for m in messages} == sent  # nothing lost or duplicated
    assert len({m["id"] for m in messages}) == total
    assert conversation["message_count"] == total
    assert conversation["last_seq"] == total
    # Each worker's own appends kept their order, and the workers really did interleave.
    spans = []
    for stored in results:
        seqs = [seq for _, seq in stored]
        assert seqs == sorted(seqs)
        spans.append((seqs[0], seqs[-1]))
    assert any(a[0] < b[1] and b[0] < a[1] for a in spans for b in spans if a != b)
