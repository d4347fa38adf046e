"""Erasure leaves no readable trace: the page oracle, receipts, selection, readers, the CLI."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

import memctl
from memctl.cli import app
from memctl.errors import ExitCode, UsageError

from .conftest import PASSPHRASE
from .oracle import scan

MARKERS = ["qzxbodymarker", "qzxtitlemarker", "qzxtagmarker", "qzxsourcemarker"]


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
    after = scan(vault_path, key, MARKERS)
    assert after.pages > 10
    assert after.hits == []
    assert vault.record_key(rid) is None
    assert vault.recall(MARKERS[0]) == []


def test_oracle_control_without_physical_steps_finds_the_marker(vault, vault_path: Path) -> None:
    from memctl import erase as er

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
        from memctl import erase as er

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
