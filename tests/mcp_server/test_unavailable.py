"""``unavailable``: every tool, resource and the prompt when the database cannot be reached.

Two ways in: a store that is closed (both backends), and a PostgreSQL server that goes away
mid-session (a TCP proxy in front of it is shut). Either way the client sees the contract's
code and words, never a driver message, and after the database is back everything works and
nothing was half-written.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from urllib.parse import urlsplit, urlunsplit

from mcp import Client

from mcp_server.server import create_server
from store import ConversationStore, Settings
from tests.mcp_server.helpers import (
    args_for,
    assert_everything_unavailable,
    fail,
    new_conversation,
    ok,
)


async def test_a_closed_store_is_unavailable(settings: Settings, user: str) -> None:
    store = ConversationStore(settings)
    await store.open()
    conversation = await store.create_conversation(user=user)
    await store.close()
    server = create_server(settings, stdio_user=user, store=store)
    async with Client(server) as client:
        await assert_everything_unavailable(client, str(conversation.id))


class TcpProxy:
    """Forwards 127.0.0.1:<port> to a PostgreSQL server; ``stop()`` cuts every connection."""

    def __init__(self, host: str, port: int) -> None:
        self._target = (host, port)
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self.port = 0

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        assert self._server is not None
        self._server.close()
        for writer in list(self._writers):
            writer.close()
        self._writers.clear()
        await self._server.wait_closed()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*self._target)
        except OSError:
            writer.close()
            return
        self._writers.update((writer, up_writer))
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer))
        finally:
            self._tasks.discard(task)

    @staticmethod
    async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except (OSError, ConnectionError):
            pass
        finally:
            writer.close()
            with suppress(OSError, ConnectionError):
                await writer.wait_closed()


@asynccontextmanager
async def proxied(postgres_url: str) -> AsyncIterator[tuple[TcpProxy, Settings]]:
    parts = urlsplit(postgres_url)
    proxy = TcpProxy(parts.hostname or "127.0.0.1", parts.port or 5432)
    await proxy.start()
    netloc = parts.netloc.rsplit("@", 1)
    auth = f"{netloc[0]}@" if len(netloc) == 2 else ""
    url = urlunsplit(parts._replace(netloc=f"{auth}127.0.0.1:{proxy.port}"))
    settings = Settings(
        database_url=url, db_pool_min=1, db_pool_max=4, db_connect_timeout=2, db_timeout=5
    )
    try:
        yield proxy, settings
    finally:
        await proxy.stop()


async def test_a_database_that_goes_away_is_unavailable_then_recovers(
    postgres_url: str, user: str
) -> None:
    async with proxied(postgres_url) as (proxy, settings):
        store = ConversationStore(settings)
        await store.open()
        try:
            server = create_server(settings, stdio_user=user, store=store)
            async with Client(server) as client:
                cid = await new_conversation(client, "before the outage")

                await proxy.stop()
                await assert_everything_unavailable(client, cid)
                text = await fail(
                    client, "append_message", "unavailable", **args_for("append_message", cid)
                )
                assert "retrying is safe" in text

                await proxy.start()  # same port: the database is back
                conversation = await ok(
                    client, "get_conversation", conversation_id=cid, recent_messages=10
                )
                # The append and the delete tried during the outage left no trace.
                assert conversation["message_count"] == 1
                assert [m["content"] for m in conversation["messages"]] == ["before the outage"]
                listed = await ok(client, "list_conversations")
                assert [c["id"] for c in listed["conversations"]] == [cid]
                message = await ok(
                    client, "append_message", conversation_id=cid, role="user", content="after"
                )
                assert message["seq"] == 2
        finally:
            await store.close()
