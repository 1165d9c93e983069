"""The Streaming Memory score, vectorised over candidate memories.

    score = max(cos, 0)² × (1 + tanh(recency + frequency + emotion + associations))

The squared cosine is a multiplicative gate: nothing irrelevant gets in on boosts alone.
Every boost term is ≥ 0, so the multiplier lies in [1, MAX_MULTIPLIER = 2). Every term
added here, including the links lent during selection and the time match, keeps it: they
only ever enter through `multiplier`. The candidate search uses a tighter bound, each term
at its largest (`MemoryPool._boost_bound`), which a new boost term must extend.

The learned terms (frequency and query association) are scaled by *query specificity*:
the mean pairwise similarity of the queries that retrieved a memory before. A "generalist"
memory reached by many unrelated queries gets little learned boost — that is what keeps
self-reinforcement from crowding relevant memories out.

*Habituation* goes one step further for such generalists: the gate of a memory retrieved by
many *different* queries is divided by 1 + habituation × log(1 + diverse retrievals / the
average memory's), a factor in (0, 1]. It only ever lowers a score, so every bound above holds.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

SECONDS_PER_DAY = 86_400.0

MAX_MULTIPLIER = 2.0
"""Supremum of `multiplier` (1 + tanh of a non-negative boost), whatever the state."""


def max_multiplier() -> float:
    """The strict upper bound on any memory's multiplier, whatever the learning state."""
    return MAX_MULTIPLIER


@dataclass(frozen=True)
class ScoringWeights:
    """Weights of the boost terms (chosen on the LoCoMo dev conversations with one-knob sweeps,
    docs/benchmarks.md; round values, not the sweep optimum, to avoid fitting five conversations)."""

    recency: float = 0.02
    """Weight of recency of retrieval. Chosen as a tie-breaker (tanh(0.02) ≈ 0.02, a 2% nudge at
    most); removing it moves LoCoMo dev recall@10 by 0.000 (+0.002 before habituation;
    docs/benchmarks.md, Ablation)."""
    recency_half_life_days: float = 30.0
    """Chosen: a month, the time scale of a tutor's or a family's notes; not swept."""
    frequency: float = 0.02
    """Weight of how often a memory was retrieved (scaled by query specificity). Chosen as a
    tie-breaker like recency; removing it moves recall@10 by −0.002 (+0.002 before habituation;
    Ablation)."""
    emotion: float = 0.1
    """Weight of `emotional_intensity` (a 10% nudge at most). Chosen, not tuned: LoCoMo gives every
    memory the same intensity, so only the sample sets show it (Ablation: −emotion, 0.000)."""
    association_threshold: float = 0.8
    """Cosine to the mean of past queries above which a query earns the learned association:
    above the 0.3–0.5 that loosely related sentences share with MiniLM-like embedders (see
    `query_alignment`). Chosen; removing the association term moves recall@10 by 0.000 (Ablation)."""
    links: float = 1.5
    """Weight of the link term each pick lends to the memories linked to it (saturating, see
    `link_strength`). LoCoMo dev recall@10, learning on: 0.742 / 0.754 / 0.748 at 0.75 / 1.5 / 3
    (docs/benchmarks.md, sensitivity)."""
    learned_links: float = 0.0
    """Scale of learned links against encoding links (an adjacent turn's encoding link is 1).
    Learned links are still formed, saved, listed and drawn, but lend nothing by default:
    unlabelled co-retrieval is mostly noise on LoCoMo (98% of learned links join no two
    evidence turns). Recall@10 / @5 with habituation 0.5: 0.754 / 0.662 at 0, 0.750 / 0.652
    at 0.1; without habituation, recall@10 0.747 / 0.738 / 0.722 at 0 / 0.1 / 0.3 (docs/benchmarks.md)."""
    encoding_window: int = 2
    """Memories added together and dated the same day are linked to this many neighbours each
    side (LoCoMo dev recall@10, before habituation: 0.726 / 0.738 / 0.737 at 1 / 2 / 3; 0 turns
    encoding links off)."""
    time: float = 0.5
    """Boost for memories dated inside a time the query names ("in May 2023"). LoCoMo dev
    recall@10, learning on, before habituation: 0.729 / 0.738 / 0.741 at 0.25 / 0.5 / 1; learning off:
    0.727 at 0, 0.752 at 0.5."""
    habituation: float = 0.5
    """Repetition suppression of hubs (see `habituation`). On LoCoMo dev, in the first 5, a turn
    that 4–7 earlier questions had in their first 5 is evidence 2.6× less often than one never
    retrieved (docs/benchmarks.md, "Why learning from use cost recall"). Recall@10 / @5,
    learning on: 0.747 / 0.646 · 0.755 / 0.659 · 0.754 / 0.662 · 0.749 / 0.661 · 0.743 / 0.647
    at 0 / 0.25 / 0.5 / 0.75 / 1 (learning off: 0.752 / 0.653)."""
    confidence_queries: float = 2.0
    """How many past queries make a learned association trusted: confidence n / (n + 2) is one
    half after two queries (chosen: one query is an accident, a few are a habit)."""


