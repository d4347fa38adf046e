"""Keyword recall: FTS5 bm25 over (title, body, tags, context), filters applied in SQL.

The exact query ORs every term and lets FTS5 score every row that holds any of them: with a
common term in the query that is a large share of the table (28 ms p50 at 100k records). On
large tables the search is pruned. The query's terms are split into rare ``R`` and common
``C`` (held by more than ``COMMON_SHARE`` of the rows, or more than ``COMMON_MAX_ROWS``); the
candidates are the rows holding a rare term, and each gets its exact full-query bm25. When
every term is common, the rarest one is ``R`` (if at most ``RAREST_MAX_SHARE`` of the rows
hold it). FTS5's bm25 is a sum of per-phrase contributions, each with its table-wide IDF.

With ``memctl_bm25`` loaded (:mod:`memctl.recall.rank`) one pass scores the candidates: the
rows of ``(R) AND ((C) OR (R))`` are those of ``R``, each scored for every query term it
holds (the second ``R`` is not scored), with IDFs from cached term counts. Without it, FTS5's
``bm25()`` in two passes::

    bm25(MATCH "R")              for a row holding no common term (those phrases add 0)
    bm25(MATCH "(R) AND (C)")    for one holding a common term: the full query's phrases

The two give the same scores. What is given up: a row holding only common terms is never a
candidate, even when exact bm25 would rank it high (many repetitions in a short record).
Measured by ``memctl bench core`` (``keyword_top10_vs_exact``); see docs/usage.md.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass, field
from typing import Any

from memctl.recall import fusion
from memctl.recall.filters import Filters
from memctl.recall.query import build_match, fts_term, query_terms
from memctl.recall.rank import term_stats
from memctl.vault.records import RECORD_COLUMNS, row_to_dict

# bm25 column weights: title, body, tags, context (measured: docs/quality.md). The context column
# (headings, neighbouring turns) helps find a record but must not outrank its own words.
BM25_WEIGHTS = fusion.BM25_WEIGHTS

#: Prune only tables at least this large (below it the exact query is a few ms).
PRUNE_MIN_ROWS = 20_000
#: Prune only for top-k queries up to this k (erase's "every match" queries stay exact).
PRUNE_MAX_LIMIT = 1000
#: A term is common when more than this share of the rows hold it, or more than
#: ``COMMON_MAX_ROWS`` rows (from 250k records on: the candidates stop growing with the vault).
#: Prefix terms always are. Agreement with the exact top 10 and latency: docs/benchmarks.md.
COMMON_SHARE = 0.02
COMMON_MAX_ROWS = 5_000
#: A query of common terms only is pruned by its rarest word if at most this share hold it.
RAREST_MAX_SHARE = 0.2
#: Snippets of a match held by at most this many rows come from one pass over them; beyond,
#: each row is looked up on its own (see :func:`_snippets`).
RANGE_MAX_ROWS = 2_000

_SNIPPET = "snippet(records_fts, 1, '[', ']', '…', 16)"


def _weights() -> str:
    return ", ".join(str(w) for w in BM25_WEIGHTS)


def keyword_search(
    conn: Any,
    query: str,
    *,
    filters: Filters,
    limit: int,
    snippets: bool = True,
    match: str | None = None,
    prune: bool = True,
) -> list[dict[str, Any]]:
    """Top ``limit`` records by bm25. Scores are ``-bm25`` (higher is better).

    ``prune=False`` forces the exact query (the bench compares the two). A caller-built
    ``match`` is never pruned: its terms are not known here.
    """
    kw = keyword_candidates(conn, query, filters=filters, limit=limit, match=match, prune=prune)
    if kw is None:
        return []
    return hits_for(conn, kw.ranked, kw.plan([r for r, _ in kw.ranked]) if snippets else None)


def _hit(row: Any, rank: int, score: float, snippet: str | None) -> dict[str, Any]:
    hit = row_to_dict(row)
    hit["score"] = float(score)
    hit["snippet"] = snippet
    hit["explain"] = {"keyword": {"rank": rank, "score": float(score)}}
    return hit


def _common_terms(conn: Any, terms: list[str], cap: int) -> list[str]:
    """The terms more than ``cap`` rows hold (counted with the index's tokenizer, cached:
    :class:`~memctl.recall.rank.TermStats`), and prefixes."""
    words = [t for t in terms if not t.endswith("*")]
    counts = term_stats(conn).doc_freqs(conn, words) if words else {}
    return [t for t in terms if t.endswith("*") or counts[t] > cap]


def _split(conn: Any, terms: list[str]) -> tuple[list[str], list[str]] | None:
    """The query's ``(rare, common)`` terms, or None where the search is not pruned: a
    small table, no common term (the exact query scores only rare rows anyway), or only
    common terms of which even the rarest is held by more than ``RAREST_MAX_SHARE``."""
    if not terms:
        return None
    # max(rowid) is one b-tree descent; count(*) reads every page of an index (0.3 ms at
    # 100k once FTS pages have pushed it out of the cache). It is an upper bound on the row
    # count, exact unless records were erased: a larger bound only makes fewer terms common.
    (rows,) = conn.execute("SELECT max(rowid) FROM records").fetchone()
    if not rows or rows < PRUNE_MIN_ROWS:
        return None
    common = _common_terms(conn, terms, min(int(COMMON_SHARE * rows), COMMON_MAX_ROWS))
    if not common:
        return None
    if len(common) < len(terms):
        return [t for t in terms if t not in common], common
    words = [t for t in terms if not t.endswith("*")]
    if not words:
        return None
    counts = term_stats(conn).doc_freqs(conn, words)
    rarest = min(words, key=lambda t: counts[t])
    if counts[rarest] > RAREST_MAX_SHARE * rows:
        return None
    return [rarest], [t for t in terms if t != rarest]


@dataclass(frozen=True, slots=True)
class Candidates:
    """A keyword query's candidates, scored but not yet fetched (no rows, no snippets).

    ``ranked``: the top ``(rowid, -bm25)``, best first. ``scores``: when the search was pruned,
    the exact full-query score of *every* row holding a rare term (the pruned search scores
    them all to rank them), so another record's keyword score is a lookup; None after the
    exact query, which scores only what it returns. ``match`` is the MATCH expression whose
    snippets a row gets: ``both`` for a row holding a common term (``with_common``), else
    ``match`` (the rare terms when pruned, the whole query when exact). ``rows``: how many
    rows each expression matches, where known (at most).
    """

    ranked: list[tuple[int, float]]
    match: str
    scores: dict[int, float] | None = None
    both: str | None = None
    with_common: frozenset[int] = frozenset()
    rows: dict[str, int] = field(default_factory=dict)

    def plan(self, rowids: list[int], *, seek: bool = False) -> dict[str, tuple[list[int], bool]]:
        """The snippet plan of ``rowids``: each MATCH expression with the rowids it serves and
        whether to look them up one by one (``seek``, or a match of unknown or many rows)."""
        plan: dict[str, tuple[list[int], bool]] = {}
        for rowid in rowids:
            expr = self.both if self.both and rowid in self.with_common else self.match
            if expr not in plan:
                plan[expr] = ([], seek or self.rows.get(expr, RANGE_MAX_ROWS + 1) > RANGE_MAX_ROWS)
            plan[expr][0].append(rowid)
        return plan


def keyword_candidates(
    conn: Any,
    query: str,
    *,
    filters: Filters,
    limit: int,
    match: str | None = None,
    prune: bool = True,
    all_scores: bool = False,
) -> Candidates | None:
    """The top ``limit`` rowids by bm25 and their scores (ties by rowid), pruned on large
    tables, without fetching rows or snippets: those are fetched for the hits returned only
    (:func:`hits_for`). None when the query has no searchable term. ``match`` and ``prune``:
    see :func:`keyword_search`. ``all_scores``: keep every candidate's score when pruned
    (``Candidates.scores``; hybrid recall looks its vector candidates up in them), not only
    the top ``limit`` ones, which SQLite then picks (a few thousand rows fewer to Python on
    a large vault).
    """
    terms = query_terms(query) if match is None and prune else []
    match = match if match is not None else build_match(query)
    if match is None:
        return None
    if terms and limit <= PRUNE_MAX_LIMIT:
        pruned = _pruned(conn, terms, filters, limit, all_scores=all_scores)
        if pruned is not None:
            return pruned
    # Scores only: SQLite computes every selected column of every matching row before it
    # sorts, so a snippet or a joined column here would be made for all of them.
    where, params = filters.sql("r")
    sql = (
        f"SELECT records_fts.rowid, -bm25(records_fts, {_weights()}) FROM records_fts "
        f"{_join(filters)}WHERE records_fts MATCH ? AND {where} ORDER BY 2 DESC, 1 LIMIT ?"
    )
    ranked = [(int(r), float(s)) for r, s in conn.execute(sql, [match, *params, limit])]
    counts = term_stats(conn).cached(conn, terms) if terms else None
    rows = {match: sum(counts.values())} if counts else {}
    return Candidates(ranked=ranked, match=match, rows=rows)


def _join(filters: Filters) -> str:
    """The records join the filters need; none without filters (it costs a row lookup per
    candidate)."""
    return "" if filters.is_empty() else "JOIN records r ON r.rowid = records_fts.rowid "


def _pruned(
    conn: Any, terms: list[str], filters: Filters, limit: int, *, all_scores: bool = True
) -> Candidates | None:
    """The top ``limit`` scored among rows holding a rare term; None: go exact (see
    :func:`_split`, or fewer than ``limit`` candidates pass the filters)."""
    split = _split(conn, terms)
    if split is None:
        return None
    rare_terms, common = split
    rare = " OR ".join(fts_term(t) for t in rare_terms)
    both = f"({rare}) AND ({' OR '.join(fts_term(t) for t in common)})"
    if getattr(conn, "has_rank", False):
        top = None if all_scores else limit
        scores, with_common = _scored_once(conn, rare_terms, common, filters, top=top)
    else:
        scores, with_common = _scored_twice(conn, rare, both, filters)
    if len(scores) < limit:
        return None
    # the best ``limit`` of thousands: a heap, not a sort (4 ms of 50 at 1M records)
    ranked = heapq.nsmallest(limit, scores.items(), key=lambda x: (-x[1], x[0]))
    counts = term_stats(conn).doc_freqs(conn, rare_terms)
    return Candidates(
        ranked=ranked,
        match=rare,
        scores=scores if all_scores else None,
        both=both,
        with_common=frozenset(with_common),
        # at most: both match only rows of rare
        rows=dict.fromkeys((rare, both), sum(counts.values())),
    )


def _scored_once(
    conn: Any, rare: list[str], common: list[str], filters: Filters, *, top: int | None
) -> tuple[dict[int, float], set[int]]:
    """The rows holding a rare term with their full-query scores, in one pass: all of them,
    or the ``top`` best (SQLite keeps only those while it scores).

    The rows of ``(R) AND ((C) OR (R))`` are those of ``R``, and at each the phrases of ``C``
    it holds are positioned on it, so ``memctl_bm25`` sees every query term the row holds;
    the second copy of ``R`` is not scored (df -1). The IDFs come from the cached counts.
    Also returned: the rows that hold a common term.
    """
    r = " OR ".join(fts_term(t) for t in rare)
    c = " OR ".join(fts_term(t) for t in common)
    counts = term_stats(conn).doc_freqs(conn, [*rare, *common])
    dfs = [counts[t] for t in rare] + [counts[t] for t in common] + [-1] * len(rare)
    first, last = len(rare), len(rare) + len(common)
    where, params = filters.sql("r")
    sql = (
        f"SELECT records_fts.rowid, -memctl_bm25(records_fts, {_weights()}, "
        f"{', '.join('?' * len(dfs))}), memctl_holds(records_fts, {first}, {last}) "
        f"FROM records_fts {_join(filters)}WHERE records_fts MATCH ? AND {where}"
    )
    args: list[Any] = [*dfs, f"({r}) AND ({c} OR {r})", *params]
    if top is not None:
        sql += " ORDER BY 2 DESC, 1 LIMIT ?"
        args.append(top)
    rows = conn.execute(sql, args).fetchall()
    return {row[0]: row[1] for row in rows}, {row[0] for row in rows if row[2]}


def _scored_twice(
    conn: Any, rare: str, both: str, filters: Filters
) -> tuple[dict[int, float], set[int]]:
    """As :func:`_scored_once` with FTS5's ``bm25()``: the rows of ``R`` scored for ``R``,
    then those holding a common term re-scored by ``(R) AND (C)``, whose phrases are exactly
    the full query's (a row holding no common term scores its rare part alone)."""
    where, params = filters.sql("r")
    sql = (
        f"SELECT records_fts.rowid, -bm25(records_fts, {_weights()}) FROM records_fts "
        f"{_join(filters)}WHERE records_fts MATCH ? AND {where}"
    )
    scores = dict(conn.execute(sql, [rare, *params]).fetchall())
    rescore = (
        f"SELECT rowid, -bm25(records_fts, {_weights()}) FROM records_fts WHERE records_fts MATCH ?"
    )
    with_common: set[int] = set()
    for rowid, score in conn.execute(rescore, [both]):
        if rowid in scores:
            scores[rowid] = score
            with_common.add(rowid)
    return scores, with_common


