"""`memctl erase` and `memctl export`: the person's rights to erasure and to their data."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Annotated

import typer

from memctl.cli import common
from memctl.cli.common import JsonOpt, KeyFileOpt, PassCmdOpt, PassFileOpt, VaultOpt
from memctl.errors import ExitCode, Refused


def erase(
    ids: Annotated[list[str] | None, typer.Argument(help="Record ids to erase.")] = None,
    query: Annotated[str | None, typer.Option(help="Erase what this keyword query finds.")] = None,
    source: Annotated[str | None, typer.Option(help="Source URI or prefix.")] = None,
    tag: Annotated[list[str] | None, typer.Option("--tag", help="Records with this tag.")] = None,
    namespace: Annotated[
        list[str] | None, typer.Option("--namespace", "-n", help="Only in this namespace.")
    ] = None,
    before: Annotated[str | None, typer.Option(help="Records from before this date/age.")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="List what would go.")] = False,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
    wait: Annotated[
        float, typer.Option(help="Seconds to wait for readers before reporting 'pending'.")
    ] = 10.0,
    vault: VaultOpt = None,
    passphrase_file: PassFileOpt = None,
    passphrase_command: PassCmdOpt = None,
    key_file: KeyFileOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Erase memories for good: no readable trace stays in the vault's files.

    Without --yes it lists what will go and asks (on a terminal) or refuses (otherwise).
    """
    selection = {
        "ids": ids or None,
        "query": query,
        "source": source,
        "tags": tag,
        "namespace": namespace,
        "before": before,
    }
    with common.open_vault(vault, passphrase_file, passphrase_command, key_file) as v:
        preview = v.erase(dry_run=True, **selection)
        victims = preview["would_erase"]
        if dry_run:
            _show(victims, json_out)
            return
        if not victims:
            if json_out:
                common.print_json({"erased": [], "dry_run": False})
            else:
                common.info("nothing matches; nothing erased")
            return
        if not yes:
            if not sys.stdin.isatty():
                raise Refused(
                    f"{len(victims)} record(s) would be erased; refusing without --yes "
                    "when not on a terminal"
                )
            _show(victims, False, to_stderr=True)
            if not typer.confirm(f"Erase these {len(victims)} record(s) for good?", err=True):
                raise Refused("erase cancelled")
        receipt = v.erase(wait=wait, **selection)
    if json_out:
        common.print_json(receipt)
    else:
        d = receipt["destroyed"]
        common.info(
            f"erased {len(receipt['erased'])} record(s): {d['rows']} rows, {d['fts_entries']} "
            f"index entries, {d['versions']} versions, {d['vector_slots']} vector slots, "
            f"{d['data_keys']} data keys; receipt {receipt['receipt_id']}"
        )
        if d.get("context_copies") or d.get("neighbour_vectors"):
            common.info(
                f"removed copies from {d['context_copies']} neighbour context(s); "
                f"{d['neighbour_vectors']} neighbour vector(s) re-embedded without the erased "
                "text (now, or when the model is next used)"
            )
    if receipt["physical"] != "complete":
        common.info(
            "memctl: physical erasure is pending: another process holds a read transaction; "
            "it will finish on the next memctl command"
        )
        raise typer.Exit(int(ExitCode.INCOMPLETE))


def _show(records: list[dict], json_out: bool, *, to_stderr: bool = False) -> None:
    if json_out:
        common.print_json({"dry_run": True, "would_erase": [r["id"] for r in records]})
        return
    out = sys.stderr if to_stderr else sys.stdout
    for r in records:
        label = r.get("title") or r["text"]
        out.write(f"{r['id']}\t{r['namespace']}\t{common.one_line(label, 80)}\n")
    if not to_stderr:
        common.info(f"{len(records)} record(s) would be erased (dry run: nothing changed)")


def export(
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Write here (0600).")] = None,
    namespace: Annotated[
        list[str] | None, typer.Option("--namespace", "-n", help="Only this namespace.")
    ] = None,
    query: Annotated[str | None, typer.Option(help="Only what this query finds.")] = None,
    erased: Annotated[
        bool, typer.Option("--erased", help="List erasure receipts (ids and times only).")
    ] = False,
    vault: VaultOpt = None,
    passphrase_file: PassFileOpt = None,
    passphrase_command: PassCmdOpt = None,
    key_file: KeyFileOpt = None,
) -> None:
    """Export your memories as JSONL, with metadata, versions and provenance."""
    with common.open_vault(vault, passphrase_file, passphrase_command, key_file) as v:
        rows = v.erased_receipts() if erased else v.export(query=query, namespace=namespace)
        if out is None:
            for row in rows:
                sys.stdout.write(json.dumps(row, ensure_ascii=False) + "\n")
        else:
            fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            count = 0
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                for count, row in enumerate(rows, 1):  # noqa: B007 - count used after
                    fh.write(json.dumps(row, ensure_ascii=False) + "\n")
            common.info(f"exported {count} {'receipt' if erased else 'record'}(s) to {out}")
