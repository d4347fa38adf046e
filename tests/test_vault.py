"""The vault core through the Python API: init, unlock, keyslots, ingest, recall, failures."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import memctl
from memctl.errors import (
    BadPassphrase,
    CorruptVault,
    RecordNotFound,
    UsageError,
    VaultExists,
    VaultLocked,
    VaultNotFound,
)
from memctl.vault.unlock import Credentials

from .conftest import FAST_KDF, PASSPHRASE

MARKER = "zebra-quokka-7731-marker"


def all_vault_bytes(path: Path) -> bytes:
    return b"".join(p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file())


def test_init_creates_private_layout(vault_path: Path) -> None:
    assert (vault_path / "header.json").exists()
    assert (vault_path / "index.db").exists()
    assert (vault_path / "journal").is_dir()
    assert (vault_path / "inbox").is_dir()
    assert oct(vault_path.stat().st_mode & 0o777) == "0o700"
    for name in ("header.json", "index.db"):
        assert oct((vault_path / name).stat().st_mode & 0o777) == "0o600"
    header = json.loads((vault_path / "header.json").read_text())
    assert header["format"] == "memctl-vault" and header["version"] == 1
    assert header["keyslots"][0]["kdf"]["name"] in ("argon2id", "scrypt")
    assert PASSPHRASE not in (vault_path / "header.json").read_text()


def test_init_refuses_existing_vault(vault_path: Path) -> None:
    with pytest.raises(VaultExists):
        memctl.init_vault(vault_path, passphrase="x", **FAST_KDF)


def test_sqlcipher_settings_asserted(vault) -> None:
    conn = vault.conn
    assert conn.execute("PRAGMA secure_delete").fetchone()[0] == 1
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("PRAGMA cipher_version").fetchone()[0].startswith("4.")
    (raw,) = conn.execute("SELECT sql FROM sqlite_master WHERE name='records_fts'").fetchone()
    assert "porter" in raw
    # the page layout of vaults made now, recorded in the header
    assert conn.execute("PRAGMA cipher_page_size").fetchone()[0] == "16384"
    assert conn.execute("PRAGMA cipher_hmac_algorithm").fetchone()[0] == "HMAC_SHA256"
    assert vault.header.cipher == {"page_size": 16384, "hmac": "HMAC_SHA256"}


def test_a_vault_of_the_older_page_layout_still_opens(
    vault_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A header without ``cipher`` (vaults made before it) means SQLCipher 4's own layout:
    4 KiB pages, HMAC-SHA512. Such a vault opens, reads, writes, erases and backs up."""
    from memctl.store import db as dbmod

    old = vault_path.parent / "old"
    monkeypatch.setattr(dbmod, "CIPHER", None)
    memctl.init_vault(old, passphrase=PASSPHRASE, **FAST_KDF)
    monkeypatch.undo()
    assert "cipher" not in json.loads((old / "header.json").read_text())
    with memctl.open_vault(old, passphrase=PASSPHRASE) as v:
        assert v.conn.execute("PRAGMA cipher_page_size").fetchone()[0] == "4096"
        assert v.conn.execute("PRAGMA cipher_hmac_algorithm").fetchone()[0] == "HMAC_SHA512"
        rid = v.ingest("an old vault's note")
        gone = v.ingest("an old vault's secret to erase")
        v.erase([gone])
        v.backup(vault_path.parent / "old-backup")
    with memctl.open_vault(vault_path.parent / "old-backup", passphrase=PASSPHRASE) as b:
        assert [r["id"] for r in b.list()] == [rid]
        assert b.audit_verify()["ok"]


def test_the_page_layout_is_authenticated_and_checked(vault_path: Path) -> None:
    """``cipher`` is under the header's MAC: changed, the vault refuses to open (even to the
    layout SQLCipher would read); malformed, it is CorruptVault before any key is tried."""
    header = vault_path / "header.json"
    good = header.read_text()
    d = json.loads(good)
    d["cipher"] = {"page_size": 4096, "hmac": "HMAC_SHA512"}
    header.write_text(json.dumps(d))
    with pytest.raises(CorruptVault):  # AuthenticationError is one
        memctl.open_vault(vault_path, passphrase=PASSPHRASE)
    for bad in ({"page_size": 1000, "hmac": "HMAC_SHA256"}, {"page_size": 16384}, "16k"):
        d["cipher"] = bad
        header.write_text(json.dumps(d))
        with pytest.raises(CorruptVault, match="cipher"):
            memctl.open_vault(vault_path, passphrase=PASSPHRASE)
    header.write_text(good)
    with memctl.open_vault(vault_path, passphrase=PASSPHRASE):
        pass


def test_no_plaintext_anywhere_on_disk(vault_path: Path) -> None:
    with memctl.open_vault(vault_path, passphrase=PASSPHRASE) as v:
        v.ingest(
            f"my secret is {MARKER}",
            title=f"title {MARKER}",
            tags=[MARKER],
            source=f"file:///{MARKER}.md",
        )
        # still open: the WAL holds the fresh pages
        data = all_vault_bytes(vault_path)
        assert (vault_path / "index.db-wal").exists()
        assert MARKER.encode() not in data
        assert v.recall(MARKER)[0]["title"] == f"title {MARKER}"
    assert MARKER.encode() not in all_vault_bytes(vault_path)


