"""W7: HTTP load on ``w7_servers`` (2) ``chatstore serve --http`` processes, one database.

``w7_clients`` (16) concurrent clients, each on its own keep-alive connection to one of the
servers (round robin) with its user's bearer JWT, call tools back to back for
``w7_seconds`` (60 s; 5 s with ``--quick``) after a short untimed warm-up: 30% (``w7_append_share``)
``append_message`` of ~400 characters, 70% ``list_messages(limit=50)``, each to one of
their user's conversations at random (``w7_users`` = 4 users x 2 conversations, seeded with
100 messages each, so every page is full).

The clients send raw JSON-RPC POSTs to /mcp (``bench.servers.RawHttp``): the same envelope
and headers as the SDK client (protocol 2026-07-28: no ``initialize``, the version and
client info in ``_meta`` and ``MCP-Protocol-Version``). The load generator runs in this
process on the same 2-core machine; its CPU is reported with the servers' and PostgreSQL's,
so it is plain what bounds the throughput.

Targets (absolute: there is no floor for a whole server): ≥ 500 calls/s, p99 ≤ 50 ms,
0 errors. Every reply is checked (HTTP 200, a result, not ``isError``, a page of 50 messages
in ascending, consecutive ``seq``); afterwards every conversation must hold exactly the
seeded messages plus every acknowledged append, once each, ``seq`` 1..N with no gap,
``message_count = last_seq = N``. W7 runs once per run (the first pass): 60 s of load is
its own repetition; its spread is over 10-second slices.

With ``--profile``, py-spy samples the first server for 10 s mid-run (it costs that server
some CPU: compare throughput only between runs without it); the summary goes to
``bench/results/profiles/w7-server.txt``.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import math
import random
import time
import uuid
from collections import Counter
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench import pyspy
from bench.checks import check_sequence, stored_messages, totals
from bench.context import BenchContext
from bench.datagen import EPOCH, ConversationSpec, message_content, stable_id
from bench.fixtures import load
from bench.harness import Figure, Stats, Target, percentile
from bench.report import WorkloadResult
from bench.servers import (
    MCP_HEADERS,
    RawHttp,
    SystemCpu,
    bearer_token,
    child_env,
    cpu_seconds,
    log_dir,
    new_secret,
    tool_call,
)
from bench.workloads._common import ROLES
from bench.workloads._workload import Workload
from tests.support import HttpServer, http_server

TARGET_RATE = Target(">=", 500, unit="calls/s")
TARGET_P99 = Target("<=", 50, unit="ms", stat="p99")
LIST, APPEND = "list_messages", "append_message"
CALL_TIMEOUT_S = 30.0
PROFILE_S = 10.0


@dataclass(slots=True)
class Seeded:
    users: list[str]
    conversations: dict[str, list[uuid.UUID]]  # user -> their conversations


@dataclass(slots=True)
class Load:
    """What the clients saw, in the timed window (``start``..``end``, perf_counter)."""

    start: float
    end: float
    #: (completion time, kind, latency ms) of every timed call that succeeded
    done: list[tuple[float, str, float]] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)
    error_samples: list[str] = field(default_factory=list)
    #: conversation -> (id, seq) of every acknowledged append, warm-up included
    acknowledged: dict[uuid.UUID, list[tuple[uuid.UUID, int]]] = field(default_factory=dict)
    warmup_calls: int = 0

    def error(self, kind: str, detail: str) -> None:
        self.errors[kind] += 1
        if len(self.error_samples) < 10:
            self.error_samples.append(f"{kind}: {detail[:300]}")


async def _seed(ctx: BenchContext) -> Seeded:
    p = ctx.profile

    async def build() -> Seeded:
        users = [f"bench-w7-user{u}" for u in range(p.w7_users)]
        specs = [
            ConversationSpec(
                id=stable_id("w7", user, c),
                user=user,
                messages=p.w7_seed_messages,
                created_at=EPOCH,
                title=f"bench W7 {user} {c}",
            )
            for user in users
            for c in range(p.w7_conversations_per_user)
        ]
        await load(ctx, specs, floor=False)
        by_user: dict[str, list[uuid.UUID]] = {user: [] for user in users}
        for spec in specs:
            by_user[spec.user].append(spec.id)
        return Seeded(users, by_user)

    return await ctx.fixture("w7_conversations", build)


def _check_reply(
    kind: str, status: int, data: bytes, page: int
) -> tuple[str, str] | dict[str, Any]:
    """The structured result of a good reply, else (error kind, detail)."""
    if status != 200:
        return f"HTTP {status}", data[:300].decode(errors="replace")
    message = json.loads(data)
    if "error" in message:
        return f"JSON-RPC error {message['error'].get('code')}", str(message["error"])
    result = message.get("result") or {}
    if result.get("isError"):
        return "tool error", str(result.get("content"))
    structured = result.get("structuredContent")
    if not isinstance(structured, dict):
        return "no structuredContent", str(result)[:300]
    if kind == LIST:
        seqs = [m["seq"] for m in structured.get("messages", [])]
        consecutive = seqs == list(range(seqs[0], seqs[0] + len(seqs))) if seqs else False
        if len(seqs) != page or not consecutive or not structured.get("has_more"):
            return "bad page", f"{len(seqs)} messages, seqs {seqs[:3]}…{seqs[-3:]}"
    return structured


async def _client(
    k: int,
    server: HttpServer,
    token: str,
    conversations: list[uuid.UUID],
    load: Load,
    *,
    share: float,
    page: int,
    counter: itertools.count[int],
) -> None:
    rng = random.Random(k)
    conn = RawHttp(server.url, {**MCP_HEADERS, "Authorization": f"Bearer {token}"})
    names = {name: f"Mcp-Name: {name}\r\n" for name in (LIST, APPEND)}
    clock = time.perf_counter
    try:
        while clock() < load.end:
            cid = rng.choice(conversations)
            kind = APPEND if rng.random() < share else LIST
            n = next(counter)
            arguments: dict[str, Any] = {"conversation_id": str(cid)}
            if kind == APPEND:
                arguments |= {"role": ROLES[n % 2], "content": message_content(n)}
            else:
                arguments["limit"] = page
            body = json.dumps(tool_call(n, kind, arguments), separators=(",", ":")).encode()
            started = clock()
            try:
                async with asyncio.timeout(CALL_TIMEOUT_S):
                    status, data = await conn.post(body, names[kind])
                finished = clock()  # the last byte of the reply: parsing it is not latency
                outcome = _check_reply(kind, status, data, page)
            except Exception as exc:
                finished = clock()
                outcome = (type(exc).__name__, repr(exc))
            if isinstance(outcome, dict) and kind == APPEND:
                acked = (uuid.UUID(outcome["id"]), int(outcome["seq"]))
                load.acknowledged.setdefault(cid, []).append(acked)
            if started < load.start:
                load.warmup_calls += 1
                if not isinstance(outcome, dict):
                    load.error(*outcome)  # a failure is a failure, warm-up or not
                continue
            if isinstance(outcome, dict):
                load.done.append((finished, kind, 1000 * (finished - started)))
            else:
                load.error(*outcome)
    finally:
        await conn.close()


async def _backends(ctx: BenchContext) -> list[int]:
    rows = await ctx.admin.fetch(
        "SELECT pid FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()",
        ctx.store_db,
    )
    return [int(row["pid"]) for row in rows]


@dataclass(slots=True)
class CpuSnapshot:
    at: float
    generator: float
    servers: list[float | None]
    backends: dict[int, float]
    system: SystemCpu | None

    @classmethod
    async def take(cls, ctx: BenchContext, servers: list[HttpServer]) -> CpuSnapshot:
        backends = {}
        for pid in await _backends(ctx):
            value = cpu_seconds(pid)
            if value is not None:
                backends[pid] = value
        return cls(
            at=time.perf_counter(),
            generator=time.process_time(),
            servers=[cpu_seconds(server.pid) for server in servers],
            backends=backends,
            system=SystemCpu.read(),
        )


def _cpu_use(before: CpuSnapshot, after: CpuSnapshot) -> dict[str, Any]:
    """Cores used by each party over the timed window (1.0 = one core fully busy)."""
    wall = after.at - before.at
    servers = [
        (b_end - b_start) / wall if b_start is not None and b_end is not None else None
        for b_start, b_end in zip(before.servers, after.servers, strict=True)
    ]
    # A backend that connected during the window counts from zero.
    postgres = sum(end - before.backends.get(pid, 0.0) for pid, end in after.backends.items())
    use: dict[str, Any] = {
        "window_s": wall,
        "generator_cores": (after.generator - before.generator) / wall,
        "server_cores": servers,
        "postgres_backend_cores": postgres / wall if after.backends else None,
        "postgres_backends": len(after.backends),
    }
    if before.system is not None and after.system is not None:
        use["system_busy_cores"] = (after.system.busy_s - before.system.busy_s) / wall
        use["system_steal_cores"] = (after.system.steal_s - before.system.steal_s) / wall
        use["system_cores"] = (after.system.total_s - before.system.total_s) / wall
    return use


async def run(ctx: BenchContext) -> WorkloadResult:
    p = ctx.profile
    seeded = await _seed(ctx)
    page = 50
    result = WorkloadResult(
        "W7",
        WORKLOAD.title,
        parameters={
            "servers": p.w7_servers,
            "clients": p.w7_clients,
            "seconds": p.w7_seconds,
            "append_share": p.w7_append_share,
            "users": p.w7_users,
            "conversations": sum(len(c) for c in seeded.conversations.values()),
            "seed_messages": p.w7_seed_messages,
            "page": page,
            "client": "bench.servers.RawHttp: raw JSON-RPC POSTs, one keep-alive connection each",
        },
    )
    secret = new_secret()
    tokens = {user: bearer_token(secret, user) for user in seeded.users}
    logs = log_dir(ctx.results_dir, "w7")
    env = child_env(ctx.store_url, secret=secret, data_dir=logs)
    all_conversations = [c for cs in seeded.conversations.values() for c in cs]
    async with ctx.connection(ctx.store_url) as conn:
        stored_before = await stored_messages(conn, all_conversations)

    warmup_s = min(3.0, max(1.0, p.w7_seconds / 10))
    async with AsyncExitStack() as stack:
        servers = [stack.enter_context(http_server(env, logs)) for _ in range(p.w7_servers)]
        ctx.log(
            f"W7: {p.w7_clients} clients on {len(servers)} servers for {p.w7_seconds:.0f} s "
            f"(+{warmup_s:.0f} s warm-up)"
        )
        now = time.perf_counter()
        load = Load(start=now + warmup_s, end=now + warmup_s + p.w7_seconds)
        counter = itertools.count(1)
        clients = [
            asyncio.create_task(
                _client(
                    k,
                    servers[k % len(servers)],
                    tokens[seeded.users[k % len(seeded.users)]],
                    seeded.conversations[seeded.users[k % len(seeded.users)]],
                    load,
                    share=p.w7_append_share,
                    page=page,
                    counter=counter,
                )
            )
            for k in range(p.w7_clients)
        ]
        await asyncio.sleep(max(0.0, load.start - time.perf_counter()))
        before = await CpuSnapshot.take(ctx, servers)
        profile: asyncio.Task[Any] | None = None
        if ctx.profiling and pyspy.executable() is not None:
            seconds = min(PROFILE_S, p.w7_seconds - 2)
            folder = ctx.results_dir / "profiles"
            folder.mkdir(parents=True, exist_ok=True)
            profile = asyncio.create_task(_profile(ctx, servers[0].pid, seconds, folder, delay=1.0))
        await asyncio.sleep(max(0.0, load.end - time.perf_counter()))
        after = await CpuSnapshot.take(ctx, servers)
        await asyncio.gather(*clients)
        if profile is not None:
            await profile
    result.parameters["cpu"] = _cpu_use(before, after)

    # Verification: every conversation holds its seed plus every acknowledged append, once.
    checks: dict[str, Any] = {}
    per_conversation = []
    async with ctx.connection(ctx.store_url) as conn:
        for cid in all_conversations:
            expected = stored_before[cid] + load.acknowledged.get(cid, [])
            per_conversation.append(await check_sequence(conn, cid, acknowledged=expected))
    summed = totals(per_conversation)
    errors = sum(load.errors.values())
    appended = sum(len(a) for a in load.acknowledged.values())
    store_ok = all(c["passed"] for c in per_conversation)
    checks = {
        "passed": errors == 0 and store_ok,
        "summary": (
            f"{errors} errors in {len(load.done) + errors + load.warmup_calls:,} calls; "
            f"{appended:,} acknowledged appends: {summed['lost']} lost, "
            f"{summed['duplicated']} duplicated, "
            f"gapless={'yes' if all(c['gapless'] for c in per_conversation) else 'NO'}, "
            f"counters={'match' if all(c['counters_match'] for c in per_conversation) else 'WRONG'}"
        ),
        "errors": dict(load.errors),
        "error_samples": load.error_samples,
        "totals": summed,
        "conversations": per_conversation,
    }
    result.checks = checks
    result.figures += _figures(load, p.w7_clients, len(servers), p.w7_append_share)
    result.parameters["calls"] = {
        "timed": len(load.done),
        "warmup": load.warmup_calls,
        "by_kind": dict(Counter(kind for _, kind, _ in load.done)),
    }
    return result


async def _profile(
    ctx: BenchContext, pid: int, seconds: float, folder: Path, *, delay: float
) -> None:
    await asyncio.sleep(delay)
    raw = await pyspy.record(pid, seconds, folder / "w7-server.raw")
    if raw is None:
        ctx.log("W7: py-spy could not sample the server (permissions?)")
        return
    summary = folder / "w7-server.txt"
    header = [f"py-spy, {seconds:.0f} s of one chatstore serve --http process under W7 load", ""]
    summary.write_text("\n".join(header + pyspy.summarise(raw)) + "\n")
    ctx.profiles["W7 server (py-spy)"] = str(summary)
    ctx.log(f"W7: server profile: {summary}")


def _slices(load: Load, count: int) -> list[tuple[float, float]]:
    width = (load.end - load.start) / count
    return [(load.start + i * width, load.start + (i + 1) * width) for i in range(count)]


def _figures(load: Load, clients: int, servers: int, share: float) -> list[Figure]:
    window = load.end - load.start
    slices = _slices(load, 6 if window >= 30 else 5)
    in_window = [d for d in load.done if d[0] <= load.end]
    rates = [sum(1 for t, _, _ in in_window if lo < t <= hi) / (hi - lo) for lo, hi in slices]
    rate = len(in_window) / window
    throughput = Figure(
        workload="W7",
        key="throughput",
        label=(
            f"{clients} clients, {servers} servers: {100 * share:.0f}% append_message / "
            f"{100 * (1 - share):.0f}% list_messages(50)"
        ),
        unit="calls/s",
        ratio=math.nan,
        basis="calls completed in the timed window / its length; spread: per-slice rates",
        numerator=Stats(len(in_window), rate, math.nan, rate, min(rates), max(rates)),
        slice_values=rates,
        target=TARGET_RATE,
    )
    figures = [throughput]
    for key, label, kinds in (
        ("latency", "latency, all calls", (LIST, APPEND)),
        ("latency_list", "latency, list_messages(50)", (LIST,)),
        ("latency_append", "latency, append_message", (APPEND,)),
    ):
        samples = [ms for _, kind, ms in load.done if kind in kinds]
        per_slice = [
            percentile([ms for t, kind, ms in load.done if kind in kinds and lo < t <= hi], 99)
            for lo, hi in slices
        ]
        figures.append(
            Figure(
                workload="W7",
                key=key,
                label=label + " (spread: p99 per slice)",
                unit="ms",
                ratio=math.nan,
                basis="per-call latency, send to last byte of the reply, timed window",
                numerator=Stats.of(samples),
                slice_values=per_slice,
                target=TARGET_P99 if key == "latency" else None,
            )
        )
    return figures


def describe(result: WorkloadResult) -> list[str]:
    """Throughput, latency per kind, and who used the machine's CPU during the load."""
    lines = ["W7 details:"]
    by_key = {f.key: f for f in result.figures}
    for key in ("latency_list", "latency_append", "latency"):
        figure = by_key.get(key)
        if figure is not None and figure.numerator is not None:
            s = figure.numerator
            lines.append(
                f"  {figure.label.split(' (')[0]}: p50 {s.median:.2f} ms, p99 {s.p99:.2f} ms, "
                f"max {s.max:.1f} ms, n={s.n:,}"
            )
    cpu = result.parameters.get("cpu", {})
    if cpu:
        servers = ", ".join("-" if c is None else f"{c:.2f}" for c in cpu.get("server_cores", []))
        pg = cpu.get("postgres_backend_cores")
        lines.append(
            f"  CPU in cores over {cpu['window_s']:.0f} s: load generator "
            f"{cpu['generator_cores']:.2f}, servers [{servers}], PostgreSQL backends "
            f"{'-' if pg is None else f'{pg:.2f}'} ({cpu['postgres_backends']} connections)"
            + (
                f", whole machine {cpu['system_busy_cores']:.2f} busy (+"
                f"{cpu['system_steal_cores']:.2f} stolen by the host) of {cpu['system_cores']:.2f}"
                if "system_busy_cores" in cpu
                else ""
            )
        )
        rate = by_key["throughput"].numerator
        if rate is not None and rate.median > 0:
            per_call = {
                "generator": cpu["generator_cores"],
                "servers": sum(c for c in cpu.get("server_cores", []) if c is not None),
                "postgres": pg or 0.0,
            }
            lines.append(
                "  CPU per call: "
                + ", ".join(f"{k} {1000 * v / rate.median:.2f} ms" for k, v in per_call.items())
            )
    errors = result.checks.get("errors")
    if errors:
        lines.append(f"  errors: {errors}; e.g. {result.checks.get('error_samples', [])[:3]}")
    return lines


WORKLOAD = Workload(
    "W7",
    "HTTP load: 16 clients, 2 server processes, one database",
    run,
    once=True,
    describe=describe,
)
