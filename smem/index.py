"""Candidate search: which memories are worth scoring at all.

Small pools are scanned exactly (one float32 matrix-vector product). Past
`ann_threshold` memories an inverted-file index (faiss IVF, inner product) returns the
nearest memories by cosine; the pool then widens the search until the score bound proves
that no memory outside the candidates could have been selected.
"""

from __future__ import annotations

import logging
import math
import time
from typing import Optional

import numpy as np

log = logging.getLogger("smem")


class VectorIndex:
    """Unit vectors of a pool, growable, with an optional IVF index over them."""

    def __init__(self, dim: int, *, ann_threshold: int = 20_000, nprobe: int = 12) -> None:
        self.dim = dim
        self.ann_threshold = ann_threshold
        self.nprobe = nprobe
        self._buffer = np.zeros((0, dim), dtype=np.float32)
        self._size = 0
        self._ivf = None
        self._ivf_size = 0

    def __len__(self) -> int:
        return self._size

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_buffer"] = self.vectors.copy()
        state["_ivf"] = None
        state["_ivf_size"] = 0
        return state

    @property
    def vectors(self) -> np.ndarray:
        return self._buffer[: self._size]

    def add(self, vectors: np.ndarray) -> None:
        vectors = np.ascontiguousarray(vectors, dtype=np.float32).reshape(-1, self.dim)
        end = self._size + len(vectors)
        if end > len(self._buffer):
            grown = np.zeros((max(end, 2 * len(self._buffer), 1024), self.dim), dtype=np.float32)
            grown[: self._size] = self.vectors
            self._buffer = grown
        self._buffer[self._size : end] = vectors
        self._size = end
        if self._ivf is not None:
            if end >= 2 * self._ivf_size:
                self._ivf = None
            else:
                self._ivf.add(vectors)

    def similarities(self, query: np.ndarray) -> np.ndarray:
        return self.vectors @ query

    @property
    def approximate(self) -> bool:
        return self._size >= self.ann_threshold

    def nearest(self, query: np.ndarray, count: int, *, exact: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """The `count` memories of highest cosine, best first; approximate in large pools
        unless `exact` or every memory is asked for."""
        count = min(count, self._size)
        if count == 0:
            return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float32)
        if self.approximate and not exact and count < self._size:
            sims, top = self._search(query, count)
            keep = top >= 0
            top, sims = top[keep].astype(np.int64), sims[keep]
        else:
            all_sims = self.similarities(query)
            top = np.argpartition(-all_sims, count - 1)[:count] if count < self._size else np.arange(self._size)
            sims = all_sims[top]
        order = np.argsort(-sims)
        return top[order], sims[order]

    def _search(self, query: np.ndarray, count: int) -> tuple[np.ndarray, np.ndarray]:
        if self._ivf is None:
            self._build()
        assert self._ivf is not None
        distances, labels = self._ivf.search(query.reshape(1, -1).astype(np.float32), count)
        return distances[0], labels[0]

    def _build(self) -> None:
        import faiss

        started = time.perf_counter()
        lists = int(min(4096, max(16, 2 * math.sqrt(self._size))))
        quantizer = faiss.IndexFlatIP(self.dim)
        ivf = faiss.IndexIVFFlat(quantizer, self.dim, lists, faiss.METRIC_INNER_PRODUCT)
        sample_size = min(self._size, 64 * lists)
        sample = self.vectors[np.random.default_rng(0).choice(self._size, sample_size, replace=False)]
        ivf.cp.niter = 10
        ivf.train(sample)
        ivf.add(self.vectors)
        ivf.nprobe = min(self.nprobe, lists)
        self._ivf, self._ivf_size = ivf, self._size
        log.info("IVF index over %d memories (%d lists) built in %.1fs", self._size, lists, time.perf_counter() - started)

    def build(self) -> Optional[float]:
        """Build the ANN index now (it is otherwise built on the first large search)."""
        if not self.approximate:
            return None
        started = time.perf_counter()
        self._build()
        return time.perf_counter() - started
