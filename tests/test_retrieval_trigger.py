"""The uncertainty (FLARE-style) retrieval trigger: when it fires, and what it queries with; and
FLARE's look-ahead: a draft that chooses the memories and leaves no trace in the answer."""

from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest

from conftest import build_tiny
from smem import MemoryPool, load_memories
from smem.generation.engine import StreamingEngine
from smem.generation.events import Done, Memories, MemoryUpdate, Thinking, Token
from smem.generation.swap import SwapPolicy, keep_order
from smem.memory.embedder import default_embedder

ROOT = Path(__file__).resolve().parents[1]
MESSAGE = "How should I help Alex stop dropping minus signs before his algebra quiz?"


@pytest.fixture(scope="module")
def engine_parts():
    pool = MemoryPool(embedder=default_embedder(), seed=0)
    pool.add_many(load_memories(ROOT / "memories" / "tutor.json"))
    return build_tiny(seed=0), pool


def squash(text: str) -> str:
    """Text without whitespace or U+FFFD: a query decoded mid-character ends in U+FFFD where
    the streamed text, decoded whole, has the character."""
    return "".join(ch for ch in text if not ch.isspace() and ch != "\ufffd")


def answer(engine: StreamingEngine, **kwargs) -> list:
    args = dict(update_every_n=1, max_new_tokens=24, temperature=0.0, learn=False, retrieval_trigger="uncertainty")
    return list(engine.stream(MESSAGE, **{**args, **kwargs}))


OTHER = "Alex plays soccer on weekends"
"""A query that finds memories other than MESSAGE's (the look-ahead's "changed set" case)."""


def scripted_retrieval(pool: MemoryPool, monkeypatch, second: str = "") -> list[str]:
    """Record each retrieval's query; the second one (the look-ahead's) returns OTHER's memories
    if `second` says "other", the first retrieval's memories if "same"."""
    queries: list[str] = []
    retrieve = pool.retrieve
    first: list = []

    def scripted(text, **kw):
        queries.append(text)
        if len(queries) == 2 and second == "other":
            return retrieve(OTHER, **{**kw, "query_vector": None})
        hits = retrieve(text, **kw)
        if len(queries) == 1:
            first[:] = hits
        return list(first) if len(queries) == 2 and second == "same" else hits

    monkeypatch.setattr(pool, "retrieve", scripted)
    return queries


def text_of(events: list) -> str:
    return "".join(e.text for e in events if isinstance(e, (Token, Thinking)))


def test_policy_fires_on_low_confidence_at_most_once_per_gap():
    policy = SwapPolicy(3, trigger="uncertainty", threshold=0.4)
    fired = [n for n, p in enumerate([0.9, 0.1, 0.2, 0.3, 0.1, 0.9, 0.05], start=1) if policy.due(n, 0, p)]
    assert fired == [3, 7]  # the first retrieval counts as token 0
    assert not SwapPolicy(0, trigger="uncertainty").due(1, 0, 0.0)  # every=0: never (RAG)


@pytest.mark.parametrize("swap", ["exact", "splice", "slots"])
def test_threshold_bounds_the_retrievals(engine_parts, swap):
    (model, tokenizer), pool = engine_parts
    engine = StreamingEngine(model, tokenizer, pool, swap=swap, swap_budget=None)
    never = answer(engine, uncertainty_threshold=0.0)[-1].stats
    always = answer(engine, uncertainty_threshold=1.0)[-1].stats
    assert never.retrievals == 1 and never.swaps == 0  # only the first retrieval
    assert always.retrievals == always.tokens  # every token is below probability 1 (random model)


def test_query_is_the_message_and_the_sentence_without_its_newest_token(engine_parts, monkeypatch):
    (model, tokenizer), pool = engine_parts
    engine = StreamingEngine(model, tokenizer, pool, swap_budget=None)
    queries = scripted_retrieval(pool, monkeypatch)
    events = answer(engine, uncertainty_threshold=1.0, max_new_tokens=16)
    written = squash(text_of(events))
    assert isinstance(events[-1], Done) and len(queries) == events[-1].stats.retrievals > 1
    assert queries[0] == MESSAGE
    for query in queries[1:]:
        assert query.startswith(MESSAGE)
        assert squash(query[len(MESSAGE) :]) in written
    # the newest token is left out: the last query cannot hold the whole answer
    assert squash(queries[-1][len(MESSAGE) :]) != written


