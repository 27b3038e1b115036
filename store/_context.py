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
  them).

Cost: the walk reads the candidates backwards through the (conversation_id, seq) index, a
page at a time, only seq/role/token_count/tool-call ids, and stops once the running sum
exceeds the budget (no earlier start could fit); then the chosen messages are read whole.
What is read grows with what is returned, never with the conversation's length.
"""

from __future__ import annotations

from collections.abc import Sequence
from uuid import UUID

from store._pydantic import trusted
from store.backends.base import Backend, Brief, ContextHead
from store.errors import NotFound
from store.schemas import Context, Message

__all__ = ["build_context", "choose_start"]

#: Rows in the first backwards page, and the most in any page (pages double up to it).
_FIRST_PAGE = 64
_MAX_PAGE = 4096


def choose_start(rows: Sequence[Brief], *, complete: bool, budget: int) -> int | None:
    """Where the returned suffix of ``rows`` (ascending seq) starts, or None for no message.

    ``rows`` are the latest candidates; ``complete`` says whether they are all of them (the
    first is then the first candidate). The caller walks back until the running sum of tokens
    exceeds ``budget`` or the candidates run out, so no start before ``rows`` could fit.
    """
    n = len(rows)
    # answered_by[j] for a tool message: the index of the assistant message, before it, whose
    # tool_calls hold its tool_call_id (-1 when none among the rows: it cannot be returned).
    latest_call: dict[str, int] = {}
    answered: list[int] = []
    for index, row in enumerate(rows):
        if row.role == "tool":
            answered.append(latest_call.get(row.tool_call_id or "", -1))
        else:
            answered.append(index)
            for call_id in row.call_ids:
                latest_call[call_id] = index
    # Walk starts from the end: a start is legal when every tool message from it on has its
    # assistant at or after it.
    fits: list[bool] = [False] * n
    legal: list[bool] = [False] * n
    total, earliest_assistant = 0, n
    for index in range(n - 1, -1, -1):
        total += rows[index].tokens
        earliest_assistant = min(earliest_assistant, answered[index])
        fits[index] = total <= budget
        legal[index] = rows[index].role != "tool" and index <= earliest_assistant

    def turn(index: int) -> bool:
        return rows[index].role == "user" or (index == 0 and complete)

    for index in range(n):
        if fits[index] and legal[index] and turn(index):
            return index
    # Not even the latest turn fits: start inside it, never at a tool message.
    latest_turn = max((i for i in range(n) if turn(i)), default=0)
    for index in range(latest_turn, n):
        if fits[index] and legal[index]:
            return index
    return None


async def build_context(
    db: Backend, *, user: str, conversation_id: UUID, max_tokens: int, keep_system: bool
) -> Context:
    head = await db.context_head(user=user, conversation_id=conversation_id, count=_FIRST_PAGE)
    if head is None:
        raise NotFound("no conversation with that id")
    bound = head.summary_up_to_seq or 0
    candidates = head.last_seq - bound
    budget = max_tokens - (head.summary_tokens if head.summary is not None else 0)
    if budget < 0:
        return _context(conversation_id, None, [], candidates)  # the summary alone is too big
    walked = list(head.rows)  # descending seq
    total = sum(row.tokens for row in walked)
    page = _FIRST_PAGE
    while total <= budget and len(walked) < candidates:
        page = min(page * 2, _MAX_PAGE)
        more = await db.context_rows(
            user=user,
            conversation_id=conversation_id,
            below=walked[-1].seq,
            above=bound,
            count=page,
        )
        if not more:
            break  # truncated or deleted meanwhile
        walked += more
        total += sum(row.tokens for row in more)
    rows = walked[::-1]
    start = choose_start(rows, complete=len(rows) >= candidates, budget=budget)
    if start is None:
        return _context(conversation_id, head, [], candidates)
    left = budget - sum(row.tokens for row in rows[start:])
    messages = await db.context_messages(
        user=user,
        conversation_id=conversation_id,
        from_seq=rows[start].seq,
        system_after=bound,
        system_budget=left if keep_system else None,
    )
    return _context(conversation_id, head, messages, candidates)


def _context(
    conversation_id: UUID, head: ContextHead | None, messages: list[Message], candidates: int
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
