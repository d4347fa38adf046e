"""Backups: an encrypted, consistent online copy of a vault, and restoring one.

The copy is taken inside a write transaction (``BEGIN IMMEDIATE``), so no writer can commit to
the database or the journal meanwhile: the database pages (SQLite's online backup API, still
encrypted with the same key) and the journal (a bare git clone of its ``main`` ref) are from
the same instant. The header is copied as is. A backup is a vault directory: restoring copies
it to a new place, opens it with the passphrase and runs ``audit verify``.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

from memctl.errors import CorruptVault, UsageError, VaultExists

if TYPE_CHECKING:
    from memctl.vault.core import Vault
    from memctl.vault.unlock import Credentials


def backup(vault: Vault, dest: Path) -> dict[str, Any]:
    from memctl.store import db as dbmod
    from memctl.vault.core import INDEX_NAME
    from memctl.vault.header import HEADER_NAME

    dest = Path(dest).expanduser()
    if dest.exists() and any(dest.iterdir()):
        raise VaultExists(f"{dest} exists and is not empty; choose a new directory")
    dest.mkdir(mode=0o700, parents=True, exist_ok=True)
    try:
        # A second connection holds the write lock so no writer commits to the database or the
        # journal meanwhile; the copy itself reads through the vault's own connection.
        cipher = vault.header.cipher
        blocker = dbmod.connect(vault.path / INDEX_NAME, vault.keys.sqlcipher, cipher=cipher)
        try:
            with vault.lock():
                blocker.execute("BEGIN IMMEDIATE")
                target = dbmod.connect(
                    dest / INDEX_NAME, vault.keys.sqlcipher, cipher=cipher, create=True
                )
                try:
                    vault.conn.backup(target)
                    target.execute("PRAGMA wal_checkpoint(TRUNCATE)")
                    records = target.execute("SELECT count(*) FROM records").fetchone()[0]
                finally:
                    target.close()
                _copy_journal(vault.path / "journal", dest / "journal")
                shutil.copy2(vault.path / HEADER_NAME, dest / HEADER_NAME)
                os.chmod(dest / HEADER_NAME, 0o600)
        finally:
            blocker.close()
        (dest / "inbox").mkdir(mode=0o700, exist_ok=True)
    except BaseException:
        shutil.rmtree(dest, ignore_errors=True)
        raise
    return {"backup": str(dest), "records": records, "journal_seq": vault.history.journal.seq()}


def _copy_journal(src: Path, dest: Path) -> None:
    """A bare repository with exactly the objects reachable from ``main`` (packed)."""
    import subprocess

    from memctl.vault.history import private_umask

    with private_umask():
        subprocess.run(
            ["git", "clone", "--quiet", "--bare", "--no-local", str(src), str(dest)],
            check=True,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        # keep the journal's own config (format marker, no reflog, no auto-gc, no remote)
        shutil.copy2(src / "config", dest / "config")


def restore(src: Path, target: Path | None, creds: Credentials) -> dict[str, Any]:
    from memctl.vault.core import INDEX_NAME, open_vault, resolve_path
    from memctl.vault.header import HEADER_NAME

    src = Path(src).expanduser()
    if not (src / HEADER_NAME).exists() or not (src / INDEX_NAME).exists():
        raise UsageError(f"{src} is not a memctl backup (no header.json / index.db)")
    vault = resolve_path(target)
    if vault.exists() and any(vault.iterdir()):
        raise VaultExists(f"{vault} exists and is not empty; restore into a new directory")
    vault.parent.mkdir(parents=True, exist_ok=True)
    shutil.copytree(src, vault, dirs_exist_ok=True)
    for root, _dirs, files in os.walk(vault):
        os.chmod(root, 0o700)
        for f in files:
            os.chmod(os.path.join(root, f), 0o600)
    try:
        with open_vault(vault, credentials=creds) as v:
            report = v.audit_verify()
            if not report["ok"]:
                raise CorruptVault(
                    "the restored vault fails verification: " + report["problems"][0]
                )
            return {"vault": str(vault), "records": report["records"], "verify": report}
    except BaseException:
        shutil.rmtree(vault, ignore_errors=True)
        raise
