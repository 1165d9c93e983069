"""What the HTTP API accepts and returns: its limits, the request body, the JSON responses,
the events of the stream and the one error shape, as pydantic models.

The OpenAPI document is generated from these, so it states exactly what the server
enforces and sends; schemathesis checks the server against it, every stream event included.
The engine's event models are generated from the `smem.generation.events` dataclasses (the
one declaration of their fields); they allow extra fields so the engine can add a statistic
without breaking the stream.
"""

import dataclasses
import json
import os
import typing
from dataclasses import fields
from typing import Annotated, Any, Callable, Literal, Mapping, Optional, Union

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainValidator,
    WithJsonSchema,
    create_model,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError
from pydantic_settings import BaseSettings, SettingsConfigDict

from smem.generation import events
from smem.generation.swap import (
    DEFAULT_UNCERTAINTY_THRESHOLD,
    MAX_EXTRA_MEMORIES,
    MAX_LOOKAHEAD_TOKENS,
    RetrievalTrigger,
    SwapChoice,
    parse_extra_memories,
)
from smem.memory.records import Hit

CHAT_PATH = "/chat/stream"
SESSION_PATTERN = r"^[A-Za-z0-9_.:-]{1,128}$"
"""A session id as the store makes them (32 URL-safe characters for 192 bits) with room to spare;
a longer or stranger id is refused as a 422 before any lookup."""
LABEL_MAX_CHARS = 80
"""Longest session label (chosen: a title, never prose); it names the export file too."""
JSON_ESCAPE_BYTES = 12
"""Most bytes one character can take in a JSON body: an emoji sent as a `\\u` surrogate pair."""


def _integral(value: Any) -> Any:
    return int(value) if isinstance(value, float) and value.is_integer() else value


JsonInt = Annotated[int, BeforeValidator(_integral)]
"""An integer as JSON Schema has it: `2.0` is one, `2.5`, `"2"` and `true` are not."""


def _extra_memories(value: Any) -> Union[int, str]:
    try:
        return parse_extra_memories(value)
    except ValueError as error:
        raise PydanticCustomError("extra_memories", "{problem}", {"problem": str(error)}) from None


ExtraMemoriesField = Annotated[
    Union[int, str],
    PlainValidator(_extra_memories),
    WithJsonSchema({"anyOf": [{"type": "integer", "minimum": 0, "maximum": MAX_EXTRA_MEMORIES}, {"const": "auto"}]}),
]
"""`extra_memories`: "auto" or a count, checked in one place so a refusal names the field alone
(a pydantic union would name each of its branches)."""


