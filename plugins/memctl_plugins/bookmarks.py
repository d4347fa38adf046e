"""Browser bookmarks: Firefox ``places.sqlite`` and Chromium/Chrome/Edge/Brave ``Bookmarks``.

One memory per bookmark: ``"<title>\\n<url>"``, the folder path (``Bookmarks Toolbar > Dev``) as
``context``, folder names and Firefox tags as ``tags``, the date added as ``observed_at``, the
bookmark's GUID as locator.

Firefox keeps ``places.sqlite`` open in exclusive WAL mode while it runs. memctl never writes
to it: without a ``-wal`` file it opens it with ``mode=ro&immutable=1`` (no locks taken, so a
running Firefox is not disturbed); with one, it copies the database and its WAL into a private
temporary directory (0700, removed afterwards) and reads the copy, so recent bookmarks still
in the WAL are included.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from memctl.ingest.hookspecs import hookimpl
from memctl.ingest.sources import (
    Skip,
    SourceError,
    SourceSpec,
    file_uri,
    int_option,
    parse_time,
    stat_fingerprint,
)

from . import _jsonstream as js

SQLITE_MAGIC = b"SQLite format 3\x00"
MAX_URL_CHARS = 2000
DEFAULT_MAX_BOOKMARKS_BYTES = 64 * 1024 * 1024
FIREFOX_ROOTS = {
    "root________": None,
    "menu________": "Bookmarks Menu",
    "toolbar_____": "Bookmarks Toolbar",
    "unfiled_____": "Other Bookmarks",
    "mobile______": "Mobile Bookmarks",
    "tags________": "Tags",
}
_WEBKIT_EPOCH = datetime(1601, 1, 1, tzinfo=UTC)


def _item(
    title: str | None,
    url: str,
    folders: list[str],
    root: str | None,
    tags: list[str],
    locator: str,
    added: datetime | None,
    browser: str,
) -> dict[str, Any]:
    url = url[:MAX_URL_CHARS]
    title = (title or "").strip() or None
    path = [p for p in ([root] if root else []) + folders if p]
    return {
        "text": f"{title}\n{url}" if title else url,
        "title": title or url[:200],
        "tags": [*tags, *folders],
        "locator": locator,
        "observed_at": added,
        "kind": "bookmark",
        "context": " > ".join(path) or None,
        "meta": {"url": url[:1000], "folder": " > ".join(path)[:500], "browser": browser},
    }


# ---------------------------------------------------------------------------------------------
# Firefox


@contextlib.contextmanager
def open_places(path: Path) -> Iterator[Any]:
    """A read-only connection to ``places.sqlite`` (or to a private copy, see module doc)."""
    import sqlite3

    wal = path.with_name(path.name + "-wal")
    tmp: tempfile.TemporaryDirectory[str] | None = None
    conn = None
    try:
        if wal.exists() and wal.stat().st_size > 0:
            tmp = tempfile.TemporaryDirectory(prefix="memctl-places-")
            copy = Path(tmp.name, "places.sqlite")
            shutil.copyfile(path, copy)
            shutil.copyfile(wal, Path(tmp.name, "places.sqlite-wal"))
            conn = sqlite3.connect(copy)
        else:
            conn = sqlite3.connect(file_uri(path) + "?mode=ro&immutable=1", uri=True)
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        if not {"moz_bookmarks", "moz_places"} <= tables:
            raise SourceError("not a Firefox places.sqlite: no moz_bookmarks/moz_places tables")
        yield conn
    except sqlite3.DatabaseError as exc:
        raise SourceError(f"not a readable SQLite database ({type(exc).__name__})") from None
    finally:
        if conn is not None:
            conn.close()
        if tmp is not None:
            tmp.cleanup()


def detect_firefox(path: Path, head: bytes) -> int:
    if path.is_dir() or not head.startswith(SQLITE_MAGIC):
        return 0
    if path.name == "places.sqlite":
        return 95
    import sqlite3

    try:
        conn = sqlite3.connect(file_uri(path) + "?mode=ro&immutable=1", uri=True)
        try:
            names = {r[0] for r in conn.execute("SELECT name FROM sqlite_master")}
        finally:
            conn.close()
    except sqlite3.Error:
        return 0
    return 90 if {"moz_bookmarks", "moz_places"} <= names else 0


def _firefox_folders(conn: Any) -> dict[int, tuple[int, str, str]]:
    rows = conn.execute(
        "SELECT id, parent, COALESCE(title, ''), COALESCE(guid, '') "
        "FROM moz_bookmarks WHERE type = 2"
    )
    return {int(r[0]): (int(r[1] or 0), str(r[2]), str(r[3])) for r in rows}


def _firefox_path(
    folder_id: int, folders: dict[int, tuple[int, str, str]]
) -> tuple[str | None, list[str]]:
    """(root name, folder names below it) for a folder id; root ``"Tags"`` marks tag entries."""
    names: list[str] = []
    seen: set[int] = set()
    current = folder_id
    while current in folders and current not in seen:
        seen.add(current)
        parent, title, guid = folders[current]
        if guid in FIREFOX_ROOTS:
            names.reverse()
            return FIREFOX_ROOTS[guid], names
        names.append(title)
        current = parent
    names.reverse()
    return None, names


def iter_firefox(path: Path, options: Mapping[str, Any]) -> Iterator[dict[str, Any] | Skip]:
    with open_places(path) as conn:
        folders = _firefox_folders(conn)
        tags: dict[int, list[str]] = {}
        for fk, parent in conn.execute(
            "SELECT fk, parent FROM moz_bookmarks WHERE type = 1 AND fk IS NOT NULL"
        ):
            root, names = _firefox_path(int(parent), folders)
            if root == "Tags" and names:
                tags.setdefault(int(fk), []).append(names[0])
        rows = conn.execute(
            """SELECT b.id, b.parent, b.title, b.guid, b.dateAdded, b.fk, p.url, p.title
               FROM moz_bookmarks b JOIN moz_places p ON p.id = b.fk
               WHERE b.type = 1 ORDER BY b.id"""
        )
        odd = 0
        for bid, parent, title, guid, added, fk, url, place_title in rows:
            if not isinstance(url, str) or url.startswith("place:"):
                odd += 1
                continue
            root, names = _firefox_path(int(parent or 0), folders)
            if root == "Tags":
                continue  # a tag entry, folded into the tagged bookmark's tags
            yield _item(
                title
                if isinstance(title, str) and title
                else place_title
                if isinstance(place_title, str)
                else None,
                url,
                names,
                root,
                tags.get(int(fk), []),
                str(guid) if guid else f"id:{bid}",
                parse_time(added) if isinstance(added, int) else None,
                "firefox",
            )
        if odd:
            yield Skip("bookmarks without a web address (queries, separators)", count=odd)


def firefox_fingerprint(path: Path) -> str | None:
    main = stat_fingerprint(path)
    wal = stat_fingerprint(path.with_name(path.name + "-wal"))
    return None if main is None else f"{main}+{wal or '-'}"


# ---------------------------------------------------------------------------------------------
# Chromium


def webkit_time(value: Any) -> datetime | None:
    """Chromium's time: microseconds since 1601-01-01 UTC (as a string or number)."""
    try:
        micros = int(value)
    except (TypeError, ValueError):
        return None
    if micros <= 0:
        return None
    try:
        dt = _WEBKIT_EPOCH + timedelta(microseconds=micros)
    except OverflowError:
        return None
    return dt if 1970 <= dt.year <= 2200 else None


