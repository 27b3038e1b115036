"""``python -m bench``: run the workloads, print the table, write the JSON results."""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
import traceback
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench import databases
from bench.config import FULL, QUICK, default_large_db, default_server_url
from bench.context import BenchContext, LargeOptions
from bench.report import (
    RESULTS_DIR,
    WorkloadResult,
    combine,
    format_plans,
    format_table,
    write,
)
from bench.workloads import WORKLOADS, Workload

__all__ = ["main"]

#: Results files record this; bump it when their shape changes.
RESULTS_FORMAT = 1


def _log(message: str) -> None:
    stamp = datetime.now(UTC).strftime("%H:%M:%S")
    print(f"[bench {stamp}] {message}", file=sys.stderr, flush=True)


def _parser(workloads: Sequence[Workload]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description=(
            "chatstore benchmarks: every figure is a ratio against a hand-written asyncpg "
            "floor measured in the same run. Workloads: "
            + "; ".join(f"{w.id} {w.title}" for w in workloads)
        ),
    )
    parser.add_argument(
        "--quick", action="store_true", help="fewer repetitions (< 1 minute); W3 only if built"
    )
    parser.add_argument(
        "--url",
        default=default_server_url(),
        help="PostgreSQL server URL without a database "
        "(env CHATSTORE_BENCH_POSTGRES_URL; default %(default)s)",
    )
    parser.add_argument(
        "--only", default="", help="comma-separated workload ids to run, e.g. W1,W3"
    )
    parser.add_argument(
        "--large-db",
        default=default_large_db(),
        help="database holding the large W3 dataset (env CHATSTORE_BENCH_LARGE_DB; "
        "default %(default)s)",
    )
    parser.add_argument(
        "--build-large", action="store_true", help="build the large dataset even with --quick"
    )
    parser.add_argument(
        "--rebuild-large", action="store_true", help="drop and rebuild the large dataset"
    )
    parser.add_argument("--no-large", action="store_true", help="skip W3")
    parser.add_argument(
        "--json",
        type=Path,
        default=RESULTS_DIR / "latest.json",
        help="where to write the results (default %(default)s)",
    )
    parser.add_argument(
        "--repeat",
        type=int,
        default=None,
        metavar="N",
        help="run every workload N times and report the median ratio of the passes "
        "(default: 5 for the full run, 1 with --quick)",
    )
    parser.add_argument(
        "--keep", action="store_true", help="keep this run's databases (for inspection)"
    )
    parser.add_argument(
        "--profile",
        action="store_true",
        help="also profile chatstore's side of each workload with pyinstrument "
        "(the bench extra); reports go to bench/results/profiles/",
    )
    return parser


def _select(workloads: Sequence[Workload], only: str) -> list[Workload]:
    if not only:
        return list(workloads)
    wanted = {part.strip().upper() for part in only.split(",") if part.strip()}
    unknown = wanted - {w.id for w in workloads}
    if unknown:
        raise SystemExit(f"unknown workload(s): {', '.join(sorted(unknown))}")
    return [w for w in workloads if w.id in wanted]


