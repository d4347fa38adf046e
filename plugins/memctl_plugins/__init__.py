"""memctl's built-in sources, as plugins.

Each module here is an ordinary memctl plugin (it implements ``memctl_sources`` from
:mod:`memctl.ingest.hookspecs`) and is registered exactly like a third-party one; see
``docs/plugins.md``. They are installed with memctl itself, so their version is memctl's.

- :mod:`.markdown` — Markdown and plain-text notes (files and folders)
- :mod:`.records` — JSON / JSONL records with a field mapping
- :mod:`.mail` — mbox mailboxes and ``.eml`` messages
- :mod:`.chat` — ChatGPT and Claude ``conversations.json`` exports
- :mod:`.shell` — bash and zsh history
- :mod:`.bookmarks` — Firefox ``places.sqlite`` and Chromium ``Bookmarks``
"""
