"""`memctl bench core`, `ingest` and `quality`: measured, never estimated."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from memctl.cli import common
from memctl.cli.common import JsonOpt

bench_app = common.sub_app("Measure speed (core, ingest) and retrieval quality (quality).")


def _progress(json_out: bool):
    def say(msg: str) -> None:
        if sys.stderr.isatty() or not json_out:
            sys.stderr.write(f"bench: {msg}\n")

    return say


@bench_app.command("core")
def core(
    records: Annotated[int, typer.Option(help="Size of the synthetic vault.")] = 10_000,
    model: Annotated[str, typer.Option(help="Embedding model (default, hashing-<dim>, path).")] = (
        "default"
    ),
    embed_limit: Annotated[
        int,
        typer.Option(
            help="Embed with the real model up to this many records; above it, "
            "synthetic unit vectors fill the store (the query is still embedded)."
        ),
    ] = 20_000,
    queries: Annotated[int, typer.Option(help="Queries per latency figure (>= 200).")] = 200,
    workdir: Annotated[Path | None, typer.Option(help="Where to build the vault.")] = None,
    json_out: JsonOpt = False,
) -> None:
    """Build a synthetic vault and measure ingest, recall, vectors, erase, journal, CLI, MCP."""
    from memctl.bench.core import run

    if records < 100:
        raise typer.BadParameter("--records must be at least 100")
    result = run(
        records,
        model=model,
        embed_limit=embed_limit,
        queries=max(200, queries),
        workdir=str(workdir) if workdir else None,
        progress=_progress(json_out),
    )
    if json_out:
        common.print_json(result)
        return
    from rich.table import Table

    table = Table(title=f"memctl bench core — {records} records")
    table.add_column("figure")
    table.add_column("value", justify="right")
    for key, value in result.items():
        table.add_row(key, f"{value:,.3f}" if isinstance(value, float) else str(value))
    common.console().print(table)


@bench_app.command("ingest")
def ingest(
    files: Annotated[int, typer.Option(help="Notes in the cron no-op folder.")] = 10_000,
    mbox_mb: Annotated[float, typer.Option(help="Size of the generated mbox, in MB.")] = 100.0,
    cli: Annotated[
        bool, typer.Option(help="Also time the no-op as a whole `memctl ingest` process.")
    ] = True,
    workdir: Annotated[Path | None, typer.Option(help="Where to build the vaults.")] = None,
    json_out: JsonOpt = False,
) -> None:
    """Ingest speed: a cron no-op over unchanged notes and a big mbox (no embeddings)."""
    from memctl.ingest.bench import run

    if files < 1:
        raise typer.BadParameter("--files must be at least 1")
    if not 0.01 <= mbox_mb <= 10_000:
        raise typer.BadParameter("--mbox-mb must be between 0.01 and 10000")
    result = run(files, mbox_mb, cli=cli, workdir=workdir, progress=_progress(json_out))
    if json_out:
        common.print_json(result)
        return
    from rich.table import Table

    table = Table(title=f"memctl bench ingest — {files} notes, {mbox_mb:g} MB mbox")
    table.add_column("figure")
    table.add_column("value", justify="right")
    for key, value in result.items():
        table.add_row(key, f"{value:,.3f}" if isinstance(value, float) else f"{value:,}")
    common.console().print(table)


@bench_app.command("quality")
def quality(
    path: Annotated[Path, typer.Argument(help="The dataset file (LoCoMo: locomo10.json).")],
    dataset: Annotated[str, typer.Option(help="Dataset format.")] = "locomo",
    model: Annotated[str, typer.Option(help="Embedding model.")] = "default",
    samples: Annotated[int | None, typer.Option(help="Only the first N conversations.")] = None,
    json_out: JsonOpt = False,
) -> None:
    """Recall@1/5/10/20 per mode and per question category, through the public API."""
    from memctl.bench.quality import KS, run

    if dataset != "locomo":
        raise typer.BadParameter("only --dataset locomo is supported")
    result = run(path, model=model, limit_samples=samples, progress=_progress(json_out))
    if json_out:
        common.print_json(result)
        return
    from rich.table import Table

    table = Table(title=f"LoCoMo evidence recall ({result['questions']} questions)")
    table.add_column("mode / category")
    for k in KS:
        table.add_column(f"R@{k}", justify="right")
    for mode in ("keyword", "vector", "hybrid"):
        table.add_row(f"[bold]{mode}[/bold]", *(f"{result[mode][f'R@{k}']:.3f}" for k in KS))
        for cat, row in result[mode]["by_category"].items():
            table.add_row(f"  {cat}", *(f"{row[f'R@{k}']:.3f}" for k in KS))
    common.console().print(table)
