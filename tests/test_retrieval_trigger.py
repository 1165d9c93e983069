"""The uncertainty (FLARE-style) retrieval trigger: when it fires, and what it queries with."""

from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest

from smem import MemoryPool, load_memories
from smem.generation import tiny
from smem.generation.engine import StreamingEngine
from smem.generation.events import Done, Thinking, Token
from smem.generation.swap import SwapPolicy
from smem.memory.embedder import default_embedder

ROOT = Path(__file__).resolve().parents[1]
MESSAGE = "How should I help Alex stop dropping minus signs before his algebra quiz?"


@pytest.fixture(scope="module")
def engine_parts():
    pool = MemoryPool(embedder=default_embedder(), seed=0)
    pool.add_many(load_memories(ROOT / "memories" / "tutor.json"))
    return tiny.build(seed=0), pool


def squash(text: str) -> str:
    """Text without whitespace or U+FFFD: a query decoded mid-character ends in U+FFFD where
    the streamed text, decoded whole, has the character."""
    return "".join(ch for ch in text if not ch.isspace() and ch != "\ufffd")


def answer(engine: StreamingEngine, **kwargs) -> list:
    args = dict(update_every_n=1, max_new_tokens=24, temperature=0.0, learn=False, retrieval_trigger="uncertainty")
    return list(engine.stream(MESSAGE, **{**args, **kwargs}))


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
    queries: list[str] = []
    retrieve = pool.retrieve
    monkeypatch.setattr(pool, "retrieve", lambda text, **kw: queries.append(text) or retrieve(text, **kw))
    events = answer(engine, uncertainty_threshold=1.0, max_new_tokens=16)
    written = squash("".join(e.text for e in events if isinstance(e, (Token, Thinking))))
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
