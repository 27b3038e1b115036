"""The workloads: one module each, listed here in the order they run.

A workload module ``w<N>_<slug>.py`` defines ``WORKLOAD = Workload("W<N>", "…", run)``
where ``run(ctx)`` measures chatstore against its floor (or base) and returns a
``WorkloadResult``. To add one, write ``bench/workloads/w10_<slug>.py`` and append its
``WORKLOAD`` to ``WORKLOADS`` below. ``ctx.store_url`` is the migrated database a server
process can be pointed at (``CHATSTORE_DATABASE_URL``); ``tests.support`` starts such
processes and ``bench.servers`` holds the benchmark's side of them (W6, W7).
"""

from __future__ import annotations

from bench.workloads._workload import Workload
from bench.workloads.w1_append import WORKLOAD as W1
from bench.workloads.w2_read import WORKLOAD as W2
from bench.workloads.w3_scale import WORKLOAD as W3
from bench.workloads.w4_concurrent import WORKLOAD as W4
from bench.workloads.w5_conversations import WORKLOAD as W5
from bench.workloads.w6_mcp import WORKLOAD as W6
from bench.workloads.w7_http_load import WORKLOAD as W7
from bench.workloads.w8_context import WORKLOAD as W8
from bench.workloads.w9_batch import WORKLOAD as W9
from bench.workloads.w10_search_fork import WORKLOAD as W10
from bench.workloads.w11_agents_sessions import WORKLOAD as W11
from bench.workloads.w12_prune import WORKLOAD as W12
from bench.workloads.w13_export_import import WORKLOAD as W13

__all__ = ["WORKLOADS", "Workload"]

#: Every workload, in the order a pass runs them.
WORKLOADS: tuple[Workload, ...] = (W1, W2, W3, W4, W5, W6, W7, W8, W9, W10, W11, W12, W13)
