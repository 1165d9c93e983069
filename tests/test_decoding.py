"""Decoding profiles and the repetition controls the engine applies at every step."""

from __future__ import annotations

import os
from collections import Counter

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch
from transformers import LogitsProcessorList

from smem.generation import sampling, tiny
from smem.generation.decoding import (
    FALLBACK,
    PROFILES,
    DecodingProfile,
    NoRepeatedSentence,
    apply_profile,
    model_profile,
    profile_for,
    profile_processors,
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


def run(profile: DecodingProfile, generated: list[int], logits: torch.Tensor) -> torch.Tensor:
    """The profile's processors on one step, as the engine's token picker applies them."""
    return LogitsProcessorList(profile_processors(profile))(torch.tensor([generated], dtype=torch.long), logits[None])[0]


def test_repetition_penalty_hits_generated_tokens_only():
    out = run(DecodingProfile(1.0, 1.0, 0, 2.0, 0), [0, 1], torch.tensor([4.0, -4.0, 4.0, 1.0]))
    assert out.tolist() == [2.0, -8.0, 4.0, 1.0]


def test_no_repeat_ngram_bans_the_token_that_would_repeat_one():
    profile = DecodingProfile(1.0, 1.0, 0, 1.0, 3)
    out = run(profile, [1, 2, 3, 1, 2], torch.zeros(6))  # "1 2 3" again would repeat a 3-gram
    assert out[3] == float("-inf") and torch.isfinite(out[[0, 1, 2, 4, 5]]).all()
    assert torch.equal(run(profile, [1, 2], torch.zeros(6)), torch.zeros(6))


def test_top_k_keeps_k_tokens_and_the_fallback_adds_nothing():
    out = run(DecodingProfile(1.0, 1.0, 2, 1.0, 0), [], torch.tensor([0.1, 3.0, 2.0, -1.0]))
    assert torch.isfinite(out).tolist() == [False, True, True, False]
    assert profile_processors(FALLBACK) == []


def test_a_sentence_of_the_answer_cannot_end_a_second_time():
    """The n-gram ban misses a short repeated list item; this one stops it at the token that
    would end it, and leaves every other token and every other sentence alone."""
    tokenizer = tiny.build_tokenizer()
    stop = tokenizer.eos_token_id
    ban = NoRepeatedSentence(tokenizer, [stop])
    vocabulary = len(tokenizer) + 6  # models often have more logits than tokenizer ids
    words = [i for i in range(len(tokenizer)) if tokenizer.decode([i]).strip().isalpha()]
    newlines = [i for i in range(len(tokenizer)) if "\n" in tokenizer.decode([i])]

    def step(text: str) -> torch.Tensor:
        ids = torch.tensor([tokenizer.encode(text, add_special_tokens=False)])
        return ban(ids, torch.zeros(1, vocabulary))[0]

    again = step("- Renée covers Friday pickup\n- Sam drives Monday\n- Renée covers Friday pickup")
    assert torch.isinf(again[newlines + [stop]]).all(), "no newline, no end of answer: the item would repeat"
    assert torch.isfinite(again[words]).all() and torch.isfinite(again[len(tokenizer) :]).all()
    period = tokenizer.encode(".", add_special_tokens=False)[0]
    assert torch.isinf(again[period]), "nor a closing mark"
    closed = step("Renée covers Friday pickup. Sam drives. Renée covers Friday pickup.")
    spaced = [i for i in range(len(tokenizer)) if tokenizer.decode([i])[:1].isspace()]
    assert torch.isinf(closed[spaced + newlines]).all(), "after its closing mark, no space or newline either"
    assert torch.isfinite(closed[period]), "a second mark does not end it (only what follows does)"
    for fresh in ("- Renée covers Friday pickup\n- Sam drives Monday\n- Renée covers Friday", "Yes. No. Yes"):
        assert torch.isfinite(step(fresh)).all(), f"nothing repeats yet (or too short to count): {fresh!r}"


def test_the_default_model_bans_repeated_sentences():
    assert PROFILES["qwen2.5-coder-0.5b-instruct"].no_repeat_sentence
    assert not FALLBACK.no_repeat_sentence
    tokenizer = tiny.build_tokenizer()
    kinds = [type(p) for p in profile_processors(PROFILES["qwen2.5-coder-0.5b-instruct"], tokenizer, [0])]
    assert NoRepeatedSentence in kinds
    assert NoRepeatedSentence not in [type(p) for p in profile_processors(PROFILES["qwen2.5-coder-0.5b-instruct"])]


def repeated_bigrams(ids: list[int]) -> int:
    return sum(count - 1 for count in Counter(zip(ids, ids[1:])).values() if count > 1)


def greedy_ids(model, tokenizer, pool) -> list[int]:
    """The ids the engine writes, 60 of them (read back from the token picker's own record)."""
    picked: list[int] = []
    original = sampling.TokenPicker.__call__

    def record(self, generated, logits, segment=0):
        picked.append(original(self, generated, logits, segment))
        return picked[-1]

    sampling.TokenPicker.__call__ = record
    try:
        engine = StreamingEngine(model, tokenizer, pool)
        list(engine.stream("Tell me a story.", max_new_tokens=60, min_new_tokens=60, temperature=0.0, learn=False))
    finally:
        sampling.TokenPicker.__call__ = original
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
