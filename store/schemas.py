"""Pydantic models for what goes into and comes out of the store.

Inputs are validated here against the contract's rules; the configurable limits arrive as
validation context (``Limits``). Outputs serialise to the contract's JSON: UUID strings and
RFC 3339 UTC timestamps with microseconds.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from decimal import Decimal
from enum import Enum
from typing import Annotated, Any, Literal, TypeVar
from uuid import UUID

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    PlainSerializer,
    ValidationError,
    ValidationInfo,
    WithJsonSchema,
    field_validator,
    model_validator,
)

from store.contract import (
    DEFAULT_CONVERSATION_PAGE,
    DEFAULT_LIMITS,
    DEFAULT_MESSAGE_PAGE,
    DEFAULT_SEARCH_PAGE,
    MAX_BATCH_MESSAGES,
    MAX_CONTEXT_TOKENS,
    MAX_CONVERSATION_KEY_CHARS,
    MAX_CONVERSATION_PAGE,
    MAX_ECHOED_CHARS,
    MAX_ECHOED_NAMES,
    MAX_IDEMPOTENCY_KEY_CHARS,
    MAX_JSON_DEPTH,
    MAX_MESSAGE_PAGE,
    MAX_RECENT_MESSAGES,
    MAX_SEARCH_PAGE,
    MAX_SEARCH_QUERY_CHARS,
    MAX_SEQ_CURSOR,
    MAX_TOKEN_COUNT,
    MAX_TOOL_CALL_ID_CHARS,
    MAX_USER_CHARS,
    ROLES,
    Limits,
    Role,
)
from store.errors import InvalidArgument

M = TypeVar("M", bound=BaseModel)


def rfc3339(value: datetime) -> str:
    """The contract's timestamp form: RFC 3339, UTC, microseconds, ``Z``."""
    if value.tzinfo is not UTC:
        value = value.astimezone(UTC)
    # isoformat keeps microseconds even when they are zero with timespec; "+00:00" → "Z".
    return f"{value.isoformat(timespec='microseconds')[:-6]}Z"


Timestamp = Annotated[
    datetime,
    PlainSerializer(rfc3339, return_type=str, when_used="json"),
    WithJsonSchema({"type": "string", "format": "date-time"}),
]


# ---------------------------------------------------------------------------------------
# Text and JSON checks shared by every input.


def check_text(value: str, what: str) -> str:
    """Refuse text PostgreSQL cannot store (NUL) or UTF-8 cannot encode (lone surrogates)."""
    if "\x00" in value:
        raise ValueError(f"{what} must not contain NUL (\\u0000) characters")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError(
            f"{what} must be valid Unicode: it contains an unpaired surrogate"
        ) from None
    return value


def _check_json_value(value: Any, what: str, depth: int) -> None:
    if depth > MAX_JSON_DEPTH:
        raise ValueError(f"{what} is nested more than {MAX_JSON_DEPTH} levels deep")
    if isinstance(value, str):
        check_text(value, f"a string in {what}")
    elif isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise ValueError(f"{what} must have string keys")
            check_text(key, f"a key in {what}")
            _check_json_value(item, what, depth + 1)
    elif isinstance(value, list):
        for item in value:
            _check_json_value(item, what, depth + 1)
    elif isinstance(value, bool) or value is None or isinstance(value, int):
        return
    elif isinstance(value, float):
        if value != value or value in (float("inf"), float("-inf")):
            raise ValueError(f"{what} must not contain NaN or Infinity")
    else:
        raise ValueError(f"{what} must contain only JSON values")


