"""Memory records: the validated file format, the in-pool memory, and a retrieval hit.

Validation lives here (pydantic) so every entry point — files, uploads, the HTTP API,
`MemoryPool.add` — rejects the same bad input with the same message.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timezone
from enum import Enum
from pathlib import Path
from typing import Any, Optional

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, field_validator

from smem.memory.wording import counted

MAX_CONTENT_CHARS = 2000
"""Longest memory, in characters. Chosen with headroom: the sample sets' longest memory has 151
characters and the longest LoCoMo dev turn, worded as a memory with its caption, 474; a note
of 2,000 (~500 tokens) would already crowd a 5-memory context."""
MAX_LABEL_CHARS = 200
"""Longest `subject` or `id` (chosen: a name or a slug, never prose)."""
MAX_ERRORS_SHOWN = 10
"""Validation errors listed per file (chosen: enough to fix a file in one go, short enough to read)."""


class MemoryType(str, Enum):
    """The kinds of note a tutor or assistant keeps; the UI colours nodes by these."""

    what_works = "what_works"
    pattern = "pattern"
    current_state = "current_state"
    insight = "insight"
    relationship = "relationship"
    parent = "parent"
    behavior = "behavior"


class MemoryRecord(BaseModel):
    """One memory as it appears in a memory-set file or an API request."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    content: str = Field(min_length=1, max_length=MAX_CONTENT_CHARS)
    type: Optional[MemoryType] = None
    subject: Optional[str] = Field(default=None, max_length=MAX_LABEL_CHARS)
    # 0.5 (chosen): the middle of the [0, 1] scale, for records that do not say.
    emotional_intensity: float = Field(default=0.5, ge=0.0, le=1.0)
    created_at: Optional[datetime] = None
    id: Optional[str] = Field(default=None, min_length=1, max_length=MAX_LABEL_CHARS)

    @field_validator("created_at")
    @classmethod
    def _aware(cls, value: Optional[datetime]) -> Optional[datetime]:
        # Naive timestamps are read as UTC so arithmetic with `now` never mixes kinds.
        if value is not None and value.tzinfo is None:
            value = value.replace(tzinfo=timezone.utc)
        return value


_RECORDS = TypeAdapter(list[MemoryRecord])


class MemoryFileError(ValueError):
    """A memory set that cannot be loaded; the message names the record (counted from 1) and field."""


def _describe(error: ValidationError) -> str:
    lines = []
    for item in error.errors()[:MAX_ERRORS_SHOWN]:
        loc = list(item["loc"])
        where = ""
        if loc and isinstance(loc[0], int):
            where = f"record {loc.pop(0) + 1}"  # people count records from 1
        field = ".".join(str(part) for part in loc)
        if field:
            where = f"{where}, field '{field}'" if where else f"field '{field}'"
        lines.append(f"{where or 'file'}: {item['msg']}")
    more = error.error_count() - len(lines)
    if more > 0:
        lines.append(f"... and {more} more problem(s)")
    return "; ".join(lines)


def parse_records(data: Any, max_records: Optional[int] = None) -> list[MemoryRecord]:
    """Validate already-decoded JSON: a list of record objects, all or nothing. The count is
    checked first, so an oversized upload is refused before any record is validated."""
    if not isinstance(data, list):
        raise MemoryFileError(f"a memory set must be a JSON list of records, got {type(data).__name__}")
    if not data:
        raise MemoryFileError("the memory set is empty")
    if max_records is not None and len(data) > max_records:
        raise MemoryFileError(f"the memory set holds {counted(len(data), 'record')}; at most {max_records} are accepted")
    try:
        records = _RECORDS.validate_python(data)
    except ValidationError as exc:
        raise MemoryFileError(_describe(exc)) from None
    seen: dict[str, int] = {}
    for index, record in enumerate(records, start=1):
        if record.id is None:
            continue
        if record.id in seen:
            raise MemoryFileError(f"record {index}, field 'id': duplicate id {record.id!r} (also record {seen[record.id]})")
        seen[record.id] = index
    return records


def validate_record(data: Any) -> MemoryRecord:
    """Validate one record (a dict or a MemoryRecord); errors name the field."""
    if isinstance(data, MemoryRecord):
        return data
    try:
        return MemoryRecord.model_validate(data)
    except ValidationError as exc:
        raise MemoryFileError(_describe(exc)) from None


def parse_memory_json(raw: bytes | str, max_records: Optional[int] = None) -> list[MemoryRecord]:
    """Decode and validate a memory-set file's bytes (uploads arrive as bytes)."""
    if isinstance(raw, bytes):
        try:
            raw = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise MemoryFileError(f"the file is not UTF-8 text (bad byte at offset {exc.start})") from None
    try:
        data = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise MemoryFileError(f"the file is not valid JSON: {exc.msg} at line {exc.lineno}, column {exc.colno}") from None
    return parse_records(data, max_records)


def load_memories(path: str | Path) -> list[MemoryRecord]:
    """Read and validate a memory-set file; raises MemoryFileError naming the bad record."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise MemoryFileError(f"cannot read {path}: {exc.strerror or exc}") from None
    try:
        return parse_memory_json(raw)
    except MemoryFileError as exc:
        raise MemoryFileError(f"{path.name}: {exc}") from None


@dataclass(frozen=True)
class Memory:
    """A memory held by a pool. Immutable: learning state lives in the pool's arrays."""

    id: str
    content: str
    type: Optional[str]
    subject: Optional[str]
    emotional_intensity: float
    created_at: datetime
    tokens: int

    def to_record(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "content": self.content,
            "type": self.type,
            "subject": self.subject,
            "emotional_intensity": self.emotional_intensity,
            "created_at": self.created_at.isoformat(),
        }


@dataclass(frozen=True)
class Pull:
    """A link that raised a hit's multiplier: an earlier pick linked to it, and how."""

    id: str
    """The earlier pick."""
    kind: str
    """"encoding" (added together, same day) or "learned" (in context together before)."""
    weight: float
    """The link's weight as retrieval read it (before saturation)."""

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "kind": self.kind, "weight": round(self.weight, 6)}


@dataclass(frozen=True)
class Hit:
    """A memory chosen by `MemoryPool.retrieve`, with why it was chosen."""

    memory: Memory
    score: float
    similarity: float
    multiplier: float
    rank: int
    pulled_by: tuple[Pull, ...] = ()
    """Earlier picks whose links lent this memory part of its multiplier, strongest first."""

    @property
    def id(self) -> str:
        return self.memory.id

    @property
    def content(self) -> str:
        return self.memory.content

    @property
    def type(self) -> Optional[str]:
        return self.memory.type

    @property
    def subject(self) -> Optional[str]:
        return self.memory.subject

    @property
    def tokens(self) -> int:
        return self.memory.tokens

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "content": self.content,
            "type": self.type,
            "subject": self.subject,
            "score": round(self.score, 6),
            "similarity": round(self.similarity, 6),
            "multiplier": round(self.multiplier, 6),
            "tokens": self.tokens,
            "pulled_by": [pull.to_dict() for pull in self.pulled_by],
        }

