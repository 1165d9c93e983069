"""The fast retrieval path selects exactly what scoring every memory selects.

Property tests on adversarial pools: near-duplicate clusters, long memories under small
token budgets, late vectors from shifted clusters (added after the 8-bit codes were
trained), high diversity, incumbents, learned state with links, hybrid text queries.
The quantised path is forced with a small `quantized_threshold`. Identical means the
same ids in the same order with the same score, similarity and multiplier, bit for bit.
"""

from __future__ import annotations

from types import SimpleNamespace
from unittest import mock

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from smem import MemoryPool
from smem.memory import index as vector_index
from smem.memory import pool as pool_module
from smem.memory import scoring, selection, timeref
from smem.memory.scoring import dot_rows, sorted_lookup
from smem.memory.scoring import ScoringWeights
from smem.memory.selection import Candidates, select

DIM = 24
WORDS = [f"w{i}" for i in range(40)]


def unit(vectors: np.ndarray) -> np.ndarray:
    return (vectors / np.linalg.norm(vectors, axis=-1, keepdims=True)).astype(np.float32)


def build_pool(keyed, data, rng: np.random.Generator) -> tuple[MemoryPool, np.ndarray]:
    """A clustered pool with a near-duplicate clump near the first centre, long memories
    near the centres and short ones far out, then late memories from shifted clusters."""
    size = data.draw(st.integers(200, 2000), label="size")
    clusters = data.draw(st.sampled_from([1, 4, 20, 60]), label="clusters")
    spread = data.draw(st.sampled_from([0.2, 0.6, 1.0]), label="spread")
    duplicates = data.draw(st.integers(0, 120), label="near duplicates")
    late = data.draw(st.integers(0, 400), label="late memories")
    threshold = data.draw(st.sampled_from([100, 150, 10_000]), label="quantized threshold")
    centres = unit(rng.standard_normal((clusters, DIM)))
    assignment = rng.integers(0, clusters, size)
    vectors = centres[assignment] + spread * rng.standard_normal((size, DIM)) / np.sqrt(DIM)
    clump = centres[0] + 0.3 * rng.standard_normal(DIM) / np.sqrt(DIM)
    vectors[:duplicates] = clump + 1e-3 * rng.standard_normal((duplicates, DIM))
    vectors[duplicates : duplicates + duplicates // 4] = clump  # exact duplicates: ties
    vectors = unit(vectors)
    closeness = vectors @ centres[0]
    lengths = np.where(closeness > np.median(closeness), rng.integers(15, 60, size), rng.integers(1, 6, size))
    records = [
        {
            "content": " ".join(rng.choice(WORDS, int(n))),
            "emotional_intensity": float(rng.uniform(0, 1)),
            "created_at": f"2024-{1 + i // 200 % 9:02d}-{1 + i // 20 % 10:02d}T00:00:00Z",  # runs of 20 share a day
        }
        for i, n in enumerate(lengths)
    ]
    pool = MemoryPool(
        keyed(dim=DIM),
        seed=0,
        diversity_weight=data.draw(st.sampled_from([0.0, 0.5, 0.9, 1.0]), label="diversity"),
        association_weight=data.draw(st.sampled_from([0.0, 0.5, 1.0]), label="association"),
        quantized_threshold=threshold,
        weights=ScoringWeights(
            learned_links=data.draw(st.sampled_from([0.0, 0.5, 1.0]), label="learned links"),
            habituation=data.draw(st.sampled_from([0.0, 0.5, 2.0]), label="habituation"),
            encoding_window=data.draw(st.sampled_from([0, 2]), label="encoding window"),
            time=data.draw(st.sampled_from([0.0, 0.3]), label="time match"),
            links=data.draw(st.sampled_from([0.1, 3.0]), label="link weight"),  # 3: a link can outweigh similarity
        ),
    )
    pool.add_many(records, embeddings=vectors)
    pool.build_index()
    if late:
        shift = unit(rng.standard_normal((max(clusters // 2, 1), DIM))) * 0.8
        moved = unit(centres[: len(shift)] + shift)
        late_vectors = unit(moved[rng.integers(0, len(moved), late)] + 0.5 * rng.standard_normal((late, DIM)) / np.sqrt(DIM))
        for chunk in np.array_split(np.arange(late), 3):
            if len(chunk):
                pool.add_many([{"content": " ".join(rng.choice(WORDS, 3))} for _ in chunk], embeddings=late_vectors[chunk])
                pool.retrieve(late_vectors[chunk[0]], max_memories=3, learn=True)
    return pool, centres


def assert_same(fast, exact) -> None:
    assert [h.id for h in fast] == [h.id for h in exact]
    assert [(h.score, h.similarity, h.multiplier) for h in fast] == [(h.score, h.similarity, h.multiplier) for h in exact]


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.function_scoped_fixture])
@given(st.data())
def test_fast_path_selects_exactly_what_exact_scoring_selects(keyed, data):
    # The first range search's size: small values make the sampled radius fall short (a
    # top-k search follows) and the widening rescan; 4096 covers these pools whole.
    first = data.draw(st.sampled_from([1, 16, 4096]), label="first range results")
    with mock.patch.object(vector_index, "FIRST_RESULTS", first):
        check_fast_path(keyed, data)


def check_fast_path(keyed, data) -> None:
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1), label="seed"))
    pool, centres = build_pool(keyed, data, rng)
    ids = [memory.id for memory in pool]
    for _ in range(data.draw(st.integers(0, 8), label="learning rounds")):
        pool.retrieve(unit(centres[rng.integers(len(centres))] + 0.3 * rng.standard_normal(DIM)), max_memories=6, learn=True)
    for _ in range(4):
        target = data.draw(st.sampled_from(["centre", "clump", "memory", "random"]), label="query near")
        base = {
            "centre": centres[rng.integers(len(centres))],
            "clump": pool._index.vectors[0],
            "memory": pool._index.vectors[rng.integers(len(pool))],
            "random": unit(rng.standard_normal(DIM)),
        }[target]
        vector = unit(base + data.draw(st.sampled_from([0.0, 0.05, 0.3]), label="query noise") * rng.standard_normal(DIM))
        text = data.draw(st.booleans(), label="text query")
        when = data.draw(st.sampled_from(["", " in March 2024", " on 3 February 2024"]), label="names a time")
        query = " ".join(rng.choice(WORDS, 3)) + when if text else vector
        kwargs = dict(
            max_memories=data.draw(st.integers(1, 12), label="k"),
            token_budget=data.draw(st.sampled_from([None, 0, 3, 10, 25, 80]), label="budget"),
            incumbents=list(rng.choice(ids, data.draw(st.integers(0, 4), label="incumbents"), replace=False)),
            incumbent_margin=data.draw(st.sampled_from([0.0, 0.15, 0.5]), label="margin"),
            query_vector=vector if text else None,
            now=1.75e9,
            learn=False,
        )
        exact = pool.retrieve(query, exact=True, **kwargs)
        assert_same(pool.retrieve(query, **kwargs), exact)
        learner = pool.copy()
        drawn = pool.copy().retrieve(query, sample=True, exact=True, **kwargs)
        assert_same(learner.retrieve(query, sample=True, **kwargs), drawn)
        pool.retrieve(query, **{**kwargs, "learn": True})


