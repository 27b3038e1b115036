"""Two server processes, one database: concurrent appenders through both, a reader polling.

Two ``chatstore serve --http`` processes share one database (the stateless replicas the
contract promises). Appenders write to the same conversations through both at once while a
reader polls ``list_messages`` through both, alternating: every page it sees must continue
exactly where the previous one ended (no gap, no reordering, no message changing under the
same seq). At the end: seq gapless, 0 lost, 0 duplicated, and the reader saw exactly what the
database holds.
"""

from __future__ import annotations

import asyncio
import uuid
from contextlib import AsyncExitStack, ExitStack
from pathlib import Path
from typing import Any

from mcp import Client

from store.settings import Settings
from tests.rawdb import RawDB
from tests.support import error_text, http_client, http_server, mint_token, server_env

APPENDERS_PER_SERVER = 3
MESSAGES_PER_APPENDER = 50
CONVERSATIONS = 2


class Reader:
    """Polls a conversation through several clients and checks each page continues the last."""

    def __init__(self, clients: list[Client], conversation_id: str) -> None:
        self.clients = clients
        self.conversation_id = conversation_id
        self.seen: dict[int, tuple[str, str]] = {}  # seq -> (id, content)
        self.polls = 0

    def _check_page(self, messages: list[dict[str, Any]], after: int | None) -> None:
        seqs = [int(m["seq"]) for m in messages]
        assert seqs == sorted(seqs), f"a page out of order: {seqs}"
        if seqs:
            assert seqs == list(range(seqs[0], seqs[0] + len(seqs))), f"a gap in a page: {seqs}"
            if after is not None:
                assert seqs[0] == after + 1, f"page after {after} starts at {seqs[0]}"
        for message in messages:
            seq = int(message["seq"])
            entry = (str(message["id"]), str(message["content"]))
            assert self.seen.setdefault(seq, entry) == entry, f"seq {seq} changed"

    async def poll(self, stop: asyncio.Event) -> None:
        last = 0
        while True:
            finishing = stop.is_set()
            client = self.clients[self.polls % len(self.clients)]
            self.polls += 1
            forward = await client.call_tool(
                "list_messages",
                {"conversation_id": self.conversation_id, "after_seq": last, "limit": 200},
            )
            assert not forward.is_error, error_text(forward)
            assert forward.structured_content is not None
            page = list(forward.structured_content["messages"])
            self._check_page(page, last)
            if page:
                last = int(page[-1]["seq"])
            # The latest page (no cursor) must be gapless too and never go backwards.
            latest = await client.call_tool(
                "list_messages", {"conversation_id": self.conversation_id, "limit": 20}
            )
            assert latest.structured_content is not None
            latest_page = list(latest.structured_content["messages"])
            self._check_page(latest_page, None)
            if finishing and not forward.structured_content["has_more"]:
                return
            await asyncio.sleep(0.005)


async def _append_all(
    client: Client, name: str, conversations: list[str], acked: list[dict[str, Any]]
) -> None:
    for n in range(MESSAGES_PER_APPENDER):
        result = await client.call_tool(
            "append_message",
            {
                "conversation_id": conversations[n % len(conversations)],
                "role": "user",
                "content": f"{name}-{n}",
                "idempotency_key": f"{name}-{n}",
            },
        )
        assert not result.is_error, error_text(result)
        assert result.structured_content is not None
        acked.append(dict(result.structured_content))


async def test_two_server_processes_share_one_database(
    settings: Settings, backend: str, tmp_path: Path
) -> None:
    url = settings.resolved_database_url
    env = server_env(url, tmp_path, CHATSTORE_DB_POOL_MAX="4")
    user = f"replicas-{uuid.uuid4().hex[:8]}"
    token = mint_token(user)
    acked: list[dict[str, Any]] = []
    with ExitStack() as processes:
        servers = [processes.enter_context(http_server(env, tmp_path)) for _ in range(2)]
        assert servers[0].process.pid != servers[1].process.pid
        async with AsyncExitStack() as stack:
            writers = [
                await stack.enter_async_context(http_client(s.url, token))
                for s in servers
                for _ in range(APPENDERS_PER_SERVER)
            ]
            readers_clients = [
                await stack.enter_async_context(http_client(s.url, token)) for s in servers
            ]
            conversations = []
            for index in range(CONVERSATIONS):
                created = await writers[index % len(writers)].call_tool("create_conversation", {})
                assert created.structured_content is not None
                conversations.append(str(created.structured_content["id"]))
            readers = [Reader(readers_clients, cid) for cid in conversations]
            stop = asyncio.Event()
            polls = [asyncio.create_task(r.poll(stop)) for r in readers]
            try:
                await asyncio.gather(
                    *(
                        _append_all(client, f"w{i}", conversations, acked)
                        for i, client in enumerate(writers)
                    )
                )
            finally:
                stop.set()
                await asyncio.gather(*polls)

    total = len(writers) * MESSAGES_PER_APPENDER
    assert len(acked) == total
    db = await RawDB.connect(settings)
    try:
        assert await db.violations([user]) == []
        stored: dict[str, dict[int, tuple[str, str]]] = {}
        for cid in conversations:
            stored[cid] = {int(r[1]): (str(r[0]), str(r[2])) for r in await db.message_rows(cid)}
    finally:
        await db.close()
    found = sum(len(v) for v in stored.values())
    assert found == total, f"{total} acknowledged, {found} stored"
    contents = [c for v in stored.values() for _, c in v.values()]
    assert len(set(contents)) == len(contents), "a message was stored twice"
    for message in acked:
        cid = str(message["conversation_id"])
        assert stored[cid][int(message["seq"])] == (str(message["id"]), message["content"])
    for reader in readers:
        assert reader.seen == stored[reader.conversation_id], "the reader missed or misread"
    print(
        f"[{backend}] two processes: {total} appended, {found} stored, "
        f"{sum(r.polls for r in readers)} reader polls"
    )
