"""Erasure (GDPR Art. 17): a record leaves no readable trace in the vault's files.

The procedure (docs/erasure.md):

1. one transaction removes the records — their FTS5 entries go with them (triggers, with FTS5
   ``secure-delete`` on since the index was created), and by cascade their tags, versions and
   wrapped data keys — and zeroes their vector slots. Copies of their text in neighbours'
   ``context`` column are scrubbed, and the neighbours' with-context vectors (which embedded
   that text) are dropped and queued for re-embedding (:data:`REEMBED_KEY`). The FTS5 index is
   then checked for what ``secure-delete`` can leave: a b-tree separator key that is a prefix
   of an erased term and of no live one; only then is the index rewritten (``optimize``).
   A large batch skips ``secure-delete`` and rewrites the index once instead (cheaper).
2. ``VACUUM`` (a larger page cache meanwhile) and ``PRAGMA wal_checkpoint(TRUNCATE)``, which
   must report zero busy readers (memctl waits for them, and otherwise records the erasure as
   *physically pending* and finishes it at the next opportunity — it never silently skips it);
3. an ``erased`` event in the journal (ids and counts only);
4. a receipt: ids, time, and what was destroyed.

A batch (many ids, ``--query``, ``--source``, ...) shares one transaction and one VACUUM.
"""

from __future__ import annotations

import bisect
import json
import re
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from memctl.errors import UsageError
from memctl.ids import new_ulid
from memctl.recall.filters import Filters
from memctl.timeutil import now_iso

if TYPE_CHECKING:
    from memctl.vault.core import Vault

PENDING_KEY = "erase_pending"
#: Records whose with-context vector was dropped because it embedded erased text: re-embedded
#: from their scrubbed neighbourhood when the model is next loaded (:func:`reembed_pending`).
REEMBED_KEY = "reembed_pending"
DEFAULT_WAIT_S = 10.0
#: A batch of at least ``1 / BULK_SHARE`` of the vault's records skips FTS5 ``secure-delete``
#: and rewrites the index once (``optimize``). Measured at 100k records (load ~5):
#: secure-delete costs ~7 ms per record, an optimize ~2.4 s in all (docs/erasure.md).
BULK_SHARE = 300
#: Page cache during VACUUM: the whole database (+25 %) up to this size. Measured at 100k
#: (126 MB): VACUUM 35-40 % faster than with the 64 MiB cache of a normal connection.
VACUUM_CACHE_MAX_KIB = 1024 * 1024
#: Texts with which the scrub looks up copies in the FTS index (the longest words).
ANCHOR_WORDS = 3
_WORD = re.compile(r"\w+")


