"""Greedy selection of memories from scored candidates.

One pick at a time: argmax (or a seeded softmax draw) over the current scores; each pick
damps candidates similar to it (MMR-style diversity) and lends its co-retrieval links to
its neighbours; stop at `max_memories` or when the token budget is full. All per-step
work is vectorised over the candidates; the loop runs once per *pick*, never per memory.
Past several thousand candidates (broad topics in a large pool) the damping is brought up
to date lazily, only for candidates that could still be the next pick.

Selection over a subset of the pool is *proven* equal to selection over all of it when,
at every argmax step, the pick beats `ceiling` (an upper bound on the ranked score of any
memory left out) and, when it stops early, nothing left out could still fit the budget.
Damping and the budget reach deep into the ranking, so this is checked pick by pick,
not once for the raw top-k. Ties go to the lowest pool position (candidates come sorted
by position), so a subset and the whole pool break them alike.
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
    """(C,) pool positions (int64)."""
    vectors: np.ndarray
    """(C, D) unit float32 embeddings, for the MMR damping between picks."""
    similarity: np.ndarray
    """(C,) hybrid similarity to the query (cosine blended with normalised BM25)."""
    boost: np.ndarray
    """(C,) sum of the boost terms that do not depend on earlier picks."""
    tokens: np.ndarray
    """(C,) prompt tokens of each candidate's rendered line, for the budget."""
    favour: np.ndarray
    """(C,) per-candidate factor ≥ 1 (incumbent hysteresis); 1 for most."""
    habituation: np.ndarray
    """(C,) factor in (0, 1] on the gate (`scoring.habituation`); 1 for most."""


@dataclass(frozen=True)
class Pick:
    position: int
    """Position in the candidate arrays."""
    score: float
    similarity: float
    multiplier: float


@dataclass(frozen=True)
class Selection:
    picks: list[Pick]
    proven: bool
    """False when a memory outside the candidates might have been chosen instead."""
    weakest: float
    """The lowest ranked score among the picks (0 when the budget left room that only a
    memory outside could fill): candidates widened to all that could reach it are likely
    to settle the selection in one more round."""


LAZY_DAMPING_FROM = 8192
"""Past this many candidates the picks' damping is brought up to date lazily; below, every
candidate is damped after every pick, where the bookkeeping costs more than it saves.
Measured (CPU per query) on the AVX-512 EPYC of docs/benchmarks.md "A third CPU kind", since
`dot_rows` became one `np.vecdot` (half einsum's cost): 100k memories in 20 broad topics
(~2,000–2,700 candidates), selection 0.95 ms eager against 1.8 ms lazy, the query 5.9–6.0 against
6.4–6.8 ms; 1M in 20 topics (~13,400 candidates), 5.5 ms either way. 8,192 lies between. (The
earlier threshold, 1,024, was measured with einsum on the AVX2 EPYC under load.)"""

LAZY_DAMPING = 64
"""Candidates first brought up to date with the picks' damping, doubling each round (chosen:
the exact path's first look)."""

LinkLookup = Callable[[int], tuple[np.ndarray, np.ndarray]]
"""Pool position → (neighbour pool positions, link weights)."""


def gumbel_noise(seed: int, index: np.ndarray) -> np.ndarray:
    """Gumbel(0, 1) noise fixed per (seed, pool position): a splitmix64 hash of the pair.

    A streaming answer re-retrieves every few tokens; with fresh dice each time a sampled set
    would change on every call (thrash). With noise tied to the memory, each draw is still a
    softmax sample, but consecutive draws change only where the scores moved enough."""
    # splitmix64's constants and shifts (Steele, Lea & Flood, "Fast splittable pseudorandom number
    # generators", OOPSLA 2014); uint64 overflow is the intended modular arithmetic.
    with np.errstate(over="ignore"):
        z = index.astype(np.uint64) + np.uint64(seed % 2**64) * np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
    # The top 53 bits as a float64 in (0, 1), never 0 or 1, so both logs are finite.
    uniform = ((z >> np.uint64(11)).astype(np.float64) + 0.5) / 2.0**53
    return -np.log(-np.log(uniform))


