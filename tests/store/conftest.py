"""Fixtures for the store tests (the backend-parametrized ones live in ``tests/conftest.py``)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from store.settings import Settings
from store.store import ConversationStore
from tests.rawdb import RawDB


@pytest.fixture
async def raw(store: ConversationStore, settings: Settings) -> AsyncIterator[RawDB]:
    """A plain connection to the same database as ``store``, for checking what was written.

    It depends on ``store`` so that a fresh SQLite file is migrated before it is opened here.
    """
    db = await RawDB.connect(settings)
    try:
        yield db
    finally:
        await db.close()
