"""Candidate search: which memories are worth scoring at all.

Small pools are scanned exactly (one float32 pass over the vectors). Past
`quantized_threshold` memories the scan runs over 8-bit scalar-quantised codes (faiss),
a quarter of the memory traffic, and the candidates are then re-scored exactly in
float32. Every answer comes with an upper bound on the cosine of any memory *not*
returned, which the pool uses to widen the search until nothing outside can win.

The bound is measured, not assumed: for every coded vector the L2 norm of its
dequantisation error e_i is computed when it is coded, and |approximate − exact| cosine
≤ e_i · |query| = e_i (Cauchy–Schwarz), so the largest e_i bounds every coded memory.
Vectors added after the codes were trained are scanned exactly (a float32 "tail") until
the tail is worth folding in; folding measures their error too, and requantises from
scratch when they fall outside the trained ranges (a fixed margin of 0.02 was not a
bound: late vectors from a shifted topic erred by up to 0.045).

An inverted-file or graph index would be faster still at 1M memories, but measured here
it missed 5–7% of the exact top-10 at 100k; the quantised flat scan misses none.
"""

from __future__ import annotations

import logging
import time
from typing import Optional

import numpy as np

from smem.memory.scoring import dot_rows

log = logging.getLogger("smem")

FIRST_SEARCH = 1024
"""Codes searched for at least this many nearest on a query's first look: faiss keeps a
heap, and 1024 cost 1.1× a top-64 scan at 100k (bench machine), so the usual widening of
a few hundred candidates needs no second scan."""

FOLD_FRACTION = 16
"""The exact tail is folded into the codes once it exceeds 1/16 of them: at 4 bytes a
value against 1, its scan then costs at most a quarter of the code scan."""

REQUANTISE_GROWTH = 1.5
"""Requantise from scratch when vectors being folded in err more than 1.5× the error
measured at training (they fell outside the trained per-dimension ranges)."""

DECODE_CHUNK = 65_536
"""Rows decoded at a time while measuring errors (bounds the 1M-pool peak to ~100 MB)."""


def rounding_margin(dim: int) -> float:
    """Float32 rounding allowance between faiss's approximate score and the exact one.

    A float32 dot product of n terms errs by at most γ_n·Σ|x_i y_i| ≤ γ_n·|x||y| with
    γ_n ≈ n·2⁻²⁴ (Higham, *Accuracy and Stability*, §3.1); faiss's decoded dot product,
    its decoding (one rounding per term), ours, and the measured error's own rounding
    each contribute, hence 4·n·2⁻²⁴ (9.2e-5 at 384-d), far below the measured
    dequantisation error (~0.01).
    """
    return 4.0 * dim * 2.0**-24


class VectorIndex:
    """Unit vectors of a pool, growable, with an optional quantised copy for fast scans."""

    def __init__(self, dim: int, *, quantized_threshold: int = 20_000) -> None:
        self.dim = dim
        self.quantized_threshold = quantized_threshold
        self._buffer = np.zeros((0, dim), dtype=np.float32)
        self._size = 0
        self._reset_codes()

    def _reset_codes(self) -> None:
        self._codes = None
        self._coded = 0
        """Rows [0, _coded) are in the codes; rows after them form the exact tail."""
        self._trained_error = 0.0
        self.error = 0.0
        """Largest measured |dequantised − original| (L2) over every coded vector."""

    def __len__(self) -> int:
        return self._size

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_buffer"] = self.vectors.copy()
        state.update(_codes=None, _coded=0, _trained_error=0.0, error=0.0)  # rebuilt on first use
        return state

    @property
    def vectors(self) -> np.ndarray:
        return self._buffer[: self._size]

    @property
    def quantized(self) -> bool:
        return self._size >= self.quantized_threshold

    def add(self, vectors: np.ndarray) -> None:
        """Append rows; coded pools keep them in the exact tail until `scan` folds it in."""
        vectors = np.ascontiguousarray(vectors, dtype=np.float32).reshape(-1, self.dim)
        end = self._size + len(vectors)
        if end > len(self._buffer):
            # Doubling (amortised O(1) appends), from 1024 rows (chosen: 1.5 MB at 384-d, an app-size set).
            grown = np.zeros((max(end, 2 * len(self._buffer), 1024), self.dim), dtype=np.float32)
            grown[: self._size] = self.vectors
            self._buffer = grown
        self._buffer[self._size : end] = vectors
        self._size = end

    def scan(self, query: np.ndarray) -> "Scan":
        """Start one query's search (quantising or folding the tail first if due)."""
        if self.quantized:
            if self._codes is None:
                self.build()
            elif self._size - self._coded > self._coded // FOLD_FRACTION:
                self._fold()
        return Scan(self, np.ascontiguousarray(query, dtype=np.float32))

    def build(self) -> Optional[float]:
        """Quantise the vectors now (otherwise done on the first large search); seconds taken."""
        if not self.quantized:
            return None
        import faiss

        # One query at a time: OpenMP's fan-out costs more than it saves (12 ms vs 1.6 ms
        # per 100k scan measured on 2 busy cores), and it fights the LLM for the cores.
        faiss.omp_set_num_threads(1)
        started = time.perf_counter()
        codes = faiss.IndexScalarQuantizer(self.dim, faiss.ScalarQuantizer.QT_8bit, faiss.METRIC_INNER_PRODUCT)
        codes.sq.rangestat = faiss.ScalarQuantizer.RS_minmax
        codes.sq.rangestat_arg = 0.05  # per-dimension range widened 5%, so most later vectors fit
        codes.train(self.vectors)
        self._codes = codes
        self._coded = 0
        self.error = 0.0
        self._trained_error = self._code_rows(self._size)
        seconds = time.perf_counter() - started
        log.info("quantised %d memory vectors in %.1fs (error bound %.4f)", self._size, seconds, self.error)
        return seconds

    def _fold(self) -> None:
        if self._code_rows(self._size, trial=True) > REQUANTISE_GROWTH * self._trained_error:
            self.build()
        else:
            self._code_rows(self._size)

    def _code_rows(self, end: int, *, trial: bool = False) -> float:
        """Code rows [_coded, end) and raise `error` to their largest measured error (returned).
        With `trial`, only measure."""
        worst = 0.0
        for start in range(self._coded, end, DECODE_CHUNK):
            rows = self._buffer[start : min(start + DECODE_CHUNK, end)]
            error = self._codes.sa_decode(self._codes.sa_encode(rows)) - rows
            worst = max(worst, float(np.sqrt(np.einsum("ij,ij->i", error, error).max())))
            if not trial:
                self._codes.add(rows)
        if not trial:
            self._coded = end
            self.error = max(self.error, worst)
        return worst


