"""Greedy selection of memories from scored candidates.

One pick at a time: argmax (or a seeded softmax draw) over the current scores; each pick
damps candidates similar to it (MMR-style diversity) and lends its co-retrieval links to
its neighbours; stop at `max_memories` or when the token budget is full. All per-step
work is vectorised over the candidates; the loop runs once per *pick*, never per memory.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

import numpy as np

from smem.memory import scoring


@dataclass(frozen=True)
class Candidates:
    """The memories that can still be chosen, as parallel arrays."""

    index: np.ndarray
    """Pool positions (int64)."""
    vectors: np.ndarray
    similarity: np.ndarray
    boost: np.ndarray
    """Sum of the boost terms that do not depend on earlier picks."""
    tokens: np.ndarray
    favour: np.ndarray
    """Per-candidate factor ≥ 1 (incumbent hysteresis); 1 for most."""


@dataclass(frozen=True)
class Pick:
    position: int
    """Position in the candidate arrays."""
    score: float
    similarity: float
    multiplier: float


LinkLookup = Callable[[int], tuple[np.ndarray, np.ndarray]]
"""Pool position → (neighbour pool positions, link weights)."""


def softmax(values: np.ndarray, temperature: float) -> np.ndarray:
    scaled = values / max(temperature, 1e-6)
    scaled = scaled - scaled.max()
    weights = np.exp(scaled)
    return weights / weights.sum()


def select(
    candidates: Candidates,
    *,
    max_memories: int,
    token_budget: Optional[int],
    links: LinkLookup,
    link_weight: float,
    diversity_weight: float,
    temperature: float,
    rng: Optional[np.random.Generator],
) -> list[Pick]:
    """Choose up to `max_memories`; `rng` set means sample from the softmax, else argmax."""
    count = len(candidates.index)
    if count == 0 or max_memories <= 0:
        return []
    gate = scoring.gate(candidates.similarity.astype(np.float64))
    available = gate > 0.0
    link_sum = np.zeros(count)
    damping = np.ones(count)
    remaining = np.inf if token_budget is None else float(token_budget)
    order = np.argsort(candidates.index)
    sorted_index = candidates.index[order]
    picks: list[Pick] = []
    while len(picks) < max_memories:
        available &= candidates.tokens <= remaining
        if not available.any():
            break
        mult = scoring.multiplier(candidates.boost + link_weight * scoring.link_strength(link_sum))
        score = gate * mult
        ranked = np.where(available, score * damping * candidates.favour, -np.inf)
        if rng is None:
            pos = int(np.argmax(ranked))
        else:
            live = np.flatnonzero(available)
            pos = int(rng.choice(live, p=softmax(ranked[live], temperature)))
        picks.append(Pick(pos, float(score[pos]), float(candidates.similarity[pos]), float(mult[pos])))
        available[pos] = False
        remaining -= float(candidates.tokens[pos])
        overlap = np.maximum(candidates.vectors @ candidates.vectors[pos], 0.0)
        damping = np.minimum(damping, 1.0 - diversity_weight * overlap * overlap)
        neighbours, weights = links(int(candidates.index[pos]))
        if len(neighbours):
            found = np.minimum(np.searchsorted(sorted_index, neighbours), count - 1)
            hit = sorted_index[found] == neighbours
            np.add.at(link_sum, order[found[hit]], weights[hit])
    return picks
