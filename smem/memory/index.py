"""Candidate search: which memories are worth scoring at all.

Small pools are scanned exactly (one float32 pass over the vectors). Past
`quantized_threshold` memories the scan runs over signed 8-bit codes with an 8-bit query,
an integer dot product in faiss (a quarter of the memory traffic, and integer arithmetic
instead of per-value decoding), and the candidates are then re-scored exactly in float32.
Every answer comes with an upper bound on the cosine of any memory *not* returned, which
the pool uses to widen the search until nothing outside can win.

The bound is measured, not assumed. A memory x is coded as x̂ = centre + step ⊙ c (c in
[−127, 127] per dimension), the query q as q̂ = scale · u / step (u in [−127, 127]), so
x̂ · q̂ = centre · q̂ + scale · (c · u), the integer part computed exactly by faiss. Then

    |x · q − x̂ · q̂| ≤ |x − x̂| · |q| + |x̂| · |q − q̂| ≤ e_i + (1 + e_i) · |q − q̂|

(Cauchy–Schwarz twice), where e_i, the L2 norm of memory i's coding error, is measured
when it is coded and |q − q̂| is computed exactly for each query. Vectors added after the
codes were trained are scanned exactly (a float32 "tail") until the tail is worth folding
in; folding measures their error too, and requantises from scratch when they fall outside
the trained ranges (a fixed margin of 0.02 was not a bound: late vectors from a shifted
topic erred by up to 0.045).

`Scan.nearest` is the explicitly approximate search (`retrieve(..., approximate=True)`):
the same codes in √N k-means inverted lists, a few lists visited, no bound on what it misses.
"""

from __future__ import annotations

import logging
import math
import time
from typing import Optional

import numpy as np

from smem.memory.pages import back_with_huge_pages
from smem.memory.scoring import dot_rows

log = logging.getLogger("smem")

FIRST_RESULTS = 4096
"""A query's first look at the codes is one range search whose radius is set to return
about max(4096, N/64) codes (chosen: the widest widening of the latency bench, 20 broad
topics, scores ~2,800 of 100k, in one pass, and ~19k of 1M, where a second pass follows), so
most queries need no second scan. A
range search costs one pass whatever it returns; a top-k search keeps a heap, and k=1024
cost 1.4× the pass (measured here at 100k)."""

SAMPLE = 1024
"""Memories scored exactly to set that radius (a strided sample, kept as a contiguous copy:
0.10 ms at 384-d against 0.28 ms to gather it from the pool on every query, measured cold on
the AVX-512 EPYC). A poor estimate costs a second scan, never a wrong answer."""

CODE_LEVEL = 127
"""Codes and the query use [−127, 127]: symmetric, so zero is exact and the products of
384 of them (≤ 6.2M) are integers a float32 accumulator still holds exactly (< 2²⁴)."""

RANGE_WIDENING = 0.05
"""Each dimension's coded range is the pool's, widened 5% each side, so that most vectors
added later still fit (the widening faiss's own 8-bit quantiser was given here before)."""

FOLD_FRACTION = 16
"""The exact tail is folded into the codes once it exceeds 1/16 of them: at 4 bytes a
value against 1, its scan then costs at most a quarter of the code scan."""

REQUANTISE_GROWTH = 1.5
"""Requantise from scratch when vectors being folded in err more than 1.5× the error
measured at training (they fell outside the trained per-dimension ranges)."""

LIST_SAMPLE = 64
"""k-means for the approximate lists trains on 64 vectors per list (faiss warns below 39)."""

APPROXIMATE_PROBES = 32
"""Inverted lists the approximate search visits: at least 32, and a tenth of the √N lists
beyond 320 of them. At 100k (316 lists), measured against exact on the latency bench
(load average 6 on 2 cores): 8 / 16 / 32 / 64 lists gave top-10 similarity recall
0.905 / 0.930 / 0.975 / 0.995 with 2,000 topics of 50 (the hard shape for lists), 0.985 /
1.000 / 1.000 / 1.000 on LoCoMo text queries, for 2.2 / 2.3 / 2.5 / 2.7 ms of CPU."""

CODE_CHUNK = 65_536
"""Rows coded at a time (bounds the 1M-pool peak of coding to ~100 MB)."""


