"""W6: MCP round trips against the bare store call they wrap.

``list_messages`` (the latest ``w6_page`` = 50 of a 1,000-message conversation of
~400-character messages) and ``append_message`` (~400 characters) are called through:

- ``inproc``: ``mcp.Client(server)`` on a server built in this process around the run's own
  ``ConversationStore`` (no transport, no JSON framing);
- ``stdio``: a real ``chatstore serve`` child (the SDK's stdio client spawns it);
- ``http``: a real ``chatstore serve --http`` child, bearer JWT, stateless JSON responses;

each in two ways: ``call_tool`` (what an agent calls: the SDK client re-validates the
structured result against the tool's output schema with jsonschema, ~7 ms for a 50-message
page here, all of it client-side) and ``send_request`` (``client.session.send_request(
CallToolRequest, CallToolResult)``: the same request and the same pydantic parsing of the
reply, without that schema check). The ``stdio`` and ``http`` round trips are also timed from
a raw client (JSON-RPC lines on the child's pipes; keep-alive POSTs, ``RawHttp``), which
shows how much of the round trip is the SDK client's own parsing. The bare store call
(``ConversationStore.list_messages`` / ``append_message`` in this process, same database)
is timed in the same interleaved loop; every figure is divided by it.

Target: ``stdio`` ``send_request`` p50 ≤ 3 ms for ``list_messages`` — an absolute bound, the
transport round trip without client-side schema validation. Appends go to one conversation
per variant; afterwards each holds exactly the acknowledged messages, gapless.
"""

from __future__ import annotations

import itertools
import json
import math
import os
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx2
import mcp_types as types
from mcp import Client
from mcp.client.stdio import stdio_client
from mcp.client.streamable_http import streamable_http_client

from bench.checks import check_sequence
from bench.context import BenchContext
from bench.datagen import EPOCH, ConversationSpec, message_content, stable_id
from bench.fixtures import load
from bench.harness import Op, Target, compare, interleave
from bench.report import WorkloadResult
from bench.servers import (
    MCP_HEADERS,
    RawHttp,
    bearer_token,
    child_env,
    cpu_seconds,
    log_dir,
    new_secret,
    raw_stdio,
    tool_call,
)
from bench.workloads._common import ROLES
from bench.workloads._workload import Workload
from mcp_server.server import create_server
from store import Settings
from tests.support import http_server, stdio_params

USER = "bench-w6"
STORE = "store"
TARGET = Target("<=", 3.0, unit="ms")


@dataclass(frozen=True, slots=True)
class Variant:
    name: str
    transport: str  # "inproc" | "stdio" | "http"
    how: str
    in_table: bool = True


VARIANTS = (
    Variant("inproc_call", "inproc", "call_tool"),
    Variant("inproc_send", "inproc", "send_request (no client schema check)"),
    Variant("stdio_call", "stdio", "call_tool"),
    Variant("stdio_send", "stdio", "send_request (no client schema check)"),
    Variant("stdio_raw", "stdio", "raw JSON-RPC lines", in_table=False),
    Variant("http_call", "http", "call_tool"),
    Variant("http_send", "http", "send_request (no client schema check)"),
    Variant("http_raw", "http", "raw HTTP/1.1 POST", in_table=False),
)
TRANSPORT_NAMES = {"inproc": "in-process", "stdio": "stdio", "http": "HTTP"}

#: A tool call through one variant: (tool name, arguments) -> the result's structured content.
Call = Callable[[str, dict[str, Any]], Any]


def _structured(result: types.CallToolResult) -> dict[str, Any]:
    if result.is_error or result.structured_content is None:
        raise RuntimeError(f"tool call failed: {result.content}")
    return dict(result.structured_content)


def _raw_structured(result: dict[str, Any]) -> dict[str, Any]:
    if result.get("isError") or "structuredContent" not in result:
        raise RuntimeError(f"tool call failed: {result.get('content')}")
    structured: dict[str, Any] = result["structuredContent"]
    return structured


