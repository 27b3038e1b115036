"""The chatstore MCP server: ``create_server(settings)`` builds one; nothing is built at import.

The parts: the tools (``mcp_server.tools``), the resources and the prompt
(``mcp_server.resources``), the SDK adaptation (``mcp_server._sdk``), identity
(``mcp_server.context``, ``mcp_server.auth``). Here they are put together with the lifespan
that opens the store and, over HTTP, the SDK's bearer-token auth.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from mcp.server.auth.settings import AuthSettings
from mcp.server.mcpserver import MCPServer

from mcp_server import resources
from mcp_server._sdk import ProtocolErrors, build_tools
from mcp_server.auth import JWTVerifier
from mcp_server.context import AppContext
from store import ConversationStore, Settings

__all__ = ["ChatstoreServer", "chatstore_version", "create_server"]

log = logging.getLogger("chatstore.server")

#: What ``create_server`` returns.
ChatstoreServer = MCPServer[AppContext]

INSTRUCTIONS = """\
chatstore keeps durable conversation history for the current user. Create a conversation,
append each message as it happens (role, content, and tool_calls/tool_call_id for tool use),
and read history back with list_messages or get_conversation. Pass an idempotency_key when
appending so a retried call never stores a message twice. Messages are ordered by seq."""


def create_server(
    settings: Settings,
    *,
    http: bool = False,
    stdio_user: str | None = None,
    public_url: str | None = None,
    store: ConversationStore | None = None,
) -> ChatstoreServer:
    """Build the server.

    ``http=True``: identity comes only from verified bearer JWTs (a key must be configured);
    ``public_url`` is this endpoint's URL as clients reach it (for the protected-resource
    metadata). Otherwise ``stdio_user`` is the one user served. ``store``, when given, is
    used as is and left open (tests share one between servers).
    """
    if not http and not stdio_user:
        raise ValueError("a stdio server needs the user it serves")
    served = None if http else stdio_user

    @asynccontextmanager
    async def lifespan(_: ChatstoreServer) -> AsyncIterator[AppContext]:
        if store is not None:
            yield AppContext(settings=settings, store=store, stdio_user=served)
            return
        async with ConversationStore(settings) as opened:
            log.info(
                "store open: %s database%s",
                opened.dialect,
                " (embedded default)" if settings.is_embedded_default else "",
            )
            yield AppContext(settings=settings, store=opened, stdio_user=served)

    server = ChatstoreServer(
        name="chatstore",
        title="chatstore",
        instructions=INSTRUCTIONS,
        version=chatstore_version(),
        lifespan=lifespan,
        tools=build_tools(settings.limits, max_response_bytes=settings.max_response_bytes),
        log_level=settings.log_level,
        middleware=[resources.ConversationResources()],
        **(_http_auth(settings, public_url) if http else {}),
    )
    resources.register(server)
    server.middleware.append(ProtocolErrors(server))
    return server


def _http_auth(settings: Settings, public_url: str | None) -> dict[str, Any]:
    """The SDK's bearer-token auth: every HTTP request needs a JWT the verifier accepts."""
    resource_url = public_url or "http://127.0.0.1:8000/mcp"
    issuer = settings.jwt_issuer
    return {
        "token_verifier": JWTVerifier.from_settings(settings),
        "auth": AuthSettings(
            issuer_url=issuer
            if issuer and issuer.startswith(("http://", "https://"))
            else resource_url.rsplit("/mcp", 1)[0] or resource_url,
            resource_server_url=resource_url,
            # The verifier checks `aud` itself (CHATSTORE_JWT_AUDIENCE).
            validate_token_resource=False,
        ),
    }


def chatstore_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("chatstore")
    except PackageNotFoundError:  # pragma: no cover - running from a source tree
        return "0"
