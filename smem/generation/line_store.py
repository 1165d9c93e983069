"""Memory lines read once: the cache entries of a memory's line, kept for every later swap that
brings the same memory in.

A splice swap (`smem.generation.swap.SpliceContext`) reads a newcomer's line over what precedes
it, and that read is most of a swap's cost on a CPU (a 31-token line is ~1.3 decode steps of
the packaged 0.5B; docs/benchmarks.md, "Splice"). At `update_every_n=1` memories leave and come
back: in the benchmark's 64-token answer, 146 of the 576 line tokens swapped in were lines read
before. The store keeps what was read, keyed by the memory and its line's token ids, and a
later swap puts the entries back with their keys re-rotated to the new place
(`smem.generation.rope`), reading nothing.

Lines can also be read before any answer needs them (`smem.generation.swap.read_ahead`: every
memory of a pool, in runs of 5 after a frame with no conversation, many per forward pass); a
store asks its `fallback` for a line it lacks, so a session's store sits in front of the lines
its runtime read ahead.

Approximate, like the splice itself: the entries were computed after whatever preceded the line
when it was read (other memory lines; in a later answer, another conversation), not after what
precedes it now. `bench/swap_fidelity.py` and `bench/answers.py` measure what that changes.
The store only ever hands out entries of the same token ids, so the text the model attends to
is always the right one.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Optional, Sequence

import torch

DEFAULT_STORED_LINES = 64
"""Lines kept (least recently used dropped first). Chosen: over four times the distinct memories
one 64-token answer at `update_every_n=1` put in context in the generation benchmark (13). A
31-token line of the packaged 0.5B is ~0.8 MB of float32 entries (24 layers x 2 kv heads x 64
dims x keys and values), so a full store is ~50 MB; of Qwen3-8B in bf16 ~4.6 MB, ~290 MB."""


@dataclass(frozen=True)
class StoredLine:
    """A line's cache entries and where its first token sat when they were computed."""

    position: int
    entries: tuple[tuple[torch.Tensor, torch.Tensor], ...]
    """Each layer's (keys, values), shaped (batch, kv heads, line tokens, head dim)."""


class LineStore:
    """Least-recently-used map (memory id, line token ids) -> `StoredLine`; thread-safe, so the
    answers of one runtime (several sessions, several threads) can share it."""

    def __init__(self, max_lines: int = DEFAULT_STORED_LINES, *, fallback: Optional["LineStore"] = None) -> None:
        if max_lines < 1:
            raise ValueError("max_lines must be >= 1")
        self.max_lines = max_lines
        self.fallback = fallback
        """Asked for a line this store lacks: the lines read ahead of any answer
        (`smem.generation.swap.read_ahead`), behind one pool's lines read in its answers."""
        self._lines: OrderedDict[tuple[str, tuple[int, ...]], StoredLine] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._lines)

    def get(self, memory_id: str, ids: Sequence[int]) -> Optional[StoredLine]:
        key = (memory_id, tuple(ids))
        with self._lock:
            line = self._lines.get(key)
            if line is not None:
                self._lines.move_to_end(key)
        if line is None and self.fallback is not None:
            return self.fallback.get(memory_id, ids)
        return line

    def __contains__(self, key: tuple[str, Sequence[int]]) -> bool:
        """Whether (memory id, line token ids) is stored here (the fallback not asked)."""
        with self._lock:
            return (key[0], tuple(key[1])) in self._lines

    def keep(self, memory_id: str, ids: Sequence[int], cache: Any, start: int, position: Optional[int] = None) -> None:
        """Keep the entries `cache` holds for the line at `[start, start + len(ids))`, read at
        `position` (default `start`), unless this line is stored already (the first read is
        kept: what a swap puts back does not depend on how often the memory came and went)."""
        key = (memory_id, tuple(ids))
        with self._lock:
            if key in self._lines:
                return
        stop = start + len(ids)
        with torch.inference_mode():
            entries = tuple(
                (layer.keys[:, :, start:stop].clone(), layer.values[:, :, start:stop].clone()) for layer in cache.layers
            )
        with self._lock:
            self._lines.setdefault(key, StoredLine(start if position is None else position, entries))
            while len(self._lines) > self.max_lines:
                self._lines.popitem(last=False)
