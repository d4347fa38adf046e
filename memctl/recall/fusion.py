"""Hybrid recall: fuse keyword (FTS5 bm25) and vector (MiniLM cosine) candidates into one ranking.

Plain reciprocal-rank fusion throws the scores away and, on LoCoMo, ranks below bm25 alone
(``docs/quality.md``). What works instead, measured there (choices made on conversations 0-4,
checked on 5-9), is five general ideas:

1. **Index a record with its context.** A chat turn is rarely understandable alone: its
   question is in the turn before, its answer in the turn after. The ``context`` FTS5 column
   holds the neighbouring records (``CONTEXT_RADIUS`` each side, same conversation/document) and
   the record's date written out (``8 May 2023``), down-weighted in bm25 (``BM25_WEIGHTS``) so a
   record's own words still rank it first (:func:`context_text`).
2. **Two vectors per record**: one of the record alone, one of the record with its nearest
   neighbours (``EMBED_CONTEXT_RADIUS``); a record's cosine is ``VECTOR_OWN_WEIGHT * own +
   (1 - VECTOR_OWN_WEIGHT) * with_context`` (:func:`embedding_texts`, :func:`mix_cosines`).
3. **Mix normalised scores, not ranks.** Each mode's score is divided by its best score for
   this query (1.0 = as good as this mode gets here) and the two are mixed linearly
   (``KEYWORD_WEIGHT``).
4. **Score every candidate in both modes.** All vectors are resident, so a keyword candidate's
   cosine costs a dot product: the vector side re-ranks keyword candidates too. A vector
   candidate's bm25 is one FTS5 lookup by rowid: it gets its real keyword score, not 0.
5. **Credit the thread.** A record whose conversation/document (its *group*) holds a strong
   candidate is more likely relevant: ``score += GROUP_WEIGHT * best mixed score in its group``.
   Optional: without groups the ranking is 1-4 alone.

:func:`fuse` is pure Python over at most a few hundred candidates; only :func:`vector_scores`
uses numpy (imported lazily).
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np

# --- constants -----------------------------------------------------------------------------
# All chosen on LoCoMo conversations 0-4 (dev) and checked on 5-9 (test); see docs/quality.md for
# the grid. Round values were preferred over the dev optimum when the difference was below
# ~0.005 recall, to keep the defaults from fitting one data set.

#: bm25 column weights for ``records_fts(title, body, tags, context)``. Context at 0.3: lower
#: loses the neighbouring-turn gain, higher (0.5+) lets a neighbour outrank the record itself
#: (R@1 drops from 0.38 to 0.20 at 1.0). Tags count like body (not measured: LoCoMo has none).
BM25_WEIGHTS: tuple[float, float, float, float] = (1.0, 1.0, 1.0, 0.3)
#: Neighbouring records (each side, same session/document) written into ``context``. 2 beats
#: 1 (R@5 0.636 -> 0.682 keyword-only) and 3 (0.658).
CONTEXT_RADIUS = 2
#: Neighbouring records (each side) in the with-context vector's text. 1 beats 2 for MiniLM
#: (R@5 0.418 vs 0.395): its 256 word pieces and mean pooling blur a longer window.
EMBED_CONTEXT_RADIUS = 1
#: Share of the record-alone cosine in a record's vector score (0.3: R@5 0.434 vs 0.418 for the
#: with-context vector alone and 0.326 for the record alone).
VECTOR_OWN_WEIGHT = 0.3
#: Candidates taken from each mode before fusion (per namespace-filtered query).
KEYWORD_CANDIDATES = 100
VECTOR_CANDIDATES = 100
#: Share of the keyword score in the mix; the vector score gets the rest. 0.6/0.7/0.8 differ by
#: < 0.01 at R@5 (H5-H7). 0.7 with two vectors per record (docs/quality.md, H9 and round 2).
KEYWORD_WEIGHT = 0.7
#: Weight of the best mixed score in a record's group (session/document) added to its own.
#: 0.2 and 0.4 are within 0.01; 0 loses ~0.015 at R@10.
GROUP_WEIGHT = 0.4


@dataclass(frozen=True, slots=True)
class Hit:
    """One fused result. ``components`` explains the score (for ``recall --explain``).

    Keys: ``keyword_rank``/``keyword_score`` (1-based rank in the keyword list, absent if the
    keyword mode did not return it; -bm25, also given for a vector-only record that matches the
    query), ``vector_rank``/``vector_score`` (rank in the vector
    list, absent if not in it; cosine always present), ``keyword_norm``/``vector_norm`` (the
    normalised scores that were mixed), ``group_boost`` (what the group added).
    """

    rowid: int
    score: float
    components: dict[str, float] = field(default_factory=dict)


def date_text(observed: date | datetime | None) -> str:
    """A record's date as words a person would type (``8 May 2023``), for the context column."""
    if observed is None:
        return ""
    return f"{observed.day} {observed:%B} {observed.year}"