async def _conversation(ctx: BenchContext) -> uuid.UUID:
    """W6's read target: ``w6_messages`` messages of ~400 characters (store database only)."""

    async def build() -> uuid.UUID:
        spec = ConversationSpec(
            id=stable_id("w6", "conversation"),
            user=USER,
            messages=ctx.profile.w6_messages,
            created_at=EPOCH,
            title="bench W6",
        )
        await load(ctx, [spec], floor=False)
        return spec.id

    return await ctx.fixture("w6_conversation", build)


def _child_pids(exclude: set[int]) -> list[int]:
    """This process's direct children (from /proc), minus ``exclude``."""
    me = os.getpid()
    found: list[int] = []
    try:
        entries = list(Path("/proc").iterdir())
    except OSError:
        return found  # no /proc here: the children's CPU is not reported
    for entry in entries:
        if not entry.name.isdigit() or int(entry.name) in exclude:
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == me:
            found.append(int(entry.name))
    return found


async def run(ctx: BenchContext) -> WorkloadResult:
    p = ctx.profile
    cid = await _conversation(ctx)
    page = p.w6_page
    result = WorkloadResult(
        "W6",
        WORKLOAD.title,
        parameters={
            "messages": p.w6_messages,
            "page": page,
            "reads": p.w6_reads,
            "appends": p.w6_appends,
            "warmup": p.w6_warmup,
            "content_chars": 400,
        },
    )
    store = ctx.store
    secret = new_secret()
    token = bearer_token(secret, USER)
    logs = log_dir(ctx.results_dir, "w6")
    stdio_env = child_env(ctx.store_url, secret=secret, data_dir=logs, user=USER)
    http_env = child_env(ctx.store_url, secret=secret, data_dir=logs)
    # MCPServer sets up the root logger at its own level: at INFO, httpx2 logs every request.
    settings = Settings(database_url=ctx.store_url, log_level="WARNING")
    server = create_server(settings, stdio_user=USER, store=store)
    auth = {"Authorization": f"Bearer {token}"}
    ids = itertools.count(1)

    with (
        (logs / "stdio-sdk.log").open("w") as errlog,
        http_server(http_env, logs) as http_child,
    ):
        async with (
            raw_stdio(stdio_env, logs) as raw_child,
            httpx2.AsyncClient(headers=auth, timeout=30) as sdk_http,
            Client(server) as inproc,
            Client(stdio_client(stdio_params(stdio_env), errlog=errlog)) as stdio,
            Client(streamable_http_client(http_child.url, http_client=sdk_http)) as http,
        ):
            raw_http = RawHttp(http_child.url, {**MCP_HEADERS, **auth})
            sdk_stdio_pids = _child_pids({http_child.pid, raw_child.pid})
            result.parameters["protocol_versions"] = {
                "inproc": inproc.protocol_version,
                "stdio": stdio.protocol_version,
                "http": http.protocol_version,
            }

            def via_client(client: Client, validate: bool) -> Call:
                async def call(name: str, arguments: dict[str, Any]) -> Any:
                    if validate:
                        return _structured(await client.call_tool(name, arguments))
                    request = types.CallToolRequest(
                        params=types.CallToolRequestParams(name=name, arguments=arguments)
                    )
                    reply = await client.session.send_request(request, types.CallToolResult)
                    return _structured(reply)

                return call

            async def via_raw_stdio(name: str, arguments: dict[str, Any]) -> Any:
                return _raw_structured(await raw_child.call(name, arguments))

            async def via_raw_http(name: str, arguments: dict[str, Any]) -> Any:
                body = json.dumps(tool_call(next(ids), name, arguments), separators=(",", ":"))
                status, data = await raw_http.post(body.encode(), f"Mcp-Name: {name}\r\n")
                if status != 200:
                    raise RuntimeError(f"{name}: HTTP {status}: {data[:200]!r}")
                message = json.loads(data)
                if "error" in message:
                    raise RuntimeError(f"{name}: JSON-RPC error {message['error']}")
                return _raw_structured(message["result"])

            calls: dict[str, Call] = {
                "inproc_call": via_client(inproc, True),
                "inproc_send": via_client(inproc, False),
                "stdio_call": via_client(stdio, True),
                "stdio_send": via_client(stdio, False),
                "stdio_raw": via_raw_stdio,
                "http_call": via_client(http, True),
                "http_send": via_client(http, False),
                "http_raw": via_raw_http,
            }
            children = {
                "stdio": sdk_stdio_pids,
                "stdio_raw": [raw_child.pid],
                "http": [http_child.pid],
            }

            cpu: dict[str, dict[str, float]] = {}
            acknowledged: dict[str, list[tuple[uuid.UUID, int]]] = {}
            appended_to: dict[str, uuid.UUID] = {}
            try:
                for tool in ("list_messages", "append_message"):
                    ops, counts, own_cpu, conversations = await _ops(
                        ctx, tool, calls, str(cid), page, acknowledged
                    )
                    before = {key: _cpu(pids) for key, pids in children.items()}
                    reps = p.w6_reads if tool == "list_messages" else p.w6_appends
                    ctx.log(f"W6: {tool}: {reps:,} calls per variant ({len(ops)} variants)")
                    sampling = await interleave(
                        ops, repetitions=reps, warmup=p.w6_warmup, budget_s=p.budget_s
                    )
                    after = {key: _cpu(pids) for key, pids in children.items()}
                    cpu[tool] = _cpu_per_call(counts, own_cpu, before, after)
                    short = "list" if tool == "list_messages" else "append"
                    what = f"list_messages({page})" if short == "list" else "append_message"
                    for variant in VARIANTS:
                        figure = compare(
                            "W6",
                            f"{short}_{variant.name}",
                            f"{what} {TRANSPORT_NAMES[variant.transport]}, {variant.how}",
                            sampling,
                            numerator=variant.name,
                            denominator=STORE,
                            target=TARGET
                            if (short, variant.name) == ("list", "stdio_send")
                            else None,
                        )
                        figure.in_table = variant.in_table
                        figure.basis = (
                            f"median {variant.name} / median bare ConversationStore.{tool}, same "
                            "run, interleaved"
                        )
                        result.figures.append(figure)
                    appended_to.update(conversations)
            finally:
                await raw_http.close()
            result.parameters["cpu_ms_per_call"] = cpu

    # Every acknowledged append is stored once, in order, counters right (each variant).
    checks: dict[str, Any] = {}
    async with ctx.connection(ctx.store_url) as conn:
        for name, conversation_id in appended_to.items():
            checks[name] = await check_sequence(
                conn, conversation_id, acknowledged=acknowledged[name]
            )
    passed = all(check["passed"] for check in checks.values())
    stored = sum(check["stored"] for check in checks.values())
    checks["passed"] = passed
    checks["summary"] = (
        f"{stored:,} appends over {len(appended_to)} paths stored once each, gapless, "
        "counters match; every page held 50 messages"
    )
    result.checks = checks
    return result


