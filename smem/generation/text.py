"""Token ids to streamed text: whole characters only, thinking kept apart from the answer."""

from __future__ import annotations

from typing import Any, Optional, Sequence

import regex

from smem.generation.events import Event, Thinking, Token


class IncrementalDecoder:
    """Turns token ids into text deltas without splitting multi-byte characters.

    Byte-level BPE tokens can end mid-character (emoji, CJK, accents); decoding each token alone
    prints U+FFFD. Decode a short window instead and emit only the text that grew and does not
    end in a replacement character (the approach of TGI and vLLM).
    """

    def __init__(self, tokenizer: Any) -> None:
        self._tokenizer = tokenizer
        self._ids: list[int] = []
        self._prefix = 0
        self._read = 0

    def _decode(self, ids: Sequence[int]) -> str:
        return self._tokenizer.decode(ids, skip_special_tokens=True, clean_up_tokenization_spaces=False)

    def push(self, token_id: int) -> str:
        self._ids.append(token_id)
        before = self._decode(self._ids[self._prefix : self._read])
        text = self._decode(self._ids[self._prefix :])
        if len(text) > len(before) and not text.endswith("\ufffd"):
            self._prefix, self._read = self._read, len(self._ids)
            return text[len(before) :]
        return ""

    def flush(self) -> str:
        """Whatever is still held back (an incomplete character stays as U+FFFD)."""
        before = self._decode(self._ids[self._prefix : self._read])
        text = self._decode(self._ids[self._prefix :])
        self._prefix = self._read = len(self._ids)
        return text[len(before) :]


class TextSplitter:
    """Routes decoded text to Thinking or Token events and trims the whitespace around
    `<think>` blocks (Qwen3 writes "<think>\\n…\\n</think>\\n\\n"), holding trailing whitespace
    until it is known not to end a segment.

    With `answer_marker` (prompted reasoning, `smem.generation.reasoning`), the thinking ends
    where the marker's first match does, and the text after it is the answer. Text that may
    be the start of a marker ("Ans") is held until it is known not to be, so the marker itself
    never reaches either stream; a marker at the very end is held too, since it may still grow
    ("**Answer:" then "**")."""

    def __init__(self, tokenizer: Any, thinking: bool, answer_marker: Optional[regex.Pattern[str]] = None) -> None:
        self._tokenizer = tokenizer
        self.thinking = thinking
        self._marker = answer_marker
        self._decoder = IncrementalDecoder(tokenizer)
        self._started = False
        self._pending = ""
        self._held = ""

    def _event(self, text: str) -> Event:
        return Thinking(text) if self.thinking else Token(text)

    def feed(self, token_id: int) -> list[Event]:
        return self._text(self._decoder.push(token_id), final=False)

    def _text(self, text: str, final: bool) -> list[Event]:
        if not (self.thinking and self._marker is not None):
            return self._emit(text)
        self._held += text
        match = self._marker.search(self._held, partial=True)
        if match is None or (final and match.partial):
            out, self._held = self._held, ""
            return self._emit(out)
        if match.partial or (match.end() == len(self._held) and not final):
            out, self._held = self._held[: match.start()], self._held[match.start() :]
            return self._emit(out)
        before, after = self._held[: match.start()], self._held[match.end() :]
        self._held = ""
        events = self._emit(before)
        self._start(thinking=False)
        return events + self._emit(after)

    def _emit(self, text: str) -> list[Event]:
        if not self._started:
            text = text.lstrip()
            self._started = bool(text)
        text = self._pending + text
        body = text.rstrip()
        self._pending = text[len(body) :]
        return [self._event(body)] if body else []

    def _start(self, thinking: bool) -> None:
        """Start a segment, dropping the trailing whitespace of the one before."""
        self.thinking = thinking
        self._started = False
        self._pending = ""

    def switch(self, thinking: bool) -> list[Event]:
        """End the current segment (dropping its trailing whitespace) and start another."""
        events = self._text(self._decoder.flush(), final=True)
        self._decoder = IncrementalDecoder(self._tokenizer)
        self._start(thinking)
        return events

    def finish(self) -> list[Event]:
        return self._text(self._decoder.flush(), final=True)