def context_text(neighbours: Iterable[str], observed: date | datetime | None = None) -> str:
    """What a source writes into ``records.context``: neighbouring records' text, then the date.

    ``neighbours`` are the texts of up to ``CONTEXT_RADIUS`` records on each side of this one in
    the same conversation or document, in order (not the record itself).
    """
    parts = [t for t in neighbours if t]
    when = date_text(observed)
    if when:
        parts.append(when)
    return "\n".join(parts)


def embedding_texts(title: str, body: str, near: Iterable[str] = ()) -> tuple[str, str]:
    """The two texts embedded for a record: (record alone, record with its nearest neighbours).

    ``near``: texts of up to ``EMBED_CONTEXT_RADIUS`` records each side, in order. Own words come
    first in the second text because MiniLM truncates at 256 word pieces: context must never push
    the record itself out of its own vector. The date is not embedded (it did not help).
    A record without neighbours gets the same text twice (the vault embeds it once).
    """
    own = "\n".join(p for p in (title, body) if p)
    near_text = "\n".join(t for t in near if t)
    return own, (own + "\n" + near_text) if near_text else own


def mix_cosines(
    own: Sequence[float] | np.ndarray,
    with_context: Sequence[float] | np.ndarray,
    own_weight: float = VECTOR_OWN_WEIGHT,
) -> np.ndarray:
    """Records' vector scores from their two cosines: ``w * own + (1 - w) * with_context``.

    Aligned float arrays; NaN marks a missing vector. A record with one vector missing is
    scored by the other alone (a vault made before the own-text store existed ranks as it
    did); with both missing the score is NaN.
    """
    import numpy as np

    a = np.asarray(own, dtype=np.float32)
    b = np.asarray(with_context, dtype=np.float32)
    a, b = np.where(np.isnan(a), b, a), np.where(np.isnan(b), a, b)
    return own_weight * a + (1.0 - own_weight) * b


def vector_scores(
    query: np.ndarray,
    own: np.ndarray,
    with_context: np.ndarray,
    own_weight: float = VECTOR_OWN_WEIGHT,
) -> np.ndarray:
    """Each record's vector score for a normalised query vector: the weighted mix of its cosines.

    ``own`` and ``with_context`` are (n, d) matrices of normalised vectors, row i = record i.
    """
    import numpy as np

    q = np.asarray(query, dtype=np.float32)
    return mix_cosines(own @ q, with_context @ q, own_weight)


def _ranked(pairs: Iterable[tuple[int, float]], limit: int) -> list[tuple[int, float]]:
    """Best first, ties by rowid (deterministic), first occurrence of a rowid wins."""
    seen: set[int] = set()
    out: list[tuple[int, float]] = []
    for rowid, score in sorted(pairs, key=lambda p: (-p[1], p[0])):
        if rowid not in seen:
            seen.add(rowid)
            out.append((rowid, float(score)))
    return out[:limit]


