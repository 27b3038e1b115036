"""What every handler sees: the open store and who the request acts for.

The user comes from the session, never from an argument: over HTTP the ``sub`` of the bearer
token the SDK's auth middleware verified, over stdio the one configured user.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from mcp.server.auth.middleware.auth_context import get_access_token
from mcp.server.mcpserver import Context

from store import ConversationStore, Settings

__all__ = ["AppContext", "ChatContext", "acting_user", "given_arguments", "store_of", "user_of"]


@dataclass(frozen=True, slots=True)
class AppContext:
    """The lifespan's context: the server's settings, the open store and, over stdio, the
    configured user."""

    settings: Settings
    store: ConversationStore
    stdio_user: str | None


ChatContext = Context[AppContext, Any]


def acting_user(app: AppContext) -> str:
    """The one user this request acts for.

    Over HTTP: the ``sub`` of the verified bearer token, and nothing else (an HTTP server has
    no stdio user to fall back to). Over stdio: the configured user.
    """
    token = get_access_token()
    if token is not None and token.subject:
        return token.subject
    if app.stdio_user is None:
        # Unreachable behind the SDK's RequireAuthMiddleware; refuse rather than guess (the
        # client sees an opaque internal error, which is what this would be).
        raise PermissionError("no authenticated user for this request")
    return app.stdio_user


def user_of(ctx: ChatContext) -> str:
    return acting_user(ctx.request_context.lifespan_context)


def store_of(ctx: ChatContext) -> ConversationStore:
    return ctx.request_context.lifespan_context.store


def given_arguments(ctx: ChatContext, **values: Any) -> dict[str, Any]:
    """Those of ``values`` whose argument the request carried (an explicit null included):
    for tools where leaving an argument out and sending null mean different things."""
    params = ctx.request_context.params or {}
    sent = params.get("arguments") or {}
    return {name: value for name, value in values.items() if name in sent}
