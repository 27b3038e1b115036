"""The contract's constants, each spelled once: roles, size limits, page bounds, maxima.

The configurable limits live in ``Limits`` with the contract's defaults; ``Settings`` reads an
operator's values for them from the environment. Everything else here is fixed by the contract
and imported where it is needed (validation, the MCP tools' schemas, identity checks).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, get_args

__all__ = [
    "DEFAULT_CONVERSATION_PAGE",
    "DEFAULT_LIMITS",
    "DEFAULT_MESSAGE_PAGE",
    "DEFAULT_RESUME_TOKENS",
    "DEFAULT_SEARCH_PAGE",
    "DEFAULT_TOKENIZER",
    "EXPORT_PAGE",
    "IMPORT_CHUNK",
    "MAX_BATCH_MESSAGES",
    "MAX_CONTEXT_TOKENS",
    "MAX_CONVERSATION_KEY_CHARS",
    "MAX_CONVERSATION_PAGE",
    "MAX_ECHOED_CHARS",
    "MAX_ECHOED_NAMES",
    "MAX_IDEMPOTENCY_KEY_CHARS",
    "MAX_JSON_DEPTH",
    "MAX_MESSAGE_PAGE",
    "MAX_RECENT_MESSAGES",
    "MAX_SEARCH_DEPTH",
    "MAX_SEARCH_PAGE",
    "MAX_SEARCH_QUERY_CHARS",
    "MAX_SEQ_CURSOR",
    "MAX_TOKEN_COUNT",
    "MAX_TOOL_CALL_ID_CHARS",
    "MAX_USER_CHARS",
    "PRUNE_BATCH",
    "ROLES",
    "TOKENIZERS",
    "Limits",
    "Role",
    "TokenizerName",
]

Role = Literal["system", "user", "assistant", "tool"]
ROLES: tuple[Role, ...] = get_args(Role)

#: A user is a JWT ``sub`` or a stdio user name, stored verbatim (the users table's key).
MAX_USER_CHARS = 255
MAX_IDEMPOTENCY_KEY_CHARS = 200
MAX_TOOL_CALL_ID_CHARS = 200
#: A conversation's key: a caller-chosen name, unique per user (a framework's session id).
MAX_CONVERSATION_KEY_CHARS = 200
#: An error that names what a client sent (an unknown tool, argument or prompt) quotes at most
#: this many characters of each name, and at most MAX_ECHOED_NAMES names.
MAX_ECHOED_CHARS = 64
MAX_ECHOED_NAMES = 5
#: Nesting deeper than this in metadata or tool_calls is refused (and keeps the checks from
#: recursing without bound).
MAX_JSON_DEPTH = 64
#: The largest before_seq/after_seq accepted: far beyond any real seq, and with room below
#: BIGINT's maximum for the page arithmetic in SQL.
MAX_SEQ_CURSOR = 2**62

#: A message's token_count is stored as a 32-bit integer.
MAX_TOKEN_COUNT = 2**31 - 1
#: get_context's budget: 1 … this many tokens.
MAX_CONTEXT_TOKENS = 2_000_000
#: The tokenizers shipped inside the bpe-openai wheel (no download at run time).
TokenizerName = Literal["o200k_base", "cl100k_base"]
TOKENIZERS: tuple[TokenizerName, ...] = get_args(TokenizerName)
DEFAULT_TOKENIZER: TokenizerName = "o200k_base"
#: resume_conversation returns what get_context gives for this budget, unless configured.
DEFAULT_RESUME_TOKENS = 8_000

#: append_messages takes at most this many messages per call.
MAX_BATCH_MESSAGES = 1_000

#: search_messages: the query's length, the page size, and how deep paging goes.
MAX_SEARCH_QUERY_CHARS = 500
DEFAULT_SEARCH_PAGE = 20
MAX_SEARCH_PAGE = 100
MAX_SEARCH_DEPTH = 1_000

#: Export reads conversations, and each one's messages, this many at a time.
EXPORT_PAGE = 500
#: Import writes messages this many at a time (one COPY each): a long conversation in chunks
#: of this size, shorter ones together up to this many per transaction. A commit waits ~4 ms
#: for the disk here (500: ~9 s of commits in a 1.1M-message import); each chunk in flight
#: costs memory (2,000: 49-56 MB of RSS growth, bench W13).
IMPORT_CHUNK = 1_000
#: Retention deletes this many conversations per transaction (with their messages).
PRUNE_BATCH = 50

DEFAULT_CONVERSATION_PAGE = 20
MAX_CONVERSATION_PAGE = 100
DEFAULT_MESSAGE_PAGE = 50
MAX_MESSAGE_PAGE = 200
MAX_RECENT_MESSAGES = 200


@dataclass(frozen=True, slots=True)
class Limits:
    """The configurable size limits, with the contract's defaults; passed to validation."""

    max_content_chars: int = 100_000
    max_title_chars: int = 200
    max_metadata_bytes: int = 16 * 1024
    max_tool_calls_bytes: int = 64 * 1024
    max_summary_chars: int = 100_000
    #: A message's raw (a framework's own form of it), as UTF-8 JSON.
    max_raw_bytes: int = 256 * 1024
    #: A batch of append_messages, all its messages' content, tool_calls, metadata and raw as
    #: UTF-8 JSON, at most this many bytes.
    max_batch_bytes: int = 16 * 1024 * 1024


DEFAULT_LIMITS = Limits()