def dump_json(value: Any) -> str:
    """The compact JSON text the store writes (and measures limits against)."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False)


def check_json(value: Any, what: str, max_bytes: int) -> Any:
    _check_json_value(value, what, 0)
    size = len(dump_json(value).encode("utf-8"))
    if size > max_bytes:
        raise ValueError(f"{what} is {size} bytes as JSON; the limit is {max_bytes} bytes")
    return value


def json_identity(value: Any) -> Any:
    """``value`` in a form whose ``==`` is JSON equality.

    Python's ``==`` says ``True == 1``, and jsonb hands back 1e23 as the int
    100000000000000000000000, which is not the float 1e23: numbers compare here as the
    exact decimals written to the database, and booleans apart from numbers.
    """
    if isinstance(value, dict):
        return {key: json_identity(item) for key, item in value.items()}
    if isinstance(value, list):
        return [json_identity(item) for item in value]
    if isinstance(value, bool):
        return ("bool", value)
    if isinstance(value, int | float):
        return ("number", Decimal(repr(value)))
    return value


def _limits(info: ValidationInfo) -> Limits:
    context = info.context
    if isinstance(context, Limits):
        return context
    return DEFAULT_LIMITS


# ---------------------------------------------------------------------------------------
# Validation entry points: what the store (and the MCP layer) call.


def echoed(value: object) -> str:
    """A name a client sent, as an error quotes it: at most ``MAX_ECHOED_CHARS`` of it."""
    text = str(value)
    cut = text[:MAX_ECHOED_CHARS]
    return repr(cut) + ("…" if len(cut) < len(text) else "")


def echoed_names(names: list[str]) -> str:
    """Client-sent names as an error lists them: the first ``MAX_ECHOED_NAMES``, each cut."""
    shown = ", ".join(echoed(name) for name in names[:MAX_ECHOED_NAMES])
    more = len(names) - MAX_ECHOED_NAMES
    return shown + (f" and {more} more" if more > 0 else "")


def describe_validation_error(exc: ValidationError) -> str:
    """A ValidationError in words, without echoing the rejected values back (nor more than a
    short prefix of a key the client chose)."""
    parts = []
    for error in exc.errors(include_url=False, include_input=False)[:MAX_ECHOED_NAMES]:
        where = ".".join(
            str(p) if len(str(p)) <= MAX_ECHOED_CHARS else echoed(p) for p in error["loc"]
        )
        message = error["msg"].removeprefix("Value error, ")
        if error["type"] == "extra_forbidden":
            message = "is not a known argument"
        elif error["type"] == "literal_error" and where == "role":
            message = f"must be one of {', '.join(ROLES)}"
        parts.append(f"{where}: {message}" if where else message)
    return "; ".join(parts)


def validate(model: type[M], limits: Limits, **values: Any) -> M:
    """``model`` from ``values`` under ``limits``, or ``InvalidArgument`` saying what is wrong."""
    try:
        return model.model_validate(values, context=limits)
    except ValidationError as exc:
        raise InvalidArgument(describe_validation_error(exc)) from None


def validate_batch(messages: Any, limits: Limits) -> list[NewMessage]:
    """append_messages' batch: each message validated as ``append_message`` would, the
    first refusal naming its index; at most ``MAX_BATCH_MESSAGES`` messages and
    ``limits.max_batch_bytes`` bytes, each idempotency key at most once."""
    if not isinstance(messages, list | tuple):
        raise InvalidArgument("messages must be a list of message objects")
    if len(messages) > MAX_BATCH_MESSAGES:
        raise InvalidArgument(
            f"messages holds {len(messages)} messages; at most {MAX_BATCH_MESSAGES} per call"
        )
    news: list[NewMessage] = []
    size = 0
    keys: set[str] = set()
    for index, fields in enumerate(messages):
        if not isinstance(fields, dict):
            raise InvalidArgument(f"messages[{index}] must be an object")
        try:
            new = validate(NewMessage, limits, **fields)
        except InvalidArgument as exc:
            raise InvalidArgument(f"messages[{index}]: {exc.message}") from None
        except TypeError:  # a key that is not a string
            raise InvalidArgument(f"messages[{index}] must have string keys") from None
        size += len(new.content.encode("utf-8")) + len(dump_json(new.metadata).encode())
        for value in (new.tool_calls, new.raw):
            if value is not None:
                size += len(dump_json(value).encode())
        if size > limits.max_batch_bytes:
            raise InvalidArgument(
                f"the batch is larger than {limits.max_batch_bytes} bytes by messages[{index}]; "
                "split it into smaller batches"
            )
        if new.idempotency_key is not None:
            if new.idempotency_key in keys:
                raise InvalidArgument(
                    f"messages[{index}]: idempotency_key is used twice in the batch"
                )
            keys.add(new.idempotency_key)
        news.append(new)
    return news


#: The string spellings of a UUID that ``parse_id`` accepts: 8-4-4-4-12 or 32 hex digits, in
#: either case, optionally in braces or after ``urn:uuid:``; ASCII only. ``uuid.UUID`` alone
#: reads more (``int(..., 16)`` takes any Unicode decimal digit, ``_``, a sign, spaces, and
#: hyphens anywhere), so ``…4\u0661…`` would name the conversation ``…41…``: one id must have
#: one family of spellings, the ones every client can compare.
_UUID_SPELLING = re.compile(
    r"(?-i:urn:uuid:)?(?P<brace>\{)?"
    r"(?P<hex>[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}|[0-9a-f]{32})"
    r"(?(brace)\})",
    re.IGNORECASE | re.ASCII,
)


def parse_id(value: Any, what: str = "conversation_id") -> UUID:
    """A UUID given as a UUID or in one of its usual ASCII string spellings."""
    if isinstance(value, UUID):
        return value
    if not isinstance(value, str):
        raise InvalidArgument(f"{what} must be a UUID string")
    spelled = _UUID_SPELLING.fullmatch(value)
    if spelled is None:
        raise InvalidArgument(f"{what} must be a UUID string, like the ids this server returns")
    return UUID(spelled["hex"])


def check_user(user: str) -> str:
    """``user`` if it can be a user (1 to ``MAX_USER_CHARS`` characters of valid text)."""
    if not isinstance(user, str) or not user or len(user) > MAX_USER_CHARS:
        raise InvalidArgument(
            f"user must be a non-empty string of at most {MAX_USER_CHARS} characters"
        )
    try:
        check_text(user, "user")
    except ValueError as exc:
        raise InvalidArgument(str(exc)) from None
    return user


def valid_user(value: object) -> bool:
    try:
        check_user(value)  # type: ignore[arg-type]
    except InvalidArgument:
        return False
    return True


# ---------------------------------------------------------------------------------------
# Inputs.


class _Input(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _metadata(value: dict[str, Any] | None, info: ValidationInfo) -> dict[str, Any]:
    if not value:  # absent or empty, as most messages' are: nothing to check or measure
        return {}
    return check_json(value, "metadata", _limits(info).max_metadata_bytes)  # type: ignore[no-any-return]


#: An optional JSON object within the metadata limit; absent means ``{}`` (a field of this type
#: is declared with ``validate_default=True``: pydantic does not run validators on a default,
#: and a message of a batch that leaves metadata out would otherwise be stored as ``null``).
Metadata = Annotated[dict[str, Any] | None, AfterValidator(_metadata)]


def _title(value: str | None, info: ValidationInfo) -> str | None:
    if value is None:
        return None
    check_text(value, "title")
    limit = _limits(info).max_title_chars
    if len(value) > limit:
        raise ValueError(f"title is {len(value)} characters; the limit is {limit}")
    return value


#: An optional title within the title limit.
Title = Annotated[str | None, AfterValidator(_title)]


def _summary(value: str | None, info: ValidationInfo) -> str | None:
    if value is None:
        return None
    check_text(value, "summary")
    if not value.strip():
        raise ValueError("summary must not be empty; give summary: null to remove it")
    limit = _limits(info).max_summary_chars
    if len(value) > limit:
        raise ValueError(f"summary is {len(value)} characters; the limit is {limit}")
    return value


#: An optional summary: valid text, not blank, within the summary limit.
Summary = Annotated[str | None, AfterValidator(_summary)]


def _raw(value: dict[str, Any] | None, info: ValidationInfo) -> dict[str, Any] | None:
    if value is None:
        return None
    return check_json(value, "raw", _limits(info).max_raw_bytes)  # type: ignore[no-any-return]


#: An optional JSON object within the raw limit, kept verbatim.
Raw = Annotated[dict[str, Any] | None, AfterValidator(_raw)]


def _key(value: str | None) -> str | None:
    return _short_text(value, "key", MAX_CONVERSATION_KEY_CHARS, blank=False)


#: An optional conversation key: valid text, not blank, within the key limit.
Key = Annotated[str | None, AfterValidator(_key)]


class NewConversation(_Input):
    title: Title = None
    metadata: Metadata = Field(default=None, validate_default=True)
    key: Key = None


class Unset(Enum):
    """The type of ``UNSET``: an argument not given, as distinct from one given as None."""

    UNSET = "unset"


UNSET = Unset.UNSET


class ConversationChanges(_Input):
    """update_conversation's changes: only the fields given (``model_fields_set``) apply."""

    title: Title = None
    metadata: Metadata = None
    summary: Summary = None
    summary_up_to_seq: int | None = Field(default=None, strict=True, ge=0, le=MAX_SEQ_CURSOR)

    @model_validator(mode="after")
    def _summary_with_its_seq(self) -> ConversationChanges:
        given = self.model_fields_set
        if self.summary is not None and self.summary_up_to_seq is None:
            raise ValueError("give summary_up_to_seq with summary (the last seq it covers)")
        if self.summary_up_to_seq is not None and self.summary is None:
            raise ValueError(
                "give summary with summary_up_to_seq; to remove a summary give summary: null alone"
            )
        if "summary_up_to_seq" in given and "summary" not in given:
            raise ValueError("give summary with summary_up_to_seq")
        return self


