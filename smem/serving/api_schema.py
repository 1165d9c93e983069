"""What the HTTP API accepts and returns: its limits, the request body, the JSON responses,
the events of the stream and the one error shape, as pydantic models.

The OpenAPI document is generated from these, so it states exactly what the server
enforces and sends; schemathesis checks the server against it, every stream event included.
The engine's event models are generated from the `smem.generation.events` dataclasses (the
one declaration of their fields); they allow extra fields so the engine can add a statistic
without breaking the stream.
"""

import dataclasses
import os
import typing
from dataclasses import fields
from typing import Annotated, Any, Callable, Literal, Mapping, Optional, Union

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, create_model, field_validator, model_validator
from pydantic_core import PydanticCustomError
from pydantic_settings import BaseSettings, SettingsConfigDict

from smem.generation import events
from smem.memory.records import Hit

CHAT_PATH = "/chat/stream"
SESSION_PATTERN = r"^[A-Za-z0-9_.:-]{1,128}$"
JSON_ESCAPE_BYTES = 12
"""Most bytes one character can take in a JSON body: an emoji sent as a `\\u` surrogate pair."""


def _integral(value: Any) -> Any:
    return int(value) if isinstance(value, float) and value.is_integer() else value


JsonInt = Annotated[int, BeforeValidator(_integral)]
"""An integer as JSON Schema has it: `2.0` is one, `2.5`, `"2"` and `true` are not."""


class ApiSettings(BaseSettings):
    """Limits of one deployment; each is overridable as `SMEM_API_<NAME>` (e.g.
    `SMEM_API_MAX_SESSIONS=1000`). The request schema is built from them, so the OpenAPI
    document always states the limits the server enforces."""

    model_config = SettingsConfigDict(env_prefix="SMEM_API_", frozen=True, extra="ignore")

    max_sessions: int = Field(256, gt=0, description="sessions kept; the least recently used beyond this are dropped")
    max_new_tokens: int = Field(2048, gt=0, description="most new tokens one answer may ask for")
    default_max_new_tokens: Optional[int] = Field(
        None, gt=0, description="new tokens when a request names none; unset: 512, or max_new_tokens if lower"
    )
    max_message_chars: int = Field(8000, gt=0, description="longest user message, in characters")
    max_history_messages: int = Field(50, gt=0, description="most history messages in one request")
    max_history_chars: int = Field(32000, gt=0, description="longest history, in characters")
    max_queue: int = Field(32, gt=0, description="answers that may wait for the model before new ones get 503")
    max_body_bytes: int = Field(
        4 * 1024 * 1024,
        gt=0,
        description="bodies beyond this are refused (413) before they are read; well above any valid body, so an "
        "oversized field is still answered with a 422 naming it",
    )

    @model_validator(mode="after")
    def _consistent(self) -> "ApiSettings":
        if self.default_max_new_tokens is None:
            object.__setattr__(self, "default_max_new_tokens", min(512, self.max_new_tokens))
        if self.default_max_new_tokens > self.max_new_tokens:
            raise ValueError("ApiSettings.default_max_new_tokens must not exceed max_new_tokens")
        if self.max_body_bytes < self.largest_valid_body:
            raise ValueError(f"ApiSettings.max_body_bytes must be at least {self.largest_valid_body} to admit every valid request")
        return self

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> "ApiSettings":
        """The limits as `environ` sets them (the process environment by default)."""
        prefix = cls.model_config["env_prefix"]
        names = {f"{prefix}{name}".upper(): name for name in cls.model_fields}
        return cls(**{names[key.upper()]: value for key, value in environ.items() if key.upper() in names})

    @property
    def largest_valid_body(self) -> int:
        """Bytes of the largest body the limits allow, every character escaped, with room for formatting."""
        return JSON_ESCAPE_BYTES * (self.max_message_chars + self.max_history_chars) + 64 * 1024


# -- errors ---------------------------------------------------------------------------------


class ErrorDetail(BaseModel):
    field: Optional[str] = Field(
        description="Offending input as a dotted path (`history.2.content`); `body` for the body as a whole; "
        "null when no input is at fault."
    )
    message: str


