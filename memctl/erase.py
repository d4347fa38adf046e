"""Erasure (GDPR Art. 17): a record leaves no readable trace in the vault's files.

The procedure (docs/erasure.md):

1. one transaction removes the record row — its FTS5 entry goes with it (triggers, with FTS5
   ``secure-delete`` on since the index was created), and by cascade its tags, versions and
   wrapped data key — and zeroes its vector slot;
2. FTS5 ``optimize``; ``PRAGMA wal_checkpoint(TRUNCATE)``, which must report zero busy readers
   (memctl waits for them, and otherwise records the erasure as *physically pending* and
   finishes it at the next opportunity — it never silently skips it); ``VACUUM``; checkpoint again;
3. an ``erased`` event in the journal (ids and counts only);
4. a receipt: ids, time, and what was destroyed.

Batch erases share one transaction, one optimize and one VACUUM.
"""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING, Any

from memctl.errors import UsageError
from memctl.ids import new_ulid
from memctl.recall.filters import Filters
from memctl.timeutil import now_iso

if TYPE_CHECKING:
    from memctl.vault.core import Vault

PENDING_KEY = "erase_pending"
DEFAULT_WAIT_S = 10.0
MAX_QUERY_MATCHES = 100_000


def select(
    vault: Vault,
    *,
    ids: list[str] | None = None,
    query: str | None = None,
    filters: Filters | None = None,
) -> list[tuple[int, str]]:
    """The (rowid, id) pairs an erase would remove, in id order.

    ``ids`` are exact ids or unique prefixes; ``query`` selects exactly what a keyword recall with
    the same filters returns (without a limit); filters alone select every matching record.
    """
    filters = filters or Filters()
    if not ids and not query and filters.is_empty():
        raise UsageError("erase needs record ids, --query, or a filter (--source, --tag, ...)")
    conn = vault.conn
    where, params = filters.sql("r")
    chosen: dict[int, str] = {}
    if ids:
        resolved = [vault.resolve_id(i) for i in ids]
        marks = ",".join("?" * len(resolved))
        for rowid, rid in conn.execute(
            f"SELECT r.rowid, r.id FROM records r WHERE r.id IN ({marks}) AND {where}",
            [*resolved, *params],
        ):
            chosen[rowid] = rid
    if query is not None:
        from memctl.recall.keyword import keyword_search

        for hit in keyword_search(
            conn, query, filters=filters, limit=MAX_QUERY_MATCHES, snippets=False
        ):
            chosen[hit["_rowid"]] = hit["id"]
    if not ids and query is None:
        for rowid, rid in conn.execute(
            f"SELECT r.rowid, r.id FROM records r WHERE {where}", params
        ):
            chosen[rowid] = rid
    return sorted(chosen.items(), key=lambda x: x[1])


def erase(
    vault: Vault,
    targets: list[tuple[int, str]],
    *,
    actor: str,
    wait_s: float = DEFAULT_WAIT_S,
    physical: bool = True,
) -> dict[str, Any]:
    """Erase ``targets`` (from :func:`select`) and return the receipt."""
    erased_at = now_iso()
    receipt_id = new_ulid()
    rowids = [r for r, _ in targets]
    ids = [i for _, i in targets]
    destroyed = {
        "rows": 0,
        "fts_entries": 0,
        "versions": 0,
        "vector_slots": 0,
        "data_keys": 0,
        "journal_events_unreadable": 0,
        "context_copies": 0,
    }
    if targets:
        with vault.lock(), vault.transaction() as conn:
            marks = ",".join("?" * len(rowids))
            destroyed["versions"] = conn.execute(
                f"SELECT count(*) FROM record_versions WHERE record_rowid IN ({marks})", rowids
            ).fetchone()[0]
            destroyed["data_keys"] = conn.execute(
                f"SELECT count(*) FROM record_keys WHERE record_rowid IN ({marks})", rowids
            ).fetchone()[0]
            destroyed["context_copies"] = _scrub_context_copies(conn, rowids)
            destroyed["vector_slots"] = vault._erase_vectors(conn, rowids)
            destroyed["journal_events_unreadable"] = vault._journal_event_count(ids)
            cur = conn.execute(f"DELETE FROM records WHERE rowid IN ({marks})", rowids)
            destroyed["rows"] = cur.rowcount
            destroyed["fts_entries"] = cur.rowcount  # the delete trigger removes one each
            conn.executemany(
                "INSERT INTO erasures(record_id, erased_at, actor, receipt_id) VALUES (?,?,?,?)",
                [(rid, erased_at, actor, receipt_id) for rid in ids],
            )
            pending = _pending(conn)
            pending.append(receipt_id)
            _set_pending(conn, pending)
            vault._journal_erased(ids, actor=actor, receipt_id=receipt_id, destroyed=destroyed)
    complete = finish_physical(vault, wait_s=wait_s) if physical else False
    return {
        "receipt_id": receipt_id,
        "erased": ids,
        "erased_at": erased_at,
        "actor": actor,
        "dry_run": False,
        "destroyed": destroyed,
        "physical": "complete" if complete else "pending",
    }


