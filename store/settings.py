"""chatstore configuration: every knob, read from ``CHATSTORE_*`` environment variables."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import platformdirs
from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

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
    max_content_chars: int = Field(default=100_000, ge=1)
    max_title_chars: int = Field(default=200, ge=1)
    max_metadata_bytes: int = Field(default=16 * 1024, ge=2)
    max_tool_calls_bytes: int = Field(default=64 * 1024, ge=2)

    # Connection handling. A call that cannot get an answer from the database within
    # db_timeout seconds fails with `unavailable` instead of hanging.
    db_pool_min: int = Field(default=1, ge=0)
    db_pool_max: int = Field(default=10, ge=1)
    db_connect_timeout: float = Field(default=5.0, gt=0)
    db_timeout: float = Field(default=15.0, gt=0)

    # Identity.
    user: str | None = Field(default=None, description="The stdio user; unset: OS login name.")
    jwt_secret: SecretStr | None = None
    jwt_public_key: SecretStr | None = None
    jwt_issuer: str | None = None
    jwt_audience: str | None = None
    jwt_leeway: float = Field(default=0.0, ge=0)

    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"

    @model_validator(mode="after")
    def _pool_bounds(self) -> Settings:
        if self.db_pool_min > self.db_pool_max:
            raise ValueError("CHATSTORE_DB_POOL_MIN must not exceed CHATSTORE_DB_POOL_MAX")
        return self

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
        from tortoise.backends.base.config_generator import expand_db_url

        if self.dialect != "sqlite":
            raise ValueError("not a SQLite database URL")
        path: str = expand_db_url(self.resolved_database_url)["credentials"]["file_path"]
        return path

    @property
    def is_embedded_default(self) -> bool:
        return not self.database_url


async def _no_session_reset(connection: Any) -> None:
    return None


def dialect_of(url: str) -> Literal["postgres", "sqlite"]:
    scheme = url.split(":", 1)[0].lower()
    if scheme in {"postgres", "postgresql", "asyncpg"}:
        return "postgres"
    if scheme == "sqlite":
        return "sqlite"
    raise ValueError(f"unsupported database URL scheme {scheme!r}: use postgres://… or sqlite://…")


def tortoise_config(settings: Settings, *, with_aerich: bool = False) -> dict[str, Any]:
    """The Tortoise config dict for ``settings`` (``with_aerich`` adds aerich's history model)."""
    # Imported lazily so that reading settings never pulls in the ORM.
    from tortoise.backends.base.config_generator import expand_db_url

    url = settings.resolved_database_url
    connection = expand_db_url(url)
    credentials: dict[str, Any] = connection["credentials"]
    if settings.dialect == "postgres":
        connection["engine"] = "tortoise.backends.asyncpg"
        credentials.setdefault("minsize", settings.db_pool_min)
        credentials.setdefault("maxsize", settings.db_pool_max)
        credentials.setdefault("timeout", settings.db_connect_timeout)
        # No asyncpg command_timeout: every store call already runs under one deadline
        # (CHATSTORE_DB_TIMEOUT, pool wait included), and a second timer per query measured
        # ~10 µs an append (bench W1).
        # chatstore never leaves session state behind (no SET, LISTEN, advisory locks or
        # cursors), so returning a connection to the pool skips asyncpg's reset query: one
        # round trip less per call. An open transaction is still rolled back.
        credentials.setdefault("reset", _no_session_reset)
        server_settings = credentials.setdefault("server_settings", {})
        server_settings.setdefault("application_name", "chatstore")
    else:
        # Several processes may share one file (a CLI beside a server): wait for the
        # writer instead of failing at once with "database is locked".
        credentials.setdefault("busy_timeout", int(settings.db_timeout * 1000))
    models = ["store.models", "aerich.models"] if with_aerich else ["store.models"]
    # The connection is named after its dialect: Tortoise caches SQL per connection name,
    # and one process (the test suite) may hold a SQLite and a PostgreSQL context at once.
    name = settings.dialect
    return {
        "connections": {name: connection},
        "apps": {APP_LABEL: {"models": models, "default_connection": name}},
        "use_tz": True,
        "timezone": "UTC",
    }