class ApiSettings(BaseSettings):
    """Limits of one deployment, for the HTTP API and the Gradio app alike (so nothing the UI
    accepts is refused by the API or the other way round); each is overridable as
    `SMEM_API_<NAME>` (e.g. `SMEM_API_MAX_QUEUE=64`). The request schema is built from them,
    so the OpenAPI document always states the limits the server enforces."""

    model_config = SettingsConfigDict(env_prefix="SMEM_API_", frozen=True, extra="ignore")

    session_ttl_s: int = Field(
        30 * 24 * 3600, gt=0, description="a session unused this long (seconds) is deleted; requests naming it get 404"
    )
    """Thirty days: a person who comes back within a month finds what their assistant learned."""
    max_new_tokens: int = Field(2048, gt=0, description="most new tokens one answer may ask for")
    """Chosen: Qwen3's thinking plus an answer fits; at the 20 tokens/s the GPU sizing assumes
    (smem.ui.actions) it is ~100 s, inside ZeroGPU's reservation cap."""
    default_max_new_tokens: Optional[int] = Field(
        None, gt=0, description="new tokens when a request names none; unset: 512, or max_new_tokens if lower"
    )
    max_message_chars: int = Field(8000, gt=0, description="longest user message, in characters (checked before tokenizing)")
    """Chosen: a long chat message (a few pages) fits; tokenizing more is refused before it starts."""
    max_message_tokens: int = Field(2048, gt=0, description="longest user message, in model tokens")
    """About the 8,000-character bound in English."""
    max_history_messages: int = Field(50, gt=0, description="most history messages in one request (the UI keeps the newest)")
    """Chosen: 25 exchanges, more than `max_prompt_tokens` holds of ordinary turns."""
    max_history_chars: int = Field(32000, gt=0, description="longest history, in characters")
    """Four messages at the message limit (chosen); token trimming (`max_prompt_tokens`) does the rest."""
    max_prompt_tokens: int = Field(
        4096, gt=0, description="message plus history, in model tokens; older history is dropped to fit and the stream says so"
    )
    """Prefill cost follows tokens: 8,000 + 32,000 characters (~10k tokens) took 438 s to the first
    token on the packaged CPU model under load (issue 14). 4,096 keeps a GPU answer's prefill well
    under a second and bounds the CPU fallback to a few minutes at worst."""
    max_queue: int = Field(32, gt=0, description="answers that may wait for the model before new ones get 503")
    """Chosen: at a GPU answer's ~10–30 s, the 32nd in line waits minutes, the most a visitor
    would sit through; docs/benchmarks.md "Durability and fairness" tests it with 40 clients."""
    max_queue_per_client: int = Field(
        4, gt=0, description="answers one client (a session, else an address) may have generating or queued before 429"
    )
    """One browser tab rarely needs more than one; four leaves room for retries without letting
    one client fill the queue."""
    max_body_bytes: int = Field(
        4 * 1024 * 1024,
        gt=0,
        description="bodies beyond this are refused (413) before they are read; well above any valid body, so an "
        "oversized field is still answered with a 422 naming it",
    )
    """4 MiB, about 7× `largest_valid_body` (~0.6 MB at the default limits); the validator below
    keeps it above that whatever the other limits are set to."""
    max_upload_bytes: int = Field(
        8 * 1024 * 1024, gt=0, description="largest uploaded or imported file (also Gradio's max_file_size)"
    )
    """A pool file of `max_pool_memories` memories with a full learned state is about 6.5 MB
    (2 × 2000 × 384 float32 vectors plus metadata)."""
    max_upload_records: int = Field(2000, gt=0, description="most records in an uploaded memory set")
    """The embedder managed ~240 records/s on the shared CPU (100k records took 413 s, issue 14),
    so 2,000 is under ten seconds of embedding."""
    max_pool_memories: int = Field(2000, gt=0, description="most memories in one visitor's or session's pool")
    """As `max_upload_records`, so any accepted upload fits; a session of 2,000 memories is ~10 MiB
    in RAM, against ~1.5 MiB for a sample set (docs/benchmarks.md, API)."""

    @model_validator(mode="after")
    def _consistent(self) -> "ApiSettings":
        if self.default_max_new_tokens is None:
            # 512 (chosen): a full answer without thinking at length, a quarter of the cap.
            object.__setattr__(self, "default_max_new_tokens", min(512, self.max_new_tokens))
        if self.default_max_new_tokens > self.max_new_tokens:
            raise ValueError("ApiSettings.default_max_new_tokens must not exceed max_new_tokens")
        if self.max_message_tokens > self.max_prompt_tokens:
            raise ValueError("ApiSettings.max_message_tokens must not exceed max_prompt_tokens")
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
        # 64 KiB (chosen) covers every other field, the keys and the history's roles and punctuation.
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


