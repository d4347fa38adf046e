"""Unit tests of the hybrid fusion recipe (memctl.recall.fusion)."""

from __future__ import annotations

from datetime import datetime

import pytest

from memctl.recall import fusion
from memctl.recall.fusion import Hit, fuse


def test_empty_inputs_give_no_hits():
    assert fuse([], []) == []


def test_keyword_only_keeps_bm25_order():
    hits = fuse([(1, 3.0), (2, 5.0), (3, 1.0)], [], group_weight=0)
    assert [h.rowid for h in hits] == [2, 1, 3]
    assert hits[0].components["keyword_rank"] == 1
    assert hits[0].components["keyword_norm"] == pytest.approx(1.0)


def test_vector_only_keeps_cosine_order():
    hits = fuse([], [(7, 0.2), (8, 0.9), (9, 0.5)])
    assert [h.rowid for h in hits] == [8, 9, 7]
    assert "keyword_rank" not in hits[0].components


def test_scores_are_max_normalised_and_mixed():
    hits = fuse(
        [(1, 10.0), (2, 5.0)],
        [(2, 0.8), (3, 0.4)],
        keyword_weight=0.6,
        cosine=lambda rows: [0.2 for _ in rows],
    )
    by = {h.rowid: h for h in hits}
    assert by[1].score == pytest.approx(0.6 * 1.0 + 0.4 * 0.2 / 0.8)
    assert by[2].score == pytest.approx(0.6 * 0.5 + 0.4 * 1.0)
    assert by[3].score == pytest.approx(0.4 * 0.5)


def test_found_by_both_beats_found_by_one():
    hits = fuse([(1, 4.0), (2, 4.0)], [(2, 0.5), (3, 0.5)], cosine=lambda rows: [0.0] * len(rows))
    assert hits[0].rowid == 2


def test_cosine_callback_is_asked_only_for_keyword_only_rows():
    asked: list[list[int]] = []

    def cosine(rows):
        asked.append(list(rows))
        return [0.9] * len(rows)

    hits = fuse([(1, 1.0), (2, 1.0)], [(2, 0.3)], cosine=cosine)
    assert asked == [[1]]
    assert hits[0].rowid == 1  # its re-scored cosine (0.9) beats row 2's 0.3


def test_cosine_callback_must_answer_every_row():
    with pytest.raises(ValueError):
        fuse([(1, 1.0), (2, 1.0)], [], cosine=lambda rows: [0.5])


def test_candidate_counts_cut_each_mode():
    kw = [(i, float(100 - i)) for i in range(10)]
    hits = fuse(kw, [], keyword_candidates=3)
    assert [h.rowid for h in hits] == [0, 1, 2]


def test_group_boost_lifts_the_thread_of_the_best_hit():
    kw = [(1, 10.0), (2, 3.0), (3, 3.2)]
    groups = {1: "a", 2: "a", 3: "b"}
    without = [h.rowid for h in fuse(kw, [], group_weight=0)]
    with_ = fuse(kw, [], groups=groups, group_weight=0.2, keyword_weight=0.6)
    assert without == [1, 3, 2]
    assert [h.rowid for h in with_] == [1, 2, 3]
    assert with_[1].components["group_boost"] == pytest.approx(0.2 * 0.6)
    assert "group_boost" not in with_[2].components or with_[2].components["group_boost"] > 0


def test_ties_are_broken_by_rowid_and_duplicates_dropped():
    hits = fuse([(5, 1.0), (4, 1.0), (5, 0.5)], [])
    assert [h.rowid for h in hits] == [4, 5]
    assert hits[1].components["keyword_score"] == 1.0


def test_limit_and_weight_validation():
    assert len(fuse([(i, 1.0 + i) for i in range(5)], [], limit=2)) == 2
    with pytest.raises(ValueError):
        fuse([(1, 1.0)], [], keyword_weight=1.5)


def test_negative_scores_never_count_as_evidence():
    hits = fuse([], [(1, -0.2), (2, 0.1)])
    by = {h.rowid: h for h in hits}
    assert by[1].components["vector_norm"] == 0.0
    assert hits[0].rowid == 2


def test_hit_is_a_value():
    assert Hit(1, 0.5) == Hit(1, 0.5, {})


def test_context_and_embedding_text():
    ctx = fusion.context_text(["A: hi", "", "B: yo"], datetime(2023, 5, 8, 13, 56))
    assert ctx == "A: hi\nB: yo\n8 May 2023"
    assert fusion.context_text([]) == ""
    assert fusion.date_text(None) == ""
    assert fusion.embedding_texts("T", "body", ["A: hi", "B: yo"]) == (
        "T\nbody",
        "T\nbody\nA: hi\nB: yo",
    )
    assert fusion.embedding_texts("", "body") == ("body", "body")


def test_vector_scores_mix_both_cosines():
    np = pytest.importorskip("numpy")
    own = np.array([[1.0, 0.0], [0.0, 1.0]], dtype=np.float32)
    ctx = np.array([[0.0, 1.0], [0.0, 1.0]], dtype=np.float32)
    got = fusion.vector_scores(np.array([1.0, 0.0]), own, ctx, own_weight=0.3)
    assert got.tolist() == pytest.approx([0.3, 0.0])


def test_defaults_are_sane():
    assert len(fusion.BM25_WEIGHTS) == 4
    assert fusion.BM25_WEIGHTS[3] < fusion.BM25_WEIGHTS[1]
    assert 0 < fusion.KEYWORD_WEIGHT < 1
    assert fusion.KEYWORD_CANDIDATES > 0 and fusion.VECTOR_CANDIDATES > 0


def test_keyword_score_callback_is_asked_only_for_vector_only_rows():
    asked: list[list[int]] = []

    def keyword_score(rows):
        asked.append(list(rows))
        return [5.0 if r == 3 else 0.0 for r in rows]

    hits = fuse(
        [(1, 10.0), (2, 4.0)],
        [(2, 0.5), (3, 0.5), (4, 0.5)],
        cosine=lambda rows: [0.0] * len(rows),
        keyword_score=keyword_score,
        keyword_weight=0.6,
    )
    assert asked == [[3, 4]]
    by = {h.rowid: h for h in hits}
    # row 3 keeps its real bm25 (5/10 of the best), row 4 matched no keyword
    assert by[3].score == pytest.approx(0.6 * 0.5 + 0.4 * 1.0)
    assert by[4].score == pytest.approx(0.4 * 1.0)
    assert by[3].components["keyword_score"] == 5.0
    assert "keyword_rank" not in by[3].components
    assert "keyword_score" not in by[4].components
    assert [h.rowid for h in hits] == [3, 2, 1, 4]  # with 0 keyword, 3 would rank below 1


def test_without_keyword_score_vector_only_rows_get_zero_keyword():
    hits = fuse([(1, 10.0)], [(3, 0.5)], cosine=lambda rows: [0.0] * len(rows))
    assert {h.rowid: h.components["keyword_norm"] for h in hits}[3] == 0.0


def test_keyword_score_callback_must_answer_every_row():
    with pytest.raises(ValueError):
        fuse([], [(1, 0.5), (2, 0.4)], keyword_score=lambda rows: [1.0])


def test_mix_cosines_falls_back_to_the_vector_present():
    np = pytest.importorskip("numpy")
    nan = float("nan")
    got = fusion.mix_cosines([0.5, nan, 0.2, nan], [1.0, 0.4, nan, nan], own_weight=0.3)
    assert got[:3].tolist() == pytest.approx([0.3 * 0.5 + 0.7 * 1.0, 0.4, 0.2])
    assert np.isnan(got[3])
