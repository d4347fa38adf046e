"""Commit latency at two vault sizes: the evidence that a commit's cost does not grow with it.

``bench_commit()`` builds two journals in a temporary directory — ``n_small`` and ``n_large``
records, each record one ``created`` event, written in large batch commits — then times
one-event commits (a new record each), alternating between the two journals so background noise
hits both alike, and returns the medians in milliseconds.

The temporary directory is on ``/dev/shm`` when it exists: writing the ~250k loose objects of a
100k-record journal to a real disk takes minutes of I/O and its write-back then disturbs the
timings. What is measured is therefore the commit's own cost (crypto, tree rewrites, object and
ref writes) without disk latency; pass ``tmpdir`` to measure on another file system.
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


def _fill(path: Path, keys: JournalKeys, n: int, batch: int) -> Any:
    from .repo import Journal

    journal = Journal.create(path, keys)
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
) -> dict[str, float]:
    """Median ms of a one-event commit on journals of ``n_small`` and ``n_large`` records."""
    if tmpdir is None and os.path.isdir(_SHM) and os.access(_SHM, os.W_OK):
        tmpdir = _SHM
    with tempfile.TemporaryDirectory(prefix="memctl-journal-bench-", dir=tmpdir) as tmp:
        small = _fill(Path(tmp) / "small", _keys(), n_small, batch)
        large = _fill(Path(tmp) / "large", _keys(), n_large, batch)
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