def test_bad_trigger_is_refused(engine_parts):
    (model, tokenizer), pool = engine_parts
    engine = StreamingEngine(model, tokenizer, pool)
    with pytest.raises(ValueError):
        answer(engine, retrieval_trigger="sometimes")
    with pytest.raises(ValueError):
        answer(engine, uncertainty_threshold=1.5)
    with pytest.raises(ValueError):
        answer(engine, lookahead_tokens=-1)


# -- look-ahead ------------------------------------------------------------------------------

@pytest.mark.parametrize("swap", ["exact", "splice", "slots"])
def test_look_ahead_with_the_same_memories_leaves_the_answer_as_without_it(engine_parts, monkeypatch, swap):
    """The draft is rewound: same memories → the same answer, token for token, even sampled
    (the draft has its own token picker)."""
    (model, tokenizer), pool = engine_parts
    engine = StreamingEngine(model, tokenizer, pool, swap=swap, swap_budget=None)
    args = dict(update_every_n=0, retrieval_trigger="interval", temperature=0.9, seed=7, max_new_tokens=16)
    plain = answer(engine, **args)
    queries = scripted_retrieval(pool, monkeypatch, second="same")
    ahead = answer(engine, lookahead_tokens=8, **args)
    assert len(queries) == 2 and queries[1].startswith(MESSAGE) and len(queries[1]) > len(MESSAGE)
    assert ahead[-1].stats.extra["drafted_tokens"] > 0 and ahead[-1].stats.swaps == 0
    assert not any(isinstance(e, MemoryUpdate) for e in ahead)
    assert text_of(ahead) == text_of(plain) and ahead[-1].stats.tokens == plain[-1].stats.tokens


@pytest.mark.parametrize("swap", ["exact", "splice", "slots"])
def test_look_ahead_with_new_memories_answers_as_a_fresh_start_in_them(engine_parts, monkeypatch, swap):
    """New memories → one update before the first token, and the answer a retrieve-once answer
    in those memories (in `keep_order`) would give: the draft leaves nothing in the cache."""
    (model, tokenizer), pool = engine_parts
    engine = StreamingEngine(model, tokenizer, pool, swap=swap, swap_budget=None)
    args = dict(update_every_n=0, retrieval_trigger="interval", max_new_tokens=16)
    scripted_retrieval(pool, monkeypatch, second="other")
    ahead = answer(engine, lookahead_tokens=8, **args)
    first = next(e for e in ahead if isinstance(e, Memories)).memories
    update = next(e for e in ahead if isinstance(e, MemoryUpdate))
    assert ahead.index(update) < min(i for i, e in enumerate(ahead) if isinstance(e, (Token, Thinking)))
    assert update.at_token == 0 and {h.id for h in update.memories} != {h.id for h in first}
    assert [h.id for h in update.memories] == [h.id for h in keep_order(first, update.memories)]
    monkeypatch.undo()
    monkeypatch.setattr(pool, "retrieve", lambda text, **kw: list(update.memories))
    fresh = answer(engine, **args)
    assert text_of(ahead) == text_of(fresh)


def test_learning_after_a_look_ahead_credits_only_the_memories_the_answer_was_written_in(engine_parts, monkeypatch):
    (model, tokenizer), shared = engine_parts
    pool = shared.copy()
    engine = StreamingEngine(model, tokenizer, pool, swap_budget=None)
    scripted_retrieval(pool, monkeypatch, second="other")
    events = answer(engine, lookahead_tokens=8, update_every_n=0, retrieval_trigger="interval", learn=True)
    first = {h.id for h in next(e for e in events if isinstance(e, Memories)).memories}
    used = {h.id for h in next(e for e in events if isinstance(e, MemoryUpdate)).memories}
    assert first - used  # the draft's set had memories the answer did not use
    assert all(pool.retrieval_count(i) == 0 for i in first - used)
    assert all(pool.retrieval_count(i) == 1 for i in used)
