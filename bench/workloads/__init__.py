"""The workloads: one module each, discovered by file name.

A module named ``w<N>_<slug>.py`` in this package that defines ``WORKLOAD`` (a
``Workload``) is picked up and run in order of ``N``. To add one, write
``bench/workloads/w8_<slug>.py`` with ``WORKLOAD = Workload("W8", "…", run)`` where
``run(ctx)`` measures chatstore against its floor (or base) and returns a ``WorkloadResult``;
nothing else needs to change. ``ctx.store_url`` is the migrated database a server process can
be pointed at (``CHATSTORE_DATABASE_URL``); ``bench.servers`` starts such processes (W6, W7).
"""

from __future__ import annotations

import importlib
import pkgutil
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from bench.context import BenchContext
from bench.report import WorkloadResult

__all__ = ["Workload", "discover"]

_MODULE = re.compile(r"^w(\d+)_\w+$")


@dataclass(frozen=True, slots=True)
class Workload:
    id: str
    title: str
    run: Callable[[BenchContext], Awaitable[WorkloadResult]]
    #: Run in the first pass only (a long load test is its own repetition: W7).
    once: bool = False
    #: Extra lines printed under the table from the (combined) result, e.g. p99s and CPU.
    describe: Callable[[WorkloadResult], list[str]] | None = None


def discover() -> list[Workload]:
    """Every workload module in this package, in workload-number order."""
    found: list[tuple[int, Workload]] = []
    for info in pkgutil.iter_modules(__path__):
        match = _MODULE.match(info.name)
        if not match:
            continue
        module = importlib.import_module(f"{__name__}.{info.name}")
        workload = getattr(module, "WORKLOAD", None)
        if not isinstance(workload, Workload):
            raise TypeError(f"{module.__name__} does not define WORKLOAD = Workload(...)")
        found.append((int(match.group(1)), workload))
    return [workload for _, workload in sorted(found, key=lambda item: item[0])]
