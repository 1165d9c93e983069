"""State kept between or inside queries for speed never changes a selection.

The per-slot query statistics (`LearningState.query_stats`), the positions with learned
state (`LearningState.learned_positions`), the all-memory scores of an
unquantised pool (`MemoryPool._score_everything`) and the batched learned-link slots must
give, after any mix of learning, adding, copying, pickling and state swaps, the very bits a
pool rebuilt from scratch gives.
"""

from __future__ import annotations

import itertools
import pickle

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from smem import MemoryPool
from smem.memory import scoring
from smem.memory.learning import LEARNED, LearningState

DIM = 16


def unit(vectors: np.ndarray) -> np.ndarray:
    return (vectors / np.linalg.norm(vectors, axis=-1, keepdims=True)).astype(np.float32)


def hits(found) -> list[tuple]:
    return [(h.id, h.score, h.similarity, h.multiplier) for h in found]


def rebuilt(pool: MemoryPool, keyed) -> MemoryPool:
    """The same pool from its saved bytes: no cache survives a save."""
    return MemoryPool.load(pool.to_bytes(), keyed(dim=DIM))


def fresh_stats(state: LearningState) -> tuple[np.ndarray, np.ndarray]:
    used = slice(0, state.slots_used)
    sums = state.query_sum[used]
    return scoring.specificity(sums, state.query_count[used], state.query_count_sq[used]), np.linalg.norm(sums, axis=1)


@settings(
    max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow]
)
@given(st.data())
def test_cached_state_retrieves_what_a_rebuilt_pool_retrieves(keyed, data):
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1), label="seed"))
    pool = MemoryPool(keyed(dim=DIM), seed=0, association_weight=1.0, diversity_weight=0.5)
    centres = unit(rng.standard_normal((5, DIM)))

    def memories(count: int) -> np.ndarray:
        return unit(centres[rng.integers(0, 5, count)] + 0.4 * rng.standard_normal((count, DIM)))

    pool.add_many([{"content": f"note {i} w{i % 7}"} for i in range(300)], embeddings=memories(300))
    steps = st.sampled_from(["learn", "reinforce", "add", "copy", "pickle", "swap", "reset"])
    for step in data.draw(st.lists(steps, max_size=12), label="steps"):
        query = memories(1)[0]
        if step == "learn":
            pool.retrieve(query, max_memories=int(rng.integers(1, 12)), learn=True, now=1.75e9)
        elif step == "reinforce":
            ids = [m.id for m in pool.memories]
            pool.reinforce(list(rng.choice(ids, 4)), query=query, now=1.75e9)  # repeats allowed
        elif step == "add":
            start = len(pool)
            pool.add_many([{"content": f"late {start + i}"} for i in range(20)], embeddings=memories(20))
        elif step == "copy":
            pool = pool.copy()
        elif step == "pickle":
            pool = pickle.loads(pickle.dumps(pool))
            pool._embedder = keyed(dim=DIM)
        elif step == "swap":
            pool.set_learning_state(pool.learning_state())
        else:
            pool.reset_learning()
        other = rebuilt(pool, keyed)
        for text in (None, "note w3"):
            ask = dict(max_memories=8, now=1.75e9, learn=False)
            if text is not None:
                ask["query_vector"] = query
            asked = query if text is None else text
            exact = other.retrieve(asked, exact=True, **ask)
            assert hits(pool.retrieve(asked, exact=True, **ask)) == hits(exact)
            assert hits(pool.retrieve(asked, **ask)) == hits(exact)
        state = pool.learning
        assert np.array_equal(state.learned_positions(), np.flatnonzero((state.query_slot >= 0) | (state.counts > 0)))
    state = pool.learning
    if state._specificity is not None:
        specificity, norms = fresh_stats(state)
        cached = state.query_stats(np.arange(state.slots_used))
        assert np.array_equal(cached[0], specificity) and np.array_equal(cached[1], norms)


def test_learned_links_add_up_pair_by_pair():
    """Batched slot creation gives every pair its own slot and the Hebbian weight sum."""
    rng = np.random.default_rng(0)
    state = LearningState.empty(50, DIM)
    expected: dict[tuple[int, int], float] = {}
    for _ in range(40):
        positions = rng.integers(0, 50, int(rng.integers(1, 9)))
        activity = rng.uniform(0, 1, len(positions))
        state.reinforce(positions.tolist(), query=None, now=0.0, activity=activity.tolist())
        first: dict[int, float] = {}
        for position, weight in zip(positions.tolist(), activity.tolist()):
            first.setdefault(position, weight)
        for (a, wa), (b, wb) in itertools.combinations(sorted(first.items()), 2):
            expected[(a, b)] = expected.get((a, b), 0.0) + wa * wb
    learned = {(a, b): w for a, b, w in state.edges(LEARNED)}
    assert learned.keys() == expected.keys()
    assert all(np.isclose(learned[pair], weight) for pair, weight in expected.items())
    assert len({state._slot[pair] for pair in expected}) == len(expected) == state.links_used
