"""The command line through CliRunner: round trips, plain vs JSON, exit codes and messages."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from memctl.cli import app
from memctl.errors import ExitCode

from .conftest import PASSPHRASE

runner = CliRunner()


def run(*args: str, input: str | None = None):
    return runner.invoke(app, list(args), input=input, catch_exceptions=False)


@pytest.fixture
def cli_vault(tmp_path: Path, pwfile: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "clivault"
    monkeypatch.setenv("MEMCTL_VAULT", str(path))
    monkeypatch.setenv("MEMCTL_PASSPHRASE_FILE", str(pwfile))
    result = run("init", "--kdf-memory-mib", "8", "--kdf-iterations", "1", "--model", "none")
    assert result.exit_code == 0, result.output
    return path


def test_help_lists_commands() -> None:
    result = run("--help")
    assert result.exit_code == 0
    for cmd in ("init", "ingest", "recall", "get", "list", "status", "passwd", "key"):
        assert cmd in result.output


def test_ingest_recall_round_trip_plain_and_json(cli_vault: Path, tmp_path: Path) -> None:
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "a.md").write_text("# Garden\n\nPlant the tulip bulbs in October.\n")
    (notes / "b.txt").write_text("Renew the passport before the trip to Lisbon.\n")
    (notes / "bin.md").write_bytes(b"\x00\x01\x02binary")
    result = run("ingest", str(notes), "--tag", "home", "--json")
    summary = json.loads(result.stdout)
    assert summary["added"] == 2  # the binary file is reported and skipped
    assert "binary" in result.stderr

    again = json.loads(run("ingest", str(notes / "a.md"), "--json").stdout)
    assert (again["added"], again["skipped"]) == (0, 1)

    plain = run("recall", "tulip bulbs")
    assert plain.exit_code == 0
    line = plain.stdout.strip().splitlines()[0]
    rid, score, ns, text = line.split("\t")
    assert ns == "default" and "tulip" in text and float(score) >= 0

    hits = json.loads(run("recall", "passport", "--json").stdout)
    assert hits[0]["tags"] == ["home"]
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
        assert key in hits[0]
    jsonl = run("recall", "passport OR tulip", "--jsonl").stdout.strip().splitlines()
    assert len(jsonl) == 2 and all(json.loads(x)["id"] for x in jsonl)

    got = json.loads(run("get", rid, "--json").stdout)
    assert got["id"] == rid and "tulip" in got["text"]
    assert "tulip" in run("get", rid).stdout
    listed = run("list", "--json").stdout
    assert len(json.loads(listed)) == 2


def test_text_and_stdin(cli_vault: Path) -> None:
    r = run("ingest", "--text", "remember the milk", "--namespace", "errands", "--json")
    assert json.loads(r.stdout)["added"] == 1
    r = run("ingest", "-", "--json", input="from stdin with love\n")
    assert json.loads(r.stdout)["added"] == 1
    hits = json.loads(run("recall", "milk", "-n", "errands", "--json").stdout)
    assert hits[0]["namespace"] == "errands"
    assert json.loads(run("recall", "milk", "-n", "default", "--json").stdout) == []


def test_status_json(cli_vault: Path) -> None:
    run("ingest", "--text", "one")
    info = json.loads(run("status", "--json").stdout)
    assert info["records"] == 1 and isinstance(info["records"], int)
    assert info["format_version"] == 1
    assert PASSPHRASE not in run("status").stdout


def test_wrong_passphrase_exit_code(cli_vault: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad"
    bad.write_text("wrong\n")
    r = run("status", "--passphrase-file", str(bad))
    assert r.exit_code == ExitCode.BAD_PASSPHRASE
    assert "wrong passphrase" in r.stderr
    assert "Traceback" not in r.output


def test_missing_vault_exit_code(tmp_path: Path, pwfile: Path) -> None:
    r = run("status", "--vault", str(tmp_path / "nope"), "--passphrase-file", str(pwfile))
    assert r.exit_code == ExitCode.NO_VAULT
    assert "no vault" in r.stderr and "memctl init" in r.stderr


def test_locked_non_interactive(cli_vault: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MEMCTL_PASSPHRASE_FILE")
    r = run("status")
    assert r.exit_code == ExitCode.LOCKED
    assert "--passphrase-file" in r.stderr


def test_corrupt_header_exit_code(cli_vault: Path) -> None:
    (cli_vault / "header.json").write_text("{not json")
    r = run("status")
    assert r.exit_code == ExitCode.CORRUPT
    assert "header.json" in r.stderr and "Traceback" not in r.output


def test_bad_arguments(cli_vault: Path) -> None:
    assert run("recall", "x", "--limit", "0").exit_code == ExitCode.USAGE
    assert run("recall", "x", "--since", "yesterday-ish").exit_code == ExitCode.USAGE
    assert run("recall", "x", "--mode", "psychic").exit_code == ExitCode.USAGE
    assert run("ingest", "/no/such/path").exit_code == ExitCode.USAGE
    r = run("ingest", "--text", "x", "--namespace", "has space")
    assert r.exit_code == ExitCode.PARTIAL and "namespace" in r.stderr
    assert run("get", "01ZZZZZZZZZZZZZZZZZZZZZZZZ").exit_code == ExitCode.NOT_FOUND


def test_key_commands_and_passwd(cli_vault: Path, tmp_path: Path) -> None:
    key = tmp_path / "job.key"
    r = run("key", "add", "--key-file", str(key), "--json")
    assert r.exit_code == 0, r.output
    slot = json.loads(r.stdout)["keyslot"]
    slots = json.loads(run("key", "list", "--json").stdout)
    assert {s["id"] for s in slots} >= {slot}
    assert run("status", "--key-file", str(key)).exit_code == 0
    new = tmp_path / "new-pass"
    new.write_text("another passphrase\n")
    assert run("passwd", "--new-passphrase-file", str(new)).exit_code == 0
    assert run("status").exit_code == ExitCode.BAD_PASSPHRASE
    assert run("status", "--passphrase-file", str(new)).exit_code == 0
    assert run("key", "remove", slot, "--passphrase-file", str(new)).exit_code == 0
    assert run("status", "--key-file", str(key)).exit_code == ExitCode.BAD_PASSPHRASE


def test_root_options_before_command(cli_vault: Path, pwfile: Path, monkeypatch) -> None:
    monkeypatch.delenv("MEMCTL_PASSPHRASE_FILE")
    monkeypatch.delenv("MEMCTL_VAULT")
    r = run("--vault", str(cli_vault), "--passphrase-file", str(pwfile), "status", "--json")
    assert r.exit_code == 0 and json.loads(r.stdout)["records"] == 0
