"""Commit latency at two vault sizes, and the cost of a big batch commit.

``bench_commit()`` builds two journals in a temporary directory — ``n_small`` and ``n_large``
records, each record one ``created`` event, written in large batch commits — then times
one-event commits (a new record each), alternating between the two journals so background noise
hits both alike, and returns the medians in milliseconds: the evidence that a commit's cost does
not grow with the journal.

``bench_batch()`` times commits of ``n_events`` new records each (the vault's ingest batch) on a
journal that already holds ``n_base`` records, and returns the median in milliseconds.

The temporary directory is on ``/dev/shm`` when it exists, so what is measured is the commit's
own cost (crypto, tree rewrites, object and ref writes) without disk latency; pass ``tmpdir`` to
measure on another file system (``/tmp``: a real disk, where ``durable=True`` pays for fsync).
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from memctl.ids import new_ulid

from .model import Event, JournalKeys

# mkdtemp makes a private 0700 directory with a random name inside it, so a shared dir is safe.
_SHM = "/dev/shm"  # noqa: S108


def _keys() -> JournalKeys:
    return JournalKeys(sign_seed=os.urandom(32), mac_key=os.urandom(32), vault_key=os.urandom(32))


def _fill(path: Path, keys: JournalKeys, n: int, batch: int, durable: bool = True) -> Any:
    from .repo import Journal

    journal = Journal.create(path, keys, durable=durable)
    done = 0
    while done < n:
        k = min(batch, n - done)
        events = [
            Event("created", new_ulid(), {"v": 1, "chunk": i}, os.urandom(32)) for i in range(k)
        ]
        journal.commit("ingest", events, actor="bench", db_state={"seq": done + k})
        done += k
    return journal


def _one_commit(journal: Any, i: int) -> float:
    event = Event("created", new_ulid(), {"v": 1, "i": i}, os.urandom(32))
    t0 = time.perf_counter()
    journal.commit("remember", [event], actor="cli", when=datetime.now(UTC))
    return (time.perf_counter() - t0) * 1000


def bench_commit(
    n_small: int = 1000,
    n_large: int = 100_000,
    *,
    repeats: int = 50,
    batch: int = 50_000,
    tmpdir: str | None = None,
    durable: bool = True,
) -> dict[str, float]:
    """Median ms of a one-event commit on journals of ``n_small`` and ``n_large`` records."""
    with tempfile.TemporaryDirectory(prefix="memctl-journal-bench-", dir=_dir(tmpdir)) as tmp:
        small = _fill(Path(tmp) / "small", _keys(), n_small, batch, durable)
        large = _fill(Path(tmp) / "large", _keys(), n_large, batch, durable)
        if hasattr(os, "sync"):
            os.sync()  # flush the build's dirty pages now, not during the timed commits
        for i in range(5):  # warm caches and the allocator on both
            _one_commit(small, i)
            _one_commit(large, i)
        t_small: list[float] = []
        t_large: list[float] = []
        for i in range(repeats):
            t_small.append(_one_commit(small, i))
            t_large.append(_one_commit(large, i))
        return {
            "journal_commit_ms_small": round(statistics.median(t_small), 3),
            "journal_commit_ms_large": round(statistics.median(t_large), 3),
        }


def bench_batch(
    n_events: int = 1000,
    n_base: int = 20_000,
    *,
    repeats: int = 10,
    tmpdir: str | None = None,
    durable: bool = True,
) -> dict[str, float]:
    """Median ms of one ``n_events``-record commit on a journal of ``n_base`` records."""
    with tempfile.TemporaryDirectory(prefix="memctl-journal-bench-", dir=_dir(tmpdir)) as tmp:
        journal = _fill(Path(tmp) / "j", _keys(), n_base, 1000, durable)
        times: list[float] = []
        for r in range(repeats):
            events = [
                Event("created", new_ulid(), {"v": 1, "r": r, "i": i}, os.urandom(32))
                for i in range(n_events)
            ]
            t0 = time.perf_counter()
            journal.commit("ingest", events, actor="bench")
            times.append((time.perf_counter() - t0) * 1000)
        return {"journal_batch_commit_ms": round(statistics.median(times), 3)}


def _dir(tmpdir: str | None) -> str | None:
    if tmpdir is None and os.path.isdir(_SHM) and os.access(_SHM, os.W_OK):
        return _SHM
    return tmpdir
