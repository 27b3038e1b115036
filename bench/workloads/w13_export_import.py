"""W13: ``chatstore export`` and ``chatstore import`` of the 1M-message store.

The commands run as an operator runs them (a process each, start-up included), on the large
W3 dataset: export it (PostgreSQL), import that file into an empty PostgreSQL database and
export that again, then import the file into an empty SQLite file and export that. Each is
reported in messages/s, beside a raw-asyncpg floor doing the database's own bulk path for the
same rows (``COPY … TO`` users, conversations and messages; ``COPY … FROM`` those files into an
empty migrated database, the same indexes and search column maintained): targets are export
≥ 100,000 and import ≥ 30,000 messages/s on PostgreSQL. Peak RSS of each command, less that
of the same command on an empty database (start-up, libraries, the tokenizer), is its growth
with the history: target ≤ 50 MB. The checks: each export of what was imported is the same
bytes as the first.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
import os
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from bench import databases
from bench.context import BenchContext
from bench.harness import Figure, Stats, Target
from bench.report import WorkloadResult
from bench.workloads._workload import Workload
from tests.support import CHATSTORE, REPO_ROOT

EXPORT_TARGET = Target(">=", 100_000, unit="msg/s")
IMPORT_TARGET = Target(">=", 30_000, unit="msg/s")
RSS_TARGET = Target("<=", 50, unit="MB")
#: The floor's tables, in the order a restore needs them (foreign keys).
TABLES = ("users", "conversations", "messages")


@dataclass(frozen=True, slots=True)
class Ran:
    seconds: float
    peak_mb: float


def _run(args: list[str], database_url: str) -> Ran:
    """``chatstore ARGS`` on ``database_url``: wall time and peak RSS (its own, from wait4)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHATSTORE_")}
    env.update(CHATSTORE_DATABASE_URL=database_url, CHATSTORE_LOG_LEVEL="WARNING")
    env["PYTHONPATH"] = str(REPO_ROOT)
    started = time.perf_counter()
    with tempfile.TemporaryFile() as errors:
        process = subprocess.Popen(
            [*CHATSTORE, *args], env=env, stdout=subprocess.DEVNULL, stderr=errors
        )
        _, status, usage = os.wait4(process.pid, 0)
        process.returncode = os.waitstatus_to_exitcode(status)
        elapsed = time.perf_counter() - started
        if process.returncode != 0:
            errors.seek(0)
            text = errors.read().decode(errors="replace").strip()
            raise RuntimeError(f"chatstore {args[0]} exited {process.returncode}: {text}")
    return Ran(elapsed, usage.ru_maxrss / 1024)


