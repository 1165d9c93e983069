"""What one serving process shares: the model, its tokenizer, the embedder, the memory
sets and the queue that serialises generation. The Gradio app and the HTTP API are two
front ends over one `Runtime`.
"""

from __future__ import annotations

import logging
import threading
import time
import weakref
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Union

import torch

from smem.generation import models
from smem.generation.decoding import model_profile
from smem.memory.embedder import Embedder, default_embedder
from smem.generation.engine import StreamingEngine
from smem.generation.line_store import LineStore
from smem.generation.prompt import MemoryLineTokens
from smem.memory.memory_sets import MemorySets
from smem.memory.pool import MemoryPool
from smem.memory.settings import MemorySettings
from smem.serving.queueing import GenerationQueue

log = logging.getLogger("smem")

LINE_STORE_POOLS = 4
"""Pools whose read memory lines a runtime keeps. Chosen: a laptop serves one visitor, a shared
CPU Space a few at a time; four full stores of the packaged model are ~200 MB
(`smem.generation.line_store.DEFAULT_STORED_LINES`)."""

READ_AHEAD_LINES = 512
"""Memory lines a runtime keeps read ahead of any answer (`start_read_ahead`). Chosen: the
shipped sets hold 313 lines (tutor 151, family 162: 11,034 tokens of the packaged model, ~270 MB
of float32 entries at 24 KB a token), with room for sets added to the memory folder; the least
recently used line goes first past it."""


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
    line_stores: "OrderedDict[int, tuple[weakref.ref, LineStore]]" = field(default_factory=OrderedDict)
    """The memory lines read so far for the pools that answered last, so a session's later
    answers swap them in without reading them again (`line_store`)."""
    lines_ahead: LineStore = field(default_factory=lambda: LineStore(READ_AHEAD_LINES))
    """Memory lines read ahead of any answer, in a frame with no conversation, so every pool
    holding the same memory can use them: each pool's store falls back to it
    (`start_read_ahead`)."""
    _stores_lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

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
        """Whether `enable_thinking` changes anything: the model thinks on its own (Qwen3), or its
        decoding profile asks it for facts before its answer (`smem.generation.reasoning`)."""
        return models.can_think(self.tokenizer) or model_profile(self.model).prompted_reasoning

    def engine(self, pool: MemoryPool) -> StreamingEngine:
        """An engine over `pool` (cheap: the pool's token counts are already in this model's
        tokens, and its lines read in earlier answers are in its `LineStore`)."""
        return StreamingEngine(self.model, self.tokenizer, pool, line_tokens=self.line_tokens, line_store=self.line_store(pool))

    def line_store(self, pool: MemoryPool) -> LineStore:
        """`pool`'s store of read memory lines. One per pool, never shared: a line's entries
        were computed with the conversation that read it in context. Kept for the
        `LINE_STORE_POOLS` pools that answered last, which bounds their memory. Behind each,
        the lines read ahead (`lines_ahead`)."""
        with self._stores_lock:
            held = self.line_stores.pop(id(pool), None)
            if held is None or held[0]() is not pool:  # new, or another pool that had the same id()
                held = (weakref.ref(pool), LineStore(fallback=self.lines_ahead))
            self.line_stores[id(pool)] = held
            while len(self.line_stores) > LINE_STORE_POOLS:
                self.line_stores.popitem(last=False)
            return held[1]

    def start_read_ahead(self, names: Optional[list[str]] = None) -> Optional[threading.Thread]:
        """Read the memory lines of the named sets (default: all) into `lines_ahead` in a
        background thread, so that a splice swap puts a memory's line back instead of reading
        it while an answer waits (`StreamingEngine.read_ahead`). Returns the thread, or None
        where swaps are not splices (accelerators swap exactly; nothing would use the lines).

        An answer that starts before the thread ends reads the lines it needs itself, and shares
        the cores with it meanwhile.
        """
        names = self.sets.names if names is None else names
        pools = [self.sets.pool(name) for name in names]
        engines = [StreamingEngine(self.model, self.tokenizer, pool, line_tokens=self.line_tokens) for pool in pools]
        if not engines or engines[0].swap != "splice":
            return None

        def read() -> None:
            started = time.perf_counter()
            tokens = sum(engine.read_ahead(self.lines_ahead) for engine in engines)
            log.info("read ahead %d memory lines (%d tokens) in %.1fs", len(self.lines_ahead), tokens, time.perf_counter() - started)

        thread = threading.Thread(target=read, name="smem-read-ahead", daemon=True)
        thread.start()
        return thread
