"""Timing primitives: interleaved sampling, summary statistics, chatstore/floor ratios.

Noise on a shared machine comes in bursts lasting milliseconds to seconds. Running all of
chatstore's repetitions and then all of the floor's would let a burst land on one side
only, so every measurement here *interleaves* the variants operation by operation, in an
order that alternates who goes first (A B, B A, B A, A B, …): a burst hits both sides
alike, and the ratio of the two medians cancels it. The samples are also cut into a few
contiguous rounds; the spread of the per-round ratios shows how stable a figure is.
"""

from __future__ import annotations

import gc
import math
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

__all__ = [
    "CHATSTORE",
    "FLOOR",
    "Figure",
    "Op",
    "Sampling",
    "Stats",
    "Target",
    "compare",
    "derived",
    "interleave",
    "percentile",
    "round_ratios",
]

#: The variant names every comparison uses.
CHATSTORE = "chatstore"
FLOOR = "floor"

Op = Callable[[], Awaitable[object]]

_NS_PER_MS = 1_000_000


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0-100) with linear interpolation between closest ranks."""
    if not values:
        return math.nan
    ordered = sorted(values)
    position = (len(ordered) - 1) * q / 100
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


@dataclass(frozen=True, slots=True)
class Stats:
    """Summary of one variant's samples, in the figure's unit (ms, or msg/s)."""

    n: int
    median: float
    p99: float
    mean: float
    min: float
    max: float

    @classmethod
    def of(cls, values: Sequence[float]) -> Stats:
        if not values:
            return cls(0, math.nan, math.nan, math.nan, math.nan, math.nan)
        return cls(
            n=len(values),
            median=percentile(values, 50),
            p99=percentile(values, 99),
            mean=sum(values) / len(values),
            min=min(values),
            max=max(values),
        )


@dataclass(frozen=True, slots=True)
class Target:
    """A bound on a ratio: ``ratio <= value`` (costs) or ``ratio >= value`` (throughput).

    With a ``unit`` it is an absolute bound instead, on the numerator's own ``stat``
    ("median" or "p99", in that unit): W6's "stdio p50 ≤ 3 ms", W7's "≥ 500 calls/s".
    Absolute bounds are for figures that have no floor to divide by; on a shared machine
    they move with the machine's load, which the table's spread column shows.
    """

    op: Literal["<=", ">="]
    value: float
    unit: str | None = None
    stat: Literal["median", "p99"] = "median"

    def met(self, value: float) -> bool:
        if math.isnan(value):
            return False
        return value <= self.value if self.op == "<=" else value >= self.value

    def measured(self, figure: Figure) -> float:
        """The number this target bounds: the figure's ratio, or its own median/p99."""
        if self.unit is None:
            return figure.ratio
        stats = figure.numerator
        return math.nan if stats is None else float(getattr(stats, self.stat))

    def __str__(self) -> str:
        sign = "≤" if self.op == "<=" else "≥"
        if self.unit is None:
            return f"{sign} {self.value:.2f}x"
        stat = "p50 " if self.stat == "median" and self.unit == "ms" else ""
        stat = "p99 " if self.stat == "p99" else stat
        return f"{stat}{sign} {self.value:g} {self.unit}"


@dataclass(slots=True)
class Sampling:
    """Raw samples per variant, in nanoseconds, in the order they were taken."""

    samples_ns: dict[str, list[int]]
    warmup: int
    requested: int
    elapsed_s: float
    truncated: bool

    def ms(self, name: str) -> list[float]:
        return [value / _NS_PER_MS for value in self.samples_ns[name]]


