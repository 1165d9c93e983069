"""A short reasoning phase asked for in the prompt, for models that do not think on their own.

Re-retrieval can only change an answer while the model is still writing, and a short answer
leaves it little room. Qwen3 thinks in a `<think>` block first; the packaged Qwen2.5 models do
not. Asked to write "Facts:" with a few short sentences and then "Answer:" with the answer,
they give re-retrieval a phase to act in before the answer starts. On LoCoMo (issue 10,
docs/benchmarks.md "Every paired comparison so far") this is the one setup where streaming beat
retrieving once with an interval above zero: the packaged 1.5B, +0.032 F1 [+0.008, +0.057] over
240 answers, while the repetition controls also saw the facts; with them seeing the answer
alone (`TokenPicker`), every condition gains, RAG the most, and streaming's lead is +0.024
[+0.004, +0.045] over the same 240. It costs the 0.5B F1 (RAG 0.168 answering directly, 0.112 with the phase), so a
model's decoding profile says whether it gets it (`DecodingProfile.prompted_reasoning`).

The engine streams the facts as `Thinking` events and what follows "Answer:" as `Token` events,
as it does for Qwen3's thinking, so the app, the API and the history treat both alike.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

import regex
import torch
from transformers import LogitsProcessor

CHAT_INSTRUCTION = (
    'First write "Facts:" and, on the same line, one to three short sentences with what you know about the user '
    'that bears on the message. Then, on a new line, write "Answer:" and your answer.'
)
"""The format request of the app and the API, appended to the system prompt (where it stays out
of the first retrieval's query, which embeds the message). Worded as the benchmark's
(bench/answers.py `REASONING_INSTRUCTION`), whose "on the same line" / "on a new line" kept the
0.5B from listing 4-7 facts into its token limit; that one asks for a short phrase with the
conversation's words, which LoCoMo's F1 rewards and a chat does not."""

ANSWER_MARKER = regex.compile(r"[*_]*\banswer[*_]*\s*:[*_]*", regex.IGNORECASE)
"""Where the final answer begins ("Answer:", also markdown's "**Answer:**" or "Final answer:");
the first match ends the reasoning phase."""

MARKER_WINDOW = 256
"""Characters of the reply's end searched for a marker: "**Final answer:**" is 17; 256 (chosen)
is far more than that plus the text of the one token read each step."""

FORCED_MARKER = "\nAnswer:"
"""What `AnswerBeforeEnd` writes for a model that would end before its answer: the line the
instruction asks for."""


@dataclass(frozen=True)
class PromptedReasoning:
    """How a model is asked to reason before it answers, and how its reply is split.

    `instruction` is appended to the system prompt; `force_answer` adds `AnswerBeforeEnd`, without
    which the packaged 1.5B ended after its facts in 21-27 of 60 LoCoMo answers
    (docs/benchmarks.md, "With the answer line forced")."""

    instruction: str = CHAT_INSTRUCTION
    force_answer: bool = True

    def system_prompt(self, base: Optional[str]) -> str:
        return f"{base} {self.instruction}" if base else self.instruction

    def processors(self, tokenizer: Any, stop_ids: frozenset[int]) -> list[LogitsProcessor]:
        """The logits processors of one answer (each keeps per-answer state)."""
        return [AnswerBeforeEnd(tokenizer, stop_ids)] if self.force_answer else []


class AnswerBeforeEnd(LogitsProcessor):
    """Until an answer marker is written, a reply cannot end: when the likeliest next token ends
    it, write `FORCED_MARKER` instead, one token a step, and let the model answer after it; when
    an end token is merely possible (sampling), take it out of the draw.

    Forcing the step a model skipped is what thinking budgets do with `</think>`. Runs after the
    decoding profile's processors, before temperature, on the ids of the whole answer, facts
    included (the engine's `TokenPicker` passes it those, never the prompt). One per answer: it
    keeps where its forced marker began."""

    def __init__(self, tokenizer: Any, stop_ids: frozenset[int]) -> None:
        self.tokenizer = tokenizer
        self.stop_ids = sorted(stop_ids)
        self.marker: list[int] = tokenizer.encode(FORCED_MARKER, add_special_tokens=False)
        self.forced_from: Optional[int] = None
        self.answered = False
        self._read = 0
        self._tail = ""

    def _marker_written(self, input_ids: torch.LongTensor) -> bool:
        """Whether the reply so far holds an answer marker; reads only the ids new since the
        last call (the marker is ASCII, so a character split across two reads cannot hide it)."""
        if not self.answered:
            new = self.tokenizer.decode(input_ids[0, self._read :], skip_special_tokens=True)
            self._read = input_ids.shape[-1]
            self._tail = (self._tail + new)[-MARKER_WINDOW:]
            self.answered = ANSWER_MARKER.search(self._tail) is not None
        return self.answered

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        written = input_ids.shape[-1]
        if self.forced_from is None:
            if self._marker_written(input_ids):
                return scores
            if int(scores[0].argmax()) not in self.stop_ids:
                held = scores.clone()
                held[:, self.stop_ids] = float("-inf")
                return held
            self.forced_from = written
        step = written - self.forced_from
        if step >= len(self.marker):
            return scores
        forced = torch.full_like(scores, float("-inf"))
        forced[:, self.marker[step]] = 0.0
        return forced
