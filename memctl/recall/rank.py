"""``memctl_bm25``, the compiled ranking function, and the term statistics it is given.

FTS5's ``bm25()`` computes each query term's IDF by counting the rows that hold it, on every
query: for a term held by a third of a million-record vault, a walk over a third of a million
index entries before the first row is scored. ``memctl_bm25`` (``_memrank.c``) is the same
formula, bit for bit, with the counts passed in; :class:`TermStats` caches them per
connection until the index changes. It also skips phrases whose count is passed as -1, which
lets a MATCH expression repeat a term to shape its rows without scoring it twice
(:mod:`memctl.recall.keyword`).

The function is an SQLite extension built with the package (``setup.py``, optional). Where it
was not built (the connection's ``has_rank`` is False) keyword recall uses ``bm25()``: the same
results, slower on large vaults. The counts are used either way, to tell rare terms from
common ones (:mod:`memctl.recall.keyword`).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

from memctl.recall.query import fts_term

#: Cached counts per connection before the cache starts over (a few MB at most).
MAX_TERMS = 50_000


def library() -> Path | None:
    """The built extension's path, or None when it was not built."""
    spec = importlib.util.find_spec("memctl.recall._memrank")
    return Path(spec.origin) if spec is not None and spec.origin else None


def load(conn: Any) -> bool:
    """Load ``memctl_bm25`` into ``conn``. Loading extensions is switched on only for this
    call, so SQL can never load one (``load_extension()`` stays disabled)."""
    path = library()
    if path is None:
        return False
    try:
        conn.enable_load_extension(True)
        try:
            conn.load_extension(str(path))
        finally:
            conn.enable_load_extension(False)
    except Exception:  # any failure (no such file, not authorized, ...) means: use bm25()
        return False
    return True


class TermStats:
    """How many rows hold each term (FTS5's count, the one ``bm25()`` would make), cached
    until the database changes: another connection's commit (``PRAGMA data_version``) or a
    write on this one (``total_changes``)."""

    __slots__ = ("_cache",)

    def __init__(self) -> None:
        self._cache: tuple[tuple[int, int], dict[str, int]] = ((-1, -1), {})

    def doc_freqs(self, conn: Any, terms: list[str]) -> dict[str, int]:
        (version,) = conn.execute("PRAGMA data_version").fetchone()
        stamp = (int(version), int(conn.total_changes))
        seen, counts = self._cache
        if seen != stamp or len(counts) > MAX_TERMS:
            counts = {}
            self._cache = (stamp, counts)
        missing = [t for t in dict.fromkeys(terms) if t not in counts]
        if missing:
            one = "(SELECT count(*) FROM records_fts WHERE records_fts MATCH ?)"
            found = conn.execute(
                "SELECT " + ", ".join([one] * len(missing)), [fts_term(t) for t in missing]
            ).fetchone()
            counts.update(zip(missing, (int(n) for n in found), strict=True))
        return {t: counts[t] for t in terms}

    def cached(self, conn: Any, terms: list[str]) -> dict[str, int] | None:
        """The counts of ``terms`` if all are cached and current, else None (counts nothing)."""
        (version,) = conn.execute("PRAGMA data_version").fetchone()
        seen, counts = self._cache
        if seen != (int(version), int(conn.total_changes)) or not all(t in counts for t in terms):
            return None
        return {t: counts[t] for t in terms}


def term_stats(conn: Any) -> TermStats:
    """The connection's cache (memctl's connections have one: :mod:`memctl.store.db`); an
    empty one, used once, for any other."""
    stats = getattr(conn, "term_stats", None)
    return stats if stats is not None else TermStats()
