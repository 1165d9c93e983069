"""MemoryPool behaviour: the score formula, each boost's direction, selection, learning."""

from __future__ import annotations

import math
import pickle
from datetime import datetime, timedelta, timezone

import numpy as np
import pytest

from smem import MemoryFileError, MemoryPool, ScoringWeights

NOW = datetime(2026, 6, 1, tzinfo=timezone.utc)


def basis(dim: int, *pairs: tuple[int, float]) -> np.ndarray:
    v = np.zeros(dim, dtype=np.float32)
    for axis, value in pairs:
        v[axis] = value
    return v / np.linalg.norm(v)


def neutral(**overrides) -> ScoringWeights:
    """Weights with every boost (and habituation) off unless a test turns it on."""
    base = dict(recency=0.0, frequency=0.0, emotion=0.0, links=0.0, habituation=0.0)
    base.update(overrides)
    return ScoringWeights(**base)


def test_score_matches_hand_computation(keyed):
    embedder = keyed(dim=4)
    weights = ScoringWeights(recency=0.02, recency_half_life_days=30.0, emotion=0.1)
    pool = MemoryPool(embedder, weights=weights)
    memory_vector = basis(4, (0, 0.6), (1, 0.8))
    pool.add_many(
        [{"content": "a note", "emotional_intensity": 0.8, "created_at": NOW - timedelta(days=30)}],
        embeddings=memory_vector[None],
    )
    query = basis(4, (0, 1.0))
    [hit] = pool.retrieve(query, max_memories=1, now=NOW, learn=False)
    cos = 0.6
    boost = 0.02 * 0.5 + 0.1 * 0.8
    assert hit.similarity == pytest.approx(cos, abs=1e-6)
    assert hit.multiplier == pytest.approx(1 + math.tanh(boost), abs=1e-7)
    assert hit.score == pytest.approx(cos**2 * (1 + math.tanh(boost)), abs=1e-6)


def test_negative_similarity_is_gated_out(keyed):
    pool = MemoryPool(keyed(dim=2), weights=ScoringWeights(emotion=1.0))
    pool.add_many([{"content": "opposite", "emotional_intensity": 1.0}], embeddings=np.array([[-1.0, 0.0]]))
    assert pool.retrieve(np.array([1.0, 0.0]), max_memories=3, learn=False) == []


def two_equal_memories(keyed, weights: ScoringWeights, **first):
    pool = MemoryPool(keyed(dim=4), weights=weights, diversity_weight=0.0)
    v = basis(4, (0, 1.0), (1, 0.5))
    pool.add_many(
        [
            {"content": "first", "created_at": NOW - timedelta(days=60), **first},
            {"content": "second", "created_at": NOW - timedelta(days=60)},
        ],
        embeddings=np.stack([v, v]),
    )
    return pool, basis(4, (0, 1.0))


def scores(pool, query, **kwargs):
    return {hit.id: hit.score for hit in pool.retrieve(query, max_memories=2, now=NOW, learn=False, **kwargs)}


def test_emotion_raises_score(keyed):
    pool, query = two_equal_memories(keyed, neutral(emotion=0.3), emotional_intensity=0.9)
    result = scores(pool, query)
    assert result["m0"] > result["m1"]


def test_recency_raises_score(keyed):
    pool = MemoryPool(keyed(dim=4), weights=neutral(recency=0.3), diversity_weight=0.0)
    v = basis(4, (0, 1.0), (1, 0.5))
    pool.add_many(
        [{"content": "new", "created_at": NOW - timedelta(days=1)}, {"content": "old", "created_at": NOW - timedelta(days=200)}],
        embeddings=np.stack([v, v]),
    )
    result = scores(pool, basis(4, (0, 1.0)))
    assert result["m0"] > result["m1"]


def test_retrieval_refreshes_recency(keyed):
    pool, query = two_equal_memories(keyed, neutral(recency=0.3))
    before = scores(pool, query)
    pool.reinforce(["m1"], now=NOW)
    after = scores(pool, query)
    assert after["m1"] > before["m1"]
    assert after["m0"] == pytest.approx(before["m0"])


