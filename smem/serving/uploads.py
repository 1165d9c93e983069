"""Uploaded memories and learned-state files, within the deployment's limits, for the HTTP
API and the Gradio app alike.

An upload is either a memory-set JSON file or a pool file the app or the API exported
(`.npz`: memories, vectors and learned state). Both are refused, naming the reason, when they
are over `max_upload_bytes`, hold more than `max_upload_records` records, or would give a
pool of more than `max_pool_memories` memories. The record count is checked before any
record is validated or embedded: a 100k-record file once held the shared embedder for 413 s
(issue 14); now it is refused in the time it takes to parse the JSON.
"""

from __future__ import annotations

from typing import Any

from smem.memory.memory_sets import MemorySets
from smem.memory.pool import MemoryPool
from smem.memory.records import MemoryFileError
from smem.memory.store import PoolFileError
from smem.memory.wording import counted
from smem.serving.api_schema import ApiSettings

ZIP_MAGIC = b"PK\x03\x04"
"""How a pool file (an .npz, i.e. a zip archive) begins; a JSON file never does."""


def check_size(pool: MemoryPool, settings: ApiSettings, adding: int = 0) -> None:
    """Refuse a pool that would hold more memories than one visitor or session may."""
    if len(pool) + adding > settings.max_pool_memories:
        raise MemoryFileError(f"a pool holds at most {counted(settings.max_pool_memories, 'memory')}; this one would hold {len(pool) + adding}")


def load_upload(sets: MemorySets, raw: bytes | str | None, settings: ApiSettings) -> MemoryPool:
    """A private pool from an uploaded memory-set file or exported pool file; MemoryFileError
    names the bad record, field or limit."""
    if raw is None:
        raise MemoryFileError("no file was uploaded")
    data = raw.encode("utf-8") if isinstance(raw, str) else raw
    if len(data) > settings.max_upload_bytes:
        raise MemoryFileError(f"the file is {len(data)} bytes; at most {settings.max_upload_bytes} are accepted")
    if data.startswith(ZIP_MAGIC):
        try:
            pool = MemoryPool.load(data, sets.embedder)
        except PoolFileError as exc:
            raise MemoryFileError(str(exc)) from None
    else:
        pool = sets.from_upload(data, settings.max_upload_records)
    check_size(pool, settings)
    return pool


def load_records(sets: MemorySets, records: list[Any], settings: ApiSettings) -> MemoryPool:
    """A private pool from records sent in a request body, within the same limits."""
    pool = sets.from_records(records, settings.max_upload_records)
    check_size(pool, settings)
    return pool
