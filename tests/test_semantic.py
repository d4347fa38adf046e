"""Vector and hybrid recall in the vault: the model pin, context, filters, erase, re-embedding."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

import memctl
from memctl.cli import app
from memctl.errors import ModelError, UsageError

from .conftest import PASSPHRASE


@pytest.fixture
def hvault(tmp_path: Path):
    path = tmp_path / "hv"
    memctl.init_vault(
        path, passphrase=PASSPHRASE, kdf_memory_mib=8, kdf_iterations=1, model="hashing-64"
    )
    with memctl.open_vault(path, passphrase=PASSPHRASE) as v:
        yield v


def test_every_record_gets_one_vector_and_they_survive_reopen(hvault) -> None:
    hvault.ingest_many([f"note number {i} about the garden" for i in range(300)])
    assert hvault.vectors.count() == 300
    path = hvault.path
    hvault.close()
    with memctl.open_vault(path, passphrase=PASSPHRASE) as v:
        assert v.vectors.count() == 300
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
    assert receipt["destroyed"]["vector_slots"] == 1
    assert hvault.vectors.count() == 1
    assert all(h["id"] != rid for h in hvault.recall("forget me", mode="vector"))


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
    vault.ingest_many([f"record {i}" for i in range(50)])

    class Stop(Exception):
        pass

    calls = []

    def stop_after_one(n: int) -> None:
        calls.append(n)
        raise Stop

    with pytest.raises(Stop):
        vault.set_model("hashing-64", batch_size=20, progress=stop_after_one)
    assert vault.vectors.count() == 20  # the first batch committed
    result = vault.set_model("hashing-64", batch_size=20)
    assert result["embedded"] == 30 and vault.vectors.count() == 50
    switched = vault.set_model("hashing-32")
    assert switched["embedded"] == 50 and vault.vectors.count() == 50
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
