"""The memory as tools for agents: `retrieve_memories`, `add_memory` and `chat`, served over
MCP by the app (`mcp_server=True`) and callable through Gradio's API.

An MCP client has no browser session, so these tools share one pool per memory set among
this server's agents (a visitor's pool in the page stays private). What `chat` learns stays
in that shared pool for the next call, so the network an agent builds persists while the
server runs.
"""

from __future__ import annotations

import json
import threading
from typing import Callable, Iterator, Literal, Optional

from smem.generation.events import Event, Token
from smem.memory.pool import MemoryPool
from smem.serving.runtime import Runtime
from smem.serving import prompt_budget
from smem.serving.api_schema import ApiSettings
from smem.ui import actions
from smem.ui.actions import GenerationSettings, apply_learned

Answer = Callable[[MemoryPool, str, list, GenerationSettings], Iterator[Event]]
MemoryTypeName = Literal["current_state", "what_works", "pattern", "insight", "relationship", "parent", "behavior"]


class AgentPools:
    """One pool per memory set for MCP clients, made on first use."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self._pools: dict[str, MemoryPool] = {}
        self._lock = threading.Lock()

    def pool(self, memory_set: str) -> MemoryPool:
        with self._lock:
            if memory_set not in self._pools:
                self._pools[memory_set] = self.runtime.sets.pool(memory_set)
            return self._pools[memory_set]

    def replace(self, memory_set: str, pool: MemoryPool) -> None:
        with self._lock:
            self._pools[memory_set] = pool


def tools(runtime: Runtime, answer: Answer, default_set: str, limits: Callable[[], ApiSettings]) -> list[Callable]:
    """The three tool functions (their names, type hints and docstrings are what agents see).
    `limits` gives the deployment's limits at call time (the same as the UI's and the API's)."""
    pools = AgentPools(runtime)

    def retrieve_memories(query: str, memory_set: str = default_set, max_memories: int = 5) -> str:
        """Find the memories most useful for a query, scored by similarity, recency, emotional
        weight, past usefulness and learned co-retrieval links (a read: nothing is learned).

        Args:
            query: what the memories should help with, e.g. "How does Alex learn fractions best?"
            memory_set: which memory set to search (see the app's Memory set list)
            max_memories: how many memories to return, 1 to 15

        Returns:
            a JSON list of the chosen memories, best first, each with id, content, type, score and similarity
        """
        max_memories = min(max(int(max_memories), 1), 15)  # the API's and the slider's range
        hits = pools.pool(memory_set).retrieve(query, max_memories=max_memories, learn=False)
        return json.dumps([hit.to_dict() for hit in hits])

    def add_memory(
        content: str,
        memory_set: str = default_set,
        memory_type: Optional[MemoryTypeName] = None,
        emotional_intensity: float = 0.5,
    ) -> str:
        """Store a new first-person memory so later retrievals and chats can use it.

        Args:
            content: the memory, one or two sentences, e.g. "Alex finally got equivalent fractions with pizza slices"
            memory_set: the memory set to add it to
            memory_type: its kind (current_state, what_works, pattern, insight, relationship, parent, behavior), or none
            emotional_intensity: how much it mattered, 0 to 1 (weighs retrieval)

        Returns:
            JSON with the stored memory's id and content, and how many memories the set now holds
        """
        pool = actions.add_memory(pools.pool(memory_set), content, memory_type, emotional_intensity, limits())
        pools.replace(memory_set, pool)
        memory = pool.memories[-1]
        return json.dumps({"id": memory.id, "content": memory.content, "memories": len(pool)})

    # 256 new tokens by default: the app's CPU answer length (app.py DEFAULTS), short for an agent's turn.
    def chat(message: str, memory_set: str = default_set, max_new_tokens: int = 256) -> str:
        """Ask the model with streaming memory: memories are re-retrieved while it writes and
        swapped in and out of its context; the memories used together are linked afterwards.

        Args:
            message: the question or request
            memory_set: the memory set the model remembers from
            max_new_tokens: the longest answer, 16 to 2048 tokens

        Returns:
            the model's answer (without its thinking)
        """
        pool = pools.pool(memory_set)
        settings = GenerationSettings(max_new_tokens=max_new_tokens, enable_thinking=False)
        fitted = prompt_budget.fit(runtime.tokenizer, message, [], limits())
        pieces: list[str] = []
        done = None
        with runtime.queue.slot():
            for event in answer(pool, message, fitted.history, settings):
                if isinstance(event, Token):
                    pieces.append(event.text)
                done = event
        apply_learned(pool, done)
        return "".join(pieces).strip()

    return [retrieve_memories, add_memory, chat]
