"""memctl_bm25 (the compiled ranking function) and the cached term counts it is given."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

import memctl
from memctl.recall import keyword as kw
from memctl.recall import rank
from memctl.recall.filters import Filters
from memctl.recall.query import fts_term

from .conftest import PASSPHRASE

WORDS = [f"w{i}" for i in range(40)]
W = ", ".join(str(x) for x in kw.BM25_WEIGHTS)


@pytest.fixture
def vault(vault):
    """300 records over a Zipf-ish vocabulary, in every column bm25 weighs."""
    rng = random.Random(3)

    def text(n: int) -> str:
        return " ".join(WORDS[min(int(rng.paretovariate(0.8)) - 1, 39)] for _ in range(n))

    vault.ingest_many(
        [
            {
                "text": text(rng.randrange(3, 40)),
                "title": text(rng.randrange(0, 4)) or None,
                "tags": [rng.choice(WORDS)],
                "context": text(rng.randrange(0, 30)) or None,
            }
            for _ in range(300)
        ]
    )
    return vault


def _counts(conn, terms: list[str]) -> list[int]:
    sql = "SELECT count(*) FROM records_fts WHERE records_fts MATCH ?"
    return [conn.execute(sql, [fts_term(t)]).fetchone()[0] for t in terms]


def _scores(conn, fn: str, match: str, args: list[int] = ()) -> dict[int, float]:
    extra = "".join(", ?" for _ in args)
    sql = f"SELECT rowid, {fn}(records_fts, {W}{extra}) FROM records_fts WHERE records_fts MATCH ?"
    return dict(conn.execute(sql, [*args, match]).fetchall())


def test_vault_connections_load_it_and_keep_extension_loading_off(vault) -> None:
    assert vault.conn.has_rank
    with pytest.raises(Exception, match="not authorized"):
        vault.conn.execute("SELECT load_extension(?)", [str(rank.library())]).fetchone()


def test_it_is_fts5_bm25_bit_for_bit(vault) -> None:
    rng = random.Random(11)
    for _ in range(30):
        terms = rng.sample(WORDS[:25], rng.randrange(1, 5))
        match = " OR ".join(fts_term(t) for t in terms)
        builtin = _scores(vault.conn, "bm25", match)
        mine = _scores(vault.conn, "memctl_bm25", match, _counts(vault.conn, terms))
        assert builtin
        assert mine == builtin  # the same floating-point operations in the same order


def test_a_negative_df_phrase_only_shapes_the_rows(vault) -> None:
    """``(R) AND ((C) OR (R))``, the second R unscored: the rows of R, each with its
    full-query score, and memctl_holds tells which hold a term of C."""
    rare, common = ["w20", "w31"], ["w4", "w7"]
    r = " OR ".join(fts_term(t) for t in rare)
    c = " OR ".join(fts_term(t) for t in common)
    full = _scores(vault.conn, "bm25", f"{r} OR {c}")
    dfs = _counts(vault.conn, rare) + _counts(vault.conn, common) + [-1] * len(rare)
    sql = (
        f"SELECT rowid, memctl_bm25(records_fts, {W}, ?, ?, ?, ?, ?, ?), "
        "memctl_holds(records_fts, 2, 4) FROM records_fts WHERE records_fts MATCH ?"
    )
    rows = vault.conn.execute(sql, [*dfs, f"({r}) AND ({c} OR {r})"]).fetchall()
    rare_rows = set(_scores(vault.conn, "bm25", r))
    holding = set(_scores(vault.conn, "bm25", f"({r}) AND ({c})"))
    assert {row[0] for row in rows} == rare_rows
    assert {row[0] for row in rows if row[2]} == holding
    assert 0 < len(holding) < len(rare_rows)
    for rowid, score, _ in rows:
        assert score == pytest.approx(full[rowid], rel=1e-12)


def test_wrong_arguments_are_an_sql_error(vault) -> None:
    with pytest.raises(Exception, match="one weight per column and one df per phrase"):
        _scores(vault.conn, "memctl_bm25", fts_term("w0"), [1, 2])
    sql = "SELECT memctl_holds(records_fts, 1) FROM records_fts WHERE records_fts MATCH ?"
    with pytest.raises(Exception, match="expected the first and last phrase"):
        vault.conn.execute(sql, [fts_term("w0")]).fetchall()


def test_counts_follow_own_writes_and_other_processes(vault, vault_path: Path) -> None:
    stats = vault.conn.term_stats
    before = stats.doc_freqs(vault.conn, ["w3", "zebra"])
    assert before == dict(zip(["w3", "zebra"], _counts(vault.conn, ["w3", "zebra"]), strict=True))
    assert stats.cached(vault.conn, ["w3", "zebra"]) == before
    vault.ingest("a zebra and a w3")  # this connection writes
    assert stats.cached(vault.conn, ["w3"]) is None
    assert stats.doc_freqs(vault.conn, ["w3", "zebra"]) == {
        "w3": before["w3"] + 1,
        "zebra": 1,
    }
    with memctl.open_vault(vault_path, passphrase=PASSPHRASE) as other:  # another connection
        other.ingest_many(["zebra crossing", "zebra stripes"])
    assert stats.doc_freqs(vault.conn, ["zebra"]) == {"zebra": 3}
    other_id = vault.recall("stripes", mode="keyword")[0]["id"]
    vault.erase([other_id])
    assert stats.doc_freqs(vault.conn, ["zebra"]) == {"zebra": 2}


def test_without_the_extension_recall_uses_bm25(
    vault_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(rank, "library", lambda: None)
    with memctl.open_vault(vault_path, passphrase=PASSPHRASE) as v:
        assert not v.conn.has_rank
        v.ingest_many([f"note {i} about tulips" for i in range(30)])
        hits = v.recall("tulips note", mode="keyword", limit=5)
        assert len(hits) == 5
        with pytest.raises(Exception, match="no such function"):
            _scores(v.conn, "memctl_bm25", fts_term("tulips"), [30])
        cands = kw.keyword_candidates(v.conn, "tulips", filters=Filters(), limit=3)
        assert len(cands.ranked) == 3


def test_memctl_token_is_the_index_tokenizers_one_token(vault) -> None:
    def token(text: str, *args: str) -> str | None:
        marks = ", ".join("?" * (len(args) + 1))
        return vault.conn.execute(f"SELECT memctl_token({marks})", [text, *args]).fetchone()[0]

    porter = ("porter", "unicode61", "remove_diacritics", "2")
    assert token("Running", *porter) == "run"
    assert token("Café", *porter) == "cafe"
    assert token("Running", "unicode61") == "running"
    assert token("e-mail", *porter) is None  # two tokens: a phrase
    assert token("...", *porter) is None
    with pytest.raises(Exception, match="no such tokenizer"):
        token("a", "nosuch")
    with pytest.raises(Exception, match="refused its arguments"):
        token("a", "unicode61", "bogus")


def test_vocab_counts_are_the_match_counts(vault) -> None:
    """Counting by token in the fts5vocab table gives FTS5's own count: stemmed, folded,
    after an erasure (secure-delete takes the tokens out), and phrases still by MATCH."""
    ids = [
        vault.ingest(t)
        for t in [
            "Running late, the runner runs",
            "a café in Zürich",
            "the cafe was closed",
            "send an e-mail",
            "email me",
            "Über alles",
        ]
    ]
    terms = ["Running", "runs", "café", "cafe", "e-mail", "email", "uber", "w0", "w7", "absent"]
    stats = rank.TermStats()
    assert stats.doc_freqs(vault.conn, terms) == dict(
        zip(terms, _counts(vault.conn, terms), strict=True)
    )
    # the counts came from the vocab table, not MATCH (that would pass the line above too)
    assert stats._tokens["Running"] == "run" and stats._tokens["e-mail"] is None
    vault.erase(ids[:2])
    after = stats.doc_freqs(vault.conn, terms)
    assert after == dict(zip(terms, _counts(vault.conn, terms), strict=True))
    assert after["cafe"] == 1 and after["Running"] == 0
    # nothing of it was written to the vault
    names = {r[0] for r in vault.conn.execute("SELECT name FROM sqlite_master")}
    assert "memctl_vocab" not in names
