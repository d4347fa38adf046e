"""A child process that ingests into a vault until it is killed (tests/test_crash.py).

Usage::

    python tests/crash_child.py VAULT PASSFILE SEED [--batches N] [--size K]

It opens the vault (passphrase read from PASSFILE: never argv), prints ``ready``, then for
each batch ``b`` calls ``Vault.ingest_many(batch_items(SEED, b, K))`` and, only once that has
returned, prints ``ack <b> <id> <id> ...`` and flushes. A line printed is a write acknowledged:
the parent kills this process at a random moment and then checks every acknowledged write is
still there.

``MEMCTL_CRASH_AT=<point>:<n>`` makes the child SIGKILL itself at a precise point instead (the
n-th time it is reached, 1-based), like SQLite's crash tests:

- ``journal-committed``: a journal commit has moved the head, its database transaction has not
  committed (the crash window the intent file marks);
- ``before-ref``: the commit's objects are written, the head has not moved;
- ``db-committed``: the database transaction committed, the intent file is not yet removed.

The batch generator is shared with the parent, which regenerates what each batch held.
"""

from __future__ import annotations

import os
import signal
import sys
from typing import Any

POOL = 16  # locators that batches keep updating: every crash also hits the update path
POOL_SOURCE = "crash://pool"


def token(seed: int, b: int, j: int) -> str:
    """A word unique to one item (one FTS5 token: letters and digits only)."""
    return f"zq{seed}x{b}x{j}"


def batch_items(seed: int, b: int, size: int) -> list[dict[str, Any]]:
    """Batch ``b`` of child ``seed``: new notes, and updates of a pool of shared locators."""
    items: list[dict[str, Any]] = []
    for j in range(size):
        t = token(seed, b, j)
        if (b + j) % 4 == 0:
            loc = f"doc-{(seed * 7 + b + j) % POOL}"
            items.append(
                {"text": f"pool document {loc} revision {t}", "source": POOL_SOURCE, "locator": loc}
            )
        else:
            items.append(
                {
                    "text": f"crash note {seed} {b} {j} marker {t}",
                    "tags": ["crash"],
                    "source": f"crash://child/{seed}",
                    "locator": f"{b}-{j}",
                }
            )
    return items


def say(*words: object) -> None:
    """One line in one write(2) (PYTHONUNBUFFERED would split ``print`` into pieces, and a
    kill between them would leave half an acknowledgement)."""
    sys.stdout.write(" ".join(map(str, words)) + "\n")
    sys.stdout.flush()


def _die() -> None:
    sys.stdout.flush()
    os.kill(os.getpid(), signal.SIGKILL)


def _install_crash_point(spec: str) -> None:
    point, _, nth = spec.partition(":")
    target = int(nth or "1")
    count = {"n": 0}

    def reached() -> bool:
        count["n"] += 1
        return count["n"] == target

    if point == "journal-committed":
        from memctl.journal.repo import Journal

        real = Journal.commit

        def commit(self: Any, *a: Any, **kw: Any) -> str:
            head = real(self, *a, **kw)
            if reached():
                _die()
            return head

        Journal.commit = commit  # type: ignore[method-assign]
    elif point == "before-ref":
        from memctl.journal import repo

        real_advance = repo._advance

        def advance(*a: Any, **kw: Any) -> None:
            if reached():
                _die()
            real_advance(*a, **kw)

        repo._advance = advance
    elif point == "db-committed":
        from memctl.vault.history import History

        real_committed = History.committed

        def committed(self: Any) -> None:
            if reached():
                _die()
            real_committed(self)

        History.committed = committed  # type: ignore[method-assign]
    else:
        raise SystemExit(f"unknown crash point {point}")


def main(argv: list[str]) -> int:
    import argparse

    ap = argparse.ArgumentParser()
    ap.add_argument("vault")
    ap.add_argument("passfile")
    ap.add_argument("seed", type=int)
    ap.add_argument("--batches", type=int, default=100_000)
    ap.add_argument("--size", type=int, default=4)
    args = ap.parse_args(argv)

    import memctl

    if os.environ.get("MEMCTL_CRASH_AT"):
        _install_crash_point(os.environ["MEMCTL_CRASH_AT"])
    with memctl.open_vault(args.vault, passphrase_file=args.passfile, actor="cron:crash") as v:
        say("ready")
        for b in range(args.batches):
            summary = v.ingest_many(batch_items(args.seed, b, args.size))
            if summary.failed:  # the generator is broken, not the vault: say so loudly
                print("failed", *summary.errors, file=sys.stderr, flush=True)
                return 2
            say("ack", b, *summary.ids)
    say("done")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
