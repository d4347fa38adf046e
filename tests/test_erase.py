"""Erasure leaves no readable trace: the page oracle, receipts, selection, readers, the CLI,
batches, neighbours' context and vectors, and what FTS5 secure-delete can leave behind."""

from __future__ import annotations

import json
import random
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

import memctl
from memctl import erase as er
from memctl.cli import app
from memctl.errors import ExitCode, UsageError

from .conftest import FAST_KDF, PASSPHRASE
from .consistency import check_whole
from .oracle import scan

# Words the porter stemmer leaves alone and whose 6-character pieces no other text holds: the
# oracle also finds them as FTS5 terms (stored after a shared prefix) and separator keys.
MARKERS = ["zqxbodyqxz", "zqxtitleqxz", "zqxtagqxz", "zqxsrcqxz"]
FRAG = 6


def fill(v, n: int = 1500) -> None:
    v.ingest_many([f"filler note {i} about gardening, tulips and bulbs" for i in range(n)])


def marked(v) -> str:
    return v.ingest(
        f"my secret is {MARKERS[0]} and nobody should keep it",
        title=f"title {MARKERS[1]}",
        tags=[MARKERS[2]],
        source=f"file:///home/me/{MARKERS[3]}.md",
    )


def test_page_oracle_finds_nothing_after_erase(vault, vault_path: Path) -> None:
    fill(vault)
    rid = marked(vault)
    fill(vault, 300)
    key = vault.keys.sqlcipher
    before = scan(vault_path, key, MARKERS)
    assert len({h.split()[0] for h in before.hits}) == 4, before.hits  # the oracle sees them
    receipt = vault.erase([rid])
    assert receipt["physical"] == "complete"
    assert receipt["destroyed"]["rows"] == 1 and receipt["destroyed"]["data_keys"] == 1
    # secure-delete alone removed the FTS5 terms: the index was not rewritten
    assert receipt["fts_rewrite"] == "none"
    after = scan(vault_path, key, MARKERS, fragments=FRAG)
    assert after.pages > 10
    assert after.hits == []
    assert vault.record_key(rid) is None
    assert vault.recall(MARKERS[0]) == []


def test_oracle_control_without_physical_steps_finds_the_marker(vault, vault_path: Path) -> None:
    fill(vault)
    rid = marked(vault)
    targets = er.select(vault, ids=[rid])
    receipt = er.erase(vault, targets, actor="cli", physical=False)
    assert receipt["physical"] == "pending"
    hits = scan(vault_path, vault.keys.sqlcipher, MARKERS).hits
    assert hits, "without checkpoint/vacuum the old pages must still be visible to the oracle"
    # and finishing the pending erasure clears them
    assert er.finish_physical(vault)
    assert scan(vault_path, vault.keys.sqlcipher, MARKERS).hits == []


def test_other_records_survive_unchanged(vault) -> None:
    keep = [vault.ingest(f"keep this apple note {i}", tags=["keep"]) for i in range(5)]
    gone = vault.ingest("drop this apple note", tags=["drop"])
    before = {r["id"]: r for r in vault.export(tags=["keep"])}
    vault.erase([gone])
    after = {r["id"]: r for r in vault.export(tags=["keep"])}
    assert before == after and set(after) == set(keep)
    assert {h["id"] for h in vault.recall("apple", limit=50)} == set(keep)
    assert vault.integrity_check()["ok"]


@pytest.mark.parametrize(
    "selector",
    [
        {"query": "orchard"},
        {"query": "orchard", "namespace": "trips"},
        {"source": "file:///notes/trips/"},
        {"tags": ["travel"]},
        {"tags": ["travel"], "namespace": "default"},
    ],
)
def test_erase_selection_matches_recall(vault, selector: dict) -> None:
    vault.ingest(
        "apple orchard day", namespace="trips", tags=["travel"], source="file:///notes/trips/a.md"
    )
    vault.ingest("orchard planning", tags=["travel"], source="file:///notes/trips/b.md")
    vault.ingest("orchard invoice", source="file:///notes/work/c.md")
    vault.ingest("unrelated", namespace="trips", tags=["travel"])
    sel = dict(selector)
    query = sel.pop("query", None)
    expected = (
        {h["id"] for h in vault.recall(query, limit=1000, **sel)}
        if query
        else {r["id"] for r in vault.list(limit=1000, **sel)}
    )
    preview = vault.erase(dry_run=True, query=query, **sel)
    assert {r["id"] for r in preview["would_erase"]} == expected
    receipt = vault.erase(query=query, **sel)
    assert set(receipt["erased"]) == expected
    for rid in expected:
        with pytest.raises(memctl.errors.RecordNotFound):
            vault.get(rid)


