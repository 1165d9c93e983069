"""What one serving process shares: the model, its tokenizer, the embedder, the memory
sets and the queue that serialises generation. The Gradio app and the HTTP API are two
front ends over one `Runtime`.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Union

import torch

from smem.generation import models
from smem.memory.embedder import Embedder, default_embedder
from smem.generation.engine import StreamingEngine
from smem.generation.prompt import MemoryLineTokens
from smem.memory.memory_sets import MemorySets
from smem.memory.pool import MemoryPool
from smem.memory.settings import MemorySettings
from smem.serving.queueing import GenerationQueue

log = logging.getLogger("smem")


@dataclass
class Runtime:
    model: Any
    tokenizer: Any
    embedder: Embedder
    sets: MemorySets
    model_name: str
    queue: GenerationQueue = field(default_factory=GenerationQueue)
    line_tokens: Optional[MemoryLineTokens] = None
    """Counts memories in this model's tokens; give the same counter to `sets` (as `load`
    does) so its pools arrive counted."""

    def __post_init__(self) -> None:
        if self.line_tokens is None:
            self.line_tokens = MemoryLineTokens(self.tokenizer)

    @classmethod
    def load(
        cls,
        model_id: Optional[str] = None,
        *,
        device: Optional[str] = None,
        dtype: Union[str, torch.dtype, None] = None,
        embedder: Optional[Embedder] = None,
        memory_dir: Optional[Path] = None,
        memory: Optional[MemorySettings] = None,
        threads: Optional[int] = None,
    ) -> "Runtime":
        """Load model and embedder (the offline packaged defaults unless named); `dtype` as in
        `smem.generation.models.load`. Every pool the sets hand out takes its retrieval knobs
        from `memory` (default: `SMEM_*` in the environment), so a deployment's settings reach
        the UI's and the API's pools alike."""
        started = time.perf_counter()
        memory = memory or MemorySettings()
        model, tokenizer = models.load(model_id, device=device, dtype=dtype, threads=threads)
        embedder = embedder or default_embedder(memory.embedder)
        # Every pool the sets hand out is counted in this model's tokens once, when it is built.
        line_tokens = MemoryLineTokens(tokenizer)
        runtime = cls(
            model=model,
            tokenizer=tokenizer,
            embedder=embedder,
            sets=MemorySets(embedder, memory_dir or memory.memories, token_counter=line_tokens, **memory.pool_options()),
            model_name=models.display_name(models.resolve_model_id(model_id, str(device or "cpu"))),
            line_tokens=line_tokens,
        )
        log.info("runtime ready in %.1fs: model %s, embedder %s", time.perf_counter() - started, runtime.model_name, embedder.name)
        return runtime

    @property
    def can_think(self) -> bool:
        return models.can_think(self.tokenizer)

    def engine(self, pool: MemoryPool) -> StreamingEngine:
        """An engine over `pool` (cheap: the pool's token counts are already in this model's tokens)."""
        return StreamingEngine(self.model, self.tokenizer, pool, line_tokens=self.line_tokens)
