"""Token ids to streamed text: whole characters only, thinking kept apart from the answer."""

from __future__ import annotations

from typing import Any, Optional, Sequence

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
    until it is known not to end a segment."""

    def __init__(self, tokenizer: Any, thinking: bool) -> None:
        self._tokenizer = tokenizer
        self.thinking = thinking
        self._decoder = IncrementalDecoder(tokenizer)
        self._started = False
        self._pending = ""

    def _event(self, text: str) -> Event:
        return Thinking(text) if self.thinking else Token(text)

    def feed(self, token_id: int) -> Optional[Event]:
        return self._emit(self._decoder.push(token_id))

    def _emit(self, text: str) -> Optional[Event]:
        if not self._started:
            text = text.lstrip()
            self._started = bool(text)
        text = self._pending + text
        body = text.rstrip()
        self._pending = text[len(body) :]
        return self._event(body) if body else None

    def switch(self, thinking: bool) -> Optional[Event]:
        """End the current segment (dropping its trailing whitespace) and start another."""
        event = self._emit(self._decoder.flush())
        self.thinking = thinking
        self._decoder = IncrementalDecoder(self._tokenizer)
        self._started = False
        self._pending = ""
        return event

    def finish(self) -> Optional[Event]:
        return self._emit(self._decoder.flush())
