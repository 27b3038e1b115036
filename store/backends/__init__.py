"""The databases chatstore runs on, one module each; ``backend_class`` picks one for a URL."""

from __future__ import annotations

from store.backends.base import Backend, Duplicate, ImportClash, Position, QuotaReached, Window
from store.backends.postgres import PostgresBackend
from store.backends.sqlite import SqliteBackend
from store.settings import Settings

__all__ = [
    "Backend",
    "Duplicate",
    "ImportClash",
    "Position",
    "QuotaReached",
    "Window",
    "backend_class",
]

_BACKENDS: dict[str, type[Backend]] = {"postgres": PostgresBackend, "sqlite": SqliteBackend}


def backend_class(settings: Settings) -> type[Backend]:
    """The backend for ``settings``' database URL."""
    return _BACKENDS[settings.dialect]
