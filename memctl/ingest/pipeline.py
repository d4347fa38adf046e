"""The ingest engine: inputs → sources → items → the vault, incrementally and atomically.

``memctl ingest``, ``--watch`` and the benchmarks drive an :class:`Ingestor`:

- **Choosing sources.** A folder is first offered whole to the sources, otherwise walked
  (:func:`memctl.ingest.sources.walk_files`) and every file detected on its own; a file named
  explicitly takes any source scoring > 0; ``--source-type`` forces one.
- **Incremental.** Each input has a cursor (:mod:`memctl.ingest.cursors`). A file whose
  fingerprint (size + mtime by default) equals its cursor's is neither opened nor parsed; all
  cursors under a folder are read with one range query. So a cron no-op costs a walk, one
  query and a stat per file.
- **Atomic per file.** A file is read completely before anything of it is written; a
  :class:`SourceError` half-way drops the whole file (reported with path and position, never
  content) and the run goes on. Whole files are grouped into one ``ingest_many`` transaction,
  so a record is either fully stored or not at all.
- **Versions and pruning.** The vault treats ``(namespace, source, locator)`` as an item's
  identity: a changed item becomes a new version. The cursor remembers the identities a file
  produced; ``--prune`` erases (through :meth:`Vault.erase`) those that disappeared upstream:
  deleted files, and chunks or messages no longer in a re-read file.
"""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from memctl.errors import ExitCode, MemctlError, UsageError, VaultBusy
from memctl.ingest import cursors as cur
from memctl.ingest.sources import (
    WALK_MIN_CONFIDENCE,
    Skip,
    SourceError,
    SourceSpec,
    Task,
    check_options,
    detect,
    get_source,
    walk_files,
)

if TYPE_CHECKING:
    from memctl.ingest.plugins import PluginHost

#: A group of whole files is written in one transaction once it holds this many items...
GROUP_ITEMS = 2000
#: ... or this many characters of text.
GROUP_CHARS = 32 * 1024 * 1024


@dataclass
class IngestConfig:
    """What ``memctl ingest`` was asked to do (everything but the inputs)."""

    namespace: str = "default"
    tags: list[str] = field(default_factory=list)
    kind: str | None = None
    title: str | None = None
    source: str | None = None
    observed_at: str | None = None
    source_type: str | None = None
    options: dict[str, str] = field(default_factory=dict)
    prune: bool = False
    rescan: bool = False
    actor: str | None = None


@dataclass
class IngestReport:
    """The run's summary. ``added``/``updated``/``skipped``/``failed`` count items:

    - ``skipped``: items already stored (same content), items of unchanged files (not read),
      and what sources left out (a binary file, a malformed line, a credential) — with reasons
      in ``skips``;
    - ``failed``: files that could not be read (a ``SourceError``) and items the vault refused —
      with reasons in ``errors``. Any failure makes the exit code ``PARTIAL`` (9).
    """

    added: int = 0
    updated: int = 0
    skipped: int = 0
    failed: int = 0
    pruned: int = 0
    sealed: int = 0
    files_read: int = 0
    files_unchanged: int = 0
    files_failed: int = 0
    ids: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    skips: list[str] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        return int(ExitCode.PARTIAL) if self.failed else int(ExitCode.OK)

    def counts(self) -> tuple[int, ...]:
        return (self.added, self.updated, self.skipped, self.failed, self.pruned, self.sealed)

    def to_json(self) -> dict[str, Any]:
        return {
            "added": self.added,
            "updated": self.updated,
            "skipped": self.skipped,
            "failed": self.failed,
            "pruned": self.pruned,
            "sealed": self.sealed,
            "files": {
                "read": self.files_read,
                "unchanged": self.files_unchanged,
                "failed": self.files_failed,
            },
            "ids": self.ids,
            "errors": self.errors,
            "skips": self.skips,
        }

    def line(self) -> str:
        text = (
            f"added {self.added}, updated {self.updated}, skipped {self.skipped}, "
            f"failed {self.failed}"
        )
        if self.pruned:
            text += f", pruned {self.pruned}"
        if self.sealed:
            text += f", sealed {self.sealed}"
        if self.files_read or self.files_unchanged:
            text += f" ({self.files_read} files read, {self.files_unchanged} unchanged)"
        return text


