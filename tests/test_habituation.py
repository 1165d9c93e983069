"""Habituation: memories retrieved by many different queries (hubs) have their gate damped."""

from __future__ import annotations

from datetime import datetime, timezone

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from smem import MemoryPool, ScoringWeights
from smem.memory import scoring

NOW = datetime(2026, 6, 1, tzinfo=timezone.utc)
DIM = 8

counts = st.floats(0.0, 1e4, allow_nan=False)
unit_interval = st.floats(0.0, 1.0, allow_nan=False)
weights = st.floats(0.0, 10.0, allow_nan=False)
means = st.floats(1e-3, 1e3, allow_nan=False)


@given(counts, counts, unit_interval, means, weights)
def test_factor_lies_in_0_1_and_falls_with_diverse_retrievals(low, high, specificity, mean, weight):
    low, high = sorted((low, high))
    factor = scoring.habituation(np.array([low, high]), np.array([specificity, specificity]), mean, weight)
    assert np.all((factor > 0.0) & (factor <= 1.0))
    assert factor[1] <= factor[0]


@given(counts, unit_interval, unit_interval, means, weights)
def test_similar_queries_damp_less_than_unrelated_ones(count, a, b, mean, weight):
    similar, unrelated = max(a, b), min(a, b)
    factor = scoring.habituation(np.array([count, count]), np.array([similar, unrelated]), mean, weight)
    assert factor[0] >= factor[1]


@given(counts, means, weights)
def test_no_damping_without_diverse_retrievals_or_weight(count, mean, weight):
    assert scoring.habituation(np.array([count]), np.array([1.0]), mean, weight)[0] == 1.0
    assert scoring.habituation(np.array([0.0]), np.array([0.0]), mean, weight)[0] == 1.0
    assert scoring.habituation(np.array([count]), np.array([0.0]), mean, 0.0)[0] == 1.0


def axis(*pairs: tuple[int, float]) -> np.ndarray:
    v = np.zeros(DIM, dtype=np.float32)
    for index, value in pairs:
        v[index] = value
    return v / np.linalg.norm(v)


def twins(keyed, habituation: float) -> MemoryPool:
    """Two memories with the same vector: m0 retrieved by unrelated queries (a hub), m1 as
    often by one query (a specialist). Every boost is off, so only habituation tells them apart."""
    weights = ScoringWeights(recency=0.0, frequency=0.0, emotion=0.0, links=0.0, time=0.0, habituation=habituation)
    pool = MemoryPool(keyed(dim=DIM), weights=weights, association_weight=0.0, diversity_weight=0.0)
    same = axis((0, 1.0))
    pool.add_many([{"content": "hub"}, {"content": "specialist"}], embeddings=np.stack([same, same]))
    for other in range(1, DIM):
        pool.reinforce(["m0"], query=axis((other, 1.0)), now=NOW)
        pool.reinforce(["m1"], query=axis((0, 1.0), (1, 0.2)), now=NOW)
    return pool


def test_a_hub_ranks_below_an_equally_similar_specialist(keyed):
    hits = twins(keyed, habituation=0.5).retrieve(axis((0, 1.0)), max_memories=2, now=NOW, learn=False)
    assert [h.id for h in hits] == ["m1", "m0"]
    # 7 diverse retrievals against a mean of 7: the gate falls by 1 / (1 + 0.5 log 2).
    assert hits[1].score == pytest.approx(hits[0].score / (1.0 + 0.5 * np.log(2.0)))
    assert hits[1].similarity == pytest.approx(hits[0].similarity)


def test_without_habituation_the_twins_tie(keyed):
    hits = twins(keyed, habituation=0.0).retrieve(axis((0, 1.0)), max_memories=2, now=NOW, learn=False)
    assert [h.id for h in hits] == ["m0", "m1"]  # a tie goes to the lower position
    assert hits[0].score == hits[1].score
