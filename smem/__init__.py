"""smem — Streaming Memory: Hebbian memory that is re-retrieved while an LLM writes."""

from smem.memory.records import Hit, Memory, MemoryFileError, MemoryRecord, load_memories
from smem.memory.pool import MemoryPool
from smem.memory.scoring import ScoringWeights

__all__ = ["Hit", "Memory", "MemoryFileError", "MemoryPool", "MemoryRecord", "ScoringWeights", "load_memories"]
