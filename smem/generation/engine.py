"""The streaming engine: decode token by token while the memory block changes underneath.

Why it is cheap: the prompt is prefix | memory block | assistant header (see `smem.generation.prompt`).
Decoding runs one token per forward pass on a `DynamicCache`. Every `update_every_n` tokens
the last `lookback_tokens` of generated text are embedded and the pool re-queried; only when
the selected *set* changes does the engine crop the cache and read the new block + header +
everything generated so far in a single forward pass. The prefix (system prompt, history, user
message) is read exactly once per answer. Memories that stay keep their place at the head of
the block and newcomers go after them, so the cache is cropped to the longest common prefix of
the old and new token sequences, not just to the block start: replacing the last memory re-reads
one memory line, not five. The result is exact: the logits after a swap are those of a fresh
forward over the same tokens.

Why it does not thrash: re-retrieval passes the current set as incumbents with a margin, so a
near-tie in the last slot does not trigger a (costly) swap. And swaps are paid from a budget
of re-read tokens per generated token (`swap_budget`): a swap re-reads the changed memory lines
and everything generated so far; on a 2-core CPU 100 re-read tokens cost about three decode
steps of the 0.5B model, on a GPU less than one decode step of an 8B model. A change the budget cannot pay for yet is
deferred (the set is re-checked at the next update), so on a CPU swaps cost at most about
budget/35 of the decode time on average, whatever the answer's topic drift. While the budget
cannot pay even the cheapest swap, re-retrieval is skipped: its result could not change the
context, so the output is the same and the embedding time is saved.

Hebbian learning, once per answer (not per re-retrieval, so a memory kept in context for 800
re-retrievals does not get 800 counts): every re-retrieval runs with `learn=False`, and when
the answer ends the engine makes one update with this rule:
  * each memory that was in context at any point gets one retrieval count (and last-retrieved
    time), and its query association is updated with the answer's first query vector (the
    user's message, nudged by the last exchange);
  * the co-retrieval link between two memories grows by the fraction of the answer's tokens
    during which both were in context (1.0 for a pair that stayed together throughout).
A generator closed early by its consumer learns nothing (the answer was abandoned); a cancel
through `cancel` ends with `Done(stop_reason="cancelled")` and learns from what was generated.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Collection, Iterator, Literal, Optional, Sequence, Union

import numpy as np
import torch
from transformers import DynamicCache

from smem.generation.events import (
    ContextStats,
    Done,
    DoneStats,
    Event,
    Memories,
    MemoryUpdate,
    StopReason,
    Thinking,
    Token,
)
from smem.memory.records import Hit
from smem.generation.decoding import RepetitionControl, model_profile
from smem.generation.prompt import (
    DEFAULT_SYSTEM_PROMPT,
    HistoryItem,
    MemoryLineTokens,
    PromptBuilder,
    normalize_history,
)

DEFAULT_INCUMBENT_MARGIN = 0.15
"""Relative score bonus of memories already in context during re-retrieval. A challenger must
beat an incumbent by ~15% of its score (~7% of its cosine, since the gate is squared) to swap."""

BF16_QUERIES = torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()
"""Re-retrieval queries are embedded under bf16 autocast where the CPU computes bf16 natively:
~1.8x faster for MiniLM on 60 tokens (12.5 -> 7 ms here, a tenth of a 0.5B decode step), cosine to
the fp32 vector > 0.9999. The first query (also used for learning) stays fp32."""

CPU_SWAP_BUDGET = 6.0
"""Re-read tokens per generated token that swaps may spend on a CPU. Here a decode step of the
0.5B model costs as much as prefilling ~35 tokens, so 6 keeps swaps near 15% of decode time.
On an accelerator prefill is nearly free next to a decode step and swaps are not rationed."""

HISTORY_QUERY_WEIGHT = 0.25
"""Share of the recent-history vector in the first retrieval's query; the user's message leads."""


class IncrementalDecoder:
    """Turns token ids into text deltas without splitting multi-byte characters.

    Byte-level BPE tokens can end mid-character (emoji, CJK, accents); decoding each token alone
    prints U+FFFD. Decode a short window instead and emit only the text that grew and does not
    end in a replacement character (the approach of TGI and vLLM).
    """

    def __init__(self, tokenizer: Any) -> None:
        self._tokenizer = tokenizer
        self._ids: list[int] = []
        self._prefix = 0
        self._read = 0

    def _decode(self, ids: Sequence[int]) -> str:
        return self._tokenizer.decode(ids, skip_special_tokens=True, clean_up_tokenization_spaces=False)

    def push(self, token_id: int) -> str:
        self._ids.append(token_id)
        before = self._decode(self._ids[self._prefix : self._read])
        text = self._decode(self._ids[self._prefix :])
        if len(text) > len(before) and not text.endswith("\ufffd"):
            self._prefix, self._read = self._read, len(self._ids)
            return text[len(before) :]
        return ""

    def flush(self) -> str:
        """Whatever is still held back (an incomplete character stays as U+FFFD)."""
        before = self._decode(self._ids[self._prefix : self._read])
        text = self._decode(self._ids[self._prefix :])
        self._prefix = self._read = len(self._ids)
        return text[len(before) :]


class _TextSplitter:
    """Routes decoded text to Thinking or Token events and trims the whitespace around
    `<think>` blocks (Qwen3 writes "<think>\\n…\\n</think>\\n\\n"), holding trailing whitespace
    until it is known not to end a segment."""

    def __init__(self, tokenizer: Any, thinking: bool) -> None:
        self._tokenizer = tokenizer
        self.thinking = thinking
        self._decoder = IncrementalDecoder(tokenizer)
        self._started = False
        self._pending = ""

    def _event(self, text: str) -> Event:
        return Thinking(text) if self.thinking else Token(text)

    def feed(self, token_id: int) -> Optional[Event]:
        return self._emit(self._decoder.push(token_id))

    def _emit(self, text: str) -> Optional[Event]:
        if not self._started:
            text = text.lstrip()
            self._started = bool(text)
        text = self._pending + text
        body = text.rstrip()
        self._pending = text[len(body) :]
        return self._event(body) if body else None

    def switch(self, thinking: bool) -> Optional[Event]:
        """End the current segment (dropping its trailing whitespace) and start another."""
        event = self._emit(self._decoder.flush())
        self.thinking = thinking
        self._decoder = IncrementalDecoder(self._tokenizer)
        self._started = False
        self._pending = ""
        return event

    def finish(self) -> Optional[Event]:
        return self._emit(self._decoder.flush())


@dataclass
class _Segment:
    """A stretch of the answer during which one memory set was in context."""

    ids: tuple[str, ...]
    start: int


def _common_prefix(cached: list[int], sequence: list[int]) -> int:
    """How much of the cache a swap keeps: the shared head of the old and new token sequences,
    leaving at least one token to read (the forward pass must produce logits)."""
    limit = min(len(cached), len(sequence) - 1)
    common = 0
    while common < limit and cached[common] == sequence[common]:
        common += 1
    return common


def _token_id(tokenizer: Any, token: str) -> Optional[int]:
    """The id of `token` if the vocabulary has it as a single token."""
    ids = tokenizer.convert_tokens_to_ids([token])
    token_id = ids[0] if ids else None
    if token_id is None or token_id == tokenizer.unk_token_id:
        return None
    return int(token_id)


class StreamingEngine:
    """Streams answers from `model` with memories from `pool`; safe to use from any thread.

    Each `stream()` call keeps its own cache and state; the pool is only touched under a lock,
    so several streams (threads) can share one engine. `swap_budget` (re-read tokens per
    generated token, None = unlimited) defaults to `CPU_SWAP_BUDGET` on a CPU, unlimited elsewhere.
    The pool counts its memories in this model's tokens (`line_tokens`, shared by engines of
    one model), so token budgets mean prompt tokens; a pool already counted costs nothing.
    """

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        pool: Any,
        *,
        system_prompt: Optional[str] = DEFAULT_SYSTEM_PROMPT,
        incumbent_margin: float = DEFAULT_INCUMBENT_MARGIN,
        context_stats_every: int = 32,
        bf16_queries: bool = BF16_QUERIES,
        swap_budget: Union[float, None, Literal["auto"]] = "auto",
        line_tokens: Optional[MemoryLineTokens] = None,
    ) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.pool = pool
        self.system_prompt = system_prompt
        self.incumbent_margin = incumbent_margin
        self.context_stats_every = context_stats_every
        self.bf16_queries = bf16_queries
        self.device = next(model.parameters()).device
        self.decoding = model_profile(model)
        if swap_budget == "auto":
            swap_budget = CPU_SWAP_BUDGET if self.device.type == "cpu" else None
        self.swap_budget: Optional[float] = swap_budget
        self._pool_lock = threading.RLock()
        with self._pool_lock:
            pool.count_tokens_with(line_tokens or MemoryLineTokens(tokenizer))

        stops = {tokenizer.eos_token_id, _token_id(tokenizer, "<|im_end|>"), _token_id(tokenizer, "<|endoftext|>")}
        configured = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
        stops.update(configured if isinstance(configured, (list, tuple)) else [configured])
        self.stop_ids = frozenset(int(i) for i in stops if i is not None)
        self._stop_index = torch.tensor(sorted(self.stop_ids), dtype=torch.long, device=self.device)
        start, end = _token_id(tokenizer, "<think>"), _token_id(tokenizer, "</think>")
        self.think_ids = (start, end) if start is not None and end is not None else None
        # Checkpoints pad the embedding matrix past the tokenizer (151936 vs ~151665 for Qwen);
        # a padded id has no text, so never sample one (random-weight benchmarks would).
        vocab = len(tokenizer)
        self._vocab_limit = vocab if vocab < model.config.get_text_config().vocab_size else None

    # -- model ------------------------------------------------------------------------------

    def _forward(self, ids: Sequence[int], cache: DynamicCache) -> torch.Tensor:
        """Append `ids` to the cache; return next-token logits (fp32) after the last one."""
        with torch.inference_mode():
            inputs = torch.tensor([list(ids)], dtype=torch.long, device=self.device)
            out = self.model(input_ids=inputs, past_key_values=cache, use_cache=True, logits_to_keep=1)
            logits = out.logits[0, -1]
            if self._vocab_limit is not None:
                logits = logits[: self._vocab_limit]
            return logits.float()

    @staticmethod
    def _crop(cache: DynamicCache, length: int) -> None:
        with torch.inference_mode():
            cache.crop(length - cache.get_seq_length())

    def _swap(self, cache: DynamicCache, keep: int, sequence: list[int]) -> torch.Tensor:
        """Crop the cache to its first `keep` tokens and read the rest of `sequence`."""
        self._crop(cache, keep)
        return self._forward(sequence[keep:], cache)

    @staticmethod
    def _pick(logits: torch.Tensor, temperature: float, top_p: float, generator: Optional[torch.Generator]) -> int:
        if temperature <= 0:
            return int(torch.argmax(logits))
        probs = torch.softmax(logits / temperature, dim=-1)
        if top_p < 1.0:
            sorted_probs, order = torch.sort(probs, descending=True)
            keep = torch.cumsum(sorted_probs, dim=-1) - sorted_probs < top_p
            probs = torch.zeros_like(probs).scatter_(0, order[keep], sorted_probs[keep])
        return int(torch.multinomial(probs, 1, generator=generator))

    # -- memories ---------------------------------------------------------------------------

    def _first_query(self, message: str, history: Sequence[HistoryItem]) -> tuple[str, np.ndarray]:
        """The user's message (its text for the lexical half of the similarity), with its vector
        nudged towards the last exchange so follow-ups ("and then?") work."""
        with self._pool_lock:
            query = self.pool.embed_query(message)
            recent = [m["content"] for m in normalize_history(history)[-2:] if m["role"] != "system"]
            recent_text = "\n".join(text.split("</think>")[-1].strip()[-500:] for text in recent).strip()
            if not recent_text:
                return message, query
            mixed = (1 - HISTORY_QUERY_WEIGHT) * query + HISTORY_QUERY_WEIGHT * self.pool.embed_query(recent_text)
        return message, (mixed / np.linalg.norm(mixed)).astype(np.float32)

    def _retrieve(
        self, query: tuple[str, np.ndarray], incumbents: Collection[str], margin: float, **kwargs: Any
    ) -> list[Hit]:
        text, vector = query
        with self._pool_lock:
            return self.pool.retrieve(
                text, query_vector=vector, learn=False, incumbents=incumbents, incumbent_margin=margin, **kwargs
            )

    def _window_query(self, generated: list[int], lookback: int, first: np.ndarray) -> Optional[tuple[str, np.ndarray]]:
        """The last `lookback` generated tokens, embedded, blended with the first query while
        the answer is shorter than the window: three tokens of "### Plan" alone would retrieve
        noise and swap the whole block at the start of every answer."""
        answer = [i for i in generated[-lookback:] if not (self.think_ids and i in self.think_ids)]
        text = self.tokenizer.decode(answer, skip_special_tokens=True).strip()
        if not text:
            return None
        with self._pool_lock, torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.bf16_queries):
            vector = self.pool.embed_query(text)
        weight = min(1.0, len(answer) / lookback)
        mixed = weight * vector + (1.0 - weight) * first
        return text, (mixed / np.linalg.norm(mixed)).astype(np.float32)

    def _memory_tokens(self, builder: PromptBuilder, ids: Collection[str]) -> int:
        """Block tokens the memories `ids` would take (for the RAG comparison line)."""
        if not ids:
            return 0
        with self._pool_lock:
            return builder.block_overhead() + sum(self.pool.get(i).tokens for i in ids)

    def _pool_tokens(self, builder: PromptBuilder) -> int:
        """Block tokens the whole pool would take, from the pool's kept per-memory counts."""
        with self._pool_lock:
            return builder.block_overhead() + self.pool.total_tokens

    def _learn(self, segments: list[_Segment], generated: int, query: np.ndarray, now: Optional[datetime]) -> None:
        """One Hebbian update for the whole answer; the rule is in the module docstring."""
        total = max(generated, 1)
        used: dict[str, None] = {}
        with self._pool_lock:
            for index, segment in enumerate(segments):
                end = segments[index + 1].start if index + 1 < len(segments) else generated
                share = (end - segment.start) / total if generated else 1.0
                used.update(dict.fromkeys(segment.ids))
                if len(segment.ids) > 1 and share > 0:
                    self.pool.reinforce(segment.ids, query=None, now=now, link_strength=share, count=False)
            if used:
                self.pool.reinforce(list(used), query=query, now=now, link_strength=0.0, count=True)

    # -- the stream -------------------------------------------------------------------------

    def stream(
        self,
        message: str,
        history: Optional[Sequence[HistoryItem]] = None,
        *,
        update_every_n: int = 10,
        max_memories: int = 5,
        lookback_tokens: int = 60,
        max_new_tokens: int = 1024,
        min_new_tokens: int = 0,
        temperature: Optional[float] = None,
        top_p: Optional[float] = None,
        seed: Optional[int] = None,
        enable_thinking: bool = True,
        memory_token_budget: Optional[int] = None,
        incumbent_margin: Optional[float] = None,
        system_prompt: Optional[str] = None,
        learn: bool = True,
        return_learned: bool = False,
        now: Optional[datetime] = None,
        cancel: Optional[threading.Event] = None,
    ) -> Iterator[Event]:
        """Yield `Memories`, then `Thinking`/`Token`/`MemoryUpdate`/`ContextStats` while decoding,
        then `Done`.

        `update_every_n=0` disables re-retrieval (classic retrieve-once RAG). `temperature=0` is
        greedy; `temperature` and `top_p` default to the model's decoding profile, whose repetition
        controls apply at every temperature (`smem.generation.decoding`). `min_new_tokens` holds off end-of-answer tokens (benchmarks compare equal lengths).
        Setting `cancel` stops at the next token; closing the generator also stops it.
        `Done.stats.tokens_per_s` is the decode rate after the first token.
        """
        if update_every_n < 0 or lookback_tokens < 1 or max_new_tokens < 0 or max_memories < 0:
            raise ValueError("update_every_n, max_new_tokens and max_memories must be >= 0, lookback_tokens >= 1")
        started = time.perf_counter()
        history = list(history or ())
        margin = self.incumbent_margin if incumbent_margin is None else incumbent_margin
        retrieve_args = {"max_memories": max_memories, "token_budget": memory_token_budget, "now": now}
        builder = PromptBuilder(
            self.tokenizer,
            message,
            history,
            system_prompt=self.system_prompt if system_prompt is None else system_prompt,
            enable_thinking=enable_thinking,
        )
        temperature = self.decoding.temperature if temperature is None else temperature
        top_p = self.decoding.top_p if top_p is None else top_p
        control = RepetitionControl(self.decoding)
        generator = None
        if temperature > 0:
            generator = torch.Generator(device=self.device)
            if seed is None:
                generator.seed()
            else:
                generator.manual_seed(seed)

        tick = time.perf_counter()
        first = self._first_query(message, history)
        query = first[1]
        hits = self._retrieve(first, (), 0.0, **retrieve_args) if max_memories > 0 else []
        retrieval_s = time.perf_counter() - tick
        retrievals = 1
        yield Memories(hits)

        prompt = builder.build(hits)
        ever: dict[str, None] = dict.fromkeys(h.id for h in hits)
        segments = [_Segment(tuple(ever), 0)]
        generated: list[int] = []
        swaps = 0

        def stats() -> ContextStats:
            return ContextStats(
                prompt_tokens=len(prompt.prefix) + len(prompt.header),
                memory_tokens=len(prompt.memory),
                generated_tokens=len(generated),
                swaps=swaps,
                rag_memory_tokens=self._memory_tokens(builder, list(ever)),
                all_memory_tokens=self._pool_tokens(builder),
            )

        yield stats()

        splitter = _TextSplitter(self.tokenizer, thinking=False)
        if self.think_ids:
            open_think = [i for i in prompt.header if i in self.think_ids]
            splitter.thinking = bool(open_think) and open_think[-1] == self.think_ids[0]
        thinking_tokens = 0
        stop_reason: StopReason = "max_tokens"
        cache = DynamicCache(config=self.model.config)
        swap_s = 0.0
        credit = 0.0
        deferred = reread = 0
        ttft = first_at = None

        tick = time.perf_counter()
        logits = self._forward(prompt.ids, cache)
        prefill_s = time.perf_counter() - tick

        while max_new_tokens > 0:
            if cancel is not None and cancel.is_set():
                stop_reason = "cancelled"
                break
            logits = control(generated, logits)
            if len(generated) < min_new_tokens:
                logits = logits.index_fill(0, self._stop_index, float("-inf"))
            token = self._pick(logits, temperature, top_p, generator)
            if ttft is None:
                first_at = time.perf_counter()
                ttft = first_at - started
            if token in self.stop_ids:
                stop_reason = "eos"
                break
            generated.append(token)
            if splitter.thinking or (self.think_ids and token in self.think_ids):
                thinking_tokens += 1
            if self.think_ids and token in self.think_ids:
                event = splitter.switch(thinking=token == self.think_ids[0])
            else:
                event = splitter.feed(token)
            if event is not None:
                yield event
            if len(generated) >= max_new_tokens:
                break

            swapped = False
            credit += self.swap_budget or 0.0
            # A swap re-reads at least the header and all generated tokens; while the budget cannot
            # pay that, a re-retrieval could not change the context and is skipped (same output).
            affordable = self.swap_budget is None or credit >= len(prompt.header) + len(generated)
            if affordable and update_every_n > 0 and max_memories > 0 and len(generated) % update_every_n == 0:
                tick = time.perf_counter()
                window = self._window_query(generated, lookback_tokens, query)
                new_hits = hits
                if window is not None:
                    new_hits = self._retrieve(window, [h.id for h in hits], margin, **retrieve_args)
                    retrievals += 1
                retrieval_s += time.perf_counter() - tick
                old = {h.id for h in hits}
                new = {h.id for h in new_hits}
                if new != old:
                    tick = time.perf_counter()
                    fresh = {h.id: h for h in new_hits}
                    added = [h for h in new_hits if h.id not in old]
                    ordered = [fresh[h.id] for h in hits if h.id in new] + added
                    candidate = builder.build(ordered)
                    sequence = [*candidate.ids, *generated]
                    keep = _common_prefix([*prompt.ids, *generated[:-1]], sequence)
                    cost = len(sequence) - keep
                    if self.swap_budget is not None and cost > credit:
                        deferred += 1
                    else:
                        credit -= cost if self.swap_budget is not None else 0.0
                        reread += cost
                        prompt = candidate
                        logits = self._swap(cache, keep, sequence)
                        swap_s += time.perf_counter() - tick
                        swaps += 1
                        swapped = True
                        yield MemoryUpdate(
                            memories=ordered,
                            added=added,
                            removed=[h for h in hits if h.id not in new],
                            at_token=len(generated),
                        )
                        hits = ordered
                        ever.update(dict.fromkeys(new))
                        segments.append(_Segment(tuple(h.id for h in hits), len(generated)))
                        yield stats()
            if not swapped:
                logits = self._forward([token], cache)
            if self.context_stats_every and len(generated) % self.context_stats_every == 0 and not swapped:
                yield stats()

        event = splitter.finish()
        if event is not None:
            yield event
        finished = time.perf_counter()
        if learn:
            self._learn(segments, len(generated), query, now)
        learned = None
        if return_learned:
            with self._pool_lock:
                learned = self.pool.learning_state()
        decode_s = finished - first_at if first_at is not None else 0.0
        yield stats()
        yield Done(
            stats=DoneStats(
                tokens=len(generated),
                thinking_tokens=thinking_tokens,
                swaps=swaps,
                retrievals=retrievals,
                stop_reason=stop_reason,
                ttft_s=round(ttft or 0.0, 4),
                total_s=round(finished - started, 4),
                tokens_per_s=round((len(generated) - 1) / decode_s, 3) if len(generated) > 1 and decode_s > 0 else 0.0,
                retrieval_ms=round(retrieval_s * 1000, 2),
                swap_ms=round(swap_s * 1000, 2),
                extra={
                    "prompt_tokens": len(prompt.prefix) + len(prompt.header),
                    "prefill_ms": round(prefill_s * 1000, 2),
                    "swaps_per_100_tokens": round(100 * swaps / max(len(generated), 1), 2),
                    "deferred_swaps": deferred,
                    "swap_tokens_reread": reread,
                    "memory_ids": [h.id for h in hits],
                    "late_system_block": builder.late_system,
                },
            ),
            learned=learned,
        )
