"""Vector and hybrid recall in the vault: the model pin, context, filters, erase, re-embedding."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

import memctl
from memctl.cli import app
from memctl.errors import ModelError, UsageError
from memctl.vault import semantic

from .conftest import PASSPHRASE


@pytest.fixture
def hvault(tmp_path: Path):
    path = tmp_path / "hv"
    memctl.init_vault(
        path, passphrase=PASSPHRASE, kdf_memory_mib=8, kdf_iterations=1, model="hashing-64"
    )
    with memctl.open_vault(path, passphrase=PASSPHRASE) as v:
        yield v


def test_every_record_gets_its_vectors_and_they_survive_reopen(hvault) -> None:
    hvault.ingest_many([f"note number {i} about the garden" for i in range(300)])
    chat = [{"text": f"turn {i} of the talk", "source": "chat://t"} for i in range(20)]
    hvault.ingest_many(chat)
    # lone notes: one vector each (own text = with context); chat turns: two
    assert hvault.vectors.count() == 320
    assert hvault.own_vectors.count() == 20
    path = hvault.path
    hvault.close()
    with memctl.open_vault(path, passphrase=PASSPHRASE) as v:
        assert v.vectors.count() == 320
        assert v.own_vectors.count() == 20
        assert v.default_mode() == "hybrid"
        hit = v.recall("garden note number 7", mode="vector", limit=1)[0]
        assert "garden" in hit["text"]


def test_modes_and_explain(hvault) -> None:
    hvault.ingest("the tulip bulbs go in the ground in october", tags=["garden"])
    hvault.ingest("renew the passport before lisbon")
    for mode in ("keyword", "vector", "hybrid"):
        hits = hvault.recall("tulip bulbs", mode=mode, limit=2, explain=True)
        assert "tulip" in hits[0]["text"], mode
        assert hits[0]["explain"]
    hyb = hvault.recall("tulip bulbs", limit=1, explain=True)[0]["explain"]
    assert set(hyb) >= {"hybrid", "keyword", "vector"}
    assert hyb["keyword"]["rank"] == 1
    with pytest.raises(UsageError):
        hvault.recall("x", mode="telepathy")


def test_filters_apply_to_every_mode(hvault) -> None:
    hvault.ingest("apple pie recipe", namespace="food")
    hvault.ingest("apple orchard trip", namespace="trips")
    for mode in ("keyword", "vector", "hybrid"):
        hits = hvault.recall("apple", mode=mode, namespace="food", limit=10)
        assert {h["namespace"] for h in hits} == {"food"}, mode
    assert hvault.recall("apple", mode="vector", namespace="nothing-here") == []


def test_neighbours_become_context(hvault) -> None:
    hvault.ingest_many(
        [
            {"text": t, "source": "chat://c1", "observed_at": "2023-05-08T10:00:00Z"}
            for t in ["I adopted a puppy", "what breed?", "a golden retriever", "so cute"]
        ]
    )
    rec = hvault.list(limit=10)
    by_text = {r["text"]: r for r in rec}
    ctx = by_text["what breed?"]["context"]
    assert "I adopted a puppy" in ctx and "a golden retriever" in ctx and "8 May 2023" in ctx
    # the neighbour's words find the record through the context column
    kw = hvault.recall("puppy breed", mode="keyword", limit=4)
    assert "what breed?" in {h["text"] for h in kw}


def test_erase_frees_the_vector(hvault) -> None:
    rid = hvault.ingest("forget me")
    hvault.ingest("keep me")
    receipt = hvault.erase([rid])
    assert receipt["destroyed"]["vector_slots"] == 1  # a lone note: one vector
    assert hvault.vectors.count() == 1
    assert hvault.own_vectors.count() == 0
    turns = hvault.ingest_many([{"text": t, "source": "chat://e"} for t in ("hi", "forget this")])
    receipt = hvault.erase([turns.ids[1]])
    assert receipt["destroyed"]["vector_slots"] == 2  # a chat turn: own-text and with-context
    assert hvault.vectors.count() == 2 and hvault.own_vectors.count() == 1
    assert all(h["id"] != rid for h in hvault.recall("forget me", mode="vector"))


class CountingEmbedder:
    """Wraps the vault's embedder and records how many texts each encode call got."""

    def __init__(self, inner) -> None:
        self.inner = inner
        self.dim = inner.dim
        self.calls: list[int] = []

    def encode(self, texts, **kw):
        self.calls.append(len(texts))
        return self.inner.encode(texts, **kw)