def _cpu(pids: list[int]) -> float | None:
    values = [cpu_seconds(pid) for pid in pids]
    if not values or any(v is None for v in values):
        return None
    return sum(v for v in values if v is not None)


def _cpu_per_call(
    counts: dict[str, int],
    own_cpu: dict[str, float],
    before: dict[str, float | None],
    after: dict[str, float | None],
) -> dict[str, float]:
    """Milliseconds of CPU per call: this process per variant (client side; for
    ``inproc`` and ``store`` the server's work too), and each server child per call served."""
    out = {f"client.{name}": 1000 * own_cpu[name] / counts[name] for name in counts}
    served = {
        "stdio": counts["stdio_call"] + counts["stdio_send"],
        "stdio_raw": counts["stdio_raw"],
        "http": counts["http_call"] + counts["http_send"] + counts["http_raw"],
    }
    for key, n in served.items():
        start, end = before[key], after[key]
        if start is not None and end is not None and n:
            out[f"server.{key}"] = 1000 * (end - start) / n
    return out


async def _ops(
    ctx: BenchContext,
    tool: str,
    calls: dict[str, Call],
    cid: str,
    page: int,
    acknowledged: dict[str, list[tuple[uuid.UUID, int]]],
) -> tuple[dict[str, Op], dict[str, int], dict[str, float], dict[str, uuid.UUID]]:
    """The interleaved ops for one tool, counting calls and this process's CPU per op."""
    store = ctx.store
    counter = itertools.count()
    counts: dict[str, int] = {}
    own_cpu: dict[str, float] = {}
    conversations: dict[str, uuid.UUID] = {}
    ops: dict[str, Op] = {}

    def measured(name: str, op: Op) -> Op:
        counts[name] = 0
        own_cpu[name] = 0.0

        async def timed() -> None:
            started = time.process_time()
            await op()
            own_cpu[name] += time.process_time() - started
            counts[name] += 1

        return timed

    if tool == "list_messages":
        arguments = {"conversation_id": cid, "limit": page}

        async def bare_read() -> None:
            got = await store.list_messages(user=USER, conversation_id=cid, limit=page)
            if len(got.messages) != page:
                raise RuntimeError(f"store returned {len(got.messages)} messages")

        ops[STORE] = measured(STORE, bare_read)
        for variant in VARIANTS:
            call = calls[variant.name]

            async def read(call: Call = call) -> None:
                got = await call("list_messages", arguments)
                if len(got["messages"]) != page:
                    raise RuntimeError(f"page of {len(got['messages'])} messages")

            ops[variant.name] = measured(variant.name, read)
        return ops, counts, own_cpu, conversations

    for name in (STORE, *(variant.name for variant in VARIANTS)):
        conversation = await store.create_conversation(user=USER, title=f"W6 {name}")
        conversations[name] = conversation.id
        acknowledged[name] = []

    async def bare_append() -> None:
        i = next(counter)
        message = await store.append_message(
            user=USER,
            conversation_id=conversations[STORE],
            role=ROLES[i % 2],
            content=message_content(i),
        )
        acknowledged[STORE].append((message.id, message.seq))

    ops[STORE] = measured(STORE, bare_append)
    for variant in VARIANTS:
        call = calls[variant.name]

        async def append(call: Call = call, name: str = variant.name) -> None:
            i = next(counter)
            got = await call(
                "append_message",
                {
                    "conversation_id": str(conversations[name]),
                    "role": ROLES[i % 2],
                    "content": message_content(i),
                },
            )
            acknowledged[name].append((uuid.UUID(got["id"]), int(got["seq"])))

        ops[variant.name] = measured(variant.name, append)
    return ops, counts, own_cpu, conversations