def test_dry_run_changes_nothing(vault) -> None:
    rid = vault.ingest("still here")
    preview = vault.erase([rid], dry_run=True)
    assert [r["id"] for r in preview["would_erase"]] == [rid]
    assert vault.get(rid)["text"] == "still here"
    assert vault.erased_receipts() == []


def test_erase_needs_a_selection(vault) -> None:
    with pytest.raises(UsageError):
        vault.erase()


def test_versions_are_erased_too(vault, vault_path: Path) -> None:
    vault.ingest_many([{"text": f"old {MARKERS[0]}", "source": "file:///x", "locator": ""}])
    s = vault.ingest_many([{"text": "new text", "source": "file:///x", "locator": ""}])
    receipt = vault.erase(s.ids)
    assert receipt["destroyed"]["versions"] == 1
    assert scan(vault_path, vault.keys.sqlcipher, MARKERS).hits == []


def test_reader_holding_a_transaction_then_letting_go(vault_path: Path) -> None:
    writer = memctl.open_vault(vault_path, passphrase=PASSPHRASE)
    fill(writer, 500)
    rid = marked(writer)
    reader = memctl.open_vault(vault_path, passphrase=PASSPHRASE)
    reader.conn.execute("BEGIN")
    reader.conn.execute("SELECT count(*) FROM records").fetchone()  # holds a WAL snapshot
    receipt = writer.erase([rid], wait=0.3)
    assert receipt["physical"] == "pending"
    assert writer.erased_receipts()[0]["id"] == rid
    # a second erase while the reader is still there waits for it, and it lets go meanwhile
    other = writer.ingest("second target")
    threading.Timer(0.5, lambda: reader.conn.execute("COMMIT")).start()
    t0 = time.monotonic()
    receipt2 = writer.erase([other], wait=10)
    assert receipt2["physical"] == "complete"
    assert time.monotonic() - t0 < 9
    assert scan(vault_path, writer.keys.sqlcipher, MARKERS).hits == []
    reader.close()
    writer.close()


def test_pending_erasure_finishes_on_next_open(vault_path: Path) -> None:
    writer = memctl.open_vault(vault_path, passphrase=PASSPHRASE)
    fill(writer, 300)
    rid = marked(writer)
    key = writer.keys.sqlcipher
    reader = memctl.open_vault(vault_path, passphrase=PASSPHRASE)
    reader.conn.execute("BEGIN")
    reader.conn.execute("SELECT count(*) FROM records").fetchone()
    assert writer.erase([rid], wait=0.2)["physical"] == "pending"
    writer.close()
    reader.conn.execute("COMMIT")
    assert scan(vault_path, key, MARKERS).hits  # still physically there (in the WAL)
    reader.close()
    with memctl.open_vault(vault_path, passphrase=PASSPHRASE) as v:  # next opportunity
        assert er.pending(v) == []
    assert scan(vault_path, key, MARKERS).hits == []


def test_receipts_hold_ids_and_times_only(vault) -> None:
    rid = vault.ingest(f"text {MARKERS[0]}")
    vault.erase([rid])
    receipts = vault.erased_receipts()
    assert receipts[0]["id"] == rid
    assert MARKERS[0] not in json.dumps(receipts)
    assert set(receipts[0]) == {"id", "erased_at", "actor", "receipt_id"}


# -- the CLI -----------------------------------------------------------------------------------
runner = CliRunner()


