"""Typed events a streaming answer emits, and their Server-Sent-Events JSON form.

Events are plain picklable dataclasses: on ZeroGPU they cross a process boundary, and the
UI, the HTTP API and tests all consume the same stream.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal, Optional, Union

from smem.memory.records import Hit

StopReason = Literal["eos", "max_tokens", "cancelled"]


@dataclass(frozen=True)
class Memories:
    """The initial memory set, retrieved for the user message before the first token."""

    memories: list[Hit]

    def to_sse(self) -> dict[str, Any]:
        return {"type": "memories", "memories": [hit.to_dict() for hit in self.memories]}


@dataclass(frozen=True)
class HistoryTrimmed:
    """The oldest `dropped` history messages were left out so the prompt fits its token budget
    (the serving layer decides, before the engine runs); the model reads the other `kept`."""

    dropped: int
    kept: int
    prompt_tokens: int
    budget: int

    def to_sse(self) -> dict[str, Any]:
        return {"type": "history_trimmed", **asdict(self)}


@dataclass(frozen=True)
class Thinking:
    text: str

    def to_sse(self) -> dict[str, Any]:
        return {"type": "thinking", "t": self.text}


@dataclass(frozen=True)
class Token:
    text: str

    def to_sse(self) -> dict[str, Any]:
        return {"type": "token", "t": self.text}


@dataclass(frozen=True)
class MemoryUpdate:
    """The selected set changed at generated token `at_token`; the context was rebuilt."""

    memories: list[Hit]
    added: list[Hit]
    removed: list[Hit]
    at_token: int

    def to_sse(self) -> dict[str, Any]:
        return {
            "type": "memory_update",
            "memories": [hit.to_dict() for hit in self.memories],
            "added": [hit.to_dict() for hit in self.added],
            "removed": [hit.to_dict() for hit in self.removed],
            "at_token": self.at_token,
        }


@dataclass(frozen=True)
class ContextStats:
    """Context size now, for the streaming-vs-RAG-vs-everything chart.

    `rag_memory_tokens` is what classic RAG would hold if it kept every memory retrieved so
    far; `all_memory_tokens` is the whole pool in context.
    """

    prompt_tokens: int
    memory_tokens: int
    generated_tokens: int
    swaps: int
    rag_memory_tokens: int
    all_memory_tokens: int

    def to_sse(self) -> dict[str, Any]:
        return {"type": "context", **asdict(self)}


@dataclass(frozen=True)
class DoneStats:
    tokens: int
    thinking_tokens: int
    swaps: int
    retrievals: int
    stop_reason: StopReason
    ttft_s: float
    total_s: float
    tokens_per_s: float
    retrieval_ms: float
    swap_ms: float
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Done:
    stats: DoneStats
    learned: Optional[Any] = None
    """The Hebbian state after the response's learning update, when the caller asked for it
    (ZeroGPU: the pool mutated in the worker must travel back through the yield)."""

    def to_sse(self) -> dict[str, Any]:
        return {"type": "done", **asdict(self.stats)}


Event = Union[HistoryTrimmed, Memories, Thinking, Token, MemoryUpdate, ContextStats, Done]