def select(
    candidates: Candidates,
    *,
    max_memories: int,
    token_budget: Optional[int],
    links: Optional[LinkLookup],
    link_weight: float,
    diversity_weight: float,
    temperature: float,
    noise: Optional[np.ndarray],
    ceiling: float = 0.0,
    fewest_outside_tokens: int = 0,
) -> Selection:
    """Choose up to `max_memories`: argmax, or with `noise` (Gumbel, one per candidate) a
    softmax draw by the Gumbel-max trick, argmax(log(score) / temperature + noise). The first pick
    is an exact softmax sample; the later ones are Gumbel-top-k, sequential draws without
    replacement (exact while scores stay put; approximate where MMR damping and links move
    them between picks).

    `ceiling` bounds the ranked score of every memory not among the candidates (0: none
    can be chosen) and `fewest_outside_tokens` their token counts from below. A softmax
    draw weighs every memory, so it needs them all (`ceiling` 0). `links` is None when
    the pool has no links at all.
    """
    if noise is not None and ceiling > 0:
        raise ValueError("a softmax draw needs every memory among the candidates")
    count = len(candidates.index)
    if count == 0 or max_memories <= 0:
        return Selection([], proven=ceiling <= 0 or max_memories <= 0, weakest=0.0)
    gate = scoring.gate(candidates.similarity.astype(np.float64)) * candidates.habituation  # (C,) float64 max(sim, 0)² × habituation
    available = gate > 0.0  # (C,) bool, still choosable
    link_sum: Optional[np.ndarray] = None  # (C,) link weight from the picks so far, once a pick lends any
    damping = np.ones(count)  # (C,) MMR factor: min over picks of 1 − diversity × cosine²
    remaining = np.inf if token_budget is None else float(token_budget)
    favoured = gate * candidates.favour  # (C,) float64 gate with the incumbents' bonus
    mult = scoring.multiplier(candidates.boost)  # (C,) float64 in [1, 2), links not yet lent
    base = favoured * mult  # (C,) the ranked score before damping: (favoured × mult) × damping, as always
    picks: list[Pick] = []
    lazy = diversity_weight > 0 and count > LAZY_DAMPING_FROM
    if lazy:
        folded = np.zeros(count, dtype=np.int64)  # (C,) how many picks each candidate's `damping` includes
    weakest = np.inf
    proven = True
    while len(picks) < max_memories:
        if token_budget is not None:
            available &= candidates.tokens <= remaining
        ranked, key = _ranked(base * damping, available, noise, temperature)
        chunk = LAZY_DAMPING
        while lazy:
            # A stale damping is an upper bound (each pick only lowers it): only candidates whose
            # bound reaches the best up-to-date key can be the argmax, so only they are damped
            # now, best bounds first. The argmax, its key and every tie are as with every
            # candidate damped after every pick, to the bit (same rows, same products, and min
            # is exact in any order).
            stale = np.flatnonzero(available & (folded < len(picks)))
            current = available & (folded == len(picks))
            best = key[current].max() if current.any() else -np.inf
            stale = stale[key[stale] >= best]
            if not len(stale):
                break
            if len(stale) > chunk:
                stale = stale[np.argpartition(-key[stale], chunk)[:chunk]]
            chunk *= 2  # doubling: a few rounds even when most candidates must be damped
            for step in range(int(folded[stale].min()), len(picks)):
                rows = stale[folded[stale] <= step]
                overlap = np.maximum(scoring.dot_rows(candidates.vectors[rows], candidates.vectors[picks[step].position]), 0.0)
                damping[rows] = np.minimum(damping[rows], 1.0 - diversity_weight * overlap * overlap)
            folded[stale] = len(picks)
            ranked, key = _ranked(base * damping, available, noise, temperature)
        pos = int(key.argmax())
        if ranked[pos] == -np.inf:  # nothing left to choose (every key is −inf)
            if ceiling > 0 and remaining >= fewest_outside_tokens:
                return Selection(picks, proven=False, weakest=0.0)
            break
        if noise is None:
            weakest = min(weakest, float(ranked[pos]))
            # Unproven: go on anyway, so `weakest` covers the whole tentative selection.
            proven = proven and bool(ranked[pos] > ceiling)
        picks.append(Pick(pos, float(gate[pos] * mult[pos]), float(candidates.similarity[pos]), float(mult[pos])))
        if len(picks) == max_memories:
            break  # the last pick's damping and links could only move picks that will not come
        available[pos] = False
        remaining -= float(candidates.tokens[pos])
        if diversity_weight > 0 and not lazy:
            overlap = np.maximum(scoring.dot_rows(candidates.vectors, candidates.vectors[pos]), 0.0)
            damping = np.minimum(damping, 1.0 - diversity_weight * overlap * overlap)
        if links is None:
            continue
        neighbours, weights = links(int(candidates.index[pos]))
        if len(neighbours):
            if link_sum is None:
                link_sum = np.zeros(count)
                order = np.argsort(candidates.index)  # (C,) candidate rows by pool position
                sorted_index = candidates.index[order]  # (C,) pool positions, ascending, to find linked candidates
            found, hit = scoring.sorted_lookup(sorted_index, neighbours)
            if hit.any():
                np.add.at(link_sum, order[found[hit]], weights[hit])
                mult = scoring.multiplier(candidates.boost + link_weight * scoring.link_strength(link_sum))
                base = favoured * mult
    return Selection(picks, proven=proven, weakest=weakest)


def _ranked(
    ranked: np.ndarray, available: np.ndarray, noise: Optional[np.ndarray], temperature: float
) -> tuple[np.ndarray, np.ndarray]:
    """(ranked scores with the unavailable at −inf, the key the pick maximises).

    A draw's key is log(score) / temperature + Gumbel noise, so a memory is drawn with
    probability ∝ score^(1 / temperature): what counts is how many times better a memory
    scores, not by how much. Scores are products (gate × multiplier) lying in [0, 2), and for
    any one question most of a pool scores near 0; a softmax over the raw scores gave that
    long tail almost the weight of the best (at temperature 0.15, 76–83% of the memories drawn
    for the shipped sets' example prompts ranked below 15th by argmax; docs/benchmarks.md,
    "Softmax draws")."""
    ranked = np.where(available, ranked, -np.inf)
    if noise is None:
        return ranked, ranked
    # tiny: an available memory damped to a score of 0 (an exact duplicate at diversity 1)
    # keeps a finite key and comes last; 1e-6 keeps a zero temperature (argmax in effect)
    # from dividing by zero.
    logs = np.where(available, np.log(np.maximum(ranked, np.finfo(np.float64).tiny)), -np.inf)
    return ranked, logs / max(temperature, 1e-6) + noise