def _nonempty_text(value: object) -> bool:
    return isinstance(value, str) and bool(value.strip())


def tool_call_name(call: dict[str, Any]) -> object:
    """A tool call's name: ``name`` in the flat shape ``{id, name, arguments?}``, else
    ``function.name`` in OpenAI's Chat Completions shape ``{id, type: "function", function:
    {name, arguments}}``. Either shape is kept as sent."""
    name = call.get("name")
    function = call.get("function")
    if not _nonempty_text(name) and isinstance(function, dict):
        return function.get("name")
    return name


def _short_text(value: str | None, what: str, limit: int, *, blank: bool) -> str | None:
    """An optional identifier-like text: valid, not empty (nor only whitespace unless
    ``blank``), at most ``limit`` characters."""
    if value is None:
        return None
    check_text(value, what)
    if not (value if blank else value.strip()):
        raise ValueError(f"{what} must not be empty")
    if len(value) > limit:
        raise ValueError(f"{what} is {len(value)} characters; the limit is {limit}")
    return value


class NewMessage(_Input):
    role: Role
    content: str = ""
    tool_calls: list[dict[str, Any]] | None = None
    tool_call_id: str | None = None
    metadata: Metadata = Field(default=None, validate_default=True)
    idempotency_key: str | None = None
    token_count: int | None = Field(default=None, strict=True, ge=0, le=MAX_TOKEN_COUNT)
    raw: Raw = None

    def json_columns(self) -> tuple[str | None, str, str | None]:
        """``tool_calls``, ``metadata`` and ``raw`` as the JSON text the store writes."""
        tool_calls = None if self.tool_calls is None else dump_json(self.tool_calls)
        raw = None if self.raw is None else dump_json(self.raw)
        return tool_calls, dump_json(self.metadata) if self.metadata else "{}", raw

    @field_validator("content")
    @classmethod
    def _content(cls, value: str, info: ValidationInfo) -> str:
        check_text(value, "content")
        limit = _limits(info).max_content_chars
        if len(value) > limit:
            raise ValueError(f"content is {len(value)} characters; the limit is {limit}")
        return value

    @field_validator("tool_calls")
    @classmethod
    def _tool_calls(
        cls, value: list[dict[str, Any]] | None, info: ValidationInfo
    ) -> list[dict[str, Any]] | None:
        if not value:
            # An empty list means "no tool calls", as several agent frameworks send it.
            return None
        for index, call in enumerate(value):
            if not _nonempty_text(call.get("id")):
                raise ValueError(f"tool_calls[{index}] needs a non-empty string 'id'")
            if not _nonempty_text(tool_call_name(call)):
                raise ValueError(
                    f"tool_calls[{index}] needs a non-empty string 'name' "
                    "(or 'function.name', in the OpenAI shape)"
                )
        return check_json(value, "tool_calls", _limits(info).max_tool_calls_bytes)  # type: ignore[no-any-return]

    @field_validator("tool_call_id")
    @classmethod
    def _tool_call_id(cls, value: str | None) -> str | None:
        return _short_text(value, "tool_call_id", MAX_TOOL_CALL_ID_CHARS, blank=False)

    @field_validator("idempotency_key")
    @classmethod
    def _idempotency_key(cls, value: str | None) -> str | None:
        return _short_text(value, "idempotency_key", MAX_IDEMPOTENCY_KEY_CHARS, blank=True)

    @model_validator(mode="after")
    def _roles(self) -> NewMessage:
        if self.tool_calls is not None and self.role != "assistant":
            raise ValueError("only assistant messages may carry tool_calls")
        if self.role == "tool" and self.tool_call_id is None:
            raise ValueError("a tool message needs tool_call_id (the id of the call it answers)")
        if self.role != "tool" and self.tool_call_id is not None:
            raise ValueError("only tool messages may carry tool_call_id")
        if not self.content.strip() and not (self.role == "assistant" and self.tool_calls):
            raise ValueError(
                "content must not be empty or only whitespace "
                "(only an assistant message with tool_calls may have empty content)"
            )
        return self


