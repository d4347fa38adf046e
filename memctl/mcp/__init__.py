"""`memctl mcp`: the vault as an MCP server over stdio (docs/mcp.md).

Layout, lightest first — nothing here imports the MCP SDK at module level:

- :mod:`memctl.mcp.policy` — what a client may see and do (namespaces, read-only, erase);
- :mod:`memctl.mcp.tools` — the tools: JSON schemas, argument checks, calls into the vault;
- :mod:`memctl.mcp.launcher` — start-up: answers ``initialize``/``tools/list`` while the SDK
  loads in the background, then hands the connection to it;
- :mod:`memctl.mcp.server` — the SDK's low-level server and the vault thread;
- :mod:`memctl.mcp.bench` — recall round trips through a real server, for ``memctl bench``.
"""

from __future__ import annotations
