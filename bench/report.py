"""Results: one ``WorkloadResult`` per workload, printed as a table and written as JSON."""

from __future__ import annotations

import dataclasses
import json
import math
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

from bench.explain import PlanRecord
from bench.harness import Figure, Stats, percentile

__all__ = ["RESULTS_DIR", "WorkloadResult", "format_plans", "format_table", "to_jsonable", "write"]

RESULTS_DIR = Path(__file__).resolve().parent / "results"

Status = Literal["ok", "skipped", "failed"]


@dataclass(slots=True)
class WorkloadResult:
    id: str
    title: str
    status: Status = "ok"
    figures: list[Figure] = field(default_factory=list)
    plans: list[PlanRecord] = field(default_factory=list)
    checks: dict[str, Any] = field(default_factory=dict)
    parameters: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    elapsed_s: float = 0.0

    @property
    def met(self) -> bool | None:
        verdicts = [f.met for f in self.figures if f.target is not None]
        if self.status != "ok" or not verdicts:
            return None
        return all(verdicts) and self.checks.get("passed", True) is not False


def _median(values: Sequence[float]) -> float:
    return percentile([v for v in values if not math.isnan(v)], 50)


def _combine_stats(stats: Sequence[Stats | None]) -> Stats | None:
    present = [s for s in stats if s is not None]
    if not present:
        return None
    return Stats(
        n=sum(s.n for s in present),
        median=_median([s.median for s in present]),
        p99=_median([s.p99 for s in present]),
        mean=_median([s.mean for s in present]),
        min=min(s.min for s in present),
        max=max(s.max for s in present),
    )


def _combine_figures(figures: Sequence[Figure]) -> Figure:
    first = figures[0]
    if len(figures) == 1:
        return first
    ratios = [f.ratio for f in figures]
    p99s = [f.ratio_p99 for f in figures if f.ratio_p99 is not None]
    return dataclasses.replace(
        first,
        ratio=_median(ratios),
        ratio_p99=_median(p99s) if p99s else None,
        numerator=_combine_stats([f.numerator for f in figures]),
        denominator=_combine_stats([f.denominator for f in figures]),
        round_ratios=[] if first.slice_values else ratios,
        slice_values=(
            [f.numerator.median for f in figures if f.numerator is not None]
            if first.slice_values
            else []
        ),
        basis=f"{first.basis}; median of {len(figures)} passes",
        met=None,
        truncated=any(f.truncated for f in figures),
        notes=[note for f in figures for note in f.notes],
    )


def combine(passes: Sequence[Sequence[WorkloadResult]]) -> list[WorkloadResult]:
    """One result per workload from several passes: the median ratio of the passes, the
    pass-to-pass spread, correctness passed only if it passed every time.

    A workload that runs once per run (W7) appears in the first pass only."""
    if len(passes) == 1:
        return list(passes[0])
    combined: list[WorkloadResult] = []
    for first in passes[0]:
        runs = [r for p in passes for r in p if r.id == first.id]
        if len(runs) == 1:
            combined.append(first)
            continue
        ok = [r for r in runs if r.status == "ok"]
        if not ok:
            combined.append(runs[-1])
            continue
        figures = [
            _combine_figures([f for r in ok for f in r.figures if f.key == figure.key])
            for figure in ok[0].figures
        ]
        checks: dict[str, Any] = dict(ok[0].checks)
        if any("passed" in r.checks for r in ok):
            checks["passed"] = all(r.checks.get("passed", True) is not False for r in ok)
        checks["passes"] = len(ok)
        combined.append(
            WorkloadResult(
                id=first.id,
                title=first.title,
                status="ok" if len(ok) == len(runs) else "failed",
                figures=figures,
                plans=ok[0].plans,
                checks=checks,
                parameters={**ok[0].parameters, "passes": len(runs)},
                notes=[note for r in runs for note in r.notes],
                elapsed_s=sum(r.elapsed_s for r in runs),
            )
        )
    return combined


def to_jsonable(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: to_jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [to_jsonable(v) for v in value]
    if isinstance(value, float):
        return None if math.isnan(value) or math.isinf(value) else round(value, 6)
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, Path):
        return str(value)
    return value


def write(document: dict[str, Any], path: Path, *, stamp: str) -> list[Path]:
    """Write ``path`` and a copy named ``<stamp>.json`` next to it; returns both paths."""
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(to_jsonable(document), indent=2, ensure_ascii=False) + "\n"
    path.write_text(text)
    copy = path.parent / f"{stamp}.json"
    copy.write_text(text)
    return [path, copy]


