"""Query building: any input gives a valid FTS5 MATCH expression (or None), never an error."""

from __future__ import annotations

import sqlcipher3
from hypothesis import given, settings
from hypothesis import strategies as st

from memctl.recall.query import STOP_WORDS, build_match, fts_term, query_terms

_DB = sqlcipher3.connect(":memory:")
_DB.execute(
    "CREATE VIRTUAL TABLE t USING fts5(title, body, tags, context,"
    " tokenize='porter unicode61 remove_diacritics 2')"
)
_DB.execute(
    "INSERT INTO t VALUES ('', 'Caroline: I went to the support group NEAR the park', '', '')"
)


def _run(text: str) -> list:
    match = build_match(text)
    if match is None:
        return []
    return _DB.execute("SELECT rowid FROM t WHERE t MATCH ?", (match,)).fetchall()


NASTY = [
    "",
    "   ",
    '"',
    '""',
    "'",
    "NEAR(",
    "NEAR(a b, 3)",
    "a OR",
    "OR",
    "AND NOT",
    "*",
    "a*",
    "**",
    "(",
    "((a)",
    "a)",
    "{body}: x",
    "body:",
    "^start",
    "a + b",
    "😀",
    "😀 support",
    "\ud800",
    "x\udfff y",
    "\x00",
    "don't",
    "o'clock",
    "'s",
    "foo_bar",
    "Ｃａｒｏｌｉｎｅ",
    "-",
    "a-b",
]


def test_nasty_inputs_never_raise():
    for text in NASTY:
        _run(text)


@settings(max_examples=300, deadline=None)
@given(st.text())
def test_any_text_is_a_valid_query(text):
    _run(text)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.sampled_from(
            [
                '"',
                "(",
                ")",
                "*",
                "NEAR",
                "OR",
                "AND",
                "NOT",
                ":",
                "^",
                "+",
                "-",
                "{",
                "}",
                "'",
                "😀",
                "\ud800",
                "x",
                " ",
            ]
        )
    )
)
def test_fts_syntax_soup_is_a_valid_query(parts):
    _run("".join(parts))


def test_possessive_matches_the_plain_name():
    assert query_terms("What did Caroline's group do?") == ["caroline", "group"]
    assert _run("Caroline's group") == [(1,)]


def test_stop_words_dropped_unless_nothing_else():
    assert query_terms("what is the support") == ["support"]
    assert query_terms("the") == ["the"]
    assert "the" in STOP_WORDS


def test_operators_are_words_not_syntax():
    assert build_match("support NEAR( group") == '"support" OR "near" OR "group"'
    assert _run("NEAR park") == [(1,)]


def test_prefix_star_is_kept():
    assert query_terms("supp*") == ["supp*"]
    assert fts_term("supp*") == '"supp"*'
    assert _run("supp*") == [(1,)]


def test_quotes_are_escaped():
    assert fts_term('a"b') == '"a""b"'


def test_duplicates_and_case_removed():
    assert query_terms("Park park PARK") == ["park"]


def test_empty_gives_none():
    assert build_match("") is None
    assert build_match("?!") is None
