"""`memctl ingest`: text, stdin, files and folders into the vault — once, watched, or sealed."""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import typer

from memctl.cli import common
from memctl.cli.common import JsonOpt, KeyFileOpt, PassCmdOpt, PassFileOpt, VaultOpt
from memctl.errors import ExitCode, UsageError

MAX_NOTES_SHOWN = 20
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="Print nothing on success.")]
JobOpt = Annotated[
    str | None,
    typer.Option(
        "--job",
        help="Run as cron job NAME: actor cron:NAME (trust import); a second run of the same "
        "job while one runs exits 6 (busy).",
    ),
]


def parse_options(values: list[str] | None) -> dict[str, str]:
    """``--option KEY=VALUE`` pairs."""
    out: dict[str, str] = {}
    for value in values or []:
        key, sep, val = value.partition("=")
        if not sep or not key.strip():
            raise UsageError(f"--option takes KEY=VALUE (got {value[:40]!r})")
        out[key.strip()] = val
    return out


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
    source_type: Annotated[
        str | None,
        typer.Option("--source-type", help="Force this source (see `memctl plugins`)."),
    ] = None,
    option: Annotated[
        list[str] | None,
        typer.Option("--option", "-o", help="A source option KEY=VALUE (repeatable)."),
    ] = None,
    prune: Annotated[
        bool,
        typer.Option(
            "--prune", help="Erase memories whose file, chunk or message is gone at the source."
        ),
    ] = False,
    rescan: Annotated[
        bool, typer.Option("--rescan", help="Read every file again, even unchanged ones.")
    ] = False,
    watch: Annotated[
        bool, typer.Option("--watch", help="Keep running: ingest what changes in the folders.")
    ] = False,
    debounce: Annotated[
        float, typer.Option(help="--watch: seconds a file must be quiet before it is read.")
    ] = 1.0,
    seal: Annotated[
        bool,
        typer.Option(
            "--seal", help="No passphrase: seal into the vault's inbox, imported at next unlock."
        ),
    ] = False,
    job: JobOpt = None,
    quiet: QuietOpt = False,
    vault: VaultOpt = None,
    passphrase_file: PassFileOpt = None,
    passphrase_command: PassCmdOpt = None,
    key_file: KeyFileOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Add memories from text, stdin, files and folders (the source is detected per file).

    Re-running adds nothing: unchanged files are not even opened (a cursor per file), changed
    items become new versions. Exit 9 if any file or item failed (the rest is stored).
    """
    from memctl.ingest.pipeline import IngestConfig, job_actor

    quiet = quiet or common.state().quiet
    paths = list(paths or [])
    if text is None and not paths:
        if sys.stdin.isatty():
            raise typer.BadParameter("give PATH..., - for stdin, or --text TEXT")
        paths = ["-"]
    if paths.count("-") > 1:
        raise UsageError("- (stdin) can be given once")
    if watch and (text is not None or "-" in paths or not paths):
        raise UsageError("--watch takes folders (not --text or -)")
    config = IngestConfig(
        namespace=namespace,
        tags=list(tag or []),
        kind=kind,
        title=title,
        source=source,
        observed_at=observed_at,
        source_type=source_type,
        options=parse_options(option),
        prune=prune,
        rescan=rescan,
        actor=job_actor(job) if job else None,
    )
    vault_path = _vault_path(vault)
    stdin = sys.stdin.buffer.read() if "-" in paths else None
    with _job(vault_path, job):
        if seal:
            report = _sealed(
                vault_path, paths, text, stdin, config, watch, debounce, quiet, json_out
            )
        else:
            # Cursors (incremental runs), --prune and --watch need the database itself: unlock
            # here when a non-interactive secret is at hand; else the agent, if one runs, takes
            # the items (every file is then read, and de-duplication keeps it idempotent).
            files = any(p != "-" for p in paths)
            offered = common.credentials(passphrase_file, passphrase_command, key_file).offered()
            with common.open_vault(
                vault,
                passphrase_file,
                passphrase_command,
                key_file,
                actor=config.actor or "cli",
                use_agent=not (prune or watch or (files and offered)),
            ) as v:
                if watch:
                    report = _watch(v, paths, config, debounce, quiet, json_out)
                else:
                    from memctl.ingest.pipeline import run_ingest

                    with progress_display(quiet) as progress:
                        report = run_ingest(
                            v, paths, text=text, stdin=stdin, config=config, progress=progress
                        )
    if not watch:
        render(report, quiet=quiet, json_out=json_out)
    if report.failed:
        raise typer.Exit(int(ExitCode.PARTIAL))


def _vault_path(vault: Path | None) -> Path:
    from memctl.vault.core import resolve_path

    return resolve_path(vault or common.state().vault)


@contextlib.contextmanager
def _job(vault_path: Path, job: str | None) -> Iterator[None]:
    """The job's lock, taken before unlocking so an overlapping run exits at once."""
    if job is None or not vault_path.is_dir():
        yield
        return
    from memctl.ingest.pipeline import job_lock

    with job_lock(vault_path, job):
        yield