# Vectors are stored as int8 codes x a per-vector scale (docs/vectors.md, format 2): a unit
# vector reads back within half a quantisation step (max|x| / 254 <= 1 / 254) per component.
Q8 = 1 / 254


def _rowid(vault, text: str) -> int:
    return vault.conn.execute("SELECT rowid FROM records WHERE body = ?", (text,)).fetchone()[0]


def test_own_vector_is_the_text_alone_and_reused_without_neighbours(hvault) -> None:
    np = pytest.importorskip("numpy")
    counting = CountingEmbedder(hvault.embedder)
    hvault._embedder = counting
    hvault.ingest_many(["a lone note about tulips", "another lone note about roses"])
    assert counting.calls == [2]  # no neighbours: one text per record, not two
    for text in ("a lone note about tulips", "another lone note about roses"):
        r = _rowid(hvault, text)
        assert hvault.own_vectors.get(r) is None  # no copy: the one vector is its own text
        assert np.allclose(hvault.vectors.get(r), counting.inner.encode([text])[0], atol=Q8)
        q = counting.inner.encode([text])[0]
        assert semantic.vector_scores(hvault, q, [r])[0] == pytest.approx(
            float(hvault.vectors.get(r) @ q), abs=1e-5
        )
    counting.calls.clear()
    chat = ["I adopted a puppy", "what breed?", "a golden retriever"]
    hvault.ingest_many([{"text": t, "source": "chat://c9"} for t in chat])
    assert counting.calls == [6]  # own + with-context texts, one encode call
    r = _rowid(hvault, "what breed?")
    own, ctx = hvault.own_vectors.get(r), hvault.vectors.get(r)
    assert np.allclose(own, counting.inner.encode(["what breed?"])[0], atol=Q8)
    expected_ctx = "what breed?\nI adopted a puppy\na golden retriever"
    assert np.allclose(ctx, counting.inner.encode([expected_ctx])[0], atol=Q8)


def test_vector_score_mixes_own_and_context_cosines(hvault) -> None:
    from memctl.recall import fusion
    from memctl.vault import semantic

    hvault.ingest_many(
        [{"text": t, "source": "chat://c2"} for t in ["we went hiking", "where?", "the alps"]]
    )
    r = _rowid(hvault, "where?")
    q = hvault.embedder.encode(["hiking in the alps"])[0]
    own = float(hvault.own_vectors.get(r) @ q)
    ctx = float(hvault.vectors.get(r) @ q)
    want = fusion.VECTOR_OWN_WEIGHT * own + (1 - fusion.VECTOR_OWN_WEIGHT) * ctx
    assert semantic.vector_scores(hvault, q, [r]) == [pytest.approx(want, abs=0.01)]
    rid = hvault.conn.execute("SELECT id FROM records WHERE rowid = ?", (r,)).fetchone()[0]
    hits = {h["id"]: h for h in hvault.recall("hiking in the alps", mode="vector", limit=3)}
    assert hits[rid]["score"] == pytest.approx(want, abs=0.01)  # vector mode ranks by the mix


def test_old_vault_gets_own_vectors_lazily(hvault) -> None:
    """A vault from schema 3 (one vector per record) opens, ranks, and is filled by `model set`."""
    np = pytest.importorskip("numpy")
    chat = ["we adopted a cat", "what colour?", "ginger with white paws", "cute"]
    hvault.ingest_many([{"text": t, "source": "chat://old"} for t in chat])
    hvault.ingest("a lone note on the garden shed")
    before = {r: hvault.vectors.get(r) for r in hvault.vectors.rowids().tolist()}
    # turn it into a schema-3 vault: no own-text store
    with hvault.transaction() as conn:
        for table in ("vecown_slots", "vecown_pages", "vecown_meta"):
            conn.execute(f"DROP TABLE {table}")
        conn.execute("PRAGMA user_version = 3")
    path = hvault.path
    hvault.close()
    with memctl.open_vault(path, passphrase=PASSPHRASE) as v:
        assert v.conn.execute("PRAGMA user_version").fetchone()[0] == 4
        assert v.own_vectors.count() == 0 and v.vectors.count() == 5
        hits = v.recall("ginger cat colour", mode="hybrid", limit=5)  # ranks on context alone
        assert len(hits) == 5
        v.ingest_many([{"text": "a new turn after the upgrade", "source": "chat://old"}])
        assert v.own_vectors.count() == 1  # new records get both vectors at once
        counting = CountingEmbedder(v.embedder)
        v._embedder = counting
        # same model: only what is missing, the chat turns' own texts (the lone note, without
        # context, needs no second vector)
        assert v.set_model("hashing-64")["embedded"] == 4
        assert sum(counting.calls) == 4  # own texts only; with-context vectors are kept
        assert v.own_vectors.count() == 5 and v.vectors.count() == 6
        for r, vec in before.items():
            assert np.array_equal(v.vectors.get(r), vec)
        r = _rowid(v, "what colour?")
        assert np.allclose(
            v.own_vectors.get(r), counting.inner.encode(["what colour?"])[0], atol=Q8
        )
        assert v.set_model("hashing-64")["embedded"] == 0


