"""Ingest cursors: what each input looked like last time, and what it produced.

They live in the encrypted ``cursors`` table of ``index.db`` (file paths and message ids are
private too). Two rows per input, so the no-op path of a cron run reads only small rows:

- ``ingest/v1/f|<namespace>|<file URI>|<source key>`` → ``{"path", "source", "fp", "n",
  "orphans"}``: the absolute path, the source that read it, its fingerprint
  (``SourceSpec.fingerprint_of``: size + mtime by default) *taken before the read*, how many
  items it produced (reported as skipped when it is unchanged), and how many items vanished
  upstream but were not pruned yet.
- ``ingest/v1/i|…same…`` → ``{"items": {source URI: [locator, ...]}, "orphans": {...}}``: the
  identities (``(source, locator)``, the vault's version key) the input produced, so ``--prune``
  can erase what disappeared upstream.

Keys start with the namespace and the input's ``file://`` URI, so every cursor under a folder
is one range scan of the primary key (:func:`load_under`) — a 10,000-file no-op costs one query.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from memctl.ingest.sources import file_uri
from memctl.timeutil import now_iso

PREFIX_FILE = "ingest/v1/f|"
PREFIX_ITEMS = "ingest/v1/i|"
_CHUNK = 500  # bound parameters per IN (...) query

#: ``{source URI: [locator, ...]}``: the identities an input produced.
Produced = dict[str, list[str]]


@dataclass
class Cursor:
    """One input's state as of its last successful read."""

    suffix: str  # "<namespace>|<file URI>|<source key>": the row keys without their prefix
    path: str
    source: str
    fingerprint: str | None
    count: int = 0
    orphans: int = 0
    items: Produced | None = None  # loaded on demand (:func:`load_items`)
    orphan_items: Produced = field(default_factory=dict)

    @property
    def file_key(self) -> str:
        return PREFIX_FILE + self.suffix

    @property
    def items_key(self) -> str:
        return PREFIX_ITEMS + self.suffix


def suffix_for(namespace: str, path: Path, source_key: str) -> str:
    return f"{namespace}|{file_uri(path)}|{source_key}"


def _range(prefix: str) -> tuple[str, str]:
    # Every key starting with ``prefix`` sorts in [prefix, prefix + U+10FFFF).
    return prefix, prefix + "\U0010ffff"


def _parse_file_row(key: str, value: str) -> Cursor | None:
    try:
        d = json.loads(value)
        return Cursor(
            suffix=key[len(PREFIX_FILE) :],
            path=str(d["path"]),
            source=str(d["source"]),
            fingerprint=d.get("fp"),
            count=int(d.get("n", 0)),
            orphans=int(d.get("orphans", 0)),
        )
    except (ValueError, KeyError, TypeError):
        return None  # a damaged cursor only costs a re-read


def load_under(conn: Any, namespace: str, root: Path, *, is_dir: bool) -> dict[str, Cursor]:
    """Cursors of every input at or under ``root`` in ``namespace``, by absolute path.

    One range scan of the primary key. For a file, only that file's cursors.
    """
    base = f"{PREFIX_FILE}{namespace}|{file_uri(root)}"
    lo, hi = _range(base + ("/" if is_dir and not base.endswith("/") else "|"))
    out: dict[str, Cursor] = {}
    for key, value in conn.execute(
        "SELECT source_key, value FROM cursors WHERE source_key >= ? AND source_key < ?",
        (lo, hi),
    ):
        cursor = _parse_file_row(key, value)
        if cursor is not None:
            # Several sources may have read one path (--source-type); keep the latest write.
            out[cursor.path] = cursor
    return out


def load_items(conn: Any, cursors: list[Cursor]) -> None:
    """Fill ``items`` and ``orphan_items`` of ``cursors`` (batched queries)."""
    by_key = {c.items_key: c for c in cursors}
    keys = list(by_key)
    for start in range(0, len(keys), _CHUNK):
        chunk = keys[start : start + _CHUNK]
        marks = ",".join("?" * len(chunk))
        for key, value in conn.execute(
            f"SELECT source_key, value FROM cursors WHERE source_key IN ({marks})", chunk
        ):
            try:
                d = json.loads(value)
                items, orphans = d.get("items") or {}, d.get("orphans") or {}
            except (ValueError, AttributeError):
                items, orphans = {}, {}
            by_key[key].items = _as_produced(items)
            by_key[key].orphan_items = _as_produced(orphans)
    for c in cursors:
        if c.items is None:
            c.items = {}


def _as_produced(value: Any) -> Produced:
    if not isinstance(value, dict):
        return {}
    return {
        str(src): [str(loc) for loc in locs]
        for src, locs in value.items()
        if isinstance(locs, list)
    }


def save(conn: Any, cursors: list[Cursor]) -> None:
    """Write ``cursors`` (both rows each) inside the caller's transaction."""
    now = now_iso()
    rows = []
    for c in cursors:
        head = {
            "path": c.path,
            "source": c.source,
            "fp": c.fingerprint,
            "n": c.count,
            "orphans": sum(len(v) for v in c.orphan_items.values()),
        }
        body = {"items": c.items or {}, "orphans": c.orphan_items}
        rows.append((c.file_key, json.dumps(head, separators=(",", ":")), now))
        rows.append((c.items_key, json.dumps(body, separators=(",", ":")), now))
    conn.executemany(
        "INSERT OR REPLACE INTO cursors(source_key, value, updated_at) VALUES (?, ?, ?)", rows
    )


def delete(conn: Any, cursors: list[Cursor]) -> None:
    """Remove ``cursors`` inside the caller's transaction."""
    conn.executemany(
        "DELETE FROM cursors WHERE source_key = ?",
        [(k,) for c in cursors for k in (c.file_key, c.items_key)],
    )


def record_ids(conn: Any, namespace: str, identities: Produced) -> list[str]:
    """Ids of the records in ``namespace`` whose (source, locator) is in ``identities``."""
    ids: list[str] = []
    for source, locators in identities.items():
        unique = sorted(set(locators))
        for start in range(0, len(unique), _CHUNK):
            chunk = unique[start : start + _CHUNK]
            marks = ",".join("?" * len(chunk))
            ids += [
                rid
                for (rid,) in conn.execute(
                    # "+namespace": without it SQLite scans the namespace (records_ns_ingested)
                    # instead of using records_source, and pruning turns O(n) per locator.
                    f"SELECT id FROM records WHERE +namespace = ? AND source = ? "
                    f"AND locator IN ({marks})",
                    [namespace, source, *chunk],
                )
            ]
    return ids


def difference(old: Produced, new: Produced) -> Produced:
    """Identities in ``old`` that are not in ``new``."""
    out: Produced = {}
    for source, locators in old.items():
        keep = set(new.get(source, ()))
        gone = [loc for loc in locators if loc not in keep]
        if gone:
            out[source] = gone
    return out


def merge(a: Produced, b: Produced) -> Produced:
    out: Produced = {k: list(v) for k, v in a.items()}
    for source, locators in b.items():
        have = set(out.get(source, ()))
        out.setdefault(source, []).extend(loc for loc in locators if loc not in have)
    return out
