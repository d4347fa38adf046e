"""Keyword recall: FTS5 bm25 over (title, body, tags, context), filters applied in SQL."""

from __future__ import annotations

from typing import Any

from memctl.recall import fusion
from memctl.recall.filters import Filters
from memctl.recall.query import build_match
from memctl.vault.records import RECORD_COLUMNS, row_to_dict

# bm25 column weights: title, body, tags, context (measured: docs/quality.md). The context column
# (headings, neighbouring turns) helps find a record but must not outrank its own words.
BM25_WEIGHTS = fusion.BM25_WEIGHTS


def keyword_search(
    conn: Any,
    query: str,
    *,
    filters: Filters,
    limit: int,
    snippets: bool = True,
    match: str | None = None,
) -> list[dict[str, Any]]:
    """Top ``limit`` records by bm25. Scores are ``-bm25`` (higher is better)."""
    match = match if match is not None else build_match(query)
    if match is None:
        return []
    where, params = filters.sql("r")
    weights = ", ".join(str(w) for w in BM25_WEIGHTS)
    snippet = "snippet(records_fts, 1, '[', ']', '…', 16)" if snippets else "NULL"
    sql = (
        f"SELECT {RECORD_COLUMNS}, -bm25(records_fts, {weights}) AS score, {snippet} "
        f"FROM records_fts JOIN records r ON r.rowid = records_fts.rowid "
        f"WHERE records_fts MATCH ? AND {where} "
        f"ORDER BY bm25(records_fts, {weights}) LIMIT ?"
    )
    rows = conn.execute(sql, [match, *params, limit]).fetchall()
    hits = []
    for rank, row in enumerate(rows, 1):
        hit = row_to_dict(row)
        hit["score"] = float(row[18])
        hit["snippet"] = row[19]
        hit["explain"] = {"keyword": {"rank": rank, "score": float(row[18])}}
        hits.append(hit)
    return hits


def keyword_scores_for(conn: Any, match: str | None, rowids: list[int]) -> dict[int, float]:
    """``-bm25`` of the given records for ``match`` (the MATCH expression of the keyword query).

    Records that do not match are absent. bm25's statistics are the whole index's, so the
    scores compare with :func:`keyword_search`'s: hybrid recall uses this to give a record found
    only by vector its real keyword score (one FTS5 lookup per rowid, ``rowid IN (...)``).
    """
    if match is None or not rowids:
        return {}
    weights = ", ".join(str(w) for w in BM25_WEIGHTS)
    ids = list(dict.fromkeys(int(r) for r in rowids))
    out: dict[int, float] = {}
    for start in range(0, len(ids), 500):
        chunk = ids[start : start + 500]
        marks = ",".join("?" * len(chunk))
        for rowid, score in conn.execute(
            f"SELECT rowid, -bm25(records_fts, {weights}) FROM records_fts "
            f"WHERE records_fts MATCH ? AND rowid IN ({marks})",
            [match, *chunk],
        ):
            out[int(rowid)] = float(score)
    return out
