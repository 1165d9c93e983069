"""The limits of one deployment, for the HTTP API and the Gradio app alike.

One object, so that nothing the UI accepts is refused by the API or the other way round:
message and history size in model tokens, answer length, queue places per client, upload
size and records, memories per visitor, and how long an idle session is kept. Each is
overridable as `SMEM_<NAME>` (e.g. `SMEM_MAX_QUEUE=64`); the API's request schema is built
from them, so its OpenAPI document states exactly what the server enforces.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, fields
from typing import Any, Mapping, Optional

JSON_ESCAPE_BYTES = 12
"""Most bytes one character can take in a JSON body: an emoji sent as a `\\u` surrogate pair."""


@dataclass(frozen=True)
class ServingSettings:
    max_new_tokens: int = 2048
    default_max_new_tokens: Optional[int] = None
    """Used when a request names none; unset, 512 or `max_new_tokens` if lower."""
    max_message_chars: int = 8000
    """A cheap bound checked before tokenizing (a character is at least a quarter token)."""
    max_message_tokens: int = 2048
    """A longer message is refused. 2048 model tokens is about the 8,000-character bound in English."""
    max_history_messages: int = 50
    max_history_chars: int = 32000
    max_prompt_tokens: int = 4096
    """Message plus history, in model tokens. Older history turns are dropped to fit and the stream
    says so. Prefill cost grows with it: 8,000 + 32,000 characters (~10k tokens) took 438 s to the
    first token on the packaged CPU model under load (issue 14); 4,096 keeps a GPU answer's
    prefill well under a second and bounds the CPU fallback to a few minutes at worst."""
    max_queue: int = 32
    max_queue_per_client: int = 4
    """Answers one client (a session, else an address) may have generating or waiting at once:
    one browser tab rarely needs more than one, so four leaves room for retries without letting
    one client fill the queue."""
    max_body_bytes: int = 4 * 1024 * 1024
    """Chat bodies beyond this are refused (413) before they are read into memory. Well above
    any valid body, so that an oversized field (a 1 MB message pasted by mistake) is still
    answered with a 422 naming the field."""
    max_upload_bytes: int = 8 * 1024 * 1024
    """Memory files and learned-state files (also Gradio's `max_file_size`). A pool file of
    `max_pool_memories` memories with a full learned state is about 6.5 MB (2 × 2000 × 384
    float32 vectors plus metadata)."""
    max_upload_records: int = 2000
    """Records in one uploaded memory file. The embedder managed ~240 records/s on the shared
    CPU (100k records took 413 s, issue 14), so 2,000 is under ten seconds of embedding."""
    max_pool_memories: int = 2000
    """Memories in one visitor's or session's pool (uploads and added memories)."""
    session_ttl_s: int = 30 * 24 * 3600
    """A session unused for this long is deleted; requests naming it get 404. Thirty days: a
    person who comes back within a month finds what their assistant learned."""

    def __post_init__(self) -> None:
        if self.default_max_new_tokens is None:
            object.__setattr__(self, "default_max_new_tokens", min(512, self.max_new_tokens))
        for item in fields(self):
            if getattr(self, item.name) <= 0:
                raise ValueError(f"ServingSettings.{item.name} must be positive")
        if self.default_max_new_tokens > self.max_new_tokens:
            raise ValueError("ServingSettings.default_max_new_tokens must not exceed max_new_tokens")
        if self.max_message_tokens > self.max_prompt_tokens:
            raise ValueError("ServingSettings.max_message_tokens must not exceed max_prompt_tokens")
        if self.max_body_bytes < self.largest_valid_body:
            raise ValueError(f"ServingSettings.max_body_bytes must be at least {self.largest_valid_body} to admit every valid request")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> "ServingSettings":
        values: dict[str, Any] = {}
        for item in fields(cls):
            raw = environ.get(f"SMEM_{item.name.upper()}")
            if raw is not None:
                values[item.name] = int(raw)
        return cls(**values)

    @property
    def largest_valid_body(self) -> int:
        """Bytes of the largest body the limits allow, every character escaped, with room for formatting."""
        return JSON_ESCAPE_BYTES * (self.max_message_chars + self.max_history_chars) + 64 * 1024