def select(
    vault: Vault,
    *,
    ids: list[str] | None = None,
    query: str | None = None,
    filters: Filters | None = None,
) -> list[tuple[int, str]]:
    """The (rowid, id) pairs an erase would remove, in id order.

    ``ids`` are exact ids or unique prefixes; ``query`` selects exactly what a keyword recall with
    the same filters finds, without a limit; filters alone select every matching record.
    """
    filters = filters or Filters()
    if not ids and not query and filters.is_empty():
        raise UsageError("erase needs record ids, --query, or a filter (--source, --tag, ...)")
    conn = vault.conn
    where, params = filters.sql("r")
    chosen: dict[int, str] = {}
    if ids:
        resolved = sorted({vault.resolve_id(i) for i in ids})
        for start in range(0, len(resolved), 500):
            chunk = resolved[start : start + 500]
            marks = ",".join("?" * len(chunk))
            for rowid, rid in conn.execute(
                f"SELECT r.rowid, r.id FROM records r WHERE r.id IN ({marks}) AND {where}",
                [*chunk, *params],
            ):
                chosen[rowid] = rid
    if query is not None:
        from memctl.recall.query import build_match

        match = build_match(query)
        if match is not None:
            for rowid, rid in conn.execute(
                "SELECT r.rowid, r.id FROM records_fts JOIN records r "
                f"ON r.rowid = records_fts.rowid WHERE records_fts MATCH ? AND {where}",
                [match, *params],
            ):
                chosen[rowid] = rid
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
        "neighbour_vectors": 0,
    }
    fts_rewrite = "none"
    if targets:
        with vault.lock(), vault.transaction() as conn:
            _load_targets(conn, rowids)
            inside = "IN (SELECT rowid FROM temp.memctl_erase_targets)"
            destroyed["versions"] = conn.execute(
                f"SELECT count(*) FROM record_versions WHERE record_rowid {inside}"
            ).fetchone()[0]
            destroyed["data_keys"] = conn.execute(
                f"SELECT count(*) FROM record_keys WHERE record_rowid {inside}"
            ).fetchone()[0]
            victims = conn.execute(
                f"SELECT rowid, namespace, source, body FROM records WHERE rowid {inside}"
            ).fetchall()
            scrubbed = _scrub_context_copies(conn, victims, set(rowids))
            destroyed["context_copies"] = len(scrubbed)
            destroyed["vector_slots"] = vault._erase_vectors(conn, rowids)
            destroyed["journal_events_unreadable"] = vault._journal_event_count(ids)
            total = conn.execute("SELECT max(rowid) FROM records").fetchone()[0] or 0
            bulk = len(rowids) * BULK_SHARE >= total
            terms: list[bytes] = [] if bulk else _terms(conn, inside)
            if bulk:  # tombstones now, one rewrite below (cheaper than secure-delete per row)
                conn.execute(
                    "INSERT INTO records_fts(records_fts, rank) VALUES('secure-delete', 0)"
                )
            cur = conn.execute(f"DELETE FROM records WHERE rowid {inside}")
            destroyed["rows"] = cur.rowcount
            destroyed["fts_entries"] = cur.rowcount  # the delete trigger removes one each
            if bulk:
                conn.execute(
                    "INSERT INTO records_fts(records_fts, rank) VALUES('secure-delete', 1)"
                )
                conn.execute("INSERT INTO records_fts(records_fts) VALUES('optimize')")
                fts_rewrite = "optimize (batch)"
            else:
                # FTS5 buffers changes until commit; write them out so the check sees them
                conn.execute("INSERT INTO records_fts(records_fts) VALUES('flush')")
                if fts_leftovers(conn, terms):
                    conn.execute("INSERT INTO records_fts(records_fts) VALUES('optimize')")
                    fts_rewrite = "optimize (separator key)"
            conn.execute("DELETE FROM temp.memctl_erase_targets")
            stale: set[int] = set()
            if vault.header.model:
                stale = (scrubbed | _embedded_neighbours(conn, victims)) - set(rowids)
                destroyed["neighbour_vectors"] = vault._drop_context_vectors(conn, sorted(stale))
            queue = set(_queue(conn))
            if stale or queue & set(rowids):
                _set_queue(conn, (queue - set(rowids)) | stale)
            conn.executemany(
                "INSERT INTO erasures(record_id, erased_at, actor, receipt_id) VALUES (?,?,?,?)",
                [(rid, erased_at, actor, receipt_id) for rid in ids],
            )
            pending = _pending(conn)
            pending.append(receipt_id)
            _set_pending(conn, pending)
            vault._journal_erased(ids, actor=actor, receipt_id=receipt_id, destroyed=destroyed)
    if targets and vault.header.model and vault._embedder is not None:
        # the model is loaded (agent, MCP): no need to wait; a busy vault leaves it queued
        reembed_pending(vault, wait_s=1.0)
    complete = finish_physical(vault, wait_s=wait_s) if physical else False
    return {
        "receipt_id": receipt_id,
        "erased": ids,
        "erased_at": erased_at,
        "actor": actor,
        "dry_run": False,
        "destroyed": destroyed,
        "fts_rewrite": fts_rewrite,
        "physical": "complete" if complete else "pending",
    }


def _load_targets(conn: Any, rowids: list[int]) -> None:
    """The batch's rowids in a temporary table (no limit on how many a statement names)."""
    conn.execute("CREATE TEMP TABLE IF NOT EXISTS memctl_erase_targets(rowid INTEGER PRIMARY KEY)")
    conn.execute("DELETE FROM temp.memctl_erase_targets")
    conn.executemany(
        "INSERT OR IGNORE INTO temp.memctl_erase_targets(rowid) VALUES (?)",
        [(r,) for r in rowids],
    )


# -- neighbours' copies of the text ---------------------------------------------------------
def text_pattern(text: str) -> re.Pattern[str] | None:
    """A pattern for ``text`` as a neighbour's context may quote it: the same words in order,
    any case, any whitespace or punctuation between them, never inside a longer word."""
    words = _WORD.findall(text)
    if not words:
        return None
    body = r"\W+".join(re.escape(w) for w in words)
    return re.compile(rf"(?<!\w){body}(?!\w)", re.IGNORECASE)


