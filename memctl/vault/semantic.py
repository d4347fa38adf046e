"""Embeddings in the vault: the pinned model, neighbour context, vector and hybrid recall.

Each record has two vectors: its own text (title + body, store ``vecown``) and its text with its
nearest neighbours from the same source (the turns around a chat message, the chunks around a
document chunk; store ``vec``), and is indexed with a wider context column — the measured
recipe of ``memctl/recall/fusion.py`` (docs/quality.md). A record without neighbours has one
text: it is embedded once and the vector stored in both.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from memctl.errors import ModelError, UsageError
from memctl.recall import fusion
from memctl.recall.filters import Filters
from memctl.worker import Worker

if TYPE_CHECKING:
    from memctl.vault.core import Vault
    from memctl.vault.records import Prepared

DEFAULT_ALIASES = {"default", "all-minilm-l6-v2", "sentence-transformers/all-minilm-l6-v2"}


def pin_for(spec: str) -> dict[str, Any]:
    """The header pin (name, dim, weights hash, spec) of a model, loading it only if needed."""
    if spec.lower() in DEFAULT_ALIASES:
        from memctl.embed import st
        from memctl.embed.base import verify_files

        verify_files(st.default_model_dir(), st.DEFAULT_MODEL_PINS, label="all-MiniLM-L6-v2")
        return {
            "name": "sentence-transformers/all-MiniLM-L6-v2",
            "dim": st.DEFAULT_MODEL_DIM,
            "weights_sha256": st.DEFAULT_WEIGHTS_SHA256,
            "spec": "default",
        }
    from memctl.embed import load_embedder, model_identity

    emb = load_embedder(spec)
    return {**model_identity(emb), "spec": spec}


def load_pinned(pin: dict[str, Any]) -> Any:
    """Load the vault's model and refuse it if it is not the pinned one (vectors never mix)."""
    from memctl.embed import load_embedder, model_identity

    spec = pin.get("spec") or pin.get("name")
    emb = load_embedder(spec)
    ident = model_identity(emb)
    for key in ("name", "dim", "weights_sha256"):
        if ident[key] != pin.get(key):
            raise ModelError(
                f"the embedding model does not match the vault's pin ({key} differs): "
                "its vectors would not be comparable",
                hint="reinstall the pinned model, or re-embed with `memctl model set`",
            )
    return emb


# -- ingest -------------------------------------------------------------------------------
def fill_context(vault: Vault, batch: list[Prepared]) -> dict[int, tuple[str, str]]:
    """Give records without a context their neighbours' text; return their embedding texts.

    Neighbours are records of the same source (and namespace) in ingest order: earlier ones
    already stored, and the others of this batch. Keys of the result are batch indexes, values
    ``(own text, text with neighbours)`` (:func:`fusion.embedding_texts`).
    """
    by_source: dict[tuple[str, str], list[int]] = {}
    for i, p in enumerate(batch):
        if p.source:
            by_source.setdefault((p.namespace, p.source), []).append(i)
    embed_text: dict[int, tuple[str, str]] = {}
    for (ns, source), idxs in by_source.items():
        earlier = [
            b
            for (b,) in reversed(
                vault.conn.execute(
                    "SELECT body FROM records WHERE namespace = ? AND source = ? "
                    "ORDER BY rowid DESC LIMIT ?",
                    (ns, source, fusion.CONTEXT_RADIUS),
                ).fetchall()
            )
        ]
        texts = earlier + [batch[i].text for i in idxs]
        offset = len(earlier)
        for j, i in enumerate(idxs):
            k = offset + j
            p = batch[i]
            wide = (
                texts[max(0, k - fusion.CONTEXT_RADIUS) : k]
                + texts[k + 1 : k + 1 + fusion.CONTEXT_RADIUS]
            )
            near = (
                texts[max(0, k - fusion.EMBED_CONTEXT_RADIUS) : k]
                + texts[k + 1 : k + 1 + fusion.EMBED_CONTEXT_RADIUS]
            )
            if p.context is None:
                observed = datetime.fromisoformat(p.observed_at) if p.observed_at else None
                p.context = fusion.context_text(wide, observed) or None
            embed_text[i] = fusion.embedding_texts(p.title or "", p.text, near)
    for i, p in enumerate(batch):
        if i not in embed_text:
            extra = [p.context] if p.context else []
            embed_text[i] = fusion.embedding_texts(p.title or "", p.text, extra)
    return embed_text


