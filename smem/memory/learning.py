"""Hebbian state of a pool and its update rule.

Per memory: retrieval count, last retrieval time, and — only for memories ever retrieved
with a query — a running sum and count of unit query vectors. The sum is O(D) yet gives
both the mean direction of past queries and their mean pairwise similarity (specificity),
so no list of past queries is kept and a 1M-memory pool fits in RAM.

Links form a sparse symmetric graph of two kinds, kept apart so a viewer can tell them apart:
- *encoding* links, made when memories are added: memories written close together on the
  same day (adjacent turns of one conversation) are wired together — the contiguity effect
  of human episodic memory. They are fixed: the pool never re-encodes.
- *learned* links, grown by use: memories in context together strengthen the edge between
  them. They are read normalised by both ends' retrieval counts, so two generalists that
  are retrieved with everything are not strongly linked to each other.
Both live in COO arrays (pair → slot dict only for updates), so the graph the retrieval
spreads over is built with one vectorised call and cached until the state changes.
"""

from __future__ import annotations

import functools
import itertools
from dataclasses import dataclass, field
from typing import Optional, Sequence

import numpy as np
from scipy import sparse

from smem.memory import scoring

ENCODING = "encoding"
LEARNED = "learned"


@dataclass
class LearningState:
    """Picklable, so it can travel out of a ZeroGPU worker through a yield."""

    counts: np.ndarray
    last_retrieved: np.ndarray
    """Epoch seconds; NaN where never retrieved."""
    query_slot: np.ndarray
    """Row in `query_sum`/`query_count`, or -1 where no query ever retrieved the memory."""
    query_sum: np.ndarray
    query_count: np.ndarray
    """Summed activity of the queries (a retrieval counts as much as the memory was active)."""
    query_count_sq: np.ndarray
    """Summed squared activity: with `query_count` it gives specificity for weighted queries.
    All three query arrays grow by doubling; rows past `slots_used` are spare capacity."""
    slots_used: int = 0
    total_count: float = 0.0
    active_count: int = 0
    link_a: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    link_b: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    link_w: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.float64))
    """Learned links, each pair once (a < b); rows past `links_used` are spare capacity."""
    links_used: int = 0
    encoded_a: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    encoded_b: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    encoded_w: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.float64))
    """Encoding links, each pair once (a < b), strength in (0, 1]."""
    updates: int = 0
    """Calls to `reinforce` that changed something (an answer makes one per context segment)."""
    answers: int = 0
    """Uses learned from: one per counted reinforcement — an answer of the streaming engine,
    or a `retrieve(learn=True)`."""
    _slot: dict[tuple[int, int], int] = field(default_factory=dict, repr=False, compare=False)
    _graph: Optional["LinkGraph"] = field(default=None, repr=False, compare=False)
    """Built on demand; reset by every update."""
    _encoding_graph: Optional["LinkGraph"] = field(default=None, repr=False, compare=False)
    """The encoding links alone, what retrieval spreads over while learned links lend nothing
    (the default); built on demand, reset only when memories or encoding links are added."""
    _specificity: Optional[np.ndarray] = field(default=None, repr=False, compare=False)
    """Per query slot: `scoring.specificity` of its queries. With `_norms`, what retrieval reads
    of a memory's past queries besides their direction; both change only when a query reaches
    the memory, so they are kept per slot (built on demand, refreshed by `_add_query`) instead
    of recomputed for every candidate of every query (two thirds of a 1k query's boost terms)."""
    _norms: Optional[np.ndarray] = field(default=None, repr=False, compare=False)
    """Per query slot: |query sum| (float32), the denominator of `scoring.query_alignment`."""
    _learned: Optional[np.ndarray] = field(default=None, repr=False, compare=False)
    """Sorted positions with learned state (`learned_positions`), built on demand and grown
    by `reinforce`: learned state only ever grows, and finding it afresh is two passes over
    N per query (0.12 ms of a 5 ms query at 100k, measured on the latency bench's pools)."""

    @classmethod
    def empty(cls, size: int, dim: int) -> "LearningState":
        return cls(
            counts=np.zeros(size, dtype=np.float32),
            last_retrieved=np.full(size, np.nan),
            query_slot=np.full(size, -1, dtype=np.int32),
            query_sum=np.zeros((0, dim), dtype=np.float32),
            query_count=np.zeros(0, dtype=np.float32),
            query_count_sq=np.zeros(0, dtype=np.float32),
        )

    def __len__(self) -> int:
        return len(self.counts)

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_graph"] = None
        state["_encoding_graph"] = None
        state["_specificity"] = state["_norms"] = state["_learned"] = None
        return state

    def copy(self) -> "LearningState":
        return LearningState(
            counts=self.counts.copy(),
            last_retrieved=self.last_retrieved.copy(),
            query_slot=self.query_slot.copy(),
            query_sum=self.query_sum.copy(),
            query_count=self.query_count.copy(),
            query_count_sq=self.query_count_sq.copy(),
            slots_used=self.slots_used,
            total_count=self.total_count,
            active_count=self.active_count,
            link_a=self.link_a.copy(),
            link_b=self.link_b.copy(),
            link_w=self.link_w.copy(),
            links_used=self.links_used,
            encoded_a=self.encoded_a.copy(),
            encoded_b=self.encoded_b.copy(),
            encoded_w=self.encoded_w.copy(),
            updates=self.updates,
            answers=self.answers,
            _slot=dict(self._slot),
            _specificity=None if self._specificity is None else self._specificity.copy(),
            _norms=None if self._norms is None else self._norms.copy(),
            _learned=self._learned,
        )

    def grow(self, extra: int) -> None:
        """Make room for `extra` newly added memories, which start unlearned."""
        self.counts = np.concatenate([self.counts, np.zeros(extra, dtype=np.float32)])
        self.last_retrieved = np.concatenate([self.last_retrieved, np.full(extra, np.nan)])
        self.query_slot = np.concatenate([self.query_slot, np.full(extra, -1, dtype=np.int32)])
        self._graph = self._encoding_graph = None

    def encode_links(self, a: np.ndarray, b: np.ndarray, strength: np.ndarray) -> None:
        """Add encoding links (made once, when the memories are added)."""
        low, high = np.minimum(a, b).astype(np.int64), np.maximum(a, b).astype(np.int64)
        self.encoded_a = np.concatenate([self.encoded_a, low])
        self.encoded_b = np.concatenate([self.encoded_b, high])
        self.encoded_w = np.concatenate([self.encoded_w, np.asarray(strength, dtype=np.float64)])
        self._graph = self._encoding_graph = None

    def mean_active_count(self) -> float:
        """Kept incrementally: scanning a 1M-entry count array would cost a millisecond per query."""
        return self.total_count / self.active_count if self.active_count else 0.0

    def learned_weights(self) -> np.ndarray:
        """Learned link weights as retrieval reads them: the raw co-retrieval weight times how
        *specifically* the pair co-occurs (weight over the geometric mean of both counts,
        a cosine over retrieval events, capped at 1)."""
        a, b, w = self.link_a[: self.links_used], self.link_b[: self.links_used], self.link_w[: self.links_used]
        scale = np.sqrt(np.maximum(self.counts[a].astype(np.float64) * self.counts[b], 1e-12))
        return w * np.minimum(w / scale, 1.0)

    def graph(self, learned_scale: float) -> Optional["LinkGraph"]:
        """Both kinds of link over the memories that have any, the learned kind scaled by
        `learned_scale`; None while there are none. Cached until links or counts change.

        With `learned_scale` 0 the learned links lend nothing, so the graph is the encoding
        links alone, cached across learning (rebuilding it after every retrieval cost a
        1k-memory `retrieve(learn=True)` a third of its time)."""
        if learned_scale == 0:
            if not len(self.encoded_w):
                return None
            if self._encoding_graph is None:
                empty_int, empty_float = np.zeros(0, dtype=np.int64), np.zeros(0)
                self._encoding_graph = LinkGraph(
                    (0.0, len(self), len(self.encoded_w)),
                    self.encoded_a,
                    self.encoded_b,
                    self.encoded_w,
                    empty_int,
                    empty_int,
                    empty_float,
                )
            return self._encoding_graph
        if not (self.links_used or len(self.encoded_w)):
            return None
        key = (learned_scale, len(self), len(self.encoded_w))
        if self._graph is None or self._graph.key != key:
            self._graph = LinkGraph(
                key,
                self.encoded_a,
                self.encoded_b,
                self.encoded_w,
                self.link_a[: self.links_used],
                self.link_b[: self.links_used],
                learned_scale * self.learned_weights(),
            )
        return self._graph

    def learned_positions(self) -> np.ndarray:
        """Sorted positions with learned state (a query association or a count): every other
        memory's boost is recency, emotion and the time match alone. Never written in place,
        so a copy of the state may share it."""
        if self._learned is None:
            self._learned = np.flatnonzero(self._has_learned(slice(None)))
        return self._learned

    def _has_learned(self, index: np.ndarray | slice) -> np.ndarray:
        """Whether the memories at `index` have learned state: a query association or a count."""
        return (self.query_slot[index] >= 0) | (self.counts[index] > 0)

    def query_stats(self, slots: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(specificity float64, |query sum| float32) of query slots, from the per-slot cache.
        Each row is computed alone (row by row, as `scoring.specificity` and a row norm are),
        so a cached value is the same bits a fresh computation over any rows gives."""
        if self._specificity is None:
            self._specificity = np.zeros(len(self.query_count))
            self._norms = np.zeros(len(self.query_count), dtype=np.float32)
            used = slice(0, self.slots_used)
            sums = self.query_sum[used]
            self._specificity[used] = scoring.specificity(sums, self.query_count[used], self.query_count_sq[used])
            self._norms[used] = np.linalg.norm(sums, axis=1)
        return self._specificity[slots], self._norms[slots]

    def reinforce(
        self,
        index: Sequence[int],
        *,
        query: Optional[np.ndarray],
        now: float,
        activity: Optional[Sequence[float]] = None,
        link_strength: float = 1.0,
        count: bool = True,
    ) -> None:
        """One Hebbian event over memories (pool positions) that were selected together.

        `activity` (0..1, default 1) says how strongly each memory took part — the pool
        passes each pick's score relative to the best pick — so a barely relevant memory
        at the tail of a long selection learns little. Counts and query associations grow
        by the activity, links by the product of both ends' activities (Hebb's rule).
        """
        positions = np.asarray(index, dtype=np.int64)
        if activity is None:
            weights = np.ones(len(positions))
        else:
            weights = scoring.unit_interval(np.asarray(activity, dtype=np.float64))
        positions, first = np.unique(positions, return_index=True)
        weights = weights[first]
        if len(positions) == 0:
            return
        self.updates += 1
        self._graph = None
        if count:
            self.answers += 1
            self.active_count += int(np.count_nonzero(self.counts[positions] == 0))
            self.total_count += float(weights.sum())
            self.counts[positions] += weights.astype(np.float32)
            self.last_retrieved[positions] = now
        if query is not None:
            self._add_query(positions, weights, query)
        if self._learned is not None:
            # `positions` are sorted and unique: insert the new ones in place (np.union1d hashes
            # the whole array again, 0.48 ms per update at 5,000 learned memories, measured here).
            now_learned = positions[self._has_learned(positions)]
            new = now_learned[~scoring.sorted_lookup(self._learned, now_learned)[1]]
            self._learned = np.insert(self._learned, np.searchsorted(self._learned, new), new)
        if link_strength > 0 and len(positions) > 1:
            # Per pair of one selection (at most max_memories² / 2), never per memory of the pool.
            pairs = list(itertools.combinations(positions.tolist(), 2))  # (a, b), a < b
            slots = [self._slot.get(pair) for pair in pairs]
            if None in slots:
                slots = self._new_links(pairs, slots)
            left, right = _pair_ends(len(positions))
            # Each pair once (positions are unique), so a plain scatter adds like np.add.at.
            self.link_w[slots] += link_strength * weights[left] * weights[right]

    def _new_links(self, pairs: list[tuple[int, int]], slots: list[Optional[int]]) -> list[int]:
        """`slots` with a new slot for each pair that has none (None), made in pair order."""
        new = [pair for pair, slot in zip(pairs, slots) if slot is None]
        start, end = self.links_used, self.links_used + len(new)
        if end > len(self.link_w):
            capacity = max(2 * len(self.link_w), end, 64)
            self.link_a = _grown(self.link_a, capacity, start)
            self.link_b = _grown(self.link_b, capacity, start)
            self.link_w = _grown(self.link_w, capacity, start)
        self.link_a[start:end], self.link_b[start:end] = zip(*new)
        self._slot.update(zip(new, range(start, end)))
        self.links_used = end
        return [self._slot[pair] for pair in pairs]

    def _add_query(self, index: np.ndarray, weights: np.ndarray, query: np.ndarray) -> None:
        new = index[self.query_slot[index] < 0]
        if len(new):
            start = self.slots_used
            self.slots_used += len(new)
            if self.slots_used > len(self.query_count):
                capacity = max(2 * len(self.query_count), self.slots_used, 64)
                self.query_sum = _grown(self.query_sum, capacity, start)
                self.query_count = _grown(self.query_count, capacity, start)
                self.query_count_sq = _grown(self.query_count_sq, capacity, start)
            self.query_slot[new] = np.arange(start, self.slots_used, dtype=np.int32)
        slots = self.query_slot[index]
        sums = self.query_sum[slots] + weights[:, None].astype(np.float32) * query.astype(np.float32)
        counts = self.query_count[slots] + weights.astype(np.float32)
        squares = self.query_count_sq[slots] + (weights * weights).astype(np.float32)
        self.query_sum[slots], self.query_count[slots], self.query_count_sq[slots] = sums, counts, squares
        if self._specificity is not None:
            if len(self._specificity) < len(self.query_count):
                self._specificity = _grown(self._specificity, len(self.query_count), len(self._specificity))
                self._norms = _grown(self._norms, len(self.query_count), len(self._norms))
            self._specificity[slots] = scoring.specificity(sums, counts, squares)
            self._norms[slots] = np.linalg.norm(sums, axis=1)

    def edges(self, kind: str = LEARNED) -> list[tuple[int, int, float]]:
        """Links of one kind as (a, b, raw weight), each pair once with a < b."""
        if kind == LEARNED:
            a, b, w = self.link_a[: self.links_used], self.link_b[: self.links_used], self.link_w[: self.links_used]
        elif kind == ENCODING:
            a, b, w = self.encoded_a, self.encoded_b, self.encoded_w
        else:
            raise ValueError(f"link kind must be {LEARNED!r} or {ENCODING!r}, got {kind!r}")
        return list(zip(a.tolist(), b.tolist(), w.tolist()))

    def to_arrays(self) -> dict[str, np.ndarray]:
        return {
            "counts": self.counts,
            "last_retrieved": self.last_retrieved,
            "query_slot": self.query_slot,
            "query_sum": self.query_sum[: self.slots_used],
            "query_count": self.query_count[: self.slots_used],
            "query_count_sq": self.query_count_sq[: self.slots_used],
            "link_a": self.link_a[: self.links_used],
            "link_b": self.link_b[: self.links_used],
            "link_w": self.link_w[: self.links_used],
            "encoded_a": self.encoded_a,
            "encoded_b": self.encoded_b,
            "encoded_w": self.encoded_w,
        }

    @classmethod
    def from_arrays(
        cls, arrays: dict[str, np.ndarray], updates: int, answers: int, total_count: Optional[float] = None
    ) -> "LearningState":
        """Inverse of `to_arrays`; files saved before encoding links existed load with none.
        `total_count` is the saved running total (None: the sum of the counts)."""
        counts = arrays["counts"].astype(np.float32)
        link_a, link_b = arrays["link_a"].astype(np.int64), arrays["link_b"].astype(np.int64)
        empty_int, empty_float = np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float64)
        return cls(
            counts=counts,
            last_retrieved=arrays["last_retrieved"].astype(np.float64),
            query_slot=arrays["query_slot"].astype(np.int32),
            query_sum=arrays["query_sum"].astype(np.float32),
            query_count=arrays["query_count"].astype(np.float32),
            query_count_sq=arrays["query_count_sq"].astype(np.float32),
            slots_used=len(arrays["query_count"]),
            total_count=float(counts.sum(dtype=np.float64)) if total_count is None else float(total_count),
            active_count=int(np.count_nonzero(counts)),
            link_a=link_a,
            link_b=link_b,
            link_w=arrays["link_w"].astype(np.float64),
            links_used=len(link_a),
            encoded_a=arrays.get("encoded_a", empty_int).astype(np.int64),
            encoded_b=arrays.get("encoded_b", empty_int).astype(np.int64),
            encoded_w=arrays.get("encoded_w", empty_float).astype(np.float64),
            updates=updates,
            answers=answers,
            _slot={(a, b): slot for slot, (a, b) in enumerate(zip(link_a.tolist(), link_b.tolist()))},
        )


class LinkGraph:
    """The link graph restricted to memories that have a link, as CSR matrices.

    Indexing by compact node number (not pool position) keeps every build O(links), never
    O(pool size): a 1M-memory pool with a few hundred learned links rebuilds in microseconds.
    """

    def __init__(self, key, enc_a, enc_b, enc_w, learned_a, learned_b, learned_w) -> None:
        self.key = key
        self.nodes = np.unique(np.concatenate([enc_a, enc_b, learned_a, learned_b]))
        size = len(self.nodes)
        self.encoding = _symmetric(self._compact(enc_a), self._compact(enc_b), enc_w, size)
        self.learned = _symmetric(self._compact(learned_a), self._compact(learned_b), learned_w, size)
        self.both = (self.encoding + self.learned).tocsr()

    def _compact(self, positions: np.ndarray) -> np.ndarray:
        return np.searchsorted(self.nodes, positions)

    def _known(self, positions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(compact numbers, mask) of the positions that have links."""
        return scoring.sorted_lookup(self.nodes, positions)

    def neighbours(self, positions: np.ndarray) -> np.ndarray:
        """Pool positions linked (weight > 0) to any of `positions` (spreading activation's reach)."""
        linked, weights = self.edges(positions)
        return np.unique(linked[weights > 0])

    def edges(self, positions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(linked pool position, weight) of every link from any of `positions`, both kinds
        summed, one entry per link end: what the memories at `positions` lend, in one lookup
        (16 µs for 10 picks, against 82 µs for `row` on each as it was, measured here)."""
        found, known = self._known(np.asarray(positions, dtype=np.int64))
        _, columns, weights = _rows(self.both, found[known])
        return self.nodes[columns], weights

    def row(self, position: int) -> tuple[np.ndarray, np.ndarray]:
        """(linked pool positions, weights) of one memory, both kinds summed. Called once per
        pick by `select`, so it looks the one position up as a scalar: 3.4 µs a call against
        8.2 µs through `_known`'s array lookup (measured here)."""
        found = int(np.searchsorted(self.nodes, position))
        if found == len(self.nodes) or self.nodes[found] != position:
            return np.zeros(0, dtype=np.int64), np.zeros(0)
        start, end = self.both.indptr[found], self.both.indptr[found + 1]
        return self.nodes[self.both.indices[start:end]], self.both.data[start:end]

    def block(self, positions: np.ndarray, kind: str) -> np.ndarray:
        """Dense weights of one kind among `positions` (a handful of picks)."""
        matrix = self.encoding if kind == ENCODING else self.learned
        if not matrix.nnz:  # no links of this kind (learned links lend nothing by default)
            return np.zeros((len(positions), len(positions)))
        found, known = self._known(np.asarray(positions, dtype=np.int64))
        dense = np.zeros((len(positions), len(positions)))
        inner = np.flatnonzero(known)
        rows, columns, data = _rows(matrix, found[inner])
        order = np.argsort(found[inner])
        at, hit = scoring.sorted_lookup(found[inner][order], columns)
        dense[inner[rows[hit]], inner[order[at[hit]]]] = data[hit]
        return dense


def _rows(matrix: sparse.csr_matrix, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(which of `rows`, column, value) of every stored entry in those CSR rows, gathered with
    numpy alone: scipy's fancy row indexing costs ~0.1 ms of overhead per call."""
    starts, ends = matrix.indptr[rows], matrix.indptr[rows + 1]
    lengths = ends - starts
    which = np.repeat(np.arange(len(rows)), lengths)
    offsets = np.arange(int(lengths.sum())) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    flat = starts[which] + offsets
    return which, matrix.indices[flat], matrix.data[flat]


def _symmetric(a: np.ndarray, b: np.ndarray, w: np.ndarray, size: int) -> sparse.csr_matrix:
    rows, cols = np.concatenate([a, b]), np.concatenate([b, a])
    return sparse.csr_matrix((np.concatenate([w, w]), (rows, cols)), shape=(size, size))


@functools.lru_cache(maxsize=64)  # one entry per selection size (max_memories is at most a few dozen)
def _pair_ends(count: int) -> tuple[np.ndarray, np.ndarray]:
    """(first, second) index of every pair of `count` items, in `itertools.combinations`
    order (read-only; `np.triu_indices` costs ~0.1 ms a call, a tenth of a 1k query)."""
    first, second = np.triu_indices(count, 1)
    first.flags.writeable = second.flags.writeable = False
    return first, second


def _grown(array: np.ndarray, capacity: int, used: int) -> np.ndarray:
    grown = np.zeros((capacity, *array.shape[1:]), dtype=array.dtype)
    grown[:used] = array[:used]
    return grown
