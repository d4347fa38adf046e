"""Crash safety: a child ingesting is SIGKILLed at random moments; nothing acknowledged is lost.

After every kill the vault must open, pass SQLCipher's and SQLite's integrity checks, hold
every batch the child acknowledged (and the batch in flight either whole or not at all), hold
nothing half-present (a row without its FTS entry, vector, data key or journal events), and
``audit_verify()`` must pass — or ``audit_repair()`` must bring journal and database back into
agreement without losing any acknowledged record.

A crash that leaves the journal one commit ahead is repaired at once by ``audit_repair()``
(with ``MEMCTL_CRASH_LEAVE=1``, every other one is instead left for the next child, whose first
write voids it — the ``reconcile`` path — and the repair is checked on a copy). Deterministic
crash points (``MEMCTL_CRASH_AT``, see tests/crash_child.py) pin down each window, the
reconcile path included.

The fast suite runs 10 random kills; ``-m slow`` runs 200 (figures in docs/reliability.md).
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

import memctl

from .conftest import PASSPHRASE
from .consistency import assert_clean_stderr, check_whole
from .crash_child import POOL_SOURCE, batch_items

CHILD = Path(__file__).with_name("crash_child.py")
SIZE = 4
CRASH_PROBLEM = "never committed (a crash)"
# Leave every other crash for the next child's write to void (instead of audit_repair at
# once). Off by default: a second kill inside that write hits the known bug of
# test_second_crash_while_voiding_the_first_is_repairable (see docs/reliability.md).
LEAVE_CRASHES = os.environ.get("MEMCTL_CRASH_LEAVE") == "1"


@dataclass
class Run:
    acked: list[tuple[int, list[str]]] = field(default_factory=list)
    ready: bool = False
    returncode: int | None = None
    stderr: str = ""
    killed: bool = False


@dataclass
class Model:
    """What the vault must hold: (source, locator) -> (id, text, version)."""

    items: dict[tuple[str, str], tuple[str, str, int]] = field(default_factory=dict)

    def apply(self, seed: int, b: int, ids: list[str] | None, db: dict | None = None) -> None:
        """Batch ``b`` took effect; its ids come from its ack, or from the database."""
        for j, item in enumerate(batch_items(seed, b, SIZE)):
            key = (item["source"], item["locator"])
            old = self.items.get(key)
            rid = ids[j] if ids is not None else db[key][0] if db else None
            if old is not None:
                assert rid in (None, old[0]), f"an update of {key} got a new id"
                self.items[key] = (old[0], item["text"], old[2] + 1)
            else:
                assert rid is not None
                self.items[key] = (rid, item["text"], 1)


class Harness:
    def __init__(self, tmp_path: Path, *, model: str | None = "hashing-64") -> None:
        self.path = tmp_path / "vault"
        memctl.init_vault(
            self.path, passphrase=PASSPHRASE, kdf_memory_mib=8, kdf_iterations=1, model=model
        )
        self.passfile = tmp_path / "passphrase"
        self.passfile.write_text(PASSPHRASE + "\n")
        os.chmod(self.passfile, 0o600)
        self.tmp = tmp_path
        self.model = Model()
        self.stats: Counter[str] = Counter()

    # -- the child --------------------------------------------------------------------------
    def spawn(self, seed: int, *, crash_at: str | None = None, batches: int = 100_000) -> Any:
        env = {k: v for k, v in os.environ.items() if not k.startswith("MEMCTL_")}
        env["MEMCTL_NO_AGENT"] = "1"
        if crash_at:
            env["MEMCTL_CRASH_AT"] = crash_at
        return subprocess.Popen(
            [
                sys.executable,
                str(CHILD),
                str(self.path),
                str(self.passfile),
                str(seed),
                "--size",
                str(SIZE),
                "--batches",
                str(batches),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )

    def run(
        self,
        seed: int,
        *,
        kill_after: float | None = None,
        before_ready: bool = False,
        crash_at: str | None = None,
        batches: int = 100_000,
    ) -> Run:
        """Run a child; SIGKILL it ``kill_after`` s after it is ready (or after spawning)."""
        proc = self.spawn(seed, crash_at=crash_at, batches=batches)
        run = Run()
        ready = threading.Event()

        def read() -> None:
            for line in proc.stdout:
                if not line.endswith("\n"):
                    break  # cut short by the kill: not an acknowledgement
                parts = line.split()
                if parts[:1] == ["ready"]:
                    run.ready = True
                    ready.set()
                elif parts[:1] == ["ack"]:
                    run.acked.append((int(parts[1]), parts[2:]))
            ready.set()

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        if kill_after is not None:
            if not before_ready:
                assert ready.wait(60), "the child never became ready"
            time.sleep(kill_after)
            if proc.poll() is None:
                os.kill(proc.pid, signal.SIGKILL)
                run.killed = True
        run.returncode = proc.wait(timeout=120)
        reader.join(10)
        run.stderr = proc.stderr.read()
        proc.stderr.close()
        if not run.killed and run.returncode == -signal.SIGKILL:
            run.killed = True  # killed itself at a crash point
        assert run.killed or run.returncode == 0, f"child failed on its own:\n{run.stderr}"
        assert_clean_stderr(run.stderr, "the child's stderr")
        return run

    # -- the checks ----------------------------------------------------------------------------
    def check(self, seed: int, run: Run, *, leave_crash: bool = False) -> str:
        """Every check of the module docstring. Returns what state the kill left."""
        for b, ids in run.acked:
            self.model.apply(seed, b, ids)
        inflight = run.acked[-1][0] + 1 if run.acked else 0
        with memctl.open_vault(self.path, passphrase=PASSPHRASE) as v:
            whole = check_whole(v)
            db = self._db_items(v)
            # The batch in flight is all there or not at all.
            present = [
                db.get((it["source"], it["locator"]), (None, None, 0))[1] == it["text"]
                for it in batch_items(seed, inflight, SIZE)
            ]
            if run.ready and any(present):
                assert all(present), f"batch {inflight} half-present: {present}"
                self.model.apply(seed, inflight, None, db)
                state = "in-flight batch committed, ack lost"
            else:
                state = "clean"
            # Nothing lost, nothing extra, nothing changed.
            assert db == self.model.items
            assert whole["records"] == len(self.model.items)
            report = v.audit_verify()
            if not report["ok"]:
                crash = any(CRASH_PROBLEM in p for p in report["problems"])
                state = "journal ahead (crash mid-write)" if crash else "verify failed"
                if crash and leave_crash:
                    self._repair_copy(v)
                    return state + ", left for the next writer"
                result = v.audit_repair()
                assert result["ok"], result
                report = v.audit_verify()
                assert report["ok"], report["problems"]
                assert self._db_items(v) == self.model.items
                state += ", repaired"
        return state

    def _repair_copy(self, v: Any) -> None:
        """Repair a copy of the vault (the original is left for the next writer's reconcile)."""
        copy = self.tmp / "repair-copy"
        shutil.rmtree(copy, ignore_errors=True)
        shutil.copytree(self.path, copy)
        with memctl.open_vault(copy, passphrase=PASSPHRASE) as c:
            assert c.audit_repair()["ok"]
            report = c.audit_verify()
            assert report["ok"], report["problems"]
            assert self._db_items(c) == self.model.items
        shutil.rmtree(copy)

    @staticmethod
    def _db_items(v: Any) -> dict[tuple[str, str], tuple[str, str, int]]:
        return {
            (s, loc): (rid, body, ver)
            for rid, s, loc, body, ver in v.conn.execute(
                "SELECT id, source, locator, body, version FROM records"
            )
        }


def random_kills(tmp_path: Path, iterations: int, seed: int) -> Counter[str]:
    rng = random.Random(seed)
    h = Harness(tmp_path)
    for i in range(iterations):
        child_seed = seed * 10_000 + i
        if rng.random() < 0.1:  # while starting: unlocking, importing, migrating
            run = h.run(child_seed, kill_after=rng.uniform(0.0, 0.6), before_ready=True)
        else:
            run = h.run(child_seed, kill_after=rng.uniform(0.0, 0.8))
        leave = LEAVE_CRASHES and i % 2 == 0 and i < iterations - 1
        state = h.check(child_seed, run, leave_crash=leave)
        h.stats[state] += 1
        h.stats["acked batches"] += len(run.acked)
        h.stats["kills"] += run.killed
    # A last writer after the last kill: the vault takes writes again and verifies clean.
    run = h.run(seed * 10_000 + iterations, batches=2)
    h.check(seed * 10_000 + iterations, run)
    with memctl.open_vault(h.path, passphrase=PASSPHRASE) as v:
        assert v.audit_verify()["ok"]
        h.stats["records at the end"] = len(h.model.items)
        h.stats["pool versions"] = sum(
            ver for (src, _), (_, _, ver) in h.model.items.items() if src == POOL_SOURCE
        )
    return h.stats


def report(stats: Counter[str]) -> None:
    sys.stderr.write("\ncrash figures: " + ", ".join(f"{k}={v}" for k, v in stats.items()) + "\n")


def test_random_kills_lose_nothing(tmp_path: Path) -> None:
    stats = random_kills(tmp_path, 10, seed=1)
    report(stats)
    assert stats["kills"] == 10 and stats["acked batches"] > 0


@pytest.mark.slow
def test_random_kills_lose_nothing_slow(tmp_path: Path) -> None:
    n = int(os.environ.get("MEMCTL_CRASH_ITERATIONS", "200"))
    stats = random_kills(tmp_path, n, seed=int(os.environ.get("MEMCTL_CRASH_SEED", "7")))
    report(stats)
    assert stats["kills"] == n


# -- deterministic crash points -----------------------------------------------------------------
def test_crash_between_journal_commit_and_db_commit_is_repaired(tmp_path: Path) -> None:
    h = Harness(tmp_path, model=None)
    h.check(1, h.run(1, batches=2))
    run = h.run(2, crash_at="journal-committed:2")  # the second batch's journal commit
    assert run.killed and [b for b, _ in run.acked] == [0]
    assert h.check(2, run) == "journal ahead (crash mid-write), repaired"


def test_crash_window_is_voided_by_the_next_write(tmp_path: Path) -> None:
    h = Harness(tmp_path, model=None)
    run = h.run(1, crash_at="journal-committed:1")
    assert h.check(1, run, leave_crash=True).startswith("journal ahead")
    h.check(2, h.run(2, batches=2))  # its first write voids the orphan commit
    with memctl.open_vault(h.path, passphrase=PASSPHRASE) as v:
        assert [c["op"] for c in v.audit_log(op="void")] == ["void"]


def test_crash_before_the_head_moves_leaves_nothing(tmp_path: Path) -> None:
    h = Harness(tmp_path, model=None)
    run = h.run(1, crash_at="before-ref:2")
    assert [b for b, _ in run.acked] == [0]
    assert h.check(1, run) == "clean"
    h.check(2, h.run(2, batches=1))


def test_crash_after_db_commit_before_the_intent_is_cleared(tmp_path: Path) -> None:
    h = Harness(tmp_path, model=None)
    run = h.run(1, crash_at="db-committed:1")
    assert run.acked == []  # committed but never acknowledged
    assert h.check(1, run) == "in-flight batch committed, ack lost"
    h.check(2, h.run(2, batches=2))  # the stale intent does not confuse the next writer


def test_second_crash_while_voiding_the_first_is_repairable(tmp_path: Path) -> None:
    """Found by the slow kill loop: a write that first voids a crashed commit makes two
    journal commits in one transaction; a crash there left the journal two ahead and every
    later write refused ('rolled back'). The intent now names the whole tail (BASE, TOP)."""
    h = Harness(tmp_path, model=None)
    h.check(1, h.run(1, batches=1))
    run = h.run(2, crash_at="journal-committed:1")
    assert h.check(2, run, leave_crash=True).startswith("journal ahead")
    # The next writer's transaction: journal commit 1 voids the orphan, 2 is its batch.
    run = h.run(3, crash_at="journal-committed:2")
    assert run.acked == []
    h.check(3, run)  # verify fails; audit_repair must bring agreement back
    h.check(4, h.run(4, batches=1))


def test_stale_ref_lock_left_by_a_kill_does_not_block_writes(tmp_path: Path) -> None:
    """Found by this suite: every write failed with exit 6 until the file was deleted by hand
    (fixed in History.commit: inside the database write transaction the lock must be stale)."""
    h = Harness(tmp_path, model=None)
    h.check(1, h.run(1, batches=1))
    # What a SIGKILL inside libgit2's reference update leaves behind.
    lock = h.path / "journal" / "refs" / "heads" / "main.lock"
    lock.write_text("")
    h.check(2, h.run(2, batches=1))


class FailingCommit:
    """A connection whose next COMMIT fails (power lost between journal and database)."""

    def __init__(self, conn: Any) -> None:
        self._conn = conn

    def execute(self, sql: str, *args: Any) -> Any:
        if sql.strip().upper() == "COMMIT":
            import sqlcipher3

            self._conn.execute("ROLLBACK")
            raise sqlcipher3.OperationalError("disk I/O error")
        return self._conn.execute(sql, *args)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._conn, name)


def test_a_write_that_changes_nothing_keeps_the_crash_marker(tmp_path: Path) -> None:
    """Found by the model-based test: after a crash mid-write, a transaction with no journal
    commit (re-ingesting known text: every cron run over unchanged data) removed the intent
    file, so the orphan commit looked like tampering — every later write refused and
    audit_repair said 'restore from backup'. Fixed in History.committed()."""
    from memctl.errors import MemctlError

    path = tmp_path / "vault"
    memctl.init_vault(path, passphrase=PASSPHRASE, kdf_memory_mib=8, kdf_iterations=1, model=None)
    with memctl.open_vault(path, passphrase=PASSPHRASE) as v:
        kept = v.ingest("acknowledged before the crash")
        real = v.conn
        v.conn = FailingCommit(real)
        with pytest.raises(MemctlError):
            v.ingest("lost in the crash")
        v.conn = real
        assert v.ingest("acknowledged before the crash") == kept  # a duplicate: no commit
        problems = v.audit_verify()["problems"]
        assert any(CRASH_PROBLEM in p for p in problems), problems
        v.ingest("the next real write voids the orphan commit")
        assert v.audit_verify()["ok"]
