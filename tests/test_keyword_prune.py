"""Pruned keyword search: exact bm25 for every candidate, exact fallbacks, filters kept.

The thresholds are lowered so a 200-record vault prunes: ``alpha`` and ``beta`` are common
(held by more than 10% of the rows), ``zeta``, ``kappa`` and ``omega`` are rare. Every test
runs twice: scored by ``memctl_bm25`` in one pass, and by FTS5's ``bm25()`` in two.
"""

from __future__ import annotations

import random

import pytest

from memctl.recall import keyword as kw
from memctl.recall.filters import Filters
from memctl.recall.query import fts_term

N = 200
RARE = {"zeta": 6, "kappa": 9, "omega": 14}
COMMON = {"alpha": 0.15, "beta": 0.12}
# short, holding common words only, repeated: exact bm25 ranks it first for "alpha beta ..."
REPEATER = "alpha beta alpha beta alpha beta"


def _texts() -> list[str]:
    rng = random.Random(7)
    rare_rows = {w: set(rng.sample(range(N), k)) for w, k in RARE.items()}
    texts = []
    for i in range(N):
        words = [f"filler{rng.randrange(60)}" for _ in range(rng.randrange(6, 20))]
        for w, share in COMMON.items():
            if rng.random() < share:
                words.insert(rng.randrange(len(words) + 1), w)
        for w, rows in rare_rows.items():
            if i in rows:
                words.insert(rng.randrange(len(words) + 1), w)
        texts.append(" ".join(words))
    return texts


@pytest.fixture(params=["memctl_bm25", "bm25"])
def vault(vault, request):
    texts = _texts()
    items = [{"text": t, "namespace": ("work", "home")[i % 2]} for i, t in enumerate(texts)]
    vault.ingest_many([*items, {"text": REPEATER, "namespace": "work"}])
    assert vault.conn.has_rank  # built with the package (setup.py)
    vault.conn.has_rank = request.param == "memctl_bm25"
    return vault


