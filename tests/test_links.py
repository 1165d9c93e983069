"""Encoding links, spreading over the link graph, `pulled_by`, time matching, the multiplier bound."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import numpy as np
import pytest

from smem import MemoryPool, ScoringWeights
from smem.memory import scoring, timeref

DAY = datetime(2023, 5, 7, 13, 0, tzinfo=timezone.utc)


def unit(dim: int, *pairs: tuple[int, float]) -> np.ndarray:
    v = np.zeros(dim, dtype=np.float32)
    for axis, value in pairs:
        v[axis] = value
    return v / np.linalg.norm(v)


def weights(**overrides) -> ScoringWeights:
    base = dict(recency=0.0, frequency=0.0, emotion=0.0, links=0.0, encoding_window=0, time=0.0, habituation=0.0)
    return ScoringWeights(**{**base, **overrides})


def session_pool(keyed, **overrides) -> MemoryPool:
    """Four turns of one day, then one turn a week later; the query points at turn 0 only."""
    dim = 8
    pool = MemoryPool(keyed(dim=dim), weights=weights(**overrides), association_weight=0.5, diversity_weight=0.0)
    vectors = np.stack(
        [unit(dim, (0, 1.0)), unit(dim, (1, 1.0), (0, 0.3)), unit(dim, (2, 1.0), (0, 0.35)), unit(dim, (3, 1.0)),
         unit(dim, (4, 1.0), (0, 0.3))]
    )
    dates = [DAY, DAY, DAY, DAY, DAY + timedelta(days=7)]
    pool.add_many([{"content": f"turn {i}", "created_at": d} for i, d in enumerate(dates)], embeddings=vectors)
    return pool


def test_encoding_links_join_neighbours_of_one_day_only(keyed):
    pool = session_pool(keyed, encoding_window=2)
    pairs = {(a, b): w for a, b, w in pool.links("encoding")}
    assert pairs == {("m0", "m1"): 1.0, ("m1", "m2"): 1.0, ("m2", "m3"): 1.0, ("m0", "m2"): 0.5, ("m1", "m3"): 0.5}
    assert pool.links() == []


def test_undated_memories_get_no_encoding_links(keyed):
    pool = MemoryPool(keyed(dim=4), weights=weights(encoding_window=3))
    pool.add_many([{"content": f"note {i}"} for i in range(4)])
    assert pool.links("encoding") == []


def test_encoding_link_pulls_a_neighbour_up_and_says_so(keyed):
    query = unit(8, (0, 1.0))
    off = session_pool(keyed, encoding_window=1)
    on = session_pool(keyed, encoding_window=1, links=2.0)
    plain = [h.id for h in off.retrieve(query, max_memories=3, now=DAY, learn=False)]
    hits = on.retrieve(query, max_memories=3, now=DAY, learn=False)
    assert plain[:2] == ["m0", "m2"]
    assert [h.id for h in hits][:2] == ["m0", "m1"]
    by_id = {h.id: h for h in hits}
    assert by_id["m0"].pulled_by == ()
    [pull] = by_id["m1"].pulled_by
    assert (pull.id, pull.kind, pull.weight) == ("m0", "encoding", 1.0)
    assert by_id["m1"].multiplier > 1.0
    assert by_id["m1"].to_dict()["pulled_by"] == [{"id": "m0", "kind": "encoding", "weight": 1.0}]


def test_links_never_lift_an_irrelevant_memory(keyed):
    """Turn 3 shares nothing with the query (cosine 0): spreading makes it a candidate through
    its links, yet the gate keeps it out — association never replaces relevance."""
    pool = session_pool(keyed, encoding_window=3, links=5.0)
    hits = pool.retrieve(unit(8, (0, 1.0)), max_memories=5, now=DAY, learn=False)
    assert "m3" not in {h.id for h in hits}


def test_learned_links_are_reported_as_learned(keyed):
    pool = session_pool(keyed, links=2.0, learned_links=1.0)
    for _ in range(3):
        pool.reinforce(["m0", "m4"], now=DAY)
    hits = pool.retrieve(unit(8, (0, 1.0)), max_memories=3, now=DAY, learn=False)
    pulled = {h.id: h.pulled_by for h in hits}
    assert [(p.id, p.kind) for p in pulled["m4"]] == [("m0", "learned")]
    assert pool.learning.updates == 3 and pool.learning.answers == 3


def test_multiplier_stays_below_the_published_bound(keyed):
    pool = session_pool(keyed, encoding_window=3, learned_links=50.0, links=50.0, time=50.0, recency=50.0, emotion=50.0)
    for _ in range(20):
        pool.reinforce(["m0", "m1", "m2", "m4"], query=unit(8, (0, 1.0)), now=DAY)
    hits = pool.retrieve("turn 0 on 7 May 2023", max_memories=5, now=DAY, learn=False, query_vector=unit(8, (0, 1.0)))
    assert hits and all(1.0 <= h.multiplier <= scoring.max_multiplier() for h in hits)


def test_time_named_in_the_query_favours_memories_of_that_time(keyed):
    dim = 4
    pool = MemoryPool(keyed(dim=dim), weights=weights(time=0.5), diversity_weight=0.0)
    same = unit(dim, (0, 1.0))
    pool.add_many(
        [{"content": "a", "created_at": DAY - timedelta(days=40)}, {"content": "b", "created_at": DAY}],
        embeddings=np.stack([same, same]),
    )
    assert pool.retrieve("what happened on 7 May, 2023?", max_memories=1, learn=False, query_vector=same)[0].id == "m1"
    assert pool.retrieve("what happened in March 2023?", max_memories=1, learn=False, query_vector=same)[0].id == "m0"


@pytest.mark.parametrize(
    ("text", "days"),
    [
        ("What did Nate make on 9 November, 2022?", [("2022-11-08", "2022-11-11")]),
        ("Which team did John sign with on May 21, 2023?", [("2023-05-20", "2023-05-23")]),
        ("What did she share in August 2022?", [("2022-08-01", "2022-09-01")]),
        ("What did he do in December 2023?", [("2023-12-01", "2024-01-01")]),
        ("What charity event did John organize in 2024?", [("2024-01-01", "2025-01-01")]),
        ("When did Caroline go to the support group?", []),
        ("Anything on 31 February, 2023?", []),
    ],
)
def test_named_intervals(text, days):
    def epoch(day: str) -> float:
        return datetime.fromisoformat(day).replace(tzinfo=timezone.utc).timestamp()

    assert timeref.named_intervals(text) == [(epoch(a), epoch(b)) for a, b in days]


def test_saved_pool_keeps_both_link_kinds(keyed, tmp_path):
    embedder = keyed(dim=8)
    pool = session_pool(lambda dim: embedder, encoding_window=2)
    pool.reinforce(["m0", "m4"], now=DAY)
    pool.save(tmp_path / "pool.npz")
    revived = MemoryPool.load(tmp_path / "pool.npz", embedder)
    assert revived.links("encoding") == pool.links("encoding")
    assert revived.links() == pool.links()
    assert (revived.learning.updates, revived.learning.answers) == (1, 1)
    revived.reinforce(["m0", "m4"], now=DAY)
    assert revived.links() == [("m0", "m4", 2.0)]




def test_link_graph_lookups_match_the_dense_matrix():
    from smem.memory.learning import ENCODING, LEARNED, LinkGraph

    rng = np.random.default_rng(3)
    size = 200
    enc_a, enc_b = rng.integers(0, size, 60), rng.integers(0, size, 60)
    keep = enc_a != enc_b
    enc_a, enc_b = enc_a[keep], enc_b[keep]
    learned_a, learned_b = rng.integers(0, size, 40), rng.integers(0, size, 40)
    keep = learned_a != learned_b
    learned_a, learned_b = learned_a[keep], learned_b[keep]
    enc_w, learned_w = rng.random(len(enc_a)), rng.random(len(learned_a))
    graph = LinkGraph(None, enc_a, enc_b, enc_w, learned_a, learned_b, learned_w)
    dense = {ENCODING: np.zeros((size, size)), LEARNED: np.zeros((size, size))}
    for kind, (a, b, w) in ((ENCODING, (enc_a, enc_b, enc_w)), (LEARNED, (learned_a, learned_b, learned_w))):
        np.add.at(dense[kind], (a, b), w)
        np.add.at(dense[kind], (b, a), w)
    both = dense[ENCODING] + dense[LEARNED]
    picks = rng.choice(size, 25, replace=False)
    for kind in (ENCODING, LEARNED):
        np.testing.assert_allclose(graph.block(picks, kind), dense[kind][np.ix_(picks, picks)])
    np.testing.assert_array_equal(graph.neighbours(picks[:5]), np.flatnonzero(both[picks[:5]].any(axis=0)))
    for position in picks[:5]:
        linked, weights = graph.row(int(position))
        np.testing.assert_array_equal(linked, np.flatnonzero(both[position]))
        np.testing.assert_allclose(weights, both[position][linked])