class ErrorBody(ErrorDetail):
    status: int = Field(description="The HTTP status, repeated for clients that only keep the body.")
    details: list[ErrorDetail] = Field(description="Every problem found; the first is repeated in `field`/`message`.")


class ErrorResponse(BaseModel):
    error: ErrorBody


# -- request and response models -------------------------------------------------------------


def chat_request_model(settings: ApiSettings, memory_sets: Callable[[], list[str]]) -> type[BaseModel]:
    """The body of `POST /chat/stream`, with this deployment's limits and memory sets (as
    found at startup) in its schema; a set is checked against those present now.

    Strict, as JSON Schema reads types: `"5"` is not a number and `1` is not `true`; and
    unknown fields are refused, so a typo in a knob's name is an error, not a silent default.
    """

    class HistoryMessage(BaseModel):
        model_config = ConfigDict(strict=True, extra="forbid", title="HistoryMessage")

        role: Literal["user", "assistant"]
        content: str = Field(max_length=settings.max_message_chars)

    class ChatRequest(BaseModel):
        model_config = ConfigDict(strict=True, extra="forbid", allow_inf_nan=False, title="ChatRequest")

        message: str = Field(
            min_length=1,
            max_length=settings.max_message_chars,
            description="The user's new message; must contain non-whitespace text.",
            examples=["Can you help me with fractions?"],
        )
        history: list[HistoryMessage] = Field(
            default_factory=list,
            max_length=settings.max_history_messages,
            description=f"Earlier turns, oldest first. At most {settings.max_history_chars} characters of content in all; "
            f"each message at most {settings.max_message_chars}.",
        )
        memory_set: str = Field(
            description="Which memory set to draw from (see `GET /health`).",
            json_schema_extra={"enum": memory_sets()},
            examples=memory_sets()[:1],
        )
        session: Optional[str] = Field(
            default=None,
            pattern=SESSION_PATTERN,
            description="Keep this session's Hebbian state between requests (one state per session and memory set). "
            "Omit it to start from the memory set's initial state and keep nothing.",
        )
        update_every_n: JsonInt = Field(default=10, ge=1, le=20, description="Re-retrieve memories every N generated tokens.")
        max_memories: JsonInt = Field(default=5, ge=1, le=15, description="Memories in context at once.")
        lookback_tokens: JsonInt = Field(default=60, ge=1, le=1024, description="Generated tokens that make up each re-retrieval query.")
        max_new_tokens: JsonInt = Field(default=settings.default_max_new_tokens, ge=1, le=settings.max_new_tokens)
        temperature: float = Field(default=0.7, ge=0.0, le=2.0, description="Sampling temperature; 0 is greedy.")
        seed: Optional[Annotated[int, Field(ge=0, le=2**32 - 1), BeforeValidator(_integral)]] = Field(
            default=None, description="Sampling seed, for repeatable answers."
        )
        enable_thinking: bool = Field(default=True, description="Let a thinking model think first (streamed as `thinking` events).")

        @field_validator("message")
        @classmethod
        def _not_blank(cls, value: str) -> str:
            if not value.strip():
                raise PydanticCustomError("blank", "must contain non-whitespace text")
            return value

        @field_validator("memory_set")
        @classmethod
        def _known_set(cls, value: str) -> str:
            available = memory_sets()
            if value not in available:
                raise PydanticCustomError(
                    "unknown_memory_set", "unknown memory set '{name}'; available: {available}", {"name": value, "available": ", ".join(available)}
                )
            return value

        @field_validator("history")
        @classmethod
        def _history_size(cls, value: list[HistoryMessage]) -> list[HistoryMessage]:
            total = sum(len(message.content) for message in value)
            if total > settings.max_history_chars:
                raise PydanticCustomError(
                    "too_long", "holds {total} characters of content; at most {limit} are accepted", {"total": total, "limit": settings.max_history_chars}
                )
            return value

    return ChatRequest


class MemoryState(BaseModel):
    id: str
    content: str
    type: Optional[str]
    subject: Optional[str]
    emotional_intensity: float
    created_at: str
    tokens: int
    retrieval_count: float = Field(description="Answers this memory was in context for (this session's, if one is named).")
    last_retrieved: Optional[str] = Field(description="When it was last in context (ISO 8601, UTC); null if never.")


