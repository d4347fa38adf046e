"""Full disks and I/O errors: a clear message and exit 11, nothing acknowledged lost, and
ingest works again once space is back.

Two ways in:

- a real tiny filesystem: an 8 MiB tmpfs (``mount -t tmpfs``, needs root; skipped with the
  reason otherwise), filled with a filler file to leave a chosen amount of free space, so the
  disk runs out wherever that lands — a journal object, the intent file, the WAL;
- injected ``OSError(ENOSPC)`` / SQLITE_FULL at each write point in turn (any user): the
  intent file, the journal's objects and its head reference, SQLite's pages
  (``PRAGMA max_page_count``), and the database COMMIT after the journal commit succeeded.

Each time: ``memctl ingest`` exits 11 (NO_SPACE) with a message that says so and no traceback;
the vault still opens and passes its integrity check with every acknowledged record; and once
the fault is gone, ingest succeeds and ``audit verify`` passes.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

import memctl
from memctl.cli import app
from memctl.errors import ExitCode, NoSpace

from .conftest import PASSPHRASE
from .consistency import assert_clean_stderr, check_whole, child_env, run_cli

NO_SPACE_WORDS = ("disk full", "no space")


def words_file(path: Path, lines: int, seed: int) -> Path:
    """Text with unique words (nothing de-duplicates, nothing compresses)."""
    import random

    rng = random.Random(seed)
    with open(path, "w") as fh:
        for n in range(lines):
            words = " ".join("".join(rng.choices("abcdefghijklmnop", k=8)) for _ in range(60))
            fh.write(f"line {n} zq{seed}l{n} {words}\n")
    return path


def says_no_space(stderr: str) -> bool:
    return any(w in stderr.lower() for w in NO_SPACE_WORDS)


# -- a real tiny filesystem ---------------------------------------------------------------------
@pytest.fixture
def tiny_fs(tmp_path: Path) -> Iterator[Path]:
    mnt = tmp_path / "tiny"
    mnt.mkdir()
    proc = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=8m,mode=0700", "tmpfs", str(mnt)],
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({proc.stderr.strip() or 'not root'})")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True, check=False)


def fill(fs: Path, leave: int) -> Path:
    """Fill ``fs`` with one file, then give back ``leave`` bytes."""
    filler = fs / "filler"
    chunk = b"\xa5" * 65536
    with open(filler, "wb", buffering=0) as fh, contextlib.suppress(OSError):
        while True:
            fh.write(chunk)
            fh.flush()
    size = filler.stat().st_size
    os.truncate(filler, max(0, size - leave))
    return filler


@pytest.mark.parametrize(
    "leave_kib",
    [pytest.param(0, marks=pytest.mark.slow), 48, pytest.param(400, marks=pytest.mark.slow)],
)
def test_ingest_on_a_full_filesystem(tiny_fs: Path, tmp_path: Path, leave_kib: int) -> None:
    vault_path = tiny_fs / "vault"
    memctl.init_vault(
        vault_path, passphrase=PASSPHRASE, kdf_memory_mib=8, kdf_iterations=1, model="hashing-64"
    )
    passfile = tmp_path / "pass"
    passfile.write_text(PASSPHRASE + "\n")
    env = child_env(vault_path, passfile)
    with memctl.open_vault(vault_path, passphrase=PASSPHRASE) as v:
        acked = {v.ingest(f"acknowledged note {i} zqack{i}"): f"zqack{i}" for i in range(5)}

    filler = fill(tiny_fs, leave_kib * 1024)
    before = run_cli(["list", "--json", "--limit", "1000"], env)
    big = words_file(tmp_path / "big.txt", 120, seed=leave_kib)
    failed = run_cli(["ingest", str(big)], env)
    assert_clean_stderr(failed.stderr)
    assert failed.returncode == ExitCode.NO_SPACE, (failed.returncode, failed.stderr)
    assert failed.stderr.startswith("memctl: error: "), failed.stderr
    # (the wording for each write point is checked by test_injected_no_space)

    # Reading works after the failed ingest whenever it worked before it (with no byte free,
    # SQLite cannot even create index.db-shm: then both fail, cleanly, with exit 11).
    after = run_cli(["list", "--json", "--limit", "1000"], env)
    assert_clean_stderr(after.stderr)
    if before.returncode == 0:
        assert after.returncode == 0, after.stderr
        assert acked.keys() <= {r["id"] for r in json.loads(after.stdout)}
    else:
        assert before.returncode == after.returncode == ExitCode.NO_SPACE, before.stderr
        assert says_no_space(after.stderr)

    filler.unlink()  # space is back
    with memctl.open_vault(vault_path, passphrase=PASSPHRASE) as v:
        check_whole(v)
        assert all(v.get(rid)["id"] == rid for rid in acked)
    again = run_cli(["ingest", str(big), "--json"], env)
    assert_clean_stderr(again.stderr)
    assert again.returncode == 0, again.stderr
    verify = run_cli(["audit", "verify"], env)
    assert verify.returncode == 0, verify.stdout + verify.stderr
    with memctl.open_vault(vault_path, passphrase=PASSPHRASE) as v:
        check_whole(v)
        assert {rid for rid in acked if v.get(rid)} == set(acked)
        assert v.recall("zq0l0" if leave_kib == 0 else f"zq{leave_kib}l119", mode="keyword")


# -- injected faults ------------------------------------------------------------------------
runner = CliRunner()


def enospc(*_a: Any, **_k: Any) -> None:
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


class FailingCommit:
    """A connection whose COMMIT fails as SQLite does on a full disk; all else passes through."""

    def __init__(self, conn: Any) -> None:
        self._conn = conn

    def execute(self, sql: str, *args: Any) -> Any:
        if sql.strip().upper() == "COMMIT":
            import sqlcipher3

            self._conn.execute("ROLLBACK")
            raise sqlcipher3.OperationalError("database or disk is full")
        return self._conn.execute(sql, *args)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._conn, name)


def inject(point: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from memctl.journal import store
    from memctl.store import db as dbmod
    from memctl.vault import header

    if point == "intent":  # the crash-window marker, written before the journal commit
        monkeypatch.setattr(header, "write_atomic", enospc)
    elif point == "journal-objects":
        monkeypatch.setattr(store, "_write_file", enospc)
    elif point == "journal-ref":
        monkeypatch.setattr(store, "update_ref", enospc)
    elif point in ("sqlite", "db-commit"):
        real = dbmod.connect

        def connect(*a: Any, **k: Any) -> Any:
            conn = real(*a, **k)
            if point == "db-commit":
                return FailingCommit(conn)
            pages = conn.execute("PRAGMA page_count").fetchone()[0]
            conn.execute(f"PRAGMA max_page_count = {pages}")
            return conn

        monkeypatch.setattr(dbmod, "connect", connect)
    else:
        raise AssertionError(point)


POINTS = [
    "intent",
    "journal-objects",
    "journal-ref",
    "sqlite",
    "db-commit",
]


@pytest.fixture
def cli_env(vault_path: Path, pwfile: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("MEMCTL_VAULT", str(vault_path))
    monkeypatch.setenv("MEMCTL_PASSPHRASE_FILE", str(pwfile))
    monkeypatch.setenv("MEMCTL_NO_AGENT", "1")
    return vault_path


@pytest.mark.parametrize("point", POINTS)
def test_injected_no_space(
    point: str, cli_env: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with memctl.open_vault(cli_env, passphrase=PASSPHRASE) as v:
        acked = [v.ingest(f"acknowledged note {i} zqack{i}") for i in range(3)]
        # The library raises NoSpace (exit 11), never a bare OSError or SQLite error.
        with monkeypatch.context() as m:
            inject(point, m)
            if point in ("sqlite", "db-commit"):
                v.close()
                from memctl.store import db as dbmod

                v.conn = dbmod.connect(
                    cli_env / "index.db", v.keys.sqlcipher, cipher=v.header.cipher
                )
            with pytest.raises(NoSpace) as info:
                v.ingest_many([f"bulk {i} zqbulk{i} " + "filler words " * 400 for i in range(40)])
            assert info.value.exit_code == ExitCode.NO_SPACE
    with memctl.open_vault(cli_env, passphrase=PASSPHRASE) as v:
        v.ingest("between the faults zqbetween")  # one failure at a time (two: the test below)
    big = words_file(tmp_path / "big.txt", 60, seed=1)
    with monkeypatch.context() as m:
        inject(point, m)
        result = runner.invoke(app, ["ingest", str(big)])
    assert not isinstance(result.exception, Exception) or isinstance(
        result.exception, SystemExit
    ), result.exception
    assert result.exit_code == ExitCode.NO_SPACE, (result.exit_code, result.output)
    assert says_no_space(result.stderr), result.stderr
    assert_clean_stderr(result.stderr)

    # The fault is gone: everything acknowledged is there, ingest works, journal agrees.
    result = runner.invoke(app, ["ingest", str(big), "--json"])
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["audit", "verify"])
    assert result.exit_code == 0, result.output
    with memctl.open_vault(cli_env, passphrase=PASSPHRASE) as v:
        check_whole(v)
        assert all(v.get(rid)["id"] == rid for rid in acked)
        assert v.recall("zq1l59", mode="keyword")


def test_two_failed_writes_in_a_row_then_space_is_back(
    cli_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with memctl.open_vault(cli_env, passphrase=PASSPHRASE) as v:
        acked = v.ingest("acknowledged before the disk filled zqack")
    for attempt in range(2):  # cron retries while the disk is still full
        with monkeypatch.context() as m:
            inject("db-commit", m)
            result = runner.invoke(app, ["ingest", "--text", f"retry {attempt} zqretry{attempt}"])
        assert result.exit_code == ExitCode.NO_SPACE, result.output
    result = runner.invoke(app, ["ingest", "--text", "space is back zqback"])
    assert result.exit_code == 0, result.output
    with memctl.open_vault(cli_env, passphrase=PASSPHRASE) as v:
        assert v.get(acked)
        assert v.audit_verify()["ok"]