def test_the_fast_path_scores_only_a_few_candidates_yet_matches(keyed):
    """The exactness above is not won by always scoring everything."""
    rng = np.random.default_rng(1)
    centres = unit(rng.standard_normal((40, DIM)))
    vectors = unit(centres[rng.integers(0, 40, 2000)] + 0.6 * rng.standard_normal((2000, DIM)) / np.sqrt(DIM))
    pool = MemoryPool(keyed(dim=DIM), seed=0, quantized_threshold=100)
    pool.add_many([{"content": f"memory {i}"} for i in range(2000)], embeddings=vectors)
    scored: list[int] = []
    select = pool._select

    def counting(index, *args, **kwargs):
        scored.append(len(index))
        return select(index, *args, **kwargs)

    for centre in centres[:10]:
        query = unit(centre + 0.2 * rng.standard_normal(DIM))
        exact = pool.retrieve(query, now=1.75e9, learn=False, exact=True)
        pool._select = counting
        assert_same(pool.retrieve(query, now=1.75e9, learn=False), exact)
        del pool._select
    assert max(scored) < 400


def test_quantisation_error_bound_holds_for_late_shifted_vectors(keyed):
    rng = np.random.default_rng(2)
    centres = unit(rng.standard_normal((8, DIM)))
    pool = MemoryPool(keyed(dim=DIM), quantized_threshold=100)
    pool.add_many([{"content": "x"}] * 1000, embeddings=unit(centres[rng.integers(0, 8, 1000)] + 0.2 * rng.standard_normal((1000, DIM))))
    pool.build_index()
    trained = pool._index.error
    # Far outside the trained per-dimension ranges: a fixed margin would not cover these.
    late = unit(rng.standard_normal((300, DIM)) * np.linspace(0.1, 3.0, DIM))
    pool.add_many([{"content": "y"}] * 300, embeddings=late)
    for query in unit(rng.standard_normal((20, DIM))):
        scan = pool._index.scan(query)
        scan._search(pool._index._coded)
        exact = pool._index.vectors[scan._ids] @ query
        assert np.abs(scan._approx - exact).max() <= scan._margin
        found, bound = scan.top(10)
        outside = np.setdiff1d(np.arange(len(pool)), found)
        assert (pool._index.vectors[outside] @ query).max() <= bound
    assert pool._index._coded == len(pool)  # the late rows were folded into the codes
    assert pool._index.error != trained  # ... and measured (here: requantised with wider ranges)


