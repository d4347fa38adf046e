"""`memctl recall`, `get` and `list`."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from memctl.cli import common
from memctl.cli.common import JsonOpt, KeyFileOpt, PassCmdOpt, PassFileOpt, VaultOpt
from memctl.cli.fast import _explain  # one formatter for both paths (the fast path is light)

NamespaceOpt = Annotated[
    list[str] | None, typer.Option("--namespace", "-n", help="Only this namespace (repeatable).")
]
TagOpt = Annotated[list[str] | None, typer.Option("--tag", "-t", help="Must have this tag.")]
LimitOpt = Annotated[int, typer.Option("--limit", "-l", help="At most this many results.")]
JsonlOpt = Annotated[bool, typer.Option("--jsonl", help="Print one JSON object per line.")]


def recall(
    query: Annotated[str, typer.Argument(help="What to look for, in your own words.")],
    mode: Annotated[
        str | None, typer.Option(help="keyword, vector or hybrid (default: best available).")
    ] = None,
    limit: LimitOpt = 10,
    namespace: NamespaceOpt = None,
    tag: TagOpt = None,
    kind: Annotated[list[str] | None, typer.Option(help="Only this kind.")] = None,
    source: Annotated[str | None, typer.Option(help="Source URI or prefix.")] = None,
    since: Annotated[str | None, typer.Option(help="From this date/time or age (7d).")] = None,
    until: Annotated[str | None, typer.Option(help="Up to this date/time or age.")] = None,
    min_trust: Annotated[
        str | None, typer.Option(help="Minimum trust: agent, import or person.")
    ] = None,
    explain: Annotated[bool, typer.Option(help="Show each component's rank and score.")] = False,
    vault: VaultOpt = None,
    passphrase_file: PassFileOpt = None,
    passphrase_command: PassCmdOpt = None,
    key_file: KeyFileOpt = None,
    json_out: JsonOpt = False,
    jsonl: JsonlOpt = False,
) -> None:
    """Find memories. Any text is a valid query."""
    with common.open_vault(vault, passphrase_file, passphrase_command, key_file) as v:
        common.load_model_with_spinner(v, mode)
        hits = v.recall(
            query,
            mode=mode,
            limit=limit,
            explain=explain,
            namespace=namespace,
            tags=tag,
            kind=kind,
            source=source,
            since=since,
            until=until,
            min_trust=min_trust,
        )
    render_hits(hits, json_out=json_out, jsonl=jsonl, explain=explain)


def render_hits(
    hits: list[dict[str, Any]], *, json_out: bool, jsonl: bool, explain: bool = False
) -> None:
    if json_out:
        common.print_json(hits)
        return
    if jsonl:
        common.print_jsonl(hits)
        return
    if not hits:
        common.info("no matches")
        return
    if common.stdout_is_tty():
        from rich.table import Table

        table = Table(show_lines=False, expand=True)
        table.add_column("id", no_wrap=True, style="cyan")
        table.add_column("score", justify="right", no_wrap=True)
        table.add_column("when", no_wrap=True)
        table.add_column("memory", ratio=1)
        if explain:
            table.add_column("explain", no_wrap=True)
        for h in hits:
            when = (h.get("observed_at") or h.get("ingested_at") or "")[:10]
            text = h.get("snippet") or h["text"]
            title = f"[bold]{_esc(h['title'])}[/bold]\n" if h.get("title") else ""
            row = [h["id"], f"{h['score']:.3f}", when, title + _esc(common.one_line(text, 300))]
            if explain:
                row.append(_explain(h))
            table.add_row(*row)
        common.console().print(table)
        return
    for h in hits:
        line = f"{h['id']}\t{h['score']:.4g}\t{h['namespace']}\t{common.one_line(h['text'], 200)}"
        if explain:
            line += "\t" + _explain(h)
        typer.echo(line)


def _esc(text: str) -> str:
    from rich.markup import escape

    return escape(text)


def get(
    record_id: Annotated[str, typer.Argument(help="Record id (or a unique prefix).")],
    versions: Annotated[bool, typer.Option(help="Include earlier versions.")] = False,
    vault: VaultOpt = None,
    passphrase_file: PassFileOpt = None,
    passphrase_command: PassCmdOpt = None,
    key_file: KeyFileOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Show one memory in full."""
    with common.open_vault(vault, passphrase_file, passphrase_command, key_file) as v:
        record = v.get(record_id, versions=versions)
    if json_out:
        common.print_json(record)
        return
    for key in (
        "id",
        "title",
        "namespace",
        "kind",
        "tags",
        "source",
        "locator",
        "observed_at",
        "ingested_at",
        "updated_at",
        "actor",
        "trust_name",
        "version",
    ):
        value = record.get(key)
        if value in (None, "", []):
            continue
        if isinstance(value, list):
            value = ", ".join(value)
        typer.echo(f"{key + ':':<13}{value}")
    typer.echo("")
    typer.echo(record["text"])
    for ver in record.get("versions", []):
        typer.echo(f"\n--- version {ver['version']} (replaced {ver['replaced_at']}) ---")
        typer.echo(ver["text"])


def list_(
    limit: LimitOpt = 20,
    namespace: NamespaceOpt = None,
    tag: TagOpt = None,
    kind: Annotated[list[str] | None, typer.Option(help="Only this kind.")] = None,
    vault: VaultOpt = None,
    passphrase_file: PassFileOpt = None,
    passphrase_command: PassCmdOpt = None,
    key_file: KeyFileOpt = None,
    json_out: JsonOpt = False,
    jsonl: JsonlOpt = False,
) -> None:
    """List memories, newest first."""
    with common.open_vault(vault, passphrase_file, passphrase_command, key_file) as v:
        records = v.list(limit=limit, namespace=namespace, tags=tag, kind=kind)
    if json_out:
        common.print_json(records)
    elif jsonl:
        common.print_jsonl(records)
    else:
        for r in records:
            when = (r.get("observed_at") or r["ingested_at"])[:19]
            label = r.get("title") or r["text"]
            typer.echo(f"{r['id']}\t{when}\t{r['namespace']}\t{common.one_line(label, 100)}")