def test_wrong_passphrase(vault_path: Path) -> None:
    with pytest.raises(BadPassphrase, match="wrong passphrase"):
        memctl.open_vault(vault_path, passphrase="nope")


def test_no_vault() -> None:
    with pytest.raises(VaultNotFound):
        memctl.open_vault("/nonexistent/vault", passphrase="x")


def test_locked_without_credentials(vault_path: Path) -> None:
    with pytest.raises(VaultLocked) as info:
        memctl.open_vault(vault_path, credentials=Credentials())
    assert "--passphrase-file" in (info.value.hint or "")


def test_integrity_check_passes_on_a_good_vault(vault) -> None:
    vault.ingest_many([f"note {i}" for i in range(50)])
    assert vault.integrity_check()["ok"]


def test_truncated_index_is_a_clear_error(vault_path: Path) -> None:
    db = vault_path / "index.db"
    db.write_bytes(db.read_bytes()[:100])
    with pytest.raises(CorruptVault, match=r"index\.db"):
        memctl.open_vault(vault_path, passphrase=PASSPHRASE)


def test_flipped_byte_in_index_is_detected(vault_path: Path) -> None:
    with memctl.open_vault(vault_path, passphrase=PASSPHRASE) as v:
        v.ingest_many([f"note {i} " * 20 for i in range(300)])
        v.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db = vault_path / "index.db"
    data = bytearray(db.read_bytes())
    page = int(json.loads((vault_path / "header.json").read_text())["cipher"]["page_size"])
    assert len(data) > 3 * page
    data[page * 2 + 100] ^= 0xFF  # inside page 3
    db.write_bytes(bytes(data))
    with (
        pytest.raises(CorruptVault, match=r"index\.db"),
        memctl.open_vault(vault_path, passphrase=PASSPHRASE) as v,
    ):
        v.integrity_check()


@pytest.mark.parametrize("cut", [0, 10, 200])
def test_truncated_header_is_a_clear_error(vault_path: Path, cut: int) -> None:
    header = vault_path / "header.json"
    header.write_bytes(header.read_bytes()[:cut])
    with pytest.raises(CorruptVault, match=r"header\.json"):
        memctl.open_vault(vault_path, passphrase=PASSPHRASE)


def test_tampered_public_fields_fail_authentication(vault_path: Path) -> None:
    header = vault_path / "header.json"
    d = json.loads(header.read_text())
    d["model"] = {"name": "evil", "dim": 3, "weights_sha256": "00"}
    header.write_text(json.dumps(d))
    with pytest.raises(CorruptVault, match="authentication"):
        memctl.open_vault(vault_path, passphrase=PASSPHRASE)


def test_flipping_any_byte_of_the_wrapped_master_key_fails_cleanly(vault_path: Path) -> None:
    import base64

    header = vault_path / "header.json"
    original = json.loads(header.read_text())
    wrapped = base64.b64decode(original["keyslots"][0]["wrapped"])
    for i in range(0, len(wrapped), 7):
        bad = bytearray(wrapped)
        bad[i] ^= 0x80
        d = json.loads(json.dumps(original))
        d["keyslots"][0]["wrapped"] = base64.b64encode(bytes(bad)).decode()
        header.write_text(json.dumps(d))
        with pytest.raises(BadPassphrase):
            memctl.open_vault(vault_path, passphrase=PASSPHRASE)


def test_keyslot_kdf_downgrade_refused(vault_path: Path) -> None:
    header = vault_path / "header.json"
    d = json.loads(header.read_text())
    d["keyslots"][0]["kdf"]["memory_kib"] = 16
    header.write_text(json.dumps(d))
    with pytest.raises(CorruptVault, match="memory_kib"):
        memctl.open_vault(vault_path, passphrase=PASSPHRASE)


def test_passwd_rewraps_only(vault_path: Path) -> None:
    with memctl.open_vault(vault_path, passphrase=PASSPHRASE) as v:
        rid = v.ingest("keep me")
        db_before = (vault_path / "index.db").read_bytes()
        v.change_passphrase(b"new passphrase")
    with pytest.raises(BadPassphrase):
        memctl.open_vault(vault_path, passphrase=PASSPHRASE)
    with memctl.open_vault(vault_path, passphrase="new passphrase") as v:
        assert v.get(rid)["text"] == "keep me"
    assert (vault_path / "index.db").read_bytes()[:16384] == db_before[:16384]


