"""BM25 over memory contents, the lexical half of the hybrid similarity.

Dense embeddings miss exact names, places and rare words that a question repeats; BM25
catches them. On the LoCoMo dev conversations mixing the two lifts recall@10 from 0.55
(cosine alone) to about 0.66 with the same MiniLM embedder (docs/benchmarks.md).
"""

from __future__ import annotations

import logging
import re
import threading
from typing import Optional, Sequence

import bm25s
import numpy as np
import Stemmer
from bm25s.stopwords import STOPWORDS_EN

_STEMMER = Stemmer.Stemmer("english")
# bm25s sets its own logger to DEBUG on import and logs every index build.
logging.getLogger("bm25s").setLevel(logging.WARNING)

_TOKEN = re.compile(r"(?u)\b\w\w+\b")
"""`bm25s.tokenize`'s default token pattern (scikit-learn's CountVectorizer's)."""
_STOPWORDS = frozenset(STOPWORDS_EN)
"""What `bm25s.tokenize(..., stopwords="en")` drops."""


def tokenize(texts: Sequence[str]) -> list[list[str]]:
    return bm25s.tokenize(list(texts), stopwords="en", stemmer=_STEMMER, return_ids=False, show_progress=False)


def query_terms(text: str) -> list[str]:
    """`tokenize([text])[0]` without bm25s's per-call set-up (progress bars, a vocabulary
    built and inverted for one text): 0.15 of a 1k text query's 2.4 ms went there. The same
    steps in the same order: lower-case, split, drop stopwords, stem each token
    (tests/test_lexical.py checks it against `tokenize`)."""
    return _STEMMER.stemWords([token for token in _TOKEN.findall(text.lower()) if token not in _STOPWORDS])


class LexicalIndex:
    """A BM25 index rebuilt lazily after memories are added (adds are rare, queries many)."""

    def __init__(self) -> None:
        self._texts: list[str] = []
        self._bm25: Optional[bm25s.BM25] = None
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._texts)

    def __getstate__(self) -> dict:
        return {"_texts": self._texts}

    def __setstate__(self, state: dict) -> None:
        self.__init__()
        self._texts = state["_texts"]

    def add(self, texts: Sequence[str]) -> None:
        with self._lock:
            self._texts = self._texts + list(texts)
            self._bm25 = None

    def copy(self) -> "LexicalIndex":
        """Shares the built index: it is read-only until the next `add`, which replaces it."""
        clone = LexicalIndex()
        with self._lock:
            clone._texts = self._texts
            clone._bm25 = self._built()
        return clone

    def _built(self) -> Optional[bm25s.BM25]:
        if self._bm25 is None and self._texts:
            tokens = tokenize(self._texts)
            if not any(tokens):
                return None
            index = bm25s.BM25()
            index.index(tokens, show_progress=False)
            self._bm25 = index
        return self._bm25

    def scores(self, query: str) -> np.ndarray:
        """BM25 of every memory for `query`, scaled so the best match is 1 (all 0 if none)."""
        terms = query_terms(query)
        if not terms or not self._texts:
            return np.zeros(len(self._texts), dtype=np.float32)
        with self._lock:
            index = self._built()
            if index is None:
                return np.zeros(len(self._texts), dtype=np.float32)
            raw = index.get_scores(terms)
        top = float(raw.max()) if len(raw) else 0.0
        return (raw / top).astype(np.float32) if top > 0 else np.zeros(len(raw), dtype=np.float32)
