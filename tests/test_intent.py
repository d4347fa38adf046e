"""The crash-window intent: a crashed tail of journal commits is voided, a rollback is not.

A "crash" here is an exception raised after the journal commit and before the database COMMIT:
the transaction rolls back and the intent file stays, exactly the state a SIGKILL leaves there
(tests/test_crash.py does the same with real kills).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

import memctl
from memctl.errors import CorruptVault
from memctl.vault.history import INTENT_NAME

from .conftest import PASSPHRASE


class Crash(Exception):
    pass


def crash_after_journal_commit(vault, monkeypatch: pytest.MonkeyPatch, times: int = 1) -> None:
    """The next ``times`` journal commits succeed, then the process 'dies' before COMMIT."""
    journal = vault.history.journal
    real = journal.commit
    left = {"n": times}

    def commit(*args, **kwargs):
        head = real(*args, **kwargs)
        left["n"] -= 1
        if left["n"] == 0:
            monkeypatch.setattr(journal, "commit", real)
            raise Crash
        return head

    monkeypatch.setattr(journal, "commit", commit)


def test_one_crash_is_voided_by_the_next_write(vault, monkeypatch) -> None:
    vault.ingest("first note about the lighthouse")
    crash_after_journal_commit(vault, monkeypatch)
    with pytest.raises(Crash):
        vault.ingest("second note, lost in the crash")
    assert (vault.path / INTENT_NAME).exists()
    assert "never committed" in vault.history.verify()["problems"][0]
    vault.ingest("third note after the crash")
    assert vault.history.verify()["ok"]
    assert not (vault.path / INTENT_NAME).exists()


def test_crash_while_voiding_a_crash_is_voided_as_a_tail(vault, monkeypatch) -> None:
    vault.ingest("first note about the lighthouse")
    crash_after_journal_commit(vault, monkeypatch)
    with pytest.raises(Crash):
        vault.ingest("second note, lost in the first crash")
    seq = vault.history.journal.seq()
    # the next writer voids the orphan (journal commit 1 of its transaction), then dies
    crash_after_journal_commit(vault, monkeypatch, times=1)
    with pytest.raises(Crash):
        vault.ingest("third note, lost in the second crash")
    assert vault.history.journal.seq() == seq + 1  # two commits beyond the database
    problems = vault.history.verify()["problems"]
    assert "seqs" in problems[0] and "never committed" in problems[0]
    vault.ingest("fourth note")
    report = vault.history.verify()
    assert report["ok"], report["problems"]
    texts = {h["text"] for h in vault.list()}
    assert texts == {"first note about the lighthouse", "fourth note"}


def test_a_crash_intent_does_not_excuse_a_rolled_back_database(
    vault_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with memctl.open_vault(vault_path, passphrase=PASSPHRASE) as v:
        v.ingest("note one")
    saved = vault_path.parent / "index-at-seq-1.db"
    shutil.copy(vault_path / "index.db", saved)  # closed vault: the WAL is checkpointed
    with memctl.open_vault(vault_path, passphrase=PASSPHRASE) as v:
        v.ingest("note two")
        crash_after_journal_commit(v, monkeypatch)
        with pytest.raises(Crash):
            v.ingest("note three")
    # a valid intent (BASE 2, TOP 3) is on disk; the database is rolled back to seq 1
    for suffix in ("-wal", "-shm"):
        (vault_path / f"index.db{suffix}").unlink(missing_ok=True)
    shutil.copy(saved, vault_path / "index.db")
    with memctl.open_vault(vault_path, passphrase=PASSPHRASE) as v:
        assert "rolled back" in v.history.verify()["problems"][0]
        with pytest.raises(CorruptVault, match="rolled back"):
            v.ingest("note four")
        with pytest.raises(CorruptVault):
            v.history.repair()


def test_journal_housekeeping_runs_after_the_database_commit(vault, monkeypatch) -> None:
    """Packing is deferred out of the crash window, but it still happens."""
    journal = vault.history.journal
    assert journal.auto_maintain is False
    journal.max_packs = 3
    calls: list[bool] = []
    real = journal.maintain

    def maintain(*args, **kwargs):
        calls.append(vault.conn.in_transaction)
        return real(*args, **kwargs)

    monkeypatch.setattr(journal, "maintain", maintain)
    for i in range(8):
        vault.ingest(f"note {i} about packing")
    packs = list((vault.path / "journal" / "objects" / "pack").glob("*.pack"))
    assert calls and not any(calls)  # ran, and never inside a write transaction
    assert len(packs) <= 4
    assert vault.history.verify()["ok"]
