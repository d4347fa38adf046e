"""The packed vector store: allocator invariants, zeroing, persistence, search quality,
conversion of format-1 stores."""

from __future__ import annotations

import secrets
import sqlite3
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from memctl.errors import CorruptVault, ModelError, UsageError
from memctl.store import vectors as vectors_mod
from memctl.store.vectors import VectorStore, create_tables, dequantise, quantise


def unit_rows(seed: int, n: int, dim: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    m = rng.standard_normal((n, dim)).astype(np.float32)
    m /= np.linalg.norm(m, axis=1, keepdims=True)
    return m


def stored(mat: np.ndarray) -> np.ndarray:
    """What format 2 keeps of float32 rows: their int8 codes times their scale."""
    mat = np.atleast_2d(mat)
    out = dequantise(np, *quantise(np, mat))
    # the quantisation error is at most half a step per component
    step = np.abs(mat).max(axis=1, keepdims=True) / 127
    assert (np.abs(out - mat) <= step / 2 + 1e-7).all()
    return out


def code_bytes(vec: np.ndarray) -> bytes:
    """The int8 codes of one vector as stored on disk."""
    return quantise(np, vec[None])[0][0].tobytes()


def mem_conn() -> sqlite3.Connection:
    conn = sqlite3.connect(":memory:")
    create_tables(conn)
    return conn


def filled_store(n: int, dim: int, *, seed: int) -> tuple[VectorStore, np.ndarray]:
    """An in-memory store holding ``n`` random unit vectors at rowids 1..n, and the vectors."""
    store = VectorStore(mem_conn(), dim)
    mat = unit_rows(seed, n, dim)
    store.put_many(range(1, n + 1), mat)
    return store, mat


def file_conn(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA journal_mode = WAL")
    create_tables(conn)
    return conn


def db_slots(conn: sqlite3.Connection) -> dict[int, int]:
    return dict(conn.execute("SELECT record_rowid, slot FROM vec_slots"))


# ---------------------------------------------------------------- state machine

DIM = 8
SPP = 4


class VectorStoreMachine(RuleBasedStateMachine):
    """Random put/delete/compact/reopen against a dict model of what must be stored."""

    @initialize()
    def setup(self) -> None:
        self.conn = mem_conn()
        self.store = VectorStore(self.conn, DIM, slots_per_page=SPP)
        self.other = VectorStore(self.conn, DIM, slots_per_page=SPP)  # a second "process"
        self.model: dict[int, np.ndarray] = {}
        self.next_id = 1
        self.seed = 0

    def _vec(self) -> np.ndarray:
        self.seed += 1
        return unit_rows(self.seed, 1, DIM)[0]

    def _expected_free(self, n: int) -> list[int]:
        """The lowest n free slots the allocator must hand out."""
        used = set(db_slots(self.conn).values())
        pages = self.store.pages()
        free = [s for s in range(pages * SPP) if s not in used]
        nxt = pages * SPP
        while len(free) < n:
            free.append(nxt)
            nxt += 1
        return free[:n]

    @rule(count=st.integers(1, 6), via_other=st.booleans())
    def put_new(self, count: int, via_other: bool) -> None:
        ids = list(range(self.next_id, self.next_id + count))
        self.next_id += count
        mat = np.stack([self._vec() for _ in ids])
        expected = self._expected_free(count)
        (self.other if via_other else self.store).put_many(ids, mat)
        got = [db_slots(self.conn)[r] for r in ids]
        assert sorted(got) == expected  # freed slots reused, lowest first
        self.model.update(zip(ids, mat, strict=True))

    @precondition(lambda self: self.model)
    @rule(data=st.data())
    def overwrite(self, data: st.DataObject) -> None:
        rowid = data.draw(st.sampled_from(sorted(self.model)))
        slot = self.store.slot_of(rowid)
        vec = self._vec()
        self.store.put(rowid, vec)
        assert self.store.slot_of(rowid) == slot  # an existing rowid keeps its slot
        self.model[rowid] = vec

    @precondition(lambda self: self.model)
    @rule(data=st.data(), via_other=st.booleans())
    def delete(self, data: st.DataObject, via_other: bool) -> None:
        victims = data.draw(
            st.lists(st.sampled_from(sorted(self.model)), min_size=1, max_size=6, unique=True)
        )
        store = self.other if via_other else self.store
        assert store.delete([*victims, 10_000_000]) == len(victims)
        for r in victims:
            del self.model[r]

    @rule(threshold=st.sampled_from([0.25, 0.5, 0.75, 1.01]))
    def compact(self, threshold: float) -> None:
        before = self.store.pages()
        self.store.compact(threshold)
        after = self.store.pages()
        assert after <= before
        if threshold > 1:  # always compacts fully
            assert after == -(-len(self.model) // SPP)

    @rule()
    def reopen(self) -> None:
        self.store = VectorStore(self.conn, DIM, slots_per_page=SPP)

    @invariant()
    def slots_are_sound(self) -> None:
        if not hasattr(self, "conn"):
            return
        assert self.store.check() == []
        slots = db_slots(self.conn)
        assert set(slots) == set(self.model)
        assert len(set(slots.values())) == len(slots)  # no two rowids share a slot
        assert self.store.count() == len(self.model)

    @invariant()
    def vectors_read_back_exactly(self) -> None:
        if not hasattr(self, "conn"):
            return
        for rowid, vec in self.model.items():
            got = self.store.get(rowid)
            assert got is not None and np.array_equal(got, stored(vec)[0])
        assert sorted(self.store.rowids().tolist()) == sorted(self.model)

    @invariant()
    def search_finds_each_vector_itself(self) -> None:
        if not hasattr(self, "conn"):
            return
        for rowid, vec in list(self.model.items())[:5]:
            hits = self.store.search(vec, 1)
            assert hits[0][0] == rowid
            assert hits[0][1] == pytest.approx(1.0, abs=0.02)


TestVectorStoreMachine = VectorStoreMachine.TestCase
TestVectorStoreMachine.settings = settings(
    max_examples=40,
    stateful_step_count=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)


# ---------------------------------------------------------------- zeroing


def test_freed_slot_is_zero_in_the_stored_page() -> None:
    conn = mem_conn()
    store = VectorStore(conn, 16, slots_per_page=4)
    store.put_many([1, 2, 3], unit_rows(1, 3, 16))
    slot = store.slot_of(2)
    assert store.delete([2]) == 1
    head, data = conn.execute("SELECT head, data FROM vec_pages WHERE page_no = 0").fetchone()
    assert data == b""  # format 2 keeps no float32 copy
    spp = 4
    assert head[slot * 8 : slot * 8 + 8] == bytes(8)  # rowid
    assert head[8 * spp + slot * 4 : 8 * spp + slot * 4 + 4] == bytes(4)  # scale
    codes = 12 * spp + slot * 16
    assert head[codes : codes + 16] == bytes(16)
    assert store.check() == []


def test_deleted_vector_bytes_leave_the_database_file(tmp_path: Path) -> None:
    """After delete, commit and a checkpoint, the vector's int8 codes are nowhere in the file."""
    path = tmp_path / "v.db"
    conn = file_conn(path)
    conn.execute("PRAGMA secure_delete = ON")
    store = VectorStore(conn, 32, slots_per_page=8)
    mat = unit_rows(7, 20, 32)
    store.put_many(range(1, 21), mat)
    conn.commit()
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    marker = code_bytes(mat[4])
    assert marker in path.read_bytes()
    assert mat[4].tobytes() not in path.read_bytes()  # no float32 copy on disk
    store.delete([5])
    store.compact(threshold=1.01)  # also exercises moving vectors and dropping tail pages
    conn.commit()
    assert conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0] == 0
    assert marker not in path.read_bytes()
    assert code_bytes(mat[0]) in path.read_bytes()  # the oracle can find what is still there


# ---------------------------------------------------------------- persistence


def test_vectors_survive_close_and_reopen(tmp_path: Path) -> None:
    path = tmp_path / "v.db"
    conn = file_conn(path)
    store = VectorStore(conn, 24)
    mat = unit_rows(3, 300, 24)
    store.put_many(range(10, 310), mat)
    store.set_model({"name": "memctl/hashing-24", "dim": 24, "weights_sha256": "ab" * 32})
    conn.commit()
    conn.close()

    conn = sqlite3.connect(path)
    store = VectorStore(conn, 24)
    assert store.count() == 300
    assert store.model() == {"name": "memctl/hashing-24", "dim": 24, "weights_sha256": "ab" * 32}
    assert np.array_equal(store.get(10), stored(mat[0])[0])
    assert np.array_equal(store.get(309), stored(mat[299])[0])
    assert store.search(mat[123], 1)[0][0] == 133
    rowids, matrix = store.all_vectors()
    assert np.array_equal(matrix[np.argsort(rowids)], stored(mat))


def test_sqlcipher_connection_with_raw_key(tmp_path: Path) -> None:
    sqlcipher3 = pytest.importorskip("sqlcipher3")
    path = tmp_path / "enc.db"
    key = secrets.token_hex(32)

    def connect(k: str):
        c = sqlcipher3.connect(str(path))
        c.execute(f"PRAGMA key = \"x'{k}'\"")
        return c

    conn = connect(key)
    create_tables(conn)
    store = VectorStore(conn, 32)
    mat = unit_rows(5, 50, 32)
    store.put_many(range(1, 51), mat)
    conn.commit()
    conn.close()
    assert code_bytes(mat[0]) not in path.read_bytes()  # encrypted at rest

    conn = connect(key)
    store = VectorStore(conn, 32)
    assert np.array_equal(store.get(7), stored(mat[6])[0])
    assert store.search(mat[20], 1)[0][0] == 21
    conn.close()
    bad = connect(secrets.token_hex(32))
    with pytest.raises(sqlcipher3.DatabaseError):
        VectorStore(bad, 32)
    bad.close()


# ---------------------------------------------------------------- transactions and coherence


def test_never_commits_and_caller_rollback_is_seen(tmp_path: Path) -> None:
    conn = file_conn(tmp_path / "v.db")
    store = VectorStore(conn, 16)
    mat = unit_rows(9, 4, 16)
    store.put_many([1, 2], mat[:2])
    conn.commit()
    store.put_many([3], mat[2:3])
    assert conn.in_transaction  # left open for the caller
    assert store.search(mat[2], 1)[0][0] == 3
    conn.rollback()
    assert store.count() == 2
    assert store.search(mat[2], 3)[0][0] != 3
    assert 3 not in {r for r, _ in store.search(mat[2], 3)}
    store.put_many([4], mat[3:4])  # reuses the slot the rolled-back vector had
    assert store.slot_of(4) == 2
    assert store.check() == []


def test_two_connections_stay_coherent(tmp_path: Path) -> None:
    path = tmp_path / "v.db"
    a_conn, b_conn = file_conn(path), file_conn(path)
    a, b = VectorStore(a_conn, 16, slots_per_page=8), VectorStore(b_conn, 16)
    mat = unit_rows(11, 40, 16)
    a.put_many(range(1, 31), mat[:30])
    a_conn.commit()
    assert b.search(mat[5], 1)[0][0] == 6
    b.put_many(range(31, 41), mat[30:])
    b.delete([6])
    b_conn.commit()
    assert a.search(mat[35], 1)[0][0] == 36  # a re-reads only the changed pages
    assert 6 not in {r for r, _ in a.search(mat[5], 5)}
    assert a.load() == 39


def test_failed_put_leaves_nothing_half_written(monkeypatch: pytest.MonkeyPatch) -> None:
    conn = mem_conn()
    store = VectorStore(conn, 8, slots_per_page=2)
    mat = unit_rows(2, 6, 8)
    store.put_many([1, 2], mat[:2])
    conn.commit()
    real_write = VectorStore._write_page
    calls = {"n": 0}

    def flaky(self, page_no, gen, page):  # type: ignore[no-untyped-def]
        calls["n"] += 1
        if calls["n"] == 2:
            raise sqlite3.OperationalError("disk I/O error")
        return real_write(self, page_no, gen, page)

    monkeypatch.setattr(VectorStore, "_write_page", flaky)
    with pytest.raises(sqlite3.OperationalError):
        store.put_many([3, 4, 5, 6], mat[2:])
    monkeypatch.setattr(VectorStore, "_write_page", real_write)
    assert store.count() == 2
    assert store.pages() == 1
    assert store.check() == []
    assert store.search(mat[2], 2)[0][0] in {1, 2}
    store.put_many([3], mat[2:3])
    assert store.search(mat[2], 1)[0][0] == 3


# ---------------------------------------------------------------- compaction


def test_compaction_keeps_every_vector() -> None:
    conn = mem_conn()
    store = VectorStore(conn, 16, slots_per_page=8)
    mat = unit_rows(4, 200, 16)
    store.put_many(range(1, 201), mat)
    rng = np.random.default_rng(0)
    gone = set(rng.choice(np.arange(1, 201), size=140, replace=False).tolist())
    store.delete(gone)
    assert store.occupancy() == pytest.approx(60 / 200)
    assert store.compact(threshold=0.25) == 0  # above the threshold: no move
    moved = store.compact(threshold=0.5)
    assert moved > 0
    assert store.pages() == 8  # ceil(60 / 8)
    assert store.occupancy() == pytest.approx(60 / 64)
    assert store.check() == []
    for rowid in range(1, 201):
        got = store.get(rowid)
        if rowid in gone:
            assert got is None
        else:
            assert np.array_equal(got, stored(mat[rowid - 1])[0])
            assert store.search(mat[rowid - 1], 1)[0][0] == rowid


def test_compaction_drops_empty_tail_pages_without_moving() -> None:
    conn = mem_conn()
    store = VectorStore(conn, 8, slots_per_page=4)
    store.put_many(range(1, 13), unit_rows(1, 12, 8))
    store.delete(range(5, 13))
    assert store.pages() == 3
    assert store.compact(threshold=0.1) == 0
    assert store.pages() == 1
    assert store.occupancy() == 1.0


# ---------------------------------------------------------------- search quality


def test_quantised_top10_agrees_with_exact() -> None:
    """Random vectors are the hardest case (no clusters); prefilter path is exercised."""
    n, dim = vectors_mod.FULL_SCAN_MAX + 3_616, 384
    store, mat = filled_store(n, dim, seed=20)
    queries = unit_rows(21, 40, dim)
    recalls = []
    for q in queries:
        exact = np.argsort(-(mat @ q))[:10] + 1
        got = [r for r, _ in store.search(q, 10)]
        assert len(got) == 10
        recalls.append(len(set(got) & set(exact.tolist())) / 10)
    assert np.mean(recalls) >= 0.95  # against the float32 vectors, which are not stored
    # exact_search scores every stored (dequantised) vector
    ref = store.exact_search(queries[0], 10)
    assert [r for r, _ in ref] == (np.argsort(-(stored(mat) @ queries[0]))[:10] + 1).tolist()


def test_scans_split_in_halves_give_the_same_results(monkeypatch: pytest.MonkeyPatch) -> None:
    """The prefilter and the rescoring split across two threads: same hits, same scores."""
    n, dim = vectors_mod.FULL_SCAN_MAX + 2_000, 64
    store, _ = filled_store(n, dim, seed=22)
    queries = unit_rows(23, 5, dim)
    allowed = set(range(1, n + 1, 3))
    whole = [store.search(q, 20) for q in queries] + [
        store.search(q, 20, allowed_rowids=allowed) for q in queries
    ]
    calls: list[int] = []
    real = vectors_mod._in_halves

    def counted(part, m):
        calls.append(m)
        return real(part, m)

    monkeypatch.setattr(vectors_mod, "PARALLEL_MIN", 1_000)
    monkeypatch.setattr(vectors_mod, "_in_halves", counted)
    halves = [store.search(q, 20) for q in queries] + [
        store.search(q, 20, allowed_rowids=allowed) for q in queries
    ]
    assert halves == whole
    assert any(m >= n for m in calls)  # the prefilter over every slot was split
    assert any(1_000 <= m < n for m in calls)  # and so was the rescoring of its candidates


def test_snapshot_searches_from_another_thread_as_search_does() -> None:
    from concurrent.futures import ThreadPoolExecutor

    conn = mem_conn()
    store = VectorStore(conn, 32, slots_per_page=16)
    mat = unit_rows(31, 300, 32)
    store.put_many(range(1, 301), mat)
    search = store.snapshot()
    allowed = set(range(50, 120))
    with ThreadPoolExecutor(1) as pool:  # numpy only: no use of the connection there
        got = pool.submit(lambda: [search(mat[i], 7) for i in (0, 99, 250)]).result()
        got_allowed = pool.submit(search, mat[80], 5, allowed_rowids=allowed).result()
    assert got == [store.search(mat[i], 7) for i in (0, 99, 250)]
    assert got_allowed == store.search(mat[80], 5, allowed_rowids=allowed)
    assert search(mat[0], 0) == []
    # a later write is found by the next snapshot
    store.put_many([301], mat[:1] * -1.0)
    assert store.snapshot()(-mat[0], 1)[0][0] == 301


def test_search_with_allowed_rowids_and_scores_sorted() -> None:
    conn = mem_conn()
    store = VectorStore(conn, 32, slots_per_page=16)
    mat = unit_rows(30, 500, 32)
    store.put_many(range(1, 501), mat)
    allowed = set(range(100, 200))
    q = mat[150]
    hits = store.search(q, 10, allowed_rowids=allowed)
    assert hits[0][0] == 151
    assert {r for r, _ in hits} <= allowed
    scores = [s for _, s in hits]
    assert scores == sorted(scores, reverse=True)
    exact = store.exact_search(q, 10, allowed_rowids=allowed)
    assert len({r for r, _ in hits} & {r for r, _ in exact}) >= 9
    assert store.search(q, 10, allowed_rowids={999_999}) == []
    assert store.search(q, 0) == []
    assert len(store.search(q, 1000)) == 500


def test_prefilter_with_allowed_rowids() -> None:
    n, dim = vectors_mod.FULL_SCAN_MAX + 1_000, 64
    store, mat = filled_store(n, dim, seed=40)
    allowed = set(range(1, n + 1, 2))  # larger than FULL_SCAN_MAX: prefilter with a mask
    for i in (0, 2, 4000, 9000):
        hits = store.search(mat[i], 5, allowed_rowids=allowed, candidates=2000)
        assert hits[0][0] == i + 1
        assert {r for r, _ in hits} <= allowed


# ---------------------------------------------------------------- validation and pinning


def test_bad_input_is_a_usage_error() -> None:
    store = VectorStore(mem_conn(), 8)
    good = unit_rows(1, 2, 8)
    with pytest.raises(UsageError):
        store.put_many([1], good)  # wrong row count
    with pytest.raises(UsageError):
        store.put_many([1, 1], good)
    with pytest.raises(UsageError):
        store.put_many([0, 1], good)
    with pytest.raises(UsageError):
        store.put_many([1, 2], good * 2)  # not normalised
    with pytest.raises(UsageError):
        store.put(1, np.full(8, np.nan, np.float32))
    with pytest.raises(UsageError):
        store.search(np.ones(9, np.float32), 3)
    assert store.count() == 0


def test_dimension_and_model_are_pinned() -> None:
    conn = mem_conn()
    store = VectorStore(conn, 8)
    ident = {"name": "memctl/hashing-8", "dim": 8, "weights_sha256": "00" * 32}
    store.set_model(ident)
    store.put_many([1], unit_rows(1, 1, 8))
    with pytest.raises(ModelError):
        VectorStore(conn, 16)
    with pytest.raises(ModelError):
        store.set_model({**ident, "name": "other", "weights_sha256": "11" * 32})
    store.set_model(ident)  # the same model again is fine
    store.clear()
    assert store.count() == 0 and store.model() is None
    store.set_model({**ident, "name": "other", "weights_sha256": "11" * 32})
    assert store.model()["name"] == "other"


# ---------------------------------------------------------------- several stores, re-ranking


def test_prefixed_stores_are_independent() -> None:
    conn = mem_conn()
    create_tables(conn, prefix="vecctx")
    own, ctx = VectorStore(conn, 16), VectorStore(conn, 16, prefix="vecctx")
    mat = unit_rows(8, 6, 16)
    own.put_many([1, 2, 3], mat[:3])
    ctx.put_many([1, 2, 3], mat[3:])
    assert np.array_equal(own.get(1), stored(mat[0])[0])
    assert np.array_equal(ctx.get(1), stored(mat[3])[0])
    ctx.delete([2])
    assert own.count() == 3 and ctx.count() == 2
    assert own.check() == [] and ctx.check() == []
    with pytest.raises(UsageError):
        VectorStore(conn, 16, prefix="vec; DROP TABLE x")


def test_score_rowids_matches_exact_cosines() -> None:
    conn = mem_conn()
    store = VectorStore(conn, 64)
    mat = unit_rows(12, 100, 64)
    store.put_many(range(1, 101), mat)
    q = unit_rows(13, 1, 64)[0]
    got = store.score_rowids(q, [5, 999, 50])
    assert got.dtype == np.float32
    assert np.isnan(got[1])
    assert got[0] == pytest.approx(float(mat[4] @ q), abs=0.01)
    assert got[2] == pytest.approx(float(mat[49] @ q), abs=0.01)
    assert store.score_rowids(q, []).shape == (0,)


# ---------------------------------------------------------------- format 1 -> format 2


def write_format1(
    conn: sqlite3.Connection, dim: int, spp: int, slots: dict[int, int], mat: np.ndarray
) -> None:
    """A private writer of the format-1 layout (float32 ``data`` next to the int8 ``head``).

    ``slots`` maps rowid -> slot; ``mat`` holds the rowids' vectors in ``slots`` order.
    """
    create_tables(conn)
    for key, value in (("format", 1), ("dim", dim), ("slots_per_page", spp)):
        conn.execute("INSERT INTO vec_meta(key, value) VALUES (?, ?)", (key, value))
    conn.execute("INSERT INTO vec_meta(key, value) VALUES ('write_token', ?)", (1 << 62,))
    n_pages = max(slots.values()) // spp + 1 if slots else 0
    rowids = np.zeros(n_pages * spp, "<i8")
    data = np.zeros((n_pages * spp, dim), "<f4")
    for (rowid, slot), vec in zip(slots.items(), mat, strict=True):
        rowids[slot], data[slot] = rowid, vec
    codes, scales = quantise(np, data)
    for p in range(n_pages):
        page = slice(p * spp, (p + 1) * spp)
        head = rowids[page].tobytes() + scales[page].tobytes() + codes[page].tobytes()
        conn.execute(
            "INSERT INTO vec_pages(page_no, gen, head, data) VALUES (?, ?, ?, ?)",
            (p, (1 << 62) + p, head, data[page].tobytes()),
        )
    conn.executemany("INSERT INTO vec_slots(record_rowid, slot) VALUES (?, ?)", slots.items())
    conn.commit()


def format1_fixture(
    path: Path, old_spp: int
) -> tuple[sqlite3.Connection, dict[int, int], np.ndarray]:
    """A format-1 store of 37 vectors (dim 24) with holes and a partly filled last page."""
    conn = file_conn(path)
    conn.execute("PRAGMA secure_delete = ON")
    slot_list = [s for s in range(45) if s % 7 != 3][:37]
    slots = {1000 + i: s for i, s in enumerate(slot_list)}
    mat = unit_rows(50, len(slots), 24)
    write_format1(conn, 24, old_spp, slots, mat)
    return conn, slots, mat


def table_dump(conn: sqlite3.Connection) -> list[list[tuple]]:
    return [
        conn.execute(f"SELECT * FROM {t} ORDER BY 1").fetchall()
        for t in ("vec_meta", "vec_pages", "vec_slots")
    ]


@pytest.mark.parametrize(("old_spp", "new_spp"), [(4, 16), (8, 3), (8, 8)])
def test_format1_store_is_converted_on_open(tmp_path: Path, old_spp: int, new_spp: int) -> None:
    path = tmp_path / "v.db"
    conn, slots, mat = format1_fixture(path, old_spp)
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    assert mat[5].tobytes() in path.read_bytes()
    old_pages = conn.execute("SELECT count(*) FROM vec_pages").fetchone()[0]

    store = VectorStore(conn, 24, slots_per_page=new_spp)
    assert not conn.in_transaction  # converted in its own, committed transaction
    meta = dict(conn.execute("SELECT key, value FROM vec_meta"))
    assert int(meta["format"]) == 2 and int(meta["slots_per_page"]) == new_spp
    assert store.slots_per_page == new_spp
    assert store.pages() == -(-old_pages * old_spp // new_spp)
    assert db_slots(conn) == slots  # slot numbers do not change
    assert store.check() == []
    assert {len(d) for (d,) in conn.execute("SELECT data FROM vec_pages")} == {0}
    for (rowid, _), vec in zip(slots.items(), mat, strict=True):
        assert np.array_equal(store.get(rowid), stored(vec)[0])
        assert store.search(vec, 1)[0][0] == rowid
    assert conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0] == 0
    assert mat[5].tobytes() not in path.read_bytes()  # the float32 copy is gone
    assert code_bytes(mat[5]) in path.read_bytes()

    # it is an ordinary format-2 store now: reuse a hole, free, compact, reopen
    extra = unit_rows(51, 2, 24)
    store.put_many([1, 2], extra)
    assert store.slot_of(1) == 3  # the lowest hole of the fixture
    store.delete(list(slots)[:20])
    store.compact(threshold=1.01)
    conn.commit()
    store = VectorStore(sqlite3.connect(path), 24)
    assert store.check() == []
    assert np.array_equal(store.get(2), stored(extra[1])[0])
    assert store.count() == 19


def test_empty_format1_store_is_converted(tmp_path: Path) -> None:
    conn = file_conn(tmp_path / "v.db")
    write_format1(conn, 8, 4, {}, np.zeros((0, 8), np.float32))
    store = VectorStore(conn, 8)
    assert int(dict(conn.execute("SELECT key, value FROM vec_meta"))["format"]) == 2
    assert store.pages() == 0
    store.put_many([1], unit_rows(1, 1, 8))
    assert store.check() == []
    write_format1(file_conn(tmp_path / "w.db"), 8, 4, {}, np.zeros((0, 8), np.float32))
    other = sqlite3.connect(tmp_path / "w.db")
    with pytest.raises(ModelError):  # the dimension is checked before any conversion
        VectorStore(other, 16)
    assert int(dict(other.execute("SELECT key, value FROM vec_meta"))["format"]) == 1


def test_failed_conversion_changes_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    conn, _, mat = format1_fixture(tmp_path / "v.db", 4)
    before = table_dump(conn)
    real_write = VectorStore._write_page
    calls = {"n": 0}

    def flaky(self, page_no, gen, page):  # type: ignore[no-untyped-def]
        calls["n"] += 1
        if calls["n"] == 3:
            raise sqlite3.OperationalError("disk I/O error")
        return real_write(self, page_no, gen, page)

    monkeypatch.setattr(VectorStore, "_write_page", flaky)
    with pytest.raises(sqlite3.OperationalError):
        VectorStore(conn, 24, slots_per_page=4)
    assert calls["n"] == 3
    assert not conn.in_transaction
    assert table_dump(conn) == before
    monkeypatch.setattr(VectorStore, "_write_page", real_write)
    store = VectorStore(conn, 24, slots_per_page=4)
    assert store.check() == []
    assert np.array_equal(store.get(1000), stored(mat[0])[0])


def test_conversion_survives_a_killed_process(tmp_path: Path) -> None:
    """A process that dies mid-conversion (no rollback, no close) leaves format 1 intact."""
    import subprocess
    import sys

    path = tmp_path / "v.db"
    conn, _, _ = format1_fixture(path, 4)
    before = table_dump(conn)
    conn.close()
    child = (
        "import os, sqlite3, sys\n"
        "from memctl.store.vectors import VectorStore\n"
        "real = VectorStore._write_page\n"
        "n = [0]\n"
        "def dying(self, page_no, gen, page):\n"
        "    real(self, page_no, gen, page)\n"
        "    n[0] += 1\n"
        "    if n[0] == 5:\n"
        "        os._exit(9)\n"
        "VectorStore._write_page = dying\n"
        "VectorStore(sqlite3.connect(sys.argv[1]), 24, slots_per_page=4)\n"
    )
    done = subprocess.run([sys.executable, "-c", child, str(path)], check=False)
    assert done.returncode == 9
    conn = sqlite3.connect(path)
    assert table_dump(conn) == before
    store = VectorStore(conn, 24, slots_per_page=4)
    assert store.check() == []
    assert int(dict(conn.execute("SELECT key, value FROM vec_meta"))["format"]) == 2


def test_conversion_inside_a_transaction_follows_the_caller(tmp_path: Path) -> None:
    conn, _, mat = format1_fixture(tmp_path / "v.db", 4)
    before = table_dump(conn)
    conn.execute("BEGIN")
    store = VectorStore(conn, 24, slots_per_page=16)
    assert conn.in_transaction
    assert store.pages() == 3
    conn.rollback()  # the caller's rollback takes the conversion with it
    assert table_dump(conn) == before
    assert store.search(mat[3], 1)[0][0] == 1003  # the next use converts again
    assert not conn.in_transaction
    assert int(dict(conn.execute("SELECT key, value FROM vec_meta"))["format"]) == 2
    assert store.check() == []
    assert np.array_equal(store.get(1003), stored(mat[3])[0])

    conn2, _, mat2 = format1_fixture(tmp_path / "w.db", 4)
    conn2.execute("BEGIN")
    store2 = VectorStore(conn2, 24, slots_per_page=16)
    store2.put_many([1], unit_rows(9, 1, 24))
    conn2.commit()
    assert np.array_equal(
        VectorStore(sqlite3.connect(tmp_path / "w.db"), 24).get(1000), stored(mat2[0])[0]
    )
    assert store2.check() == []


def test_format2_rejects_a_float32_page() -> None:
    conn = mem_conn()
    store = VectorStore(conn, 8, slots_per_page=4)
    store.put_many([1, 2], unit_rows(1, 2, 8))
    conn.execute("UPDATE vec_pages SET data = ? WHERE page_no = 0", (bytes(4 * 8 * 4),))
    assert "page 0 has the wrong size" in store.check()
    with pytest.raises(CorruptVault):
        store.put_many([3], unit_rows(2, 1, 8))
