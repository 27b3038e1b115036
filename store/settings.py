"""chatstore configuration: every knob, read from ``CHATSTORE_*`` environment variables."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

import platformdirs
from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from store.contract import (
    DEFAULT_LIMITS,
    DEFAULT_RESUME_TOKENS,
    DEFAULT_TOKENIZER,
    MAX_CONTEXT_TOKENS,
    MAX_SEQ_CURSOR,
    MAX_TOKEN_COUNT,
    Limits,
    TokenizerName,
)

#: The Tortoise app label the models live in; aerich keys its history on it.
APP_LABEL = "models"


def default_data_dir() -> Path:
    """Where the embedded SQLite database lives when no URL is configured (XDG data dir)."""
    return Path(platformdirs.user_data_dir("chatstore", appauthor=False))


class Settings(BaseSettings):
    """All of chatstore's settings. Each field is ``CHATSTORE_<NAME>`` in the environment."""

    model_config = SettingsConfigDict(env_prefix="CHATSTORE_", extra="ignore", frozen=True)

    database_url: str | None = Field(
        default=None,
        description="Tortoise URL (postgres://… or sqlite://…); unset: an embedded SQLite file.",
    )
    data_dir: Path = Field(default_factory=default_data_dir)

    # Limits. The contract's defaults; each can be raised or lowered by an operator.
    # Counts are 32-bit: a content of N characters has at most N tokens, its tool_calls at
    # most one per byte, so each limit stays below half of MAX_TOKEN_COUNT.
    max_content_chars: int = Field(
        default=DEFAULT_LIMITS.max_content_chars, ge=1, le=MAX_TOKEN_COUNT // 2
    )
    max_title_chars: int = Field(default=DEFAULT_LIMITS.max_title_chars, ge=1)
    max_metadata_bytes: int = Field(default=DEFAULT_LIMITS.max_metadata_bytes, ge=2)
    max_tool_calls_bytes: int = Field(
        default=DEFAULT_LIMITS.max_tool_calls_bytes, ge=2, le=MAX_TOKEN_COUNT // 2
    )
    max_summary_chars: int = Field(
        default=DEFAULT_LIMITS.max_summary_chars, ge=1, le=MAX_TOKEN_COUNT
    )
    max_raw_bytes: int = Field(default=DEFAULT_LIMITS.max_raw_bytes, ge=2)
    max_batch_bytes: int = Field(default=DEFAULT_LIMITS.max_batch_bytes, ge=1)

    # Retention: `serve --http` prunes conversations idle for longer, every retention_interval
    # seconds (unset: never).
    retention_days: int | None = Field(default=None, ge=0)
    retention_interval: float = Field(default=3600.0, gt=0)

    # Quotas (unset: unlimited), enforced by the backends inside the write they bound.
    max_conversations_per_user: int | None = Field(default=None, ge=1, le=MAX_SEQ_CURSOR)
    max_messages_per_conversation: int | None = Field(default=None, ge=1, le=MAX_SEQ_CURSOR)

    # Context windows: the tokenizer that counts every message (one shipped in the
    # bpe-openai wheel: nothing is downloaded), and resume_conversation's budget.
    tokenizer: TokenizerName = DEFAULT_TOKENIZER
    resume_tokens: int = Field(default=DEFAULT_RESUME_TOKENS, ge=1, le=MAX_CONTEXT_TOKENS)

    # Connection handling. A call that cannot get an answer from the database within
    # db_timeout seconds fails with `unavailable` instead of hanging.
    db_pool_min: int = Field(default=1, ge=0)
    db_pool_max: int = Field(default=10, ge=1)
    db_connect_timeout: float = Field(default=5.0, gt=0)
    db_timeout: float = Field(default=15.0, gt=0)
    # asyncpg's prepared statements kept per connection (its default). 0 behind a pooler that
    # hands one client's statements to different server connections: PgBouncer in
    # transaction or statement mode before 1.21, or with max_prepared_statements = 0.
    db_statement_cache_size: int = Field(default=100, ge=0)

    # Identity.
    user: str | None = Field(default=None, description="The stdio user; unset: OS login name.")
    jwt_secret: SecretStr | None = None
    jwt_public_key: SecretStr | None = None
    jwt_issuer: str | None = None
    jwt_audience: str | None = None
    # Seconds of clock skew allowed on a token's exp, nbf and iat: an issuer whose clock runs a
    # few seconds ahead would otherwise mint tokens refused as "not yet valid" (iat).
    jwt_leeway: float = Field(default=30.0, ge=0, le=300)

    # Replies: a page stops early (saying has_more / next_cursor / truncated) where its reply
    # would pass this many bytes; a page always holds at least one item.
    max_response_bytes: int = Field(default=4 * 1024 * 1024, ge=64 * 1024)

    # `serve --http`: what a client may send and how slowly, enforced as it arrives, before
    # any work. The request line and headers at most http_max_header_bytes (else 431), the
    # request target at most http_max_url_bytes (414); both within http_header_timeout
    # seconds (408), the body within http_body_timeout (408); a reply the client does not
    # take within http_send_timeout seconds is dropped with its connection.
    http_max_header_bytes: int = Field(default=32 * 1024, ge=1024)
    http_max_url_bytes: int = Field(default=8 * 1024, ge=256)
    http_header_timeout: float = Field(default=10.0, gt=0)
    http_body_timeout: float = Field(default=30.0, gt=0)
    http_send_timeout: float = Field(default=30.0, gt=0)

    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    #: text: one readable line per record; json: one JSON object per line (for collectors).
    log_format: Literal["text", "json"] = "text"

    @field_validator("database_url")
    @classmethod
    def _database_url(cls, url: str | None) -> str | None:
        """A URL chatstore can open: a known scheme, and a port that is a port (Tortoise would
        otherwise fail later, with "Port is not an integer" for 99999)."""
        if not url:
            return url
        if dialect_of(url) == "postgres":
            try:
                port = urlsplit(url).port
            except ValueError:
                raise ValueError(
                    "the port in CHATSTORE_DATABASE_URL must be a number from 1 to 65535"
                ) from None
            if port == 0:
                raise ValueError("the port in CHATSTORE_DATABASE_URL must be from 1 to 65535")
        return url

    @model_validator(mode="after")
    def _pool_bounds(self) -> Settings:
        if self.db_pool_min > self.db_pool_max:
            raise ValueError("CHATSTORE_DB_POOL_MIN must not exceed CHATSTORE_DB_POOL_MAX")
        return self

    @property
    def limits(self) -> Limits:
        return Limits(
            max_content_chars=self.max_content_chars,
            max_title_chars=self.max_title_chars,
            max_metadata_bytes=self.max_metadata_bytes,
            max_tool_calls_bytes=self.max_tool_calls_bytes,
            max_summary_chars=self.max_summary_chars,
            max_raw_bytes=self.max_raw_bytes,
            max_batch_bytes=self.max_batch_bytes,
        )

    @property
    def message_quota(self) -> int:
        """The most messages a conversation may hold, as the append statements compare it
        (MAX_SEQ_CURSOR, beyond any real count, when unlimited)."""
        return self.max_messages_per_conversation or MAX_SEQ_CURSOR

    @property
    def resolved_database_url(self) -> str:
        """The configured URL, or the embedded SQLite file under ``data_dir``."""
        if self.database_url:
            return self.database_url
        return f"sqlite://{self.data_dir / 'chatstore.sqlite3'}"

    @property
    def dialect(self) -> Literal["postgres", "sqlite"]:
        return dialect_of(self.resolved_database_url)

    @property
    def sqlite_path(self) -> str:
        """The file behind a ``sqlite://`` URL, as Tortoise and aerich read it (``:memory:``
        stays as it is); the one place a SQLite URL is taken apart."""
        credentials = database_credentials(self.resolved_database_url)
        if "file_path" not in credentials:
            raise ValueError("not a SQLite database URL")
        path: str = credentials["file_path"]
        return path

    @property
    def is_embedded_default(self) -> bool:
        return not self.database_url


_DIALECTS: dict[str, Literal["postgres", "sqlite"]] = {
    "postgres": "postgres",
    "postgresql": "postgres",
    "asyncpg": "postgres",
    "sqlite": "sqlite",
}


def dialect_of(url: str) -> Literal["postgres", "sqlite"]:
    scheme = url.split(":", 1)[0].lower()
    try:
        return _DIALECTS[scheme]
    except KeyError:
        raise ValueError(
            f"unsupported database URL scheme {scheme!r}: use postgres://… or sqlite://…"
        ) from None


def database_credentials(url: str) -> dict[str, Any]:
    """``url`` taken apart as Tortoise (and so aerich) reads it: host, port, user, password and
    database, or a SQLite ``file_path``; query parameters become further keys."""
    # Imported lazily so that reading settings never pulls in the ORM.
    from tortoise.backends.base.config_generator import expand_db_url

    credentials: dict[str, Any] = expand_db_url(url)["credentials"]
    return credentials
