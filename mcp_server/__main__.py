"""``python -m mcp_server``: the plain stdio entry, the same as ``chatstore serve`` (its
options and ``--help`` included)."""

import sys

from mcp_server.cli import main

raise SystemExit(main(["serve", *sys.argv[1:]]))
