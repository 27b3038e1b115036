"""get_context's rules written out the slow, obvious way, to check the store against.

``expected_context`` tries every start over the whole conversation (no walk, no pages), straight
from the contract's wording, so it shares nothing with ``store._context`` but the rules.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Msg:
    seq: int
    role: str
    tokens: int
    tool_call_id: str | None = None
    call_ids: tuple[str, ...] = field(default_factory=tuple)


@dataclass(frozen=True)
class Expected:
    summary_returned: bool
    seqs: list[int]
    token_count: int
    truncated: bool


def _answered(messages: Sequence[Msg]) -> bool:
    """Every tool message has, before it in ``messages``, an assistant that made its call."""
    for index, message in enumerate(messages):
        if message.role == "tool" and not any(
            earlier.role == "assistant" and message.tool_call_id in earlier.call_ids
            for earlier in messages[:index]
        ):
            return False
    return True


def expected_context(
    messages: Sequence[Msg],
    *,
    max_tokens: int,
    keep_system: bool = True,
    summary_tokens: int | None = None,
    summary_up_to_seq: int | None = None,
) -> Expected:
    """What get_context must return (``summary_tokens`` None: no summary)."""
    has_summary = summary_tokens is not None
    candidates = [m for m in messages if m.seq > (summary_up_to_seq or 0)]
    budget = max_tokens - (summary_tokens or 0)
    if budget < 0:
        return Expected(False, [], 0, True)
    n = len(candidates)

    def fits(start: int) -> bool:
        return sum(m.tokens for m in candidates[start:]) <= budget

    def legal(start: int) -> bool:
        return candidates[start].role != "tool" and _answered(candidates[start:])

    turns = [i for i in range(n) if candidates[i].role == "user" or i == 0]
    start = next((i for i in turns if legal(i) and fits(i)), None)
    if start is None and turns:
        start = next((i for i in range(turns[-1], n) if legal(i) and fits(i)), None)
    base = summary_tokens or 0
    if start is None:
        return Expected(has_summary, [], base, n > 0)
    suffix = candidates[start:]
    left = budget - sum(m.tokens for m in suffix)
    kept: list[Msg] = []
    if keep_system:
        # System messages older than the cut, those a summary covers included.
        cut = suffix[0].seq
        for message in (m for m in messages if m.seq < cut):
            if message.role != "system":
                continue
            if message.tokens > left:
                break
            left -= message.tokens
            kept.append(message)
    returned = kept + suffix
    return Expected(
        has_summary,
        [m.seq for m in returned],
        base + sum(m.tokens for m in returned),
        len(returned) < n,
    )