class Scan:
    """One query against the index: candidates by rank or by threshold, each with a bound.

    Cosines handed out are exact and computed row by row (`dot_rows`), so a memory's
    cosine is the same bits whichever way it was found: the fast path and exact scoring
    agree to the last bit, not just to rounding.
    """

    def __init__(self, index: VectorIndex, query: np.ndarray) -> None:
        self._index = index
        self.query = query
        self._all: Optional[np.ndarray] = None
        self._ids = np.zeros(0, dtype=np.int64)
        self._approx = np.zeros(0, dtype=np.float32)
        self._tail: Optional[np.ndarray] = None
        self._margin = index.error + rounding_margin(index.dim)
        if index._codes is None:
            self._all = dot_rows(index.vectors, query)

    def exact_cosines(self) -> np.ndarray:
        """Every memory's cosine (one full float32 pass, kept for the rest of the query)."""
        if self._all is None:
            self._all = dot_rows(self._index.vectors, self.query)
        return self._all

    def cosines(self, positions: np.ndarray) -> np.ndarray:
        if self._all is not None:
            return self._all[positions]
        return dot_rows(self._index.vectors[positions], self.query)

    def top(self, count: int) -> tuple[np.ndarray, float]:
        """At least the `count` nearest positions, and a bound on the cosine of any other."""
        size = len(self._index)
        if count >= size:
            return np.arange(size), -np.inf
        if self._all is not None:
            part = np.argpartition(-self._all, count)
            return part[:count], float(self._all[part[count]])
        coded = self._index._coded
        self._search(min(max(count + 1, FIRST_SEARCH), coded))
        found = self._ids[:count]
        bound = float(self._approx[count]) + self._margin if count < coded else -np.inf
        tail = self._tail_cosines()
        if count < len(tail):
            part = np.argpartition(-tail, count)
            found = np.concatenate([found, coded + part[:count]])
            bound = max(bound, float(tail[part[count]]))
        else:
            found = np.concatenate([found, np.arange(coded, size)])
        return found, bound

    def above(self, threshold: float) -> tuple[np.ndarray, float]:
        """Every position whose cosine may exceed `threshold`; no other's does."""
        if self._all is None:
            coded = self._index._coded
            radius = threshold - self._margin
            self._search(min(FIRST_SEARCH, coded))
            while len(self._ids) < coded and self._approx[-1] > radius:
                # Grow 16× per round (chosen: a handful of heap searches reach any pool size).
                wanted = 16 * len(self._ids)
                if wanted >= coded // 4:
                    # Past a quarter of the pool a full float32 pass is as cheap as the
                    # heap-bound code search, and exact.
                    self.exact_cosines()
                    break
                self._search(wanted)
        if self._all is not None:
            return np.flatnonzero(self._all > threshold), threshold
        found = self._ids[: int(np.searchsorted(-self._approx, -radius, side="left"))]
        tail = self._tail_cosines()
        return np.concatenate([found, self._index._coded + np.flatnonzero(tail > threshold)]), threshold

    def _search(self, count: int) -> None:
        if count <= len(self._ids):
            return
        approx, ids = self._index._codes.search(self.query.reshape(1, -1), count)
        valid = ids[0] >= 0
        self._ids, self._approx = ids[0][valid].astype(np.int64), approx[0][valid]

    def _tail_cosines(self) -> np.ndarray:
        if self._tail is None:
            self._tail = dot_rows(self._index.vectors[self._index._coded :], self.query)
        return self._tail
