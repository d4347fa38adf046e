"""One ingest batch, written inside its transaction with set-wise statements.

:meth:`Vault.ingest_many` hands each batch of prepared records to a :class:`BatchWriter`. The
outcome of every record is the one it would have had written alone, in order — skipped (its
content is already stored in its namespace), updated (its ``(namespace, source, locator)``
identity is: a new version) or added — but the work is done per batch, not per record:

- **Lookups.** The dedup MACs and the identities of the whole batch are looked up with a few
  ``IN (...)`` queries (:data:`CHUNK` values each) instead of two queries per record; what the
  batch itself stores or changes is tracked in memory, so an item may repeat or version one
  written earlier in the same batch.
- **Inserts.** New records go into ``records`` with multi-row ``INSERT ... VALUES`` statements
  of up to :data:`ROWS_PER_INSERT` rows. The FTS trigger then runs for many rows inside one
  statement, and FTS5 (which flushes its pending terms at the end of every statement) writes
  one segment per statement instead of one per record: the insert with its FTS work measured
  1.9x faster than ``executemany`` of a one-row ``INSERT`` (and 12 % faster than moving the
  rows through a ``TEMP`` table with one ``INSERT ... SELECT``). Row ids are given explicitly
  (the largest plus one, what SQLite would choose), so keys and tags follow with
  ``executemany``.
- **Updates** (a changed item) are rare and written one by one, after the staged inserts are
  flushed, as before.

Everything happens in the caller's transaction: a record is stored whole (row, FTS entry, key,
tags, journal event) or, if anything fails, the batch rolls back.
"""

from __future__ import annotations

from collections import defaultdict
from itertools import chain
from typing import TYPE_CHECKING, Any

from memctl.crypto.keys import new_dek, wrap_dek
from memctl.ids import new_ulid

if TYPE_CHECKING:
    from memctl.journal import Event
    from memctl.vault.core import Vault
    from memctl.vault.records import Prepared

#: Values per ``IN (...)`` lookup (well under SQLite's variable limit).
CHUNK = 500
_COLUMNS = (
    "rowid, id, namespace, kind, title, body, tags, context, source, locator, observed_at, "
    "ingested_at, updated_at, actor, trust, plugin, meta, content_mac, version"
)
_N_COLUMNS = _COLUMNS.count(",") + 1
_ROW_MARKS = "(" + ",".join("?" * _N_COLUMNS) + ")"
#: Rows per ``INSERT``: 19,000 variables, under SQLite's default limit (32,766).
ROWS_PER_INSERT = 1000

#: (rowid, id, version, content_mac) of a stored record
_Stored = tuple[int, str, int, bytes]


def _chunks(values: list[Any]) -> list[list[Any]]:
    return [values[i : i + CHUNK] for i in range(0, len(values), CHUNK)]


def stored_macs(conn: Any, batch: list[Prepared]) -> dict[tuple[str, bytes], str]:
    """``(namespace, content MAC) -> record id`` for the batch's contents already stored."""
    wanted: dict[str, set[bytes]] = defaultdict(set)
    for p in batch:
        wanted[p.namespace].add(p.content_mac)
    found: dict[tuple[str, bytes], str] = {}
    for ns, macs in wanted.items():
        for chunk in _chunks(list(macs)):
            marks = ",".join("?" * len(chunk))
            for mac, rid in conn.execute(
                f"SELECT content_mac, id FROM records WHERE namespace = ? "
                f"AND content_mac IN ({marks})",
                (ns, *chunk),
            ):
                found[(ns, mac)] = rid
    return found


def stored_identities(conn: Any, batch: list[Prepared]) -> dict[tuple[str, str, str], _Stored]:
    """``(namespace, source, locator) -> stored record`` for the batch's identities; the
    lowest rowid when several records share one (what a lookup through the index returns)."""
    wanted: dict[str, set[str]] = defaultdict(set)
    namespaces: set[str] = set()
    for p in batch:
        if p.source and p.locator is not None:
            wanted[p.source].add(p.locator)
            namespaces.add(p.namespace)
    found: dict[tuple[str, str, str], _Stored] = {}
    for source, locators in wanted.items():
        for chunk in _chunks(sorted(locators)):
            marks = ",".join("?" * len(chunk))
            rows = conn.execute(
                "SELECT rowid, id, version, content_mac, namespace, locator FROM records "
                f"WHERE source = ? AND locator IN ({marks}) ORDER BY rowid",
                (source, *chunk),
            )
            for rowid, rid, version, mac, ns, locator in rows:
                if ns in namespaces:
                    found.setdefault((ns, source, locator), (rowid, rid, version, mac))
    return found


