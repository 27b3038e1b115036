"""The search query language, read the way PostgreSQL's ``websearch_to_tsquery`` reads it.

Words are all required; ``"an exact phrase"`` is one term; ``or`` between two terms makes
either enough; ``-word`` (or ``-"a phrase"``) excludes. Nothing else is syntax: quotes that
do not close, ``*``, ``:``, ``NEAR``, parentheses and the like are part of the words, so every
text is a valid query. PostgreSQL parses the text itself (``websearch_to_tsquery``); SQLite's
backend builds its FTS5 query from these terms, each one quoted, so FTS5 sees no operator a
user typed. Both return nothing for a query without a term to look for (only exclusions, or
no letters or digits at all).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

__all__ = ["Terms", "parse"]

# A quoted phrase (its closing quote optional), or a run of anything but space and quotes.
_ITEM = re.compile(r'(-?)"([^"]*)"?|(\S+?)(?=\s|"|$)')


@dataclass(frozen=True)
class Terms:
    """A query as groups of alternatives (every group must match, any one term of a group
    is enough) and exclusions; each term is a phrase of one or more words."""

    groups: list[list[str]] = field(default_factory=list)
    excluded: list[str] = field(default_factory=list)

    @property
    def searchable(self) -> bool:
        return bool(self.groups)


def _has_word(text: str) -> bool:
    return any(ch.isalnum() for ch in text)


def parse(text: str) -> Terms:
    terms = Terms()
    join_next = False
    for match in _ITEM.finditer(text):
        negated, phrase, bare = match.group(1), match.group(2), match.group(3)
        if phrase is None:
            negated = "-" if bare.startswith("-") and len(bare) > 1 else ""
            if bare.lower() == "or" and terms.groups:
                join_next = True
                continue
            phrase = bare[1:] if negated else bare
        if not _has_word(phrase):
            continue
        phrase = " ".join(phrase.split())
        if negated:
            terms.excluded.append(phrase)
        elif join_next:
            terms.groups[-1].append(phrase)
        else:
            terms.groups.append([phrase])
        join_next = False
    return terms