def dot_rows(matrix: np.ndarray, vector: np.ndarray) -> np.ndarray:
    """`matrix @ vector`, but each row's result is the same bits whatever rows come with it.

    BLAS gemv blocks rows, so a row's rounding depends on its neighbours (425 of 300k rows
    differed between subsets, measured with OpenBLAS 0.3.31); `np.vecdot` takes one BLAS dot
    per row, the same way for every row. The fast path and exact scoring see a memory in
    different company, and must still compute the very same score. Measured here (CPU per
    call, AVX2): 3.0 against einsum's 6.8 µs for 64 × 384 (an MMR step), 38 against 71 µs
    at 1k, 7.5 against 9.3 ms at 100k; einsum's per-row loop was the earlier choice.
    """
    return np.vecdot(matrix, vector)


def sorted_lookup(values: np.ndarray, items: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Where each of `items` sits in the sorted, unique `values`, and whether it is there:
    (indices clipped into `values`, bool mask), by binary search (`np.isin` sorts or hashes
    both arrays on every call: 23 against 6 µs for 300 items in 2,000, measured here)."""
    if not len(values):
        return np.zeros(len(items), dtype=np.int64), np.zeros(len(items), dtype=bool)
    where = np.minimum(np.searchsorted(values, items), len(values) - 1)
    return where, values[where] == items


def unit_interval(values: np.ndarray) -> np.ndarray:
    """`np.clip(values, 0, 1)`, the same values (NaN stays NaN), without np.clip's Python-level
    dispatch: 3 µs a call against 1 µs, measured here, and retrieval makes several per query."""
    return np.minimum(np.maximum(values, 0.0), 1.0)


def gate(similarity: np.ndarray) -> np.ndarray:
    positive = np.maximum(similarity, 0.0)
    return positive * positive


def recency(elapsed_seconds: np.ndarray, half_life_days: float) -> np.ndarray:
    """1 just after a retrieval (or creation), halving every `half_life_days`."""
    elapsed = np.maximum(elapsed_seconds, 0.0) / (half_life_days * SECONDS_PER_DAY)
    return np.exp(-math.log(2.0) * elapsed)


def specificity(query_sum: np.ndarray, weight: np.ndarray, weight_sq: np.ndarray) -> np.ndarray:
    """Mean pairwise cosine of past queries, from their running (weighted) sum alone.

    With unit queries q_a of weight w_a, |Σ w_a q_a|² = Σ w_a² + Σ_{a≠b} w_a w_b q_a·q_b, so
    the weighted mean over pairs is (|s|² − Σw²) / ((Σw)² − Σw²). A single query counts as
    fully specific; no query gives 0.
    """
    norm2 = np.einsum("ij,ij->i", query_sum, query_sum, dtype=np.float64)
    total = weight.astype(np.float64)
    pairs = total * total - weight_sq
    # A single query leaves `pairs` = w² − w², zero up to float64 rounding (~1e-16); 1e-9 tells
    # that apart from any real pair of queries (weights are activities, rarely below 0.01).
    mean_pair = np.divide(norm2 - weight_sq, pairs, out=np.ones_like(total), where=pairs > 1e-9)
    return np.where(total > 0, unit_interval(mean_pair), 0.0)


def query_alignment(dots: np.ndarray, norms: np.ndarray, threshold: float) -> np.ndarray:
    """How far this query points along the mean direction of past queries, past `threshold`,
    from `dots` (the query · each memory's query sum, `dot_rows`) and `norms` (|query sum|).

    Loosely related queries share a cosine of 0.3–0.5 with any embedder; only a query that
    truly resembles the earlier ones (cos above the threshold) earns the association.
    """
    cos = np.divide(dots, norms, out=np.zeros_like(norms), where=norms > 0)
    return unit_interval((cos - threshold) / (1.0 - threshold))


def frequency(counts: np.ndarray, mean_active_count: float) -> np.ndarray:
    """Retrieval count relative to the average memory that has been retrieved at all.

    Normalising by the active average (not the whole pool) keeps the term meaningful in a
    1M-memory pool where almost every count is zero.
    """
    if mean_active_count <= 0:
        return np.zeros_like(counts, dtype=np.float64)
    return np.log1p(counts / mean_active_count)


def habituation(
    counts: np.ndarray, specificity: np.ndarray, mean_active_count: float, weight: float
) -> np.ndarray:
    """Factor in (0, 1] on the gate: 1 / (1 + weight × log(1 + diverse / mean_active_count)).

    `diverse` = counts × (1 − specificity) counts retrievals by queries unlike each other: a
    memory asked for again and again by the same need is not a hub (that is what frequency
    rewards), one reached by unrelated needs is — the memory-side analogue of IDF, and of
    repetition suppression in cortex. Logarithmic, like frequency, so it saturates.
    """
    if weight <= 0 or mean_active_count <= 0:
        return np.ones(len(counts))
    diverse = np.maximum(counts, 0.0) * (1.0 - unit_interval(specificity))
    return 1.0 / (1.0 + weight * np.log1p(diverse / mean_active_count))


def link_strength(weights: np.ndarray) -> np.ndarray:
    """Saturating: many weak co-retrievals never outweigh the similarity gate."""
    return weights / (weights + 1.0)


def multiplier(boost: np.ndarray) -> np.ndarray:
    return 1.0 + np.tanh(boost)
