"""The MCP tools: each one resolves the user from the session, calls the store, returns its model.

A tool's docstring is its description for the model that calls it; the argument types below are
its input schema. Limits an operator configures appear in the schema as ``{max_title_chars}``-
style placeholders that ``mcp_server._sdk`` fills from the settings (the store enforces them).
Store errors become tool errors that start with the contract's code, in ``mcp_server._sdk``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

from mcp_types import ToolAnnotations
from pydantic import Field

from mcp_server.context import ChatContext, given_arguments, store_of, user_of
from store import schemas
from store.contract import (
    DEFAULT_CONVERSATION_PAGE,
    DEFAULT_MESSAGE_PAGE,
    DEFAULT_SEARCH_PAGE,
    MAX_CONTEXT_TOKENS,
    MAX_CONVERSATION_KEY_CHARS,
    MAX_CONVERSATION_PAGE,
    MAX_IDEMPOTENCY_KEY_CHARS,
    MAX_MESSAGE_PAGE,
    MAX_RECENT_MESSAGES,
    MAX_SEARCH_PAGE,
    MAX_SEARCH_QUERY_CHARS,
    MAX_TOKEN_COUNT,
    Role,
)

__all__ = ["TOOLS", "ToolSpec"]

# -- argument types -----------------------------------------------------------------------

ConversationId = Annotated[
    str,
    Field(
        description="The conversation's id (a UUID string returned by create_conversation).",
        json_schema_extra={"format": "uuid"},
    ),
]
JsonObject = dict[str, Any]
Metadata = Annotated[
    JsonObject | None,
    Field(
        description=(
            "Optional JSON object stored with it (at most {max_metadata_bytes} bytes as JSON)."
        )
    ),
]
Title = Annotated[
    str | None, Field(description="Optional short title (at most {max_title_chars} characters).")
]
Content = Annotated[
    str,
    Field(
        description=(
            "The message text (not empty; at most {max_content_chars} characters). "
            "May be empty or left out only for an assistant message that carries tool_calls."
        )
    ),
]
ToolCalls = Annotated[
    list[JsonObject] | None,
    Field(
        description=(
            "Assistant messages only: the tool calls made, each an object with a non-empty "
            "string `id` and a name: `name` ({id, name, arguments}) or, in the OpenAI Chat "
            "Completions shape, `function.name` ({id, type: 'function', function: {name, "
            "arguments}}). Kept exactly as sent; at most {max_tool_calls_bytes} bytes as JSON."
        )
    ),
]
TokenCount = Annotated[
    int | None,
    Field(
        strict=True,
        ge=0,
        le=MAX_TOKEN_COUNT,
        description=(
            "Optional: the message's token count as your model reported it. Left out, the "
            "server counts content and tool_calls with its tokenizer."
        ),
    ),
]
MaxTokens = Annotated[
    int,
    Field(
        strict=True,
        ge=1,
        le=MAX_CONTEXT_TOKENS,
        description=f"The token budget to fill, 1-{MAX_CONTEXT_TOKENS}.",
    ),
]
KeepSystem = Annotated[
    bool,
    Field(
        strict=True,
        description="Also keep system messages older than the cut, in what the budget leaves "
        "(default true).",
    ),
]
Summary = Annotated[
    str | None,
    Field(
        description=(
            "Optional: a summary of messages 1 … summary_up_to_seq (at most "
            "{max_summary_chars} characters), given together with summary_up_to_seq. "
            "get_context then returns it in place of those messages. null alone removes it."
        )
    ),
]
SummaryUpToSeq = Annotated[
    int | None,
    Field(
        strict=True,
        ge=0,
        description=(
            "With summary: the last seq it covers (0 … last_seq; the message after it must "
            "not be a tool message)."
        ),
    ),
]
ToolCallId = Annotated[
    str | None,
    Field(description="Tool messages only (required there): the id of the call answered."),
]
IdempotencyKey = Annotated[
    str | None,
    Field(
        max_length=MAX_IDEMPOTENCY_KEY_CHARS,
        description=(
            "Optional. A key unique to this message (for example a UUID you generate). "
            "Retrying with the same key returns the stored message instead of adding a copy."
        ),
    ),
]
ConversationKey = Annotated[
    str | None,
    Field(
        max_length=MAX_CONVERSATION_KEY_CHARS,
        description=(
            "Optional name of your own for the conversation, unique for this user (for "
            "example your session id). If a conversation with this key exists, it is "
            "returned unchanged and nothing is created, so retrying is safe."
        ),
    ),
]
Raw = Annotated[
    JsonObject | None,
    Field(
        description=(
            "Optional JSON object kept verbatim beside the message: your framework's own "
            "form of it (at most {max_raw_bytes} bytes as JSON). Never interpreted."
        )
    ),
]
MessageRole = Annotated[Role, Field(description="Who said it: system, user, assistant or tool.")]
ConversationLimit = Annotated[
    int,
    Field(
        strict=True,
        ge=1,
        le=MAX_CONVERSATION_PAGE,
        description=(
            f"Page size, 1-{MAX_CONVERSATION_PAGE} (default {DEFAULT_CONVERSATION_PAGE})."
        ),
    ),
]
Cursor = Annotated[
    str | None, Field(description="Optional next_cursor from the previous page, to continue.")
]
RecentMessages = Annotated[
    int,
    Field(
        strict=True,
        ge=0,
        le=MAX_RECENT_MESSAGES,
        description=(
            f"How many of the latest messages to include, 0-{MAX_RECENT_MESSAGES} (default 0)."
        ),
    ),
]
MessageLimit = Annotated[
    int,
    Field(
        strict=True,
        ge=1,
        le=MAX_MESSAGE_PAGE,
        description=f"Page size, 1-{MAX_MESSAGE_PAGE} (default {DEFAULT_MESSAGE_PAGE}).",
    ),
]
BeforeSeq = Annotated[
    int | None,
    Field(strict=True, ge=1, description="Optional: return the messages just before this seq."),
]
AfterSeq = Annotated[
    int | None,
    Field(strict=True, ge=0, description="Optional: return the messages just after this seq."),
]
SearchText = Annotated[
    str,
    Field(
        max_length=MAX_SEARCH_QUERY_CHARS,
        description=(
            "Words to find (all required; case-insensitive; `trains` also finds `train`). "
            '`"exact phrase"` for words in a row, `a or b` for either, `-word` to exclude. '
            "Any other character is just text."
        ),
    ),
]
SearchIn = Annotated[
    Annotated[str, Field(json_schema_extra={"format": "uuid"})] | None,
    Field(description="Optional: search only this conversation (its id)."),
]
SearchRole = Annotated[Role | None, Field(description="Optional: only messages of this role.")]
SearchLimit = Annotated[
    int,
    Field(
        strict=True,
        ge=1,
        le=MAX_SEARCH_PAGE,
        description=f"Page size, 1-{MAX_SEARCH_PAGE} (default {DEFAULT_SEARCH_PAGE}).",
    ),
]
AtSeq = Annotated[
    int,
    Field(
        strict=True,
        ge=0,
        description=(
            "The last seq to copy (0 … last_seq; 0 makes an empty fork). To edit message N, "
            "fork at N - 1."
        ),
    ),
]

# -- the tools ----------------------------------------------------------------------------


async def create_conversation(
    ctx: ChatContext, title: Title = None, metadata: Metadata = None, key: ConversationKey = None
) -> schemas.Conversation:
    """Start a new, empty conversation for the current user and return it (with `key`:
    the user's conversation of that key if there is one).

    Use its `id` with append_message to record messages as they happen."""
    return await store_of(ctx).create_conversation(
        user=user_of(ctx), title=title, metadata=metadata, key=key
    )


async def list_conversations(
    ctx: ChatContext, limit: ConversationLimit = DEFAULT_CONVERSATION_PAGE, cursor: Cursor = None
) -> schemas.ConversationPage:
    """List the current user's conversations, most recently updated first.

    Returns a page and `next_cursor`; pass it back as `cursor` for the next page
    (null means there are no more)."""
    return await store_of(ctx).list_conversations(user=user_of(ctx), limit=limit, cursor=cursor)


async def get_conversation(
    ctx: ChatContext, conversation_id: ConversationId, recent_messages: RecentMessages = 0
) -> schemas.ConversationWithMessages:
    """Get one conversation (title, metadata, message_count, last_seq) and optionally
    its latest messages in chronological order; `has_more` says whether older ones exist
    (large messages may come fewer than asked for: list_messages with before_seq reads on)."""
    return await store_of(ctx).get_conversation(
        user=user_of(ctx), conversation_id=conversation_id, recent_messages=recent_messages
    )


async def append_message(
    ctx: ChatContext,
    conversation_id: ConversationId,
    role: MessageRole,
    content: Content = "",
    tool_calls: ToolCalls = None,
    tool_call_id: ToolCallId = None,
    metadata: Metadata = None,
    idempotency_key: IdempotencyKey = None,
    token_count: TokenCount = None,
    raw: Raw = None,
) -> schemas.Message:
    """Append a message to a conversation and return it with its `seq` (its 1-based
    position). Record every turn, including tool calls and tool results."""
    return await store_of(ctx).append_message(
        user=user_of(ctx),
        conversation_id=conversation_id,
        role=role,
        content=content,
        tool_calls=tool_calls,
        tool_call_id=tool_call_id,
        metadata=metadata,
        idempotency_key=idempotency_key,
        token_count=token_count,
        raw=raw,
    )


async def get_context(
    ctx: ChatContext,
    conversation_id: ConversationId,
    max_tokens: MaxTokens,
    keep_system: KeepSystem = True,
) -> schemas.Context:
    """Get the part of a conversation that fits your context window of `max_tokens`: its
    summary (if any), then the latest messages, cut at the start of a turn, with tool calls
    never separated from their results. Use it to load history before answering."""
    return await store_of(ctx).get_context(
        user=user_of(ctx),
        conversation_id=conversation_id,
        max_tokens=max_tokens,
        keep_system=keep_system,
    )


async def search_messages(
    ctx: ChatContext,
    query: SearchText,
    conversation_id: SearchIn = None,
    role: SearchRole = None,
    limit: SearchLimit = DEFAULT_SEARCH_PAGE,
    cursor: Cursor = None,
) -> schemas.SearchPage:
    """Find the current user's past messages by words, across all their conversations
    (or one). Results come most relevant first, then newest, each with its conversation's
    title and a `snippet` marking the matched words **like this**. Pass `next_cursor` back as
    `cursor` for more (null: no more, or the deepest page has been reached)."""
    return await store_of(ctx).search_messages(
        user=user_of(ctx),
        query=query,
        conversation_id=conversation_id,
        role=role,
        limit=limit,
        cursor=cursor,
    )


async def fork_conversation(
    ctx: ChatContext, conversation_id: ConversationId, at_seq: AtSeq, title: Title = None
) -> schemas.Conversation:
    """Copy messages 1 … at_seq of a conversation into a new one (its `forked_from` says
    where it came from) and return the new conversation; the original is unchanged. To edit
    a message and regenerate from there: fork at its seq - 1, then append the edited message
    to the fork."""
    return await store_of(ctx).fork_conversation(
        user=user_of(ctx), conversation_id=conversation_id, at_seq=at_seq, title=title
    )


async def update_conversation(
    ctx: ChatContext,
    conversation_id: ConversationId,
    title: Title = None,
    metadata: Metadata = None,
    summary: Summary = None,
    summary_up_to_seq: SummaryUpToSeq = None,
) -> schemas.Conversation:
    """Change a conversation's title, metadata (replaced whole) or summary; only the fields
    you give change. Store a summary of the older messages (with the last seq it covers) to
    keep long conversations within your context window; messages are never changed."""
    changes = given_arguments(
        ctx, title=title, metadata=metadata, summary=summary, summary_up_to_seq=summary_up_to_seq
    )
    return await store_of(ctx).update_conversation(
        user=user_of(ctx), conversation_id=conversation_id, **changes
    )


async def list_messages(
    ctx: ChatContext,
    conversation_id: ConversationId,
    limit: MessageLimit = DEFAULT_MESSAGE_PAGE,
    before_seq: BeforeSeq = None,
    after_seq: AfterSeq = None,
) -> schemas.MessagePage:
    """Read a conversation's messages in chronological order (ascending seq).

    With no cursor: the latest `limit`. With before_seq: older ones; with after_seq:
    newer ones (give at most one). `has_more` says whether more exist that way (large
    messages may come fewer than `limit` to a page)."""
    return await store_of(ctx).list_messages(
        user=user_of(ctx),
        conversation_id=conversation_id,
        limit=limit,
        before_seq=before_seq,
        after_seq=after_seq,
    )


async def delete_conversation(
    ctx: ChatContext, conversation_id: ConversationId
) -> schemas.DeletedConversation:
    """Permanently delete a conversation and all of its messages."""
    return await store_of(ctx).delete_conversation(
        user=user_of(ctx), conversation_id=conversation_id
    )


# -- how they are listed ------------------------------------------------------------------

READ_ONLY = ToolAnnotations(read_only_hint=True, destructive_hint=False, open_world_hint=False)
WRITE = ToolAnnotations(
    read_only_hint=False, destructive_hint=False, idempotent_hint=False, open_world_hint=False
)
#: Only the fields given change, so the same call twice leaves the same conversation.
UPDATE = ToolAnnotations(
    read_only_hint=False, destructive_hint=False, idempotent_hint=True, open_world_hint=False
)
DELETE = ToolAnnotations(
    read_only_hint=False, destructive_hint=True, idempotent_hint=True, open_world_hint=False
)

#: (function, title, annotations) of every tool, in the order they are listed.
ToolSpec = tuple[Callable[..., Any], str, ToolAnnotations]
TOOLS: tuple[ToolSpec, ...] = (
    (create_conversation, "Create conversation", WRITE),
    (list_conversations, "List conversations", READ_ONLY),
    (get_conversation, "Get conversation", READ_ONLY),
    (append_message, "Append message", WRITE),
    (list_messages, "List messages", READ_ONLY),
    (get_context, "Get context", READ_ONLY),
    (search_messages, "Search messages", READ_ONLY),
    (update_conversation, "Update conversation", UPDATE),
    (fork_conversation, "Fork conversation", WRITE),
    (delete_conversation, "Delete conversation", DELETE),
)
