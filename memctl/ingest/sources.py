"""Sources: what a plugin provides, how a path finds its source, and the item contract.

A *source* knows one input format (Markdown notes, an mbox, a ChatGPT export…). Plugins
describe theirs with a :class:`SourceSpec` returned from the ``memctl_sources`` hook. This module
is the single place that

- picks a source for a path: every source scores the path (:func:`detect`), the best score wins,
  ``--source-type NAME`` forces one (:func:`choose_source`); folders are walked (:func:`plan`);
- runs a source and enforces the item contract (:class:`SourceRun`): whatever a plugin yields,
  the caller gets well-formed item dicts, a list of :class:`Skip` notes, or a
  :class:`SourceError` that names the file and position but never its content.

The item contract (plain dicts) is documented in ``docs/plugins.md``.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
import stat
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from memctl.errors import ExitCode, MemctlError, UsageError
from memctl.ingest.chunk import HEAD_BYTES, clean, read_head

if TYPE_CHECKING:
    from memctl.ingest.plugins import PluginHost

#: Item kinds the vault knows; a plugin may use another short lowercase word.
KINDS = ("note", "document", "email", "chat", "shell", "bookmark")
#: Keys an item dict may carry.
ITEM_KEYS = ("text", "title", "tags", "source", "locator", "observed_at", "kind", "context", "meta")
#: In a folder walk a file is taken only by a source at least this confident (explicit files: >0).
WALK_MIN_CONFIDENCE = 20
#: Option names memctl itself passes to every source.
RESERVED_OPTIONS = ("root",)

MAX_TITLE_CHARS = 300
MAX_CONTEXT_CHARS = 2000
MAX_LOCATOR_CHARS = 1000
MAX_TAGS = 50
MAX_TAG_CHARS = 100
MAX_META_BYTES = 8192

_NAME_RE = re.compile(r"^[a-z][a-z0-9_-]{0,31}$")
_KIND_RE = re.compile(r"^[a-z][a-z0-9_-]{0,31}$")
_SKIP_DIRS = frozenset({"__pycache__", "node_modules"})
_TEMP_SUFFIXES = (".swp", ".swo", ".swx", ".tmp", ".bak", "~")


class SourceError(MemctlError):
    """A file could not be read by its source. Names the file and position, never the content.

    Raised by a source (or by :class:`SourceRun` on its behalf) for a file that must be skipped
    as a whole. The rest of an ingest goes on; the CLI reports it and exits non-zero.
    """

    exit_code = ExitCode.USAGE

    def __init__(
        self,
        reason: str,
        *,
        path: Path | str | None = None,
        position: str | None = None,
        source: str | None = None,
        hint: str | None = None,
    ) -> None:
        where = str(path) if path is not None else ""
        if position:
            where = f"{where} ({position})" if where else position
        super().__init__(f"{where}: {reason}" if where else reason, hint=hint)
        self.reason = reason
        self.path = Path(path) if path is not None else None
        self.position = position
        self.source = source


@dataclass(frozen=True)
class Skip:
    """Something a source left out, and why — yielded among items, collected by :class:`SourceRun`.

    ``reason`` and ``position`` (``line 12``, ``byte 4096``, ``message 3``) must not quote the
    input. ``count`` lets one note stand for many (``skipped 3 commands that looked like
    credentials``).
    """

    reason: str
    position: str | None = None
    count: int = 1
    path: Path | None = None

    def __str__(self) -> str:
        where = str(self.path) if self.path else ""
        if self.position:
            where = f"{where} ({self.position})" if where else self.position
        times = f" (x{self.count})" if self.count != 1 else ""
        return f"{where}: {self.reason}{times}" if where else f"{self.reason}{times}"


DetectFn = Callable[[Path, bytes], int]
IterItemsFn = Callable[[Path, Mapping[str, Any]], Iterator[Any]]


@dataclass(frozen=True)
class SourceSpec:
    """One input format, as a plugin describes it.

    - ``detect(path, head)`` returns a confidence 0-100 that ``path`` is in this format. ``head``
      is the first 4 KiB (``b""`` for a directory). Guide: 90+ an unambiguous content signature,
      60-80 a telling file name or extension, 1-30 a weak guess, 0 no. It must be cheap and must
      not raise (an exception counts as 0 and is reported).
    - ``iter_items(path, options)`` yields item dicts (see ``docs/plugins.md``) and
      :class:`Skip` notes; it raises :class:`SourceError` for a file it cannot read at all.
      ``options["root"]`` is the folder the user named (for relative locators).
    - ``cursor_key(path)`` / ``fingerprint(path)``: identify the input and its state, so an
      unchanged input is not read again. Defaults: ``<name>:<file URI>`` and size + mtime.
    - ``item_ids(path)``: the ids of the items present upstream now (e.g. message ids), without
      a full read; lets the vault notice items removed upstream. ``None`` when not supported.
    - ``options``: the options this source understands, name → one-line help.
    """

    name: str
    description: str
    detect: DetectFn
    iter_items: IterItemsFn
    cursor_key: Callable[[Path], str] | None = None
    fingerprint: Callable[[Path], str | None] | None = None
    item_ids: Callable[[Path], Iterable[str]] | None = None
    kind: str = "document"
    options: Mapping[str, str] = field(default_factory=dict)
    plugin: str = ""  # filled in by the plugin host

    def __post_init__(self) -> None:
        if not _NAME_RE.match(self.name):
            raise ValueError(f"invalid source name {self.name!r}: use [a-z][a-z0-9_-]{{0,31}}")
        if not callable(self.detect) or not callable(self.iter_items):
            raise TypeError(f"source {self.name!r}: detect and iter_items must be callable")

    def key_for(self, path: Path) -> str:
        """The cursor key of ``path`` under this source."""
        if self.cursor_key is not None:
            return self.cursor_key(path)
        return f"{self.name}:{file_uri(path)}"

    def fingerprint_of(self, path: Path) -> str | None:
        """The state of ``path``: equal fingerprints mean "unchanged, no need to read"."""
        if self.fingerprint is not None:
            return self.fingerprint(path)
        return stat_fingerprint(path)


# ---------------------------------------------------------------------------------------------
# Small helpers for sources


def file_uri(path: Path) -> str:
    """``file:///abs/path`` (percent-encoded) for ``path``."""
    return Path(os.path.abspath(path)).as_uri()


