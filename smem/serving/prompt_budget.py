"""Bounding what one answer costs before it runs: the message and history in model tokens.

Character limits alone let a maximum-size request reach its first token only after 438 s on
the packaged CPU model (issue 14): prefill cost follows tokens, so the budget is in the
model's own tokens. A message over `max_message_tokens` is refused; history is trimmed,
oldest turns first, until message plus history fit `max_prompt_tokens`, and the stream says
so (`HistoryTrimmed`). The HTTP API and the Gradio app both call `fit`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional, Sequence

import numpy as np

from smem.generation.events import HistoryTrimmed
from smem.serving.api_schema import ApiSettings


class MessageTooLong(ValueError):
    """The message alone is over the token limit; the text says by how much."""


@dataclass(frozen=True)
class FittedPrompt:
    history: list[dict[str, str]]
    prompt_tokens: int
    trimmed: Optional[HistoryTrimmed]
    """Set when history was dropped: the event to send before the answer."""


def _token_counts(tokenizer: Any, texts: Sequence[str]) -> np.ndarray:
    if not texts:
        return np.zeros(0, dtype=np.int64)
    encoded = tokenizer(list(texts), add_special_tokens=False)["input_ids"]
    return np.array([len(ids) for ids in encoded], dtype=np.int64)


def fit(tokenizer: Any, message: str, history: Sequence[dict[str, str]], settings: ApiSettings) -> FittedPrompt:
    """The history the model may read with `message`; raises `MessageTooLong`. Only the newest
    `max_history_messages` turns are even tokenized (the UI sends its whole chat)."""
    if len(message) > settings.max_message_chars:
        raise MessageTooLong(f"message: {len(message)} characters; at most {settings.max_message_chars} are accepted")
    message_tokens = int(_token_counts(tokenizer, [message])[0])
    if message_tokens > settings.max_message_tokens:
        raise MessageTooLong(f"message: {message_tokens} model tokens; at most {settings.max_message_tokens} are accepted")
    history = [dict(turn) for turn in history]
    recent = len(history) - settings.max_history_messages
    counts = _token_counts(tokenizer, [turn["content"] for turn in history[max(recent, 0):]])
    counts = np.concatenate([np.full(max(recent, 0), settings.max_prompt_tokens + 1, dtype=np.int64), counts])
    # Newest turns are kept first: the suffix sums say how much each starting point costs.
    suffix = np.cumsum(counts[::-1])[::-1] if len(counts) else counts
    fits = np.flatnonzero(suffix <= settings.max_prompt_tokens - message_tokens)
    start = int(fits[0]) if len(fits) else len(history)
    while start < len(history) and history[start].get("role") == "assistant":
        start += 1  # a kept history starts with a user turn, as a conversation does
    kept = history[start:]
    prompt_tokens = message_tokens + int(counts[start:].sum())
    trimmed = None
    if start:
        trimmed = HistoryTrimmed(dropped=start, kept=len(kept), prompt_tokens=prompt_tokens, budget=settings.max_prompt_tokens)
    return FittedPrompt(history=kept, prompt_tokens=prompt_tokens, trimmed=trimmed)