def test_vector_only_candidates_get_their_real_keyword_score(hvault) -> None:
    from memctl.recall.filters import Filters
    from memctl.recall.keyword import keyword_scores_for, keyword_search
    from memctl.recall.query import build_match

    hvault.ingest_many([f"apple note {i} " + "filler " * i for i in range(8)] + ["pear"])
    match = build_match("apple")
    hits = keyword_search(hvault.conn, "apple", filters=Filters(), limit=20)
    want = {h["_rowid"]: h["score"] for h in hits}
    got = keyword_scores_for(hvault.conn, match, [*want, _rowid(hvault, "pear")])
    assert got == pytest.approx(want)  # same bm25 as the keyword search; no entry for "pear"
    some = sorted(want)[::3]  # gaps: matching records between them must not be reported
    assert keyword_scores_for(hvault.conn, match, some) == pytest.approx({r: want[r] for r in some})
    assert keyword_scores_for(hvault.conn, None, list(want)) == {}


def test_model_pin_mismatch_is_refused(hvault) -> None:
    from memctl.vault.semantic import load_pinned

    pin = dict(hvault.header.model)
    pin["weights_sha256"] = "0" * 64
    with pytest.raises(ModelError, match="pin"):
        load_pinned(pin)


def test_keyword_only_vault_refuses_vector_modes(vault) -> None:
    vault.ingest("x")
    with pytest.raises(UsageError, match="keyword-only"):
        vault.recall("x", mode="vector")


def test_set_model_is_resumable(vault) -> None:
    # records with context (a source's chunks): the ones that get two vectors
    vault.ingest_many([{"text": f"record {i}", "context": f"near {i}"} for i in range(50)])

    class Stop(Exception):
        pass

    calls = []

    def stop_after_one(n: int) -> None:
        calls.append(n)
        raise Stop

    with pytest.raises(Stop):
        vault.set_model("hashing-64", batch_size=20, progress=stop_after_one)
    assert vault.vectors.count() == 20  # the first batch committed
    assert vault.own_vectors.count() == 20
    result = vault.set_model("hashing-64", batch_size=20)
    assert result["embedded"] == 30 and vault.vectors.count() == 50
    switched = vault.set_model("hashing-32")
    assert switched["embedded"] == 50 and vault.vectors.count() == 50
    assert vault.own_vectors.count() == 50
    assert vault.own_vectors.dim == 32
    assert vault.header.model["dim"] == 32
    assert vault.audit_verify()["ok"]


def test_cli_modes(tmp_path: Path, pwfile: Path, monkeypatch) -> None:
    runner = CliRunner()
    monkeypatch.setenv("MEMCTL_VAULT", str(tmp_path / "cv"))
    monkeypatch.setenv("MEMCTL_PASSPHRASE_FILE", str(pwfile))
    assert (
        runner.invoke(
            app, ["init", "--kdf-memory-mib", "8", "--kdf-iterations", "1", "--model", "hashing-64"]
        ).exit_code
        == 0
    )
    runner.invoke(app, ["ingest", "--text", "tulip bulbs in october"])
    r = runner.invoke(app, ["recall", "tulip", "--mode", "vector", "--json"])
    assert json.loads(r.stdout)[0]["text"] == "tulip bulbs in october"
    r = runner.invoke(app, ["recall", "tulip", "--explain"])
    assert "hybrid" in r.stdout and "keyword" in r.stdout
    shown = json.loads(runner.invoke(app, ["model", "show", "--json"]).stdout)
    assert shown["name"] == "memctl/hashing-64"


PARAPHRASES = [
    ("I adopted a puppy last weekend", "did I get a new dog?"),
    ("My car broke down on the highway", "vehicle trouble on the road"),
    ("The doctor said my blood pressure is high", "what did the physician tell me about my health"),
    ("We booked flights to Japan for April", "travel plans for spring"),
    ("I started learning to play the violin", "which musical instrument am I studying"),
    ("Our flat has a leaking roof", "problems with the apartment ceiling"),
]
DISTRACTORS = [
    "Bought groceries: milk, eggs and bread",
    "The meeting moved to Thursday",
    "Finished reading a novel about whales",
    "Paid the electricity bill",
    "The printer at work is out of toner",
    "Watched a documentary about volcanoes",
]