def scheme_uri(scheme: str, path: Path) -> str:
    """``<scheme>:///abs/path``, e.g. ``mbox:///home/me/mail/inbox``."""
    return scheme + file_uri(path)[len("file") :]


def stat_fingerprint(path: Path) -> str | None:
    """Size and modification time of a regular file; ``None`` for anything else."""
    try:
        st = path.stat()
    except OSError:
        return None
    if not stat.S_ISREG(st.st_mode):
        return None
    return f"{st.st_size}:{st.st_mtime_ns}"


def root_relative(path: Path, options: Mapping[str, Any]) -> str:
    """``path`` relative to ``options["root"]`` in POSIX form, or its file name."""
    root = options.get("root")
    if root is not None:
        try:
            return Path(os.path.abspath(path)).relative_to(os.path.abspath(root)).as_posix()
        except ValueError:
            pass
    return path.name


def parse_time(value: Any) -> datetime | None:
    """A timezone-aware datetime from what exports put in time fields, or ``None``.

    Accepts datetimes (naive ones are taken as UTC), epoch numbers in seconds, milliseconds or
    microseconds (by magnitude), and ISO-8601 strings (``Z`` allowed; a bare date is midnight
    UTC). Anything else, or a time outside years 1900-2200, is ``None``.
    """
    dt: datetime | None = None
    if isinstance(value, datetime):
        dt = value
    elif isinstance(value, bool):
        return None
    elif isinstance(value, int | float):
        num = float(value)
        if not math.isfinite(num) or num <= 0:
            return None
        for divisor in (1, 1e3, 1e6, 1e9):
            if num / divisor < 1e11:  # ~ year 5138 in seconds
                num /= divisor
                break
        try:
            dt = datetime.fromtimestamp(num, UTC)
        except (OverflowError, OSError, ValueError):
            return None
    elif isinstance(value, str):
        s = value.strip()
        if not s or len(s) > 64:
            return None
        if re.fullmatch(r"\d{9,19}(\.\d+)?", s):
            return parse_time(float(s))
        try:
            dt = datetime.fromisoformat(s)
        except ValueError:
            return None
    if dt is None:
        return None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    if not 1900 <= dt.year <= 2200:
        return None
    return dt


def int_option(options: Mapping[str, Any], name: str, default: int, lo: int, hi: int) -> int:
    """An integer option (options from the command line arrive as strings), range-checked."""
    value = options.get(name, default)
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise UsageError(f"option {name!r} must be an integer") from None
    if not lo <= number <= hi:
        raise UsageError(f"option {name!r} must be between {lo} and {hi}")
    return number


