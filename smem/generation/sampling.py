"""Random choices of one answer: the next token, and the memory draws, from one seed.

Every answer runs with a seed: the caller's, or one drawn here and reported in `Done`, so any
answer seen in the app or the API can be replayed exactly.

Tokens: transformers' logits processors (minimum length, then any caller-supplied ones such
as a repetition penalty, then temperature and top-p) and a draw from the softmax, or argmax at
temperature 0.

Memories: with `sample`, every retrieval of the answer passes the answer's seed to the pool,
which draws by the Gumbel-max trick with noise fixed per (seed, memory). Each draw is still a
sample from the pool's softmax, but consecutive draws share their noise, so a re-retrieval
changes the set only where the scores moved, not because the dice were rolled again
(`bench/generation.py --sample-memories` reports swaps per 100 tokens greedy vs sampled).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Collection, Optional, Sequence

import numpy as np
import torch
from transformers import (
    LogitsProcessor,
    LogitsProcessorList,
    MinNewTokensLengthLogitsProcessor,
    TemperatureLogitsWarper,
    TopPLogitsWarper,
)

def answer_seed(seed: Optional[int]) -> int:
    """The seed an answer runs with: `seed`, or a fresh 32-bit one (reported in `Done`)."""
    if seed is not None:
        return int(seed)
    return int(np.random.SeedSequence().generate_state(1)[0])


@dataclass(frozen=True)
class MemoryDraws:
    """How an answer selects memories: the softmax draw (`sample`) or the argmax."""

    seed: int
    sample: bool

    def retrieve_args(self) -> dict[str, Any]:
        return {"sample": self.sample, "sample_seed": self.seed if self.sample else None}


class TokenPicker:
    """Chooses each next token; the processors see the ids of the segment being written (not
    the prompt, whose memory block changes under swaps; after a thinking phase, only the
    answer: a repetition penalty or n-gram ban over the model's own notes would push its answer
    away from the names and facts it just wrote down, or merge words to dodge a banned span).
    The minimum length and `whole_processors` (which keep positions, such as the forced answer
    line) see the whole answer; they run in that order: minimum length, `processors`,
    `whole_processors`, then temperature and top-p."""

    def __init__(
        self,
        *,
        temperature: float,
        top_p: float,
        min_new_tokens: int,
        stop_ids: Collection[int],
        seed: int,
        device: torch.device,
        processors: Sequence[LogitsProcessor] = (),
        whole_processors: Sequence[LogitsProcessor] = (),
    ) -> None:
        self.min_length = (
            MinNewTokensLengthLogitsProcessor(0, min_new_tokens, sorted(stop_ids), device=device) if min_new_tokens > 0 else None
        )
        self.processors = LogitsProcessorList(processors)
        self.whole = LogitsProcessorList(whole_processors)
        self.warpers = LogitsProcessorList()
        self.greedy = temperature <= 0
        if not self.greedy:
            self.warpers.append(TemperatureLogitsWarper(temperature))
            if top_p < 1.0:
                self.warpers.append(TopPLogitsWarper(top_p))
        self.generator = torch.Generator(device=device).manual_seed(seed)
        self.device = device

    def __call__(self, generated: Sequence[int], logits: torch.Tensor, segment: int = 0) -> int:
        """The next token after `generated`, whose segment being written starts at `segment`."""
        # Inference mode: the logits come from it, and processors may edit scores in place.
        with torch.inference_mode():
            if self.min_length is not None or self.processors or self.whole or self.warpers:
                ids = torch.tensor([list(generated)], dtype=torch.long, device=self.device)
                scores = logits[None]
                if self.min_length is not None:
                    scores = self.min_length(ids, scores)
                scores = self.whole(ids, self.processors(ids[:, segment:], scores))
                logits = self.warpers(ids, scores)[0]
            if self.greedy:
                return int(torch.argmax(logits))
            return int(torch.multinomial(torch.softmax(logits, dim=-1), 1, generator=self.generator))
