"""The hooks a memctl plugin can implement (pluggy project name ``"memctl"``).

A plugin is a module (or object) registered under the ``memctl`` entry-point group whose
functions carry the :data:`hookimpl` marker::

    from memctl.ingest.hookspecs import hookimpl

    @hookimpl
    def memctl_sources():
        return [SourceSpec(...)]

memctl's own sources (``plugins/memctl_plugins``) use exactly these hooks. Every hook here is
documented in ``docs/plugins.md``; a test checks that.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pluggy

if TYPE_CHECKING:
    import typer

    from memctl.ingest.sources import SourceSpec

PROJECT = "memctl"

hookspec = pluggy.HookspecMarker(PROJECT)
#: Decorate a plugin's hook functions with this.
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec
def memctl_sources() -> list[SourceSpec]:  # type: ignore[empty-body]
    """Return the input formats this plugin can ingest, as :class:`SourceSpec` objects.

    Called once per process when sources are first needed. Source names are global: a name
    already taken (built-ins are loaded first) is refused with a warning. Must be cheap: import
    heavy parsers inside ``iter_items``, not at module level.
    """


@hookspec
def memctl_commands(app: typer.Typer) -> None:
    """Add commands to memctl's command line: ``app.add_typer(sub_app, name="...")`` or
    ``app.command()(fn)``.

    Called while the CLI is being built, so keep it fast and import nothing heavy. Commands
    must follow memctl's CLI rules: raise ``memctl.errors`` exceptions, never print secrets.
    """