def fuse(
    keyword: Sequence[tuple[int, float]],
    vector: Sequence[tuple[int, float]],
    *,
    cosine: Callable[[Sequence[int]], Sequence[float]] | None = None,
    keyword_score: Callable[[Sequence[int]], Sequence[float]] | None = None,
    groups: Mapping[int, Hashable] | None = None,
    keyword_weight: float = KEYWORD_WEIGHT,
    group_weight: float = GROUP_WEIGHT,
    keyword_candidates: int = KEYWORD_CANDIDATES,
    vector_candidates: int = VECTOR_CANDIDATES,
    limit: int | None = None,
) -> list[Hit]:
    """Fuse the two modes' candidates into one ranking, best first.

    ``keyword``: ``(rowid, score)`` with score = ``-bm25(records_fts, *BM25_WEIGHTS)`` (larger is
    better; FTS5's bm25 is negative). ``vector``: ``(rowid, cosine)`` of the query embedding and
    the record's vectors (:func:`vector_scores`). Either may be empty (the other mode alone then
    decides). ``cosine(rowids)`` returns the vector score (same :func:`vector_scores` mix) of
    records found only by keyword; without it they get 0 and rank on keywords alone.
    ``keyword_score(rowids)`` likewise returns the keyword score (``-bm25``, 0 for no match) of
    records found only by vector; without it they get 0 keyword.
    ``groups`` maps a rowid to its thread or document (any hashable); records without a group
    get no boost.
    """
    if not 0.0 <= keyword_weight <= 1.0:
        raise ValueError("keyword_weight must be within [0, 1]")
    kw = _ranked(keyword, keyword_candidates)
    vec = _ranked(vector, vector_candidates)
    kw_rank = {r: i + 1 for i, (r, _) in enumerate(kw)}
    vec_rank = {r: i + 1 for i, (r, _) in enumerate(vec)}
    kw_score = dict(kw)
    cos = dict(vec)
    missing = [r for r in kw_score if r not in cos]
    if missing:
        values = list(cosine(missing)) if cosine is not None else [0.0] * len(missing)
        if len(values) != len(missing):
            raise ValueError("cosine() must return one value per rowid")
        cos.update(zip(missing, (float(v) for v in values), strict=True))
    missing = [r for r in cos if r not in kw_score]
    if missing and keyword_score is not None:
        values = list(keyword_score(missing))
        if len(values) != len(missing):
            raise ValueError("keyword_score() must return one value per rowid")
        kw_score.update(zip(missing, (float(v) for v in values), strict=True))
    rowids = list(dict.fromkeys([r for r, _ in kw] + [r for r, _ in vec]))
    if not rowids:
        return []

    kw_max = max((s for s in kw_score.values() if s > 0), default=0.0)
    cos_max = max((c for c in cos.values() if c > 0), default=0.0)
    mixed: dict[int, float] = {}
    parts: dict[int, dict[str, float]] = {}
    for r in rowids:
        kn = max(kw_score.get(r, 0.0), 0.0) / kw_max if kw_max else 0.0
        vn = max(cos[r], 0.0) / cos_max if cos_max else 0.0
        mixed[r] = keyword_weight * kn + (1.0 - keyword_weight) * vn
        comp: dict[str, float] = {"keyword_norm": kn, "vector_norm": vn, "cosine": cos[r]}
        if r in kw_rank:
            comp["keyword_rank"] = kw_rank[r]
        if r in kw_rank or kw_score.get(r, 0.0) > 0:
            comp["keyword_score"] = kw_score[r]
        if r in vec_rank:
            comp["vector_rank"] = vec_rank[r]
            comp["vector_score"] = cos[r]
        parts[r] = comp

    final = dict(mixed)
    if groups and group_weight:
        best: dict[Hashable, float] = {}
        for r, s in mixed.items():
            g = groups.get(r)
            if g is not None and s > best.get(g, float("-inf")):
                best[g] = s
        for r in rowids:
            g = groups.get(r)
            if g is not None:
                boost = group_weight * best[g]
                final[r] += boost
                parts[r]["group_boost"] = boost

    hits = [Hit(r, final[r], parts[r]) for r in rowids]
    hits.sort(key=lambda h: (-h.score, h.rowid))
    return hits if limit is None else hits[:limit]
