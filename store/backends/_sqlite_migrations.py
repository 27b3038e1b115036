"""The Tortoise engine aerich migrates a SQLite file through: Tortoise's SQLite client, with
every migration all-or-nothing.

aerich runs a migration as ``execute_script(sql)`` plus the insert of its history row, inside
one transaction. Tortoise's client runs a script with ``sqlite3``'s ``executescript``, which
COMMITs the open transaction first: the script's statements then ran one by one, each in its
own transaction, and a process killed between two of them left tables without the history row
that says they exist (every later start: ``table "users" already exists``). Here a script run
inside a transaction is run a statement at a time on that transaction's connection, so the
DDL (transactional in SQLite), the data a migration rewrites and the history row are committed
together, or not at all.

This is the one module that reaches into Tortoise's SQLite client (``_in_transaction`` and the
transaction wrapper); ``tests/store/test_sqlite_files.py`` fails if a Tortoise upgrade moves
them.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator

from tortoise.backends.base.client import NestedTransactionContext, TransactionContext
from tortoise.backends.sqlite.client import (
    SqliteClient,
    SqliteTransactionContext,
    SqliteTransactionWrapper,
    translate_exceptions,
)

__all__ = ["MigrationClient", "client_class", "statements"]


def statements(script: str) -> Iterator[str]:
    """The statements of ``script``, in order. SQLite's own ``complete_statement`` decides
    where one ends, so a semicolon in a string literal, a comment or a trigger's body does not
    split it."""
    pending = ""
    *terminated, rest = script.split(";")
    for piece in terminated:
        pending += piece + ";"
        if sqlite3.complete_statement(pending):
            if pending.strip(" \t\r\n;"):
                yield pending
            pending = ""
    pending += rest
    if pending.strip(" \t\r\n;"):
        yield pending  # unterminated: SQLite runs it as the last statement


class _Transaction(SqliteTransactionWrapper):
    @translate_exceptions
    async def execute_script(self, query: str) -> None:
        async with self.acquire_connection() as connection:
            self.log.debug(query)
            for statement in statements(query):
                cursor = await connection.execute(statement)
                await cursor.close()

    def _in_transaction(self) -> TransactionContext:
        return NestedTransactionContext(_Transaction(self))


class MigrationClient(SqliteClient):
    """Tortoise's SQLite client whose transactions run scripts inside themselves."""

    def _in_transaction(self) -> TransactionContext:
        return SqliteTransactionContext(_Transaction(self), self._lock)


#: What Tortoise looks for in an ``engine`` module.
client_class = MigrationClient