def scrub_text(context: str, text: str) -> str | None:
    """``context`` without any copy of ``text`` (:func:`text_pattern`); None when nothing is
    left. A line that held a copy and keeps no word of its own goes with it."""
    pattern = text_pattern(text)
    if pattern is None:  # no words (emoji, punctuation): exact copies only
        marked = context.replace(text, "\x00") if text else context
    else:
        marked = pattern.sub("\x00", context)
    if "\x00" not in marked:
        return context
    lines = []
    for line in marked.split("\n"):
        if "\x00" in line:
            line = line.replace("\x00", "").strip()
            if not _WORD.search(line):
                continue
        lines.append(line)
    out = "\n".join(lines).strip("\n")
    return out or None


def _fts_phrase(word: str) -> str:
    return '"' + word.replace('"', '""') + '"'


def _scrub_context_copies(conn: Any, victims: list[Any], gone: set[int]) -> set[int]:
    """Remove each erased record's text from the ``context`` of the records of its source.

    The vault copies neighbouring records' text into ``records.context`` for retrieval
    (memctl/vault/semantic.py): erasing a record erases those copies too, exact or with other
    case, whitespace or punctuation (:func:`scrub_text`). Candidates come from the FTS index
    (the context column holding the text's longest words), so the cost does not grow with the
    source's size. The update goes through the FTS trigger: the index forgets them too.
    Returns the rowids whose context changed.
    """
    changed: set[int] = set()
    for rowid, namespace, source, body in victims:
        if source is None or not body:
            continue
        words = sorted(set(_WORD.findall(body)), key=lambda w: (-len(w), w))[:ANCHOR_WORDS]
        if words:
            match = "context : (" + " AND ".join(_fts_phrase(w) for w in words) + ")"
            rows = conn.execute(
                "SELECT rowid, context FROM records WHERE rowid IN (SELECT rowid FROM "
                "records_fts WHERE records_fts MATCH ?) AND namespace = ? AND source = ?",
                (match, namespace, source),
            ).fetchall()
        else:
            rows = conn.execute(
                "SELECT rowid, context FROM records WHERE namespace = ? AND source = ? "
                "AND instr(context, ?) > 0",
                (namespace, source, body),
            ).fetchall()
        for other, context in rows:
            if other in gone or other == rowid or not context:
                continue
            new = scrub_text(context, body)
            if new != context:
                conn.execute("UPDATE records SET context = ? WHERE rowid = ?", (new, other))
                changed.add(other)
    return changed


def _group_rowids(conn: Any, namespace: str, source: str) -> list[int]:
    return [
        r
        for (r,) in conn.execute(
            "SELECT rowid FROM records WHERE source = ? AND namespace = ? ORDER BY rowid",
            (source, namespace),
        )
    ]


def _near(rowids: list[int], rowid: int, radius: int) -> list[int]:
    """The ``radius`` rowids each side of ``rowid`` in the sorted ``rowids`` (itself excluded)."""
    i = bisect.bisect_left(rowids, rowid)
    j = i + 1 if i < len(rowids) and rowids[i] == rowid else i
    return rowids[max(0, i - radius) : i] + rowids[j : j + radius]


def _embedded_neighbours(conn: Any, victims: list[Any]) -> set[int]:
    """Surviving records next to an erased one in its source: their with-context vectors
    embedded its text (``fusion.EMBED_CONTEXT_RADIUS`` each side, as at ingest)."""
    from memctl.recall.fusion import EMBED_CONTEXT_RADIUS

    groups: dict[tuple[str, str], list[int]] = {}
    for rowid, namespace, source, _ in victims:
        if source is not None:
            groups.setdefault((namespace, source), []).append(rowid)
    out: set[int] = set()
    for (namespace, source), members in groups.items():
        alive = _group_rowids(conn, namespace, source)
        if alive:
            for rowid in members:
                out.update(_near(alive, rowid, EMBED_CONTEXT_RADIUS))
    return out


# -- the re-embedding queue -----------------------------------------------------------------
def _queue(conn: Any) -> list[int]:
    row = conn.execute("SELECT value FROM meta WHERE key = ?", (REEMBED_KEY,)).fetchone()
    return [int(r) for r in json.loads(row[0])] if row else []


def _set_queue(conn: Any, rowids: Iterable[int]) -> None:
    rowids = sorted(set(rowids))
    if rowids:
        conn.execute(
            "INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)",
            (REEMBED_KEY, json.dumps(rowids)),
        )
    else:
        conn.execute("DELETE FROM meta WHERE key = ?", (REEMBED_KEY,))


