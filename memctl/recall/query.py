"""Turn whatever a person typed into a safe FTS5 MATCH expression.

Any text is a valid query: quotes, ``NEAR(``, ``OR``, ``*`` and unbalanced brackets are
treated as words or ignored, never passed to FTS5's query parser as syntax. Every term is
emitted as a double-quoted FTS5 string, so the only syntax FTS5 ever sees is ours.
"""

from __future__ import annotations

import re
import unicodedata

# Words too common to carry meaning in a personal archive. Removed from the query (not the
# index) unless the query has nothing else. Kept small and language-general on purpose.
STOP_WORDS = frozenset(
    """
    a about above after again against all am an and any are aren't as at be because been
    before being below between both but by can can't cannot could couldn't did didn't do does
    doesn't doing don't down during each few for from further had hadn't has hasn't have
    haven't having he he'd he'll he's her here here's hers herself him himself his how how's i
    i'd i'll i'm i've if in into is isn't it it's its itself let's me more most mustn't my
    myself no nor not of off on once only or other ought our ours ourselves out over own same
    shan't she she'd she'll she's should shouldn't so some such than that that's the their
    theirs them themselves then there there's these they they'd they'll they're they've this
    those through to too under until up very was wasn't we we'd we'll we're we've were weren't
    what what's when when's where where's which while who who's whom why why's with won't would
    wouldn't you you'd you'll you're you've your yours yourself yourselves
    """.split()
)

_WORD = re.compile(r"[\w']+\*?", re.UNICODE)
MAX_TERMS = 64


def query_terms(text: str, *, drop_stop_words: bool = True) -> list[str]:
    """The query's words, lower-cased and NFKC-normalised, in order, without duplicates.

    A trailing ``*`` on a word is kept (prefix search). Stop words are dropped unless that
    would leave nothing.
    """
    text = unicodedata.normalize("NFKC", text)
    raw: list[str] = []
    seen: set[str] = set()
    for match in _WORD.finditer(text):
        word = match.group(0).strip("'").lower()
        if word.endswith("*"):
            word = word.rstrip("*").strip("'")
            if not word:
                continue
            word += "*"
        if not word or word in seen:
            continue
        seen.add(word)
        raw.append(word)
    if drop_stop_words:
        kept = [w for w in raw if w.rstrip("*") not in STOP_WORDS]
        if kept:
            raw = kept
    return raw[:MAX_TERMS]


def fts_term(word: str) -> str:
    """One term as an FTS5 string literal (``"..."``, with ``*`` outside for prefixes)."""
    prefix = word.endswith("*")
    body = word.rstrip("*").replace('"', '""')
    return f'"{body}"' + ("*" if prefix else "")


def build_match(text: str, *, drop_stop_words: bool = True) -> str | None:
    """An FTS5 MATCH expression ORing the query's terms, or None if it has no words."""
    terms = query_terms(text, drop_stop_words=drop_stop_words)
    if not terms:
        return None
    return " OR ".join(fts_term(t) for t in terms)
