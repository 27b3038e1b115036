"""The store's errors. Every failure a caller can see is one of these:

    StoreError                 base; ``code`` is the contract's error code
    ├── NotFound               ``not_found``: no such conversation *for this user*
    ├── InvalidArgument        ``invalid_argument``: the input breaks a contract rule
    │   └── BadImportLine      a line of an import file does (``line`` is its number)
    ├── Conflict               ``conflict``: an idempotency key reused for a different message
    ├── LimitExceeded          ``limit_exceeded``: a configured quota is reached; nothing was
    │                          written
    └── Unavailable            ``unavailable``: the database cannot be reached right now;
        │                      nothing was half-written and retrying is safe
        ├── SchemaBehind       the database is not migrated to head (an operator must act)
        └── NotOpen            the store was not opened, or has been closed

Messages are written for the caller: they never carry SQL, driver text, paths or another
user's data. Driver exceptions are translated once, by the guard every call runs under
(``store._guard.Guard``); input is refused before any database work (``store.schemas``).
"""

from __future__ import annotations

from typing import ClassVar

__all__ = [
    "BadImportLine",
    "Conflict",
    "InvalidArgument",
    "LimitExceeded",
    "NotFound",
    "NotOpen",
    "SchemaBehind",
    "StoreError",
    "Unavailable",
]


class StoreError(Exception):
    code: ClassVar[str] = "internal"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return f"{self.code}: {self.message}"


class NotFound(StoreError):
    code = "not_found"


class InvalidArgument(StoreError):
    code = "invalid_argument"


class BadImportLine(InvalidArgument):
    """A line of an import breaks the format or a rule; the conversations before it were
    imported, the one it is part of was not."""

    def __init__(self, line: int, reason: str) -> None:
        super().__init__(f"line {line}: {reason}")
        self.line = line


class Conflict(StoreError):
    code = "conflict"


class LimitExceeded(StoreError):
    code = "limit_exceeded"


class Unavailable(StoreError):
    code = "unavailable"


class SchemaBehind(Unavailable):
    pass


class NotOpen(Unavailable):
    def __init__(self, message: str = "the store is not open") -> None:
        super().__init__(message)
