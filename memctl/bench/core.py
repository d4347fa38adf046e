"""`memctl bench core`: build a synthetic vault and measure the figures of docs/benchmarks.md.

Every figure is measured in this run; nothing is estimated. Latency percentiles are over at
least 200 queries. What "with embeddings" means at each size is stated in the output
(``vectors``): the real model embeds every record up to ``--embed-limit`` records; above it the
store is filled with random unit vectors of the model's dimension (embedding a million records
with MiniLM on 2 cores takes hours), while the *query* is still embedded by the real model, so
vector and hybrid latencies are real end-to-end timings over a store of that size.
"""

from __future__ import annotations

import contextlib
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from memctl.bench.synth import Corpus

PASSPHRASE = "bench passphrase — not a secret"  # noqa: S105 - a throwaway bench vault


def _pct(samples: list[float], p: float) -> float:
    s = sorted(samples)
    return s[min(len(s) - 1, round(p / 100 * (len(s) - 1)))]


def _timed(fn: Callable[[], Any], n: int) -> list[float]:
    out = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t) * 1000)
    return out


def _du(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def _memctl() -> list[str]:
    exe = Path(sys.executable).with_name("memctl")
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "memctl.cli"]


def _wall(args: list[str], env: dict[str, str], runs: int = 10) -> float:
    """Median wall time (ms) of a whole process, start to exit."""
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        subprocess.run(
            args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True
        )
        times.append((time.perf_counter() - t) * 1000)
    return statistics.median(times)