def embed_pairs(embedder: Any, pairs: Sequence[tuple[str, str]]) -> list[tuple[Any, Any]]:
    """``(own vector or None, with-context vector)`` per ``(own text, with-context text)`` pair.

    One ``encode`` call for all the distinct texts. A record without neighbours (both texts
    equal) costs one embedding and gets None for its own vector: its with-context vector *is*
    its own-text vector, so the own-text store keeps no copy of it (434 bytes per record at
    384-d) and recall scores it by the one vector (:func:`fusion.mix_cosines`).
    """
    index: dict[str, int] = {}
    for own, ctx in pairs:
        index.setdefault(own, len(index))
        index.setdefault(ctx, len(index))
    if not index:
        return []
    matrix = embedder.encode(list(index))
    return [(None if own == ctx else matrix[index[own]], matrix[index[ctx]]) for own, ctx in pairs]


# -- recall ---------------------------------------------------------------------------------
def allowed_rowids(vault: Vault, filters: Filters) -> set[int] | None:
    if filters.is_empty():
        return None
    where, params = filters.sql("r")
    return {
        r for (r,) in vault.conn.execute(f"SELECT r.rowid FROM records r WHERE {where}", params)
    }


def vector_scores(vault: Vault, qvec: Any, rowids: Sequence[int]) -> list[float]:
    """The records' vector scores: ``fusion.mix_cosines`` of their two cosines (0 if none)."""
    import math

    ids = list(rowids)
    if not ids:
        return []
    own = vault.own_vectors.score_rowids(qvec, ids)
    ctx = vault.vectors.score_rowids(qvec, ids)
    return [0.0 if math.isnan(s) else float(s) for s in fusion.mix_cosines(own, ctx).tolist()]


def vector_candidates(vault: Vault, qvec: Any, filters: Filters, k: int) -> list[tuple[int, float]]:
    """The top ``k`` records by vector score (best first, ties by rowid).

    Candidates are the top ``max(k, VECTOR_CANDIDATES)`` of the with-context store, re-scored
    with both vectors (:func:`vector_scores`). Every record has a with-context vector (the
    same as its own when it has no neighbours), so searching the own-text store too would
    only find records whose own text alone is close: on LoCoMo, dropping that second search
    changed no figure (docs/quality.md, round 3) and it halves the scan.
    """
    allowed = allowed_rowids(vault, filters)
    if allowed is not None and not allowed:
        return []
    n = max(k, fusion.VECTOR_CANDIDATES)
    found = vault.vectors.search(qvec, n, allowed_rowids=allowed)
    return _rescored(vault, qvec, [int(r) for r, _ in found], k)


def _rescored(vault: Vault, qvec: Any, ids: list[int], k: int) -> list[tuple[int, float]]:
    ranked = sorted(zip(ids, vector_scores(vault, qvec, ids), strict=True), key=_best_first)
    return ranked[:k]


def _best_first(pair: tuple[int, float]) -> tuple[float, int]:
    return -pair[1], pair[0]


def recall(
    vault: Vault, query: str, *, mode: str, filters: Filters, limit: int
) -> list[dict[str, Any]]:
    from memctl.vault.records import row_to_dict

    if mode == "vector":
        qvec = vault.embedder.encode([query])[0]
        pairs = vector_candidates(vault, qvec, filters, limit)
        rows = _rows(vault, [r for r, _ in pairs])
        hits = []
        for rank, (rowid, score) in enumerate(pairs, 1):
            hit = row_to_dict(rows[rowid])
            hit["score"] = score
            hit["snippet"] = None
            hit["explain"] = {"vector": {"rank": rank, "score": score}}
            hits.append(hit)
        return hits
    return _hybrid(vault, query, filters, limit)


