"""What every workload receives: the run's databases, open clients, shared fixtures.

Each run creates two fresh databases, both migrated with chatstore's real migrations:
``…_store`` (chatstore reads and writes it through ``ConversationStore``) and ``…_floor``
(the floor writes the same tables with hand-written asyncpg). They are dropped at the end
unless ``--keep``. The large W3 dataset lives in its own long-lived database.
"""

from __future__ import annotations

import importlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar, cast

import asyncpg

from bench import databases
from bench.config import Profile
from bench.floor import Floor
from bench.harness import Op
from bench.large import LargeDataset, ensure_large
from store.settings import Settings
from store.store import ConversationStore

__all__ = ["BenchContext", "LargeOptions"]

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class LargeOptions:
    name: str
    build: bool
    rebuild: bool
    skip: bool


@dataclass(slots=True)
class BenchContext:
    profile: Profile
    server_url: str
    admin: asyncpg.Connection
    store_db: str
    floor_db: str
    large_options: LargeOptions
    log: Callable[[str], None]
    results_dir: Path
    profiling: bool = False
    profiles: dict[str, str] = field(default_factory=dict)
    _store: ConversationStore | None = None
    _floor_conn: asyncpg.Connection | None = None
    _connections: list[asyncpg.Connection] = field(default_factory=list)
    _stores: list[ConversationStore] = field(default_factory=list)
    _fixtures: dict[str, Any] = field(default_factory=dict)
    _large: LargeDataset | str | None = None

    @property
    def store_url(self) -> str:
        return databases.database_url(self.server_url, self.store_db)

    @property
    def floor_url(self) -> str:
        return databases.database_url(self.server_url, self.floor_db)

    @property
    def store(self) -> ConversationStore:
        """chatstore on this run's ``…_store`` database, default settings."""
        assert self._store is not None, "BenchContext.start() was not called"
        return self._store

    @property
    def floor(self) -> Floor:
        """The floor on this run's ``…_floor`` database (one raw asyncpg connection)."""
        assert self._floor_conn is not None, "BenchContext.start() was not called"
        return Floor(self._floor_conn)

    async def start(self) -> None:
        for name in (self.store_db, self.floor_db):
            await databases.create_database(self.admin, name)
            await databases.migrate_database(databases.database_url(self.server_url, name))
        self._store = await self.open_store(self.store_url)
        self._floor_conn = await self.connect(self.floor_url, application_name="bench_floor")

    async def close(self, *, keep: bool) -> None:
        for store in reversed(self._stores):
            await store.close()
        for conn in reversed(self._connections):
            await conn.close()
        self._stores.clear()
        self._connections.clear()
        if not keep:
            for name in (self.store_db, self.floor_db):
                await databases.drop_database(self.admin, name)

    async def connect(
        self,
        url: str,
        *,
        application_name: str = "bench",
        server_settings: dict[str, str] | None = None,
    ) -> asyncpg.Connection:
        """A raw asyncpg connection, closed with the context."""
        conn = await databases.connect(
            url, application_name=application_name, server_settings=server_settings
        )
        self._connections.append(conn)
        return conn

    @asynccontextmanager
    async def connection(
        self, url: str, *, application_name: str = "bench"
    ) -> AsyncIterator[asyncpg.Connection]:
        """A raw asyncpg connection for the duration of a block (loading, EXPLAIN)."""
        conn = await databases.connect(url, application_name=application_name)
        try:
            yield conn
        finally:
            await conn.close()

    async def open_store(self, url: str, **settings: Any) -> ConversationStore:
        """An open ConversationStore on ``url`` (extra Settings fields allowed)."""
        store = ConversationStore(Settings(database_url=url, **settings))
        await store.open()
        self._stores.append(store)
        return store

    async def fixture(self, name: str, build: Callable[[], Awaitable[T]]) -> T:
        """Build a dataset once per run and share it between workloads."""
        if name not in self._fixtures:
            started = time.perf_counter()
            self._fixtures[name] = await build()
            self.log(f"fixture {name} ready in {time.perf_counter() - started:.1f} s")
        return cast(T, self._fixtures[name])

    @property
    def large_status(self) -> LargeDataset | str | None:
        """The large dataset if a workload asked for it (None: nobody did)."""
        return self._large

    async def large(self) -> LargeDataset | str:
        """The large W3 dataset, or why it is not available in this run."""
        if self._large is None:
            options = self.large_options
            if options.skip:
                self._large = "skipped by --no-large"
            else:
                self._large = await ensure_large(
                    self.admin,
                    self.server_url,
                    options.name,
                    build=options.build,
                    rebuild=options.rebuild,
                    log=self.log,
                )
        return self._large

    async def profile_op(self, label: str, op: Op, repetitions: int) -> None:
        """With ``--profile``: run ``op`` under pyinstrument and save the report.

        pyinstrument is optional (the ``bench`` extra); it is imported only here.
        """
        if not self.profiling:
            return
        try:
            pyinstrument = importlib.import_module("pyinstrument")
        except ImportError:
            self.log("--profile needs pyinstrument: pip install 'chatstore[bench]'")
            return
        profiler = pyinstrument.Profiler(interval=0.0002, async_mode="enabled")
        profiler.start()
        for _ in range(repetitions):
            await op()
        profiler.stop()
        folder = self.results_dir / "profiles"
        folder.mkdir(parents=True, exist_ok=True)
        slug = "".join(ch if ch.isalnum() else "-" for ch in label.lower()).strip("-")
        path = folder / f"{slug}.txt"
        path.write_text(profiler.output_text(unicode=True, color=False, show_all=False))
        (folder / f"{slug}.html").write_text(profiler.output_html())
        self.profiles[label] = str(path)
        self.log(f"profile of {label}: {path}")