def _value(value: float, unit: str) -> str:
    if math.isnan(value):
        return "-"
    if unit == "ms":
        return f"{value:.3f} ms"
    return f"{value:,.0f} {unit}"


def _ratio(value: float | None) -> str:
    if value is None or math.isnan(value):
        return "-"
    return f"{value:.2f}x"


def _spread(figure: Figure) -> str:
    if figure.round_ratios:
        return f"{min(figure.round_ratios):.2f}-{max(figure.round_ratios):.2f}"
    values = [v for v in figure.slice_values if not math.isnan(v)]
    if not values:
        return "-"
    if figure.unit == "ms":
        return f"{min(values):.3f}-{max(values):.3f}"
    return f"{min(values):,.0f}-{max(values):,.0f}"


def _verdict(figure: Figure) -> str:
    if figure.target is None:
        return "info"
    return "MET" if figure.met else "MISSED"


def format_table(results: Sequence[WorkloadResult]) -> str:
    """The results table (plain text; also valid Markdown)."""
    header = (
        "workload",
        "figure",
        "chatstore",
        "floor (or base)",
        "ratio (median)",
        "p99 ratio",
        "round spread",
        "target",
        "verdict",
    )
    rows: list[tuple[str, ...]] = []
    for result in results:
        if result.status != "ok":
            reason = result.notes[-1] if result.notes else ""
            rows.append(
                (
                    result.id,
                    f"{result.title}: {result.status.upper()} {reason}",
                )
                + ("",) * 7
            )
            continue
        for figure in result.figures:
            if not figure.in_table:
                continue
            num = figure.numerator
            den = figure.denominator
            spread = _spread(figure)
            label = figure.label + (" (truncated)" if figure.truncated else "")
            value = _value(num.median, figure.unit) if num else "-"
            if num is not None and den is None and figure.unit == "ms":
                # an absolute latency (no base to divide by): both ends of the distribution
                value = f"p50 {num.median:.2f} / p99 {num.p99:.2f} ms"
            rows.append(
                (
                    figure.workload,
                    label,
                    value,
                    _value(den.median, figure.unit) if den else "-",
                    _ratio(figure.ratio),
                    _ratio(figure.ratio_p99),
                    spread,
                    str(figure.target) if figure.target else "-",
                    _verdict(figure),
                )
            )
        if result.checks:
            passed = result.checks.get("passed")
            if passed is not None:
                rows.append(
                    (
                        result.id,
                        "correctness: " + str(result.checks.get("summary", "")),
                        "",
                        "",
                        "",
                        "",
                        "",
                        "all pass",
                        "MET" if passed else "MISSED",
                    )
                )
    widths = [max(len(str(row[i])) for row in [header, *rows]) for i in range(len(header))]
    lines = [
        "| " + " | ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)) + " |",
        "|" + "|".join("-" * (w + 2) for w in widths) + "|",
    ]
    for row in rows:
        lines.append(
            "| " + " | ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)) + " |"
        )
    return "\n".join(lines)


def _plan_cache_line(result: WorkloadResult) -> str | None:
    cache = result.parameters.get("floor_plan_cache")
    if not cache:
        return None
    if "generic" in cache:
        cache = {"read": cache}
    parts = [
        f"{name}: {'custom (re-planned every call)' if not c['generic'] else 'generic'}"
        for name, c in cache.items()
        if c
    ]
    return f"{result.id} plan cache after the run: " + ", ".join(parts)


def format_plans(results: Sequence[WorkloadResult]) -> str:
    lines = []
    for result in results:
        cache_line = _plan_cache_line(result)
        if cache_line:
            lines.append(cache_line)
        for plan in result.plans:
            trips = ""
            if plan.round_trips_per_call is not None:
                trips = f" [{plan.round_trips_per_call} round trip(s) per call]"
            lines.append(f"{plan.workload} {plan.name} ({plan.side}){trips}")
            lines.append(f"    custom:  {plan.summary}")
            if plan.same_generic_plan:
                lines.append("    generic: same nodes")
            else:
                lines.append(f"    generic: {plan.generic_summary}")
            for warning in plan.warnings:
                lines.append(f"    WARNING: {warning}")
    return "\n".join(lines)