def _snippets(conn: Any, match: str, rowids: list[int], *, seek: bool) -> dict[int, str]:
    """Snippets of ``rowids`` for ``match``.

    ``seek``: each row on its own (``rowid = ?``: FTS5 seeks every phrase's doclist to it),
    a fixed cost per row (~0.2 ms). Otherwise one pass over the match's rows between the
    extremes, the snippet made only for the wanted ones (``rowid IN (...)`` would restart
    the FTS5 query once per rowid): cheaper while the match holds at most a few thousand rows
    (``RANGE_MAX_ROWS``), far dearer beyond (a top 10 at 1M records: 54 ms mean against
    4 ms seeking). The snippets are the full query's: a candidate's phrase instances under
    ``R`` (no common term in it) or ``(R) AND (C)`` are the full query's instances.
    """
    if not rowids:
        return {}
    if seek:
        sql = f"SELECT {_SNIPPET} FROM records_fts WHERE records_fts MATCH ? AND rowid = ?"
        out = {}
        for rowid in rowids:
            row = conn.execute(sql, [match, rowid]).fetchone()
            if row is not None and row[0] is not None:
                out[rowid] = row[0]
        return out
    marks = ",".join("?" * len(rowids))
    sql = (
        f"SELECT rowid, CASE WHEN rowid IN ({marks}) THEN {_SNIPPET} END FROM records_fts "
        f"WHERE records_fts MATCH ? AND rowid BETWEEN ? AND ?"
    )
    rows = conn.execute(sql, [*rowids, match, min(rowids), max(rowids)])
    return {rowid: snippet for rowid, snippet in rows if snippet is not None}