def rounding_margin(dim: int) -> float:
    """Float32 rounding allowance between the coded score and the exact one.

    A float32 dot product of n terms errs by at most γ_n·Σ|x_i y_i| ≤ γ_n·|x||y| with
    γ_n ≈ n·2⁻²⁴ (Higham, *Accuracy and Stability*, §3.1); our exact cosine, the
    reconstruction x̂ the measured error refers to, the measured error's own rounding and
    the unit norms each contribute, hence 4·n·2⁻²⁴ (9.2e-5 at 384-d), far below the
    measured coding error (~0.01). The integer part of the coded score has its own
    allowance (`Scan`).
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
        """faiss inverted file with a single list of signed 8-bit codes: its range search
        returns every code above a threshold in one scan (the flat index's range search
        does not use the SIMD path: 20× slower measured here)."""
        self._lists = None
        """The same codes in √N inverted lists by topic, for the approximate search (built on
        its first use, dropped whenever the codes are retrained)."""
        self._centroids = np.zeros((0, self.dim), dtype=np.float32)
        """(L, D) unit centres of the lists."""
        self._centre = np.zeros(self.dim, dtype=np.float32)
        self._step = np.ones(self.dim, dtype=np.float32)
        self._coded = 0
        """Rows [0, _coded) are in the codes; rows after them form the exact tail."""
        self._sample = np.zeros((0, self.dim), dtype=np.float32)
        """A strided copy of about `SAMPLE` coded rows, for `Scan._first_radius`."""
        self._trained_error = 0.0
        self.error = 0.0
        """Largest measured |dequantised − original| (L2) over every coded vector."""
        self._watch: Optional[WatchList] = None
        """A second copy of some memories' codes (`watched`), dropped whenever the codes are retrained."""

    def __len__(self) -> int:
        return self._size

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_buffer"] = self.vectors.copy()
        state.update(_codes=None, _lists=None, _watch=None, _coded=0, _trained_error=0.0, error=0.0)  # rebuilt on first use
        state["_sample"] = np.zeros((0, self.dim), dtype=np.float32)
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
        low, high = self.vectors.min(axis=0), self.vectors.max(axis=0)
        width = (high - low) * (1.0 + 2.0 * RANGE_WIDENING)
        self._centre = ((low + high) / 2.0).astype(np.float32)
        # A dimension every vector shares needs no step: its codes are all 0, exactly.
        self._step = np.where(width > 0, width / (2 * CODE_LEVEL), 1.0).astype(np.float32)
        self._codes = _one_list(self.dim)
        self._lists = None
        self._watch = None
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
        for start in range(self._coded, end, CODE_CHUNK):
            rows = self._buffer[start : min(start + CODE_CHUNK, end)]
            codes = self._encode(rows)
            error = self._centre + self._step * codes - rows
            worst = max(worst, float(np.sqrt(np.einsum("ij,ij->i", error, error).max())))
            if not trial:
                self._codes.add(codes)  # direct codes: faiss stores each value as is
                if self._lists is not None:
                    self._list_rows(rows, codes)
        if not trial:
            self._back_codes_with_huge_pages()
            self._coded = end
            self._sample = self._buffer[: end : max(end // SAMPLE, 1)].copy()
            self.error = max(self.error, worst)
        return worst

    def _back_codes_with_huge_pages(self) -> None:
        """After every append (which may move faiss's buffer): the scan reads all of it, cold
        when a decode step has streamed the model's weights in between (`smem.memory.pages`)."""
        import faiss

        codes = faiss.downcast_InvertedLists(self._codes.invlists)
        back_with_huge_pages(int(codes.get_codes(0)), codes.list_size(0) * codes.code_size)

    def watched(self, positions: np.ndarray) -> "WatchList":
        """The watch list holding the codes of exactly the coded ones among `positions`
        (sorted, unique). It grows by the new ones when it already holds a subset of them (the
        memories with learned state, which only grow), and is built afresh otherwise (and after
        a fold, which codes more memories); a memory's row is read once, when it joins."""
        coded = positions[: np.searchsorted(positions, self._coded)]
        watch = self._watch
        if watch is not None and len(watch.member) == self._coded:
            new = coded[~watch.member[coded]]
            if len(coded) - len(new) == len(watch):
                if len(new):
                    watch.add(new, self._encode(self.vectors[new]))
                return watch
        self._watch = watch = WatchList(self.dim, self._coded)
        watch.add(coded, self._encode(self.vectors[coded]))
        return watch

    def _encode(self, rows: np.ndarray) -> np.ndarray:
        """Signed 8-bit codes of `rows` (as float32 integers, the form faiss takes)."""
        return np.clip(np.rint((rows - self._centre) / self._step), -CODE_LEVEL, CODE_LEVEL).astype(np.float32)

    def lists(self):
        """The approximate inverted lists (k-means over the vectors, √N lists), built now if due."""
        if self._lists is None:
            import faiss

            started = time.perf_counter()
            count = max(int(math.sqrt(self._coded)), 1)
            sample = self.vectors[: self._coded : max(self._coded // (LIST_SAMPLE * count), 1)]
            kmeans = faiss.Kmeans(self.dim, count, niter=10, seed=0, spherical=True)  # 10: faiss's IVF default
            kmeans.train(np.ascontiguousarray(sample))
            self._centroids = kmeans.centroids
            lists = faiss.IndexIVFScalarQuantizer(
                faiss.IndexFlatIP(self.dim), self.dim, count, faiss.ScalarQuantizer.QT_8bit_direct_signed,
                faiss.METRIC_INNER_PRODUCT, False,
            )
            lists.is_trained = True  # lists are assigned here, in vector space: nothing to train
            self._lists = lists
            for start in range(0, self._coded, CODE_CHUNK):
                rows = self._buffer[start : min(start + CODE_CHUNK, self._coded)]
                self._list_rows(rows, self._encode(rows))
            log.info("approximate lists: %d over %d memories in %.1fs", count, self._coded, time.perf_counter() - started)
        return self._lists

    def _list_rows(self, rows: np.ndarray, codes: np.ndarray) -> None:
        """Append coded rows to the list of their nearest centre (ids continue the codes')."""
        import faiss

        centres = faiss.IndexFlatIP(self.dim)
        centres.add(self._centroids)
        _, nearest = centres.search(np.ascontiguousarray(rows), 1)
        assigned = np.ascontiguousarray(nearest[:, 0], dtype=np.int64)
        self._lists.add_core(len(rows), faiss.swig_ptr(codes), None, faiss.swig_ptr(assigned))


def _one_list(dim: int):
    """A faiss inverted file with one list of signed 8-bit codes (see `VectorIndex._codes`)."""
    import faiss

    everything = faiss.IndexFlatIP(dim)
    everything.add(np.zeros((1, dim), dtype=np.float32))
    codes = faiss.IndexIVFScalarQuantizer(
        everything, dim, 1, faiss.ScalarQuantizer.QT_8bit_direct_signed, faiss.METRIC_INNER_PRODUCT, False
    )
    codes.is_trained = True  # one list, no residuals, direct codes: nothing to train
    return codes


class WatchList:
    """A contiguous second copy of the codes of a few memories that every query must bound
    (the pool's memories with learned state), so that one short pass scores them all.

    Their cosines were bounded from the main scan before: the coded score where the range
    search returned the code, else the search's floor, the same loose bound for every memory
    it left out. With broad topics that let nearly all of a used pool's ~5,000 learned memories
    reach the weakest pick, and each then had its exact boost computed (docs/benchmarks.md,
    "Learned memories watched"). This pass costs 0.15–0.2 ms for 5,000 codes (1.9 MB), measured
    cold on the AVX-512 EPYC."""

    def __init__(self, dim: int, size: int) -> None:
        self._codes = _one_list(dim)
        self.member = np.zeros(size, dtype=bool)
        """(N,) whether each coded memory is watched."""
        self._count = 0

    def __len__(self) -> int:
        return self._count

    def add(self, positions: np.ndarray, codes: np.ndarray) -> None:
        """Watch the memories at `positions` (none watched yet), given their codes."""
        self._codes.add_with_ids(np.ascontiguousarray(codes), positions.astype(np.int64))
        self.member[positions] = True
        self._count += len(positions)

    def scores(self, units: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Every watched memory's position and integer score against the query's `units`, in
        the list's order: one range search that lets every code through."""
        lowest = -(CODE_LEVEL**2) * units.shape[1] - 1  # below any code's integer score
        _, integer, ids = self._codes.range_search(units, float(lowest))
        return ids.astype(np.int64), integer.astype(np.float64)


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
        self._approx = np.zeros(0, dtype=np.float64)
        self._floor: Optional[float] = None
        """Every code whose coded score exceeds this is in `_ids` (None: no search yet)."""
        self._tail: Optional[np.ndarray] = None
        self._gathered: Optional[tuple[np.ndarray, np.ndarray, np.ndarray]] = None
        """The last `gathered` positions, their rows and cosines."""
        if index._codes is None:
            self._all = dot_rows(index.vectors, query)
            return
        # The query in code space: w = step ⊙ q, rounded to integers u = w / scale.
        step = index._step.astype(np.float64)
        weighted = step * query
        self._scale = float(np.abs(weighted).max()) / CODE_LEVEL
        units = np.rint(weighted / self._scale) if self._scale > 0 else np.zeros(index.dim)
        rounded = self._scale * units / step  # q̂: the query the integer scan really scores
        self._units = units.astype(np.float32).reshape(1, -1)
        self._offset = float(index._centre.astype(np.float64) @ rounded)
        self.query_error = float(np.linalg.norm(query.astype(np.float64) - rounded))
        """|q − q̂|, the query's own rounding (exact, in float64)."""
        # faiss may accumulate the integer products in float32: Higham's γ_n·Σ|c·u| with |c| ≤ 127.
        integer_rounding = self._scale * index.dim * 2.0**-24 * CODE_LEVEL * float(np.abs(units).sum())
        self._margin = (
            index.error * float(np.linalg.norm(query))
            + (1.0 + index.error) * self.query_error
            + integer_rounding
            + rounding_margin(index.dim)
        )

    @property
    def complete(self) -> bool:
        """Whether every memory's exact cosine is already known (an unquantised pool's scan)."""
        return self._all is not None

    def exact_cosines(self) -> np.ndarray:
        """Every memory's cosine (one full float32 pass, kept for the rest of the query)."""
        if self._all is None:
            self._all = dot_rows(self._index.vectors, self.query)
        return self._all

    def cosines(self, positions: np.ndarray, rows: Optional[np.ndarray] = None) -> np.ndarray:
        """Exact cosines of the memories at `positions`; `rows`, their vectors if the caller
        already gathered them (a gather of thousands of rows costs as much as the product)."""
        if self._all is not None:
            return self._all[positions]
        return dot_rows(self._index.vectors[positions] if rows is None else rows, self.query)

    def cosine_bounds(self, positions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Upper bounds on the cosines of the memories at `positions` (sorted, unique) without
        reading their vectors: a gather of scattered rows misses the cache on every row once a
        decode step has streamed the model's weights through. Returns the same positions in
        the order of their bounds, and the bounds. Exact where the scan has them (an unquantised
        pool, the exact tail); else the coded score plus the margin, from one pass over the
        index's `WatchList` of these memories (kept from query to query)."""
        if self._all is not None:
            return positions, self._all[positions]
        if not len(positions):  # a pool with no learned state yet
            return positions, np.zeros(0)
        coded = self._index._coded
        tail = positions[np.searchsorted(positions, coded) :]
        watched, integer = self._index.watched(positions).scores(self._units)
        upper = self._offset + self._scale * integer + self._margin
        return (
            np.concatenate([watched, tail]),
            np.concatenate([upper, self._tail_cosines()[tail - coded]]),
        )

    def gathered(self, positions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The vectors and exact cosines of the memories at `positions`: the ones `remember`
        kept if they are the same positions (a widening round prunes its candidates by exact
        cosine, then scores the survivors), else gathered from the pool."""
        if self._gathered is not None:
            seen, rows, cosines = self._gathered
            if len(seen) == len(positions) and np.array_equal(seen, positions):
                return rows, cosines
        rows = self._index.vectors[positions]
        return rows, self.cosines(positions, rows)

    def remember(self, positions: np.ndarray, rows: np.ndarray, cosines: np.ndarray) -> None:
        """Keep these positions' rows and exact cosines for the next `gathered` of them."""
        self._gathered = (positions, rows, cosines)

    def top(self, count: int) -> tuple[np.ndarray, float]:
        """At least the `count` nearest positions, and a bound on the cosine of any other."""
        size = len(self._index)
        if count >= size:
            return np.arange(size), -np.inf
        if self._all is not None:
            part = np.argpartition(-self._all, count)
            return part[:count], float(self._all[part[count]])
        coded = self._index._coded
        if self._floor is None:
            self._range(self._first_radius(count))
        if len(self._ids) <= count < coded:
            self._search(count + 1)
        if count < coded:
            part = np.argpartition(-self._approx, count)
            found, bound = self._ids[part[:count]], float(self._approx[part[count]]) + self._margin
        else:
            found, bound = self._ids, -np.inf
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
        if self._all is not None:
            return np.flatnonzero(self._all > threshold), threshold
        radius = self._cover(threshold)
        found = self._ids[self._approx > radius]
        tail = self._tail_cosines()
        return np.concatenate([found, self._index._coded + np.flatnonzero(tail > threshold)]), threshold

    def bounds(self, threshold: float) -> tuple[np.ndarray, np.ndarray, float]:
        """Upper bounds on cosines: (positions, a bound on each one's cosine, a bound on every
        other position's), searched far enough that no other position's cosine exceeds
        `threshold`. A hybrid (cosine + BM25) query needs a bound per memory, not a yes/no:
        a memory below `threshold` in cosine can still be lifted above it by its BM25 score."""
        if self._all is not None:
            return np.arange(len(self._all)), self._all, -np.inf
        self._cover(threshold)
        tail = self._tail_cosines()
        positions = np.concatenate([self._ids, self._index._coded + np.arange(len(tail))])
        upper = np.concatenate([self._approx + self._margin, tail])
        return positions, upper, self._floor + self._margin

    def nearest(self, count: int) -> np.ndarray:
        """About the `count` nearest positions, with no bound on what is missed: the codes of
        the lists whose centres are nearest (`APPROXIMATE_PROBES` of √N), and the exact tail."""
        size = len(self._index)
        if count >= size:
            return np.arange(size)
        if self._all is not None:
            return np.argpartition(-self._all, count)[:count]
        index = self._index
        lists = index.lists()
        closeness = dot_rows(index._centroids, self.query)
        probes = min(max(APPROXIMATE_PROBES, len(closeness) // 10), len(closeness))
        visit = np.argpartition(-closeness, probes - 1)[:probes]
        lists.nprobe = probes
        _, ids = lists.search_preassigned(
            self._units, count, visit.reshape(1, -1).astype(np.int64), closeness[visit].reshape(1, -1).astype(np.float32)
        )
        found = ids[0][ids[0] >= 0].astype(np.int64)
        tail = self._tail_cosines()
        if count < len(tail):
            return np.concatenate([found, index._coded + np.argpartition(-tail, count)[:count]])
        return np.concatenate([found, index._coded + np.arange(len(tail))])

    def _cover(self, threshold: float) -> float:
        """Search further if needed, so that every code whose cosine may exceed `threshold` is in
        `_ids`; the coded-score radius that takes (`above` and `bounds` share it)."""
        radius = threshold - self._margin
        if self._floor is None or radius < self._floor:
            self._range(radius)
        return radius

    def _first_radius(self, count: int) -> float:
        """A coded-score radius that about max(FIRST_RESULTS, N/64, 2·count) codes exceed,
        estimated from the exact cosines of a strided sample."""
        coded = self._index._coded
        wanted = max(FIRST_RESULTS, coded // 64, 2 * count)
        if wanted >= coded:
            return -np.inf
        sample = dot_rows(self._index._sample, self.query)
        rank = min(int(len(sample) * wanted / coded), len(sample) - 1)
        return -float(np.partition(-sample, rank)[rank])

    def _range(self, radius: float) -> None:
        """Every code whose coded score exceeds `radius`, in one pass (unordered)."""
        lowest = -(CODE_LEVEL**2) * self._index.dim - 1  # below any code's integer score
        limit = lowest
        if self._scale > 0 and np.isfinite(radius):
            # In integer units, one lower, so that rounding the radius can only let more in.
            limit = max(math.floor((radius - self._offset) / self._scale) - 1, lowest)
        _, integer, ids = self._index._codes.range_search(self._units, float(limit))
        self._ids = ids.astype(np.int64)
        self._approx = self._offset + self._scale * integer.astype(np.float64)
        self._floor = -np.inf if limit == lowest else self._offset + self._scale * float(limit)

    def _search(self, count: int) -> None:
        """The `count` best codes (a top-k search)."""
        integer, ids = self._index._codes.search(self._units, count)
        valid = ids[0] >= 0
        self._ids = ids[0][valid].astype(np.int64)
        self._approx = self._offset + self._scale * integer[0][valid].astype(np.float64)
        # Every code scoring above the last (lowest) one found is among them.
        self._floor = -np.inf if len(self._ids) == self._index._coded else float(self._approx[-1])

    def _tail_cosines(self) -> np.ndarray:
        if self._tail is None:
            self._tail = dot_rows(self._index.vectors[self._index._coded :], self.query)
        return self._tail
