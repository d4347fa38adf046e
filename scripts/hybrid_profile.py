"""Where a hybrid recall spends its time: each step of ``semantic.recall`` timed on its own.

Usage::

    .venv/bin/python scripts/hybrid_profile.py [--records 10000] [--model default|hashing-64]
                                               [--vault DIR]

Builds a vault from the ``memctl bench core`` corpus (same generator and seed) the way the
bench builds its large vaults (keyword ingest, then random unit vectors of the model's
dimension in both vector stores; queries embedded by the real model) and prints the median
over 200 queries of: the whole hybrid recall, the query embedding, the keyword candidates, the
vector candidates from both stores, and the bm25 of the vector-only candidates. With
``--vault DIR`` the vault is kept there and reused by the next run. A diagnostic, not a
benchmark: figures for the record come from ``memctl bench``.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import memctl
from memctl.bench import core
from memctl.bench.synth import Corpus
from memctl.recall.filters import Filters
from memctl.recall.keyword import keyword_scores_for, keyword_search
from memctl.recall.query import build_match
from memctl.vault import semantic
from memctl.vault.semantic import pin_for


def build(path: Path, records: int, model: str) -> None:
    corpus = Corpus(seed=42)
    memctl.init_vault(path, passphrase=core.PASSPHRASE, model=None)
    with memctl.open_vault(path, passphrase=core.PASSPHRASE) as v:
        v.ingest_many(list(corpus.records(records)))
    core._attach_synthetic(path, pin_for(model))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--records", type=int, default=10_000)
    ap.add_argument("--model", default="default")
    ap.add_argument("--vault", type=Path, default=None)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="memctl-profile-"))
    path = args.vault or tmp / "vault"
    try:
        if not path.exists():
            build(path, args.records, args.model)
        qs = Corpus(seed=42).queries(200)
        with memctl.open_vault(path, passphrase=core.PASSPHRASE) as v:
            f = Filters()
            for q in qs[:5]:
                v.recall(q, mode="hybrid")  # warm the model and the resident vectors
            qv = {q: v.embedder.encode([q])[0] for q in qs}
            cands = {q: [r for r, _ in semantic.vector_candidates(v, qv[q], f, 100)] for q in qs}

            def med(fn) -> float:
                times = []
                for q in qs:
                    t = time.perf_counter()
                    fn(q)
                    times.append((time.perf_counter() - t) * 1000)
                return statistics.median(times)

            steps = {
                "hybrid recall, limit 10": lambda q: v.recall(q, mode="hybrid", limit=10),
                "query embedding": lambda q: v.embedder.encode([q]),
                "keyword top-100": lambda q: keyword_search(v.conn, q, filters=f, limit=100),
                "keyword top-100, no snippets": lambda q: keyword_search(
                    v.conn, q, filters=f, limit=100, snippets=False
                ),
                "vector candidates (both stores)": lambda q: semantic.vector_candidates(
                    v, qv[q], f, 100
                ),
                "one store's top-100": lambda q: v.vectors.search(qv[q], 100),
                "bm25 of vector candidates": lambda q: keyword_scores_for(
                    v.conn, build_match(q), cands[q], query=q
                ),
            }
            n = v.conn.execute("SELECT count(*) FROM records").fetchone()[0]
            print(f"{n} records, model {args.model}, median of {len(qs)} queries")
            print(f"  vectors: {v.vectors.count()} with context, {v.own_vectors.count()} own text")
            for name, fn in steps.items():
                print(f"  {name:34s} {med(fn):8.2f} ms")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
