"""The quotas' words: what ``limit_exceeded`` says when a configured quota is reached.

The backends enforce the quotas inside the write they bound (the count and the insert under
one lock), so concurrent writers can never pass them; these are the errors the store raises
when they refused.
"""

from __future__ import annotations

from store.errors import LimitExceeded

__all__ = ["conversation_full", "conversations_full"]


def conversations_full(limit: int) -> LimitExceeded:
    return LimitExceeded(
        f"this user has {limit} conversations, the most allowed "
        "(CHATSTORE_MAX_CONVERSATIONS_PER_USER); delete one to make room"
    )


def conversation_full(limit: int, adding: int) -> LimitExceeded:
    what = "a message" if adding == 1 else f"{adding} messages"
    return LimitExceeded(
        f"adding {what} would pass the {limit} messages a conversation may hold "
        "(CHATSTORE_MAX_MESSAGES_PER_CONVERSATION); start a new conversation"
    )