@pytest.fixture
def cli_env(vault_path: Path, pwfile: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("MEMCTL_VAULT", str(vault_path))
    monkeypatch.setenv("MEMCTL_PASSPHRASE_FILE", str(pwfile))
    return vault_path


def run(*args: str, input: str | None = None):
    return runner.invoke(app, list(args), input=input, catch_exceptions=False)


def test_cli_refuses_without_yes_when_not_a_tty(cli_env: Path) -> None:
    rid = json.loads(run("ingest", "--text", "erase me", "--json").stdout)["ids"][0]
    r = run("erase", rid)
    assert r.exit_code == ExitCode.REFUSED and "--yes" in r.stderr
    assert run("get", rid).exit_code == 0


def test_cli_dry_run_and_receipt(cli_env: Path) -> None:
    rid = json.loads(run("ingest", "--text", "erase me", "--json").stdout)["ids"][0]
    dry = run("erase", rid, "--dry-run", "--json")
    assert json.loads(dry.stdout)["would_erase"] == [rid]
    assert run("get", rid).exit_code == 0
    r = run("erase", rid, "--yes", "--json")
    receipt = json.loads(r.stdout)
    assert r.exit_code == 0 and receipt["erased"] == [rid]
    assert set(receipt["destroyed"]) >= {
        "rows",
        "fts_entries",
        "vector_slots",
        "data_keys",
        "journal_events_unreadable",
    }
    assert run("get", rid).exit_code == ExitCode.NOT_FOUND
    erased = [json.loads(x) for x in run("export", "--erased").stdout.splitlines()]
    assert erased[0]["id"] == rid
    assert run("erase", "--yes").exit_code == ExitCode.USAGE


def test_cli_export_jsonl(cli_env: Path, tmp_path: Path) -> None:
    run("ingest", "--text", "alpha note", "--namespace", "a", "--tag", "x")
    run("ingest", "--text", "beta note", "--namespace", "b")
    rows = [json.loads(x) for x in run("export").stdout.splitlines()]
    assert {r["text"] for r in rows} == {"alpha note", "beta note"}
    assert rows[0]["provenance"]["actor"] == "cli"
    out = tmp_path / "export.jsonl"
    assert run("export", "--namespace", "a", "--out", str(out)).exit_code == 0
    assert [json.loads(x)["text"] for x in out.read_text().splitlines()] == ["alpha note"]
    assert oct(out.stat().st_mode & 0o777) == "0o600"


def test_oracle_piece_search_equals_a_plain_search(vault, vault_path: Path) -> None:
    """The oracle's fast path (many pieces, one numpy lookup) reports what a plain search of
    every decrypted page for every piece reports."""
    from .oracle import _hmac_key, decrypt_page, layout_of

    rng = random.Random(5)
    words = ["zq" + "".join(rng.choice("qxjkv") for _ in range(8)) for _ in range(40)]
    fill(vault, 300)
    vault.ingest_many([f"note {w} and {w[::-1]}" for w in words])
    vault.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    key = vault.keys.sqlcipher
    got = scan(vault_path, key, words, fragments=FRAG).hits
    db = (vault_path / "index.db").read_bytes()
    hkey = _hmac_key(key, db[:16])
    lay = layout_of(vault_path)
    page = lay.page
    assert page == 16384  # a vault made now
    want = []
    for i in range(len(db) // page):
        raw = db[i * page : (i + 1) * page]
        if raw != bytes(page):
            plain = decrypt_page(key, hkey, raw, i + 1, lay)
            for w in words:
                if w.encode() in plain:
                    want.append(f"{w} in index.db page {i + 1}")
                for j in range(len(w) - FRAG + 1):
                    if w[j : j + FRAG].encode() in plain:
                        want.append(f"{w} (fragment {w[j : j + FRAG]!r}) in index.db page {i + 1}")
    assert len(words) * 6 > 64 and want  # the fast path ran, and there is something to find
    assert sorted(got) == sorted(want)


# -- FTS5: secure-delete, its control, and the separator keys it leaves ----------------------
def test_control_without_secure_delete_the_oracle_finds_the_fts_term(
    vault, vault_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The oracle sees the FTS5 index: with secure-delete off (and no rewrite) the erased term
    survives every physical step in the index's pages. With it on, nothing does (above)."""
    fill(vault)
    rid = marked(vault)
    fill(vault, 300)
    vault.conn.execute("INSERT INTO records_fts(records_fts, rank) VALUES('secure-delete', 0)")
    monkeypatch.setattr(er, "fts_leftovers", lambda conn, terms: [])
    receipt = vault.erase([rid])
    assert receipt["physical"] == "complete" and receipt["fts_rewrite"] == "none"
    hits = scan(vault_path, vault.keys.sqlcipher, [MARKERS[0]], fragments=FRAG).hits
    assert hits, "the body's term should still be in the index's pages"


def _separator_vault(path: Path, seed: int) -> tuple[memctl.Vault, list[str], list[str]]:
    """1,100 records, 100 of them holding a word no other record has (q/x alternating, so no
    filler holds a piece of it). Erasing the 100 at once often leaves a separator key of one
    of those words (whether it does depends on where leaf pages break)."""
    from memctl.bench.synth import Corpus

    memctl.init_vault(path, passphrase=PASSPHRASE, **FAST_KDF)
    v = memctl.open_vault(path, passphrase=PASSPHRASE)
    rng = random.Random(seed)
    corpus = Corpus(seed=seed)
    letters = "bcdfghjklmnprstvw"
    words = [
        rng.choice(letters) + "".join(q + rng.choice(letters) for q in "qxqx") + "qz"
        for _ in range(100)
    ]
    items = [{"text": corpus.text(120)} for _ in range(1000)]
    for w in words:
        items.insert(rng.randrange(len(items)), {"text": f"{corpus.text(60)} {w}"})
    v.ingest_many(items)
    ids = [i for (i,) in v.conn.execute("SELECT id FROM records WHERE body LIKE '%qz'")]
    assert len(ids) == 100
    return v, ids, words


def _separators_of(conn, words: list[str]) -> list[bytes]:
    """Keys of records_fts_idx that are a prefix of one of ``words`` and of no live term."""
    conn.execute(
        "CREATE VIRTUAL TABLE IF NOT EXISTS temp.test_vocab USING fts5vocab(main, records_fts, row)"
    )
    live = [t.encode() for (t,) in conn.execute("SELECT term FROM temp.test_vocab")]
    out = []
    for (key,) in conn.execute("SELECT term FROM records_fts_idx"):
        sep = bytes(key)[1:]
        erased = sep and any(w.encode().startswith(sep) for w in words)
        if erased and not any(t.startswith(sep) for t in live):
            out.append(sep)
    return out


def test_separator_keys_are_found_and_only_then_the_index_is_rewritten(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(er, "BULK_SHARE", 0)  # this batch takes the secure-delete path
    check = er.fts_leftovers
    found: list[bytes] = []

    def spy(conn, terms):
        found.extend(check(conn, terms))
        return []

    # control: without the rewrite the keys stay, and the check finds every one of them
    monkeypatch.setattr(er, "fts_leftovers", spy)
    for seed in range(1, 9):  # the first data set that leaves a key (seed 1, as measured)
        v, ids, words = _separator_vault(tmp_path / f"control{seed}", seed)
        receipt = er.erase(v, er.select(v, ids=ids), actor="test")
        assert receipt["fts_rewrite"] == "none"
        left = _separators_of(v.conn, words)
        v.close()
        if left:
            break
    assert left, "no data set left a separator key of an erased word"
    assert set(left) <= set(found)
    monkeypatch.setattr(er, "fts_leftovers", check)
    # the same erase with the check: the index is rewritten and no such key remains
    v, ids, words = _separator_vault(tmp_path / "real", seed)
    receipt = er.erase(v, er.select(v, ids=ids), actor="test")
    assert receipt["fts_rewrite"] == "optimize (separator key)"
    assert receipt["physical"] == "complete"
    assert _separators_of(v.conn, words) == []
    assert scan(tmp_path / "real", v.keys.sqlcipher, words, fragments=FRAG).hits == []
    v.close()


def _gap_vault(path: Path, seed: int, n: int = 2000) -> tuple[memctl.Vault, list[str], list[str]]:
    """``n`` + 100 records; 100 of them hold a word no other record has (q/x alternating) in
    their text, title, tag (``ta<word>``) and source path."""
    from memctl.bench.synth import Corpus

    memctl.init_vault(path, passphrase=PASSPHRASE, **FAST_KDF)
    v = memctl.open_vault(path, passphrase=PASSPHRASE)
    rng = random.Random(seed)
    corpus = Corpus(seed=seed)
    items = list(corpus.records(n))
    letters = "abcdefghijklmnoprstuvw"
    words = ["".join(q + rng.choice(letters) for q in "qxqxqx") + "qz" for _ in range(100)]
    words = [rng.choice(letters) + w for w in words]
    for i, w in enumerate(words):
        items.insert(
            rng.randrange(len(items)),
            {
                "text": f"{corpus.text()} {w} {corpus.text(80)}",
                "title": f"victim {i} ti{w}",
                "tags": [f"ta{w}"],
                "source": f"file:///so{w}.md",
            },
        )
    v.ingest_many(items)
    ids = [i for (i,) in v.conn.execute("SELECT id FROM records WHERE title LIKE 'victim %'")]
    assert len(ids) == 100
    return v, ids, words


def test_control_without_vacuum_bytes_survive_in_page_free_space(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Why VACUUM stays: when SQLite rebalances a b-tree page it does not clear the space below
    the cells it keeps, so older copies of cells (here an erased tag in the tag index) survive
    secure_delete, the transaction and the checkpoint. VACUUM rebuilds every page."""
    import shutil

    monkeypatch.setattr(er, "BULK_SHARE", 0)  # as measured: the secure-delete path
    vacuum = er.vacuum
    # 16 KiB pages rebalance less often than 4 KiB ones: at 2,100 records 12 data sets left
    # nothing to find; at 8,100 seeds 2 and 3 did (seed 1 at 4 KiB pages and 2,100 records)
    for seed in range(1, 6):
        control, real = tmp_path / f"control{seed}", tmp_path / f"real{seed}"
        v, ids, words = _gap_vault(control, seed, 8000)
        v.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        shutil.copytree(control, real)  # the same vault twice
        monkeypatch.setattr(er, "vacuum", lambda conn: None)
        receipt = er.erase(v, er.select(v, ids=ids), actor="test")
        assert receipt["physical"] == "complete"
        hits = scan(control, v.keys.sqlcipher, words, fragments=FRAG).hits
        v.close()
        if hits:
            break
    assert hits, "no data set left erased bytes without VACUUM"
    monkeypatch.setattr(er, "vacuum", vacuum)
    with memctl.open_vault(real, passphrase=PASSPHRASE) as v:
        receipt = er.erase(v, er.select(v, ids=ids), actor="test")
        assert receipt["physical"] == "complete"
        assert scan(real, v.keys.sqlcipher, words, fragments=FRAG).hits == []


# -- batches -----------------------------------------------------------------------------------
def test_large_batch_rewrites_the_index_once(vault, vault_path: Path) -> None:
    keep = vault.ingest_many([f"keep note {i} about tulips" for i in range(30)]).ids
    gone = vault.ingest_many(
        [{"text": f"drop {m} {i}", "tags": [f"{m}{i}"]} for i, m in enumerate(MARKERS * 5)]
    ).ids
    receipt = vault.erase(gone)
    assert receipt["fts_rewrite"] == "optimize (batch)"
    assert sorted(receipt["erased"]) == sorted(gone) and receipt["physical"] == "complete"
    conn = vault.conn
    assert conn.execute("SELECT v FROM records_fts_config WHERE k = 'secure-delete'").fetchone()[0]
    conn.execute("INSERT INTO records_fts(records_fts) VALUES('integrity-check')")
    assert {h["id"] for h in vault.recall("tulips", limit=100)} == set(keep)
    assert scan(vault_path, vault.keys.sqlcipher, MARKERS, fragments=FRAG).hits == []


def test_small_batch_takes_the_secure_delete_path(vault, vault_path: Path) -> None:
    fill(vault)
    gone = vault.ingest_many([f"drop {m} now" for m in MARKERS]).ids
    receipt = vault.erase(gone)
    assert len(gone) * er.BULK_SHARE < 1500
    assert receipt["fts_rewrite"] in ("none", "optimize (separator key)")
    assert scan(vault_path, vault.keys.sqlcipher, MARKERS, fragments=FRAG).hits == []


# -- neighbours: their context and their with-context vectors ----------------------------------
@pytest.mark.parametrize(
    ("context", "text", "expected"),
    [
        ("before\nmeet me at noon\nafter", "meet me at noon", "before\nafter"),
        ("before\nMEET  me\tat noon!\nafter", "Meet me at noon.", "before\nafter"),
        ("quoted: meet me,\nat NOON -- ok", "meet me at noon", "quoted:  -- ok"),
        ("I know\nNo\nfine", "no", "I know\nfine"),  # never inside a longer word
        ("a 👍\n👍\nb", "👍", "a\nb"),  # no words: exact copies
        ("meet me at noon", "meet me at noon", None),
        ("unrelated text", "meet me at noon", "unrelated text"),
    ],
)
def test_scrub_text(context: str, text: str, expected: str | None) -> None:
    assert er.scrub_text(context, text) == expected


def _chat(vault, secret: str) -> list[str]:
    src = "file:///chats/one.json"
    return vault.ingest_many(
        [
            {"text": "are we still on for lunch", "source": src, "locator": "0"},
            {
                "text": "yes, where",
                "source": src,
                "locator": "1",
                "context": "earlier: MEET me   at the ZQXCAFEQXZ, at noon!\nsomething else",
            },
            {"text": secret, "source": src, "locator": "2"},
            {"text": "see you there", "source": src, "locator": "3"},
            {"text": "bring the umbrella", "source": src, "locator": "4"},
        ]
    ).ids


SECRET = "Meet me at the zqxcafeqxz at noon"


def test_neighbours_context_copies_are_scrubbed_even_when_they_differ(tmp_path: Path) -> None:
    path = tmp_path / "mv"
    _model_vault(path)  # the vault writes neighbours into the context column (with a model)
    with memctl.open_vault(path, passphrase=PASSPHRASE) as vault:
        ids = _chat(vault, SECRET)
        found = {h["id"] for h in vault.recall("zqxcafeqxz", mode="keyword", limit=10)}
        assert found == set(ids)  # the control: every neighbour's context holds a copy
        receipt = vault.erase([ids[2]])
        assert receipt["destroyed"]["context_copies"] == 4  # two before it, two after it
        contexts = [vault.get(i)["context"] or "" for i in ids if i != ids[2]]
        assert not any("zqxcafeqxz" in c.lower() for c in contexts), contexts
        assert vault.get(ids[1])["context"] == "earlier: !\nsomething else"  # the rest stays
        assert vault.recall("zqxcafeqxz", mode="keyword", limit=10) == []
        key = vault.keys.sqlcipher
    assert scan(path, key, ["zqxcafeqxz"], fragments=FRAG).hits == []


def test_adjacent_records_erased_together_leave_no_copy(tmp_path: Path) -> None:
    path = tmp_path / "mv"
    _model_vault(path)
    with memctl.open_vault(path, passphrase=PASSPHRASE) as vault:
        ids = _chat(vault, SECRET)
        receipt = vault.erase([ids[1], ids[2]])
        assert receipt["destroyed"]["context_copies"] == 3  # every survivor held one or both
        for rid in (ids[0], ids[3], ids[4]):
            context = (vault.get(rid)["context"] or "").lower()
            assert "zqxcafeqxz" not in context and "yes, where" not in context, context
        assert er.reembed_queue(vault) == []  # the model was loaded by the ingest: done at once
        check_whole(vault)


def test_context_scrub_stays_within_the_source(tmp_path: Path) -> None:
    path = tmp_path / "mv"
    _model_vault(path)
    with memctl.open_vault(path, passphrase=PASSPHRASE) as vault:
        ids = _chat(vault, SECRET)
        other = vault.ingest("same words", source="file:///chats/two.json", context=SECRET)
        vault.erase([ids[2]])
        assert vault.get(other)["context"] == SECRET  # another source: not a neighbour
        hits = vault.recall("zqxcafeqxz", mode="keyword", limit=10)
        assert [h["id"] for h in hits] == [other]


def _model_vault(path: Path) -> None:
    memctl.init_vault(
        path, passphrase=PASSPHRASE, kdf_memory_mib=8, kdf_iterations=1, model="hashing-64"
    )


TURNS = ["alpha turn about tulips", "zqxmiddleqxz private turn", "gamma turn about bulbs"]


def _three_turns(path: Path) -> tuple[list[str], list[int], dict[int, np.ndarray]]:
    with memctl.open_vault(path, passphrase=PASSPHRASE) as v:
        ids = v.ingest_many(
            [
                {"text": t, "source": "file:///chat.json", "locator": str(i)}
                for i, t in enumerate(TURNS)
            ]
        ).ids
        rowids = [
            v.conn.execute("SELECT rowid FROM records WHERE id = ?", (i,)).fetchone()[0]
            for i in ids
        ]
        old = {r: v.vectors.get(r) for r in rowids}
    return ids, rowids, old


def _cos(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


@pytest.mark.parametrize("trigger", ["vector recall", "ingest", "model set"])
def test_neighbour_vectors_are_queued_then_reembedded_from_scrubbed_text(
    tmp_path: Path, trigger: str
) -> None:
    """After the middle turn of three goes, each neighbour's with-context vector is the
    embedding of its text with its nearest surviving neighbour (the other turn): the erased
    turn is in no vector. Until the model is next loaded it is missing, and queued."""
    from memctl.embed import load_embedder
    from memctl.recall.fusion import embedding_texts

    path = tmp_path / "mv"
    _model_vault(path)
    ids, (a, _, c), old = _three_turns(path)
    emb = load_embedder("hashing-64")
    with memctl.open_vault(path, passphrase=PASSPHRASE) as v:  # the model is not loaded
        own_before = {r: v.own_vectors.get(r) for r in (a, c)}
        receipt = v.erase([ids[1]])
        assert receipt["destroyed"]["neighbour_vectors"] == 2
        assert er.reembed_queue(v) == [a, c]
        assert v.vectors.get(a) is None and v.vectors.get(c) is None
        assert v._embedder is None
        check_whole(v)  # a queued rowid may lack its with-context vector
        if trigger == "vector recall":
            v.recall("tulips", mode="vector")
        elif trigger == "ingest":
            v.ingest("an unrelated note")
        else:
            v.set_model("hashing-64")
        assert er.reembed_queue(v) == []
        expect = emb.encode(
            [
                embedding_texts("", TURNS[0], [TURNS[2]])[1],
                embedding_texts("", TURNS[2], [TURNS[0]])[1],
            ]
        )
        for rowid, want in zip((a, c), expect, strict=True):
            got = v.vectors.get(rowid)
            assert _cos(got, want) > 0.999
            assert _cos(got, old[rowid]) < 0.99  # it changed: the old one held the erased turn
            np.testing.assert_array_equal(v.own_vectors.get(rowid), own_before[rowid])
        check_whole(v)


def test_neighbour_vectors_reembedded_at_once_when_the_model_is_loaded(tmp_path: Path) -> None:
    path = tmp_path / "mv"
    _model_vault(path)
    ids, (a, _, c), _ = _three_turns(path)
    with memctl.open_vault(path, passphrase=PASSPHRASE) as v:
        _ = v.embedder  # loaded, as in the agent or the MCP server
        receipt = v.erase([ids[1]])
        assert receipt["destroyed"]["neighbour_vectors"] == 2
        assert er.reembed_queue(v) == []
        assert v.vectors.get(a) is not None and v.vectors.get(c) is not None
        check_whole(v)


def test_reembed_skips_a_text_that_changed_meanwhile(tmp_path: Path) -> None:
    """A neighbourhood that changes between embedding and writing is not written: the
    rowid stays queued for the next run (which embeds what the vault holds then)."""
    path = tmp_path / "mv"
    _model_vault(path)
    ids, (_, _, c), _ = _three_turns(path)
    with memctl.open_vault(path, passphrase=PASSPHRASE) as v:
        v.erase([ids[1]])
        from memctl.vault.semantic import load_pinned

        inner = load_pinned(v.header.model)

        class Racing:
            def encode(self, texts):
                out = inner.encode(texts)
                with memctl.open_vault(path, passphrase=PASSPHRASE) as other:
                    # c's own text changes; a's (its body and c's body) does not
                    other.conn.execute("UPDATE records SET title = 'edited' WHERE rowid = ?", (c,))
                return out

        v._embedder = Racing()
        assert er.reembed_pending(v) == 1  # a's text is unchanged; c's changed meanwhile
        assert er.reembed_queue(v) == [c]
        v._embedder = inner
        assert er.reembed_pending(v) == 1
        assert er.reembed_queue(v) == []


# -- the CLI: many records in one command -------------------------------------------------------
def test_cli_batch_erase_one_transaction_one_vacuum(
    cli_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    words = [f"zqxbatch{chr(98 + i)}qxz" for i in range(12)]
    with memctl.open_vault(cli_env, passphrase=PASSPHRASE) as v:
        fill(v, 200)
        ids = v.ingest_many([f"note {w}" for w in words]).ids
        by_query = v.ingest_many([f"orchard visit {i}" for i in range(3)]).ids
    calls = {"vacuum": 0, "transactions": 0}
    vacuum, load = er.vacuum, er._load_targets

    def count_vacuum(conn):
        calls["vacuum"] += 1
        vacuum(conn)

    def count_tx(conn, rowids):
        calls["transactions"] += 1
        load(conn, rowids)

    monkeypatch.setattr(er, "vacuum", count_vacuum)
    monkeypatch.setattr(er, "_load_targets", count_tx)
    r = run("erase", *ids, "--yes", "--json")
    assert r.exit_code == 0, r.stderr
    receipt = json.loads(r.stdout)
    assert sorted(receipt["erased"]) == sorted(ids) and receipt["destroyed"]["rows"] == 12
    assert calls == {"vacuum": 1, "transactions": 1}
    r = run("erase", "--query", "orchard", "--yes", "--json")
    assert sorted(json.loads(r.stdout)["erased"]) == sorted(by_query)
    assert calls == {"vacuum": 2, "transactions": 2}
    with memctl.open_vault(cli_env, passphrase=PASSPHRASE) as v:
        key = v.keys.sqlcipher
        assert v.conn.execute("SELECT count(*) FROM records").fetchone()[0] == 200
    assert scan(cli_env, key, words, fragments=FRAG).hits == []


def test_cli_reports_neighbour_copies(
    tmp_path: Path, pwfile: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "mv"
    _model_vault(path)
    with memctl.open_vault(path, passphrase=PASSPHRASE) as vault:
        ids = _chat(vault, SECRET)
    monkeypatch.setenv("MEMCTL_VAULT", str(path))
    monkeypatch.setenv("MEMCTL_PASSPHRASE_FILE", str(pwfile))
    r = run("erase", ids[2], "--yes")
    assert r.exit_code == 0, r.stderr
    assert "removed copies from 4 neighbour context(s); 4 neighbour vector(s)" in r.stderr
    assert "zqxcafeqxz" not in r.stderr.lower() + r.stdout.lower()
    with memctl.open_vault(path, passphrase=PASSPHRASE) as vault:
        # the two next to it, and the two whose context held it (a vector made by
        # `model set` embeds the context column): the CLI process never loaded the model
        assert len(er.reembed_queue(vault)) == 4
        check_whole(vault)
