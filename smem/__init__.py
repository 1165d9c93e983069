"""smem — Streaming Memory: Hebbian memory that is re-retrieved while an LLM writes."""

from smem.memory import Hit, Memory, MemoryFileError, MemoryRecord, load_memories
from smem.pool import MemoryPool
from smem.scoring import ScoringWeights

__all__ = ["Hit", "Memory", "MemoryFileError", "MemoryPool", "MemoryRecord", "ScoringWeights", "load_memories"]