def run(
    records: int = 10_000,
    *,
    model: str = "default",
    embed_limit: int = 20_000,
    queries: int = 200,
    workdir: str | None = None,
    progress: Callable[[str], None] = lambda _: None,
) -> dict[str, Any]:
    import numpy as np

    import memctl
    from memctl.vault.semantic import pin_for

    tmp = Path(tempfile.mkdtemp(prefix="memctl-bench-", dir=workdir))
    out: dict[str, Any] = {"records": records}
    try:
        corpus = Corpus(seed=42)
        items = list(corpus.records(records))
        qs = corpus.queries(max(queries, 200))
        pwfile = tmp / "passphrase"
        pwfile.write_text(PASSPHRASE + "\n")
        vault_path = tmp / "vault"

        # 1. ingest without embeddings (the vault has no model yet)
        progress(f"ingest {records} records (keyword only)")
        memctl.init_vault(vault_path, passphrase=PASSPHRASE, model=None)
        v = memctl.open_vault(vault_path, passphrase=PASSPHRASE)
        t = time.perf_counter()
        v.ingest_many(items)
        out["ingest_records_per_s"] = records / (time.perf_counter() - t)

        # 2. keyword recall
        progress("keyword recall")
        lat = _timed(iter_calls(lambda q: v.recall(q, mode="keyword", limit=10), qs), len(qs))
        out["recall_keyword_p50_ms"] = _pct(lat, 50)
        out["recall_keyword_p99_ms"] = _pct(lat, 99)
        # top-10 agreement of the (pruned on large vaults) search with exact bm25
        from memctl.recall.filters import Filters
        from memctl.recall.keyword import keyword_search

        def top10(q: str, prune: bool) -> set[int]:
            hits = keyword_search(
                v.conn, q, filters=Filters(), limit=10, snippets=False, prune=prune
            )
            return {h["_rowid"] for h in hits}

        agree = [len(top10(q, True) & (ex := top10(q, False))) / max(1, len(ex)) for q in qs]
        out["keyword_top10_vs_exact"] = statistics.fmean(agree)

        # 3. ingest with embeddings vs raw model.encode, on the same texts
        progress("load the embedding model")
        pin = pin_for(model)
        sample = [it["text"] for it in items[: min(2000, records)]]
        side = tmp / "embed-vault"
        memctl.init_vault(
            side, passphrase=PASSPHRASE, model=model, kdf_memory_mib=8, kdf_iterations=1
        )
        with memctl.open_vault(side, passphrase=PASSPHRASE) as sv:
            emb = sv.embedder
            emb.encode(sample[:64])  # warm up
            progress(f"raw encode of {len(sample)} texts")
            t = time.perf_counter()
            emb.encode(sample)
            raw = len(sample) / (time.perf_counter() - t)
            progress(f"ingest {len(sample)} texts with embeddings")
            t = time.perf_counter()
            sv.ingest_many([{"text": s} for s in sample])
            ing = len(sample) / (time.perf_counter() - t)
        out["encode_texts_per_s"] = raw
        out["ingest_embed_records_per_s"] = ing
        out["ingest_embed_ratio"] = ing / raw

        # 4. vectors for the big vault: real up to embed_limit, else synthetic unit vectors
        real = records <= embed_limit
        out["vectors"] = (
            "real model" if real else "synthetic unit vectors (query embedded by the real model)"
        )
        progress(f"vectors for {records} records ({out['vectors']})")
        v.close()
        originals: dict[int, Any] = {}  # the float32 vectors put, as the recall reference
        if real:
            from memctl.store.vectors import DEFAULT_PREFIX

            with (
                memctl.open_vault(vault_path, passphrase=PASSPHRASE) as v2,
                _capture_vectors(DEFAULT_PREFIX, originals),
            ):
                v2.set_model(model)
        else:
            _attach_synthetic(vault_path, pin)
        v = memctl.open_vault(vault_path, passphrase=PASSPHRASE)
        t = time.perf_counter()
        v.vectors.load()
        out["vector_load_s"] = time.perf_counter() - t
        emb = v.embedder
        qvecs = emb.encode(qs)
        lat = []
        exact_hits = 0
        if real:
            exact = _exact_top10(qvecs, [(list(originals), np.stack(list(originals.values())))])
        else:
            exact = _exact_top10(qvecs, _synthetic_chunks(v.conn, int(pin["dim"])))
        for qv, ex in zip(qvecs, exact, strict=True):
            t = time.perf_counter()
            got = v.vectors.search(qv, 10)
            lat.append((time.perf_counter() - t) * 1000)
            exact_hits += len({r for r, _ in got} & ex)
        out["recall_vector_p50_ms"] = _pct(lat, 50)
        out["vector_recall_at_10"] = exact_hits / (10 * len(qvecs))
        progress("hybrid recall")
        v.warm()  # what the agent does when it starts: the warm figure the targets are for
        lat = _timed(iter_calls(lambda q: v.recall(q, mode="hybrid", limit=10), qs), len(qs))
        out["recall_hybrid_p50_ms"] = _pct(lat, 50)
        out["recall_hybrid_p99_ms"] = _pct(lat, 99)

        # 5. erase (the full procedure, docs/erasure.md): one record, then 1,000 records spread
        # over the vault in one command (one transaction, one VACUUM). Disk use before.
        v.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        out["disk_bytes_per_record"] = _du(vault_path) / records
        progress("erase one record")
        victim = v.list(limit=1)[0]["id"]
        t = time.perf_counter()
        receipt = v.erase([victim])
        out["erase_one_s"] = time.perf_counter() - t
        out["erase_physical"] = receipt["physical"]
        out["erase_one_fts_rewrite"] = receipt["fts_rewrite"]
        n_batch = max(1, min(1000, records // 10))
        batch = [
            rid
            for (rid,) in v.conn.execute(
                "SELECT id FROM records WHERE rowid % ? = 0 ORDER BY rowid LIMIT ?",
                (max(1, records // n_batch), n_batch),
            )
        ]
        progress(f"erase {len(batch)} records in one command")
        t = time.perf_counter()
        receipt = v.erase(batch)
        out["erase_1000_s"] = time.perf_counter() - t
        out["erase_1000_records"] = len(batch)
        out["erase_1000_physical"] = receipt["physical"]
        out["erase_1000_fts_rewrite"] = receipt["fts_rewrite"]
        v.close()

        # 6. the allocator on its own, and the journal's commit cost at two sizes
        progress("vector store allocator")
        from memctl.store.vectors_bench import bench_core

        alloc = bench_core(min(records, 100_000), dim=int(pin["dim"]), workdir=str(tmp))
        out["alloc_slots_per_s"] = alloc["alloc_slots_per_s"]
        out["occupancy_after_churn"] = alloc["occupancy_after_churn"]
        progress("journal commit latency")
        from memctl.journal import bench_commit

        jc = bench_commit(1000, min(max(records, 10_000), 100_000), tmpdir=str(tmp))
        out.update(jc)

        # 7. whole processes: help, cold keyword recall, recall through the agent, MCP
        progress("CLI wall times")
        key = tmp / "bench.key"
        with memctl.open_vault(vault_path, passphrase=PASSPHRASE) as v3:
            v3.add_key_file(key)
        env = {k: val for k, val in os.environ.items() if not k.startswith("MEMCTL_")}
        env["MEMCTL_VAULT"] = str(vault_path)
        env["MEMCTL_NO_AGENT"] = "1"
        out["cli_help_wall_ms"] = _wall([*_memctl(), "--help"], env)
        env_key = {**env, "MEMCTL_KEY_FILE": str(key)}
        q = qs[0]
        out["cli_recall_cold_wall_ms"] = _wall(
            [*_memctl(), "recall", q, "--mode", "keyword"], env_key
        )
        agent_env = {k: val for k, val in env_key.items() if k != "MEMCTL_NO_AGENT"}
        subprocess.run(
            [*_memctl(), "unlock", "--ttl", "30m"],
            env=agent_env,
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            # the first hybrid call warms the model in the agent
            subprocess.run(
                [*_memctl(), "recall", q],
                env=agent_env,
                check=True,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            out["cli_recall_agent_wall_ms"] = _wall([*_memctl(), "recall", q], agent_env)
            out["peak_rss_mb"] = _agent_peak_rss_mb(vault_path)
        finally:
            subprocess.run(
                [*_memctl(), "lock"],
                env=agent_env,
                check=False,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        progress("MCP recall round trips")
        from memctl.mcp.bench import bench_mcp_recall

        mcp = bench_mcp_recall(
            vault_path,
            {"MEMCTL_KEY_FILE": str(key), "MEMCTL_NO_AGENT": "1"},
            qs,
            rounds=max(200, queries),
        )
        out["mcp_recall_p50_ms"] = mcp["mcp_recall_p50_ms"]
        out["bench_process_peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        out["numpy"] = np.__version__
        return out
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def iter_calls(fn: Callable[[str], Any], qs: list[str]) -> Callable[[], Any]:
    it = iter(qs)
    return lambda: fn(next(it))


@contextlib.contextmanager
def _capture_vectors(prefix: str, into: dict[int, Any]) -> Iterator[None]:
    """Keep a copy of the float32 vectors put into the ``prefix`` store while inside.

    The store keeps int8 codes only (format 2, docs/vectors.md), so the bench holds the
    originals itself to measure recall@10 against exact float32. The store is not changed:
    every call goes through to the real ``put_many``.
    """
    from memctl.store.vectors import VectorStore

    put_many = VectorStore.put_many

    def capture(self: Any, rowids: Any, matrix: Any) -> None:
        ids = [int(r) for r in rowids]
        put_many(self, ids, matrix)
        if self.prefix == prefix:
            into.update(zip(ids, [row.copy() for row in matrix], strict=True))

    VectorStore.put_many = capture  # type: ignore[method-assign]
    try:
        yield
    finally:
        VectorStore.put_many = put_many  # type: ignore[method-assign]


def _exact_top10(qvecs: Any, chunks: Iterable[tuple[list[int], Any]]) -> list[set[int]]:
    """Each query's exact float32 top 10 over vectors given in chunks of (rowids, matrix)."""
    import numpy as np

    best = np.zeros((len(qvecs), 0), np.float32)
    best_ids = np.zeros((len(qvecs), 0), np.int64)
    for ids, mat in chunks:
        scores = np.concatenate([best, qvecs @ np.asarray(mat, np.float32).T], axis=1)
        cand = np.concatenate([best_ids, np.broadcast_to(ids, (len(qvecs), len(ids)))], axis=1)
        k = min(10, scores.shape[1])
        top = np.argpartition(-scores, k - 1, axis=1)[:, :k]
        best = np.take_along_axis(scores, top, axis=1)
        best_ids = np.take_along_axis(cand, top, axis=1)
    return [set(row) for row in best_ids.tolist()]


def _synthetic_chunks(conn: Any, dim: int) -> Iterator[tuple[list[int], Any]]:
    """The random unit vectors ``_attach_synthetic`` put, regenerated chunk by chunk."""
    import numpy as np

    rowids = [r for (r,) in conn.execute("SELECT rowid FROM records ORDER BY rowid")]
    rng = np.random.default_rng(0)
    for start in range(0, len(rowids), 10_000):
        chunk = rowids[start : start + 10_000]
        m = rng.standard_normal((len(chunk), dim)).astype(np.float32)
        m /= np.linalg.norm(m, axis=1, keepdims=True)
        yield chunk, m


def _attach_synthetic(vault_path: Path, pin: dict[str, Any]) -> None:
    """Pin the model and fill the store with random unit vectors (large sizes only)."""
    import memctl
    from memctl.vault import header as hdr

    with memctl.open_vault(vault_path, passphrase=PASSPHRASE) as v:
        header = hdr.read_header(v.path)
        header.model = pin
        header.seal_public(v.keys)
        hdr.write_header(v.path, header)
        v.header = header
        # as ingest stores them: the bench's records have no source and so no context, and a
        # record without context has one vector, in the with-context store (its own text;
        # semantic.embed_pairs). A record with context would also get an own-text vector.
        store = v.vectors
        with v.transaction():
            store.set_model({k: pin[k] for k in ("name", "dim", "weights_sha256")})
        for chunk, m in _synthetic_chunks(v.conn, int(pin["dim"])):
            with v.transaction():
                store.put_many(chunk, m)


def _agent_peak_rss_mb(vault_path: Path) -> float:
    """VmHWM (peak resident memory) of the running agent: its pid is in its lock file."""
    from memctl.agent.paths import agent_paths

    lock = agent_paths(vault_path.resolve()).lock
    try:
        pid = int(lock.read_text().split()[0])
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except (OSError, ValueError, IndexError):
        pass
    return float("nan")
