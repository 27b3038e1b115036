"""``Workload``: what a workload module exports as ``WORKLOAD`` (see ``bench.workloads``)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from bench.context import BenchContext
from bench.report import WorkloadResult

__all__ = ["Workload"]


@dataclass(frozen=True, slots=True)
class Workload:
    id: str
    title: str
    run: Callable[[BenchContext], Awaitable[WorkloadResult]]
    #: Run in the first pass only (a long load test is its own repetition: W7).
    once: bool = False
    #: Extra lines printed under the table from the (combined) result, e.g. p99s and CPU.
    describe: Callable[[WorkloadResult], list[str]] | None = None