# ---------------------------------------------------------------------------------------------
# The item contract


class InvalidItem(ValueError):
    """An item dict that breaks the contract (the reason never quotes the item)."""


def _clean_meta(value: Any, depth: int = 0) -> Any:
    if depth > 4:
        raise InvalidItem("meta nested too deep")
    if value is None or isinstance(value, bool | int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, str):
        return clean(value)
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, list | tuple):
        return [_clean_meta(v, depth + 1) for v in value]
    if isinstance(value, dict):
        return {clean(str(k)): _clean_meta(v, depth + 1) for k, v in value.items()}
    raise InvalidItem(f"meta holds a {type(value).__name__}, which is not JSON")


def normalize_item(
    raw: Any, *, spec: SourceSpec, path: Path, default_source: str | None = None
) -> dict[str, Any]:
    """Check one item against the contract and return it in canonical form.

    The result always has every key of :data:`ITEM_KEYS`: ``text`` a non-empty string;
    ``title``, ``locator``, ``context`` a string or ``None``; ``tags`` a list of strings;
    ``source`` a URI (default: the file's ``file://`` URI); ``observed_at`` an aware datetime or
    ``None``; ``kind`` a short word (default: the source's); ``meta`` a JSON-able dict.
    Strings lose NULs and lone surrogates. Raises :class:`InvalidItem`.
    """
    if not isinstance(raw, Mapping):
        raise InvalidItem(f"item is a {type(raw).__name__}, not a dict")
    unknown = sorted(str(k) for k in raw if k not in ITEM_KEYS)
    if unknown:
        raise InvalidItem(f"item has unknown keys: {', '.join(unknown)[:200]}")
    text = raw.get("text")
    if not isinstance(text, str):
        raise InvalidItem("item has no text string")
    text = clean(text).strip()
    if not text:
        raise InvalidItem("item text is empty")

    def opt_str(key: str, limit: int) -> str | None:
        value = raw.get(key)
        if value is None:
            return None
        if not isinstance(value, str):
            raise InvalidItem(f"item {key} is a {type(value).__name__}, not a string")
        value = clean(value).strip()
        return value[:limit] or None

    tags_raw = raw.get("tags") or []
    if isinstance(tags_raw, str) or not isinstance(tags_raw, Iterable):
        raise InvalidItem("item tags must be a list of strings")
    tags: list[str] = []
    for tag in tags_raw:
        if not isinstance(tag, str):
            raise InvalidItem("item tags must be a list of strings")
        tag = clean(tag).strip()[:MAX_TAG_CHARS]
        if tag and tag not in tags:
            tags.append(tag)
    kind = raw.get("kind") or spec.kind
    if not isinstance(kind, str) or not _KIND_RE.match(kind):
        raise InvalidItem("item kind must be a short lowercase word")
    observed = raw.get("observed_at")
    observed_at = parse_time(observed) if observed is not None else None
    meta_raw = raw.get("meta") or {}
    if not isinstance(meta_raw, Mapping):
        raise InvalidItem("item meta must be a dict")
    meta = _clean_meta(dict(meta_raw))
    if len(json.dumps(meta, ensure_ascii=False)) > MAX_META_BYTES:
        raise InvalidItem(f"item meta larger than {MAX_META_BYTES} bytes")
    return {
        "text": text,
        "title": opt_str("title", MAX_TITLE_CHARS),
        "tags": tags[:MAX_TAGS],
        "source": opt_str("source", 4096) or default_source or file_uri(path),
        "locator": opt_str("locator", MAX_LOCATOR_CHARS),
        "observed_at": observed_at,
        "kind": kind,
        "context": opt_str("context", MAX_CONTEXT_CHARS),
        "meta": meta,
    }