def snippets_for(conn: Any, plan: dict[str, tuple[list[int], bool]]) -> dict[int, str]:
    """The snippets of a :meth:`Candidates.plan` (a row whose text has none is absent)."""
    out: dict[int, str] = {}
    for match, (rowids, seek) in plan.items():
        out.update(_snippets(conn, match, rowids, seek=seek))
    return out


def hits_for(
    conn: Any,
    scored: list[tuple[int, float]],
    plan: dict[str, tuple[list[int], bool]] | None,
    *,
    known: dict[int, str] | None = None,
) -> list[dict[str, Any]]:
    """The hit dicts for already-scored rowids; snippets when ``plan`` (see
    :meth:`Candidates.plan`) is given, plus those already made (``known``)."""
    if not scored:
        return []
    snippets = dict(known or {})
    snippets.update(snippets_for(conn, plan or {}))
    marks = ",".join("?" * len(scored))
    sql = f"SELECT {RECORD_COLUMNS} FROM records r WHERE r.rowid IN ({marks})"
    by_rowid = {row[0]: row for row in conn.execute(sql, [r for r, _ in scored])}
    # a record erased by another process between the statements is simply not returned
    found = [(by_rowid[rowid], score) for rowid, score in scored if rowid in by_rowid]
    return [
        _hit(row, rank, score, snippets.get(row[0]) if plan is not None else None)
        for rank, (row, score) in enumerate(found, 1)
    ]