def test_the_8bit_query_and_the_range_search_are_bounded(keyed):
    """The coded score's two errors are each within their share of the margin (the memory's
    coding error, the query's rounding), and a range search misses no code above its radius."""
    rng = np.random.default_rng(5)
    dim = 64  # a multiple of 16, like 384: faiss's integer path
    centres = unit(rng.standard_normal((6, dim)))
    pool = MemoryPool(keyed(dim=dim), quantized_threshold=100)
    vectors = unit(centres[rng.integers(0, 6, 3000)] + 0.4 * rng.standard_normal((3000, dim)) / np.sqrt(dim))
    pool.add_many([{"content": "x"}] * 3000, embeddings=vectors)
    pool.build_index()
    index = pool._index
    index._codes.make_direct_map()
    decoded = index._centre.astype(np.float64) + index._step * index._codes.reconstruct_n(0, index._coded)
    stored = index.vectors.astype(np.float64)
    assert np.linalg.norm(stored - decoded, axis=1).max() <= index.error + 1e-6
    for query in unit(centres + 0.3 * rng.standard_normal((6, dim))):
        scan = index.scan(query)
        assert 0 < scan.query_error
        assert scan._margin >= index.error + (1 + index.error) * scan.query_error
        scan._search(index._coded)
        ids, approx = scan._ids.copy(), scan._approx.copy()
        # x̂·q − x̂·q̂ is the query's rounding alone: within (1 + e)·|q − q̂|, and not zero.
        rounding = np.abs(decoded[ids] @ query - approx)
        assert rounding.max() <= (1 + index.error) * scan.query_error + 1e-6
        assert rounding.max() > 0
        for radius in np.quantile(approx, [0.5, 0.9, 0.99]):
            scan._range(float(radius))
            assert set(ids[approx > radius]) <= set(scan._ids.tolist())


