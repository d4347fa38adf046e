"""The journal: memctl's git-backed, encrypted, signed, tamper-evident audit history.

Format: ``docs/journal.md``. Types are importable cheaply; ``Journal`` (pygit2, cryptography)
and ``bench_commit`` load on first use so importing this package costs the CLI nothing.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .model import (
    KEY_DEK,
    KEY_VAULT,
    CommitInfo,
    DecodedEvent,
    Event,
    JournalHeadMoved,
    JournalKeys,
    Problem,
    VerifyReport,
)

if TYPE_CHECKING:
    from .bench import bench_commit
    from .repo import Journal

__all__ = [
    "KEY_DEK",
    "KEY_VAULT",
    "CommitInfo",
    "DecodedEvent",
    "Event",
    "Journal",
    "JournalHeadMoved",
    "JournalKeys",
    "Problem",
    "VerifyReport",
    "bench_commit",
]


def __getattr__(name: str) -> Any:
    if name == "Journal":
        from .repo import Journal

        return Journal
    if name == "bench_commit":
        from .bench import bench_commit

        return bench_commit
    raise AttributeError(name)
