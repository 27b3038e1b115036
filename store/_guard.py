"""The guard every store call runs under: the one place driver errors become store errors.

- Time: a call gets ``CHATSTORE_DB_TIMEOUT`` seconds for all of its database work, waiting
  for a connection included; past it the call fails with ``Unavailable``.
- Outages: an exception the backend recognises as "the database is not answering" (a refused
  or dropped connection, a restart, a busy SQLite file) becomes ``Unavailable``. The failed
  statement committed nothing, so the call is run once more on fresh connections when it is
  safe to repeat, and only then reported.
- Anything else is a bug and propagates unchanged (the MCP layer keeps its text to itself).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar

from store.backends.base import Backend
from store.errors import StoreError, Unavailable

__all__ = ["Guard"]

log = logging.getLogger("chatstore.store")

T = TypeVar("T")

_TIMED_OUT = "the database did not answer in time; nothing was half-written, so retrying is safe"
_UNREACHABLE = (
    "the database cannot be reached right now; nothing was half-written, so retrying is safe"
)


class Guard:
    def __init__(self, backend: Backend, timeout: float) -> None:
        self._backend = backend
        self._timeout = timeout

    @contextmanager
    def opening(self) -> Iterator[None]:
        """Around opening the backend (or migrating it): a failure an operator can act on
        becomes ``Unavailable`` saying what to do, whether the driver raised it or the ORM
        wrapped it (aerich connects through Tortoise)."""
        try:
            yield
        except StoreError:
            raise
        except Exception as exc:
            chain: list[BaseException] = []
            cause: BaseException | None = exc
            while cause is not None and cause not in chain:
                chain.append(cause)
                cause = cause.__cause__ or cause.__context__
            for cause in reversed(chain):  # the driver's own error first: the most precise
                described = self._backend.open_failure(cause)
                if described is not None:
                    raise Unavailable(described) from exc
            if self._backend.is_unavailable(exc):
                raise Unavailable(f"cannot reach the database: {self._backend.where()}") from exc
            raise

    async def run(
        self, op: Callable[[], Awaitable[T]], *, retry: bool = True, bounded: bool = True
    ) -> T:
        """``op()`` under the time limit, outages translated; with ``retry``, one more attempt
        on fresh connections after an outage. Not ``bounded``: ``op`` bounds each of its
        statements instead (an import, whose length follows the file)."""
        attempts = 2 if retry else 1
        for attempt in range(attempts):
            try:
                async with asyncio.timeout(self._timeout if bounded else None):
                    return await op()
            except StoreError:
                raise
            except TimeoutError as exc:
                raise Unavailable(_TIMED_OUT) from exc
            except Exception as exc:
                if not self._backend.is_unavailable(exc):
                    raise
                log.warning("database unavailable (%s)", type(exc).__name__)
                await self._backend.recover()
                if attempt + 1 >= attempts:
                    raise Unavailable(_UNREACHABLE) from exc
        raise AssertionError("unreachable")  # pragma: no cover