class SourceRun:
    """One run of a source over one path: iterate for normalised items.

    Skips (from the source, and items that broke the contract) are collected in ``skips``;
    ``items`` counts what was yielded. A file-level failure raises :class:`SourceError`;
    any other exception from plugin code is turned into one (naming the exception type only,
    since its message could quote the input). The caller writes a file's items atomically, so a
    ``SourceError`` half-way means nothing from that file is kept.
    """

    def __init__(
        self,
        spec: SourceSpec,
        path: Path,
        options: Mapping[str, Any] | None = None,
        *,
        root: Path | None = None,
    ) -> None:
        self.spec = spec
        self.path = Path(path)
        opts = dict(options or {})
        opts.setdefault("root", root if root is not None else self.path.parent)
        self.options: dict[str, Any] = opts
        self.skips: list[Skip] = []
        self.items = 0

    @property
    def skipped(self) -> int:
        """How many things were left out, in total."""
        return sum(s.count for s in self.skips)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        default_source = file_uri(self.path)
        try:
            produced = self.spec.iter_items(self.path, self.options)
            for raw in produced:
                if isinstance(raw, Skip):
                    self.skips.append(dataclasses.replace(raw, path=self.path))
                    continue
                try:
                    item = normalize_item(
                        raw, spec=self.spec, path=self.path, default_source=default_source
                    )
                except InvalidItem as exc:
                    self.skips.append(
                        Skip(
                            f"source {self.spec.name!r} yielded an invalid item: {exc}",
                            path=self.path,
                        )
                    )
                    continue
                self.items += 1
                yield item
        except SourceError as exc:
            if exc.path is None:
                raise SourceError(
                    exc.reason,
                    path=self.path,
                    position=exc.position,
                    source=self.spec.name,
                    hint=exc.hint,
                ) from None
            exc.source = exc.source or self.spec.name
            raise
        except MemctlError:
            raise  # e.g. a UsageError for a bad option value
        except OSError as exc:
            raise SourceError(
                f"cannot read: {exc.strerror or type(exc).__name__}",
                path=self.path,
                source=self.spec.name,
            ) from None
        except RecursionError:
            raise SourceError(
                "input nested too deeply", path=self.path, source=self.spec.name
            ) from None
        except Exception as exc:
            raise SourceError(
                f"source {self.spec.name!r} failed: {type(exc).__name__}",
                path=self.path,
                source=self.spec.name,
                hint="this is a bug in the source plugin; please report it",
            ) from None


def run_source(
    spec: SourceSpec,
    path: Path,
    options: Mapping[str, Any] | None = None,
    *,
    root: Path | None = None,
) -> SourceRun:
    """Shorthand for :class:`SourceRun`."""
    return SourceRun(spec, path, options, root=root)


def check_options(spec: SourceSpec, options: Mapping[str, Any]) -> None:
    """Reject options ``spec`` does not understand (a typo would otherwise be silently ignored)."""
    unknown = sorted(k for k in options if k not in spec.options and k not in RESERVED_OPTIONS)
    if unknown:
        known = ", ".join(sorted(spec.options)) or "none"
        raise UsageError(
            f"source {spec.name!r} has no option {unknown[0]!r} (its options: {known})"
        )


# ---------------------------------------------------------------------------------------------
# Choosing a source


def _host(host: PluginHost | None) -> PluginHost:
    if host is not None:
        return host
    from memctl.ingest.plugins import get_host

    return get_host()


def source_names(host: PluginHost | None = None) -> list[str]:
    """Names of every loaded source, sorted."""
    return sorted(_host(host).sources())


def get_source(name: str, host: PluginHost | None = None) -> SourceSpec:
    """The source called ``name``; an unknown name is a :class:`UsageError` listing the known."""
    sources = _host(host).sources()
    try:
        return sources[name]
    except KeyError:
        raise UsageError(
            f"unknown source type {name!r}; known: {', '.join(sorted(sources)) or 'none'}",
            hint="`memctl plugins` lists the loaded plugins and their sources",
        ) from None


def _read_head_checked(path: Path) -> bytes:
    try:
        return read_head(path, HEAD_BYTES) if not path.is_dir() else b""
    except OSError as exc:
        raise SourceError(f"cannot read: {exc.strerror or type(exc).__name__}", path=path) from None


def detect(path: Path, host: PluginHost | None = None) -> list[tuple[int, SourceSpec]]:
    """Every source's confidence for ``path``, best first (zeros left out).

    Ties keep registration order (built-ins first). A detector that raises counts as 0 and is
    recorded as a warning on the host.
    """
    h = _host(host)
    head = _read_head_checked(path)
    scored: list[tuple[int, int, SourceSpec]] = []
    for order, spec in enumerate(h.sources().values()):
        try:
            score = int(spec.detect(path, head))
        except Exception as exc:
            h.warn(spec.plugin, f"detect() of source {spec.name!r} raised {type(exc).__name__}")
            continue
        score = max(0, min(100, score))
        if score:
            scored.append((score, order, spec))
    scored.sort(key=lambda t: (-t[0], t[1]))
    return [(score, spec) for score, _, spec in scored]