def test_cosine_bounds_hold_without_reading_the_rows(keyed):
    """`Scan.cosine_bounds` (the learned memories' ceilings in `_choose`) is an upper bound
    on every cosine, exact on the float32 tail and within twice the margin on the codes. A
    memory's row is read only when it joins the index's watch list: asked for the same
    positions again, no row is read; for a few more, only theirs. It stays right when the
    positions are not a superset (rebuilt), when the tail is folded in and when the codes are
    retrained."""
    rng = np.random.default_rng(8)
    dim = 64
    centres = unit(rng.standard_normal((5, dim)))
    pool = MemoryPool(keyed(dim=dim), quantized_threshold=100)
    vectors = unit(centres[rng.integers(0, 5, 2000)] + 0.5 * rng.standard_normal((2000, dim)) / np.sqrt(dim))
    pool.add_many([{"content": "x"}] * 2000, embeddings=vectors)
    pool.build_index()
    def clustered(count):
        return unit(centres[rng.integers(0, 5, count)] + 0.5 * rng.standard_normal((count, dim)) / np.sqrt(dim))

    pool.add_many([{"content": "y"}] * 50, embeddings=clustered(50))  # the exact tail
    index = pool._index
    encoded = []
    encode = vector_index.VectorIndex._encode

    def counted(self, rows):
        encoded.append(len(rows))
        return encode(self, rows)

    def check(positions, *, rows_read=None):
        for query in unit(centres + 0.3 * rng.standard_normal((5, dim))):
            scan = index.scan(query)
            scan.top(20)  # keeps the tail's cosines
            exact = dot_rows(index.vectors, query)  # the bits the pool scores with
            encoded.clear()
            if rows_read == 0:
                unread = mock.PropertyMock(side_effect=AssertionError("read the pool's rows"))
                with mock.patch.object(vector_index.VectorIndex, "vectors", new_callable=lambda: unread):
                    order, upper = scan.cosine_bounds(positions)
            else:
                with mock.patch.object(vector_index.VectorIndex, "_encode", counted):
                    order, upper = scan.cosine_bounds(positions)
            if rows_read is not None:
                assert sum(encoded) == rows_read
                rows_read = 0  # the next query over the same positions reads none
            assert np.array_equal(np.sort(order), positions)
            assert (upper >= exact[order]).all()
            tail = order >= index._coded
            assert (upper[tail] == exact[order[tail]]).all()
            assert (upper[~tail] - exact[order[~tail]]).max() <= 2 * scan._margin
            full = index.scan(query)
            full._search(index._coded)  # every code's score from the index's own codes
            coded = np.empty(index._coded)
            coded[full._ids] = full._approx
            assert np.array_equal(upper[~tail], coded[order[~tail]] + scan._margin), "the watch list's codes are stale"

    first = np.sort(rng.choice(len(pool), 300, replace=False))
    assert (first >= index._coded).any()  # some in the tail
    check(first, rows_read=int((first < index._coded).sum()))
    check(first, rows_read=0)
    grown = np.union1d(first, rng.choice(index._coded, 30, replace=False))
    check(grown, rows_read=len(grown) - len(first))
    other = np.sort(rng.choice(len(pool), 200, replace=False))  # not a superset: rebuilt
    check(other, rows_read=int((other < index._coded).sum()))
    pool.add_many([{"content": "z"}] * 200, embeddings=clustered(200))
    index.scan(centres[0])  # the tail outgrew 1/16 of the codes: folded in with the trained ranges
    assert index._coded == len(pool) and index._watch is not None
    check(np.union1d(other, np.arange(2200, 2250)))
    index.build()  # retrained codes at the same size: the watch list is dropped and built again
    check(np.union1d(other, np.arange(2200, 2250)))


