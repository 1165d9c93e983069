"""`retrieve(..., approximate=True)`: the explicitly approximate option (inverted lists).

It returns valid hits within the budget and k, finds memories added after its lists were
built, gives exact's selection on pools too small to quantise, and on a clustered pool
picks most of what exact scoring picks (a loose floor: the latency bench measures it).
"""

from __future__ import annotations

import numpy as np

from smem import MemoryPool

DIM = 32


def unit(vectors: np.ndarray) -> np.ndarray:
    return (vectors / np.linalg.norm(vectors, axis=-1, keepdims=True)).astype(np.float32)


def clustered_pool(keyed, rng: np.random.Generator, size: int, threshold: int) -> tuple[MemoryPool, np.ndarray]:
    centres = unit(rng.standard_normal((30, DIM)))
    vectors = unit(centres[rng.integers(0, 30, size)] + 0.5 * rng.standard_normal((size, DIM)) / np.sqrt(DIM))
    records = [{"content": " ".join(["w"] * int(n))} for n in rng.integers(1, 40, size)]
    pool = MemoryPool(keyed(dim=DIM), seed=0, quantized_threshold=threshold)
    pool.add_many(records, embeddings=vectors)
    return pool, centres


def test_approximate_hits_are_valid_within_k_and_budget_and_mostly_exacts(keyed):
    rng = np.random.default_rng(0)
    pool, centres = clustered_pool(keyed, rng, 6000, threshold=1000)
    overlaps = []
    for centre in centres[:20]:
        query = unit(centre + 0.3 * rng.standard_normal(DIM) / np.sqrt(DIM))
        for k, budget in ((10, None), (6, 60)):
            hits = pool.retrieve(query, max_memories=k, token_budget=budget, now=1.75e9, learn=False, approximate=True)
            exact = pool.retrieve(query, max_memories=k, token_budget=budget, now=1.75e9, learn=False, exact=True)
            ids = [hit.id for hit in hits]
            assert 0 < len(hits) <= k and len(set(ids)) == len(ids) and all(i in pool for i in ids)
            if budget is not None:
                assert sum(hit.memory.tokens for hit in hits) <= budget
            for hit in hits:  # scored exactly: the similarity is the memory's true cosine
                assert np.isclose(hit.similarity, float(pool._index.vectors[pool.position(hit.id)] @ query), atol=1e-6)
            overlaps.append(len(set(ids) & {hit.id for hit in exact}) / len(exact))
    assert pool._index._lists is not None  # the lists were used, not a full scan
    assert np.mean(overlaps) >= 0.8


def test_approximate_finds_memories_added_after_its_lists_were_built(keyed):
    rng = np.random.default_rng(1)
    pool, _ = clustered_pool(keyed, rng, 3000, threshold=1000)
    pool.retrieve(unit(rng.standard_normal(DIM)), learn=False, approximate=True)
    # 100 stay in the exact tail (under 1/16 of the codes); 400 more are folded into the codes
    # and the lists (requantising if they fall outside the trained ranges).
    for round_, count in enumerate((100, 400, 400)):
        late = unit(rng.standard_normal((count, DIM)))
        added = pool.add_many([{"content": f"late {round_} {i}"} for i in range(count)], embeddings=late)
        hits = pool.retrieve(late[7], max_memories=3, learn=False, approximate=True)
        assert hits[0].id == added[7].id
        assert (pool._index._coded == len(pool)) == (round_ > 0)
    assert pool._index._lists.ntotal == pool._index._coded


def test_approximate_is_exact_on_a_pool_too_small_to_quantise(keyed):
    rng = np.random.default_rng(2)
    pool, centres = clustered_pool(keyed, rng, 800, threshold=20_000)
    for centre in centres[:5]:
        query = unit(centre + 0.3 * rng.standard_normal(DIM) / np.sqrt(DIM))
        approximate = pool.retrieve(query, max_memories=8, now=1.75e9, learn=False, approximate=True)
        exact = pool.retrieve(query, max_memories=8, now=1.75e9, learn=False, exact=True)
        assert [(h.id, h.score) for h in approximate] == [(h.id, h.score) for h in exact]
