"""The `memctl` command line.

The console entry point :func:`main` imports nothing heavy: ``memctl recall`` served by a
running agent goes through :mod:`memctl.cli.fast` (stdlib + the agent client, no typer, click or
rich); everything else, and any recall the fast path is not sure to print exactly as the Typer
command would, runs the Typer application in :mod:`memctl.cli.application` (building only the
subcommand that runs).
``from memctl.cli import app`` still gives that application (loaded on first use).
"""

from __future__ import annotations

import sys
from typing import Any


def main() -> None:
    argv = sys.argv[1:]
    if "recall" in argv:
        from memctl.cli import fast

        code = fast.run(argv)
        if code is not None:
            sys.exit(code)
    from memctl.cli import application

    application.main()


def __getattr__(name: str) -> Any:
    if name == "app":
        from memctl.cli.application import app

        return app
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