def test_frequency_raises_score_of_a_specific_memory(keyed):
    pool, query = two_equal_memories(keyed, neutral(frequency=0.5))
    pool.add_many([{"content": "third", "created_at": NOW}], embeddings=basis(4, (3, 1.0))[None])
    for _ in range(5):
        pool.reinforce(["m0"], query=query, now=NOW - timedelta(days=60))
    pool.reinforce(["m1"], query=query, now=NOW - timedelta(days=60))
    result = scores(pool, query)
    assert result["m0"] > result["m1"]


def test_query_association_rewards_similar_queries_only(keyed):
    pool, query = two_equal_memories(keyed, neutral())
    pool.reinforce(["m0"], query=query, now=NOW - timedelta(days=60), count=False)
    pool.reinforce(["m0"], query=query, now=NOW - timedelta(days=60), count=False)
    aligned = scores(pool, query)
    assert aligned["m0"] > aligned["m1"]
    unrelated = basis(4, (0, 1.0), (2, 1.2))
    other = scores(pool, unrelated)
    assert other["m0"] == pytest.approx(other["m1"])


def test_specificity_damps_generalists(keyed):
    dim = 8
    pool = MemoryPool(keyed(dim=dim), weights=neutral(frequency=0.5), diversity_weight=0.0)
    v = basis(dim, (0, 1.0))
    pool.add_many([{"content": "specialist"}, {"content": "generalist"}], embeddings=np.stack([v, v]))
    topic = basis(dim, (0, 1.0), (1, 0.3))
    for axis in range(1, dim):
        pool.reinforce(["m0"], query=topic, now=NOW)
        pool.reinforce(["m1"], query=basis(dim, (axis, 1.0)), now=NOW)
    assert pool.retrieval_count("m0") == pool.retrieval_count("m1")
    result = scores(pool, basis(dim, (0, 1.0), (1, 0.1)))
    assert result["m0"] > result["m1"]
    generalist = pool.retrieve(basis(dim, (0, 1.0), (1, 0.1)), max_memories=2, now=NOW, learn=False)[1]
    assert generalist.multiplier < 1.05


def test_links_boost_the_partner_of_a_pick(keyed):
    dim = 4
    pool = MemoryPool(keyed(dim=dim), weights=neutral(links=1.0, learned_links=1.0), association_weight=0.5, diversity_weight=0.0)
    pool.add_many(
        [{"content": "anchor"}, {"content": "partner"}, {"content": "stranger"}],
        embeddings=np.stack([basis(dim, (0, 1.0)), basis(dim, (0, 0.6), (1, 0.8)), basis(dim, (0, 0.6), (2, 0.8))]),
    )
    query = basis(dim, (0, 1.0))
    before = [h.id for h in pool.retrieve(query, max_memories=3, now=NOW, learn=False)]
    assert before[0] == "m0"
    for _ in range(3):
        pool.reinforce(["m0", "m1"], now=NOW)
        pool.reinforce(["m2"], now=NOW)
    hits = pool.retrieve(query, max_memories=3, now=NOW, learn=False)
    by_id = {h.id: h for h in hits}
    assert by_id["m1"].multiplier > by_id["m2"].multiplier
    assert [h.id for h in hits][:2] == ["m0", "m1"]


def test_diversity_avoids_near_duplicates(keyed):
    dim = 8
    duplicate = basis(dim, (0, 1.0), (1, 0.2))
    distinct = basis(dim, (0, 1.0), (2, 0.45))
    records = [{"content": f"dup {i}"} for i in range(3)] + [{"content": "distinct"}]
    vectors = np.stack([duplicate, duplicate, duplicate, distinct])
    query = basis(dim, (0, 1.0))
    plain = MemoryPool(keyed(dim=dim), weights=neutral(), diversity_weight=0.0)
    plain.add_many(records, embeddings=vectors)
    assert [h.id for h in plain.retrieve(query, max_memories=2, learn=False)] == ["m0", "m1"]
    diverse = MemoryPool(keyed(dim=dim), weights=neutral(), diversity_weight=0.5)
    diverse.add_many(records, embeddings=vectors)
    assert [h.id for h in diverse.retrieve(query, max_memories=2, learn=False)] == ["m0", "m3"]


