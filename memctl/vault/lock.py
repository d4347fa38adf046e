"""Advisory file locks (``flock``) for the vault's writers and for cron jobs.

SQLite serialises database writes itself; this lock covers what SQLite does not: the header
(passwd, key add/remove), the journal's ref, and one run of a named cron job at a time.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import time
from collections.abc import Iterator
from pathlib import Path

from memctl.errors import VaultBusy


@contextlib.contextmanager
def file_lock(path: Path, *, timeout: float = 30.0, what: str = "vault") -> Iterator[None]:
    """Hold an exclusive lock on ``path``; wait up to ``timeout`` s (0: fail at once)."""
    fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o600)
    try:
        deadline = time.monotonic() + timeout
        delay = 0.005
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise VaultBusy(
                        f"the {what} is busy: another memctl process holds its lock"
                    ) from None
                time.sleep(delay)
                delay = min(delay * 2, 0.1)
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