def choose_source(
    path: Path, source_type: str | None = None, host: PluginHost | None = None
) -> SourceSpec:
    """The source to read ``path`` with: ``source_type`` if given, else the best detector."""
    if source_type:
        return get_source(source_type, host)
    ranked = detect(path, host)
    if not ranked:
        raise SourceError(
            "no source recognises this file",
            path=path,
            hint=f"force one with --source-type (known: {', '.join(source_names(host))})",
        )
    return ranked[0][1]


@dataclass(frozen=True)
class Task:
    """One input to read: a file (or a folder a source takes whole) and the source to read it."""

    path: Path
    spec: SourceSpec
    root: Path

    def run(self, options: Mapping[str, Any] | None = None) -> SourceRun:
        """Read it: iterate the result for items."""
        return SourceRun(self.spec, self.path, options, root=self.root)

    def cursor_key(self) -> str:
        return self.spec.key_for(self.path)

    def fingerprint(self) -> str | None:
        return self.spec.fingerprint_of(self.path)


def is_ignored_name(name: str) -> bool:
    """Hidden files and editor temp/backup files (``*~``, ``.#*``, ``#*#``, ``*.swp``…)."""
    return (
        name.startswith(".")
        or (name.startswith("#") and name.endswith("#"))
        or name.endswith(_TEMP_SUFFIXES)
    )


def walk_files(root: Path, errors: list[Skip] | None = None) -> Iterator[Path]:
    """Regular files under ``root``, sorted, skipping hidden and tool directories (``.git``,
    ``__pycache__``, ``node_modules``), editor temp files, and special files (FIFOs would block).
    Symlinked directories are not followed. Unreadable directories are appended to ``errors``."""

    def onerror(exc: OSError) -> None:
        if errors is not None:
            where = Path(exc.filename) if exc.filename else root
            errors.append(Skip(f"cannot read: {exc.strerror or type(exc).__name__}", path=where))

    for dirpath, dirnames, filenames in os.walk(root, onerror=onerror, followlinks=False):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(".") and d not in _SKIP_DIRS)
        for name in sorted(filenames):
            if is_ignored_name(name):
                continue
            p = Path(dirpath, name)
            try:
                if stat.S_ISREG(p.stat().st_mode):
                    yield p
            except OSError:
                continue


def plan(
    path: Path,
    source_type: str | None = None,
    host: PluginHost | None = None,
    *,
    min_confidence: int = WALK_MIN_CONFIDENCE,
) -> Iterator[Task | Skip]:
    """What to read for ``memctl ingest PATH``: :class:`Task` s, and :class:`Skip` s for files
    of a folder that no source takes.

    A file gets one task (the forced source or the best detector; no detector → SourceError).
    A folder is offered whole to the sources first (a source whose ``detect`` returns > 0 for
    a directory reads it as one input, e.g. a Maildir); otherwise it is walked with
    :func:`walk_files` and every file detected on its own, taken only at ``min_confidence``.
    With ``source_type`` every walked file goes to that source. Raises before yielding when
    ``path`` is missing or ``source_type`` unknown.
    """
    path = Path(path)
    h = _host(host)
    forced = get_source(source_type, h) if source_type else None
    try:
        st = path.stat()
    except OSError as exc:
        raise SourceError(f"cannot read: {exc.strerror or type(exc).__name__}", path=path) from None
    if stat.S_ISDIR(st.st_mode):
        return _plan_dir(path, forced, h, min_confidence)
    if not stat.S_ISREG(st.st_mode):
        raise SourceError("not a regular file", path=path)
    spec = forced or choose_source(path, None, h)
    return iter([Task(path, spec, path.parent)])


def _plan_dir(
    root: Path, forced: SourceSpec | None, h: PluginHost, min_confidence: int
) -> Iterator[Task | Skip]:
    if forced is not None:
        try:
            whole = forced.detect(root, b"") > 0
        except Exception:
            whole = False
        if whole:
            yield Task(root, forced, root)
            return
    else:
        ranked = detect(root, h)
        if ranked:
            yield Task(root, ranked[0][1], root)
            return
    errors: list[Skip] = []
    for file in walk_files(root, errors):
        while errors:
            yield errors.pop(0)
        if forced is not None:
            yield Task(file, forced, root)
            continue
        try:
            ranked = detect(file, h)
        except SourceError as exc:
            yield Skip(exc.reason, path=file)
            continue
        if ranked and ranked[0][0] >= min_confidence:
            yield Task(file, ranked[0][1], root)
        else:
            yield Skip("no source recognises this file", path=file)
    yield from errors