def test_token_budget_is_respected(minilm):
    pool = MemoryPool(minilm)
    pool.add_many(
        [
            {"content": "Alex loves soccer and plays striker every Saturday morning in the park with friends"},
            {"content": "Alex likes soccer"},
            {"content": "Soccer practice moved to Thursdays"},
            {"content": "Alex's soccer coach says his passing improved a lot this season"},
        ]
    )
    budget = 12
    hits = pool.retrieve("soccer", max_memories=4, token_budget=budget, learn=False)
    assert hits, "something fits the budget"
    assert sum(h.tokens for h in hits) <= budget
    assert all(h.tokens == minilm.count_tokens(h.content) for h in hits)
    assert pool.retrieve("soccer", max_memories=4, token_budget=0, learn=False) == []


def test_seeded_sampling_is_reproducible(keyed):
    embedder = keyed(dim=32)
    records = [{"content": f"memory number {i}"} for i in range(40)]

    def draws(seed):
        pool = MemoryPool(embedder, seed=seed, softmax_temperature=1.0)
        pool.add_many(records)
        return [[h.id for h in pool.retrieve("memory number 3", max_memories=5, sample=True, learn=False)] for _ in range(5)]

    assert draws(7) == draws(7)
    assert draws(7) != draws(8)


def test_a_draw_weighs_each_memory_by_its_score_to_the_power_one_over_t(keyed):
    """P(drawn first) ∝ score^(1/T): with a best memory, one at half its score and 200 barely
    related ones, at T = 0.5 the best is drawn first 0.81² / (0.81² + 0.405² + 200 × 0.0025²) ≈ 0.80
    of the time. A softmax over the raw scores drew it first in ~2% of draws: the barely related
    tail outweighed it (docs/benchmarks.md, "Softmax draws")."""
    dim = 8
    best, half = basis(dim, (0, 0.9), (1, math.sqrt(1 - 0.81))), basis(dim, (0, math.sqrt(0.405)), (2, math.sqrt(1 - 0.405)))
    tail = [basis(dim, (0, 0.05), (3 + i % 5, math.sqrt(1 - 0.0025))) for i in range(200)]
    pool = MemoryPool(keyed(dim=dim), weights=neutral(time=0.0), softmax_temperature=0.5, lexical_weight=0.0)
    pool.add_many([{"content": f"note {i}"} for i in range(202)], embeddings=np.stack([best, half, *tail]))
    query = basis(dim, (0, 1.0))
    scores = {h.id: h.score for h in pool.retrieve(query, max_memories=3, learn=False, now=NOW)}
    assert scores["m0"] == pytest.approx(0.81, rel=1e-4) and scores["m1"] == pytest.approx(0.405, rel=1e-4)
    firsts = [pool.retrieve(query, max_memories=1, learn=False, now=NOW, sample=True, sample_seed=s)[0].id for s in range(600)]
    shares = {memory: firsts.count(memory) / len(firsts) for memory in ("m0", "m1")}
    expected = 0.81**2 / (0.81**2 + 0.405**2 + 200 * 0.0025**2)
    assert abs(shares["m0"] - expected) < 0.05, shares
    assert abs(shares["m1"] - expected / 4) < 0.05, shares


def test_learning_off_leaves_state_untouched(minilm):
    pool = MemoryPool(minilm)
    pool.add_many([{"content": "Alex loves soccer"}, {"content": "Fractions with pizza slices worked"}])
    pool.retrieve("soccer", max_memories=2, learn=True)
    before = pool.learning_state()
    pool.retrieve("fractions", max_memories=2, learn=False)
    after = pool.learning_state()
    for name, value in before.to_arrays().items():
        np.testing.assert_array_equal(value, after.to_arrays()[name], err_msg=name)
    assert before.updates == after.updates


def test_learning_updates_counts_links_and_queries(minilm):
    pool = MemoryPool(minilm)
    pool.add_many([{"content": "Alex loves soccer"}, {"content": "Alex plays striker"}, {"content": "Mom is a nurse"}])
    hits = pool.retrieve("soccer striker", max_memories=2, now=NOW)
    ids = sorted(h.id for h in hits)
    assert ids == ["m0", "m1"]
    assert pool.retrieval_count(hits[0].id) == 1
    assert 0 < pool.learning.counts[pool.position(hits[1].id)] <= 1
    assert [(a, b) for a, b, _ in pool.links()] == [("m0", "m1")]
    assert pool.learning.last_retrieved[0] == NOW.timestamp()


