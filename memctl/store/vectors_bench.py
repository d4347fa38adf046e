"""Benchmark of the vector store on its own (the "allocator/index core").

``memctl bench`` calls ``bench_core``; ``python -m memctl.store.vectors_bench 10000 100000``
prints one JSON object per size. Random L2-normalised vectors and queries: the hardest case
for quantised search (no cluster structure, tiny gaps between neighbours). The store keeps
int8 codes only (format 2), so recall is measured against the float32 vectors that were put,
regenerated batch by batch from their seeds (never held all at once).
"""

from __future__ import annotations

import argparse
import json
import secrets
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from memctl.store.vectors import COMPACT_THRESHOLD, SLOTS_PER_PAGE, VectorStore, create_tables


def _connect(path: Path, key_hex: str | None, page_size: int | None) -> Any:
    """A connection set up like the vault's: SQLCipher raw key, WAL, secure_delete."""
    if key_hex is None:
        import sqlite3 as driver
    else:
        import sqlcipher3 as driver  # type: ignore[import-not-found,no-redef]
    conn = driver.connect(str(path), isolation_level=None)
    if key_hex is not None:
        conn.execute(f"PRAGMA key = \"x'{key_hex}'\"")
        if page_size:
            conn.execute(f"PRAGMA cipher_page_size = {int(page_size)}")
    elif page_size:
        conn.execute(f"PRAGMA page_size = {int(page_size)}")
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = NORMAL")
    conn.execute("PRAGMA secure_delete = ON")
    return conn


def _unit_rows(rng: Any, n: int, dim: int) -> Any:
    import numpy as np

    m = rng.standard_normal((n, dim), dtype=np.float32)
    m /= np.linalg.norm(m, axis=1, keepdims=True)
    return m


