"""The sealed inbox: envelopes (pure crypto), key-less writes, import on unlock, refusals."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

import memctl
from memctl.cli import app
from memctl.crypto import seal as sl
from memctl.errors import AuthenticationError, ExitCode
from memctl.ingest import inbox
from memctl.ingest.pipeline import IngestConfig, run_seal

from .conftest import FAST_KDF, PASSPHRASE

runner = CliRunner()

# Known answer: recipient key 01..20, ephemeral key 65..84, nonce 00..0b, vault id zero.
KAT_RECIPIENT = bytes(range(1, 33))
KAT_EPHEMERAL = bytes(range(101, 133))
KAT_NONCE = bytes(range(12))
KAT_VAULT = bytes(16)
KAT_ENVELOPE = bytes.fromhex(
    "4d43494201000000000000000000000000000000005714769d116bf76436ae74bc793d2c30ad1903c59a"
    "c5273805c7e2698b410c36000102030405060708090a0b4f3e0c3b3c898627b7a06edfc2ddafc97fea9a0b"
    "802d42350a108d"
)


# -- memctl.crypto.seal ------------------------------------------------------------------------
def test_known_answer_and_independent_derivation() -> None:
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM
    from cryptography.hazmat.primitives.kdf.hkdf import HKDF

    public = sl.public_key_of(KAT_RECIPIENT)
    env = sl.seal(
        public,
        b"hello inbox",
        vault_id=KAT_VAULT,
        ephemeral_private=KAT_EPHEMERAL,
        nonce=KAT_NONCE,
    )
    assert env == KAT_ENVELOPE
    # Recompute from the documented format with cryptography's primitives directly.
    eph = X25519PrivateKey.from_private_bytes(KAT_EPHEMERAL)
    eph_pub = sl.public_key_of(KAT_EPHEMERAL)
    shared = eph.exchange(X25519PrivateKey.from_private_bytes(KAT_RECIPIENT).public_key())
    key = HKDF(hashes.SHA256(), 32, salt=eph_pub + public, info=b"memctl/v1/inbox-seal").derive(
        shared
    )
    header = b"MCIB\x01" + KAT_VAULT + eph_pub
    assert env == header + KAT_NONCE + AESGCM(key).encrypt(KAT_NONCE, b"hello inbox", header)
    assert sl.open_envelope(KAT_RECIPIENT, env, vault_id=KAT_VAULT) == b"hello inbox"


def test_round_trip_is_randomised() -> None:
    public = sl.public_key_of(KAT_RECIPIENT)
    a = sl.seal(public, b"same", vault_id=KAT_VAULT)
    b = sl.seal(public, b"same", vault_id=KAT_VAULT)
    assert a != b and a[21:53] != b[21:53]  # fresh ephemeral key each time
    assert sl.open_envelope(KAT_RECIPIENT, a, vault_id=KAT_VAULT) == b"same"
    assert sl.envelope_vault_id(a) == KAT_VAULT and sl.envelope_vault_id(b"junk") is None


def test_flipping_any_bit_fails_authentication() -> None:
    env = KAT_ENVELOPE
    for i in range(len(env) * 8):
        bad = bytearray(env)
        bad[i // 8] ^= 1 << (i % 8)
        with pytest.raises(AuthenticationError):
            sl.open_envelope(KAT_RECIPIENT, bytes(bad), vault_id=KAT_VAULT)


@pytest.mark.parametrize(
    ("mutate", "reason"),
    [
        (lambda e: e[:40], "truncated"),
        (lambda e: e[:-1], "authentication"),
        (lambda e: b"XXXX" + e[4:], "not a memctl envelope"),
        (lambda e: e[:4] + b"\x02" + e[5:], "version 2"),
        (lambda e: e[:5] + b"\x01" * 16 + e[21:], "another vault"),
        (lambda e: b"", "not a memctl envelope"),
    ],
)
def test_malformed_envelopes_are_refused_with_a_reason(mutate: Any, reason: str) -> None:
    with pytest.raises(AuthenticationError, match=reason):
        sl.open_envelope(KAT_RECIPIENT, mutate(KAT_ENVELOPE), vault_id=KAT_VAULT)


def test_wrong_private_key_fails() -> None:
    with pytest.raises(AuthenticationError, match="authentication"):
        sl.open_envelope(bytes(range(2, 34)), KAT_ENVELOPE, vault_id=KAT_VAULT)


def test_bad_inputs_to_seal() -> None:
    with pytest.raises(ValueError):
        sl.seal(b"short", b"x", vault_id=KAT_VAULT)
    with pytest.raises(ValueError):
        sl.seal(sl.public_key_of(KAT_RECIPIENT), b"x", vault_id=b"short")
    with pytest.raises(ValueError, match="low-order"):
        sl.seal(bytes(32), b"x", vault_id=KAT_VAULT)


# -- the inbox on disk --------------------------------------------------------------------------
def envelopes(vault_path: Path) -> list[Path]:
    return sorted((vault_path / "inbox").glob("*.env"))


def seal_text(vault_path: Path, text: str, **kw: Any) -> list[Path]:
    _, paths = run_seal(vault_path, [], text=text, config=IngestConfig(**kw))
    return paths


def open_v(vault_path: Path) -> Any:
    return memctl.open_vault(vault_path, passphrase=PASSPHRASE, actor="cli")


def test_sealing_needs_no_key_and_leaves_no_plaintext(vault_path: Path) -> None:
    (path,) = seal_text(vault_path, "MARKER-7Q sealed while locked", tags=["jobs"])
    assert path.parent == vault_path / "inbox" and path.suffix == ".env"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert len(path.stem) == 26  # a ULID
    data = path.read_bytes()
    for needle in (b"MARKER-7Q", b"sealed while", b"jobs", b"inbox", b"default"):
        assert needle not in data
    assert not [p for p in (vault_path / "inbox").iterdir() if p.name.endswith(".tmp")]


def test_next_unlock_imports_with_actor_and_source_then_removes(vault_path: Path) -> None:
    seal_text(vault_path, "first sealed note", source="job://nightly", namespace="inboxed")
    seal_text(vault_path, "from the backup job", actor="cron:backup")
    assert inbox.pending(vault_path)["pending"] == 2
    with open_v(vault_path) as v:
        got = {r["text"]: r for r in v.list(limit=10, namespace=None)}
    assert envelopes(vault_path) == []
    first = got["first sealed note"]
    assert (first["actor"], first["trust_name"], first["source"], first["namespace"]) == (
        "inbox",
        "import",
        "job://nightly",
        "inboxed",
    )
    assert got["from the backup job"]["actor"] == "cron:backup"
    with open_v(vault_path) as v:  # nothing imported twice
        assert len(v.list(limit=10, namespace=None)) == 2


def test_sealed_files_keep_their_identity_and_version_on_import(
    vault_path: Path, tmp_path: Path
) -> None:
    notes = tmp_path / "notes"
    notes.mkdir()
    note = notes / "plan.md"
    note.write_text("# Plan\n\nsow peas\n")
    report, paths = run_seal(vault_path, [str(notes)])
    assert report.sealed == 1 and len(paths) == 1
    note.write_text("# Plan\n\nsow peas and beans\n")
    run_seal(vault_path, [str(notes)], config=IngestConfig(actor="cron:notes"))
    with open_v(vault_path) as v:
        (rec,) = v.list(limit=10)
        assert rec["locator"] == "plan.md#plan" and rec["plugin"] == "markdown"
        assert rec["version"] == 2 and "beans" in rec["text"]  # imported in sealing order
        assert rec["source"] == note.resolve().as_uri()


def test_tampered_foreign_and_forged_envelopes_are_set_aside(
    vault_path: Path, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    (good,) = seal_text(vault_path, "the good one")
    (tampered,) = seal_text(vault_path, "tampered one")
    raw = bytearray(tampered.read_bytes())
    raw[-3] ^= 0x40
    tampered.write_bytes(bytes(raw))
    other = tmp_path / "other-vault"
    memctl.init_vault(other, passphrase=PASSPHRASE, **FAST_KDF)
    (foreign,) = seal_text(other, "meant for another vault")
    moved_foreign = vault_path / "inbox" / foreign.name
    os.replace(foreign, moved_foreign)
    header = inbox.public_header(vault_path)

    def forge(payload: dict[str, Any]) -> Path:  # authentic crypto, anyone can do it
        return inbox.seal_payload(vault_path, payload, header=header)

    bad_actor = forge({"format": inbox.PAYLOAD_FORMAT, "actor": "cli", "items": [{"text": "x"}]})
    bad_trust = forge(
        {
            "format": inbox.PAYLOAD_FORMAT,
            "actor": "inbox",
            "items": [{"text": "fake person note", "trust": "person"}],
        }
    )
    bad_item = forge(
        {"format": inbox.PAYLOAD_FORMAT, "actor": "inbox", "items": [{"text": "ok"}, {"text": ""}]}
    )
    capfd.readouterr()
    with open_v(vault_path) as v:
        texts = [r["text"] for r in v.list(limit=10)]
    err = capfd.readouterr().err
    assert texts == ["the good one"]
    assert not good.exists() and envelopes(vault_path) == []
    rejected = sorted(p.name for p in (vault_path / "inbox" / "rejected").iterdir())
    assert rejected == sorted(
        p.name for p in (tampered, moved_foreign, bad_actor, bad_trust, bad_item)
    )
    assert f"rejected {tampered}" in err and "authentication" in err
    assert "another vault" in err and "actor" in err and "may not set" in err
    assert "item 2" in err
    for secret in ("tampered one", "fake person", "meant for another"):
        assert secret not in err
    assert inbox.pending(vault_path)["rejected"] == 5


def test_empty_inbox_is_a_no_op(vault: Any, vault_path: Path) -> None:
    assert inbox.import_pending(vault) is None
    (vault_path / "inbox" / ".crashed.tmp").write_bytes(b"half")
    assert inbox.import_pending(vault) is None  # temp files are not envelopes


def test_invalid_items_are_refused_before_sealing(vault_path: Path) -> None:
    report, paths = run_seal(vault_path, [], text="x", config=IngestConfig(namespace="has space"))
    assert report.failed == 1 and paths == [] and envelopes(vault_path) == []
    with pytest.raises(Exception, match="prune"):
        run_seal(vault_path, [], text="x", config=IngestConfig(prune=True))
    with pytest.raises(Exception, match="inbox or cron"):
        run_seal(vault_path, [], text="x", config=IngestConfig(actor="mcp:evil"))


# -- the command line --------------------------------------------------------------------------
def cli(*args: str, input: str | None = None) -> Any:
    return runner.invoke(app, list(args), input=input, catch_exceptions=False)


def test_cli_inbox_add_list_and_import_on_any_unlock(
    vault_path: Path, pwfile: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("MEMCTL_VAULT", str(vault_path))  # and no passphrase anywhere
    r = cli("inbox", "add", "--text", "parcel arrives Tuesday", "--tag", "home", "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["sealed"] == 1
    assert cli("inbox", "add", "-", input="note from stdin\n").exit_code == 0
    notes = tmp_path / "n"
    notes.mkdir()
    (notes / "x.md").write_text("# X\n\nsealed by ingest\n")
    r = cli("ingest", "--seal", "--job", "nightly", str(notes), "--json")
    assert r.exit_code == 0 and json.loads(r.stdout)["sealed"] == 1
    listed = json.loads(cli("inbox", "list", "--json").stdout)
    assert (listed["pending"], listed["rejected"]) == (3, 0) and listed["oldest"]
    assert "pending:  3 envelope(s)" in cli("inbox", "list").stdout
    assert cli("recall", "parcel").exit_code != 0  # locked: no secret given

    monkeypatch.setenv("MEMCTL_PASSPHRASE_FILE", str(pwfile))
    hits = json.loads(cli("recall", "parcel OR sealed OR stdin", "--json").stdout)
    assert {h["actor"] for h in hits} == {"inbox", "cron:nightly"}
    assert json.loads(cli("inbox", "list", "--json").stdout)["pending"] == 0
    r = cli("inbox", "import", "--json")
    assert json.loads(r.stdout) == {"imported": 0, "rejected": 0, "pending": 0}


def test_cli_inbox_import_reports_rejections(
    vault_path: Path, pwfile: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MEMCTL_VAULT", str(vault_path))
    monkeypatch.setenv("MEMCTL_PASSPHRASE_FILE", str(pwfile))
    (vault_path / "inbox" / "01ARZ3NDEKTSV4RRFFQ69G5FAV.env").write_bytes(b"garbage")
    seal_text(vault_path, "fine")
    r = cli("inbox", "import")
    assert r.exit_code == ExitCode.PARTIAL
    assert "imported 1 envelope(s), rejected 1" in r.stderr and "not a memctl envelope" in r.stderr


def test_cli_seal_refuses_prune_and_a_missing_vault(tmp_path: Path) -> None:
    r = cli("--vault", str(tmp_path / "none"), "inbox", "add", "--text", "x")
    assert r.exit_code == ExitCode.NO_VAULT
    r = cli("--vault", str(tmp_path / "none"), "ingest", "--seal", "--prune", str(tmp_path))
    assert r.exit_code in (ExitCode.USAGE, ExitCode.NO_VAULT)
