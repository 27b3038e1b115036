"""What no error text may carry, and the corpus of every error text the suites checked.

``LEAK_MARKERS`` is the one list: SQL as a driver would echo it, driver/ORM names and their
exception text, tracebacks and source paths, and where the database is. ``clean(text,
foreign=...)`` records a text a client received (a tool error, a JSON-RPC error message, an
HTTP body, a store exception's ``str``) and fails at once if it carries any marker or any of
``foreign``: another user's ids, names or titles.

One allowance: a message for an operator (``audience="operator"``: the store's error when it
cannot open its database, read by whoever configured it) may say where the database is, so
the ``location`` markers in ``OPERATOR_MAY_NAME`` do not count for it; every other marker does.

``CORPUS`` keeps everything recorded so the last test of the session can report on it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Literal, NamedTuple

__all__ = [
    "CORPUS",
    "LEAK_MARKERS",
    "OPERATOR_MAY_NAME",
    "Audience",
    "Corpus",
    "Marker",
    "clean",
    "internal_markers",
]

Kind = Literal["sql", "internals", "location"]
Audience = Literal["client", "operator"]


class Marker(NamedTuple):
    text: str
    kind: Kind

    def found_in(self, text: str) -> bool:
        """SQL is matched as written (``select`` is an English word); the rest in any case."""
        if self.kind == "sql":
            return self.text in text
        return self.text.lower() in text.lower()


def _kind(kind: Kind, *texts: str) -> tuple[Marker, ...]:
    return tuple(Marker(text, kind) for text in texts)


#: Everything that must never reach a client.
LEAK_MARKERS: tuple[Marker, ...] = (
    *_kind(
        "sql", "SELECT", "INSERT", "UPDATE", "DELETE FROM", "WHERE ", "RETURNING", "jsonb", "$1"
    ),
    *_kind(
        "internals",
        # drivers and the ORM
        "asyncpg",
        "aiosqlite",
        "sqlite3",
        "psycopg",
        "tortoise",
        # their exception text
        "exception",
        "Multiple exceptions",
        "Errno",
        "OSError",
        "ConnectionRefused",
        "Connect call failed",
        "duplicate key",
        "violates",
        "constraint",
        "syntax error",
        "0x",
        # tracebacks and source files
        "Traceback",
        'File "',
        "/work/",
        "site-packages",
        ".py",
    ),
    *_kind("location", "127.0.0.1", "/tmp", "postgres://"),
)

#: The marker kinds an operator-facing message may contain: it names the database's host and
#: port ("cannot reach the database: PostgreSQL at 127.0.0.1:5432, database x").
OPERATOR_MAY_NAME: frozenset[Kind] = frozenset({"location"})


def internal_markers(
    text: str, foreign: Iterable[str] = (), *, audience: Audience = "client"
) -> list[str]:
    """What in ``text`` must not reach its ``audience`` (empty when it is clean)."""
    allowed = OPERATOR_MAY_NAME if audience == "operator" else frozenset()
    found = [m.text for m in LEAK_MARKERS if m.kind not in allowed and m.found_in(text)]
    found += [f"foreign:{item}" for item in foreign if item and item in text]
    return found


@dataclass(frozen=True)
class Entry:
    text: str
    foreign: tuple[str, ...]
    audience: Audience

    def markers(self) -> list[str]:
        return internal_markers(self.text, self.foreign, audience=self.audience)


@dataclass
class Corpus:
    entries: list[Entry] = field(default_factory=list)

    def check(
        self, text: str, *, foreign: Iterable[str] = (), audience: Audience = "client"
    ) -> str:
        """Record ``text`` and assert it carries nothing internal nor any of ``foreign``."""
        entry = Entry(text, tuple(foreign), audience)
        self.entries.append(entry)
        markers = entry.markers()
        assert not markers, f"internal detail {markers} in an error for the {audience}: {text!r}"
        return text

    @property
    def texts(self) -> list[str]:
        return [entry.text for entry in self.entries]

    def leaking(self) -> dict[str, list[str]]:
        """Every recorded text that carries a marker, re-checked as it was recorded."""
        return {e.text: markers for e in self.entries if (markers := e.markers())}

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


#: The session's corpus: every text any suite checked through ``clean``.
CORPUS = Corpus()


def clean(text: str, *, foreign: Iterable[str] = (), audience: Audience = "client") -> str:
    """Record ``text`` in ``CORPUS`` and assert it carries nothing ``audience`` must not see."""
    return CORPUS.check(text, foreign=foreign, audience=audience)
