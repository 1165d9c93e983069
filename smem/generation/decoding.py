"""Per-model decoding settings and the logits processors that keep small models from looping.

Small instruct models decoded greedily (or at low temperature) fall into loops: the packaged
0.5B wrote "I'm sorry, but I can't help with that either" six times, and "Maya has been eating
peanut butter for a long time" five times. Two of transformers' own processors stop that:
`RepetitionPenaltyLogitsProcessor` (CTRL's penalty, applied to tokens already *generated*, not to
the prompt: a penalty on prompt tokens would push the model away from the names and dates in its
memories) and `NoRepeatNGramLogitsProcessor` (no n-gram of the answer twice). `TopKLogitsWarper`
adds the top-k cut the Qwen models ship with.

The settings live on the model's `generation_config`, the place transformers keeps them, so a
model's checkpoint can bring its own and `load` fills in the table below for the models we know.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from transformers import (
    LogitsProcessor,
    NoRepeatNGramLogitsProcessor,
    RepetitionPenaltyLogitsProcessor,
    TopKLogitsWarper,
)


@dataclass(frozen=True)
class DecodingProfile:
    """Sampling and repetition settings for one model (0 or 1.0 switches a control off), and
    whether it is asked for a short reasoning phase before its answer
    (`smem.generation.reasoning`)."""

    temperature: float
    top_p: float
    top_k: int
    repetition_penalty: float
    no_repeat_ngram_size: int
    prompted_reasoning: bool = False


NO_REPEAT_NGRAM = 10
"""Long enough not to block ordinary phrasing (a 10-token run is a clause, not a collocation),
short enough that no 12-token span of the degenerate-answer detector (words and punctuation)
can repeat: over the 313 notes of memories/*.json, Qwen's tokenizer writes at least 0.89x
(median 1.05x) as many tokens as the detector counts, so 12 of its tokens are 10+ of Qwen's."""

PROFILES: dict[str, DecodingProfile] = {
    # Qwen2.5 small instruct models' generation_config.json (0.5B and 1.5B ship
    # temperature 0.7, top_p 0.8, top_k 20, repetition_penalty 1.1). The reasoning phase is the
    # 1.5B's only: with it, its LoCoMo RAG F1 went 0.190 -> 0.232, where the 0.5B's fell
    # 0.168 -> 0.112 (docs/benchmarks.md, issue 10).
    "qwen2.5-coder-0.5b-instruct": DecodingProfile(0.7, 0.8, 20, 1.1, NO_REPEAT_NGRAM),
    "qwen2.5-coder-1.5b-instruct": DecodingProfile(0.7, 0.8, 20, 1.1, NO_REPEAT_NGRAM, prompted_reasoning=True),
    # Qwen3's model card, thinking mode: temperature 0.6, top_p 0.95, top_k 20, and no
    # repetition penalty (the card suggests a presence penalty only if it loops; an 8B rarely does).
    "qwen3": DecodingProfile(0.6, 0.95, 20, 1.0, 0),
}

FALLBACK = DecodingProfile(temperature=0.7, top_p=1.0, top_k=0, repetition_penalty=1.0, no_repeat_ngram_size=0)
"""Unknown models (and the tiny test model) decode as they did before profiles existed."""


def profile_for(name: str) -> DecodingProfile:
    """The profile whose key names `name` (a hub id, folder or packaged name), else `FALLBACK`."""
    lowered = name.lower()
    matches = [key for key in PROFILES if key in lowered]
    return PROFILES[max(matches, key=len)] if matches else FALLBACK


def apply_profile(model: Any, profile: DecodingProfile) -> None:
    """Write `profile` into the model's generation_config, where the engine reads it."""
    config = model.generation_config
    for key, value in asdict(profile).items():
        setattr(config, key, value)


def model_profile(model: Any) -> DecodingProfile:
    """The settings a loaded model carries in its generation_config (missing ones: `FALLBACK`)."""
    config = getattr(model, "generation_config", None)
    values = {key: getattr(config, key, None) for key in asdict(FALLBACK)}
    return DecodingProfile(**{key: default if values[key] is None else values[key] for key, default in asdict(FALLBACK).items()})


def profile_processors(profile: DecodingProfile) -> list[LogitsProcessor]:
    """The profile's repetition controls and top-k cut, for the engine's token picker, which
    shows them the answer's ids only (never the prompt)."""
    processors: list[LogitsProcessor] = []
    if profile.repetition_penalty != 1.0:
        processors.append(RepetitionPenaltyLogitsProcessor(profile.repetition_penalty))
    if profile.no_repeat_ngram_size > 0:
        processors.append(NoRepeatNGramLogitsProcessor(profile.no_repeat_ngram_size))
    if profile.top_k > 0:
        processors.append(TopKLogitsWarper(profile.top_k))
    return processors