def test_key_file_slot_lifecycle(vault_path: Path, tmp_path: Path) -> None:
    key = tmp_path / "cron.key"
    with memctl.open_vault(vault_path, passphrase=PASSPHRASE) as v:
        slot = v.add_key_file(key)
        with pytest.raises(UsageError, match="never overwrites"):
            v.add_key_file(key)
    assert oct(key.stat().st_mode & 0o777) == "0o600"
    with memctl.open_vault(vault_path, key_file=key) as v:
        assert {s["id"] for s in v.list_keyslots()} >= {slot}
        assert next(s for s in v.list_keyslots() if s["in_use"])["type"] == "keyfile"
    with memctl.open_vault(vault_path, passphrase=PASSPHRASE) as v:
        v.remove_keyslot(slot)
        only = v.list_keyslots()[0]["id"]
        with pytest.raises(UsageError, match="last keyslot"):
            v.remove_keyslot(only)
    with pytest.raises(BadPassphrase):
        memctl.open_vault(vault_path, key_file=key)


def test_ingest_dedups_and_versions(vault) -> None:
    a = vault.ingest("the same thing")
    assert vault.ingest("the same thing  ") == a
    s = vault.ingest_many([{"text": "v1", "source": "file:///n.md", "locator": ""}])
    assert (s.added, s.updated) == (1, 0)
    s = vault.ingest_many([{"text": "v2", "source": "file:///n.md", "locator": ""}])
    assert (s.added, s.updated) == (0, 1)
    rec = vault.get(s.ids[0], versions=True)
    assert rec["text"] == "v2" and rec["version"] == 2
    assert [v["text"] for v in rec["versions"]] == ["v1"]
    assert vault.recall("v1") == []
    assert vault.status()["records"] == 2


def test_ingest_many_reports_bad_items_and_keeps_good_ones(vault) -> None:
    s = vault.ingest_many(
        [
            {"text": "good"},
            {"text": ""},
            {"text": 5},
            {"text": "ok", "namespace": "bad ns"},
            {"text": "fine", "observed_at": "not a date"},
            {"nope": 1},
            "plain string",
        ]
    )
    assert (s.added, s.failed) == (2, 5)
    assert all("good" not in e for e in s.errors)


def test_recall_filters(vault) -> None:
    vault.ingest("apple pie recipe", namespace="food", tags=["baking"], observed_at="2024-01-05")
    vault.ingest(
        "apple orchard visit",
        namespace="trips",
        observed_at="2024-06-01",
        source="file:///home/me/trips/orchard.md",
    )
    vault.ingest("apple stock price", namespace="work", actor="mcp:claude")
    ids = lambda hits: {h["namespace"] for h in hits}  # noqa: E731
    assert ids(vault.recall("apple")) == {"food", "trips", "work"}
    assert ids(vault.recall("apple", namespace="food")) == {"food"}
    assert ids(vault.recall("apple", tags=["baking"])) == {"food"}
    assert ids(vault.recall("apple", since="2024-03-01", until="2024-12-31")) == {"trips"}
    assert ids(vault.recall("apple", source="file:///home/me/trips/")) == {"trips"}
    assert ids(vault.recall("apple", min_trust="import")) == {"food", "trips"}
    hit = vault.recall("apple", namespace="work")[0]
    for key in (
        "id",
        "text",
        "score",
        "namespace",
        "tags",
        "source",
        "observed_at",
        "ingested_at",
        "trust",
    ):
        assert key in hit
    assert hit["trust"] == 1 and hit["actor"] == "mcp:claude"
    with pytest.raises(UsageError):
        vault.recall("apple", since="2025-01-01", until="2024-01-01")
    with pytest.raises(UsageError):
        vault.recall("apple", limit=0)


def test_get_by_prefix_and_missing(vault) -> None:
    rid = vault.ingest("hello")
    assert vault.get(rid[:12].lower())["id"] == rid
    with pytest.raises(RecordNotFound):
        vault.get("01ZZZZZZZZZZZZZZZZZZZZZZZZ")


def test_list_newest_first(vault) -> None:
    for i in range(5):
        vault.ingest(f"item {i}")
    assert [r["text"] for r in vault.list(limit=3)] == ["item 4", "item 3", "item 2"]


def test_record_keys_are_per_record(vault) -> None:
    a, b = vault.ingest("one"), vault.ingest("two")
    assert vault.record_key(a) != vault.record_key(b)
    assert len(vault.record_key(a)) == 32


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    st.text(max_size=200)
    | st.sampled_from(
        [
            '"',
            "NEAR(",
            "a OR",
            "*",
            "(((",
            ")",
            "foo*bar",
            '"unbalanced',
            "AND NOT",
            "^x",
            "-",
            "\\",
            "col:val",
            "{a b}",
            "\x00",
            "🦓 quokka",
        ]
    )
)
def test_any_query_is_valid(vault, query: str) -> None:
    vault.recall(query)  # never raises


def test_schema_migrations_are_numbered(vault) -> None:
    from memctl.store.schema import SCHEMA_VERSION

    assert vault.conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION


def test_status_has_no_secrets(vault) -> None:
    info = json.dumps(vault.status())
    assert PASSPHRASE not in info
    assert vault.keys.master.hex() not in info
    assert isinstance(vault.status()["records"], int)


def test_files_stay_private_after_writes(vault, vault_path: Path) -> None:
    vault.ingest("x")
    for p in vault_path.rglob("*"):
        if p.is_file():
            assert p.stat().st_mode & 0o077 == 0, p
    assert os.stat(vault_path).st_mode & 0o077 == 0
