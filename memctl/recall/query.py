"""Turn whatever a person typed into a safe FTS5 MATCH expression.

Any text is a valid query: quotes, ``NEAR(``, ``OR``, ``*`` and unbalanced brackets are
treated as words or ignored, never passed to FTS5's query parser as syntax. Every term is
emitted as a double-quoted FTS5 string, so the only syntax FTS5 ever sees is ours.

Terms are cut the way the index's ``unicode61`` tokenizer cuts text (runs of letters and
digits), so a term is one index token and matches on its own: ``Caroline's`` becomes
``caroline`` (a quoted ``"caroline's"`` would be the two-token phrase ``caroline s`` and miss
every plain ``Caroline``). Stemming is the tokenizer's job (``porter``), not ours. Measured on
LoCoMo in ``docs/quality.md``.
"""

from __future__ import annotations

import re
import unicodedata

# Words too common to carry meaning in a personal archive. Removed from the query (not the
# index) unless the query has nothing else. A general English list (the classic one used by
# most search engines) plus the filler words of questions ("what kind of", "how many"); nothing
# in it is tuned to a data set.
STOP_WORDS = frozenset(
    """
    a about above after again against all am an and any are aren't as at be because been
    before being below between both but by can can't cannot could couldn't did didn't do
    does doesn't doing don't down during each few for from further had hadn't has hasn't
    have haven't having he he'd he'll he's her here here's hers herself him himself his how
    how's i i'd i'll i'm i've if in into is isn't it it's its itself let's me more most
    mustn't my myself no nor not of off on once only or other ought our ours ourselves out
    over own same shan't she she'd she'll she's should shouldn't so some such than that
    that's the their theirs them themselves then there there's these they they'd they'll
    they're they've this those through to too under until up very was wasn't we we'd we'll
    we're we've were weren't what what's when when's where where's which while who who's
    whom why why's with won't would wouldn't you you'd you'll you're you've your yours
    yourself yourselves also ever just kind kinds many might much must shall sort type types
    will yet
    """.split()  # noqa: SIM905 - a word list reads better as text
)

# A word: letters/digits, optionally joined by apostrophes (don't, o'clock), optionally a
# trailing ``*`` for prefix search. ``_`` is excluded because unicode61 splits on it.
_WORD = re.compile(r"[^\W_]+(?:'[^\W_]+)*\*?")
_APOSTROPHES = str.maketrans({"\u2019": "'", "\u2018": "'", "\u02bc": "'", "`": "'"})
MAX_TERMS = 64


def _clean(text: str) -> str:
    """NFKC-normalise and drop what cannot be encoded (lone surrogates from broken input)."""
    text = text.encode("utf-8", "replace").decode("utf-8")
    return unicodedata.normalize("NFKC", text).translate(_APOSTROPHES)


def _split_word(word: str) -> list[str]:
    """One typed word as index tokens: possessive ``'s`` dropped, other apostrophes split."""
    if word.endswith("'s"):
        word = word[:-2]
    parts = word.split("'")
    if len(parts) == 1:
        return parts
    # a one-letter piece of an elision (o'clock, l'hôtel) is noise, not a term
    return [p for p in parts if len(p) > 1 or p.isdigit()]


def query_terms(text: str, *, drop_stop_words: bool = True) -> list[str]:
    """The query's terms, lower-cased and NFKC-normalised, in order, without duplicates.

    A trailing ``*`` on a word is kept (prefix search). Stop words are dropped unless that
    would leave nothing.
    """
    raw: list[str] = []
    stop: list[bool] = []
    seen: set[str] = set()
    for match in _WORD.finditer(_clean(text)):
        word = match.group(0).lower()
        prefix = word.endswith("*")
        word = word.rstrip("*")
        is_stop = word in STOP_WORDS
        for i, part in enumerate(_split_word(word)):
            last = i == len(_split_word(word)) - 1
            term = part + ("*" if prefix and last else "")
            if not part or term in seen:
                continue
            seen.add(term)
            raw.append(term)
            stop.append(is_stop or part in STOP_WORDS)
    if drop_stop_words and not all(stop):
        raw = [t for t, s in zip(raw, stop, strict=True) if not s]
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
