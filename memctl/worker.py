"""A long-lived worker thread, started on first use (hybrid recall, vector scans).

Work is handed to it only where the GIL is released for most of the time (torch's traced
graph, numpy loops, SQLite steps), so on two cores it runs beside the caller. Each use has its
own worker: a task on one worker may itself wait on another worker's task, never on its own.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any


class Worker:
    """One background thread; :meth:`submit` returns a ``concurrent.futures.Future``."""

    def __init__(self, name: str) -> None:
        self._name = name
        self._pool: Any = None
        self._lock = threading.Lock()

    def submit(self, fn: Callable[..., Any], *args: Any) -> Any:
        with self._lock:
            if self._pool is None:
                from concurrent.futures import ThreadPoolExecutor

                self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix=self._name)
        return self._pool.submit(fn, *args)
