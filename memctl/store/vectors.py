"""Packed vector store: fixed-size slots in fixed-size pages inside the (encrypted) index DB.

Why pages: loading every vector must be a few large sequential reads, not one read per
record, and SQLCipher's cost is per database page (measured ~20 µs per 4 KiB page), so
vectors are packed many to a row. Why int8 (format 2): search runs over a resident int8
copy with a 1-bit sign code of each vector for a cheap first pass, and the int8 codes plus
one float32 scale per vector are all that is stored (396 bytes at 384-d against 1,536 for
float32). ``get``/``all_vectors``/``exact_search`` see the dequantised values. A format-1
store (float32 next to the int8 copy) is converted on open, in one transaction. See
docs/vectors.md for the exact layout and the measured figures.

Transactions belong to the caller: write methods run inside the caller's transaction
(opening one with BEGIN when none is open, as Python's sqlite3 does before DML) and use a
SAVEPOINT only so that a failed call leaves no half-written page. They never commit.

Works with ``sqlite3`` and ``sqlcipher3`` connections alike. numpy is imported lazily.
"""

from __future__ import annotations

import json
import math
import re
import secrets
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

from memctl.errors import CorruptVault, ModelError, UsageError
from memctl.worker import Worker

FORMAT_VERSION = 2
SLOTS_PER_PAGE = 256  # a 99 KiB page row at dim 384 (fits 4 KiB pages well); docs/vectors.md
COMPACT_THRESHOLD = 0.5
FULL_SCAN_MAX = 16_384  # up to this many vectors, score them all with int8 (no prefilter)
QUERY_BITS = 4  # the query's precision in the 1-bit prefilter
# Prefilter keeps max(MIN_CANDIDATES, 40k, n / CANDIDATE_DIVISOR) candidates for int8
# rescoring: measured recall@10 on 100k random vectors 0.964 at n/25, 0.975 at n/12.5,
# 0.978 at n/5, for about the same time (the 1-bit pass dominates).
MIN_CANDIDATES = 2000
CANDIDATE_DIVISOR = 12
_NORM_TOLERANCE = 1e-3
_GEN_BASE = 1 << 62  # gens in [2^62, 2^63): always an 8-byte integer, so a page row never
# changes size and SQLite overwrites it in place (only the changed 4 KiB pages are written)
_SAVEPOINT = "memctl_vectors"
_CONVERT_SAVEPOINT = "memctl_vectors_convert"

DEFAULT_PREFIX = "vec"
_PREFIX = re.compile(r"[a-z][a-z0-9_]{0,30}")
_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS {p}_meta(key TEXT PRIMARY KEY, value)",
    "CREATE TABLE IF NOT EXISTS {p}_pages("
    "page_no INTEGER PRIMARY KEY, gen INTEGER NOT NULL, head BLOB NOT NULL, data BLOB NOT NULL)",
    "CREATE TABLE IF NOT EXISTS {p}_slots("
    "record_rowid INTEGER PRIMARY KEY, slot INTEGER NOT NULL UNIQUE)",
)


#: From this many slots (or candidates) on, a scan is split in two halves, one on a worker
#: thread: numpy releases the GIL in these loops, so on two cores the halves run at once.
PARALLEL_MIN = 32_768
_SCAN = Worker("memctl-scan")


def _in_halves(part: Any, n: int) -> list[Any]:
    """``[part(0, n)]``, or ``[part(0, m), part(m, n)]`` with the first half on a worker thread.

    Only pure numpy work goes to the worker (no database access: the connection stays on
    the caller's thread).
    """
    if n < PARALLEL_MIN:
        return [part(0, n)]
    mid = n // 2
    first = _SCAN.submit(part, 0, mid)
    second = part(mid, n)
    return [first.result(), second]


def _check_prefix(prefix: str) -> str:
    if not _PREFIX.fullmatch(prefix):
        raise UsageError(f"invalid vector table prefix {prefix!r}")
    return prefix


def create_tables(conn: Any, prefix: str = DEFAULT_PREFIX) -> None:
    """Create the vector tables if missing (called from the vault's schema migration 1).

    ``prefix`` names an independent store (tables ``<prefix>_meta``, ``<prefix>_pages``,
    ``<prefix>_slots``), e.g. a second vector per record embedded with its context.
    """
    p = _check_prefix(prefix)
    for stmt in _SCHEMA:
        conn.execute(stmt.format(p=p))


def _new_gen() -> int:
    return _GEN_BASE | secrets.randbits(62)