@pytest.mark.model
def test_hybrid_beats_keyword_on_paraphrases_with_the_real_model(tmp_path: Path) -> None:
    path = tmp_path / "real"
    memctl.init_vault(path, passphrase=PASSPHRASE, kdf_memory_mib=8, kdf_iterations=1)
    with memctl.open_vault(path, passphrase=PASSPHRASE) as v:
        assert v.header.model["name"] == "sentence-transformers/all-MiniLM-L6-v2"
        v.ingest_many([t for t, _ in PARAPHRASES] + DISTRACTORS)

        def hits_at_1(mode: str) -> int:
            return sum(
                1
                for text, query in PARAPHRASES
                if (h := v.recall(query, mode=mode, limit=1)) and h[0]["text"] == text
            )

        keyword, hybrid = hits_at_1("keyword"), hits_at_1("hybrid")
        assert hybrid > keyword
        assert hybrid >= len(PARAPHRASES) - 1
        assert hybrid >= hits_at_1("vector")


@pytest.mark.model
def test_hybrid_beats_keyword_on_paraphrases_inside_a_conversation(tmp_path: Path) -> None:
    """The same set as one chat: each record has neighbours about other things, so its own-text
    and with-context vectors differ; hybrid still beats keyword and is at least vector."""
    path = tmp_path / "chat"
    memctl.init_vault(path, passphrase=PASSPHRASE, kdf_memory_mib=8, kdf_iterations=1)
    texts = [t for pair in zip([t for t, _ in PARAPHRASES], DISTRACTORS, strict=True) for t in pair]
    with memctl.open_vault(path, passphrase=PASSPHRASE) as v:
        v.ingest_many([{"text": t, "source": "chat://one"} for t in texts])
        r = _rowid(v, PARAPHRASES[2][0])
        assert v.own_vectors.count() == v.vectors.count() == len(texts)
        assert float(v.own_vectors.get(r) @ v.vectors.get(r)) < 0.99  # two different texts

        def hits_at(mode: str, k: int) -> int:
            return sum(
                1
                for text, query in PARAPHRASES
                if text in [h["text"] for h in v.recall(query, mode=mode, limit=k)]
            )

        for k in (1, 3):
            assert hits_at("hybrid", k) > hits_at("keyword", k)
            assert hits_at("hybrid", k) >= hits_at("vector", k)
        assert hits_at("hybrid", 3) >= len(PARAPHRASES) - 1


def test_a_record_that_loses_its_context_loses_its_own_vector(hvault) -> None:
    """(None, ctx) stores the one vector and drops an own-text vector left from before."""
    np = pytest.importorskip("numpy")
    hvault.ingest_many([{"text": t, "source": "chat://l"} for t in ("one", "two")])
    r = _rowid(hvault, "two")
    assert hvault.own_vectors.get(r) is not None
    vec = hvault.embedder.encode(["two"])[0]
    with hvault.transaction():
        hvault._put_vectors({r: (None, vec)})
    assert hvault.own_vectors.get(r) is None
    assert np.allclose(hvault.vectors.get(r), vec, atol=Q8)


def test_hybrid_snippets_are_the_keyword_ones(hvault, monkeypatch) -> None:
    """Snippets made early (while the query is embedded) or after fusion are the keyword
    search's, and only hits that match by keywords have one."""
    hvault.ingest_many(
        [f"the lantern festival in year {i} drew a crowd by the river" for i in range(40)]
        + [f"unrelated grocery list item {i}" for i in range(40)]
    )
    query = "lantern festival river"
    keyword = {h["id"]: h["snippet"] for h in hvault.recall(query, mode="keyword", limit=80)}
    seen: list[int] = []
    original = semantic._EMBED.submit

    def slow_submit(fn, *args):  # the worker is still busy when the keyword side is done
        import time

        def slow():
            time.sleep(0.05)
            return fn(*args)

        future = original(slow)
        seen.append(0)
        return future

    for early in (True, False):
        if early:
            monkeypatch.setattr(semantic._EMBED, "submit", slow_submit)
        else:
            monkeypatch.undo()
        hits = hvault.recall(query, mode="hybrid", limit=50, explain=True)
        assert len(hits) == 50
        assert any(not h["explain"]["keyword"]["score"] for h in hits)  # vector-only ones too
        for h in hits:
            if h["explain"]["keyword"]["score"]:
                assert h["snippet"] == keyword[h["id"]] and "[" in h["snippet"]
            else:
                assert h["snippet"] is None
    assert seen == [0]
