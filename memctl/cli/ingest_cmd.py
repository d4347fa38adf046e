"""`memctl ingest`: text, stdin, files and folders into the vault."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from memctl.cli import common
from memctl.cli.common import JsonOpt, KeyFileOpt, PassCmdOpt, PassFileOpt, VaultOpt
from memctl.errors import ExitCode


def ingest(
    paths: Annotated[
        list[str] | None, typer.Argument(help="Files or folders to ingest; - reads stdin.")
    ] = None,
    text: Annotated[str | None, typer.Option("--text", help="Ingest this text.")] = None,
    tag: Annotated[list[str] | None, typer.Option("--tag", help="Tag (repeatable).")] = None,
    namespace: Annotated[str, typer.Option(help="Namespace to store into.")] = "default",
    kind: Annotated[str | None, typer.Option(help="Record kind (note, document, ...).")] = None,
    title: Annotated[str | None, typer.Option(help="Title for --text or stdin.")] = None,
    source: Annotated[str | None, typer.Option(help="Source URI to record.")] = None,
    observed_at: Annotated[str | None, typer.Option(help="When it happened (ISO-8601).")] = None,
    vault: VaultOpt = None,
    passphrase_file: PassFileOpt = None,
    passphrase_command: PassCmdOpt = None,
    key_file: KeyFileOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Add memories. Re-ingesting the same content adds nothing; a changed file is a new version."""
    from memctl.ingest.pipeline import collect_items

    paths = paths or []
    if text is None and not paths:
        if sys.stdin.isatty():
            raise typer.BadParameter("give PATH..., - for stdin, or --text TEXT")
        paths = ["-"]
    fields = {
        "namespace": namespace,
        "tags": tag or [],
        "kind": kind,
        "title": title,
        "source": source,
        "observed_at": observed_at,
    }
    items, read_errors = collect_items(paths, text=text, fields=fields)
    with common.open_vault(vault, passphrase_file, passphrase_command, key_file) as v:
        summary = v.ingest_many(items, namespace=namespace)
    summary.failed += len(read_errors)
    summary.errors = read_errors + summary.errors
    for err in summary.errors:
        sys.stderr.write(f"memctl: skipped: {err}\n")
    if json_out:
        common.print_json(summary.to_json())
    else:
        common.info(
            f"added {summary.added}, updated {summary.updated}, skipped {summary.skipped}, "
            f"failed {summary.failed}"
        )
    if summary.failed:
        raise typer.Exit(int(ExitCode.PARTIAL))