def _sealed(
    vault_path: Path,
    paths: list[str],
    text: str | None,
    stdin: bytes | None,
    config: Any,
    watch: bool,
    debounce: float,
    quiet: bool,
    json_out: bool,
) -> Any:
    from memctl.ingest.pipeline import Sealer, run_seal

    if watch:
        engine = Sealer(vault_path, config)
        return _watch_loop(engine, paths, debounce, quiet, json_out, initial=False)
    with progress_display(quiet) as progress:
        report, _ = run_seal(
            vault_path, paths, text=text, stdin=stdin, config=config, progress=progress
        )
    return report


def _watch(v: Any, paths: list[str], config: Any, debounce: float, quiet: bool, json_out: bool):
    from memctl.ingest.pipeline import Ingestor

    return _watch_loop(Ingestor(v, config), paths, debounce, quiet, json_out, initial=True)


def _watch_loop(
    engine: Any, paths: list[str], debounce: float, quiet: bool, json_out: bool, *, initial: bool
) -> Any:
    import signal
    import threading

    from memctl.ingest.watch import watch_ingest

    roots = [Path(p) for p in paths]
    for root in roots:
        if not root.is_dir():
            raise UsageError(f"{root}: --watch takes folders")
    stop = threading.Event()

    def on_term(signum: int, frame: Any) -> None:
        stop.set()

    def on_int(signum: int, frame: Any) -> None:
        # Ctrl-C stops at the loop's next turn, like SIGTERM, instead of a KeyboardInterrupt
        # at whatever line runs (a batch mid-write, a lock); a second Ctrl-C interrupts.
        if stop.is_set():
            raise KeyboardInterrupt
        stop.set()

    previous = signal.signal(signal.SIGTERM, on_term)
    previous_int = signal.signal(signal.SIGINT, on_int)

    def on_batch(delta: Any) -> None:
        if json_out:
            common.print_jsonl([{"time": _now(), **delta.to_json()}])
            sys.stdout.flush()
        report_notes(delta, quiet=quiet)
        if not quiet and not json_out:
            sys.stderr.write(f"memctl: {_now()} {delta.line()}\n")

    def on_error(exc: Any) -> None:
        common.report_error(exc)

    def on_ready() -> None:
        if not quiet:
            names = ", ".join(str(r) for r in roots)
            sys.stderr.write(f"memctl: watching {names} (Ctrl-C to stop)\n")

    try:
        report = watch_ingest(
            engine,
            roots,
            debounce=debounce,
            initial=initial,
            stop=stop,
            on_ready=on_ready,
            on_batch=on_batch,
            on_error=on_error,
        )
    finally:
        signal.signal(signal.SIGTERM, previous)
        signal.signal(signal.SIGINT, previous_int)
    if not quiet and not json_out:
        sys.stderr.write(f"memctl: stopped; session: {report.line()}\n")
    return report


def _now() -> str:
    return time.strftime("%H:%M:%S")


# -- output -------------------------------------------------------------------------------------
def report_notes(report: Any, *, quiet: bool) -> None:
    """Failures always (stderr); skip notes unless quiet, the first few then a count."""
    for err in report.errors:
        sys.stderr.write(f"memctl: failed: {err}\n")
    if quiet:
        return
    for note in report.skips[:MAX_NOTES_SHOWN]:
        sys.stderr.write(f"memctl: skipped: {note}\n")
    more = len(report.skips) - MAX_NOTES_SHOWN
    if more > 0:
        sys.stderr.write(f"memctl: skipped: ... and {more} more (see --json)\n")


def render(report: Any, *, quiet: bool, json_out: bool) -> None:
    report_notes(report, quiet=quiet)
    if json_out:
        common.print_json(report.to_json())
    elif not quiet or report.failed:
        sys.stderr.write(report.line() + "\n")


@contextlib.contextmanager
def progress_display(quiet: bool) -> Iterator[Any]:
    """A progress bar on stderr for long runs, only on a terminal (and not with --quiet)."""
    from memctl.ingest.pipeline import Progress

    try:
        tty = sys.stderr.isatty()
    except (AttributeError, ValueError):
        tty = False
    if quiet or not tty:
        yield Progress()
        return
    bar = _RichProgress()
    try:
        yield bar
    finally:
        bar.close()


class _RichProgress:
    """Starts drawing only once a run has taken more than a second (short runs stay silent)."""

    DELAY = 1.0

    def __init__(self) -> None:
        self.started = time.monotonic()
        self.total = 0
        self.done = 0
        self._bar: Any = None
        self._task: Any = None

    def start(self, total: int) -> None:
        self.total += total
        if self._bar is not None:
            self._bar.update(self._task, total=self.total)

    def advance(self, n: int = 1) -> None:
        self.done += n
        if self._bar is None and time.monotonic() - self.started > self.DELAY:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

            self._bar = Progress(
                "ingesting",
                BarColumn(),
                MofNCompleteColumn(),
                TimeRemainingColumn(),
                console=common.console(stderr=True),
                transient=True,
            )
            self._bar.start()
            self._task = self._bar.add_task("files", total=self.total or None)
        if self._bar is not None:
            self._bar.update(self._task, completed=self.done)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None
