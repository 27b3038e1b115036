"""``python -m mcp_server``: the plain stdio entry (same as ``chatstore serve``)."""

from mcp_server.cli import main

raise SystemExit(main(["serve"]))