def bench_core(
    n: int,
    dim: int = 384,
    seed: int = 0,
    *,
    queries: int = 200,
    k: int = 10,
    batch: int = 1000,
    encrypted: bool = True,
    page_size: int | None = None,
    slots_per_page: int = SLOTS_PER_PAGE,
    workdir: str | Path | None = None,
) -> dict[str, Any]:
    """Measure the store at ``n`` vectors in a temporary file database.

    - ``alloc_slots_per_s``: vectors stored per second by put_many in ``batch``-sized
      transactions (slot allocation + page writes + commit);
    - ``free_slots_per_s``: vectors deleted (slot freed and zeroed) per second during churn;
    - ``put_one_p50_ms``: one vector ``put`` and its COMMIT, as when one record is ingested;
    - ``occupancy_after_churn``: after 4 rounds of (delete 40% of live at random, insert
      10% of n new, compact with the default threshold); then the store is refilled to n;
    - ``vector_load_s`` (wall) and ``vector_load_cpu_s`` (process CPU, less sensitive to
      other load on the machine): median of 3 loads of all n vectors by a fresh connection;
    - ``recall_vector_p50_ms`` / ``_p95_ms``: ``search`` top-k latency (query embedding
      excluded) over ``queries`` random queries; ``exact_f32_p50_ms``: the same with a
      float32 matrix product over a resident (dequantised) matrix, for comparison;
    - ``vector_recall_at_10``: overlap of ``search`` top-k with the exact top-k of the
      original float32 vectors (not the stored int8 ones);
    - ``db_bytes`` / ``db_bytes_per_vector``: the database file after a TRUNCATE checkpoint.
    """
    import numpy as np

    rng = np.random.default_rng(seed)
    # Every batch of vectors comes from its own generator, so the float32 originals of the
    # live vectors can be regenerated for the recall reference: (first rowid, count, key).
    batches: list[tuple[int, int, int]] = []

    def batch_rows(first: int, count: int) -> Any:
        key = len(batches)
        batches.append((first, count, key))
        return _unit_rows(np.random.default_rng([seed, key]), count, dim)

    key_hex = secrets.token_hex(32) if encrypted else None
    with tempfile.TemporaryDirectory(prefix="memctl-bench-", dir=workdir) as tmp:
        path = Path(tmp) / "vectors.db"
        conn = _connect(path, key_hex, page_size)
        create_tables(conn)
        store = VectorStore(conn, dim, slots_per_page=slots_per_page)

        next_rowid = 1
        t_alloc = 0.0
        for start in range(0, n, batch):
            m = batch_rows(next_rowid, min(batch, n - start))
            ids = range(next_rowid, next_rowid + len(m))
            next_rowid += len(m)
            t0 = time.perf_counter()
            conn.execute("BEGIN IMMEDIATE")
            store.put_many(ids, m)
            conn.execute("COMMIT")
            t_alloc += time.perf_counter() - t0

        # Churn: 4 rounds of (delete 40% of live at random, insert 10% of n new, apply the
        # compaction policy). Occupancy falls to ~0.4 in round 3, which triggers compaction.
        deleted = 0
        t_free = 0.0
        moved = 0
        t_compact = 0.0
        for _ in range(4):
            live = store.rowids()
            victims = rng.choice(live, size=int(len(live) * 0.4), replace=False)
            t0 = time.perf_counter()
            conn.execute("BEGIN IMMEDIATE")
            deleted += store.delete(victims.tolist())
            conn.execute("COMMIT")
            t_free += time.perf_counter() - t0
            add = n // 10
            conn.execute("BEGIN IMMEDIATE")
            store.put_many(range(next_rowid, next_rowid + add), batch_rows(next_rowid, add))
            next_rowid += add
            conn.execute("COMMIT")
            t0 = time.perf_counter()
            conn.execute("BEGIN IMMEDIATE")
            moved += store.compact(COMPACT_THRESHOLD)
            conn.execute("COMMIT")
            t_compact += time.perf_counter() - t0
        occupancy = store.occupancy()
        # Refill to n live vectors so that load and search are measured at n.
        refill = n - store.count()
        for start in range(0, refill, batch):
            m = batch_rows(next_rowid, min(batch, refill - start))
            conn.execute("BEGIN IMMEDIATE")
            store.put_many(range(next_rowid, next_rowid + len(m)), m)
            next_rowid += len(m)
            conn.execute("COMMIT")
        final_occupancy = store.occupancy()
        # Single-vector writes (one record ingested at a time): each its own transaction.
        put_one = []
        singles = []
        for _ in range(30):
            m = batch_rows(next_rowid, 1)
            t0 = time.perf_counter()
            conn.execute("BEGIN IMMEDIATE")
            store.put(next_rowid, m[0])
            conn.execute("COMMIT")
            put_one.append(time.perf_counter() - t0)
            singles.append(next_rowid)
            next_rowid += 1
        conn.execute("BEGIN IMMEDIATE")
        store.delete(singles)
        conn.execute("COMMIT")
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        conn.close()

        loads = []
        load_cpu = []
        for _ in range(3):
            c2 = _connect(path, key_hex, page_size)
            t0, c0 = time.perf_counter(), time.process_time()
            VectorStore(c2, dim).load()
            loads.append(time.perf_counter() - t0)
            load_cpu.append(time.process_time() - c0)
            c2.close()

        conn = _connect(path, key_hex, page_size)
        store = VectorStore(conn, dim)
        store.load()
        qs = _unit_rows(rng, queries, dim)
        got: list[list[int]] = []
        lat: list[float] = []
        lat_cpu: list[float] = []
        for q in qs:
            t0, c0 = time.perf_counter(), time.process_time()
            hits = store.search(q, k)
            lat.append(time.perf_counter() - t0)
            lat_cpu.append(time.process_time() - c0)
            got.append([r for r, _ in hits])

        _, mat = store.all_vectors()
        exact_lat = []
        for q in qs:  # back to back, so BLAS threads stay awake: its best case
            t0 = time.perf_counter()
            scores = mat @ q
            np.argpartition(-scores, k - 1)[:k]
            exact_lat.append(time.perf_counter() - t0)
        del mat
        exact_top = _exact_top(np, qs, k, store.rowids(), batches, seed, dim)
        recalls = [len(set(top) & set(hits)) / k for top, hits in zip(exact_top, got, strict=True)]
        db_bytes = path.stat().st_size
        conn.close()

    def ms(xs: list[float], pct: float) -> float:
        xs = sorted(xs)
        return round(1000 * xs[min(len(xs) - 1, int(pct * len(xs)))], 2)

    return {
        "n": n,
        "dim": dim,
        "seed": seed,
        "encrypted": encrypted,
        "slots_per_page": slots_per_page,
        "alloc_slots_per_s": round(n / t_alloc),
        "free_slots_per_s": round(deleted / t_free) if t_free else None,
        "put_one_p50_ms": ms(put_one, 0.5),
        "occupancy_after_churn": round(occupancy, 4),
        "moved_by_compaction": moved,
        "compact_s": round(t_compact, 3),
        "occupancy_at_n": round(final_occupancy, 4),
        "vector_load_s": round(statistics.median(loads), 3),
        "vector_load_cpu_s": round(statistics.median(load_cpu), 3),
        "recall_vector_p50_ms": ms(lat, 0.5),
        "recall_vector_cpu_p50_ms": ms(lat_cpu, 0.5),
        "recall_vector_p95_ms": ms(lat, 0.95),
        "exact_f32_p50_ms": ms(exact_lat, 0.5),
        "vector_recall_at_10": round(float(np.mean(recalls)), 4),
        "db_bytes": db_bytes,
        "db_bytes_per_vector": round(db_bytes / n, 1),
    }


def _exact_top(
    np: Any,
    qs: Any,
    k: int,
    live: Any,
    batches: list[tuple[int, int, int]],
    seed: int,
    dim: int,
) -> list[list[int]]:
    """Exact float32 top-k rowids of each query over the live vectors' originals."""
    best_ids = np.zeros((len(qs), 0), np.int64)
    best = np.zeros((len(qs), 0), np.float32)
    for first, count, key in batches:
        ids = np.arange(first, first + count, dtype=np.int64)
        keep = np.isin(ids, live)
        if not keep.any():
            continue
        m = _unit_rows(np.random.default_rng([seed, key]), count, dim)[keep]
        scores = np.concatenate([best, qs @ m.T], axis=1)
        cand = np.concatenate([best_ids, np.broadcast_to(ids[keep], (len(qs), int(keep.sum())))], 1)
        kk = min(k, scores.shape[1])
        top = np.argpartition(-scores, kk - 1, axis=1)[:, :kk]
        best = np.take_along_axis(scores, top, 1)
        best_ids = np.take_along_axis(cand, top, 1)
    return best_ids.tolist()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("sizes", nargs="+", type=int)
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--plain", action="store_true", help="plain sqlite3 (no SQLCipher)")
    parser.add_argument("--page-size", type=int, default=None)
    parser.add_argument("--slots-per-page", type=int, default=SLOTS_PER_PAGE)
    args = parser.parse_args(argv)
    for n in args.sizes:
        result = bench_core(
            n,
            args.dim,
            args.seed,
            queries=args.queries,
            encrypted=not args.plain,
            page_size=args.page_size,
            slots_per_page=args.slots_per_page,
        )
        print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