class MessageQuery(_Input):
    limit: int = Field(default=DEFAULT_MESSAGE_PAGE, strict=True, ge=1, le=MAX_MESSAGE_PAGE)
    # seq is a BIGINT: larger cursors would fail in the driver, not as invalid_argument.
    before_seq: int | None = Field(default=None, strict=True, ge=1, le=MAX_SEQ_CURSOR)
    after_seq: int | None = Field(default=None, strict=True, ge=0, le=MAX_SEQ_CURSOR)

    @model_validator(mode="after")
    def _one_cursor(self) -> MessageQuery:
        if self.before_seq is not None and self.after_seq is not None:
            raise ValueError("give at most one of before_seq and after_seq")
        return self


def _cursor(value: str | None) -> str | None:
    if value is not None:
        check_text(value, "cursor")
    return value


#: An optional opaque cursor from a previous page (valid text; what it says is checked where
#: it is decoded).
Cursor = Annotated[str | None, AfterValidator(_cursor)]


class ConversationQuery(_Input):
    limit: int = Field(
        default=DEFAULT_CONVERSATION_PAGE, strict=True, ge=1, le=MAX_CONVERSATION_PAGE
    )
    cursor: Cursor = None


class SearchQuery(_Input):
    query: str
    role: Role | None = None
    limit: int = Field(default=DEFAULT_SEARCH_PAGE, strict=True, ge=1, le=MAX_SEARCH_PAGE)
    cursor: Cursor = None

    @field_validator("query")
    @classmethod
    def _query(cls, value: str) -> str:
        check_text(value, "query")
        if not value.strip():
            raise ValueError("query must not be empty")
        if len(value) > MAX_SEARCH_QUERY_CHARS:
            raise ValueError(
                f"query is {len(value)} characters; the limit is {MAX_SEARCH_QUERY_CHARS}"
            )
        return value