def _scrub_context_copies(conn: Any, rowids: list[int]) -> int:
    """Remove an erased record's text from its neighbours' context column (same source).

    The vault copies neighbouring records' text into ``records.context`` for retrieval
    (memctl/vault/semantic.py): erasing a record must erase those copies too. The update goes
    through the FTS trigger, so the index forgets them as well (secure-delete).
    """
    changed = 0
    marks = ",".join("?" * len(rowids))
    victims = conn.execute(
        f"SELECT rowid, namespace, source, body FROM records WHERE rowid IN ({marks}) "
        "AND source IS NOT NULL",
        rowids,
    ).fetchall()
    for rowid, namespace, source, body in victims:
        cur = conn.execute(
            "UPDATE records SET context = nullif(trim(replace(context, ?, ''), char(10)), '') "
            "WHERE namespace = ? AND source = ? AND rowid != ? AND context IS NOT NULL "
            "AND instr(context, ?) > 0",
            (body, namespace, source, rowid, body),
        )
        changed += cur.rowcount
    return changed


def _pending(conn: Any) -> list[str]:
    row = conn.execute("SELECT value FROM meta WHERE key = ?", (PENDING_KEY,)).fetchone()
    return json.loads(row[0]) if row else []


def _set_pending(conn: Any, pending: list[str]) -> None:
    if pending:
        conn.execute(
            "INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)",
            (PENDING_KEY, json.dumps(pending)),
        )
    else:
        conn.execute("DELETE FROM meta WHERE key = ?", (PENDING_KEY,))


def pending(vault: Vault) -> list[str]:
    return _pending(vault.conn)


def _checkpoint(conn: Any, wait_s: float) -> bool:
    """``wal_checkpoint(TRUNCATE)`` until no reader is busy, for at most ``wait_s`` seconds."""
    deadline = time.monotonic() + wait_s
    old = conn.execute("PRAGMA busy_timeout").fetchone()[0]
    conn.execute(f"PRAGMA busy_timeout = {max(0, int(wait_s * 1000))}")
    try:
        while True:
            busy, _log, _done = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
            if busy == 0:
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.05)
    finally:
        conn.execute(f"PRAGMA busy_timeout = {old}")


def finish_physical(vault: Vault, *, wait_s: float = DEFAULT_WAIT_S) -> bool:
    """Make pending erasures physical: optimize, checkpoint, VACUUM, checkpoint.

    Returns True when nothing is pending any more. Safe to call any time (idempotent).
    """
    conn = vault.conn
    if not _pending(conn):
        return True
    conn.execute("INSERT INTO records_fts(records_fts) VALUES('optimize')")
    if not _checkpoint(conn, wait_s):
        return False
    conn.execute("VACUUM")
    if not _checkpoint(conn, wait_s):
        return False
    # Clearing the flag is itself a write: checkpoint once more so the WAL ends empty.
    with vault.transaction() as c:
        _set_pending(c, [])
    return _checkpoint(conn, wait_s)


def erased_receipts(vault: Vault) -> list[dict[str, Any]]:
    return [
        {"id": rid, "erased_at": at, "actor": actor, "receipt_id": receipt}
        for rid, at, actor, receipt in vault.conn.execute(
            "SELECT record_id, erased_at, actor, receipt_id FROM erasures ORDER BY erased_at, rowid"
        )
    ]
