"""chatstore through PgBouncer in transaction pooling mode, beyond the store tests marked
``pgbouncer`` (tests/conftest.py): CHATSTORE_DB_STATEMENT_CACHE_SIZE reaches both the store's
pool and aerich's connection (a URL's own statement_cache_size wins), a new database migrates
through PgBouncer, and a startup parameter PgBouncer refuses is named in one line."""

from __future__ import annotations

import pytest

from store import migrate
from store.backends.postgres import PostgresBackend, _pool_options
from store.errors import Unavailable
from store.settings import Settings
from store.store import ConversationStore
from tests.conftest import create_postgres_database, drop_postgres_database
from tests.pgbouncer import PgBouncer

pytestmark = pytest.mark.postgres_only

URL = "postgres://chatstore@127.0.0.1:6432/chatstore"


@pytest.mark.parametrize(
    ("url", "setting", "expected"),
    [(URL, 100, 100), (URL, 0, 0), (URL + "?statement_cache_size=0", 100, 0)],
)
def test_the_statement_cache_setting_reaches_the_store_and_aerich(
    url: str, setting: int, expected: int
) -> None:
    settings = Settings(database_url=url, db_statement_cache_size=setting)
    connection = PostgresBackend.tortoise_connection(settings)["credentials"]
    assert (
        _pool_options(settings)["statement_cache_size"],
        connection["statement_cache_size"],
    ) == (
        expected,
        expected,
    )


async def test_a_new_database_migrates_and_serves_through_pgbouncer(
    postgres_url: str, pgbouncer: PgBouncer
) -> None:
    del postgres_url  # only here to skip (or fail) when PostgreSQL is not reachable
    direct = await create_postgres_database("chatstore_bounced")
    try:
        settings = Settings(database_url=pgbouncer.url(direct), db_statement_cache_size=0)
        assert await migrate.upgrade(settings) == migrate.shipped_versions("postgres")
        async with ConversationStore(settings) as store:
            conversation = await store.create_conversation(user="u")
            await store.append_message(
                user="u", conversation_id=conversation.id, role="user", content="lighthouses"
            )
            assert (await store.search_messages(user="u", query="lighthouse")).results
    finally:
        await drop_postgres_database(direct)


async def test_a_startup_parameter_pgbouncer_refuses_is_named(
    postgres_url: str, pgbouncer: PgBouncer
) -> None:
    url = pgbouncer.url(postgres_url) + "?schema=public"
    with pytest.raises(Unavailable) as info:
        await ConversationStore(Settings(database_url=url, db_statement_cache_size=0)).open()
    text = str(info.value)
    assert "refused the connection (unsupported startup parameter: search_path)" in text, text
    assert len(text.splitlines()) == 1
