"""Where a hybrid recall spends its time: each step of ``semantic.recall`` timed on its own.

Usage::

    .venv/bin/python scripts/hybrid_profile.py [--records 10000] [--model hashing-64]

Builds a throw-away vault from the ``memctl bench core`` corpus (same generator and seed) and
prints the median over 200 queries of: the whole hybrid recall, the query embedding, the
keyword top-100, the vector candidates from both stores, one store's top-100, and the bm25 of
the vector candidates (``keyword_scores_for``). A diagnostic, not a benchmark: figures for the
record come from ``memctl bench``.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import memctl
from memctl.bench.synth import Corpus
from memctl.recall.filters import Filters
from memctl.recall.keyword import keyword_scores_for, keyword_search
from memctl.recall.query import build_match
from memctl.vault import semantic

PASSPHRASE = "profile passphrase — not a secret"  # a throw-away vault


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--records", type=int, default=10_000)
    ap.add_argument("--model", default="hashing-64")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="memctl-profile-"))
    try:
        corpus = Corpus(seed=42)
        items = list(corpus.records(args.records))
        qs = corpus.queries(200)
        path = tmp / "vault"
        memctl.init_vault(
            path, passphrase=PASSPHRASE, model=args.model, kdf_memory_mib=8, kdf_iterations=1
        )
        with memctl.open_vault(path, passphrase=PASSPHRASE) as v:
            v.ingest_many(items)
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
                "vector candidates (both stores)": lambda q: semantic.vector_candidates(
                    v, qv[q], f, 100
                ),
                "one store's top-100": lambda q: v.vectors.search(qv[q], 100),
                "bm25 of vector candidates": lambda q: keyword_scores_for(
                    v.conn, build_match(q), cands[q]
                ),
            }
            print(f"{args.records} records, model {args.model}, median of {len(qs)} queries")
            for name, fn in steps.items():
                print(f"  {name:34s} {med(fn):8.2f} ms")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