def _hybrid(vault: Vault, query: str, filters: Filters, limit: int) -> list[dict[str, Any]]:
    """Hybrid recall (:mod:`memctl.recall.fusion`).

    Two threads: a worker embeds the query and searches the resident vectors (numpy only,
    on a snapshot taken here) while this thread scores the keyword candidates and looks up
    their groups on the connection. torch's traced graph, numpy and SQLite all release the
    GIL, so on two cores the two halves overlap. Rows and snippets are fetched for the final
    hits only.
    """
    from memctl.recall.keyword import (
        hits_for,
        keyword_candidates,
        keyword_scores_for,
        snippets_for,
    )

    allowed = allowed_rowids(vault, filters)
    search = vault.vectors.snapshot()
    n_vec = fusion.VECTOR_CANDIDATES
    embedder = vault.embedder

    def embed_and_search() -> tuple[Any, list[int]]:
        qvec = embedder.encode([query])[0]
        if allowed is not None and not allowed:
            return qvec, []
        return qvec, [int(r) for r, _ in search(qvec, n_vec, allowed_rowids=allowed)]

    pending = _EMBED.submit(embed_and_search)
    kw = keyword_candidates(
        vault.conn, query, filters=filters, limit=fusion.KEYWORD_CANDIDATES, all_scores=True
    )
    keyword = kw.ranked if kw is not None else []
    groups = _groups(vault, {r for r, _ in keyword})
    # Unless the worker is done, this thread would now wait for it (embedding plus vector
    # search is the longer half on the 100k and 1M bench vaults): make the snippets of the
    # keyword top ``limit`` meanwhile, most of the final hits (one seek each, ~0.2 ms).
    early = (
        snippets_for(vault.conn, kw.plan([r for r, _ in keyword[:limit]], seek=True))
        if (kw is not None and not pending.done())
        else {}
    )
    qvec, found = pending.result()
    vector = _rescored(vault, qvec, found, n_vec)
    groups.update(_groups(vault, {r for r, _ in vector} - {r for r, _ in keyword}))

    def cosine(rowids: Sequence[int]) -> list[float]:
        return vector_scores(vault, qvec, rowids)

    def keyword_score(rowids: Sequence[int]) -> list[float]:
        if kw is None:
            return [0.0] * len(rowids)
        if kw.scores is not None:  # pruned: every row holding a rare term is scored already
            return [kw.scores.get(r, 0.0) for r in rowids]
        scores = keyword_scores_for(vault.conn, kw.match, list(rowids), query=query)
        return [scores.get(r, 0.0) for r in rowids]

    fused = fusion.fuse(
        keyword, vector, cosine=cosine, keyword_score=keyword_score, groups=groups, limit=limit
    )
    # snippets for every final hit that matches the query by keywords
    matching = [f.rowid for f in fused if f.components.get("keyword_score", 0.0) > 0]
    known = {r: early[r] for r in matching if r in early}
    fetched = hits_for(
        vault.conn,
        [(f.rowid, f.score) for f in fused],
        kw.plan([r for r in matching if r not in known], seek=True) if kw is not None else None,
        known=known,
    )
    by_rowid = {h["_rowid"]: h for h in fetched}
    hits = []
    for f in fused:
        hit = by_rowid.get(f.rowid)
        if hit is None:  # erased by another process since it was scored
            continue
        hit["score"] = f.score
        hit["explain"] = {
            "hybrid": {"rank": len(hits) + 1, "score": f.score},
            "keyword": {
                "rank": f.components.get("keyword_rank"),
                "score": f.components.get("keyword_score"),
            },
            "vector": {
                "rank": f.components.get("vector_rank"),
                "score": f.components.get("cosine"),
            },
            "group_boost": f.components.get("group_boost", 0.0),
        }
        hits.append(hit)
    return hits


#: Embeds the query and searches the vectors while the caller scores keywords (its own
#: thread: the vector scan hands half its work to the store's worker and waits for it).
_EMBED = Worker("memctl-embed")


def _groups(vault: Vault, rowids: set[int]) -> dict[int, Any]:
    """Each record's group for fusion's thread credit: its source, when it has one."""
    sql = "SELECT rowid, source FROM records WHERE rowid IN ({marks}) AND source IS NOT NULL"
    return {rowid: source for rowid, source in _in_chunks(vault, sql, sorted(rowids)) if source}


def _rows(vault: Vault, rowids: list[int]) -> dict[int, tuple[Any, ...]]:
    from memctl.vault.records import RECORD_COLUMNS

    sql = f"SELECT {RECORD_COLUMNS} FROM records r WHERE r.rowid IN ({{marks}})"
    return {row[0]: row for row in _in_chunks(vault, sql, rowids)}


def _in_chunks(vault: Vault, sql: str, ids: list[int]) -> Any:
    """The rows of ``sql`` (``{marks}`` in it: the placeholders) for ``ids``, 500 at a time."""
    for start in range(0, len(ids), 500):
        chunk = ids[start : start + 500]
        yield from vault.conn.execute(sql.format(marks=",".join("?" * len(chunk))), chunk)


def check_mode(vault: Vault, mode: str) -> None:
    if mode != "keyword" and not vault.header.model:
        raise UsageError(
            f"{mode} recall needs an embedding model; this vault is keyword-only",
            hint="choose one with `memctl model set default`",
        )
