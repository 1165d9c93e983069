"""The memory sets a deployment offers, and per-visitor copies of them.

Each set is embedded once per process (and once per machine, thanks to the embedding
cache); visitors and API sessions each get an independent copy, so an uploaded set or
learned Hebbian state is never visible to anyone else.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any, Optional

from smem.memory.embedder import Embedder
from smem.memory.records import MemoryFileError, load_memories, parse_memory_json, parse_records
from smem.memory.pool import MemoryPool
from smem.memory.settings import MemorySettings

DEFAULT_SET = "tutor"


def memory_directory() -> Path:
    """The folder of memory sets: `MemorySettings.memories` (the repository's `memories/` by default)."""
    return MemorySettings().memories


class UnknownMemorySet(KeyError):
    def __str__(self) -> str:
        return str(self.args[0])


class MemorySets:
    """Named memory sets from `directory/*.json`, with `NAME.examples.txt` prompts beside them."""

    def __init__(self, embedder: Embedder, directory: Optional[Path] = None, **pool_options: Any) -> None:
        self.embedder = embedder
        self.directory = Path(directory or memory_directory())
        self.pool_options = pool_options
        self._pools: dict[str, MemoryPool] = {}
        self._lock = threading.Lock()

    @property
    def names(self) -> list[str]:
        return sorted(path.stem for path in self.directory.glob("*.json"))

    @property
    def default(self) -> str:
        """The set a visitor or an API request without `memory_set` starts with: the tutor
        set (the original project's only one) when present, else the first by name."""
        names = self.names
        if not names:
            raise UnknownMemorySet(f"no memory sets in {self.directory}")
        return DEFAULT_SET if DEFAULT_SET in names else names[0]

    def examples(self, name: str) -> list[str]:
        path = self.directory / f"{name}.examples.txt"
        if not path.exists():
            return []
        return [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]

    def pool(self, name: str) -> MemoryPool:
        """A fresh, independent pool of the named set with no learned state."""
        if name not in self.names:
            raise UnknownMemorySet(f"unknown memory set {name!r}; available: {', '.join(self.names) or 'none'}")
        with self._lock:
            if name not in self._pools:
                base = MemoryPool(self.embedder, **self.pool_options)
                base.add_many(load_memories(self.directory / f"{name}.json"))
                self._pools[name] = base
            return self._pools[name].copy()

    def from_upload(self, raw: bytes | str, max_records: Optional[int] = None) -> MemoryPool:
        """A pool from an uploaded file; raises MemoryFileError naming record and field."""
        return self.from_records(parse_memory_json(raw, max_records))

    def from_records(self, data: Any, max_records: Optional[int] = None) -> MemoryPool:
        """A pool from decoded records (an API body); raises MemoryFileError naming record and field."""
        records = parse_records(data, max_records)
        pool = MemoryPool(self.embedder, **self.pool_options)
        try:
            pool.add_many(records)
        except ValueError as exc:
            raise MemoryFileError(str(exc)) from None
        return pool