def _digest(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


async def run(ctx: BenchContext) -> WorkloadResult:
    result = WorkloadResult("W13", WORKLOAD.title)
    large = await ctx.large()
    if isinstance(large, str):
        result.notes.append(f"skipped: {large}")
        return result
    messages = large.spec.total_messages
    result.parameters.update(large=large.as_dict(), messages=messages)
    tag = os.urandom(4).hex()
    pg_db, floor_db = f"chatstore_bench_w13_{tag}", f"chatstore_bench_w13_floor_{tag}"
    folder = Path(tempfile.mkdtemp(prefix="chatstore-w13-", dir=ctx.results_dir))
    try:
        for name in (pg_db, floor_db):
            await databases.create_database(ctx.admin, name)
            await databases.migrate_database(databases.database_url(ctx.server_url, name))
        pg_url = databases.database_url(ctx.server_url, pg_db)
        sqlite_url = f"sqlite://{folder / 'w13.sqlite3'}"
        dump, again, lite = folder / "export.jsonl", folder / "again.jsonl", folder / "lite.jsonl"
        empty = folder / "empty.jsonl"

        async def command(*args: str, url: str) -> Ran:
            ran = await asyncio.to_thread(_run, list(args), url)
            ctx.log(f"W13: chatstore {' '.join(args[:1])}: {ran.seconds:.1f} s")
            return ran

        # Start-up alone (an empty database, a header-only file): the RSS growth's zero.
        base_export = await command("export", "-o", str(empty), url=pg_url)
        base_import = await command("import", str(empty), url=sqlite_url)

        exported = await command("export", "-o", str(dump), url=large.url)
        floor_export, floor_import = await _floor(ctx, large.url, floor_db, folder)
        imported = await command("import", str(dump), url=pg_url)
        reexported = await command("export", "-o", str(again), url=pg_url)
        lite_imported = await command("import", str(dump), url=sqlite_url)
        lite_exported = await command("export", "-o", str(lite), url=sqlite_url)

        def rate(seconds: float) -> float:
            return messages / seconds if seconds else math.nan

        def throughput(
            key: str, label: str, ran: Ran, floor: float | None, target: Target | None
        ) -> Figure:
            return Figure(
                workload="W13",
                key=key,
                label=label,
                unit="msg/s",
                ratio=rate(ran.seconds) / rate(floor) if floor else math.nan,
                basis=(
                    f"{messages:,} messages / seconds of the command, process start-up "
                    "included" + ("; floor: COPY of the same tables" if floor else "")
                ),
                numerator=Stats.of([rate(ran.seconds)]),
                denominator=Stats.of([rate(floor)]) if floor else None,
                target=target,
            )

        result.figures += [
            throughput(
                "export", "chatstore export, PostgreSQL", exported, floor_export, EXPORT_TARGET
            ),
            throughput(
                "import", "chatstore import, PostgreSQL", imported, floor_import, IMPORT_TARGET
            ),
            throughput("export_sqlite", "chatstore export, SQLite", lite_exported, None, None),
            throughput("import_sqlite", "chatstore import, SQLite", lite_imported, None, None),
        ]
        for key, label, ran, base in (
            ("export_rss", "export, PostgreSQL", exported, base_export),
            ("import_rss", "import, PostgreSQL", imported, base_import),
            ("export_sqlite_rss", "export, SQLite", lite_exported, base_export),
            ("import_sqlite_rss", "import, SQLite", lite_imported, base_import),
        ):
            result.figures.append(
                Figure(
                    workload="W13",
                    key=key,
                    label=f"peak RSS growth: {label}",
                    unit="MB",
                    ratio=math.nan,
                    basis=(
                        f"peak RSS {ran.peak_mb:.0f} MB less {base.peak_mb:.0f} MB for the same "
                        "command on an empty database"
                    ),
                    numerator=Stats.of([ran.peak_mb - base.peak_mb]),
                    target=RSS_TARGET,
                )
            )
        first = await asyncio.to_thread(_digest, dump)
        same = {
            "PostgreSQL": await asyncio.to_thread(_digest, again) == first,
            "SQLite": await asyncio.to_thread(_digest, lite) == first,
        }
        result.checks = {
            "passed": all(same.values()),
            "summary": (
                f"export {dump.stat().st_size / 1e6:,.0f} MB; export after import is the same "
                + ", ".join(f"{name}: {'yes' if ok else 'NO'}" for name, ok in same.items())
                + f"; re-export of PostgreSQL {rate(reexported.seconds):,.0f} msg/s"
            ),
        }
    finally:
        for name in (pg_db, floor_db):
            await databases.drop_database(ctx.admin, name)
        await asyncio.to_thread(shutil.rmtree, folder, True)
    return result


async def _floor(
    ctx: BenchContext, source_url: str, target_db: str, folder: Path
) -> tuple[float, float]:
    """Seconds for raw asyncpg to ``COPY`` the tables out of ``source_url`` and into
    ``target_db`` (migrated, empty)."""
    files = {table: folder / f"floor-{table}.copy" for table in TABLES}
    async with ctx.connection(source_url, application_name="bench_floor") as conn:
        started = time.perf_counter()
        for table, path in files.items():
            await conn.copy_from_table(table, output=path)
        exported = time.perf_counter() - started
    target = databases.database_url(ctx.server_url, target_db)
    async with ctx.connection(target, application_name="bench_floor") as conn:
        started = time.perf_counter()
        async with conn.transaction():
            for table, path in files.items():
                await conn.copy_to_table(table, source=path)
        imported = time.perf_counter() - started
    ctx.log(f"W13: floor COPY out {exported:.1f} s, in {imported:.1f} s")
    return exported, imported


# About four minutes: its one pass is its repetition (five would take twenty).
WORKLOAD = Workload("W13", "export and import of the 1M-message store", run, once=True)
