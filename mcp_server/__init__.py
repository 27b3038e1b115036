"""chatstore's MCP server: the store's operations as tools, resources and a prompt."""

from mcp_server.context import AppContext
from mcp_server.server import ChatstoreServer, create_server

__all__ = ["AppContext", "ChatstoreServer", "create_server"]
