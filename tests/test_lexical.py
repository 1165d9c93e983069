"""The query's BM25 terms come from a short path that must equal bm25s's own tokenizer."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from smem.memory.lexical import LexicalIndex, query_terms, tokenize

WORDS = ["What", "did", "Caroline", "research", "running", "ran", "the", "a", "I", "it's", "café", "naïve",
         "2023", "7th", "May", "is", "been", "don't", "x", "ÉCOLE", "straße", "İstanbul", "co-op", "_id", "über"]


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.text(), st.lists(st.sampled_from(WORDS + [" ", ", ", "?", "!", "\n", "-", "'"])).map("".join)))
def test_query_terms_are_bm25s_tokens(text):
    assert query_terms(text) == tokenize([text])[0]


def test_scores_use_the_query_terms():
    index = LexicalIndex()
    index.add(["Caroline went running in May", "Melanie paints", "running shoes"])
    scores = index.scores("When did Caroline run?")
    assert scores.argmax() == 0 and scores[1] == 0.0 and scores.max() == 1.0