class BatchWriter:
    """Writes one batch in the caller's transaction; call :meth:`write` per record in order,
    then :meth:`flush` before anything reads the records back (vectors, the journal)."""

    def __init__(self, vault: Vault, conn: Any, batch: list[Prepared], now: str) -> None:
        self.vault = vault
        self.conn = conn
        self.now = now
        self.macs = stored_macs(conn, batch)
        self.identities = stored_identities(conn, batch)
        self.next_rowid: int = conn.execute(
            "SELECT coalesce(max(rowid), 0) + 1 FROM records"
        ).fetchone()[0]
        self._rows: list[tuple[Any, ...]] = []
        self._keys: list[tuple[int, bytes]] = []
        self._tags: list[tuple[str, int]] = []

    def write(self, p: Prepared) -> tuple[str, str, int, Event | None]:
        """(outcome, record id, rowid, journal event or None) of one record."""
        from memctl.journal import Event

        mac_key = (p.namespace, p.content_mac)
        dup = self.macs.get(mac_key)
        if dup is not None:
            return "skipped", dup, 0, None
        identity = (
            (p.namespace, p.source, p.locator) if p.source and p.locator is not None else None
        )
        if identity is not None:
            prior = self.identities.get(identity)  # type: ignore[arg-type]
            if prior is not None:
                return self._update(p, identity, prior)  # type: ignore[arg-type]
        rowid = self.next_rowid
        self.next_rowid += 1
        rid = new_ulid()
        dek = new_dek()
        now = self.now
        self._rows.append(
            (
                rowid,
                rid,
                p.namespace,
                p.kind,
                p.title,
                p.text,
                p.tags_text,
                p.context,
                p.source,
                p.locator,
                p.observed_at,
                now,
                now,
                p.actor,
                p.trust,
                p.plugin,
                p.meta_json,
                p.content_mac,
                1,
            )
        )
        self._keys.append((rowid, wrap_dek(self.vault._dek_wrap_key, dek, rid)))
        if p.tags:
            self._tags.extend((t, rowid) for t in p.tags)
        self.macs[mac_key] = rid
        if identity is not None:
            self.identities[identity] = (rowid, rid, 1, p.content_mac)  # type: ignore[index]
        return "added", rid, rowid, Event("ingest", rid, self.vault._event_payload(p, 1), dek=dek)

    def _update(
        self, p: Prepared, identity: tuple[str, str, str], prior: _Stored
    ) -> tuple[str, str, int, Event]:
        """A new version of a stored record (perhaps one added earlier in this batch)."""
        from memctl.journal import Event

        self.flush()
        rowid, rid, version, old_mac = prior
        changed = self.vault._new_version(self.conn, rowid, version, p, self.now)
        self.macs.pop((p.namespace, old_mac), None)
        self.macs[(p.namespace, p.content_mac)] = rid
        self.identities[identity] = (rowid, rid, version + 1, p.content_mac)
        payload = {**self.vault._event_payload(p, version + 1), "changed": changed}
        return "updated", rid, rowid, Event("update", rid, payload, dek=self.vault.record_key(rid))

    def flush(self) -> None:
        """Insert the pending records (a statement per :data:`ROWS_PER_INSERT`), then their
        keys and tags."""
        if not self._rows:
            return
        conn = self.conn
        rows, self._rows = self._rows, []
        keys, self._keys = self._keys, []
        tags, self._tags = self._tags, []
        for start in range(0, len(rows), ROWS_PER_INSERT):
            part = rows[start : start + ROWS_PER_INSERT]
            conn.execute(
                f"INSERT INTO records({_COLUMNS}) VALUES {','.join([_ROW_MARKS] * len(part))}",
                list(chain.from_iterable(part)),
            )
        conn.executemany("INSERT INTO record_keys(record_rowid, wrapped) VALUES (?, ?)", keys)
        if tags:
            conn.executemany("INSERT INTO record_tags(tag, record_rowid) VALUES (?, ?)", tags)
