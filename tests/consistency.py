"""Checks shared by the reliability tests: is a vault whole, and did a process leak anything?

``check_whole(vault)`` is the "nothing is half-present" check run after every crash, at the end
of the concurrency run and after every step of the state machine: every record row has its
wrapped data key, its FTS5 entry (FTS5's own ``integrity-check`` plus a MATCH on the record's
own token) and — in a vault with a model — exactly one stored vector (or, after an erase, its
rowid in the re-embedding queue); nothing exists without its record; SQLCipher and SQLite
integrity checks pass.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

MEMCTL = Path(sys.executable).with_name("memctl")
TOKEN = re.compile(r"\bzq[0-9a-z]+\b")
LEAK_MARKERS = ("Traceback", "database is locked", "sqlite3.", "sqlcipher3.")


def check_whole(vault: Any, *, tokens: bool = True) -> dict[str, int]:
    """Raise AssertionError naming what is half-present; return counts when all is whole."""
    conn = vault.conn
    vault.integrity_check()
    # FTS5 compares its index with the external content table (records) row by row.
    conn.execute("INSERT INTO records_fts(records_fts) VALUES('integrity-check')")
    rows = conn.execute("SELECT rowid, id, body FROM records").fetchall()
    rowids = {r for r, _, _ in rows}
    no_key = conn.execute(
        "SELECT count(*) FROM records r LEFT JOIN record_keys k ON k.record_rowid = r.rowid "
        "WHERE k.record_rowid IS NULL"
    ).fetchone()[0]
    assert no_key == 0, f"{no_key} record(s) without a data key"
    orphan_keys = conn.execute(
        "SELECT count(*) FROM record_keys k LEFT JOIN records r ON r.rowid = k.record_rowid "
        "WHERE r.rowid IS NULL"
    ).fetchone()[0]
    assert orphan_keys == 0, f"{orphan_keys} data key(s) without a record"
    for table in ("record_tags", "record_versions"):
        orphans = conn.execute(
            f"SELECT count(*) FROM {table} t LEFT JOIN records r ON r.rowid = t.record_rowid "
            "WHERE r.rowid IS NULL"
        ).fetchone()[0]
        assert orphans == 0, f"{orphans} row(s) of {table} without a record"
    for _rowid, rid, _body in rows:
        assert vault.record_key(rid) is not None, f"record {rid}: data key does not unwrap"
    if tokens:
        for rowid, rid, body in rows:
            for tok in TOKEN.findall(body or "")[:1]:
                found = {
                    r
                    for (r,) in conn.execute(
                        "SELECT rowid FROM records_fts WHERE records_fts MATCH ?", (f'"{tok}"',)
                    )
                }
                assert rowid in found, f"record {rid}: not in the full-text index"
    vectors = 0
    if vault.header.model:
        import numpy as np

        from memctl.erase import reembed_queue

        store = vault.vectors
        stored = {int(r) for r in store.rowids()}
        # an erase drops the with-context vectors that embedded erased text and queues them
        queued = set(reembed_queue(vault))
        assert queued <= rowids, f"{len(queued - rowids)} queued rowid(s) without a record"
        assert stored == rowids - (queued - stored), (
            f"vectors and records differ: {len(rowids - stored - queued)} record(s) without a "
            f"vector (not queued for re-embedding), {len(stored - rowids)} vector(s) without a "
            "record"
        )
        for rowid in stored:
            vec = store.get(rowid)
            assert vec is not None and float(np.linalg.norm(vec)) > 0.5, f"rowid {rowid}: vector"
        vectors = len(stored)
    return {"records": len(rows), "vectors": vectors}


def child_env(vault: Path, passfile: Path | None, **extra: str) -> dict[str, str]:
    """A minimal environment for a memctl child: paths only, never a secret."""
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": os.environ.get("HOME", "/tmp"),
        "XDG_RUNTIME_DIR": os.environ.get("XDG_RUNTIME_DIR", "/tmp"),
        "NO_COLOR": "1",
        "HF_HUB_OFFLINE": "1",
        "MEMCTL_VAULT": str(vault),
        "MEMCTL_NO_AGENT": "1",
    }
    if os.environ.get("PYTHONPATH"):  # e.g. testing a copy of the tree against this venv
        env["PYTHONPATH"] = os.environ["PYTHONPATH"]
    if passfile is not None:
        env["MEMCTL_PASSPHRASE_FILE"] = str(passfile)
    env.update(extra)
    return env


def run_cli(
    args: list[str], env: dict[str, str], *, stdin: bytes | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """Run the installed ``memctl`` in a subprocess, like a shell or cron would."""
    return subprocess.run(
        [str(MEMCTL), *args],
        env=env,
        input=stdin.decode() if stdin is not None else None,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def assert_clean_stderr(text: str, what: str = "stderr") -> None:
    """No traceback, no raw SQLite error, no "database is locked" ever reaches a user."""
    for marker in LEAK_MARKERS:
        assert marker not in text, f"{what} shows {marker!r}:\n{text[-2000:]}"
