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
import re
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


#: The tokenize option of the FTS5 table (its arguments are plain words in memctl's schema).
_TOKENIZE = re.compile(r"tokenize\s*=\s*'([A-Za-z0-9_ ]+)'")


class TermStats:
    """How many rows hold each term (FTS5's count, the one ``bm25()`` would make), cached
    until the database changes: another connection's commit (``PRAGMA data_version``) or a
    write on this one (``total_changes``).

    With the extension loaded a word is counted by looking its token up in an ``fts5vocab``
    table (the index's own per-term row count: half the time of counting the rows a MATCH
    returns, ~20 ms against ~35 ms for a word a million-record vault holds 500k times).
    ``memctl_token`` makes the token with the table's tokenizer; a word it makes several
    tokens of (``e-mail``) is a phrase, counted by MATCH.
    """

    __slots__ = ("_cache", "_tokens", "_vocab")

    def __init__(self) -> None:
        self._cache: tuple[tuple[int, int], dict[str, int]] = ((-1, -1), {})
        self._tokens: dict[str, str | None] = {}
        self._vocab: list[str] | None = None  # the tokenizer's arguments; [] = no vocab table

    def doc_freqs(self, conn: Any, terms: list[str]) -> dict[str, int]:
        (version,) = conn.execute("PRAGMA data_version").fetchone()
        stamp = (int(version), int(conn.total_changes))
        seen, counts = self._cache
        if seen != stamp or len(counts) > MAX_TERMS:
            counts = {}
            self._cache = (stamp, counts)
        missing = [t for t in dict.fromkeys(terms) if t not in counts]
        if missing:
            tokens = self._tokens_of(conn, missing)
            phrases = [t for t in missing if tokens.get(t) is None]
            if len(phrases) < len(missing):
                words = list(dict.fromkeys(tok for tok in tokens.values() if tok is not None))
                one = "(SELECT doc FROM temp.memctl_vocab WHERE term = ?)"
                found = conn.execute("SELECT " + ", ".join([one] * len(words)), words).fetchone()
                docs = {w: int(n or 0) for w, n in zip(words, found, strict=True)}
                counts.update((t, docs[tok]) for t, tok in tokens.items() if tok is not None)
            if phrases:
                one = "(SELECT count(*) FROM records_fts WHERE records_fts MATCH ?)"
                found = conn.execute(
                    "SELECT " + ", ".join([one] * len(phrases)), [fts_term(t) for t in phrases]
                ).fetchone()
                counts.update(zip(phrases, (int(n) for n in found), strict=True))
        return {t: counts[t] for t in terms}

    def _tokens_of(self, conn: Any, terms: list[str]) -> dict[str, str | None]:
        """Each term's token where it is one word and the vocab table is usable, else None."""
        if self._vocab is None:
            self._vocab = _open_vocab(conn)
        if not self._vocab:
            return {}
        if len(self._tokens) > MAX_TERMS:
            self._tokens.clear()
        new = [t for t in terms if t not in self._tokens]
        if new:
            args = ", ".join("?" * len(self._vocab))
            one = f"memctl_token(?, {args})"
            found = conn.execute(
                "SELECT " + ", ".join([one] * len(new)),
                [x for t in new for x in (t, *self._vocab)],
            ).fetchone()
            self._tokens.update(zip(new, found, strict=True))
        return {t: self._tokens[t] for t in terms}

    def cached(self, conn: Any, terms: list[str]) -> dict[str, int] | None:
        """The counts of ``terms`` if all are cached and current, else None (counts nothing)."""
        (version,) = conn.execute("PRAGMA data_version").fetchone()
        seen, counts = self._cache
        if seen != (int(version), int(conn.total_changes)) or not all(t in counts for t in terms):
            return None
        return {t: counts[t] for t in terms}


def _open_vocab(conn: Any) -> list[str]:
    """The index tokenizer's arguments, after creating the connection's ``fts5vocab`` table
    (in ``temp``: nothing is written to the vault); [] where that cannot be done."""
    if not getattr(conn, "has_rank", False):
        return []
    try:
        row = conn.execute(
            "SELECT sql FROM sqlite_master WHERE type = 'table' AND name = 'records_fts'"
        ).fetchone()
        found = _TOKENIZE.search(row[0]) if row else None
        if found is None:
            return []
        conn.execute(
            "CREATE VIRTUAL TABLE IF NOT EXISTS temp.memctl_vocab "
            "USING fts5vocab(main, records_fts, row)"
        )
    except Exception:  # any failure means: count by MATCH, as without the extension
        return []
    return found.group(1).split()


def term_stats(conn: Any) -> TermStats:
    """The connection's cache (memctl's connections have one: :mod:`memctl.store.db`); an
    empty one, used once, for any other."""
    stats = getattr(conn, "term_stats", None)
    return stats if stats is not None else TermStats()