def keyword_scores_for(
    conn: Any, match: str | None, rowids: list[int], *, query: str | None = None
) -> dict[int, float]:
    """``-bm25`` of the given records for ``match`` (the MATCH expression of the keyword query).

    Records that do not match are absent. bm25's statistics are the whole index's, so the
    scores compare with :func:`keyword_search`'s: hybrid recall uses this to give a record found
    only by vector its real keyword score. One pass over the matches between the smallest and
    the largest rowid, bm25 computed only for the wanted ones (``CASE WHEN rowid IN (...)``):
    a plain ``rowid IN (...)`` constraint restarts the FTS5 query once per rowid (on a
    synthetic 100k-record index, 100 rowids: 514 ms vs 3 ms within a 3k-rowid span, 573 ms vs
    84 ms spread over all of it).
    """
    if match is None or not rowids:
        return {}
    ids = sorted({int(r) for r in rowids})
    split = _split_terms(conn, query_terms(query)) if query is not None else None
    if split is None:
        return _scores_in_range(conn, match, ids)
    # Pruned like keyword_search (see the module docstring): only the rare terms' doclists are
    # walked. A row holding no rare term is absent (scores 0), the approximation the pruned
    # keyword search makes too; a row holding one gets its exact full-query score.
    rare, both = split
    out = _scores_in_range(conn, rare, ids)
    out.update((r, v) for r, v in _scores_in_range(conn, both, ids).items() if r in out)
    return out


def _split_terms(conn: Any, terms: list[str]) -> tuple[str, str] | None:
    """The pruning's ``(R, (R) AND (C))`` MATCH expressions, or None where it would not prune."""
    split = _split(conn, terms)
    if split is None:
        return None
    rare = " OR ".join(fts_term(t) for t in split[0])
    return rare, f"({rare}) AND ({' OR '.join(fts_term(t) for t in split[1])})"


def _scores_in_range(conn: Any, match: str, ids: list[int]) -> dict[int, float]:
    """``-bm25`` for ``match`` of the sorted ``ids`` that match it (one pass per 500 ids)."""
    weights = ", ".join(str(w) for w in BM25_WEIGHTS)
    out: dict[int, float] = {}
    for start in range(0, len(ids), 500):
        chunk = ids[start : start + 500]
        marks = ",".join("?" * len(chunk))
        for rowid, score in conn.execute(
            f"SELECT rowid, CASE WHEN rowid IN ({marks}) THEN -bm25(records_fts, {weights}) END "
            "FROM records_fts WHERE records_fts MATCH ? AND rowid BETWEEN ? AND ?",
            [*chunk, match, chunk[0], chunk[-1]],
        ):
            if score is not None:
                out[int(rowid)] = float(score)
    return out
