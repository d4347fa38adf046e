"""``memctl ingest --watch DIR``: follow folders with watchdog and ingest what changes.

- **Debounced per path.** Every file event only marks its path; a path is processed once it
  has been quiet for ``debounce`` seconds (default 1 s), so an editor's burst of writes is
  one read, and a file is never read while it is still being written in quick succession.
- **Editors' temp-file dances.** Vim's ``.swp``/``~``/``4913``, Emacs' ``#x#``/``.#x``, and
  "write a temp file, rename it over the target" all end in events for the real file: temp
  names are ignored like in a folder walk, and a path is only looked at after it settled —
  if it exists it is (re)read, if it is gone it is forgotten (erased with ``--prune``).
- **A bad file** is reported and skipped by the ingest engine; the watch goes on.
- **Stopping.** Ctrl-C (SIGINT) or SIGTERM stops the observer, writes what is pending and
  returns normally: ``memctl ingest --watch`` then exits 0 (9 if some file failed during the
  session).

The loop runs in the calling thread (the vault's connection belongs to it); watchdog's
observer thread only records paths.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import replace
from pathlib import Path
from typing import Any

from memctl.errors import MemctlError, UsageError
from memctl.ingest.sources import is_ignored_name

DEFAULT_DEBOUNCE = 1.0
_SKIP_DIRS = frozenset({"__pycache__", "node_modules"})
_IGNORED_EVENTS = frozenset({"opened", "closed_no_write"})


class Debouncer:
    """Paths and the time of their last event; hands out the ones quiet long enough.

    Thread-safe: the observer thread calls :meth:`touch`, the loop calls :meth:`due`.
    """

    def __init__(self, delay: float) -> None:
        self.delay = delay
        self._lock = threading.Lock()
        self._last: dict[str, float] = {}
        self._dirs: set[str] = set()
        self.wakeup = threading.Event()

    def touch(self, path: str, *, is_dir: bool = False, when: float | None = None) -> None:
        with self._lock:
            self._last[path] = time.monotonic() if when is None else when
            if is_dir:
                self._dirs.add(path)
        self.wakeup.set()

    def due(self, now: float | None = None) -> list[tuple[str, bool]]:
        """``(path, was_dir)`` of every path quiet for ``delay`` seconds, oldest first."""
        now = time.monotonic() if now is None else now
        with self._lock:
            ready = sorted((t, p) for p, t in self._last.items() if now - t >= self.delay)
            out = []
            for _, path in ready:
                del self._last[path]
                was_dir = path in self._dirs
                self._dirs.discard(path)
                out.append((path, was_dir))
            return out

    def pending(self) -> int:
        with self._lock:
            return len(self._last)


def ignored(path: Path, root: Path) -> bool:
    """Would a folder walk of ``root`` skip ``path``? (hidden, temp, tool directories)."""
    try:
        parts = Path(os.path.abspath(path)).relative_to(os.path.abspath(root)).parts
    except ValueError:
        return True
    if not parts:
        return False
    *dirs, name = parts
    return any(d.startswith(".") or d in _SKIP_DIRS for d in dirs) or is_ignored_name(name)


def _handler(debouncer: Debouncer, roots: list[Path]) -> Any:
    from watchdog.events import FileSystemEventHandler

    class Handler(FileSystemEventHandler):  # type: ignore[misc]
        def on_any_event(self, event: Any) -> None:
            if event.event_type in _IGNORED_EVENTS:
                return
            # A directory's "modified" only says something inside changed: that has its own event.
            if event.is_directory and event.event_type in ("modified", "closed"):
                return
            for raw in (event.src_path, getattr(event, "dest_path", "")):
                if not raw:
                    continue
                path = os.fsdecode(raw)
                debouncer.touch(path, is_dir=bool(event.is_directory))

    return Handler()


def watch(
    roots: Iterable[Path],
    process: Callable[[list[tuple[Path, Path, bool]]], None],
    *,
    debounce: float = DEFAULT_DEBOUNCE,
    stop: threading.Event | None = None,
    ready: threading.Event | None = None,
    on_ready: Callable[[], None] | None = None,
    poll: float = 0.1,
) -> None:
    """Watch ``roots`` (recursively) until ``stop`` is set or Ctrl-C.

    ``process`` gets batches of ``(path, root, was_dir)`` for paths quiet for ``debounce``
    seconds; it runs in this thread, and an exception from it ends the watch. ``ready`` is set
    (and ``on_ready`` called) once the observer runs.
    KeyboardInterrupt ends the watch normally, after the last batch is processed.
    """
    from watchdog.observers import Observer

    root_list = [Path(os.path.abspath(r)) for r in roots]
    for root in root_list:
        if not root.is_dir():
            raise UsageError(f"{root}: --watch takes folders")
    debouncer = Debouncer(debounce)
    observer = Observer()
    handler = _handler(debouncer, root_list)
    for root in root_list:
        observer.schedule(handler, str(root), recursive=True)
    observer.start()
    stop = stop or threading.Event()
    if ready is not None:
        ready.set()
    if on_ready is not None:
        on_ready()
    try:
        while not stop.is_set():
            debouncer.wakeup.wait(poll)
            debouncer.wakeup.clear()
            batch = []
            for path, was_dir in debouncer.due():
                owner = _root_of(Path(path), root_list)
                if owner is not None and not ignored(Path(path), owner):
                    batch.append((Path(path), owner, was_dir))
            if batch:
                process(batch)
    except KeyboardInterrupt:
        pass
    finally:
        observer.stop()
        observer.join(timeout=5)


def _root_of(path: Path, roots: list[Path]) -> Path | None:
    best = None
    for root in roots:
        inside = path == root or root in path.parents
        if inside and (best is None or len(root.parts) > len(best.parts)):
            best = root
    return best


def watch_ingest(
    engine: Any,
    roots: list[Path],
    *,
    debounce: float = DEFAULT_DEBOUNCE,
    initial: bool = True,
    stop: threading.Event | None = None,
    ready: threading.Event | None = None,
    on_ready: Callable[[], None] | None = None,
    on_batch: Callable[[Any], None] | None = None,
    on_error: Callable[[MemctlError], None] | None = None,
) -> Any:
    """Ingest ``roots`` once (``initial``), then every change until stopped.

    ``engine`` is an :class:`~memctl.ingest.pipeline.Ingestor` (or the inbox's ``Sealer``).
    ``on_batch(delta)`` gets an :class:`IngestReport` holding only that batch's counts.
    Returns the whole session's report.
    """
    from memctl.ingest.pipeline import IngestReport

    seen = {"errors": 0, "skips": 0, "ids": 0}
    last = IngestReport()

    def emit() -> None:
        nonlocal last
        report = engine.finish()
        delta = replace(
            report,
            added=report.added - last.added,
            updated=report.updated - last.updated,
            skipped=report.skipped - last.skipped,
            failed=report.failed - last.failed,
            pruned=report.pruned - last.pruned,
            sealed=report.sealed - last.sealed,
            files_read=report.files_read - last.files_read,
            files_unchanged=report.files_unchanged - last.files_unchanged,
            files_failed=report.files_failed - last.files_failed,
            ids=report.ids[seen["ids"] :],
            errors=report.errors[seen["errors"] :],
            skips=report.skips[seen["skips"] :],
        )
        seen.update(ids=len(report.ids), errors=len(report.errors), skips=len(report.skips))
        last = replace(report, ids=[], errors=[], skips=[])
        if on_batch is not None and (any(delta.counts()) or delta.errors or delta.skips):
            on_batch(delta)

    def process(batch: list[tuple[Path, Path, bool]]) -> None:
        for path, root, _ in batch:
            try:
                if path.is_dir():
                    engine.ingest_dir(path, root)
                elif path.is_file():
                    engine.ingest_file(path, root, explicit=False)
                elif not os.path.lexists(path):
                    engine.forget(path)
            except MemctlError as exc:  # e.g. the vault stayed busy: report, keep watching
                if on_error is None:
                    raise
                on_error(exc)
        emit()

    if initial:
        for root in roots:
            engine.ingest_dir(Path(root))
        emit()
    watch(roots, process, debounce=debounce, stop=stop, ready=ready, on_ready=on_ready)
    emit()
    return engine.report
