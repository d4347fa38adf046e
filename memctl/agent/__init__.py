"""The memctl agent: keeps one vault unlocked (and its embedding model warm) for a while.

Like ssh-agent. ``memctl unlock`` unlocks in the foreground and hands the master key over a
pipe to a detached ``python -m memctl.agent``; CLI commands then talk to it over a Unix socket
in a private directory instead of unlocking themselves. See ``docs/agent.md``.

Modules:

- :mod:`memctl.agent.paths` — where the socket lives (light: stdlib only);
- :mod:`memctl.agent.protocol` — length-prefixed JSON frames, value and error encoding (light);
- :mod:`memctl.agent.client` — :class:`~memctl.agent.client.AgentClient` and the Vault proxy
  the CLI uses (light: must not import sqlcipher3, cryptography, numpy or torch);
- :mod:`memctl.agent.peer` — ``SO_PEERCRED`` checks, process hardening, key wiping;
- :mod:`memctl.agent.server` — the daemon (imports the vault core);
- :mod:`memctl.agent.launch` — starting the detached daemon and handing it the key.

Importing this package imports nothing else.
"""

from __future__ import annotations