def _order(names: Sequence[str], index: int) -> list[str]:
    """Rotate the variants by ``index`` and reverse every other cycle, so each variant
    runs first, last and after each other one equally often."""
    k = index % len(names)
    order = [*names[k:], *names[:k]]
    if (index // len(names)) % 2:
        order.reverse()
    return order


async def interleave(
    ops: Mapping[str, Op],
    *,
    repetitions: int,
    warmup: int,
    budget_s: float,
) -> Sampling:
    """Time each op ``repetitions`` times, interleaved, after ``warmup`` untimed rounds.

    Stops early (``truncated``) once ``budget_s`` seconds of timed work have passed, so a
    pathologically slow variant cannot hold the whole run hostage.
    """
    names = list(ops)
    for index in range(warmup):
        for name in _order(names, index):
            await ops[name]()
    samples: dict[str, list[int]] = {name: [] for name in names}
    gc.collect()
    clock = time.perf_counter_ns
    started = time.perf_counter()
    truncated = False
    for index in range(repetitions):
        for name in _order(names, index):
            op = ops[name]
            before = clock()
            await op()
            samples[name].append(clock() - before)
        if time.perf_counter() - started > budget_s and index + 1 < repetitions:
            truncated = True
            break
    return Sampling(
        samples_ns=samples,
        warmup=warmup,
        requested=repetitions,
        elapsed_s=time.perf_counter() - started,
        truncated=truncated,
    )


def round_ratios(
    numerator: Sequence[float], denominator: Sequence[float], rounds: int = 5
) -> list[float]:
    """Median ratio within each of ``rounds`` contiguous slices of paired samples."""
    size = min(len(numerator), len(denominator))
    if size < rounds * 5:
        rounds = max(1, size // 5)
    ratios: list[float] = []
    for r in range(rounds):
        lo, hi = r * size // rounds, (r + 1) * size // rounds
        den = percentile(denominator[lo:hi], 50)
        ratios.append(percentile(numerator[lo:hi], 50) / den if den else math.nan)
    return ratios


@dataclass(slots=True)
class Figure:
    """One row of the results table: a ratio, what it divides, and the target it answers."""

    workload: str
    key: str
    label: str
    unit: str
    ratio: float
    basis: str
    numerator_name: str = CHATSTORE
    denominator_name: str = FLOOR
    numerator: Stats | None = None
    denominator: Stats | None = None
    ratio_p99: float | None = None
    round_ratios: list[float] = field(default_factory=list)
    target: Target | None = None
    met: bool | None = None
    truncated: bool = False
    notes: list[str] = field(default_factory=list)
    #: For figures without a ratio (absolute throughput, say): the figure's value in each
    #: contiguous slice of the run, shown as the spread instead of per-round ratios.
    slice_values: list[float] = field(default_factory=list)
    #: False: kept in the JSON and the workload's details, left out of the main table.
    in_table: bool = True

    def __post_init__(self) -> None:
        if self.target is not None and self.met is None:
            self.met = self.target.met(self.target.measured(self))


def compare(
    workload: str,
    key: str,
    label: str,
    sampling: Sampling,
    *,
    numerator: str = CHATSTORE,
    denominator: str = FLOOR,
    target: Target | None = None,
) -> Figure:
    """Latency figure: ``numerator`` over ``denominator``, ratio of medians (and of p99s)."""
    num, den = sampling.ms(numerator), sampling.ms(denominator)
    a, b = Stats.of(num), Stats.of(den)
    return Figure(
        workload=workload,
        key=key,
        label=label,
        unit="ms",
        ratio=a.median / b.median if b.median else math.nan,
        ratio_p99=a.p99 / b.p99 if b.p99 else math.nan,
        basis=f"median {numerator} / median {denominator}, same run, interleaved",
        numerator_name=numerator,
        denominator_name=denominator,
        numerator=a,
        denominator=b,
        round_ratios=round_ratios(num, den),
        target=target,
        truncated=sampling.truncated,
    )


def derived(
    workload: str,
    key: str,
    label: str,
    sampling: Sampling,
    *,
    numerator: str,
    denominator: str,
    target: Target | None = None,
    basis: str | None = None,
) -> Figure:
    """A ratio between two variants of the same side (growth, depth), same interleaved run."""
    figure = compare(
        workload,
        key,
        label,
        sampling,
        numerator=numerator,
        denominator=denominator,
        target=target,
    )
    if basis is not None:
        figure.basis = basis
    return figure