def reembed_queue(vault: Vault) -> list[int]:
    """Rowids whose with-context vector awaits re-embedding after an erase."""
    return _queue(vault.conn)


def context_texts(conn: Any, rowids: Iterable[int]) -> dict[int, str]:
    """The with-context embedding text of each existing record of ``rowids``, from what the
    vault holds now: its title and body with its nearest surviving neighbours of the same
    source (``fusion.EMBED_CONTEXT_RADIUS`` each side), or its context without a source."""
    from memctl.recall import fusion

    wanted = sorted(set(rowids))
    rows: dict[int, tuple[Any, ...]] = {}
    for start in range(0, len(wanted), 500):
        chunk = wanted[start : start + 500]
        for row in conn.execute(
            "SELECT rowid, namespace, source, title, body, context FROM records "
            f"WHERE rowid IN ({','.join('?' * len(chunk))})",
            chunk,
        ):
            rows[row[0]] = row
    groups: dict[tuple[str, str], list[int]] = {}
    near: dict[int, list[int]] = {}
    for rowid, namespace, source, *_ in rows.values():
        if source is not None:
            key = (namespace, source)
            if key not in groups:
                groups[key] = _group_rowids(conn, namespace, source)
            near[rowid] = _near(groups[key], rowid, fusion.EMBED_CONTEXT_RADIUS)
    bodies: dict[int, str] = {}
    need = sorted({n for ns in near.values() for n in ns})
    for start in range(0, len(need), 500):
        chunk = need[start : start + 500]
        bodies.update(
            conn.execute(
                f"SELECT rowid, body FROM records WHERE rowid IN ({','.join('?' * len(chunk))})",
                chunk,
            ).fetchall()
        )
    out: dict[int, str] = {}
    for rowid, (_, _, source, title, body, context) in rows.items():
        extra = [bodies[n] for n in near[rowid]] if source is not None else [context]
        out[rowid] = fusion.embedding_texts(title or "", body, [t for t in extra if t])[1]
    return out


def reembed_pending(vault: Vault, *, batch_size: int = 256, wait_s: float | None = None) -> int:
    """Re-embed the queued with-context vectors with the loaded model; return how many.

    Does nothing when the model is not loaded or a transaction is open (the queue waits).
    Texts are embedded outside the write transaction and written only if they are still what
    the vault holds (another erase may have changed a neighbourhood meanwhile). With
    ``wait_s`` (a read such as a recall), a writer holding the database for longer than that
    leaves the queue for next time instead of blocking.
    """
    from memctl.errors import VaultBusy

    conn = vault.conn
    embedder = vault._embedder
    if embedder is None or not vault.header.model or conn.in_transaction:
        return 0
    done = 0
    tried: set[int] = set()
    while True:
        todo = [r for r in _queue(conn) if r not in tried][:batch_size]
        if not todo:
            return done
        tried.update(todo)
        texts = context_texts(conn, todo)
        vecs = embedder.encode(list(texts.values())) if texts else []
        old = conn.execute("PRAGMA busy_timeout").fetchone()[0]
        if wait_s is not None:
            conn.execute(f"PRAGMA busy_timeout = {int(wait_s * 1000)}")
        try:
            with vault.transaction() as c:
                queued = set(_queue(c))
                now = context_texts(c, [r for r in texts if r in queued])
                put = {
                    r: v for (r, t), v in zip(texts.items(), vecs, strict=True) if now.get(r) == t
                }
                if put:
                    import numpy as np

                    vault.vectors.put_many(list(put), np.stack(list(put.values())))
                missing = set(todo) - set(texts)  # erased meanwhile
                _set_queue(c, [r for r in queued if r not in put and r not in missing])
        except VaultBusy:
            if wait_s is None:
                raise
            return done
        finally:
            conn.execute(f"PRAGMA busy_timeout = {old}")
        done += len(put)


# -- what FTS5 secure-delete can leave ------------------------------------------------------
def _tokenizer(conn: Any) -> str:
    sql = conn.execute("SELECT sql FROM sqlite_master WHERE name = 'records_fts'").fetchone()[0]
    m = re.search(r"tokenize\s*=\s*'([^']*)'", sql)
    return m.group(1) if m else "unicode61"


