"""`memctl model show|set`: the vault's pinned embedding model, and re-embedding."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from memctl.cli import common
from memctl.cli.common import JsonOpt, KeyFileOpt, PassCmdOpt, PassFileOpt, VaultOpt

model_app = common.sub_app("The embedding model: show it, or change it (re-embeds everything).")


@model_app.command("show")
def show(
    vault: VaultOpt = None,
    passphrase_file: PassFileOpt = None,
    passphrase_command: PassCmdOpt = None,
    key_file: KeyFileOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """The pinned model: name, dimension and weights hash (or none: keyword only)."""
    with common.open_vault(vault, passphrase_file, passphrase_command, key_file) as v:
        pin = v.status()["model"]
    if json_out:
        common.print_json(pin)
    elif pin:
        typer.echo(f"{pin['name']}  dim={pin['dim']}  weights sha256={pin['weights_sha256']}")
    else:
        typer.echo("none (keyword-only vault)")


@model_app.command("set")
def set_(
    spec: Annotated[
        str,
        typer.Argument(help="default, a local model directory, hashing-<dim>, or none."),
    ],
    vault: VaultOpt = None,
    passphrase_file: PassFileOpt = None,
    passphrase_command: PassCmdOpt = None,
    key_file: KeyFileOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Switch models and re-embed every record (resumable: run it again after an interruption)."""
    with common.open_vault(
        vault, passphrase_file, passphrase_command, key_file, use_agent=False
    ) as v:
        total = v.status()["records"]
        model = None if spec.lower() == "none" else spec
        if sys.stderr.isatty() and model:
            from rich.progress import Progress

            with Progress(console=common.console(stderr=True), transient=True) as bar:
                task = bar.add_task("embedding", total=total)
                result = v.set_model(model, progress=lambda n: bar.advance(task, n))
        else:
            result = v.set_model(model)
    if json_out:
        common.print_json(result)
    else:
        name = result["model"]["name"] if result["model"] else "none"
        common.info(f"model {name}; embedded {result['embedded']} record(s)")