def detect_chromium(path: Path, head: bytes) -> int:
    if path.is_dir():
        return 0
    if b'"roots"' in head and b'"bookmark_bar"' in head:
        return 95
    if path.name == "Bookmarks" and head.lstrip()[:1] == b"{":
        return 60
    return 0


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def iter_chromium(path: Path, options: Mapping[str, Any]) -> Iterator[dict[str, Any] | Skip]:
    max_bytes = int_option(options, "max_bytes", DEFAULT_MAX_BOOKMARKS_BYTES, 1024, 1 << 31)
    with open(path, "rb") as f:
        data = f.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise SourceError(f"bookmarks file larger than {max_bytes} bytes")
    doc = js.loads(data.removeprefix(b"\xef\xbb\xbf"))
    if isinstance(doc, js.Malformed):
        raise SourceError(f"not a Chromium Bookmarks file: {doc.reason}")
    roots = doc.get("roots") if isinstance(doc, dict) else None
    if not isinstance(roots, dict):
        raise SourceError('not a Chromium Bookmarks file: no "roots" object')
    seen: set[str] = set()
    odd = 0
    for key, root in roots.items():
        if not isinstance(root, dict):
            continue
        root_name = str(root["name"]) if isinstance(root.get("name"), str) else str(key)
        stack: list[tuple[Any, list[str]]] = [
            (child, []) for child in reversed(_list(root.get("children")))
        ]
        while stack:
            node, folders = stack.pop()
            if not isinstance(node, dict):
                odd += 1
                continue
            name = str(node["name"]) if isinstance(node.get("name"), str) else ""
            if node.get("type") == "folder" or isinstance(node.get("children"), list):
                stack.extend((c, [*folders, name]) for c in reversed(_list(node.get("children"))))
                continue
            url = node.get("url")
            if not isinstance(url, str) or not url:
                odd += 1
                continue
            locator = str(node.get("guid") or f"id:{node.get('id')}")
            if locator in seen:
                continue
            seen.add(locator)
            yield _item(
                name,
                url,
                folders,
                root_name,
                [],
                locator,
                webkit_time(node.get("date_added")),
                "chromium",
            )
    if odd:
        yield Skip("bookmark entries without a web address", count=odd)


OPTIONS_CHROMIUM = {"max_bytes": "largest Bookmarks file read, in bytes (default 64 MiB)"}

FIREFOX = SourceSpec(
    name="firefox",
    description="Firefox bookmarks (places.sqlite, read-only; tags and folders kept)",
    detect=detect_firefox,
    iter_items=iter_firefox,
    fingerprint=firefox_fingerprint,
    kind="bookmark",
)
CHROMIUM = SourceSpec(
    name="chromium",
    description="Chromium/Chrome/Edge/Brave bookmarks (the profile's Bookmarks JSON file)",
    detect=detect_chromium,
    iter_items=iter_chromium,
    kind="bookmark",
    options=OPTIONS_CHROMIUM,
)


@hookimpl
def memctl_sources() -> list[SourceSpec]:
    return [FIREFOX, CHROMIUM]
