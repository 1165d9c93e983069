"""Per-model decoding settings and the logits processors that keep small models from looping.

Small instruct models decoded greedily (or at low temperature) fall into loops: the packaged
0.5B wrote "I'm sorry, but I can't help with that either" six times, and "Maya has been eating
peanut butter for a long time" five times. Two of transformers' own processors stop that:
`RepetitionPenaltyLogitsProcessor` (CTRL's penalty, applied to tokens already *generated*, not to
the prompt: a penalty on prompt tokens would push the model away from the names and dates in its
memories) and `NoRepeatNGramLogitsProcessor` (no n-gram of the answer twice). `TopKLogitsWarper`
adds the top-k cut the Qwen models ship with. Two are ours, as transformers has none that works
on sentences: `NoRepeatedSentence`, for list items too short for the n-gram ban to see, and
`NoRestatedEnding`, for answers that restate the request and stop.

The settings live on the model's `generation_config`, the place transformers keeps them, so a
model's checkpoint can bring its own and `load` fills in the table below for the models we know.
"""

from __future__ import annotations

import functools
import re
from dataclasses import asdict, dataclass
from typing import Any, Collection

import numpy as np
import torch
from transformers import (
    LogitsProcessor,
    NoRepeatNGramLogitsProcessor,
    RepetitionPenaltyLogitsProcessor,
    TopKLogitsWarper,
)

from smem.generation import degenerate


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
    no_repeat_sentence: bool = False
    no_restated_ending: bool = False


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
    # No repeated sentence: at the app's CPU settings 4 of 30 example answers of the 0.5B
    # repeated a list item shorter than the n-gram ban, 0 of 30 with it, and its LoCoMo answers
    # did not change (docs/benchmarks.md). Not measured on the 1.5B, whose figures were taken
    # without it (its facts phase is a list the ban would act on), so it stays off there.
    # No restated ending: at the same settings 2 of 30 example answers restated the request and
    # stopped ("Yes, I can pull together everyone's holiday gift ideas, including something for
    # my mom."); measured on the 0.5B only, like the sentence ban (docs/benchmarks.md).
    "qwen2.5-coder-0.5b-instruct": DecodingProfile(
        0.7, 0.8, 20, 1.1, NO_REPEAT_NGRAM, no_repeat_sentence=True, no_restated_ending=True
    ),
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


def profile_processors(
    profile: DecodingProfile, tokenizer: Any = None, stop_ids: Collection[int] = (), message: str = ""
) -> list[LogitsProcessor]:
    """The profile's repetition controls and top-k cut, for the engine's token picker, which
    shows them the answer's ids only (never the prompt). The sentence bans read text, so they
    need the `tokenizer` (and the `stop_ids` that would end the answer); the restated-ending
    ban also needs the user's `message`."""
    processors: list[LogitsProcessor] = []
    if profile.repetition_penalty != 1.0:
        processors.append(RepetitionPenaltyLogitsProcessor(profile.repetition_penalty))
    if profile.no_repeat_ngram_size > 0:
        processors.append(NoRepeatNGramLogitsProcessor(profile.no_repeat_ngram_size))
    if profile.no_repeat_sentence and tokenizer is not None:
        processors.append(NoRepeatedSentence(tokenizer, stop_ids))
    if profile.no_restated_ending and tokenizer is not None and stop_ids and message:
        processors.append(NoRestatedEnding(tokenizer, message, stop_ids))
    if profile.top_k > 0:
        processors.append(TopKLogitsWarper(profile.top_k))
    return processors


_CLOSED = re.compile(r"[.!?]\s*$")
"""A sentence that already has its closing mark: the next whitespace or newline ends it."""


@functools.lru_cache(maxsize=8)
def _sentence_enders(tokenizer: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """Per vocabulary id: would it end a sentence still open ("pickup" + "." or "\n"), and would
    it end one already closed by . ! ? ("pickup." + " " or "\n")? Decoded once per tokenizer
    (about 0.8 s for Qwen's 151,936 ids)."""
    texts = tokenizer.batch_decode([[i] for i in range(len(tokenizer))])
    newline = np.array(["\n" in text for text in texts])
    closing = np.array([any(mark in text for mark in ".!?") for text in texts])
    spaced = np.array([text[:1].isspace() for text in texts])
    return torch.from_numpy(newline | closing), torch.from_numpy(newline | spaced)


class NoRepeatedSentence(LogitsProcessor):
    """No sentence of the answer twice, by the degenerate-answer detector's own definition
    (`smem.generation.degenerate`: its words, lower-cased, `MIN_SENTENCE_WORDS` or more).

    When the sentence being written has the words of an earlier one, every token that would
    end it (a closing mark, a newline, the end of the answer) is banned, so the model must add
    a word or turn the sentence. The 10-token n-gram ban cannot see shorter repeats: list items
    such as "- Renée covers Friday pickup" written twice. The text is decoded at each step
    (the answer so far, a few hundred tokens), and only ids that end a sentence are touched."""

    def __init__(self, tokenizer: Any, stop_ids: Collection[int] = ()) -> None:
        self.tokenizer = tokenizer
        opened, closed = _sentence_enders(tokenizer)
        stops = torch.zeros_like(opened)
        stops[[i for i in stop_ids if 0 <= i < len(stops)]] = True
        self.end_open, self.end_closed = opened | stops, closed | stops

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        sentences = degenerate.sentences(self.tokenizer.decode(input_ids[0].tolist()))
        words = degenerate.sentence_words(sentences[-1])
        if words is None or words not in {degenerate.sentence_words(s) for s in sentences[:-1]}:
            return scores
        ends = self.end_closed if _CLOSED.search(sentences[-1]) else self.end_open
        banned = torch.zeros(scores.shape[-1], dtype=torch.bool)  # the logits may have more ids than the tokenizer
        width = min(len(ends), len(banned))
        banned[:width] = ends[:width]
        return scores.masked_fill(banned.to(scores.device), -float("inf"))


class NoRestatedEnding(LogitsProcessor):
    """The answer may not end while its last sentence restates the user's message
    (`degenerate.restated_ending`: it ends on `RESTATED_WORDS` consecutive words of it).

    The small model sometimes answers a request by repeating it as a promise and stopping:
    "Sure, I can help plan Thursday's algebra session with Alex. He keeps dropping minus signs
    and I want an approach that actually sticks." Only the end-of-answer ids are banned there,
    so the model goes on to what was asked ("Here are some options: …") and every sentence it
    writes is its own choice; an answer that puts something after the restated words
    ("… was Max.") ends as it would have."""

    def __init__(self, tokenizer: Any, message: str, stop_ids: Collection[int]) -> None:
        self.tokenizer = tokenizer
        self.message = message
        self.stop_ids = sorted(set(stop_ids))

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        if degenerate.restated_ending(self.tokenizer.decode(input_ids[0].tolist()), self.message) is None:
            return scores
        banned = torch.zeros(scores.shape[-1], dtype=torch.bool, device=scores.device)
        banned[[i for i in self.stop_ids if i < len(banned)]] = True
        return scores.masked_fill(banned, -float("inf"))
