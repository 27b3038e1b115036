"""PostgreSQL connections kept checked out of asyncpg's pool between calls.

asyncpg's ``Pool.release()`` runs in a shielded task (two extra event-loop turns per call)
and re-arms an idle timer: 50-190 µs a call on a 2-core machine, 15-25 % of a 50-message
read (bench W2/W5). A connection that finished its work cleanly is parked here and handed to
the next call (or a waiting one) directly. Anything else (an error, a cancellation, an open
transaction) goes back to asyncpg's pool, which rolls back, resets or closes it. At most
``size`` connections are out of the pool at once, so callers beyond that wait here, never in
the pool's queue where parked connections could not reach them.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any


class IdleConnections:
    def __init__(self, pool: Any, size: int) -> None:
        self._pool = pool
        self._size = size
        self._out = 0  # checked out of the pool: parked or in use
        self._idle: list[Any] = []
        self._waiters: collections.deque[asyncio.Future[Any]] = collections.deque()

    def _hand(self, conn: Any) -> None:
        """Give a connection (or, with None, a free slot) to the first live waiter."""
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(conn)
                return
        if conn is not None:
            self._idle.append(conn)

    async def _acquire(self) -> Any:
        while True:
            if self._idle:
                return self._idle.pop()
            if self._out < self._size:
                self._out += 1
                try:
                    return await self._pool.acquire()
                except BaseException:
                    self._out -= 1
                    self._hand(None)
                    raise
            waiter = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            try:
                conn = await waiter
            except BaseException:
                if waiter.done() and not waiter.cancelled():
                    self._hand(waiter.result())  # pass on what this caller was given
                raise
            if conn is not None:
                return conn

    async def _discard(self, conn: Any) -> None:
        self._out -= 1
        try:
            await self._pool.release(conn)
        finally:
            self._hand(None)

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[Any]:
        conn = await self._acquire()
        clean = False
        try:
            yield conn
            clean = not conn.is_closed() and not conn.is_in_transaction()
        finally:
            if clean:
                self._hand(conn)
            else:
                await self._discard(conn)

    async def drain(self) -> None:
        """Return every parked connection to the pool (before expiring or closing it)."""
        idle, self._idle = self._idle, []
        for conn in idle:
            await self._discard(conn)
