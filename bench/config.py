"""Run profiles: how many repetitions each workload takes, and how long it may run.

``full`` follows the workload definitions in ``bench/README.md`` and stays under ~10 minutes
on a 2-core machine (plus a one-off build of the large W3 dataset). ``quick`` keeps every
workload's shape but cuts repetitions, to finish in under a minute; it runs W3 only when
the large dataset already exists.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, replace
from typing import Any

__all__ = ["DEFAULT_LARGE_DB", "DEFAULT_SERVER_URL", "FULL", "PROFILES", "QUICK", "Profile"]

DEFAULT_SERVER_URL = "postgres://postgres@127.0.0.1:5432"
DEFAULT_LARGE_DB = "chatstore_bench_large"

#: Environment overrides (a flag wins over the environment).
ENV_SERVER_URL = "CHATSTORE_BENCH_POSTGRES_URL"
ENV_LARGE_DB = "CHATSTORE_BENCH_LARGE_DB"


@dataclass(frozen=True, slots=True)
class Profile:
    name: str
    # W1: sequential appends to one conversation.
    w1_appends: int
    w1_warmup: int
    # W2: the latest page of a long conversation.
    w2_messages: int
    w2_page: int
    w2_reads: int
    # W3: the same read, and a deep page, in a store of >= 1M messages.
    w3_reads: int
    w3_deep: int
    build_large: bool
    # W4: concurrent appenders into one conversation.
    w4_workers: int
    w4_per_worker: int
    w4_rounds: int
    # W5: list_conversations, first page and a deep page.
    w5_conversations: int
    w5_page: int
    w5_page_number: int
    w5_reads: int
    # W8: get_context on a long conversation and on the 1M store's deepest one.
    w8_budget: int
    w8_reads: int
    # W9: batch appends.
    w9_batch: int
    w9_batches: int
    # W10: search in the 1M store (a user of 100k messages), and forks of W2's conversation.
    w10_reads: int
    w10_forks: int
    # W11: the Agents SDK adapter against the SDK's own sessions.
    w11_items: int
    w11_adds: int
    w11_reads: int
    w11_writers: int
    w11_per_writer: int
    # W12: prunes of 100,000 messages, each beside a writer.
    w12_rounds: int
    # W6: MCP round trips (in-process, stdio, streamable HTTP) against the bare store call.
    w6_messages: int
    w6_page: int
    w6_reads: int
    w6_appends: int
    w6_warmup: int
    # W7: HTTP load, several server processes on one database.
    w7_servers: int
    w7_clients: int
    w7_seconds: float
    w7_append_share: float
    w7_users: int
    w7_conversations_per_user: int
    w7_seed_messages: int
    # Shared.
    repeats: int
    read_warmup: int
    budget_s: float

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


FULL = Profile(
    name="full",
    w1_appends=2_000,
    w1_warmup=100,
    w2_messages=5_000,
    w2_page=50,
    w2_reads=500,
    w3_reads=500,
    w3_deep=500_000,
    build_large=True,
    w4_workers=8,
    w4_per_worker=250,
    w4_rounds=5,
    w5_conversations=10_000,
    w5_page=20,
    w5_page_number=100,
    w5_reads=500,
    w6_messages=1_000,
    w6_page=50,
    w6_reads=200,
    w6_appends=200,
    w6_warmup=30,
    w7_servers=2,
    w7_clients=16,
    w7_seconds=60.0,
    w7_append_share=0.3,
    w7_users=4,
    w7_conversations_per_user=2,
    w7_seed_messages=100,
    w8_budget=8_000,
    w8_reads=500,
    w9_batch=25,
    w9_batches=400,
    w10_reads=100,
    w10_forks=40,
    w11_items=5_000,
    w11_adds=300,
    w11_reads=200,
    w11_writers=8,
    w11_per_writer=50,
    w12_rounds=5,
    repeats=5,
    read_warmup=50,
    budget_s=90.0,
)

# The same workloads, smaller: only what differs from FULL.
QUICK = replace(
    FULL,
    name="quick",
    w1_appends=300,
    w1_warmup=30,
    w2_reads=200,
    w3_reads=150,
    build_large=False,
    w4_per_worker=60,
    w4_rounds=3,
    w5_reads=200,
    w6_reads=40,
    w6_appends=40,
    w6_warmup=10,
    w7_seconds=5.0,
    w8_reads=150,
    w9_batches=80,
    w10_reads=25,
    w10_forks=10,
    w11_adds=60,
    w11_reads=40,
    w11_per_writer=20,
    w12_rounds=2,
    repeats=1,
    read_warmup=20,
    budget_s=10.0,
)

PROFILES = {profile.name: profile for profile in (FULL, QUICK)}


def default_server_url() -> str:
    return os.environ.get(ENV_SERVER_URL, DEFAULT_SERVER_URL).rstrip("/")


def default_large_db() -> str:
    return os.environ.get(ENV_LARGE_DB, DEFAULT_LARGE_DB)
