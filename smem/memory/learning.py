"""Hebbian state of a pool and its update rule.

Per memory: retrieval count, last retrieval time, and — only for memories ever retrieved
with a query — a running sum and count of unit query vectors. The sum is O(D) yet gives
both the mean direction of past queries and their mean pairwise similarity (specificity),
so no list of past queries is kept and a 1M-memory pool fits in RAM.
Co-retrieval links are a sparse symmetric graph: memories selected together strengthen
the edge between them.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Optional, Sequence

import numpy as np


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
    links: dict[int, dict[int, float]] = field(default_factory=dict)
    events: int = 0

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
            links={node: dict(edges) for node, edges in self.links.items()},
            events=self.events,
        )

    def grow(self, extra: int) -> None:
        """Make room for `extra` newly added memories, which start unlearned."""
        self.counts = np.concatenate([self.counts, np.zeros(extra, dtype=np.float32)])
        self.last_retrieved = np.concatenate([self.last_retrieved, np.full(extra, np.nan)])
        self.query_slot = np.concatenate([self.query_slot, np.full(extra, -1, dtype=np.int32)])

    def mean_active_count(self) -> float:
        """Kept incrementally: scanning a 1M-entry count array would cost a millisecond per query."""
        return self.total_count / self.active_count if self.active_count else 0.0

    def neighbours(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """Linked memories and how *specifically* they co-occur with `index`.

        The raw co-retrieval weight is divided by the geometric mean of both retrieval
        counts (a cosine over retrieval events): two generalists that are retrieved with
        everything are not strongly linked to each other.
        """
        edges = self.links.get(index)
        if not edges:
            return np.zeros(0, dtype=np.int64), np.zeros(0)
        others = np.fromiter(edges.keys(), dtype=np.int64, count=len(edges))
        weights = np.fromiter(edges.values(), dtype=np.float64, count=len(edges))
        scale = np.sqrt(np.maximum(self.counts[others].astype(np.float64) * float(self.counts[index]), 1e-12))
        return others, weights * np.minimum(weights / scale, 1.0)

    def query_rows(self, index: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Query sums, weights and squared weights for pool positions (zeros where never queried)."""
        slots = self.query_slot[index]
        known = slots >= 0
        sums = np.zeros((len(index), self.query_sum.shape[1]), dtype=np.float32)
        counts = np.zeros(len(index), dtype=np.float32)
        squares = np.zeros(len(index), dtype=np.float32)
        sums[known] = self.query_sum[slots[known]]
        counts[known] = self.query_count[slots[known]]
        squares[known] = self.query_count_sq[slots[known]]
        return sums, counts, squares

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
        weights = np.ones(len(positions)) if activity is None else np.clip(np.asarray(activity, dtype=np.float64), 0.0, 1.0)
        positions, first = np.unique(positions, return_index=True)
        weights = weights[first]
        if len(positions) == 0:
            return
        self.events += 1
        if count:
            self.active_count += int(np.count_nonzero(self.counts[positions] == 0))
            self.total_count += float(weights.sum())
            self.counts[positions] += weights.astype(np.float32)
            self.last_retrieved[positions] = now
        if query is not None:
            self._add_query(positions, weights, query)
        if link_strength > 0:
            for (a, wa), (b, wb) in itertools.combinations(zip(positions.tolist(), weights.tolist()), 2):
                weight = self.links.get(a, {}).get(b, 0.0) + link_strength * wa * wb
                self.links.setdefault(a, {})[b] = weight
                self.links.setdefault(b, {})[a] = weight

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
        self.query_sum[slots] += weights[:, None].astype(np.float32) * query.astype(np.float32)
        self.query_count[slots] += weights.astype(np.float32)
        self.query_count_sq[slots] += (weights * weights).astype(np.float32)

    def edges(self) -> list[tuple[int, int, float]]:
        return [(a, b, w) for a, edges in self.links.items() for b, w in edges.items() if a < b]

    def to_arrays(self) -> dict[str, np.ndarray]:
        edges = self.edges()
        return {
            "counts": self.counts,
            "last_retrieved": self.last_retrieved,
            "query_slot": self.query_slot,
            "query_sum": self.query_sum[: self.slots_used],
            "query_count": self.query_count[: self.slots_used],
            "query_count_sq": self.query_count_sq[: self.slots_used],
            "link_a": np.array([a for a, _, _ in edges], dtype=np.int64),
            "link_b": np.array([b for _, b, _ in edges], dtype=np.int64),
            "link_w": np.array([w for _, _, w in edges], dtype=np.float64),
        }

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray], events: int) -> "LearningState":
        links: dict[int, dict[int, float]] = {}
        for a, b, w in zip(arrays["link_a"].tolist(), arrays["link_b"].tolist(), arrays["link_w"].tolist()):
            links.setdefault(a, {})[b] = w
            links.setdefault(b, {})[a] = w
        counts = arrays["counts"].astype(np.float32)
        return cls(
            counts=counts,
            last_retrieved=arrays["last_retrieved"].astype(np.float64),
            query_slot=arrays["query_slot"].astype(np.int32),
            query_sum=arrays["query_sum"].astype(np.float32),
            query_count=arrays["query_count"].astype(np.float32),
            query_count_sq=arrays["query_count_sq"].astype(np.float32),
            slots_used=len(arrays["query_count"]),
            total_count=float(counts.sum()),
            active_count=int(np.count_nonzero(counts)),
            links=links,
            events=events,
        )


def _grown(array: np.ndarray, capacity: int, used: int) -> np.ndarray:
    grown = np.zeros((capacity, *array.shape[1:]), dtype=array.dtype)
    grown[:used] = array[:used]
    return grown