async def _run(args: argparse.Namespace, selected: Sequence[Workload]) -> int:
    profile = QUICK if args.quick else FULL
    server_url = str(args.url).rstrip("/")
    started_at = datetime.now(UTC)
    started = time.perf_counter()
    admin = await databases.admin_connect(server_url)
    repeats = args.repeat if args.repeat is not None else profile.repeats
    passes: list[list[WorkloadResult]] = []
    store_db, floor_db = databases.run_database_names()
    ctx = BenchContext(
        profile=profile,
        server_url=server_url,
        admin=admin,
        store_db=store_db,
        floor_db=floor_db,
        large_options=LargeOptions(
            name=args.large_db,
            build=profile.build_large or args.build_large or args.rebuild_large,
            rebuild=args.rebuild_large,
            skip=args.no_large,
        ),
        log=_log,
        results_dir=args.json.resolve().parent,
        profiling=args.profile,
    )
    try:
        environment = await databases.environment(admin)
        _log(f"{profile.name} run; databases {store_db}, {floor_db}")
        await ctx.start()
        for repeat in range(repeats):
            passes.append([])
            for workload in selected:
                if workload.once and repeat > 0:
                    continue
                _log(f"{workload.id}: {workload.title} (pass {repeat + 1}/{repeats})")
                t0 = time.perf_counter()
                try:
                    result = await workload.run(ctx)
                except Exception as exc:
                    traceback.print_exc(file=sys.stderr)
                    result = WorkloadResult(
                        workload.id, workload.title, status="failed", notes=[f"{exc!r}"]
                    )
                result.elapsed_s = time.perf_counter() - t0
                passes[-1].append(result)
                _log(f"{workload.id}: {result.status} in {result.elapsed_s:.1f} s")
        large = ctx.large_status
    finally:
        await ctx.close(keep=args.keep)
        await admin.close()

    results = combine(passes)
    describers = {w.id: w.describe for w in selected if w.describe is not None}
    details = {
        r.id: describe(r)
        for r in results
        if r.status == "ok" and (describe := describers.get(r.id)) is not None
    }
    document: dict[str, Any] = {
        "format": RESULTS_FORMAT,
        "started_at": started_at,
        "elapsed_s": time.perf_counter() - started,
        "command": " ".join(["python -m bench", *sys.argv[1:]]),
        "profile": profile.as_dict(),
        "server_url": server_url,
        "databases": {
            "chatstore": store_db,
            "floor": floor_db,
            "kept": args.keep,
            "large": large.as_dict() if large is not None and not isinstance(large, str) else large,
        },
        "environment": environment,
        "method": {
            "ratio": "chatstore / floor, medians (and p99s) of interleaved samples, same run",
            "floor": "hand-written SQL on raw asyncpg connections, same schema and server",
            "round_spread": (
                "one pass: min-max of the median ratio over 5 contiguous slices of the run; "
                "several passes (--repeat): min-max of the per-pass ratios"
            ),
            "passes": repeats,
        },
        "summary": [
            {
                "workload": f.workload,
                "figure": f.key,
                "label": f.label,
                "ratio": f.ratio,
                "target": str(f.target) if f.target else None,
                "met": f.met,
            }
            for r in results
            for f in r.figures
        ]
        + [
            {"workload": r.id, "figure": "correctness", "passed": r.checks.get("passed")}
            for r in results
            if "passed" in r.checks
        ],
        "workloads": results,
        "details": details,
        "passes": passes if len(passes) > 1 else [],
        "profiles": ctx.profiles,
    }
    paths = write(document, args.json, stamp=f"{started_at:%Y%m%dT%H%M%SZ}-{profile.name}")
    pg = environment["postgres"]
    print()
    print(
        f"chatstore bench ({profile.name}) {started_at:%Y-%m-%d %H:%M} UTC — PostgreSQL "
        f"{pg.get('server_version')}, fsync={pg.get('fsync')}, "
        f"synchronous_commit={pg.get('synchronous_commit')}, "
        f"{environment['cpus']} CPUs, {repeats} pass(es), {document['elapsed_s']:.0f} s"
    )
    print()
    print(format_table(results))
    for lines in details.values():
        print()
        print("\n".join(lines))
    plans = format_plans(results)
    if plans:
        print()
        print("Plans (EXPLAIN ANALYZE, BUFFERS; chatstore's SQL as captured at run time):")
        print(plans)
    print()
    print("results: " + ", ".join(str(p) for p in paths))
    return 1 if any(r.status == "failed" for r in results) else 0


def main(argv: Sequence[str] | None = None) -> int:
    workloads = WORKLOADS
    args = _parser(workloads).parse_args(argv)
    selected = _select(workloads, args.only)
    try:
        databases.check_name(args.large_db)
    except ValueError as exc:
        raise SystemExit(f"--large-db: {exc}") from None
    try:
        return asyncio.run(_run(args, selected))
    except KeyboardInterrupt:
        _log("interrupted")
        return 130