def test_hybrid_similarity_finds_exact_names(minilm):
    pool = MemoryPool(minilm, diversity_weight=0.0)
    pool.add_many(
        [
            {"content": "Mrs. Okonkwo teaches Alex's science class"},
            {"content": "Alex's teacher said he participates more in class now"},
            {"content": "The class field trip is to the aquarium"},
        ]
    )
    dense_only = MemoryPool(minilm, diversity_weight=0.0, lexical_weight=0.0)
    dense_only.add_many([{"content": m.content} for m in pool.memories])
    query = "What did Okonkwo say?"
    assert pool.retrieve(query, max_memories=1, learn=False)[0].id == "m0"
    hybrid_score = pool.retrieve(query, max_memories=3, learn=False)
    dense_score = dense_only.retrieve(query, max_memories=3, learn=False)
    assert {h.id: h.similarity for h in hybrid_score}["m0"] > {h.id: h.similarity for h in dense_score}["m0"]


def test_incumbents_resist_near_ties(keyed):
    dim = 4
    pool = MemoryPool(keyed(dim=dim), weights=neutral(), diversity_weight=0.0)
    pool.add_many(
        [{"content": "a"}, {"content": "b"}],
        embeddings=np.stack([basis(dim, (0, 1.0), (1, 0.50)), basis(dim, (0, 1.0), (1, 0.52))]),
    )
    query = basis(dim, (0, 1.0))
    assert pool.retrieve(query, max_memories=1, learn=False)[0].id == "m0"
    assert pool.retrieve(query, max_memories=1, learn=False, incumbents=["m1"], incumbent_margin=0.1)[0].id == "m1"


def test_fast_path_matches_exact_scoring_in_an_ann_pool(keyed):
    rng = np.random.default_rng(0)
    dim, size = 32, 6000
    centres = rng.standard_normal((60, dim)).astype(np.float32)
    vectors = centres[rng.integers(0, 60, size)] + 0.6 * rng.standard_normal((size, dim)).astype(np.float32)
    pool = MemoryPool(keyed(dim=dim), quantized_threshold=1000, seed=0)
    pool.add_many([{"content": f"m {i}"} for i in range(size)], embeddings=vectors)
    queries = centres[rng.integers(0, 60, 60)] + 0.6 * rng.standard_normal((60, dim)).astype(np.float32)
    same = 0
    for q in queries:
        exact = [h.id for h in pool.retrieve(q, max_memories=10, learn=False, exact=True)]
        fast = [h.id for h in pool.retrieve(q, max_memories=10, learn=True)]
        same += exact == fast
    assert same == len(queries)  # proven, not just likely (tests/test_retrieval_exact.py)


def test_add_validates_and_is_all_or_nothing(keyed):
    pool = MemoryPool(keyed())
    pool.add("first memory", id="a")
    with pytest.raises(MemoryFileError, match=r"record 2, field 'emotional_intensity'"):
        pool.add_many([{"content": "fine"}, {"content": "bad", "emotional_intensity": 3}])
    with pytest.raises(MemoryFileError, match=r"field 'content'"):
        pool.add("   ")
    with pytest.raises(MemoryFileError, match=r"id 'a' is already in the pool"):
        pool.add_many([{"content": "x", "id": "a"}])
    with pytest.raises(ValueError, match="shape"):
        pool.add_many([{"content": "x"}], embeddings=np.zeros((1, 3)))
    assert [m.id for m in pool] == ["a"]
    assert len(pool.learning) == 1


def test_bad_arguments_are_rejected(keyed):
    with pytest.raises(ValueError, match="softmax_temperature"):
        MemoryPool(keyed(), softmax_temperature=0)
    pool = MemoryPool(keyed())
    pool.add("x")
    with pytest.raises(ValueError, match="max_memories"):
        pool.retrieve("x", max_memories=-1)
    with pytest.raises(ValueError, match="NaN"):
        pool.retrieve(np.full(pool.dim, np.nan))
    with pytest.raises(KeyError, match="nope"):
        pool.reinforce(["nope"])
    assert pool.learning.updates == 0