@pytest.fixture
def prune_small(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(kw, "PRUNE_MIN_ROWS", 100)
    monkeypatch.setattr(kw, "COMMON_SHARE", 0.1)


def _search(vault, query: str, limit: int, *, prune: bool, filters: Filters | None = None):
    return kw.keyword_search(
        vault.conn, query, filters=filters or Filters(), limit=limit, prune=prune
    )


def _candidates(vault, words: list[str], namespace: str | None = None) -> set[str]:
    """Ids of the records holding one of ``words`` (the pruned search's candidates)."""
    sql = "SELECT id, body, namespace FROM records"
    return {
        rid
        for rid, body, ns in vault.conn.execute(sql)
        if set(body.split()) & set(words) and namespace in (None, ns)
    }


def test_the_table_is_split_as_intended(vault, prune_small) -> None:
    cap = int(kw.COMMON_SHARE * (N + 1))
    terms = ["alpha", "beta", "zeta", "kappa", "omega", "alph*"]
    assert kw._common_terms(vault.conn, terms, cap) == ["alpha", "beta", "alph*"]


def test_pruned_scores_are_the_exact_scores_of_the_candidates(vault, prune_small) -> None:
    query = "alpha zeta beta kappa"
    cands = kw._pruned(vault.conn, ["alpha", "zeta", "beta", "kappa"], Filters(), 5)
    assert cands is not None
    # the top 5 mix rows holding a common term and rows without: both snippet queries run
    plan = cands.plan([r for r, _ in cands.ranked])
    assert len(plan) == 2
    assert all(rowids and not seek for rowids, seek in plan.values())  # a few rows: one pass
    pruned = _search(vault, query, 5, prune=True)
    exact = _search(vault, query, 1000, prune=False)
    candidates = _candidates(vault, ["zeta", "kappa"])
    expected = [h for h in exact if h["id"] in candidates][:5]
    assert [h["id"] for h in pruned] == [h["id"] for h in expected]
    for got, want in zip(pruned, expected, strict=True):
        assert got["score"] == pytest.approx(want["score"], rel=1e-12)
        assert got["snippet"] == want["snippet"]
        assert set(got) == set(want)
    assert [h["explain"]["keyword"]["rank"] for h in pruned] == [1, 2, 3, 4, 5]


def test_rescoring_identities_hold_in_fts5(vault) -> None:
    """The facts pruning rests on: bm25 sums per-phrase terms with table-wide IDF."""
    w = ", ".join(str(x) for x in kw.BM25_WEIGHTS)
    rare = f"{fts_term('zeta')} OR {fts_term('kappa')}"
    common = f"{fts_term('alpha')} OR {fts_term('beta')}"
    full = f"{fts_term('alpha')} OR {fts_term('zeta')} OR {fts_term('beta')} OR {fts_term('kappa')}"

    def bm25(match: str) -> dict[int, float]:
        sql = f"SELECT rowid, bm25(records_fts, {w}) FROM records_fts WHERE records_fts MATCH ?"
        return dict(vault.conn.execute(sql, [match]).fetchall())

    exact, r, rc, r_full = (
        bm25(m) for m in (full, rare, f"({rare}) AND ({common})", f"({rare}) AND ({full})")
    )
    assert len(r) == 15 - len(_candidates(vault, ["zeta"]) & _candidates(vault, ["kappa"]))
    assert 0 < len(rc) < len(r)  # some candidates hold a common term, some do not
    for rowid, score in r.items():
        assert rc.get(rowid, score) == pytest.approx(exact[rowid], rel=1e-12)
        assert r_full[rowid] - score == pytest.approx(exact[rowid], rel=1e-9)


@pytest.mark.parametrize(
    ("query", "limit", "why"),
    [
        ("alpha beta", 5, "no rare term, and beta (12%) is above RAREST_MAX_SHARE"),
        ("zeta kappa", 5, "no common term"),
        ("alpha zeta", 10, "6 candidates, fewer than the limit"),
        ("alpha omega", 2000, "limit above PRUNE_MAX_LIMIT"),
    ],
)
def test_fallbacks_are_the_exact_query(vault, prune_small, monkeypatch, query, limit, why) -> None:
    monkeypatch.setattr(kw, "RAREST_MAX_SHARE", 0.1)
    terms = query.split()
    assert kw._pruned(vault.conn, terms, Filters(), limit) is None, why
    got = _search(vault, query, limit, prune=True)
    exact = _search(vault, query, limit, prune=False)
    assert got == exact
    assert got


def test_common_terms_only_are_pruned_by_the_rarest(vault, prune_small) -> None:
    """No rare term: ``beta`` (the rarer, 12% <= RAREST_MAX_SHARE) makes the candidates,
    each scored for both terms; the exact ranking of the rows holding beta."""
    assert kw._split(vault.conn, ["alpha", "beta"]) == (["beta"], ["alpha"])
    pruned = _search(vault, "alpha beta", 5, prune=True)
    candidates = _candidates(vault, ["beta"])
    exact = [h for h in _search(vault, "alpha beta", 1000, prune=False) if h["id"] in candidates]
    assert [h["id"] for h in pruned] == [h["id"] for h in exact[:5]]
    assert [h["score"] for h in pruned] == pytest.approx([h["score"] for h in exact[:5]])
    assert [h["snippet"] for h in pruned] == [h["snippet"] for h in exact[:5]]
    assert pruned[0]["text"] == REPEATER  # it holds beta


def test_common_max_rows_caps_the_rare_terms(vault, prune_small, monkeypatch) -> None:
    """On a large vault a share would let rare terms grow with it; the row cap keeps the
    candidates bounded: here omega (14 rows) becomes common."""
    monkeypatch.setattr(kw, "COMMON_SHARE", 0.5)
    monkeypatch.setattr(kw, "COMMON_MAX_ROWS", 10)
    assert kw._split(vault.conn, ["zeta", "omega", "kappa"]) == (["zeta", "kappa"], ["omega"])
    pruned = _search(vault, "zeta omega kappa", 5, prune=True)
    candidates = _candidates(vault, ["zeta", "kappa"])
    exact = [
        h for h in _search(vault, "zeta omega kappa", 99, prune=False) if h["id"] in candidates
    ]
    assert [h["id"] for h in pruned] == [h["id"] for h in exact[:5]]


def test_snippets_seeking_or_in_one_pass_are_the_same(vault, prune_small, monkeypatch) -> None:
    query = "alpha zeta beta kappa"
    one_pass = _search(vault, query, 8, prune=True)
    monkeypatch.setattr(kw, "RANGE_MAX_ROWS", 0)
    cands = kw._pruned(vault.conn, query.split(), Filters(), 8)
    assert all(seek for _, seek in cands.plan([r for r, _ in cands.ranked]).values())
    seeking = _search(vault, query, 8, prune=True)
    assert seeking == one_pass
    assert all(h["snippet"] for h in seeking)


def test_small_tables_are_not_pruned(vault) -> None:
    assert kw.PRUNE_MIN_ROWS > N + 1
    assert kw._pruned(vault.conn, ["alpha", "omega"], Filters(), 5) is None


def test_prefix_terms_count_as_common(vault, prune_small) -> None:
    pruned = _search(vault, "alph* omega", 5, prune=True)
    candidates = _candidates(vault, ["omega"])
    exact = [h for h in _search(vault, "alph* omega", 1000, prune=False) if h["id"] in candidates]
    assert [h["id"] for h in pruned] == [h["id"] for h in exact[:5]]
    assert [h["snippet"] for h in pruned] == [h["snippet"] for h in exact[:5]]


def test_filters_apply_to_pruned_results(vault, prune_small) -> None:
    query = "alpha omega kappa"
    home = Filters.build(namespace="home")
    pruned = _search(vault, query, 3, prune=True, filters=home)
    assert kw._pruned(vault.conn, query.split(), home, 3) is not None
    candidates = _candidates(vault, ["omega", "kappa"], namespace="home")
    exact = _search(vault, query, 1000, prune=False, filters=home)
    expected = [h for h in exact if h["id"] in candidates][:3]
    assert [h["id"] for h in pruned] == [h["id"] for h in expected]
    assert {h["namespace"] for h in pruned} == {"home"}
    # a filter leaving fewer candidates than the limit falls back to the exact query
    few = Filters.build(namespace="home", tags="nothing-has-this-tag")
    assert kw._pruned(vault.conn, query.split(), few, 3) is None
    assert _search(vault, query, 3, prune=True, filters=few) == []


def test_recall_through_the_vault_prunes(vault, prune_small) -> None:
    hits = vault.recall("alpha beta zeta kappa omega", mode="keyword", limit=5)
    candidates = _candidates(vault, ["zeta", "kappa", "omega"])
    assert len(hits) == 5
    assert {h["id"] for h in hits} <= candidates


def test_known_approximation_a_common_words_only_record_is_missed(vault, prune_small) -> None:
    """Exact bm25 ranks the short record repeating two common words first; pruning never
    sees it, because it holds no rare term. This is the price of pruning (docs/usage.md)."""
    query = "alpha beta omega"
    exact = _search(vault, query, 5, prune=False)
    pruned = _search(vault, query, 5, prune=True)
    assert exact[0]["text"] == REPEATER
    assert REPEATER not in {h["text"] for h in pruned}
    assert {h["id"] for h in pruned} <= _candidates(vault, ["omega"])


def test_keyword_scores_for_prunes_like_the_search(vault, prune_small) -> None:
    """Hybrid's bm25 of vector-only candidates: exact for rows holding a rare term, absent
    (0) for rows holding common terms only — the pruned search's approximation."""
    query = "alpha zeta beta kappa"
    match = kw.build_match(query)
    exact = {h["_rowid"]: h["score"] for h in _search(vault, query, 1000, prune=False)}
    rowids = sorted(exact)
    pruned = kw.keyword_scores_for(vault.conn, match, rowids, query=query)
    full = kw.keyword_scores_for(vault.conn, match, rowids)
    assert full == pytest.approx(exact, rel=1e-12)
    rare_rows = {
        r
        for (r,) in vault.conn.execute(
            "SELECT rowid FROM records_fts WHERE records_fts MATCH ?",
            [fts_term("zeta") + " OR " + fts_term("kappa")],
        )
    }
    assert set(pruned) == rare_rows & set(exact)
    assert len(pruned) < len(exact)  # some candidates hold common words only
    for r, score in pruned.items():
        assert score == pytest.approx(exact[r], rel=1e-12)