class Progress:
    """What the engine tells a progress display. The default does nothing."""

    def start(self, total: int) -> None:
        """A walk found ``total`` files."""

    def advance(self, n: int = 1) -> None:
        """``n`` more files are done."""


@dataclass
class _Pending:
    """A file read completely, waiting for its group's transaction."""

    cursor: cur.Cursor | None  # None: no cursor (text, stdin)
    prev: cur.Cursor | None  # the cursor it replaces
    items: list[dict[str, Any]]
    save: bool
    task: Task | None = None  # where the items came from (to read it again, see finish)
    what: str = ""  # how errors name the input


class Ingestor:
    """Runs ingests against one open vault. Call :meth:`finish` at the end (flush + prune).

    ``vault`` is a :class:`~memctl.vault.core.Vault`; a stand-in without a database connection
    (the agent's proxy) also works, without cursors: every file is read, and the vault's
    de-duplication keeps the run idempotent.
    """

    def __init__(
        self,
        vault: Any,
        config: IngestConfig | None = None,
        *,
        host: PluginHost | None = None,
        progress: Progress | None = None,
        on_flush: Callable[[IngestReport], None] | None = None,
    ) -> None:
        from memctl.ingest.plugins import get_host

        self.vault = vault
        self.config = config or IngestConfig()
        self.host = host or get_host()
        self.sources: dict[str, SourceSpec] = self.host.sources()
        self.progress = progress or Progress()
        self.on_flush = on_flush
        self.report = IngestReport()
        self.actor = self.config.actor or getattr(vault, "actor", None) or "cli"
        self.forced = (
            get_source(self.config.source_type, self.host) if self.config.source_type else None
        )
        self._check_options()
        self._group: list[_Pending] = []
        self._group_items = 0
        self._group_chars = 0
        self._prune: cur.Produced = {}
        self._prune_clear: list[cur.Cursor] = []  # cursors whose orphans go with the prune
        self._prune_drop: list[cur.Cursor] = []  # cursors of inputs gone upstream
        self._landed: dict[str, Task] = {}  # record id -> the input whose item it holds
        self._namespace_checked = False
        if self.config.prune and not self.has_cursors:
            raise UsageError("--prune needs the vault unlocked here, not through the agent")

    # -- set-up ----------------------------------------------------------------------------
    @property
    def has_cursors(self) -> bool:
        # Checked on the class: a proxy's instance __getattr__ would unlock locally.
        return hasattr(type(self.vault), "transaction") and hasattr(type(self.vault), "erase")

    @property
    def conn(self) -> Any:
        return self.vault.conn

    def _check_options(self) -> None:
        opts = self.config.options
        if not opts:
            return
        if self.forced is not None:
            check_options(self.forced, opts)
            return
        known = {name for spec in self.sources.values() for name in spec.options}
        unknown = sorted(k for k in opts if k not in known)
        if unknown:
            raise UsageError(
                f"no source has an option {unknown[0]!r}",
                hint="`memctl plugins --json` lists each source's options",
            )

    def _options_for(self, spec: SourceSpec) -> dict[str, str]:
        return {k: v for k, v in self.config.options.items() if k in spec.options}

    def _check_namespace(self) -> None:
        if not self._namespace_checked:
            from memctl.vault.records import check_namespace

            check_namespace(self.config.namespace)
            self._namespace_checked = True

    # -- inputs ----------------------------------------------------------------------------
    def ingest_paths(self, paths: Iterable[Path]) -> None:
        """Files and folders, in order. A missing path is a :class:`UsageError` (before any
        is read)."""
        paths = [Path(p) for p in paths]
        for path in paths:
            if not os.path.lexists(path):
                raise UsageError(f"{path}: no such file or directory")
        for path in paths:
            if path.is_dir():
                self.ingest_dir(path)
            else:
                self.ingest_file(path)

    def ingest_text(self, text: str, *, what: str = "--text") -> None:
        """One memory from the command line (``--text``) or stdin."""
        item = self._override({"text": text})
        self._add(None, None, [item], what=what, save=False)
        self.flush()

    def ingest_stdin(self, data: bytes) -> None:
        """Standard input: one memory, or with ``--source-type`` whatever that source reads."""
        if self.forced is None:
            try:
                text = data.decode("utf-8-sig")
            except UnicodeDecodeError as exc:
                self._fail(f"stdin (byte {exc.start}): not UTF-8 text")
                return
            if "\x00" in text:
                self._skip_note(Skip("binary input, not text", path=Path("stdin")))
                return
            self.ingest_text(text, what="stdin")
            return
        with tempfile.TemporaryDirectory(prefix="memctl-stdin-") as tmp:
            spool = Path(tmp) / "stdin"
            fd = os.open(spool, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
            from memctl.ingest.sources import file_uri

            spooled_uri = file_uri(spool)
            items = self._read(Task(spool, self.forced, Path(tmp)), display="stdin")
            if items is None:
                return
            for item in items:
                if item.get("source") == spooled_uri:
                    item["source"] = self.config.source or "stdin:"
            self._add(None, None, items, what="stdin", save=False)
        self.flush()

    def ingest_dir(self, path: Path, root: Path | None = None) -> None:
        """A folder: whole (a source that takes folders), else walked file by file.

        ``root`` (default: ``path``) anchors relative locators: the watch passes the folder it
        watches when a sub-folder appears.
        """
        self._check_namespace()
        root = root if root is not None else path
        whole = self._whole_dir_source(path)
        if whole is not None:
            prev = self._cursors_for(path, is_dir=False).get(os.path.abspath(path))
            self._ingest_task(Task(path, whole, root), prev)
            self.progress.advance()
            return
        errors: list[Skip] = []
        files = list(walk_files(path, errors))
        for note in errors:
            self._skip_note(note)
        known = self._cursors_for(path, is_dir=True)
        self.progress.start(len(files))
        seen: set[str] = set()
        for file in files:
            apath = os.path.abspath(file)
            seen.add(apath)
            self._ingest_one(file, root, known.get(apath), explicit=False)
            self.progress.advance()
        if self.config.prune:
            for apath, cursor in known.items():
                if apath not in seen and _gone(apath):
                    self._forget_cursor(cursor)

    def ingest_file(self, path: Path, root: Path | None = None, *, explicit: bool = True) -> None:
        """One file; ``root`` (default: its folder) anchors relative locators."""
        self._check_namespace()
        root = root if root is not None else path.parent
        prev = self._cursors_for(path, is_dir=False).get(os.path.abspath(path))
        self._ingest_one(path, root, prev, explicit=explicit)

    def forget(self, path: Path) -> None:
        """``path`` (a file or folder) is gone upstream: with ``prune``, erase what it produced."""
        if not self.config.prune:
            return
        apath = os.path.abspath(path)
        found = self._cursors_for(path, is_dir=False)
        found.update(self._cursors_for(path, is_dir=True))
        for p, cursor in found.items():
            if (p == apath or p.startswith(apath.rstrip("/") + "/")) and _gone(p):
                self._forget_cursor(cursor)

    # -- one input -------------------------------------------------------------------------
    def _cursors_for(self, path: Path, *, is_dir: bool) -> dict[str, cur.Cursor]:
        if not self.has_cursors:
            return {}
        return cur.load_under(self.conn, self.config.namespace, path, is_dir=is_dir)

    def _whole_dir_source(self, root: Path) -> SourceSpec | None:
        if self.forced is not None:
            try:
                return self.forced if self.forced.detect(root, b"") > 0 else None
            except Exception:
                return None
        ranked = detect(root, self.host)
        return ranked[0][1] if ranked else None

    def _ingest_one(
        self, path: Path, root: Path, prev: cur.Cursor | None, *, explicit: bool
    ) -> None:
        if prev is not None and not self.config.rescan and self._unchanged(path, prev):
            return
        spec = self.forced or self._detect(path, explicit=explicit)
        if spec is not None:
            self._ingest_task(Task(path, spec, root), prev)

    def _unchanged(self, path: Path, prev: cur.Cursor) -> bool:
        spec = self.sources.get(prev.source)
        if spec is None or (self.forced is not None and self.forced.name != spec.name):
            return False
        try:
            fingerprint = spec.fingerprint_of(path)
        except Exception:
            return False
        if fingerprint is None or fingerprint != prev.fingerprint:
            return False
        self.report.files_unchanged += 1
        self.report.skipped += prev.count
        if self.config.prune and prev.orphans:
            cur.load_items(self.conn, [prev])
            self._prune = cur.merge(self._prune, prev.orphan_items)
            self._prune_clear.append(prev)
        return True

    def _detect(self, path: Path, *, explicit: bool) -> SourceSpec | None:
        try:
            ranked = detect(path, self.host)
        except SourceError as exc:
            self._skip_note(Skip(exc.reason, path=path))
            return None
        floor = 1 if explicit else WALK_MIN_CONFIDENCE
        if ranked and ranked[0][0] >= floor:
            return ranked[0][1]
        self._skip_note(Skip(_unrecognised_reason(path), path=path))
        return None

    def _ingest_task(self, task: Task, prev: cur.Cursor | None) -> None:
        try:
            fingerprint = task.fingerprint()  # before the read: a change while reading re-reads
        except Exception:
            fingerprint = None
        items = self._read(task)
        if items is None:
            return
        self.report.files_read += 1
        cursor = None
        if self.has_cursors:
            produced: cur.Produced = {}
            for item in items:
                if item.get("locator") is not None and item.get("source"):
                    produced.setdefault(item["source"], []).append(item["locator"])
            cursor = cur.Cursor(
                suffix=cur.suffix_for(self.config.namespace, task.path, task.cursor_key()),
                path=os.path.abspath(task.path),
                source=task.spec.name,
                fingerprint=fingerprint,
                count=len(items),
                items=produced,
            )
        self._add(cursor, prev, items, what=str(task.path), save=True, task=task)

    def _read(self, task: Task, *, display: str | None = None) -> list[dict[str, Any]] | None:
        """A task's items, overridden by the command line's fields; None if the file failed."""
        run = task.run({**self._options_for(task.spec)})
        try:
            raw = list(run)
        except SourceError as exc:
            if display is not None:
                exc = SourceError(exc.reason, path=display, position=exc.position)
            self._fail(exc.message, file=True)
            return None
        for note in run.skips:
            if display is not None:
                note = Skip(note.reason, note.position, note.count, Path(display))
            self._skip_note(note)
        items = []
        for item in raw:
            out = self._override(item)
            out["plugin"] = task.spec.plugin or task.spec.name
            items.append(out)
        return items

    def _override(self, item: dict[str, Any]) -> dict[str, Any]:
        """Apply ``--tag`` (added), ``--kind``, ``--title``, ``--source``, ``--observed-at``."""
        c = self.config
        out = {k: v for k, v in item.items() if v is not None}
        if c.tags:
            tags = list(out.get("tags") or [])
            out["tags"] = tags + [t for t in c.tags if t not in tags]
        for key in ("kind", "title", "source", "observed_at"):
            value = getattr(c, key)
            if value not in (None, ""):
                out[key] = value
        if not out.get("meta"):
            out.pop("meta", None)
        return out

    # -- writing ---------------------------------------------------------------------------
    def _defaults(self) -> dict[str, Any]:
        return {"namespace": self.config.namespace, "actor": self.actor}

    #: Validate items before queueing them (the sealer must: the import is strict). The
    #: ingest engine leaves it to ``ingest_many``, which reports refused items by index.
    prevalidate = False

    def _add(
        self,
        cursor: cur.Cursor | None,
        prev: cur.Cursor | None,
        items: list[dict[str, Any]],
        *,
        what: str,
        save: bool,
        task: Task | None = None,
    ) -> None:
        if self.prevalidate:
            from memctl.vault.records import prepare

            defaults = self._defaults()
            valid = []
            for index, item in enumerate(items):
                try:
                    prepare(item, defaults=defaults)
                except MemctlError as exc:
                    self._fail(f"{_item_where(what, index, len(items))}: {exc.message}")
                    save = False
                    continue
                valid.append(item)
            items = valid
        self._group.append(_Pending(cursor, prev, items, save and cursor is not None, task, what))
        self._group_items += len(items)
        self._group_chars += sum(len(i.get("text") or "") for i in items)
        if self._group_items >= GROUP_ITEMS or self._group_chars >= GROUP_CHARS:
            self.flush()

    def flush(self) -> None:
        """Write the pending files: their items in one transaction, then their cursors.

        An item the vault refuses (a bad ``--kind``, an over-long title) is reported with its
        file and number and counted as failed; its file keeps no cursor, so the next run reads
        and reports it again.
        """
        group, self._group = self._group, []
        self._group_items = self._group_chars = 0
        if not group:
            return
        items = [item for pending in group for item in pending.items]
        if items:
            summary = self.vault.ingest_many(
                items, batch_size=len(items) + 1, strict=False, **self._defaults()
            )
            self.report.added += summary.added
            self.report.updated += summary.updated
            self.report.skipped += summary.skipped
            self.report.ids += summary.ids
            refused = self._refused(group, summary)
            if len(summary.ids) == len(items) - len(refused) and self.config.prune:
                # Which record each item landed on (or was de-duplicated against): if a prune
                # later erases one of them, that input is read again (see finish).
                ids = iter(summary.ids)
                index = 0
                for pending in group:
                    for _ in pending.items:
                        if index not in refused:
                            rid = next(ids)
                            if pending.task is not None:
                                self._landed[rid] = pending.task
                        index += 1
        to_save = [p for p in group if p.save and p.cursor is not None]
        if to_save and self.has_cursors:
            self._update_cursors(to_save)
        if self.on_flush is not None:
            self.on_flush(self.report)

    def _refused(self, group: list[_Pending], summary: Any) -> set[int]:
        """Report the items ``ingest_many`` refused (``"item N: reason"``) against their file."""
        if not summary.failed:
            return set()
        reasons: dict[int, str] = {}
        other: list[str] = []
        for error in summary.errors:
            m = _ITEM_ERROR.match(error)
            if m:
                reasons[int(m.group(1))] = m.group(2)
            else:
                other.append(error)
        index = 0
        for pending in group:
            bad = False
            for local in range(len(pending.items)):
                if index in reasons:
                    self._fail(
                        f"{_item_where(pending.what, local, len(pending.items))}: {reasons[index]}"
                    )
                    bad = True
                index += 1
            if bad or other:
                pending.save = False  # read it again next time, and report it again
        for error in other:
            self._fail(error)
        return set(reasons)

    def _update_cursors(self, group: list[_Pending]) -> None:
        prevs = [p.prev for p in group if p.prev is not None and p.prev.items is None]
        if prevs:
            cur.load_items(self.conn, prevs)
        save: list[cur.Cursor] = []
        drop: list[cur.Cursor] = []
        for pending in group:
            cursor, prev = pending.cursor, pending.prev
            assert cursor is not None
            if prev is not None:
                before = cur.merge(prev.items or {}, prev.orphan_items)
                cursor.orphan_items = cur.difference(before, cursor.items or {})
                if prev.suffix != cursor.suffix:
                    drop.append(prev)  # read by another source now: its cursor is replaced
            if self.config.prune and cursor.orphan_items:
                self._prune = cur.merge(self._prune, cursor.orphan_items)
                self._prune_clear.append(cursor)
            save.append(cursor)
        with self.vault.transaction() as conn:
            cur.delete(conn, drop)
            cur.save(conn, save)

    def _forget_cursor(self, cursor: cur.Cursor) -> None:
        cur.load_items(self.conn, [cursor])
        self._prune = cur.merge(self._prune, cur.merge(cursor.items or {}, cursor.orphan_items))
        self._prune_drop.append(cursor)

    def finish(self) -> IngestReport:
        """Flush what is pending and, with ``prune``, erase what disappeared upstream.

        Safe to call repeatedly (the watch calls it after each batch of changes).
        """
        self.flush()
        if not (self._prune or self._prune_drop or self._prune_clear):
            return self.report
        identities, self._prune = self._prune, {}
        clear, self._prune_clear = self._prune_clear, []
        drop, self._prune_drop = self._prune_drop, []
        landed, self._landed = self._landed, {}
        ids = cur.record_ids(self.conn, self.config.namespace, identities)
        erased: list[str] = []
        if ids:
            receipt = self.vault.erase(sorted(set(ids)))
            erased = list(receipt.get("erased", []))
            self.report.pruned += len(erased)
        for cursor in clear:
            cursor.orphan_items = {}
        with self.vault.transaction() as conn:
            cur.delete(conn, drop)
            if clear:
                cur.load_items(conn, [c for c in clear if c.items is None])
                cur.save(conn, clear)
        # A file read in this run may have been de-duplicated against a record the prune just
        # erased (a note renamed, a section moved to another file): read it again, so its
        # content is stored under its own identity instead of being lost.
        again = {landed[rid].path: landed[rid] for rid in erased if rid in landed}
        for task in again.values():
            if task.path.exists():
                self._ingest_task(task, None)
        self.flush()
        self._landed = {}
        return self.report

    # -- reporting -------------------------------------------------------------------------
    def _fail(self, message: str, *, file: bool = False) -> None:
        self.report.failed += 1
        if file:
            self.report.files_failed += 1
        self.report.errors.append(message)

    def _skip_note(self, note: Skip) -> None:
        self.report.skipped += note.count
        self.report.skips.append(str(note))


class Sealer(Ingestor):
    """An ingest engine that seals what it reads into the vault's inbox instead of writing it.

    Same sources, detection, overrides and validation as :class:`Ingestor`, and no key: only
    the inbox public key is read from the header. No cursors either (they live in the
    encrypted database), so every input is read each time; the import de-duplicates. Each
    file's items go into their own envelope(s) (:func:`memctl.ingest.inbox.seal_items`).
    """

    prevalidate = True

    def __init__(
        self,
        vault_path: Path,
        config: IngestConfig | None = None,
        *,
        host: PluginHost | None = None,
        progress: Progress | None = None,
        on_flush: Callable[[IngestReport], None] | None = None,
    ) -> None:
        from dataclasses import replace

        from memctl.ingest.inbox import ACTOR_RE, public_header

        config = config or IngestConfig()
        if config.prune:
            raise UsageError("--prune cannot be sealed: erasing needs the vault's key")
        config = replace(config, actor=config.actor or "inbox")
        if not ACTOR_RE.match(config.actor or ""):
            raise UsageError("a sealed ingest's actor must be inbox or cron:<job>")
        self.vault_path = Path(vault_path)
        self.header = public_header(self.vault_path)
        self.envelopes: list[Path] = []
        super().__init__(None, config, host=host, progress=progress, on_flush=on_flush)

    def flush(self) -> None:
        from memctl.ingest.inbox import seal_items

        group, self._group = self._group, []
        self._group_items = self._group_chars = 0
        for pending in group:
            if not pending.items:
                continue
            items = [{**item, "namespace": self.config.namespace} for item in pending.items]
            self.envelopes += seal_items(
                self.vault_path, items, actor=self.actor, header=self.header
            )
            self.report.sealed += len(items)
        if self.on_flush is not None:
            self.on_flush(self.report)

    def forget(self, path: Path) -> None:
        """Nothing to do: erasing needs the key."""

    def finish(self) -> IngestReport:
        self.flush()
        return self.report


_ITEM_ERROR = re.compile(r"^item (\d+): (.*)$", re.S)


def _item_where(what: str, index: int, total: int) -> str:
    return f"{what}: item {index + 1}" if total > 1 else what


def _unrecognised_reason(path: Path) -> str:
    from memctl.ingest.chunk import looks_binary, read_head

    try:
        if looks_binary(read_head(path)):
            return "binary file, skipped"
    except OSError:
        pass
    return "no source recognises this file (force one with --source-type)"


def _gone(path: str) -> bool:
    """True only when ``path`` certainly no longer exists (not merely unreadable)."""
    try:
        os.lstat(path)
    except (FileNotFoundError, NotADirectoryError):
        return True
    except OSError:
        return False
    return False


def run_engine(
    engine: Ingestor, paths: list[str], *, text: str | None = None, stdin: bytes | None = None
) -> IngestReport:
    """``--text``, stdin (``-`` among ``paths``) and paths, in that order; then flush and prune.

    Missing paths are refused before anything is read. Whatever was read before a fatal error
    (a busy vault, a bad ``--option`` value) is kept: pending files are flushed first.
    """
    for p in paths:
        if p != "-" and not os.path.lexists(p):
            raise UsageError(f"{p}: no such file or directory")
    try:
        if text is not None:
            engine.ingest_text(text)
        if stdin is not None:
            engine.ingest_stdin(stdin)
        engine.ingest_paths(Path(p) for p in paths if p != "-")
    except MemctlError:
        engine.flush()
        raise
    return engine.finish()


def run_ingest(
    vault: Any,
    paths: list[str],
    *,
    text: str | None = None,
    stdin: bytes | None = None,
    config: IngestConfig | None = None,
    progress: Progress | None = None,
) -> IngestReport:
    """``memctl ingest`` into an open vault (see :func:`run_engine`)."""
    return run_engine(Ingestor(vault, config, progress=progress), paths, text=text, stdin=stdin)


def run_seal(
    vault_path: Path,
    paths: list[str],
    *,
    text: str | None = None,
    stdin: bytes | None = None,
    config: IngestConfig | None = None,
    progress: Progress | None = None,
) -> tuple[IngestReport, list[Path]]:
    """``memctl ingest --seal`` / ``memctl inbox add``: no key; returns the envelopes written."""
    engine = Sealer(vault_path, config, progress=progress)
    report = run_engine(engine, paths, text=text, stdin=stdin)
    return report, engine.envelopes


# ---------------------------------------------------------------------------------------------
# Cron jobs

JOB_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


def job_actor(name: str) -> str:
    """``cron:<name>`` for a valid job name (letters, digits, ``_ . -``; at most 64)."""
    if not JOB_RE.match(name or ""):
        raise UsageError(
            "a job name is 1-64 letters, digits, '_', '.' or '-', starting with a letter or digit"
        )
    return f"cron:{name}"


@contextlib.contextmanager
def job_lock(vault_path: Path, name: str) -> Iterator[Path]:
    """Hold ``VAULT/.job-<name>.lock`` for one run of a job; a second run of the same job
    fails at once with :class:`VaultBusy` (exit code 6)."""
    from memctl.vault.lock import file_lock

    job_actor(name)
    path = Path(vault_path) / f".job-{name}.lock"
    try:
        with file_lock(path, timeout=0, what=f"job {name!r}"):
            yield path
    except VaultBusy as exc:
        if "holds its lock" not in exc.message:
            raise
        raise VaultBusy(
            f"job {name!r} is already running (another process holds {path}); not started",
            hint="overlapping runs of one job are refused; this run changed nothing",
        ) from None
