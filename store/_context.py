"""get_context: the part of a conversation that fits a model's context window.

The rules (the contract's):

- With a summary, only messages after ``summary_up_to_seq`` are candidates, and the summary's
  tokens count against the budget. A summary that does not fit on its own is left out, and
  with it everything (nothing returned can be read without it).
- ``messages`` is the longest suffix of the candidates that fits and starts at a turn: a
  ``user`` message, or the first candidate. A tool message never comes without the assistant
  message whose tool_calls it answers (so neither can a suffix start at one); an assistant
  message's answers come after it, so a suffix always holds them.
- If not even the latest turn fits, the suffix may start inside it, never at a tool message;
  if not even the last message fits, nothing is returned.
- With ``keep_system``, system messages older than the cut are kept too, first, oldest first,
  in the budget the suffix left over, as long as they fit (the first that does not fit ends
  them); those a summary covers included (the instructions the rest depends on are rarely
  in a summary), though they are not candidates.

Cost: one statement (the backend's ``context_window``) reads back from the last message through
the (conversation_id, seq) index with a running token sum, as many rows as the budget holds at
the conversation's tokens per message (twice over), and returns those up to the first that
passes the budget: no earlier start could fit. The same statement reads the older system
messages through a partial index. When the walk stops short (the latest messages are larger
than the average), it reads on here, a page at a time. What is read grows with what is
returned, never with the conversation's length.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any, Protocol
from uuid import UUID

from store._budget import message_bytes
from store._pydantic import trusted
from store.backends.base import Backend, ContextWindow, SummaryEnd, Window
from store.errors import InvalidArgument, NotFound
from store.schemas import Context, Message

__all__ = ["Candidate", "build_context", "check_summary_end", "choose_start"]

#: Older system messages read with the window (more are asked for only while all fit).
_SYSTEMS = 64
#: The most messages one read of the walk takes.
_READS = 4096


class Candidate(Protocol):
    """What the choice of a cut reads of a message (``store.schemas.Message`` has it)."""

    @property
    def role(self) -> str: ...
    @property
    def token_count(self) -> int: ...
    @property
    def tool_call_id(self) -> str | None: ...
    @property
    def tool_calls(self) -> list[dict[str, Any]] | None: ...


def check_summary_end(seq: int, end: SummaryEnd) -> None:
    """Refuse a summary ending at ``seq`` that get_context could not honour: beyond the
    conversation, or separating tool results from the call they answer (the message after it
    is a tool message, or it is the last message and an assistant one whose calls have no
    results yet)."""
    if seq > end.last_seq:
        raise InvalidArgument(f"summary_up_to_seq must lie in 0 … last_seq ({end.last_seq})")
    if end.next_role == "tool":
        raise InvalidArgument(
            f"the message after summary_up_to_seq (seq {seq + 1}) is a tool message; end the "
            "summary before the assistant message that made the call"
        )
    if seq == end.last_seq and end.ending_role == "assistant" and end.ending_calls:
        raise InvalidArgument(
            f"message {seq} made tool calls whose results are not stored yet; end the summary "
            "before it, or once its results are in"
        )


def choose_start(
    rows: Sequence[Candidate],
    *,
    complete: bool,
    budget: int,
    weights: Sequence[int] | None = None,
    max_bytes: int | None = None,
) -> int | None:
    """Where the returned suffix of ``rows`` (ascending seq) starts, or None for no message.

    ``rows`` are the latest candidates; ``complete`` says whether they are all of them (the
    first is then the first candidate). The caller walks back until the running sum of tokens
    exceeds ``budget`` or the candidates run out, so no start before ``rows`` could fit. With
    ``max_bytes``, the suffix also ends (its newest message aside) where the rows' reply
    weights (``weights``) would pass it: the reply budget, for messages counted as 0 tokens.
    """
    # One pass backwards from the end, while the suffix fits. A start is legal when it is
    # not a tool message and every tool message from it on has, at or after it, the
    # assistant message whose tool_calls hold its tool_call_id: going backwards, a tool
    # message waits for its call until an assistant message making that call is passed.
    waiting: dict[object, int] = {}
    unanswered = 0
    best = fallback = latest_turn = None
    total = size = 0
    for index in range(len(rows) - 1, -1, -1):
        row = rows[index]
        total += row.token_count
        if total > budget:
            break
        if weights is not None and max_bytes is not None:
            size += weights[index]
            if size > max_bytes and index < len(rows) - 1:
                break
        role = row.role
        if role == "tool":
            waiting[row.tool_call_id] = waiting.get(row.tool_call_id, 0) + 1
            unanswered += 1
            continue
        if waiting and row.tool_calls:
            for call in row.tool_calls:
                unanswered -= waiting.pop(call.get("id"), 0)
        legal = unanswered == 0
        turn = role == "user" or (index == 0 and complete)
        if latest_turn is None:
            # Still inside the latest turn: where a suffix may start when no turn fits.
            fallback = index if legal else fallback
            latest_turn = index if turn else None
        if legal and turn:
            best = index
    return best if best is not None else fallback


async def build_context(
    db: Backend,
    *,
    user: str,
    conversation_id: UUID,
    max_tokens: int,
    keep_system: bool,
    max_bytes: int,
) -> Context:
    """The context for ``max_tokens``, its messages also within ``max_bytes`` of reply (a
    conversation of messages a caller counted as 0 tokens would otherwise come whole)."""
    window = await db.context_window(
        user=user,
        conversation_id=conversation_id,
        max_tokens=max_tokens,
        keep_system=keep_system,
        systems=_SYSTEMS,
        reads=_READS,
    )
    if window is None:
        raise NotFound("no conversation with that id")
    bound = window.summary_up_to_seq or 0
    candidates = window.last_seq - bound
    budget = max_tokens - (window.summary_tokens if window.summary is not None else 0)
    if budget < 0:
        return _context(conversation_id, None, [], candidates)  # the summary alone is too big
    if _short(window, budget, candidates, max_bytes):
        window = await _read_on(
            db, user, conversation_id, window, budget, candidates, keep_system, max_bytes
        )
    rows = window.recent[::-1]
    weights = [message_bytes(m) for m in rows]
    start = choose_start(
        rows,
        complete=len(rows) >= candidates,
        budget=budget,
        weights=weights,
        max_bytes=max_bytes,
    )
    if start is None:
        return _context(conversation_id, window, [], candidates)
    suffix = rows[start:]
    kept: list[Message] = []
    if keep_system:
        left = budget - sum(m.token_count for m in suffix)
        kept = await _kept_systems(db, user, conversation_id, window, rows[:start], left)
    return _context(conversation_id, window, kept + suffix, candidates)


def _short(window: ContextWindow, budget: int, candidates: int, max_bytes: int) -> bool:
    """Whether the walk stopped before the budgets and before the first candidate."""
    walked = window.recent
    return (
        len(walked) < candidates
        and sum(m.token_count for m in walked) <= budget
        and sum(message_bytes(m) for m in walked) <= max_bytes
    )


async def _read_on(
    db: Backend,
    user: str,
    conversation_id: UUID,
    window: ContextWindow,
    budget: int,
    candidates: int,
    keep_system: bool,
    max_bytes: int,
) -> ContextWindow:
    """Walk further back, a page at a time (pages double), until a budget is passed or the
    candidates run out; the older system messages are then those before the new window."""
    bound = window.summary_up_to_seq or 0
    recent, count = list(window.recent), max(len(window.recent), 16)
    total = sum(m.token_count for m in recent)
    size = sum(message_bytes(m) for m in recent)
    while total <= budget and size <= max_bytes and len(recent) < candidates:
        count = min(count * 2, _READS)
        below = recent[-1].seq if recent else window.last_seq + 1
        page = await db.message_page(
            user=user, conversation_id=conversation_id, window=Window(count, before_seq=below)
        )
        page = [m for m in page if m.seq > bound]
        if not page:
            if not await db.conversation_exists(user=user, conversation_id=conversation_id):
                raise NotFound("no conversation with that id")  # deleted meanwhile
            break
        for message in page:
            if total > budget or size > max_bytes:
                break
            recent.append(message)
            total += message.token_count
            size += message_bytes(message)
    older: list[Message] = []
    if keep_system:
        older = await db.system_messages(
            user=user,
            conversation_id=conversation_id,
            above=0,
            below=recent[-1].seq if recent else window.last_seq + 1,
            count=_SYSTEMS,
        )
    return replace(window, recent=recent, older_systems=older)


async def _kept_systems(
    db: Backend,
    user: str,
    conversation_id: UUID,
    window: ContextWindow,
    before_cut: list[Message],
    left: int,
) -> list[Message]:
    """The system messages older than the cut that fit in ``left``, oldest first, up to the
    first that does not fit: those before the walked window (asked for more while all of
    them fit), then those inside it."""
    kept: list[Message] = []
    older = window.older_systems
    while True:
        for message in older:
            if message.token_count > left:
                return kept
            left -= message.token_count
            kept.append(message)
        if len(older) < _SYSTEMS:
            break
        older = await db.system_messages(
            user=user,
            conversation_id=conversation_id,
            above=older[-1].seq,
            below=window.recent[-1].seq,
            count=_SYSTEMS,
        )
    for message in before_cut:
        if message.role != "system":
            continue
        if message.token_count > left:
            break
        left -= message.token_count
        kept.append(message)
    return kept


def _context(
    conversation_id: UUID, head: ContextWindow | None, messages: list[Message], candidates: int
) -> Context:
    """The result: ``head``'s summary (``head`` None: the summary was left out), the
    ``messages``, and the totals."""
    summary = up_to = None
    tokens = sum(message.token_count for message in messages)
    if head is not None and head.summary is not None:
        summary, up_to = head.summary, head.summary_up_to_seq
        tokens += head.summary_tokens
    return trusted(
        Context,
        {
            "conversation_id": conversation_id,
            "summary": summary,
            "summary_up_to_seq": up_to,
            "messages": messages,
            "token_count": tokens,
            "truncated": head is None or len(messages) < candidates,
        },
    )
