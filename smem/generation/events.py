"""Typed events a streaming answer emits, and their Server-Sent-Events JSON form.

Events are plain picklable dataclasses: on ZeroGPU they cross a process boundary, and the
UI, the HTTP API and tests all consume the same stream.

They are also the one declaration of the stream's schema: each class names its SSE `type`,
and field metadata gives a field's JSON name (`json`, None for fields not sent), its
description (`doc`) or says to inline a nested dataclass's fields (`flatten`). `to_sse()`
writes the payload from that, and `smem.serving.api_schema` generates the API's pydantic
(OpenAPI) models from the same fields, so a field is declared once.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any, ClassVar, Literal, Optional, Union

from smem.memory.records import Hit

StopReason = Literal["eos", "max_tokens", "cancelled"]


def wire(*, json: Optional[str] = "", doc: str = "", flatten: bool = False, **options: Any) -> Any:
    """A dataclass field with its SSE metadata: `json` renames it ("" keeps its name, None
    keeps it out of the stream), `doc` describes it in the API schema, `flatten` inlines a
    nested dataclass's fields."""
    return field(metadata={"json": json, "doc": doc, "flatten": flatten}, **options)


def json_name(item: Any) -> Optional[str]:
    """A dataclass field's name in the SSE JSON (None: not sent)."""
    name = item.metadata.get("json", "")
    return item.name if name == "" else name


def _plain(value: Any) -> Any:
    if isinstance(value, Hit):
        return value.to_dict()
    if isinstance(value, list):
        return [_plain(item) for item in value]
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    return value


def _payload(instance: Any) -> dict[str, Any]:
    payload: dict[str, Any] = {}
    for item in fields(instance):
        name = json_name(item)
        if name is None:
            continue
        value = getattr(instance, item.name)
        if item.metadata.get("flatten"):
            payload.update(_payload(value))
        else:
            payload[name] = _plain(value)
    return payload


class SseEvent:
    """Base of the engine's events: `sse_type` and the fields give the JSON payload."""

    sse_type: ClassVar[str]

    def to_sse(self) -> dict[str, Any]:
        return {"type": self.sse_type, **_payload(self)}


@dataclass(frozen=True)
class HistoryTrimmed(SseEvent):
    """Sent before `memories` when the oldest history turns were dropped to fit the prompt
    budget (the serving layer decides, before the engine runs)."""

    sse_type: ClassVar[str] = "history_trimmed"
    dropped: int = wire(doc="History messages left out, oldest first.")
    kept: int = wire(doc="History messages the model reads.")
    prompt_tokens: int = wire(doc="Model tokens of the message and the kept history.")
    budget: int = wire(doc="The deployment's `max_prompt_tokens`.")


@dataclass(frozen=True)
class Memories(SseEvent):
    """The memories retrieved for the message, before the first token."""

    sse_type: ClassVar[str] = "memories"
    memories: list[Hit]


@dataclass(frozen=True)
class Thinking(SseEvent):
    """Thinking text of a thinking model (Qwen3's `<think>` block), as it is written."""

    sse_type: ClassVar[str] = "thinking"
    text: str = wire(json="t", doc="Thinking text, to append.")


@dataclass(frozen=True)
class Token(SseEvent):
    """Answer text, as it is written."""

    sse_type: ClassVar[str] = "token"
    text: str = wire(json="t", doc="Answer text, to append.")


@dataclass(frozen=True)
class MemoryUpdate(SseEvent):
    """The selected memories changed at generated token `at_token`; the model reads the new set from there on."""

    sse_type: ClassVar[str] = "memory_update"
    memories: list[Hit]
    added: list[Hit]
    removed: list[Hit]
    at_token: int
    exact: bool = wire(
        default=True,
        doc="True: the context was re-read exactly (`swap: exact`); false: only the changed memory lines were "
        "read and the text written so far kept its cache (`swap: splice` or `slots`, see smem.generation.swap).",
    )


@dataclass(frozen=True)
class ContextStats(SseEvent):
    """Context size now, for the streaming-vs-RAG-vs-everything chart: this answer's memory
    block against classic RAG (`rag_memory_tokens`: every memory retrieved so far kept) and
    against the whole pool (`all_memory_tokens`)."""

    sse_type: ClassVar[str] = "context"
    prompt_tokens: int
    memory_tokens: int
    generated_tokens: int
    swaps: int
    rag_memory_tokens: int
    all_memory_tokens: int


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
class Done(SseEvent):
    """The answer ended; its statistics."""

    sse_type: ClassVar[str] = "done"
    stats: DoneStats = wire(flatten=True)
    learned: Optional[Any] = wire(json=None, default=None)
    """The Hebbian state after the response's learning update, when the caller asked for it
    (ZeroGPU: the pool mutated in the worker must travel back through the yield)."""


Event = Union[HistoryTrimmed, Memories, Thinking, Token, MemoryUpdate, ContextStats, Done]
ENGINE_EVENTS: tuple[type[SseEvent], ...] = (HistoryTrimmed, Memories, ContextStats, Thinking, Token, MemoryUpdate, Done)
"""Every event class, in the order the API schema lists them."""
