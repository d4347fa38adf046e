"""`memctl inbox add|list|import`: the sealed inbox (docs/ingest.md)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from memctl.cli import common
from memctl.cli.common import JsonOpt, KeyFileOpt, PassCmdOpt, PassFileOpt, VaultOpt
from memctl.cli.ingest_cmd import JobOpt, QuietOpt, parse_options, progress_display, render
from memctl.errors import ExitCode, UsageError

inbox_app = common.sub_app(
    "The sealed inbox: key-less writers (cron, scripts) leave encrypted memories there; "
    "the next unlock imports them."
)


def _vault_path(vault: Path | None) -> Path:
    from memctl.vault.core import resolve_path

    return resolve_path(vault or common.state().vault)


@inbox_app.command("add")
def add(
    paths: Annotated[
        list[str] | None, typer.Argument(help="Files or folders to seal; - reads stdin.")
    ] = None,
    text: Annotated[str | None, typer.Option("--text", help="Seal this text.")] = None,
    tag: Annotated[list[str] | None, typer.Option("--tag", help="Tag (repeatable).")] = None,
    namespace: Annotated[str, typer.Option(help="Namespace to store into.")] = "default",
    kind: Annotated[str | None, typer.Option(help="Record kind (note, document, ...).")] = None,
    title: Annotated[str | None, typer.Option(help="Title for --text or stdin.")] = None,
    source: Annotated[str | None, typer.Option(help="Source URI to record.")] = None,
    observed_at: Annotated[str | None, typer.Option(help="When it happened (ISO-8601).")] = None,
    source_type: Annotated[
        str | None, typer.Option("--source-type", help="Force this source for files.")
    ] = None,
    option: Annotated[
        list[str] | None,
        typer.Option("--option", "-o", help="A source option KEY=VALUE (repeatable)."),
    ] = None,
    job: JobOpt = None,
    quiet: QuietOpt = False,
    vault: VaultOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Seal memories for the vault without its passphrase (reads only the public inbox key).

    Envelopes go to VAULT/inbox/ and are imported by the next command that unlocks the vault,
    as actor `inbox` (or `cron:NAME` with --job), trust level import.
    """
    from memctl.ingest.pipeline import IngestConfig, job_actor, run_seal

    quiet = quiet or common.state().quiet
    paths = list(paths or [])
    if text is None and not paths:
        if sys.stdin.isatty():
            raise typer.BadParameter("give --text TEXT, PATH..., or - for stdin")
        paths = ["-"]
    if paths.count("-") > 1:
        raise UsageError("- (stdin) can be given once")
    config = IngestConfig(
        namespace=namespace,
        tags=list(tag or []),
        kind=kind,
        title=title,
        source=source,
        observed_at=observed_at,
        source_type=source_type,
        options=parse_options(option),
        actor=job_actor(job) if job else "inbox",
    )
    stdin = sys.stdin.buffer.read() if "-" in paths else None
    with progress_display(quiet) as progress:
        report, _ = run_seal(
            _vault_path(vault), paths, text=text, stdin=stdin, config=config, progress=progress
        )
    render(report, quiet=quiet, json_out=json_out)
    if report.failed:
        raise typer.Exit(int(ExitCode.PARTIAL))


@inbox_app.command("list")
def list_(vault: VaultOpt = None, json_out: JsonOpt = False) -> None:
    """Pending envelopes (no passphrase needed): count, size, oldest, and how many were rejected."""
    from memctl.ingest.inbox import pending

    info = pending(_vault_path(vault))
    if json_out:
        common.print_json(info)
        return
    typer.echo(f"pending:  {info['pending']} envelope(s), {info['bytes']} bytes")
    if info["oldest"]:
        typer.echo(f"oldest:   {info['oldest']}")
    typer.echo(f"rejected: {info['rejected']} (in {info['inbox']}/rejected)")


@inbox_app.command("import")
def import_(
    vault: VaultOpt = None,
    passphrase_file: PassFileOpt = None,
    passphrase_command: PassCmdOpt = None,
    key_file: KeyFileOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Unlock the vault here and import what waits in the inbox (any unlock does it too)."""
    from memctl.ingest.inbox import pending

    path = _vault_path(vault)
    before = pending(path)
    with common.open_vault(vault, passphrase_file, passphrase_command, key_file, use_agent=False):
        pass  # opening the vault imports the inbox
    after = pending(path)
    rejected = max(after["rejected"] - before["rejected"], 0)
    result = {
        "imported": max(before["pending"] - after["pending"] - rejected, 0),
        "rejected": rejected,
        "pending": after["pending"],
    }
    if json_out:
        common.print_json(result)
    else:
        common.info(
            f"imported {result['imported']} envelope(s), rejected {result['rejected']}, "
            f"{result['pending']} still pending"
        )
    if result["rejected"]:
        raise typer.Exit(int(ExitCode.PARTIAL))