def _terms(conn: Any, inside: str) -> list[bytes]:
    """The index terms of the records ``inside`` names, with the index's own tokenizer.

    They are tokenized in a temporary FTS5 table (temp_store = MEMORY: never on disk) and read
    back through fts5vocab; the table is emptied before the transaction ends.
    """
    conn.execute(
        "CREATE VIRTUAL TABLE IF NOT EXISTS temp.memctl_erase_terms USING fts5(t, tokenize = "
        f"'{_tokenizer(conn)}')"
    )
    conn.execute(
        "CREATE VIRTUAL TABLE IF NOT EXISTS temp.memctl_erase_terms_v "
        "USING fts5vocab(temp, memctl_erase_terms, row)"
    )
    conn.execute("DELETE FROM temp.memctl_erase_terms")
    conn.execute(
        "INSERT INTO temp.memctl_erase_terms(t) SELECT concat_ws(char(10), title, body, tags, "
        f"context) FROM records WHERE rowid {inside}"
    )
    terms = sorted(
        t.encode() for (t,) in conn.execute("SELECT term FROM temp.memctl_erase_terms_v")
    )
    conn.execute("DELETE FROM temp.memctl_erase_terms")
    return terms


def fts_leftovers(conn: Any, terms: list[bytes]) -> list[bytes]:
    """Separator keys of the FTS5 b-trees that could reveal an erased term.

    ``secure-delete`` removes a term's entries from the leaf pages, but a segment's
    ``records_fts_idx`` keeps, for each leaf page, the shortest prefix of the page's first term
    that separates it from the page before. If that first term was erased, the prefix stays
    until the segment is rewritten. A key is a leftover when it is a prefix of an erased term
    and of no live term (a prefix of a live term reveals nothing the index does not hold).
    Cost: one scan of ``records_fts_idx`` (one row per leaf page) and one vocabulary lookup per
    suspect key.
    """
    if not terms:
        return []
    suspects: set[bytes] = set()
    for (key,) in conn.execute("SELECT term FROM records_fts_idx"):
        key = bytes(key) if not isinstance(key, str) else key.encode()
        if len(key) < 2 or key[:1] != b"0":  # '0': the main index (no prefix indexes)
            continue
        sep = key[1:]
        i = bisect.bisect_left(terms, sep)
        if i < len(terms) and terms[i].startswith(sep):
            suspects.add(sep)
    if not suspects:
        return []
    conn.execute(
        "CREATE VIRTUAL TABLE IF NOT EXISTS temp.memctl_fts_vocab "
        "USING fts5vocab(main, records_fts, row)"
    )
    leftovers = []
    for sep in sorted(suspects):
        lo = sep.decode("utf-8", "ignore")  # a key may end inside a UTF-8 sequence
        live = any(
            t.encode().startswith(sep)
            for (t,) in conn.execute(
                "SELECT term FROM temp.memctl_fts_vocab WHERE term >= ? AND term < ?",
                (lo, lo + "\U0010ffff"),
            )
        )
        if not live:
            leftovers.append(sep)
    return leftovers


# -- the physical steps ---------------------------------------------------------------------
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


def vacuum(conn: Any) -> None:
    """``VACUUM`` with a page cache that holds the whole database (bounded), then the
    connection's own cache size again. Rebuilding every page is what clears bytes a b-tree
    page keeps in its free space after cells moved (the control test shows them)."""
    old = int(conn.execute("PRAGMA cache_size").fetchone()[0])
    pages = int(conn.execute("PRAGMA page_count").fetchone()[0])
    size = int(conn.execute("PRAGMA page_size").fetchone()[0])  # SQLCipher: a string
    want = min(VACUUM_CACHE_MAX_KIB, pages * size * 5 // 4 // 1024)
    old_kib = -old if old < 0 else old * size // 1024
    conn.execute(f"PRAGMA cache_size = {-max(want, old_kib)}")
    try:
        conn.execute("VACUUM")
    finally:
        conn.execute(f"PRAGMA cache_size = {old}")


def finish_physical(vault: Vault, *, wait_s: float = DEFAULT_WAIT_S) -> bool:
    """Make pending erasures physical: VACUUM, checkpoint, clear the flag, checkpoint.

    Returns True when nothing is pending any more. Safe to call any time (idempotent).
    """
    conn = vault.conn
    if not _pending(conn):
        return True
    vacuum(conn)
    # TRUNCATE writes every page VACUUM rebuilt into index.db and empties the WAL (which held
    # the erase transaction's frames and every older copy).
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
