"""Every error text the fault and attack suites see, checked for anything internal.

``clean(text, foreign=...)`` records a text a client received (a tool error, a JSON-RPC error
message, an HTTP body, a store exception's ``str``) and fails at once if it carries SQL, driver
names, a traceback, a file path, or any of ``foreign``: another user's ids, names or titles.
``CORPUS`` keeps everything recorded so the last test of the session can report on it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

__all__ = ["CORPUS", "clean", "internal_markers"]

#: Case-sensitive: SQL as a driver would echo it.
_SQL = ("SELECT", "INSERT", "UPDATE", "DELETE FROM", "WHERE ", "RETURNING", "jsonb", "$1")
#: Case-insensitive: drivers, tracebacks, paths, server internals.
_INTERNAL = (
    "asyncpg",
    "sqlite3",
    "psycopg",
    "tortoise",
    "aiosqlite",
    "traceback",
    'file "',
    "/work/",
    "site-packages",
    ".py",
    "postgres://",
    "duplicate key",
    "violates",
    "constraint",
    "syntax error",
    "exception",
    "0x",
)


@dataclass
class Corpus:
    texts: list[str] = field(default_factory=list)

    def codes(self) -> dict[str, int]:
        """How many texts of each kind: a contract code, or an HTTP 401 body/challenge."""
        counts: dict[str, int] = {}
        for text in self.texts:
            if text.startswith("{"):
                code = "http-401-body"
            elif text.startswith("Bearer "):
                code = "http-401-challenge"
            else:
                body = text.removeprefix("Error executing tool ")
                if body is not text:
                    body = body.partition(": ")[2]
                code = body.split(":", 1)[0].strip()
                if not code or " " in code or len(code) > 40:
                    code = "<no code>"
            counts[code] = counts.get(code, 0) + 1
        return counts


CORPUS = Corpus()


def internal_markers(text: str, foreign: Iterable[str] = ()) -> list[str]:
    """What in ``text`` must never reach a client (empty when it is clean)."""
    found = [marker for marker in _SQL if marker in text]
    lowered = text.lower()
    found += [marker for marker in _INTERNAL if marker in lowered]
    found += [f"foreign:{item}" for item in foreign if item and item in text]
    return found


def clean(text: str, *, foreign: Iterable[str] = ()) -> str:
    """Record ``text`` and assert it carries nothing internal nor any of ``foreign``."""
    foreign = list(foreign)
    CORPUS.texts.append(text)
    markers = internal_markers(text, foreign)
    assert not markers, f"internal detail {markers} in an error a client sees: {text!r}"
    return text