@settings(max_examples=150, deadline=None)
@given(st.data())
def test_lazy_damping_selects_as_damping_everything_after_every_pick(data):
    """Damping only the candidates that could be the next pick changes no pick, score or
    proof: the same selection as damping every candidate after every pick (the most lazy
    against the eager extreme, with near-duplicate clumps, ties, links, budgets and noise)."""
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1), label="seed"))
    count = data.draw(st.integers(1, 300), label="candidates")
    clump = unit(rng.standard_normal(DIM))
    vectors = unit(rng.standard_normal((count, DIM)))
    clumped = rng.random(count) < data.draw(st.sampled_from([0.0, 0.5, 1.0]), label="clumped")
    vectors[clumped] = unit(clump + 0.05 * rng.standard_normal((int(clumped.sum()), DIM)))
    vectors[: count // 8] = vectors[0]  # exact duplicates: ties
    index = np.sort(rng.choice(10 * count, count, replace=False))
    candidates = Candidates(
        index=index,
        vectors=vectors,
        similarity=np.round(rng.uniform(-0.2, 1.0, count), 1),  # rounded: ties
        boost=rng.choice([0.0, 0.1, 0.5], count),
        tokens=rng.integers(1, 30, count),
        favour=np.where(rng.random(count) < 0.1, 1.2, 1.0),
        habituation=np.where(rng.random(count) < 0.2, 0.7, 1.0),
    )
    linked = {int(i): (rng.choice(index, 3), rng.uniform(0, 2, 3)) for i in rng.choice(index, count // 4)}
    noise = rng.gumbel(size=count) if data.draw(st.booleans(), label="sampled") else None
    kwargs = dict(
        max_memories=data.draw(st.integers(1, 12), label="k"),
        token_budget=data.draw(st.sampled_from([None, 5, 40, 150]), label="budget"),
        links=lambda position: linked.get(position, (np.zeros(0, dtype=np.int64), np.zeros(0))),
        link_weight=1.5,
        diversity_weight=data.draw(st.sampled_from([0.0, 0.5, 0.9, 1.0]), label="diversity"),
        temperature=0.15,
        noise=noise,
        ceiling=0.0 if noise is not None else data.draw(st.sampled_from([0.0, 0.2]), label="ceiling"),
    )
    with mock.patch.object(selection, "LAZY_DAMPING_FROM", 0), mock.patch.object(selection, "LAZY_DAMPING", 1):
        lazy = select(candidates, **kwargs)
    with mock.patch.object(selection, "LAZY_DAMPING_FROM", 10**9):
        eager = select(candidates, **kwargs)
    assert lazy == eager


def test_boost_bound_covers_every_memory_after_learning(keyed):
    """The pool-wide bounds hold for every memory and every query, to the last bit."""
    rng = np.random.default_rng(3)
    weights = ScoringWeights(time=0.3, learned_links=0.5, encoding_window=2)
    pool = MemoryPool(keyed(dim=DIM), association_weight=1.0, seed=0, weights=weights)
    vectors = unit(rng.standard_normal((300, DIM)))
    records = [
        {"content": f"m {i}", "emotional_intensity": float(rng.uniform()), "created_at": f"2023-05-{1 + i % 28:02d}T00:00:00Z"}
        for i in range(300)
    ]
    pool.add_many(records, embeddings=vectors)
    for _ in range(30):
        pool.retrieve(unit(vectors[rng.integers(300)] + 0.1 * rng.standard_normal(DIM)), max_memories=8, learn=True)
    named = timeref.named_intervals("what happened in May 2023?")
    assert named
    for query in [*unit(rng.standard_normal((5, DIM))), *vectors[pool.learning.learned_positions()[:20]]]:
        boost = pool._boost(np.arange(300), query, 1.75e9, named)
        assert boost.max() <= pool._boost_bound(named, learned=True)
        untouched = np.setdiff1d(np.arange(300), pool.learning.learned_positions())
        assert len(untouched) and boost[untouched].max() <= pool._boost_bound(named, learned=False)


def test_learned_ceilings_are_exact_wherever_a_level_asks(keyed):
    """`_LearnedReach` starts from ceilings with the pool-wide boost bound and makes exact every one
    at or above a level asked, so what `_choose` reads of it (which ceilings reach a level, the
    largest of them) is what exact boosts give, whatever the order of the levels, by the
    subset path (few above a level) or the whole pass (more than half)."""
    rng = np.random.default_rng(9)
    pool = MemoryPool(keyed(dim=DIM), association_weight=1.0, seed=0)
    vectors = unit(rng.standard_normal((400, DIM)))
    pool.add_many([{"content": f"m {i}"} for i in range(400)], embeddings=vectors)
    for _ in range(40):
        pool.retrieve(unit(vectors[rng.integers(400)] + 0.1 * rng.standard_normal(DIM)), max_memories=8, learn=True)
    learned = pool.learning.learned_positions()
    query = unit(vectors[learned[0]] + 0.05 * rng.standard_normal(DIM))
    similarity = rng.uniform(0.2, 0.9, len(learned))
    exact = scoring.gate(similarity) * scoring.multiplier(pool._boost(learned, query, 1.75e9))
    asked = SimpleNamespace(scan=SimpleNamespace(query=query), now=1.75e9, named=[])
    bound = float(scoring.multiplier(np.array([pool._boost_bound([], learned=True)]))[0])
    reach = pool_module._LearnedReach(pool, asked, learned, similarity, bound)
    assert (reach.above(np.inf) >= exact).all() and (reach.above(np.inf) > exact).any(), "a bound, not the value"
    for quantile in (0.95, 0.8, 0.99, 0.1):
        level = float(np.quantile(exact, quantile))
        values = reach.above(level)
        assert (values >= exact).all()
        assert np.array_equal(values >= level, exact >= level)
        assert np.array_equal(values[values >= level], exact[exact >= level])


def test_spreading_along_a_chain_of_links_ends_in_a_proof_not_a_full_pass(keyed):
    """Each pick of a chain of linked memories lends the next ones enough to be picked, so the
    chain joins the candidates a link round at a time. Those rounds have their own budget:
    when they spent the widenings' budget, this query scored every memory. Both paths (the
    codes, and the unquantised pool that knows every score) select what exact scoring does."""
    rng = np.random.default_rng(11)
    dim = 64
    query = np.zeros(dim, dtype=np.float32)
    query[0] = 1.0

    def at(cosine, count):
        other = rng.standard_normal((count, dim))
        other[:, 0] = 0.0
        return unit(cosine * query + np.sqrt(1.0 - cosine**2) * unit(other))

    # The chain: one day, so each is linked to its next two; the rest: a day apart each, unlinked.
    records = [{"content": f"chain {i}", "created_at": "2024-05-01T12:00:00Z"} for i in range(24)]
    records += [{"content": f"other {i}", "created_at": f"{np.datetime64('2020-01-01') + np.timedelta64(2 * i, 'D')}T12:00:00Z"} for i in range(2000)]
    vectors = np.concatenate([at(0.9, 1), at(0.5, 23), at(0.6, 300), unit(rng.standard_normal((1700, dim)))])
    for threshold in (100, 20_000):
        pool = MemoryPool(keyed(dim=dim), seed=0, quantized_threshold=threshold)
        pool.add_many(records, embeddings=vectors)
        pool.build_index()
        scored = []
        choose = pool._select
        with mock.patch.object(pool, "_select", side_effect=lambda index, *a, **k: scored.append(len(index)) or choose(index, *a, **k)):
            hits = pool.retrieve(query, max_memories=14, now=1.75e9, learn=False)
        assert [hit.memory.content for hit in hits] == [f"chain {i}" for i in range(14)]
        assert_same(hits, pool.retrieve(query, max_memories=14, now=1.75e9, learn=False, exact=True))
        assert len(scored) > pool_module.MAX_WIDENINGS and max(scored) < len(pool), scored


def test_cosines_are_the_same_bits_in_any_company():
    """A memory's cosine must not depend on which other rows are scored with it (BLAS gemv
    blocks rows: at 384-d, 425 of ~300k subset rows differed in the last bits)."""
    rng = np.random.default_rng(4)
    vectors = unit(rng.standard_normal((5000, 384)))
    query = unit(rng.standard_normal(384))
    full = dot_rows(vectors, query)
    for _ in range(50):
        rows = np.sort(rng.choice(5000, int(rng.integers(1, 3000)), replace=False))
        assert np.array_equal(dot_rows(vectors[rows], query), full[rows])
    # ... nor on where its row starts in memory (a BLAS kernel may treat unaligned heads apart).
    for offset in range(4, 64, 4):
        raw = np.zeros(vectors.nbytes + 64, dtype=np.uint8)
        shifted = raw[offset : offset + vectors.nbytes].view(np.float32).reshape(vectors.shape)
        shifted[:] = vectors
        assert np.array_equal(dot_rows(shifted, query), full)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(st.data())
def test_the_hybrid_widening_keeps_every_memory_that_may_reach_the_target(keyed, data):
    """`_hybrid_above` bounds cosine and BM25 jointly, so it must keep every memory whose hybrid
    similarity exceeds the target: one that only BM25 lifts (its cosine below anything the scan
    returned), one that only its cosine lifts, and the late rows outside the codes."""
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1), label="seed"))
    weight = data.draw(st.sampled_from([0.05, 0.2, 0.5, 0.9]), label="lexical weight")
    size = data.draw(st.integers(300, 1500), label="size")
    centres = unit(rng.standard_normal((data.draw(st.sampled_from([1, 5, 30]), label="clusters"), DIM)))
    vectors = unit(centres[rng.integers(0, len(centres), size)] + 0.5 * rng.standard_normal((size, DIM)) / np.sqrt(DIM))
    words = WORDS[: data.draw(st.sampled_from([4, 40]), label="vocabulary")]  # 4: most memories share a query word
    pool = MemoryPool(keyed(dim=DIM), quantized_threshold=100, lexical_weight=weight)
    pool.add_many([{"content": " ".join(rng.choice(words, rng.integers(1, 8)))} for _ in range(size)], embeddings=vectors)
    pool.build_index()
    late = data.draw(st.integers(0, 50), label="late memories")
    if late:
        pool.add_many([{"content": " ".join(rng.choice(words, 3))} for _ in range(late)], embeddings=unit(rng.standard_normal((late, DIM))))
    first = data.draw(st.sampled_from([1, 16, 4096]), label="first range results")
    with mock.patch.object(vector_index, "FIRST_RESULTS", first):
        for _ in range(3):
            query = unit(centres[rng.integers(len(centres))] + 0.3 * rng.standard_normal(DIM))
            lexical = pool._lexical.scores(" ".join(rng.choice(words, 2)))
            scan = pool._index.scan(query)
            scan.top(16)  # the first round's search, as `_choose` runs it
            similarity = (1.0 - weight) * (pool._index.vectors @ query).astype(np.float64) + weight * lexical
            target = float(np.quantile(similarity, data.draw(st.sampled_from([0.5, 0.9, 0.99, 0.999]), label="target quantile")))
            found, bound = pool._hybrid_above(scan, lexical, target)
            assert bound == target
            assert set(np.flatnonzero(similarity > target + 1e-6)) <= set(found.tolist())


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_the_lexical_top_bounds_every_score_it_leaves_out(data):
    """`_lexical_top` finds the best BM25 scores from a sampled threshold, not a partition of
    every score: on heavily tied, sparse or all-zero scores it must still return `count`
    distinct positions (or every nonzero one) and a bound that no other score exceeds."""
    size = data.draw(st.integers(1, 5000), label="size")
    count = data.draw(st.integers(1, 200), label="count")
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1), label="seed"))
    levels = data.draw(st.sampled_from([1, 2, 5, 1000]), label="distinct nonzero scores")  # few levels: ties
    nonzero = data.draw(st.sampled_from([0.0, 0.001, 0.05, 0.5, 1.0]), label="share nonzero")
    lexical = np.where(rng.random(size) < nonzero, rng.integers(1, levels + 1, size) / levels, 0.0).astype(np.float32)
    top, bound = pool_module._lexical_top(lexical, count)
    assert len(np.unique(top)) == len(top) == min(count, int((lexical > 0).sum()))
    left_out = np.setdiff1d(np.arange(size), top)
    assert bound >= 0.0
    assert (lexical[top] >= bound).all()
    assert not len(left_out) or lexical[left_out].max() <= bound


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(0, 300)), st.lists(st.integers(0, 300)))
def test_the_sorted_union_and_membership_are_numpys(first, second):
    first, second = np.array(first, dtype=np.int64), np.array(second, dtype=np.int64)
    union = pool_module._union(first, second)
    assert np.array_equal(union, np.union1d(first, second))
    assert np.array_equal(sorted_lookup(union, second)[1], np.isin(second, union))
    assert np.array_equal(sorted_lookup(np.unique(first), second)[1], np.isin(second, first))
