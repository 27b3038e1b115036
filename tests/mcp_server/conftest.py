"""Fixtures for the in-process MCP tests: two servers, two users, one store.

``server`` serves ``user`` and ``other_server`` serves ``other_user``; both share the
backend-parametrized ``store`` from ``tests/conftest.py``, so every test here runs on SQLite and
on PostgreSQL. The servers are plain objects: tests open their ``mcp.Client`` in the test body
(``async with Client(server) as client``), never in a fixture.
"""

from __future__ import annotations

import pytest

from mcp_server.server import ChatstoreServer, create_server
from store import ConversationStore, Settings


@pytest.fixture
def server(settings: Settings, store: ConversationStore, user: str) -> ChatstoreServer:
    return create_server(settings, stdio_user=user, store=store)


@pytest.fixture
def other_server(settings: Settings, store: ConversationStore, other_user: str) -> ChatstoreServer:
    return create_server(settings, stdio_user=other_user, store=store)
