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
