"""Query plans of the hot paths: chatstore's own SQL, captured at run time, then EXPLAINed.

``capture()`` records every statement that reaches PostgreSQL through asyncpg while it is
active (chatstore goes through its asyncpg pool, which calls the same ``Connection``
methods), so the plans below are of the SQL chatstore really sends, not a copy that could
drift; it also shows how many round trips one call costs (a pool's reset query included).

``explain()`` runs ``EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON)`` twice: with the call's
parameters (the custom plan PostgreSQL uses for a prepared statement's first executions)
and as a prepared statement under ``plan_cache_mode = force_generic_plan`` (the plan it may
switch to from the sixth execution on). Writes run inside a transaction that is rolled back.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import asyncpg.connection

__all__ = [
    "Captured",
    "PlanRecord",
    "capture",
    "explain",
    "plan_path",
    "plan_record",
    "summarize",
]

#: A sequential scan of fewer rows than this is what the planner should pick: not flagged.
_SMALL_TABLE_ROWS = 1_000

_METHODS = ("execute", "executemany", "fetch", "fetchrow", "fetchval")


@dataclass(frozen=True, slots=True)
class Captured:
    method: str
    query: str
    args: tuple[Any, ...]

    @property
    def is_pool_reset(self) -> bool:
        return "RESET ALL" in self.query or "pg_advisory_unlock_all" in self.query


@contextmanager
def capture() -> Iterator[list[Captured]]:
    """Record the statements every asyncpg connection in this process sends meanwhile."""
    seen: list[Captured] = []
    cls = asyncpg.connection.Connection
    originals = {name: getattr(cls, name) for name in _METHODS}

    def wrap(name: str, original: Any) -> Any:
        async def recorded(self: Any, query: str, *args: Any, **kwargs: Any) -> Any:
            seen.append(Captured(name, query, args))
            return await original(self, query, *args, **kwargs)

        return recorded

    try:
        for name, original in originals.items():
            setattr(cls, name, wrap(name, original))
        yield seen
    finally:
        for name, original in originals.items():
            setattr(cls, name, original)


class _Rollback(Exception):
    pass


async def _explain_once(
    conn: asyncpg.Connection, query: str, args: Sequence[Any], *, generic: bool
) -> dict[str, Any]:
    result: dict[str, Any] = {}
    try:
        async with conn.transaction():
            if generic:
                # EXECUTE takes no bind parameters: pass the values as typed literals,
                # rendered by the server from the same binary values the call sent.
                statement = await conn.prepare(query)
                types = [
                    t.name if t.schema == "pg_catalog" else f"{t.schema}.{t.name}"
                    for t in statement.get_parameters()
                ]
                literals = []
                for value, type_name in zip(args, types, strict=True):
                    literal = await conn.fetchval(
                        f"SELECT quote_nullable($1::{type_name}::text)", value
                    )
                    literals.append(f"{literal}::{type_name}")
                name = f"bench_{uuid.uuid4().hex[:12]}"
                await conn.execute(f"PREPARE {name}({', '.join(types)}) AS {query}")
                await conn.execute("SET LOCAL plan_cache_mode = force_generic_plan")
                text = await conn.fetchval(
                    f"EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) EXECUTE {name}({', '.join(literals)})"
                )
                await conn.execute(f"DEALLOCATE {name}")
            else:
                text = await conn.fetchval(
                    f"EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) {query}", *args
                )
            plan = json.loads(text) if isinstance(text, str) else text
            result = dict(plan[0])
            raise _Rollback
    except _Rollback:
        pass
    return result


@dataclass(slots=True)
class PlanRecord:
    """The plans of one hot-path statement, with a one-line summary of each."""

    workload: str
    name: str
    side: str
    query: str
    round_trips_per_call: int | None
    custom: dict[str, Any]
    generic: dict[str, Any]
    summary: str
    generic_summary: str
    same_generic_plan: bool
    warnings: list[str] = field(default_factory=list)


async def explain(
    conn: asyncpg.Connection, query: str, args: Sequence[Any]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """(custom plan, generic plan), each the JSON EXPLAIN ANALYZE output."""
    custom = await _explain_once(conn, query, args, generic=False)
    generic = await _explain_once(conn, query, args, generic=True)
    return custom, generic


def _nodes(node: Mapping[str, Any]) -> Iterator[Mapping[str, Any]]:
    yield node
    for child in node.get("Plans", ()):
        yield from _nodes(child)


def _describe(node: Mapping[str, Any]) -> str:
    text = str(node.get("Node Type", "?"))
    if node.get("Scan Direction") == "Backward":
        text += " Backward"
    if "Index Name" in node:
        text += f" using {node['Index Name']}"
    if "Relation Name" in node and "Index Name" not in node:
        text += f" on {node['Relation Name']}"
    if "CTE Name" in node and node.get("Node Type") == "CTE Scan":
        text += f" {node['CTE Name']}"
    return text


def plan_path(plan: Mapping[str, Any]) -> str:
    """The plan's nodes, outermost first."""
    if not plan:
        return "(no plan)"
    return " > ".join(_describe(node) for node in _nodes(plan["Plan"]))


def summarize(plan: Mapping[str, Any]) -> tuple[str, list[str]]:
    """One line (the nodes, the buffers, the time) and warnings (full scans, sorts)."""
    if not plan:
        return "(no plan)", []
    root = plan["Plan"]
    nodes = list(_nodes(root))
    path = plan_path(plan)
    hit = root.get("Shared Hit Blocks", 0)
    read = root.get("Shared Read Blocks", 0)
    rows = root.get("Actual Rows", 0)
    time_ms = plan.get("Execution Time", 0.0)
    warnings = []
    for node in nodes:
        scanned = node.get("Actual Rows", 0) * node.get("Actual Loops", 1) + node.get(
            "Rows Removed by Filter", 0
        )
        if node.get("Node Type") == "Seq Scan" and scanned > _SMALL_TABLE_ROWS:
            warnings.append(f"sequential scan of {scanned} rows of {node.get('Relation Name')}")
        if (
            node.get("Node Type") in ("Index Scan", "Index Only Scan")
            and node.get("Rows Removed by Filter", 0) > _SMALL_TABLE_ROWS
        ):
            warnings.append(
                f"{node['Node Type']} using {node.get('Index Name')} discards "
                f"{node['Rows Removed by Filter']} rows by filter"
            )
        if node.get("Node Type") in ("Sort", "Incremental Sort"):
            warnings.append("sort (not served in index order)")
    line = f"{path}; rows={rows} buffers hit={hit} read={read}; {time_ms:.3f} ms"
    return line, warnings


async def plan_record(
    conn: asyncpg.Connection,
    *,
    workload: str,
    name: str,
    side: str,
    query: str,
    args: Sequence[Any],
    round_trips_per_call: int | None,
) -> PlanRecord:
    custom, generic = await explain(conn, query, args)
    summary, warnings = summarize(custom)
    generic_summary, generic_warnings = summarize(generic)
    return PlanRecord(
        workload=workload,
        name=name,
        side=side,
        query=" ".join(query.split()),
        round_trips_per_call=round_trips_per_call,
        custom=custom,
        generic=generic,
        summary=summary,
        generic_summary=generic_summary,
        same_generic_plan=plan_path(custom) == plan_path(generic),
        warnings=sorted(set(warnings + [f"generic plan: {w}" for w in generic_warnings])),
    )