def describe(result: WorkloadResult) -> list[str]:
    """p50/p99 of every variant, its overhead over the store call, and CPU per call."""
    cpu: dict[str, dict[str, float]] = result.parameters.get("cpu_ms_per_call", {})
    lines = [
        "W6 details: p50 / p99 per call; overhead = variant p50 - bare store p50 (same loop); "
        "CPU ms per call (first pass): client = this process, server = the child process",
        "",
        "| tool | path | p50 | p99 | store p50 | store p99 | overhead p50 | ratio | "
        "client CPU | server CPU |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for figure in result.figures:
        num, den = figure.numerator, figure.denominator
        if num is None or den is None:
            continue
        short, variant = figure.key.split("_", 1)
        tool = "list_messages" if short == "list" else "append_message"
        transport = variant.split("_", 1)[0]
        per_call = cpu.get(tool, {})
        server_key = {"stdio": "stdio", "http": "http"}.get(transport)
        if variant == "stdio_raw":
            server_key = "stdio_raw"
        client_cpu = per_call.get(f"client.{variant}", math.nan)
        server_cpu = per_call.get(f"server.{server_key}", math.nan) if server_key else math.nan
        path = figure.label.split(" ", 1)[1]
        lines.append(
            f"| {tool} | {path} | {num.median:.3f} | {num.p99:.3f} | {den.median:.3f} | "
            f"{den.p99:.3f} | {num.median - den.median:+.3f} | {figure.ratio:.2f}x | "
            f"{_ms(client_cpu)} | {_ms(server_cpu)} |"
        )
    for tool in ("list_messages", "append_message"):
        store_cpu = cpu.get(tool, {}).get(f"client.{STORE}")
        if store_cpu is not None:
            lines.append(f"bare store {tool}: {store_cpu:.3f} ms CPU per call in this process")
    return lines


def _ms(value: float) -> str:
    return "-" if math.isnan(value) else f"{value:.2f}"


WORKLOAD = Workload(
    "W6", "MCP round trips: in-process, stdio, streamable HTTP", run, describe=describe
)
