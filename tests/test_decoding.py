"""Decoding profiles and the repetition controls the engine applies at every step."""

from __future__ import annotations

import os
from collections import Counter

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch

from smem.generation import tiny
from smem.generation.decoding import (
    FALLBACK,
    PROFILES,
    DecodingProfile,
    RepetitionControl,
    apply_profile,
    model_profile,
    profile_for,
)
from smem.generation.engine import StreamingEngine
from smem.memory.pool import MemoryPool


def test_profiles_are_found_by_any_name_of_the_model():
    assert profile_for("Qwen/Qwen3-8B") is PROFILES["qwen3"]
    assert profile_for("/cache/qwen2.5-coder-0.5b-instruct-bf16") is PROFILES["qwen2.5-coder-0.5b-instruct"]
    assert profile_for("qwen2.5-coder-1.5b-instruct") is PROFILES["qwen2.5-coder-1.5b-instruct"]
    assert profile_for("some/other-model") is FALLBACK


def test_a_profile_travels_in_the_generation_config():
    model, _ = tiny.build()
    assert model_profile(model) == FALLBACK  # nothing set: decode as before profiles existed
    profile = PROFILES["qwen2.5-coder-0.5b-instruct"]
    apply_profile(model, profile)
    assert model_profile(model) == profile


def test_repetition_penalty_hits_generated_tokens_only():
    control = RepetitionControl(DecodingProfile(1.0, 1.0, 0, 2.0, 0))
    logits = torch.tensor([4.0, -4.0, 4.0, 1.0])
    out = control([0, 1], logits.clone())
    assert out.tolist() == [2.0, -8.0, 4.0, 1.0]


def test_no_repeat_ngram_bans_the_token_that_would_repeat_one():
    control = RepetitionControl(DecodingProfile(1.0, 1.0, 0, 1.0, 3))
    logits = torch.zeros(6)
    out = control([1, 2, 3, 1, 2], logits.clone())  # "1 2 3" again would repeat a 3-gram
    assert out[3] == float("-inf") and torch.isfinite(out[[0, 1, 2, 4, 5]]).all()
    assert torch.equal(control([1, 2], logits.clone()), logits)


def test_top_k_keeps_k_tokens_and_no_controls_is_identity():
    out = RepetitionControl(DecodingProfile(1.0, 1.0, 2, 1.0, 0))([], torch.tensor([0.1, 3.0, 2.0, -1.0]))
    assert torch.isfinite(out).tolist() == [False, True, True, False]
    logits = torch.randn(8)
    assert RepetitionControl(FALLBACK)([1, 2, 3], logits) is logits


def repeated_bigrams(ids: list[int]) -> int:
    return sum(count - 1 for count in Counter(zip(ids, ids[1:])).values() if count > 1)


def greedy_ids(model, tokenizer, pool) -> list[int]:
    """The ids the engine picks (recorded at the pick, so no re-tokenising), 60 of them."""
    engine = StreamingEngine(model, tokenizer, pool)
    picked: list[int] = []
    pick = engine._pick
    engine._pick = lambda logits, *args: picked.append(pick(logits, *args)) or picked[-1]
    list(engine.stream("Tell me a story.", max_new_tokens=60, min_new_tokens=60, temperature=0.0, learn=False))
    return picked


def test_the_engine_applies_the_models_profile(keyed):
    """Greedy decoding of the random tiny model (seed 2) repeats bigrams; with no-repeat
    2-grams in its profile it cannot."""
    model, tokenizer = tiny.build(seed=2)
    pool = MemoryPool(embedder=keyed())
    assert repeated_bigrams(greedy_ids(model, tokenizer, pool)) > 0
    apply_profile(model, DecodingProfile(0.7, 1.0, 0, 1.0, 2))
    picked = greedy_ids(model, tokenizer, pool)
    assert len(picked) == 60 and repeated_bigrams(picked) == 0