def test_copy_and_pickle_are_independent(minilm):
    pool = MemoryPool(minilm)
    pool.add_many([{"content": "Alex loves soccer"}, {"content": "Alex plays striker"}])
    clone = pool.copy()
    clone.retrieve("soccer", max_memories=2)
    clone.add("A new memory only the clone has")
    assert pool.learning.updates == 0 and len(pool) == 2
    revived = pickle.loads(pickle.dumps(clone))
    assert revived.embedder is minilm
    assert [h.id for h in revived.retrieve("soccer", 2, now=NOW, learn=False)] == [
        h.id for h in clone.retrieve("soccer", 2, now=NOW, learn=False)
    ]
    assert revived.links() == clone.links()


def test_stopword_only_memories_and_queries(minilm):
    pool = MemoryPool(minilm)
    pool.add_many([{"content": "the of a"}, {"content": "and so it was"}])
    assert len(pool.copy().retrieve("the", max_memories=2, learn=False)) == 2
    pool.add("Alex loves soccer")
    assert pool.retrieve("soccer", max_memories=1, learn=False)[0].content == "Alex loves soccer"


class CharCounter:
    """A stand-in for a model's line counter: one token per character, counting its calls."""

    def __init__(self, key: str = "chars") -> None:
        self.key = key
        self.counted = 0

    def __call__(self, memories):
        self.counted += len(memories)
        return [len(m.content) for m in memories]


def test_budgets_use_the_counter_and_counts_are_kept_not_recounted(keyed, tmp_path):
    counter = CharCounter()
    pool = MemoryPool(keyed(), token_counter=counter)
    pool.add_many([{"content": "short"}, {"content": "a much longer memory line"}, {"content": "tiny"}])
    assert counter.counted == 3 and pool.token_key == "chars"
    assert pool.token_counts.tolist() == [5, 25, 4] and pool.total_tokens == 34
    assert [m.tokens for m in pool] == [5, 25, 4]
    hits = pool.retrieve(pool.get("m1").content, max_memories=3, token_budget=10, learn=False, exact=True)
    assert hits and "m1" not in {h.id for h in hits} and sum(h.tokens for h in hits) <= 10

    clone = pool.copy()
    clone.count_tokens_with(counter)  # same key: nothing to count
    revived = pickle.loads(pickle.dumps(pool))
    revived.count_tokens_with(CharCounter())
    assert counter.counted == 3 and revived.token_counts.tolist() == [5, 25, 4]
    clone.add("four more words here")
    assert counter.counted == 4 and clone.total_tokens == 34 + 20 and pool.total_tokens == 34

    other = CharCounter("other-model")
    clone.count_tokens_with(other)  # another model: every memory once
    assert other.counted == 4 and clone.token_key == "other-model"

    pool.save(tmp_path / "pool.npz")
    loaded = MemoryPool.load(tmp_path / "pool.npz", pool.embedder)
    assert loaded.token_key == "chars" and loaded.token_counts.tolist() == [5, 25, 4]
    with pytest.raises(ValueError):
        loaded.token_counts[0] = 1


def test_a_pickled_pool_without_its_counter_keeps_one_kind_of_count(minilm):
    pool = MemoryPool(minilm, token_counter=CharCounter())
    pool.add_many([{"content": "one two three"}])
    revived = pickle.loads(pickle.dumps(pool))  # the counter (a tokenizer) does not travel
    revived.add("four five")
    assert revived.token_key == "embedder-content"
    assert revived.token_counts.tolist() == [minilm.count_tokens("one two three"), minilm.count_tokens("four five")]


def test_a_query_for_an_accelerator_falls_back_to_the_embedders_own_device(keyed):
    """`embed_query(text, device)` uses the embedder's `encode_on` where it has one; an embedder
    without it (any `Embedder`) embeds the query as usual instead of failing."""
    pool = MemoryPool(embedder=keyed())
    assert np.array_equal(pool.embed_query("where is Alex's quiz?", "cuda:0"), pool.embed_query("where is Alex's quiz?"))
    calls = []
    pool.embedder.encode_on = lambda texts, device: calls.append(device) or pool.embedder.encode(texts)
    pool.embed_query("where is Alex's quiz?", "cuda:0")
    pool.embed_query("where is Alex's quiz?")
    assert calls == ["cuda:0"]