class _Resident:
    """The in-memory form of the store: what search needs, kept coherent with the DB.

    Slot ``s`` lives at row ``s`` of every array. ``bits`` holds each vector's sign bits,
    column-major (words, slots), so the prefilter streams each word of all slots
    contiguously. Nothing here is derived from data other than the page heads.
    """

    def __init__(self, np_mod: Any, dim: int, spp: int) -> None:
        np = np_mod
        self.np = np
        self.dim = dim
        self.spp = spp
        self.words = (dim + 63) // 64
        self.n_pages = 0
        self.cap = 0
        self.token: int | None = None
        self.gens: dict[int, int] = {}
        self.slot_rowid = np.zeros(0, np.int64)
        self.codes = np.zeros((0, dim), np.int8)
        self.scale = np.zeros(0, np.float32)
        self.bits = np.zeros((self.words, 0), np.uint64)
        self.pc = np.zeros(0, np.float32)
        self.rowid_slot: dict[int, int] = {}

    @property
    def live(self) -> int:
        return len(self.rowid_slot)

    def reserve(self, n_pages: int) -> None:
        """Grow the arrays (amortised doubling) to hold ``n_pages`` pages."""
        np = self.np
        need = n_pages * self.spp
        if need <= self.cap:
            return
        cap = max(need, self.cap * 2, self.spp)

        def grow(a: Any, shape: tuple[int, ...]) -> Any:
            b = np.zeros(shape, a.dtype)
            if a is self.bits:
                b[:, : a.shape[1]] = a
            else:
                b[: a.shape[0]] = a
            return b

        self.slot_rowid = grow(self.slot_rowid, (cap,))
        self.codes = grow(self.codes, (cap, self.dim))
        self.scale = grow(self.scale, (cap,))
        self.bits = grow(self.bits, (self.words, cap))
        self.pc = grow(self.pc, (cap,))
        self.cap = cap

    def load_all(self, n_pages: int, rows: Iterable[tuple[int, int, bytes]]) -> None:
        """Fill an empty resident copy from every page, read in one ordered scan."""
        np = self.np
        spp, dim = self.spp, self.dim
        self.reserve(n_pages)
        for page_no, gen, head in rows:
            rowids, scales, codes = _split_head(np, head, spp, dim)
            lo = page_no * spp
            if page_no >= n_pages:  # another writer appended since we sized the arrays
                self.reserve(page_no + 1)
            self.slot_rowid[lo : lo + spp] = rowids
            self.scale[lo : lo + spp] = scales
            self.codes[lo : lo + spp] = codes
            self.gens[page_no] = gen
            self.n_pages = max(self.n_pages, page_no + 1)
        end = self.n_pages * spp
        live = np.flatnonzero(self.slot_rowid[:end])
        self.rowid_slot = dict(zip(self.slot_rowid[live].tolist(), live.tolist(), strict=True))
        self.refresh_bits(0, end)

    def set_page(self, page_no: int, gen: int, head: bytes) -> None:
        """Install one page's head blob (rowids, scales, int8 codes) into the arrays."""
        np = self.np
        spp, dim = self.spp, self.dim
        rowids, scales, codes = _split_head(np, head, spp, dim)
        self.reserve(page_no + 1)
        lo, hi = page_no * spp, (page_no + 1) * spp
        old = self.slot_rowid[lo:hi]
        for s in np.flatnonzero(old).tolist():
            rowid = int(old[s])
            if self.rowid_slot.get(rowid) == lo + s:
                del self.rowid_slot[rowid]
        self.slot_rowid[lo:hi] = rowids
        self.scale[lo:hi] = scales
        self.codes[lo:hi] = codes
        live = np.flatnonzero(rowids)
        self.rowid_slot.update(zip(rowids[live].tolist(), (live + lo).tolist(), strict=True))
        self.gens[page_no] = gen
        self.n_pages = max(self.n_pages, page_no + 1)
        self.refresh_bits(lo, hi)

    def drop_pages_from(self, first_page: int) -> None:
        """Forget pages ``first_page`` and above."""
        np = self.np
        lo = first_page * self.spp
        hi = self.n_pages * self.spp
        if hi > lo:
            for s in np.flatnonzero(self.slot_rowid[lo:hi]).tolist():
                rowid = int(self.slot_rowid[lo + s])
                if self.rowid_slot.get(rowid) == lo + s:
                    del self.rowid_slot[rowid]
            self.slot_rowid[lo:hi] = 0
            self.scale[lo:hi] = 0
            self.codes[lo:hi] = 0
            self.bits[:, lo:hi] = 0
            self.pc[lo:hi] = 0
        for p in [p for p in self.gens if p >= first_page]:
            del self.gens[p]
        self.n_pages = min(self.n_pages, first_page)

    def refresh_bits(self, lo: int, hi: int) -> None:
        """Recompute the sign bits and their popcounts of slots [lo, hi), in chunks.

        Free slots have all-zero codes, hence all-zero bits (and are masked in search).
        Centring on the mean vector before taking signs was measured and bought nothing
        (LoCoMo MiniLM vectors and random ones alike), so the sign is of the raw code.
        """
        np = self.np
        for start in range(lo, hi, 16_384):
            stop = min(hi, start + 16_384)
            packed = np.packbits(self.codes[start:stop] > 0, axis=1)
            pad = self.words * 8 - packed.shape[1]
            if pad:
                packed = np.pad(packed, ((0, 0), (0, pad)))
            words = np.ascontiguousarray(packed).view(np.uint64)  # (n, words)
            self.bits[:, start:stop] = words.T
            self.pc[start:stop] = np.bitwise_count(words).sum(axis=1, dtype=np.int64)


def _head_size(spp: int, dim: int) -> int:
    return spp * (8 + 4 + dim)


def _split_head(np: Any, head: bytes, spp: int, dim: int) -> tuple[Any, Any, Any]:
    """Views of a head blob: rowids (int64), scales (float32), codes (int8, spp x dim)."""
    if len(head) != _head_size(spp, dim):
        raise CorruptVault("vector page head has the wrong size")
    rowids = np.frombuffer(head, "<i8", spp, 0)
    scales = np.frombuffer(head, "<f4", spp, 8 * spp)
    codes = np.frombuffer(head, np.int8, spp * dim, 12 * spp).reshape(spp, dim)
    return rowids, scales, codes


def quantise(np: Any, vecs: Any) -> tuple[Any, Any]:
    """Per-vector symmetric int8: codes = rint(x / s), s = max|x| / 127 (0 for a zero row)."""
    vecs = np.asarray(vecs, dtype=np.float32)
    amax = np.abs(vecs).max(axis=1) if vecs.size else np.zeros(len(vecs), np.float32)
    scale = (amax / 127.0).astype(np.float32)
    safe = np.where(scale > 0, scale, 1.0).astype(np.float32)
    codes = np.clip(np.rint(vecs / safe[:, None]), -127, 127).astype(np.int8)
    return codes, scale


def dequantise(np: Any, codes: Any, scale: Any) -> Any:
    """The float32 vectors that int8 ``codes`` with per-row ``scale`` stand for."""
    return codes.astype(np.float32) * np.asarray(scale, np.float32)[:, None]


