"""`memctl audit ID | log | verify | repair`, `memctl backup` and `memctl restore`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from memctl.cli import common
from memctl.cli.common import JsonOpt, KeyFileOpt, PassCmdOpt, PassFileOpt, VaultOpt
from memctl.errors import ExitCode


class AuditGroup(common.MemctlGroup):
    """`memctl audit ID` is `memctl audit show ID`: an unknown subcommand is a record id."""

    def resolve_command(self, ctx: Any, args: list[str]) -> Any:
        if args and args[0] not in self.commands and not args[0].startswith("-"):
            args = ["show", *args]
        return super().resolve_command(ctx, args)


audit_app = typer.Typer(
    help="Provenance and the tamper-evident history: audit ID | log | verify | repair.",
    cls=AuditGroup,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)


@audit_app.command("show")
def show(
    record_id: Annotated[str, typer.Argument(help="Record id (erased records too).")],
    vault: VaultOpt = None,
    passphrase_file: PassFileOpt = None,
    passphrase_command: PassCmdOpt = None,
    key_file: KeyFileOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """A record's provenance: source, actor, plugin, times, every version — or its erasure."""
    with common.open_vault(vault, passphrase_file, passphrase_command, key_file) as v:
        info = v.audit(record_id)
    if json_out:
        common.print_json(info)
        return
    if info["erased"]:
        typer.echo(f"{info['id']}: erased {info['erased_at']} by {info['erased_by']}")
        typer.echo(f"receipt {info['receipt_id']}; content destroyed (events unreadable):")
    else:
        for key in (
            "id",
            "namespace",
            "source",
            "locator",
            "actor",
            "trust",
            "plugin",
            "ingested_at",
            "updated_at",
            "version",
        ):
            if info.get(key) not in (None, ""):
                typer.echo(f"{key + ':':<13}{info[key]}")
        typer.echo("history:")
    for e in info["events"]:
        payload = e.get("payload") or {}
        detail = ""
        if "changed" in payload:
            detail = " changed: " + ", ".join(payload["changed"])
        elif e["op"] in ("ingest",) and payload:
            detail = f" v{payload.get('version')} via {payload.get('actor')}"
        readable = "" if e["readable"] else " [unreadable]"
        typer.echo(f"  {e['time'] or '?':<28} {e['op']:<10} {e['actor'] or '?'}{detail}{readable}")


@audit_app.command("log")
def log(
    since: Annotated[str | None, typer.Option(help="From this date/time or age (7d).")] = None,
    actor: Annotated[
        str | None, typer.Option(help="Only this actor (cli, cron:JOB, mcp:, mcp:NAME).")
    ] = None,
    op: Annotated[
        str | None, typer.Option(help="Only this operation (ingest, erase, ...).")
    ] = None,
    limit: Annotated[int, typer.Option(help="At most this many commits.")] = 50,
    vault: VaultOpt = None,
    passphrase_file: PassFileOpt = None,
    passphrase_command: PassCmdOpt = None,
    key_file: KeyFileOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """The history of changes, newest first (ids, operations, counts and times only)."""
    from datetime import datetime

    from memctl.timeutil import parse_bound

    bound = parse_bound(since, what="--since")
    since_dt = datetime.fromisoformat(bound.replace("Z", "+00:00")) if bound else None
    with common.open_vault(vault, passphrase_file, passphrase_command, key_file) as v:
        rows = v.audit_log(since=since_dt, actor=actor, op=op, limit=limit)
    if json_out:
        common.print_json(rows)
        return
    for r in rows:
        typer.echo(
            f"{r['seq']:>6} {r['time'][:19]} {r['op']:<10} {r['actor']:<20} "
            f"{r['events']} event(s) {r['commit'][:12]}"
        )


@audit_app.command("verify")
def verify(
    vault: VaultOpt = None,
    passphrase_file: PassFileOpt = None,
    passphrase_command: PassCmdOpt = None,
    key_file: KeyFileOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Check every signature and MAC, the chain, and that database and journal agree."""
    with common.open_vault(vault, passphrase_file, passphrase_command, key_file) as v:
        report = v.audit_verify()
        report["index"] = v.integrity_check()
    if json_out:
        common.print_json(report)
    elif report["ok"]:
        typer.echo(
            f"ok: {report['commits_checked']} commits, {report['events_checked']} events, "
            f"{report['records']} records; {report['events_unreadable']} events of erased "
            "records unreadable (as they should be)"
        )
    else:
        for problem in report["problems"]:
            typer.echo(f"FAIL: {problem}", err=True)
    if not report["ok"]:
        raise typer.Exit(int(ExitCode.CORRUPT))


@audit_app.command("repair")
def repair(
    vault: VaultOpt = None,
    passphrase_file: PassFileOpt = None,
    passphrase_command: PassCmdOpt = None,
    key_file: KeyFileOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """After a crash: void a half-written journal commit, record events the journal lacks."""
    with common.open_vault(vault, passphrase_file, passphrase_command, key_file) as v:
        result = v.audit_repair()
        result["verify"] = v.audit_verify()
    if json_out:
        common.print_json(result)
    else:
        for action in result["actions"] or ["nothing to repair"]:
            typer.echo(action)
    if not result["verify"]["ok"]:
        raise typer.Exit(int(ExitCode.CORRUPT))


def backup(
    dest: Annotated[Path, typer.Argument(help="A new directory for the backup.")],
    vault: VaultOpt = None,
    passphrase_file: PassFileOpt = None,
    passphrase_command: PassCmdOpt = None,
    key_file: KeyFileOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """An encrypted, consistent online copy: header, database and journal (a git clone)."""
    with common.open_vault(vault, passphrase_file, passphrase_command, key_file) as v:
        info = v.backup(dest)
    if json_out:
        common.print_json(info)
    else:
        common.info(f"backed up {info['records']} records to {dest}")


def restore(
    src: Annotated[Path, typer.Argument(help="A backup made by `memctl backup`.")],
    vault: VaultOpt = None,
    passphrase_file: PassFileOpt = None,
    passphrase_command: PassCmdOpt = None,
    key_file: KeyFileOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Restore a backup into a new vault directory (--vault), then verify it."""
    from memctl.vault.backup import restore as _restore

    target = vault or common.state().vault
    report = _restore(
        src, target, common.credentials(passphrase_file, passphrase_command, key_file)
    )
    if json_out:
        common.print_json(report)
    else:
        common.info(f"restored {report['records']} records to {report['vault']}; audit verify ok")
