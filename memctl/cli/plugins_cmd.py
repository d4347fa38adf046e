"""`memctl plugins`: what is loaded (built-in sources included), and plugin commands."""

from __future__ import annotations

import sys
from typing import Any

import typer

from memctl.cli import common
from memctl.cli.common import JsonOpt

# Root options that take a value: `memctl --vault V ingest ...`.
_ROOT_VALUE_OPTIONS = frozenset(
    {"--vault", "--passphrase-file", "--passphrase-command", "--key-file"}
)


def plugins(json_out: JsonOpt = False) -> None:
    """List loaded plugins: name, version, hooks and the sources each provides.

    Load problems (a plugin that fails to import, a hook that raises) are warnings on stderr;
    everything else keeps working.
    """
    from memctl.ingest.plugins import get_host, load_warnings

    host = get_host()
    rows = host.list_plugins()
    sources = host.sources()
    for row in rows:
        row["source_details"] = [
            {
                "name": name,
                "description": sources[name].description,
                "kind": sources[name].kind,
                "options": dict(sources[name].options),
            }
            for name in row["sources"]
            if name in sources
        ]
    for warning in load_warnings():
        sys.stderr.write(f"memctl: warning: {warning}\n")
    if json_out:
        common.print_json(rows)
        return
    if common.stdout_is_tty():
        _table(rows)
        return
    for row in rows:
        origin = "builtin" if row["builtin"] else "plugin"
        typer.echo(
            "\t".join(
                [
                    row["name"],
                    row["version"],
                    origin,
                    ",".join(row["hooks"]),
                    ",".join(row["sources"]),
                ]
            )
        )


def _table(rows: list[dict[str, Any]]) -> None:
    from rich.table import Table

    table = Table("plugin", "version", "hooks", "sources", box=None, pad_edge=False)
    for row in rows:
        name = row["name"] + ("" if row["builtin"] else " (installed)")
        sources = ", ".join(f"{s['name']}: {s['description']}" for s in row["source_details"])
        table.add_row(name, row["version"], ", ".join(row["hooks"]), sources or "-")
    common.console().print(table)


def command_name(argv: list[str]) -> str | None:
    """The command word of a memctl command line (root options and their values skipped)."""
    skip = False
    for arg in argv:
        if skip:
            skip = False
            continue
        if arg == "--":
            return None
        if arg.startswith("-"):
            skip = arg in _ROOT_VALUE_OPTIONS
            continue
        return arg
    return None


def register_plugin_commands(app: typer.Typer, argv: list[str] | None = None) -> None:
    """Add the commands of plugins (hook ``memctl_commands``) to ``app``.

    Only when they can matter: a command line naming one of memctl's own commands never pays
    for loading plugins; `memctl`, `memctl --help` and an unknown command word do. A plugin
    that fails is a warning (shown by `memctl plugins`), never a broken CLI.
    """
    builtin = {c.name for c in app.registered_commands if c.name}
    builtin |= {g.name for g in app.registered_groups if g.name}
    word = command_name(list(sys.argv[1:] if argv is None else argv))
    if word in builtin:
        return
    try:
        from memctl.ingest.plugins import get_host

        get_host().register_commands(app)
    except Exception as exc:  # the CLI must work whatever a plugin does
        sys.stderr.write(f"memctl: warning: plugin commands unavailable ({type(exc).__name__})\n")