class TruncateQuery(_Input):
    after_seq: int = Field(strict=True, ge=0, le=MAX_SEQ_CURSOR)
    if_last_seq: int | None = Field(default=None, strict=True, ge=0, le=MAX_SEQ_CURSOR)


class ForkQuery(_Input):
    at_seq: int = Field(strict=True, ge=0, le=MAX_SEQ_CURSOR)
    title: Title = None


class ContextQuery(_Input):
    max_tokens: int = Field(strict=True, ge=1, le=MAX_CONTEXT_TOKENS)
    keep_system: bool = Field(default=True, strict=True)


class RecentMessages(_Input):
    recent_messages: int = Field(default=0, strict=True, ge=0, le=MAX_RECENT_MESSAGES)


# ---------------------------------------------------------------------------------------
# Outputs.


class _Output(BaseModel):
    model_config = ConfigDict(frozen=True)


class ForkedFrom(_Output):
    """Where a fork was copied from: its parent conversation and the last seq copied."""

    conversation_id: UUID
    seq: int


class Conversation(_Output):
    """A conversation as the contract shows it."""

    id: UUID
    title: str | None
    metadata: dict[str, Any]
    created_at: Timestamp
    updated_at: Timestamp
    message_count: int
    last_seq: int
    summary: str | None
    summary_up_to_seq: int | None
    forked_from: ForkedFrom | None
    key: str | None


