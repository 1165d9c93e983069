"""Decoding profiles and the repetition controls the engine applies at every step."""

from __future__ import annotations

import os
from collections import Counter

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch
from transformers import LogitsProcessorList

from conftest import build_tiny
from smem.generation import degenerate, sampling, tiny
from smem.generation.decoding import (
    FALLBACK,
    PROFILES,
    DecodingProfile,
    NoRepeatedSentence,
    NoRestatedEnding,
    apply_profile,
    model_profile,
    profile_for,
    profile_processors,
)
from smem.generation.engine import StreamingEngine
from smem.generation.events import Token
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


def one_step(processor, tokenizer, text: str, vocabulary: int) -> torch.Tensor:
    """`processor`'s logits for the next token after the answer `text`, from all-zero logits."""
    ids = torch.tensor([tokenizer.encode(text, add_special_tokens=False)])
    return processor(ids, torch.zeros(1, vocabulary))[0]


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
        return one_step(ban, tokenizer, text, vocabulary)

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


REQUEST = "Can you pull together everyone's holiday gift ideas, including something for my mom?"


def test_an_ending_that_restates_the_request_is_found_and_one_that_answers_is_not():
    restated = "Yes, I can pull together everyone's holiday gift ideas, including something for my mom."
    assert degenerate.restated_ending(restated, REQUEST) == restated
    assert degenerate.restated_ending(restated + "\n\n", REQUEST) == restated, "blank lines after it change nothing"
    assert degenerate.restated_ending(restated + " Here are", REQUEST) is None, "the answer went on"
    question = "When Gina has lost her job at Door Dash?"
    assert degenerate.restated_ending("Gina has lost her job at Door Dash.", question)
    pet = "What was the name of the pet that John had to say goodbye to on 3 June, 2023?"
    assert degenerate.restated_ending("The pet that John had to say goodbye to on 3 June, 2023 was Max.", pet) is None
    assert degenerate.restated_ending("Something for my mom.", REQUEST) is None, "fewer words than RESTATED_WORDS"
    assert degenerate.restated_ending("", REQUEST) is None and degenerate.restated_ending(restated, "") is None
    assert not degenerate.degenerate(restated), "not a degenerate answer by the issue's definition"


def test_an_answer_cannot_end_on_a_restatement_of_the_request():
    tokenizer = tiny.build_tokenizer()
    stop, other = tokenizer.eos_token_id, tokenizer.convert_tokens_to_ids("<|im_end|>")
    ban = NoRestatedEnding(tokenizer, REQUEST, [stop, other])
    vocabulary = len(tokenizer) + 6  # models often have more logits than tokenizer ids

    def step(text: str) -> torch.Tensor:
        return one_step(ban, tokenizer, text, vocabulary)

    restated = step("Yes, I can pull together everyone's holiday gift ideas, including something for my mom.\n")
    assert torch.isinf(restated[[stop, other]]).all(), "no end of answer here"
    assert torch.isfinite(restated[[i for i in range(vocabulary) if i not in (stop, other)]]).all(), "any other token"
    assert torch.isfinite(step("Here are the ideas: a drawing tablet for Maya, a scarf for your mom.")).all()


def test_the_default_model_will_not_end_on_a_restated_request():
    assert PROFILES["qwen2.5-coder-0.5b-instruct"].no_restated_ending and not FALLBACK.no_restated_ending
    tokenizer = tiny.build_tokenizer()
    kinds = [type(p) for p in profile_processors(PROFILES["qwen2.5-coder-0.5b-instruct"], tokenizer, [0], REQUEST)]
    assert NoRestatedEnding in kinds
    without_message = profile_processors(PROFILES["qwen2.5-coder-0.5b-instruct"], tokenizer, [0])
    assert NoRestatedEnding not in [type(p) for p in without_message]


class Script:
    """A caller's processor that makes the model write `text` and then end, by adding to the
    scripted token's logit (a token another processor banned stays banned)."""

    def __init__(self, tokenizer, text: str) -> None:
        self.ids = [*tokenizer.encode(text, add_special_tokens=False), tokenizer.eos_token_id]

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        written = input_ids.shape[-1]
        if written < len(self.ids):
            scores = scores.clone()
            scores[..., self.ids[written]] += 1e4
        return scores


def test_the_engine_goes_on_past_a_restated_request(keyed):
    """Through the engine: a model that restates the message and ends stops there without the
    ban and writes on with it, given the message as the user wrote it."""
    model, tokenizer = build_tiny(seed=2)
    pool = MemoryPool(embedder=keyed())
    restated = "I can pull together everyone's holiday gift ideas, including something for my mom."

    def answer() -> str:
        engine = StreamingEngine(model, tokenizer, pool)
        events = engine.stream(
            REQUEST, max_new_tokens=100, temperature=0.0, learn=False, logits_processor=[Script(tokenizer, restated)]
        )
        return "".join(event.text for event in events if isinstance(event, Token))

    assert answer() == restated
    apply_profile(model, DecodingProfile(0.7, 1.0, 0, 1.0, 0, no_restated_ending=True))
    longer = answer()
    assert longer.startswith(restated) and len(longer) > len(restated)


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
    model, tokenizer = build_tiny(seed=2)
    pool = MemoryPool(embedder=keyed())
    assert repeated_bigrams(greedy_ids(model, tokenizer, pool)) > 0
    apply_profile(model, DecodingProfile(0.7, 1.0, 0, 1.0, 2))
    picked = greedy_ids(model, tokenizer, pool)
    assert len(picked) == 60 and repeated_bigrams(picked) == 0