class _Page:
    """A page read for modification: a writable copy of its head (rowids, scales, codes)."""

    def __init__(self, np: Any, spp: int, dim: int, head: bytes | None, data: bytes | None):
        if head is None:
            self.exists = False
            self.head = bytearray(_head_size(spp, dim))
        else:
            self.exists = True
            if data:  # format 2 keeps the column of format 1 but leaves it empty
                raise CorruptVault("vector page data is not empty")
            if len(head) != _head_size(spp, dim):
                raise CorruptVault("vector page head has the wrong size")
            self.head = bytearray(head)
        self.rowids, self.scales, self.codes = (
            np.frombuffer(self.head, "<i8", spp, 0),
            np.frombuffer(self.head, "<f4", spp, 8 * spp),
            np.frombuffer(self.head, np.int8, spp * dim, 12 * spp).reshape(spp, dim),
        )

    def clear(self, i: int) -> None:
        self.rowids[i] = 0
        self.scales[i] = 0
        self.codes[i] = 0


class VectorStore:
    """Vectors keyed by record rowid, packed into pages of ``<prefix>_pages``.

    ``dim`` is the embedder's dimension; a store that already holds vectors of another
    dimension raises ModelError. Thread-safe for use from several threads of one process
    (one lock); other processes are detected through the write token in ``vec_meta``.
    """

    def __init__(
        self,
        conn: Any,
        dim: int,
        *,
        prefix: str = DEFAULT_PREFIX,
        slots_per_page: int = SLOTS_PER_PAGE,
    ) -> None:
        import numpy as np

        if dim < 1 or slots_per_page < 1:
            raise UsageError("vector dimension and slots per page must be positive")
        p = _check_prefix(prefix)
        self.prefix = p
        self._t_meta, self._t_pages, self._t_slots = f"{p}_meta", f"{p}_pages", f"{p}_slots"
        self._np = np
        self._conn = conn
        self._lock = threading.RLock()
        self.dim = dim
        self.slots_per_page = slots_per_page
        self._initialised = False
        self._unsettled = False  # converted inside the caller's transaction: it may roll back
        self._res: _Resident | None = None
        with self._lock:
            self._adopt_meta()  # converts a format-1 store

    # ---------------------------------------------------------------- metadata

    def _meta(self) -> dict[str, Any]:
        return dict(self._conn.execute(f"SELECT key, value FROM {self._t_meta}").fetchall())

    def _set_meta(self, key: str, value: Any) -> None:
        self._conn.execute(
            f"INSERT INTO {self._t_meta}(key, value) VALUES (?, ?) "
            "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            (key, value),
        )

    def _read_token(self) -> int | None:
        row = self._conn.execute(
            f"SELECT value FROM {self._t_meta} WHERE key = 'write_token'"
        ).fetchone()
        return None if row is None else int(row[0])

    def model(self) -> dict[str, Any] | None:
        """The embedding model identity recorded with the vectors, if any."""
        row = self._conn.execute(f"SELECT value FROM {self._t_meta} WHERE key = 'model'").fetchone()
        return None if row is None else json.loads(row[0])

    def set_model(self, identity: dict[str, Any]) -> None:
        """Record the model identity (``memctl.embed.model_identity``) of the vectors.

        Refuses (ModelError) to relabel a non-empty store with a different model: vectors of
        two models are never mixed; re-embedding clears the store first.
        """
        if int(identity.get("dim", self.dim)) != self.dim:
            raise ModelError(f"model gives {identity.get('dim')}-d vectors, store holds {self.dim}")
        with self._write_tx():
            current = self.model()
            if current is not None and current != identity and self.count() > 0:
                raise ModelError(
                    f"the vectors were made by {current.get('name')}, not {identity.get('name')}; "
                    "re-embed the vault to change models"
                )
            self._init_meta()
            self._set_meta("model", json.dumps(identity, sort_keys=True))

    def _init_meta(self) -> None:
        if not self._adopt_meta():
            self._set_meta("format", FORMAT_VERSION)
            self._set_meta("dim", self.dim)
            self._set_meta("slots_per_page", self.slots_per_page)
            self._initialised = True

    def _adopt_meta(self) -> bool:
        """Pick up the layout another connection recorded after this store was opened.

        Until the first write, the dimension and page size are only this store's wish; the
        first writer (any connection) records them and everyone else must follow. A format-1
        store is converted here (see ``_convert``). Returns whether the store has a layout.
        """
        if self._initialised and not self._unsettled:
            return True
        meta = self._meta()
        if "dim" not in meta:
            self._initialised = self._unsettled = False
            return False
        if int(meta["dim"]) != self.dim:
            raise ModelError(
                f"the vector store holds {int(meta['dim'])}-dimensional vectors but the "
                f"embedder gives {self.dim}; re-embed the vault to change models"
            )
        fmt = int(meta.get("format", FORMAT_VERSION))
        if fmt == 1:
            with self._lock:
                self._convert()
            meta = self._meta()
        elif fmt != FORMAT_VERSION:
            raise CorruptVault(f"unsupported vector store format {fmt}")
        elif self._unsettled and not self._conn.in_transaction:
            self._unsettled = False  # the caller committed the conversion
        spp = int(meta["slots_per_page"])
        if not self._initialised or spp != self.slots_per_page:
            self._res = None
        self.slots_per_page = spp
        self._initialised = True
        return True

    # ---------------------------------------------------------------- format 1

    def _convert(self) -> None:
        """Rewrite a format-1 store as format 2, all or nothing.

        Outside a transaction this is its own ``BEGIN IMMEDIATE`` ... ``COMMIT`` (the only
        commit the store ever issues); inside the caller's transaction it runs under a
        savepoint and the caller's commit or rollback decides (after a rollback, the next
        call converts again). A crash leaves the format-1 store as it was.
        """
        conn = self._conn
        own = not conn.in_transaction
        conn.execute("BEGIN IMMEDIATE" if own else f"SAVEPOINT {_CONVERT_SAVEPOINT}")
        try:
            meta = self._meta()  # again, under the write lock: another process may have won
            if "dim" in meta and int(meta.get("format", FORMAT_VERSION)) == 1:
                self._rewrite_format1(int(meta["slots_per_page"]))
        except BaseException:
            try:
                if own:
                    conn.execute("ROLLBACK")
                else:
                    conn.execute(f"ROLLBACK TO {_CONVERT_SAVEPOINT}")
                    conn.execute(f"RELEASE {_CONVERT_SAVEPOINT}")
            except Exception:  # noqa: S110 - the original error is the one to report
                pass
            raise
        conn.execute("COMMIT" if own else f"RELEASE {_CONVERT_SAVEPOINT}")
        self._unsettled = not own
        self._res = None

    def _rewrite_format1(self, old_spp: int) -> None:
        """Quantise every format-1 page's float32 ``data`` into format-2 pages.

        Slot numbers do not change (``vec_slots`` stays as it is); the pages are regrouped
        from ``old_spp`` to this store's ``slots_per_page`` slots. Page rows are rewritten in
        place in an order that reads every old row before its row number is overwritten,
        holding at most a few old pages in memory. The ``int8`` head of format 1 is ignored:
        the codes are recomputed from the canonical float32 values.
        """
        np = self._np
        conn = self._conn
        dim, spp = self.dim, self.slots_per_page
        pages = [p for (p,) in conn.execute(f"SELECT page_no FROM {self._t_pages}")]
        old_n = len(pages)
        if pages and (min(pages) != 0 or max(pages) != old_n - 1):
            raise CorruptVault("vector pages are not contiguous")
        total = old_n * old_spp
        new_n = -(-total // spp)
        cache: dict[int, tuple[Any, Any]] = {}
        used: dict[int, int] = {}  # old page -> slots of it consumed so far

        def fetch(j: int) -> None:
            if j in used:
                return
            row = conn.execute(
                f"SELECT head, data FROM {self._t_pages} WHERE page_no = ?", (j,)
            ).fetchone()
            head, data = row
            if len(head) != _head_size(old_spp, dim) or len(data) != old_spp * dim * 4:
                raise CorruptVault("format-1 vector page has the wrong size")
            rowids = np.frombuffer(head, "<i8", old_spp, 0).copy()
            vecs = np.frombuffer(data, "<f4").reshape(old_spp, dim)
            if not np.isfinite(vecs).all():
                raise CorruptVault("format-1 vector page holds non-finite values")
            cache[j] = (rowids, vecs)
            used[j] = 0

        gen = _new_gen()
        order = range(new_n) if spp >= old_spp else range(new_n - 1, -1, -1)
        for k in order:
            page = _Page(np, spp, dim, None, None)
            lo, hi = k * spp, min((k + 1) * spp, total)
            for j in range(lo // old_spp, (hi - 1) // old_spp + 1):
                fetch(j)
                rowids, vecs = cache[j]
                a, b = max(lo, j * old_spp), min(hi, (j + 1) * old_spp)
                src = slice(a - j * old_spp, b - j * old_spp)
                dst = slice(a - lo, b - lo)
                codes, scales = quantise(np, vecs[src])
                free = rowids[src] == 0
                codes[free] = 0
                scales[free] = 0
                page.rowids[dst], page.scales[dst], page.codes[dst] = rowids[src], scales, codes
                used[j] += b - a
                if used[j] == old_spp:
                    del cache[j]
            if k < old_n:
                fetch(k)  # row k is about to be overwritten: keep what it still holds
                page.exists = True
            self._write_page(k, gen, page)
        conn.execute(f"DELETE FROM {self._t_pages} WHERE page_no >= ?", (new_n,))
        self._set_meta("format", FORMAT_VERSION)
        self._set_meta("slots_per_page", spp)
        self._set_meta("write_token", gen)

    # ---------------------------------------------------------------- transactions

    @contextmanager
    def _write_tx(self) -> Iterator[None]:
        """Run inside the caller's transaction; undo only our own statements on error."""
        conn = self._conn
        with self._lock:
            if not conn.in_transaction:
                conn.execute("BEGIN")
            conn.execute(f"SAVEPOINT {_SAVEPOINT}")
            try:
                yield
            except BaseException:
                self._res = None  # the resident copy may be half-updated: rebuild on demand
                try:
                    conn.execute(f"ROLLBACK TO {_SAVEPOINT}")
                    conn.execute(f"RELEASE {_SAVEPOINT}")
                except Exception:  # noqa: S110 - the original error is the one to report
                    pass
                raise
            conn.execute(f"RELEASE {_SAVEPOINT}")

    # ---------------------------------------------------------------- resident copy

    def load(self) -> int:
        """Bring the resident copy up to date (one scan the first time); return the count.

        Later calls are cheap: a single-row read of the write token, and when another
        process wrote, a re-read of only the pages whose ``gen`` changed.
        """
        with self._lock:
            return self._sync().live

    def _sync(self) -> _Resident:
        np = self._np
        self._adopt_meta()
        token = self._read_token()
        res = self._res
        if res is not None and res.token == token:
            return res
        spp, dim = self.slots_per_page, self.dim
        if res is None:
            res = _Resident(np, dim, spp)
            top = self._conn.execute(f"SELECT max(page_no) FROM {self._t_pages}").fetchone()[0]
            rows = self._conn.execute(
                f"SELECT page_no, gen, head FROM {self._t_pages} ORDER BY page_no"
            )
            res.load_all(0 if top is None else int(top) + 1, rows)
        else:
            db_gens = dict(
                self._conn.execute(f"SELECT page_no, gen FROM {self._t_pages}").fetchall()
            )
            n_pages = max(db_gens) + 1 if db_gens else 0
            if n_pages < res.n_pages:
                res.drop_pages_from(n_pages)
            changed = sorted(p for p, g in db_gens.items() if res.gens.get(p) != g)
            for start in range(0, len(changed), 256):
                part = changed[start : start + 256]
                marks = ",".join("?" * len(part))
                rows = self._conn.execute(
                    f"SELECT page_no, gen, head FROM {self._t_pages} WHERE page_no IN ({marks})",
                    part,
                )
                for page_no, gen, head in rows:
                    res.set_page(page_no, gen, head)
        if len(res.gens) != res.n_pages:
            raise CorruptVault("vector pages are not contiguous")
        res.token = token
        self._res = res
        return res

    # ---------------------------------------------------------------- writes

    def put(self, rowid: int, vec: Any) -> None:
        """Store (or replace) the vector of one record."""
        self.put_many([rowid], self._np.asarray(vec, dtype=self._np.float32).reshape(1, -1))

    def put_many(self, rowids: Iterable[int], matrix: Any) -> None:
        """Store (or replace) many vectors: one read and one UPDATE per touched page.

        New rowids take the lowest free slots; a rowid that already has a slot keeps it.
        Vectors must be finite, L2-normalised float32 rows of the store's dimension.
        """
        np = self._np
        ids = [int(r) for r in rowids]
        mat = np.ascontiguousarray(matrix, dtype=np.float32)
        if mat.ndim != 2 or mat.shape != (len(ids), self.dim):
            raise UsageError(
                f"expected a ({len(ids)}, {self.dim}) matrix of vectors, got shape {mat.shape}"
            )
        if not ids:
            return
        if len(set(ids)) != len(ids):
            raise UsageError("duplicate rowids in one put_many call")
        if min(ids) < 1:
            raise UsageError("record rowids must be >= 1")
        if not np.isfinite(mat).all():
            raise UsageError("vectors must be finite")
        norms = np.linalg.norm(mat, axis=1)
        if np.abs(norms - 1.0).max() > _NORM_TOLERANCE:
            raise UsageError("vectors must be L2-normalised")
        codes, scales = quantise(np, mat)
        with self._write_tx():
            self._init_meta()
            res = self._sync()
            spp = self.slots_per_page
            slots = np.empty(len(ids), np.int64)
            new_idx = [i for i, r in enumerate(ids) if r not in res.rowid_slot]
            for i, r in enumerate(ids):
                if r in res.rowid_slot:
                    slots[i] = res.rowid_slot[r]
            if new_idx:
                slots[new_idx] = self._allocate(res, len(new_idx))
            gen = _new_gen()
            by_page: dict[int, list[int]] = {}
            for i, s in enumerate(slots.tolist()):
                by_page.setdefault(s // spp, []).append(i)
            for page_no, members in sorted(by_page.items()):
                page = self._read_page(page_no)
                for i in members:
                    j = int(slots[i]) - page_no * spp
                    page.rowids[j] = ids[i]
                    page.scales[j] = scales[i]
                    page.codes[j] = codes[i]
                self._write_page(page_no, gen, page)
                res.set_page(page_no, gen, bytes(page.head))
            self._conn.executemany(
                f"INSERT INTO {self._t_slots}(record_rowid, slot) VALUES (?, ?)",
                [(ids[i], int(slots[i])) for i in new_idx],
            )
            self._set_meta("write_token", gen)
            res.token = gen

    def _allocate(self, res: _Resident, n: int) -> Any:
        """The ``n`` lowest free slots, appending pages past the end when needed."""
        np = self._np
        end = res.n_pages * self.slots_per_page
        free = np.flatnonzero(res.slot_rowid[:end] == 0)[:n]
        if len(free) < n:
            extra = np.arange(end, end + n - len(free), dtype=np.int64)
            free = np.concatenate([free, extra])
        return free.astype(np.int64)

    def _read_page(self, page_no: int) -> _Page:
        row = self._conn.execute(
            f"SELECT head, data FROM {self._t_pages} WHERE page_no = ?", (page_no,)
        ).fetchone()
        head, data = (None, None) if row is None else row
        return _Page(self._np, self.slots_per_page, self.dim, head, data)

    def _write_page(self, page_no: int, gen: int, page: _Page) -> None:
        if page.exists:
            self._conn.execute(
                f"UPDATE {self._t_pages} SET gen = ?, head = ?, data = x'' WHERE page_no = ?",
                (gen, bytes(page.head), page_no),
            )
        else:
            self._conn.execute(
                f"INSERT INTO {self._t_pages}(page_no, gen, head, data) VALUES (?, ?, ?, x'')",
                (page_no, gen, bytes(page.head)),
            )
            page.exists = True

    def delete(self, rowids: Iterable[int]) -> int:
        """Free the slots of ``rowids`` and zero their bytes; return how many were stored.

        Rowids without a vector are ignored. The page is rewritten in the caller's
        transaction, so the vector's bytes leave the live page at commit.
        """
        with self._write_tx():
            res = self._sync()
            spp = self.slots_per_page
            victims = sorted({int(r) for r in rowids} & res.rowid_slot.keys())
            if not victims:
                return 0
            slots = [res.rowid_slot[r] for r in victims]
            gen = _new_gen()
            by_page: dict[int, list[int]] = {}
            for s in slots:
                by_page.setdefault(s // spp, []).append(s)
            for page_no, members in sorted(by_page.items()):
                page = self._read_page(page_no)
                if not page.exists:
                    raise CorruptVault("a vector slot points at a missing page")
                for s in members:
                    page.clear(s - page_no * spp)
                self._write_page(page_no, gen, page)
                res.set_page(page_no, gen, bytes(page.head))
            self._conn.executemany(
                f"DELETE FROM {self._t_slots} WHERE record_rowid = ?", [(r,) for r in victims]
            )
            self._set_meta("write_token", gen)
            res.token = gen
            return len(victims)

    def clear(self) -> None:
        """Remove every vector and the model label (before a re-embedding migration)."""
        with self._write_tx():
            self._zero_pages_from(0)
            self._conn.execute(f"DELETE FROM {self._t_pages}")
            self._conn.execute(f"DELETE FROM {self._t_slots}")
            self._conn.execute(f"DELETE FROM {self._t_meta} WHERE key = 'model'")
            self._set_meta("write_token", _new_gen())
            self._res = None

    def _zero_pages_from(self, first_page: int) -> None:
        """Scrub pages >= first_page before they are deleted, unless SQLite will.

        With ``secure_delete = ON`` (the vault's setting) SQLite zeroes every page a DELETE
        frees, so rewriting first would only double the I/O. Otherwise the rows are
        overwritten with zeros first: same-size rows are rewritten in place by SQLite.
        """
        row = self._conn.execute("PRAGMA secure_delete").fetchone()
        if row is not None and int(row[0]) == 1:
            return
        head = bytes(_head_size(self.slots_per_page, self.dim))
        self._conn.execute(
            f"UPDATE {self._t_pages} SET head = ? WHERE page_no >= ?", (head, first_page)
        )

    def compact(self, threshold: float = COMPACT_THRESHOLD) -> int:
        """Drop empty tail pages; below ``threshold`` occupancy, also fill holes from the tail.

        Vectors move from the highest live slots into the lowest free ones (their bytes copied
        exactly), the vacated tail pages are zeroed and deleted. Returns how many moved.
        """
        np = self._np
        with self._write_tx():
            res = self._sync()
            spp = self.slots_per_page
            end = res.n_pages * spp
            live_slots = np.flatnonzero(res.slot_rowid[:end])
            if res.n_pages == 0:
                return 0
            occupancy = len(live_slots) / end
            if occupancy < threshold:
                keep_pages = math.ceil(len(live_slots) / spp)
            else:
                keep_pages = (int(live_slots[-1]) // spp + 1) if len(live_slots) else 0
            if keep_pages >= res.n_pages:
                return 0
            boundary = keep_pages * spp
            sources = live_slots[live_slots >= boundary][::-1]
            holes = np.flatnonzero(res.slot_rowid[:boundary] == 0)[: len(sources)]
            gen = _new_gen()
            moved = list(zip(sources.tolist(), holes.tolist(), strict=True))
            src_pages: dict[int, _Page] = {}
            dst_pages: dict[int, _Page] = {}
            for src, dst in moved:
                sp, dp = src // spp, dst // spp
                if sp not in src_pages:
                    src_pages[sp] = self._read_page(sp)
                if dp not in dst_pages:
                    dst_pages[dp] = self._read_page(dp)
                a, b = src_pages[sp], dst_pages[dp]
                i, j = src - sp * spp, dst - dp * spp
                b.rowids[j], b.scales[j], b.codes[j] = a.rowids[i], a.scales[i], a.codes[i]
            for page_no, page in sorted(dst_pages.items()):
                self._write_page(page_no, gen, page)
            self._conn.executemany(
                f"UPDATE {self._t_slots} SET slot = ? WHERE record_rowid = ?",
                [(dst, int(res.slot_rowid[src])) for src, dst in moved],
            )
            self._zero_pages_from(keep_pages)
            self._conn.execute(f"DELETE FROM {self._t_pages} WHERE page_no >= ?", (keep_pages,))
            self._set_meta("write_token", gen)
            res.drop_pages_from(keep_pages)
            for page_no, page in sorted(dst_pages.items()):
                res.set_page(page_no, gen, bytes(page.head))
            res.token = gen
            return len(moved)

    # ---------------------------------------------------------------- reads

    def count(self) -> int:
        """Number of stored vectors (from the DB; does not load the resident copy)."""
        return int(self._conn.execute(f"SELECT count(*) FROM {self._t_slots}").fetchone()[0])

    def pages(self) -> int:
        """Number of allocated pages."""
        return int(self._conn.execute(f"SELECT count(*) FROM {self._t_pages}").fetchone()[0])

    def occupancy(self) -> float:
        """Live slots / allocated slots (1.0 for an empty store)."""
        self._adopt_meta()
        pages = self.pages()
        return 1.0 if pages == 0 else self.count() / (pages * self.slots_per_page)

    def stats(self) -> dict[str, Any]:
        self._adopt_meta()
        pages = self.pages()
        live = self.count()
        return {
            "dim": self.dim,
            "slots_per_page": self.slots_per_page,
            "pages": pages,
            "live": live,
            "capacity": pages * self.slots_per_page,
            "occupancy": 1.0 if pages == 0 else live / (pages * self.slots_per_page),
            "bytes_per_page": _head_size(self.slots_per_page, self.dim),
        }

    def __contains__(self, rowid: object) -> bool:
        return isinstance(rowid, int) and self.slot_of(rowid) is not None

    def rowids(self) -> Any:
        """Every stored rowid, ascending, as an int64 array (from the resident copy)."""
        np = self._np
        with self._lock:
            res = self._sync()
            return np.array(sorted(res.rowid_slot), dtype=np.int64)

    def slot_of(self, rowid: int) -> int | None:
        row = self._conn.execute(
            f"SELECT slot FROM {self._t_slots} WHERE record_rowid = ?", (int(rowid),)
        ).fetchone()
        return None if row is None else int(row[0])

    def get(self, rowid: int) -> Any | None:
        """The stored vector of ``rowid`` (int8 codes x scale, as float32), or None.

        This is the dequantised value (within scale / 2 of the vector that was put, per
        component), not the float32 vector that was put: format 2 does not keep that.
        """
        self._adopt_meta()
        np = self._np
        slot = self.slot_of(rowid)
        if slot is None:
            return None
        spp = self.slots_per_page
        page = self._read_page(slot // spp)
        if not page.exists:
            raise CorruptVault("a vector slot points at a missing page")
        i = slot % spp
        return dequantise(np, page.codes[i : i + 1], page.scales[i : i + 1])[0]

    def all_vectors(self) -> tuple[Any, Any]:
        """(rowids, dequantised float32 matrix) of every stored vector, in slot order."""
        self._adopt_meta()
        np = self._np
        spp, dim = self.slots_per_page, self.dim
        ids: list[Any] = []
        mats: list[Any] = []
        for (head,) in self._conn.execute(f"SELECT head FROM {self._t_pages} ORDER BY page_no"):
            rowids, scales, codes = _split_head(np, head, spp, dim)
            live = np.flatnonzero(rowids)
            ids.append(rowids[live].astype(np.int64))
            mats.append(dequantise(np, codes[live], scales[live]))
        if not ids:
            return np.zeros(0, np.int64), np.zeros((0, dim), np.float32)
        return np.concatenate(ids), np.concatenate(mats)

    def _check_query(self, query: Any) -> Any:
        np = self._np
        q = np.asarray(query, dtype=np.float32).reshape(-1)
        if q.shape != (self.dim,):
            raise UsageError(f"query has {q.size} dimensions, the store holds {self.dim}")
        if not np.isfinite(q).all():
            raise UsageError("query vector must be finite")
        norm = float(np.linalg.norm(q))
        return q / norm if norm > 0 else q

    def search(
        self,
        query: Any,
        k: int = 10,
        *,
        allowed_rowids: set[int] | None = None,
        candidates: int | None = None,
    ) -> list[tuple[int, float]]:
        """Top-``k`` (rowid, cosine) by descending cosine, over the resident int8 copy.

        Up to FULL_SCAN_MAX vectors (or ``allowed_rowids`` of at most that size) are all
        scored with int8; beyond that a 1-bit prefilter picks ``candidates`` (default
        max(2000, 40k, n/12)) which are then rescored with int8. The cosines are those of
        the stored int8 vectors (within ~1e-3 of the float32 vectors that were put).
        """
        if k <= 0:
            return []
        q = self._check_query(query)
        with self._lock:
            return self._search_in(self._sync(), q, k, allowed_rowids, candidates)

    def snapshot(self) -> Any:
        """``search`` over the resident copy as it is now, callable from another thread.

        Brings the resident copy up to date here (that reads the database, so on the
        connection's thread) and returns ``search(query, k, allowed_rowids=None)`` that
        touches only numpy: hybrid recall embeds the query and searches on a worker thread
        while the keyword search uses the connection. Writes through this store object
        update the resident copy in place (under the store's lock) and are seen; writes by
        other connections are picked up by the next snapshot.
        """
        with self._lock:
            res = self._sync()

        def search(
            query: Any, k: int = 10, *, allowed_rowids: set[int] | None = None
        ) -> list[tuple[int, float]]:
            if k <= 0:
                return []
            q = self._check_query(query)
            with self._lock:
                return self._search_in(res, q, k, allowed_rowids, None)

        return search

    def _search_in(
        self,
        res: _Resident,
        q: Any,
        k: int,
        allowed_rowids: set[int] | None,
        candidates: int | None,
    ) -> list[tuple[int, float]]:
        np = self._np
        n = res.n_pages * res.spp
        if res.live == 0:
            return []
        if allowed_rowids is not None:
            slots = np.fromiter(
                (res.rowid_slot[r] for r in allowed_rowids if r in res.rowid_slot),
                dtype=np.int64,
            )
            if len(slots) == 0:
                return []
            pool = len(slots)
        else:
            slots = None
            pool = res.live
        c = candidates or max(MIN_CANDIDATES, 40 * k, pool // CANDIDATE_DIVISOR)
        if pool <= FULL_SCAN_MAX or c >= pool:
            if slots is None:  # score the whole prefix in place: no gather
                scores = np.einsum("ij,j->i", res.codes[:n], q)
                scores *= res.scale[:n]
                scores[res.slot_rowid[:n] == 0] = -np.inf
                return self._top(res, scores, np.arange(n), min(k, pool))
            return self._rescore(res, q, slots, k)
        est = self._estimate(res, q, n)
        if slots is None:
            est[res.slot_rowid[:n] == 0] = -np.inf
        else:
            mask = np.ones(n, bool)
            mask[slots] = False
            est[mask] = -np.inf
        cand = np.argpartition(-est, c)[:c]
        return self._rescore(res, q, cand, k)

    def score_rowids(self, query: Any, rowids: Iterable[int]) -> Any:
        """Cosines (int8 approximations) of ``query`` with the given records' vectors.

        Returns a float32 array aligned with ``rowids``; NaN where a rowid has no vector.
        Costs a dict lookup and a dot product per rowid (for re-ranking keyword candidates).
        """
        np = self._np
        q = self._check_query(query)
        ids = [int(r) for r in rowids]
        with self._lock:
            res = self._sync()
            slots = np.fromiter((res.rowid_slot.get(r, -1) for r in ids), np.int64, len(ids))
            out = np.full(len(ids), np.nan, np.float32)
            have = slots >= 0
            if have.any():
                s = slots[have]
                out[have] = np.einsum("ij,j->i", np.take(res.codes, s, axis=0), q) * res.scale[s]
            return out

    def _rescore(self, res: _Resident, q: Any, slots: Any, k: int) -> list[tuple[int, float]]:
        np = self._np
        # einsum runs int8 x float32 in one single-threaded pass: no float32 copy of the
        # codes, and no BLAS thread wake-up (measured 2-7 ms for a 6k x 384 gemv on a
        # busy 2-core machine, against 0.7 ms here). Many candidates: two halves at once.
        slots = np.sort(slots)

        def part(lo: int, hi: int) -> Any:
            some = slots[lo:hi]
            return np.einsum("ij,j->i", np.take(res.codes, some, axis=0), q) * res.scale[some]

        scores = np.concatenate(_in_halves(part, len(slots)))
        return self._top(res, scores, slots, min(k, len(slots)))

    def _top(self, res: _Resident, scores: Any, slots: Any, k: int) -> list[tuple[int, float]]:
        """The k best (rowid, score) pairs, best first; ``scores[i]`` belongs to ``slots[i]``."""
        np = self._np
        top = np.argpartition(-scores, k - 1)[:k]
        top = top[np.argsort(-scores[top], kind="stable")]
        return [(int(res.slot_rowid[slots[i]]), float(scores[i])) for i in top]

    @staticmethod
    def _estimate(res: _Resident, q: Any, n: int) -> Any:
        """Estimate q·s for slots [0, n): s = sign(x) in {-1, +1}, the 1-bit code of x.

        q·s = 2·Σ_{bit=1} q_i − Σ q_i, and Σ_{bit=1} q_i is computed on a QUERY_BITS
        quantised query as Σ_p 2^p·popcount(plane_p AND bits) (scaled and offset back).
        Ranking by q·s approximates ranking by q·x well enough to pick candidates.
        """
        np = res.np
        levels = (1 << QUERY_BITS) - 1
        qmin = float(q.min())
        delta = (float(q.max()) - qmin) / levels or 1.0
        u = np.rint((q - qmin) / delta).astype(np.uint8)
        planes = []
        for p in range(QUERY_BITS):
            plane = np.packbits(((u >> p) & 1).astype(bool))
            pad = res.words * 8 - plane.shape[0]
            if pad:
                plane = np.pad(plane, (0, pad))
            planes.append(plane.view(np.uint64)[:, None])

        def part(lo: int, hi: int) -> Any:
            bits = res.bits[:, lo:hi]
            acc = np.zeros(hi - lo, np.uint32)
            tmp = np.empty_like(bits)
            cnt = np.empty(bits.shape, np.uint8)
            for p, plane in enumerate(planes):
                np.bitwise_and(bits, plane, out=tmp)
                np.bitwise_count(tmp, out=cnt)
                acc += cnt.sum(axis=0, dtype=np.uint32) << p
            return acc

        acc = np.concatenate(_in_halves(part, n))
        sum_set = qmin * res.pc[:n] + delta * acc.astype(np.float32)
        return 2.0 * sum_set - float(q.sum())

    def exact_search(
        self, query: Any, k: int = 10, *, allowed_rowids: set[int] | None = None
    ) -> list[tuple[int, float]]:
        """Reference search: every stored vector scored, streamed page by page from the DB.

        Exact over the stored (dequantised int8) vectors, with no prefilter: what ``search``
        would return if it scored everything. It is not exact against the float32 vectors
        that were put, which format 2 does not keep (the benchmarks measure that recall).
        """
        self._adopt_meta()
        np = self._np
        q = self._check_query(query)
        if k <= 0:
            return []
        spp, dim = self.slots_per_page, self.dim
        allowed = None if allowed_rowids is None else np.fromiter(allowed_rowids, np.int64)
        best_ids: list[Any] = []
        best_scores: list[Any] = []
        for (head,) in self._conn.execute(f"SELECT head FROM {self._t_pages} ORDER BY page_no"):
            rowids, scales, codes = _split_head(np, head, spp, dim)
            keep = rowids != 0
            if allowed is not None:
                keep &= np.isin(rowids, allowed)
            idx = np.flatnonzero(keep)
            if len(idx) == 0:
                continue
            scores = dequantise(np, codes[idx], scales[idx]) @ q
            best_ids.append(rowids[idx])
            best_scores.append(scores)
        if not best_ids:
            return []
        ids = np.concatenate(best_ids)
        scores = np.concatenate(best_scores)
        k = min(k, len(ids))
        top = np.argpartition(-scores, k - 1)[:k]
        top = top[np.argsort(-scores[top], kind="stable")]
        return [(int(ids[i]), float(scores[i])) for i in top]

    # ---------------------------------------------------------------- integrity

    def check(self) -> list[str]:
        """Cross-check pages and vec_slots; return a list of problems (empty when sound).

        Checks: pages contiguous from 0, heads of the right size and empty ``data``; each
        page's rowid array agrees with vec_slots; every free slot is all zero bytes.
        """
        self._adopt_meta()
        np = self._np
        spp, dim = self.slots_per_page, self.dim
        problems: list[str] = []
        from_pages: dict[int, int] = {}
        expected_page = 0
        for page_no, head, data in self._conn.execute(
            f"SELECT page_no, head, data FROM {self._t_pages} ORDER BY page_no"
        ):
            if page_no != expected_page:
                problems.append(f"page {expected_page} missing")
                expected_page = page_no
            expected_page += 1
            if len(head) != _head_size(spp, dim) or len(data) != 0:
                problems.append(f"page {page_no} has the wrong size")
                continue
            rowids, scales, codes = _split_head(np, head, spp, dim)
            free = rowids == 0
            dirty = (scales.view("<u4") != 0) | codes.any(axis=1)
            for j in np.flatnonzero(free & dirty).tolist():
                problems.append(f"free slot {page_no * spp + j} is not zeroed")
            for j in np.flatnonzero(~free).tolist():
                rowid = int(rowids[j])
                if rowid in from_pages:
                    problems.append(f"rowid {rowid} is in two slots")
                from_pages[rowid] = page_no * spp + j
        from_table = dict(self._conn.execute(f"SELECT record_rowid, slot FROM {self._t_slots}"))
        if from_table != from_pages:
            problems.append("vec_slots disagrees with the page rowid arrays")
        return problems