class Link(BaseModel):
    source: str
    target: str
    weight: float = Field(description="Co-retrieval strength: grows by the share of an answer both memories spent in context together.")


class MemoriesResponse(BaseModel):
    memory_set: str
    session: Optional[str]
    answers: int = Field(description="Answers this session has learned from (0 without a session).")
    memories: list[MemoryState]
    links: list[Link]


class QueueState(BaseModel):
    mode: Literal["serialised"] = Field(description="Answers are generated one at a time, first come first served.")
    length: int = Field(description="Answers generating or waiting now.")
    limit: int = Field(description="Queue length past which new answers get 503.")


class SessionStats(BaseModel):
    active: int
    limit: int
    evicted: int


class Limits(BaseModel):
    max_new_tokens: int
    max_message_chars: int
    max_history_messages: int
    max_history_chars: int
    max_body_bytes: int


class HealthResponse(BaseModel):
    status: Literal["ok"]
    model: str
    embedder: str
    memory_sets: list[str]
    queue: QueueState
    sessions: SessionStats
    limits: Limits


# -- stream events --------------------------------------------------------------------------


class StreamEventModel(BaseModel):
    """Base of the stream's event models."""

    model_config = ConfigDict(extra="allow")


class MemoryHit(StreamEventModel):
    """A memory in context, with why it was chosen (`smem.memory.records.Hit.to_dict`)."""

    id: str
    content: str
    type: Optional[str] = None
    subject: Optional[str] = None
    score: float = Field(description="Selection score: similarity times the Hebbian multiplier, after diversity.")
    similarity: Optional[float] = None
    multiplier: Optional[float] = Field(default=None, description="Hebbian boost from past use and links.")
    tokens: Optional[int] = Field(
        default=None, description="What the memory's line costs in the prompt, in the generating model's tokens."
    )


class QueuedEvent(StreamEventModel):
    """Sent while the answer waits for the model, whenever its place changes."""

    type: Literal["queued"]
    position: int = Field(ge=1, description="Answers ahead of this one (1: next).")


def _wire_type(annotation: Any) -> Any:
    """A dataclass field's type as sent: a `Hit` goes out as a `MemoryHit` object."""
    if annotation is Hit:
        return MemoryHit
    if typing.get_origin(annotation) is list:
        return list[_wire_type(typing.get_args(annotation)[0])]
    return annotation


def _wire_fields(cls: type) -> dict[str, Any]:
    """Pydantic field definitions for a dataclass's fields, as `to_sse()` writes them."""
    hints = typing.get_type_hints(cls)
    definitions: dict[str, Any] = {}
    for item in fields(cls):
        name = events.json_name(item)
        if name is None:
            continue
        if item.metadata.get("flatten"):
            definitions.update(_wire_fields(hints[item.name]))
            continue
        description = item.metadata.get("doc") or None
        if item.default_factory is not dataclasses.MISSING:
            spec = Field(default_factory=item.default_factory, description=description)
        elif item.default is not dataclasses.MISSING:
            spec = Field(default=item.default, description=description)
        else:
            spec = Field(description=description)
        definitions[name] = (_wire_type(hints[item.name]), spec)
    return definitions


def event_model(cls: type[events.SseEvent]) -> type[StreamEventModel]:
    """The API model of one engine event, named for its type (`memory_update` → `MemoryUpdateEvent`)."""
    name = "".join(part.title() for part in cls.sse_type.split("_")) + "Event"
    return create_model(
        name,
        __base__=StreamEventModel,
        __doc__=cls.__doc__,
        __module__=__name__,
        type=(Literal[cls.sse_type], ...),  # type: ignore[valid-type]
        **_wire_fields(cls),
    )


ENGINE_EVENT_MODELS = {cls: event_model(cls) for cls in events.ENGINE_EVENTS}
"""The engine's events as API models, generated from `smem.generation.events`."""


class ErrorEvent(StreamEventModel):
    """The answer failed after the stream began (the status was already 200); nothing follows."""

    type: Literal["error"]
    error: ErrorBody


StreamEvent = Annotated[
    Union[(QueuedEvent, *ENGINE_EVENT_MODELS.values(), ErrorEvent)],  # type: ignore[valid-type]
    Field(discriminator="type"),
]