def chat_request_model(
    settings: ApiSettings, memory_sets: Callable[[], list[str]]
) -> type[BaseModel]:
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
        model_config = ConfigDict(
            strict=True,
            extra="forbid",
            allow_inf_nan=False,
            title="ChatRequest",
            # memory_set or session, as a non-null string: without a session the set must be named.
            json_schema_extra={
                "anyOf": [
                    {"required": ["memory_set"], "properties": {"memory_set": {"type": "string"}}},
                    {"required": ["session"], "properties": {"session": {"type": "string"}}},
                ]
            },
        )

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
        memory_set: Optional[str] = Field(
            default=None,
            description="Which memory set to draw from (see `GET /health`). Without `session`, the default set (`tutor`) when "
            "omitted, so the original Streaming Memory body (`message`, `history`, `update_every_n`, `max_memories`) "
            "works as it is; with one, the session's own set is used and this may be omitted (if given, it must match).",
            json_schema_extra={"enum": memory_sets()},
            examples=memory_sets()[:1],
        )
        session: Optional[str] = Field(
            default=None,
            pattern=SESSION_PATTERN,
            description="A session id from `POST /sessions`: the answer uses and teaches that session's Hebbian state. "
            "An unknown or expired id is refused (404). Omit it to start from the memory set's initial state and keep nothing.",
        )
        # Defaults are the engine's (`StreamingEngine.stream`); the ranges of update_every_n and
        # max_memories are the app's sliders' (smem.ui.actions.SETTINGS); lookback up to 1024 tokens
        # and temperature up to 2.0 are chosen wider than the sliders for API experiments; the
        # seed is 32-bit, what numpy's and torch's generators take.
        update_every_n: JsonInt = Field(default=10, ge=1, le=20, description="Re-retrieve memories every N generated tokens.")
        max_memories: JsonInt = Field(default=5, ge=1, le=15, description="Memories in context at once.")
        lookback_tokens: JsonInt = Field(default=60, ge=1, le=1024, description="Generated tokens that make up each re-retrieval query.")
        max_new_tokens: JsonInt = Field(default=settings.default_max_new_tokens, ge=1, le=settings.max_new_tokens)
        temperature: float = Field(default=0.7, ge=0.0, le=2.0, description="Sampling temperature; 0 is greedy.")
        seed: Optional[Annotated[int, Field(ge=0, le=2**32 - 1), BeforeValidator(_integral)]] = Field(
            default=None, description="Sampling seed, for repeatable answers."
        )
        enable_thinking: bool = Field(
            default=True,
            description="Let the model think first, streamed as `thinking` events: a thinking model (Qwen3) in its "
            "own way, a model whose profile asks for it (the packaged 1.5B) in a short \"Facts:\" line before "
            "\"Answer:\" (see `/health` `can_think`). No effect on other models.",
        )
        sample_memories: bool = Field(
            default=True,
            description="Draw the memories with probability proportional to score^(1/T), T the memory set's softmax temperature, as the "
            "app does; false takes the top scores. Draws follow `seed`; the seed used is in `done.extra.seed`.",
        )
        swap: SwapChoice = Field(
            default="auto",
            description="How a memory swap edits the model's cache: `exact` re-reads the new memories, the header and "
            "everything generated so far (exact; cost grows with the answer); `splice` cuts the leaving memories' lines, "
            "reads only the newcomers' lines and slides what follows by re-rotating its keys (approximate: text already "
            "written keeps its cache; cost independent of the answer's length); `slots` rewrites fixed-size slots "
            "(approximate, kept for comparison). `auto`: exact on a GPU, splice on a CPU. On a CPU exact swaps took "
            "1.2-1.5x splice's time per token and pause the stream for seconds late in a long answer; long answers "
            "used more of their memories' words with them (docs/benchmarks.md).",
        )
        # The streaming-query variants issue 10 tried, kept as settings with the engine's defaults
        # (docs/benchmarks.md: none beat the fixed interval on F1); their ranges are the app's.
        retrieval_trigger: RetrievalTrigger = Field(
            default="interval",
            description="When to re-retrieve: `interval`, every `update_every_n` tokens from the last `lookback_tokens`; "
            "`uncertainty` (FLARE), when a token's probability is below `uncertainty_threshold`, at most once every "
            "`update_every_n` tokens, with the message and the sentence being written as the query.",
        )
        uncertainty_threshold: float = Field(
            default=DEFAULT_UNCERTAINTY_THRESHOLD, ge=0.0, le=1.0, description="The `uncertainty` trigger's token probability."
        )
        lookahead_tokens: JsonInt = Field(
            default=0,
            ge=0,
            le=MAX_LOOKAHEAD_TOKENS,
            description="FLARE's look-ahead: draft the answer's first sentence (at most this many tokens) unseen and start "
            "the answer in the memories the message and the draft retrieve. 0 is off.",
        )
        extra_memories: ExtraMemoriesField = Field(
            default="auto",
            description="Anchoring: the memories in context when the answer starts stay for the whole answer, and "
            "re-retrievals fill up to this many more slots instead of replacing the set (0: they replace it). `auto`: the "
            "engine's choice, 2.",
        )

        @field_validator("message")
        @classmethod
        def _not_blank(cls, value: str) -> str:
            if not value.strip():
                raise PydanticCustomError("blank", "must contain non-whitespace text")
            return value

        @field_validator("memory_set")
        @classmethod
        def _known_set(cls, value: Optional[str]) -> Optional[str]:
            available = memory_sets()
            if value is not None and value not in available:
                # Escaped: the name may hold a lone surrogate, which the error report cannot encode (issue 14: a 500).
                name = json.dumps(value)[1:-1]
                raise PydanticCustomError(
                    "unknown_memory_set", "unknown memory set '{name}'; available: {available}", {"name": name, "available": ", ".join(available)}
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


class SessionRequest(BaseModel):
    """The body of `POST /sessions`: a memory set to start from, or memories of your own
    (exactly one of the two; neither is nullable, so the schema can say so)."""

    model_config = ConfigDict(
        strict=True,
        extra="forbid",
        title="SessionRequest",
        json_schema_extra={"oneOf": [{"required": ["memory_set"]}, {"required": ["memories"]}]},
    )

    memory_set: str = Field(default=None, description="Start from this memory set's initial state.")  # type: ignore[assignment]
    memories: list[Any] = Field(  # type: ignore[assignment]
        default=None,
        min_length=1,
        description="Or start from these memories (records as in a memory-set file: `content`, optional `type`, "
        "`subject`, `emotional_intensity`, `created_at`, `id`); at most `max_upload_records` of them.",
    )
    label: str = Field(default="uploaded", min_length=1, max_length=LABEL_MAX_CHARS, description="A name for `memories`.")


class SessionCreated(BaseModel):
    session: str = Field(description="The session's id: 192 random bits, to send as `session`. Keep it private.")
    memory_set: str = Field(description="The memory set it started from (or the label of its own memories).")
    memories: int
    ttl_s: int = Field(description="The session is deleted after this many seconds without an answer.")


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
    memory_set: str = Field(description="The memory set (for a session: the set it started from, or its upload's label).")
    session: Optional[str]
    answers: int = Field(description="Answers this session has learned from (0 without a session).")
    memories: list[MemoryState]
    links: list[Link]


class QueueState(BaseModel):
    mode: Literal["serialised"] = Field(description="Answers are generated one at a time, first come first served.")
    length: int = Field(description="Answers generating or waiting now.")
    limit: int = Field(description="Queue length past which new answers get 503.")


class SessionStats(BaseModel):
    stored: int = Field(description="Sessions in the store (expired ones are swept hourly).")
    ttl_s: int = Field(description="Seconds without an answer after which a session expires.")


class Limits(BaseModel):
    max_new_tokens: int
    max_message_chars: int
    max_message_tokens: int
    max_history_messages: int
    max_history_chars: int
    max_prompt_tokens: int
    max_queue_per_client: int
    max_body_bytes: int
    max_upload_bytes: int
    max_upload_records: int
    max_pool_memories: int


class HealthResponse(BaseModel):
    status: Literal["ok"]
    model: str
    can_think: bool = Field(description="Whether `enable_thinking` has an effect on this model.")
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