class Message(_Output):
    """One stored message; ``seq`` is its 1-based position in the conversation."""

    id: UUID
    conversation_id: UUID
    seq: int
    role: Role
    content: str
    tool_calls: list[dict[str, Any]] | None
    tool_call_id: str | None
    metadata: dict[str, Any]
    created_at: Timestamp
    token_count: int
    raw: dict[str, Any] | None


class ConversationWithMessages(Conversation):
    """A conversation with its latest messages, oldest first; ``has_more``: whether it has
    older messages than those."""

    messages: list[Message]
    has_more: bool


class ConversationPage(_Output):
    """Conversations, most recently updated first; pass ``next_cursor`` for the next page."""

    conversations: list[Conversation]
    next_cursor: str | None


class MessagePage(_Output):
    """Messages in ascending ``seq``; ``has_more`` looks in the direction being paged."""

    messages: list[Message]
    has_more: bool


class Context(_Output):
    """The part of a conversation that fits a context window: the summary (when there is one
    and it fits), then ``messages`` in ascending seq; ``token_count`` is all of it together."""

    conversation_id: UUID
    summary: str | None
    summary_up_to_seq: int | None
    messages: list[Message]
    token_count: int
    truncated: bool


class SearchHit(_Output):
    """One message found: the message, its conversation's title, an excerpt with the matched
    words marked ``**like this**``, and its relevance (higher is better)."""

    message: Message
    conversation_title: str | None
    snippet: str
    rank: float


class SearchPage(_Output):
    """Hits by relevance, then newest first; pass ``next_cursor`` for the next page."""

    results: list[SearchHit]
    next_cursor: str | None


class DeletedConversation(_Output):
    conversation_id: UUID
    deleted: Literal[True] = True
    messages_deleted: int


class StoreInfo(_Output):
    """What ``chatstore info`` shows: the backend, where its database is, the schema version
    (the newest migration applied) and what is stored."""

    database: Literal["postgres", "sqlite"]
    location: str
    schema_version: str
    users: int
    conversations: int
    messages: int


class Pruned(_Output):
    """What a prune deleted (or, with ``dry_run``, would delete)."""

    conversations_deleted: int
    messages_deleted: int
    dry_run: bool


class Imported(_Output):
    """What an import wrote: conversations and their messages, the conversations skipped
    because they exist already (with their messages), and the forks linked to their parent
    after it arrived later in the file (or in an earlier run)."""

    conversations_imported: int
    messages_imported: int
    conversations_skipped: int
    messages_skipped: int
    forks_linked: int


class PurgedUser(_Output):
    user: str
    conversations_deleted: int
    messages_deleted: int
