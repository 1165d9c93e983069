"""The streaming engine: decode token by token while the memory block changes underneath.

Why it is cheap: the prompt is prefix | memory block | assistant header (see `smem.generation.prompt`).
Decoding runs one token per forward pass on a `DynamicCache`. Every `update_every_n` tokens
the last `lookback_tokens` of generated text are embedded and the pool re-queried; only when
the selected *set* changes is the memory block in the cache edited (`smem.generation.swap`):
exact (crop and re-read block, header and generated text; logits exact; the reference, default
on accelerators), splice (cut the leaving memories' lines, read only the newcomers' lines and
slide what follows by re-rotating its keys; cost independent of the answer's length; a line
read once is put back from a store after that; default on CPUs) or slots (fixed-size slots
rewritten in place; kept for comparison). The prefix (system prompt, history, user message)
is read exactly once per answer (a look-ahead that finds new memories reads it twice).

Optional look-ahead (`lookahead_tokens`, off by default; FLARE's): before the first shown token
the answer's first sentence is drafted unseen and the pool queried with message + draft, so the
model's own words can still choose the memories the answer starts in.

Why it does not thrash: re-retrieval passes the current set as incumbents with a margin, so a
near-tie in the last slot does not trigger a swap; sampled draws reuse the answer's random
numbers (`smem.generation.sampling`); exact swaps on a CPU are paid from a budget of re-read
tokens per generated token (`SwapPolicy`).

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

import functools
import re
import threading
from datetime import datetime
from typing import Any, Callable, Collection, Iterator, Literal, Optional, Sequence, Union

import numpy as np
import torch
from transformers import LogitsProcessor

from smem.generation.events import ContextStats, Done, Event, Memories, MemoryUpdate, StopReason
from smem.generation.decoding import model_profile, profile_processors
from smem.generation.line_store import LineStore
from smem.generation.prompt import (
    DEFAULT_SYSTEM_PROMPT,
    HistoryItem,
    MemoryLineTokens,
    PromptBuilder,
    normalize_history,
)
from smem.generation.sampling import MemoryDraws, TokenPicker, answer_seed
from smem.generation.stats import AnswerStats, Segment
from smem.generation.swap import (
    DEFAULT_SLOT_TOKENS,
    DEFAULT_UNCERTAINTY_THRESHOLD,
    READ_AHEAD_CHUNK_TOKENS,
    READ_AHEAD_RUN_LINES,
    RETRIEVAL_TRIGGERS,
    SWAP_MODES,
    ExactContext,
    RetrievalTrigger,
    SlotContext,
    SpliceContext,
    SwapMode,
    SwapPolicy,
    default_swap_budget,
    default_swap_mode,
    keep_order,
    read_ahead,
    with_anchors,
)
from smem.generation.reasoning import ANSWER_MARKER, PromptedReasoning
from smem.generation.rope import KeyRotation
from smem.generation.text import TextSplitter
from smem.memory.records import Hit, Memory

DEFAULT_INCUMBENT_MARGIN = 0.15
"""Relative score bonus of memories already in context during re-retrieval. A challenger must
beat an incumbent by ~15% of its score (~7% of its cosine, since the gate is squared) to swap."""

BF16_QUERIES = torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()
"""Re-retrieval queries are embedded under bf16 autocast where the CPU computes bf16 natively:
~1.8x faster for MiniLM on 60 tokens (12.5 -> 7 ms here, a tenth of a 0.5B decode step), cosine to
the fp32 vector > 0.9999. The first query (also used for learning) stays fp32."""

SENTENCE_END = re.compile(r"[.!?\n]")
"""A token holding one of these ends the sentence the "uncertainty" trigger queries with."""

ANSWER_KNOBS: tuple[str, ...] = (
    "update_every_n", "max_memories", "lookback_tokens", "max_new_tokens", "temperature", "seed",
    "enable_thinking", "sample_memories", "swap", "retrieval_trigger", "uncertainty_threshold",
    "lookahead_tokens", "extra_memories",
)
"""The answer knobs a user sets, in the app's Settings tab and in the API's request alike, each
named as `StreamingEngine.stream`'s keyword. Each edge keeps its own ranges (the API's are wider
for experiments), but the list and the mapping to the engine are this one
(tests/test_layers.py checks that both edges carry every knob)."""


def stream_keywords(knobs: Any) -> dict[str, Any]:
    """The answer knobs of an API request or of the app's settings as `stream` keywords. The
    edges say "auto" for the engine's own choice (of swap mode, of anchored slots), so their
    JSON and menus need no null; the engine's keyword for it is None."""
    values = {name: getattr(knobs, name) for name in ANSWER_KNOBS}
    return {name: None if value == "auto" else value for name, value in values.items()}


ANCHORED_EXTRA_MEMORIES = 2
"""Anchored slots of every answer (unless the caller asks otherwise): the memories an answer
starts with stay, and re-retrievals fill up to 2 more slots instead of replacing the set.

Why every answer: every LoCoMo run where streaming beat retrieving once with an interval above
zero paired the packaged 1.5B's reasoning phase with anchoring at 2 slots (+0.044 F1 at N=10
over 120 answers, +0.032 and later +0.024 at N=1 over 240); and on the default 0.5B, at the
decoding the app and the API sample with, unanchored re-retrieval cost F1 against retrieving
once (−0.017 [−0.033, −0.005] at N=10, −0.027 [−0.047, −0.008] at N=1, 60 questions), where
anchored it ties (−0.003, −0.008; anchored − unanchored +0.014 [+0.001, +0.031] at N=10): a
re-retrieval from the answer's first words swapped out the memory the question had found. Greedy,
the two tie within 0.001 (180 answers), and long answers take as many words from their memories
(docs/benchmarks.md, "Anchored by default"). 2 was chosen before any of these runs: at most 7
memories, room for a multi-hop question's second piece of evidence and one more."""

HISTORY_QUERY_WEIGHT = 0.25
"""Share of the recent-history vector in the first retrieval's query; the user's message leads."""

Context = Union[ExactContext, SpliceContext, SlotContext]


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
    so several streams (threads) can share one engine. `swap` is the default swap mode ("auto":
    exact on accelerators, splice on CPUs; see `default_swap_mode`); `swap_budget` (re-read
    tokens per generated token for exact swaps, None = unlimited) defaults to `CPU_SWAP_BUDGET`
    on a CPU for a model that cannot splice, unlimited otherwise (`default_swap_budget`);
    `slot_tokens` is the slot length of the slot mode. With `reuse_lines` a splice puts back a
    memory line read before instead of reading it again (`smem.generation.line_store`): from
    `line_store`, shared by a session's engines so that later answers reuse earlier answers'
    lines, or else from a store of this answer's own. With `refresh_prompt` a splice also
    re-reads the block's instruction and the assistant header, with `reread_answer` the answer's
    last tokens, and with `reread_kept` the lines that stay after a cut one (`SpliceContext`; all
    off, measured not to help). The pool counts its memories in this model's tokens
    (`line_tokens`, shared by engines of one model), so token budgets mean prompt tokens; a pool
    already counted costs nothing.
    """

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        pool: Any,
        *,
        system_prompt: Optional[str] = DEFAULT_SYSTEM_PROMPT,
        incumbent_margin: float = DEFAULT_INCUMBENT_MARGIN,
        context_stats_every: int = 32,  # chosen: context figures every 32 tokens keep the UI fresh without an event per token
        bf16_queries: bool = BF16_QUERIES,
        swap: Union[SwapMode, Literal["auto"]] = "auto",
        swap_budget: Union[float, None, Literal["auto"]] = "auto",
        slot_tokens: int = DEFAULT_SLOT_TOKENS,
        line_tokens: Optional[MemoryLineTokens] = None,
        reuse_lines: bool = True,
        line_store: Optional[LineStore] = None,
        refresh_prompt: bool = False,
        reread_answer: Optional[int] = 0,
        reread_kept: bool = False,
        reasoning: Union[PromptedReasoning, None, Literal["auto"]] = "auto",
    ) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.pool = pool
        self.system_prompt = system_prompt
        self.incumbent_margin = incumbent_margin
        self.context_stats_every = context_stats_every
        self.bf16_queries = bf16_queries
        self.device = next(model.parameters()).device
        # Queries are embedded beside the model on an accelerator (`MemoryPool.embed_query`).
        self.query_device: Optional[str] = None if self.device.type == "cpu" else str(self.device)
        self.decoding = model_profile(model)
        if reasoning == "auto":
            reasoning = PromptedReasoning() if self.decoding.prompted_reasoning else None
        self.reasoning: Optional[PromptedReasoning] = reasoning
        if swap not in (*SWAP_MODES, "auto"):
            raise ValueError(f"swap must be one of {SWAP_MODES} or 'auto', got {swap!r}")
        self.rotation = KeyRotation.from_model(model)
        self.swap: SwapMode = default_swap_mode(self.device, self.rotation) if swap == "auto" else swap
        self._check_swap(self.swap)
        if swap_budget == "auto":
            swap_budget = default_swap_budget(self.device, self.rotation)
        self.swap_budget: Optional[float] = swap_budget
        if slot_tokens < 2:
            raise ValueError("slot_tokens must be >= 2 (a memory's first token and its newline)")
        self.slot_tokens = slot_tokens
        self.reuse_lines = reuse_lines
        self.line_store = line_store
        self.refresh_prompt = refresh_prompt
        self.reread_answer = reread_answer
        self.reread_kept = reread_kept
        self._pool_lock = threading.RLock()
        with self._pool_lock:
            pool.count_tokens_with(line_tokens or MemoryLineTokens(tokenizer))

        stops = {tokenizer.eos_token_id, _token_id(tokenizer, "<|im_end|>"), _token_id(tokenizer, "<|endoftext|>")}
        configured = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
        stops.update(configured if isinstance(configured, (list, tuple)) else [configured])
        self.stop_ids = frozenset(int(i) for i in stops if i is not None)
        start, end = _token_id(tokenizer, "<think>"), _token_id(tokenizer, "</think>")
        self.think_ids = (start, end) if start is not None and end is not None else None
        # Checkpoints pad the embedding matrix past the tokenizer (151936 vs ~151665 for Qwen);
        # a padded id has no text, so never sample one (random-weight benchmarks would).
        vocab = len(tokenizer)
        self._vocab_limit = vocab if vocab < model.config.get_text_config().vocab_size else None

    # -- model ------------------------------------------------------------------------------

    def _forward(
        self,
        ids: Sequence[int],
        cache: Any,
        attention_mask: Optional[torch.Tensor] = None,
        position_ids: Optional[torch.Tensor] = None,
    ) -> torch.Tensor:
        """Append `ids` to the cache; return next-token logits (fp32) after the last one."""
        with torch.inference_mode():
            inputs = torch.tensor([list(ids)], dtype=torch.long, device=self.device)
            out = self.model(
                input_ids=inputs,
                attention_mask=attention_mask,
                position_ids=position_ids,
                past_key_values=cache,
                use_cache=True,
                logits_to_keep=1,
            )
            logits = out.logits[0, -1]
            if self._vocab_limit is not None:
                logits = logits[: self._vocab_limit]
            return logits.float()

    def _check_swap(self, mode: str) -> None:
        if mode not in SWAP_MODES:
            raise ValueError(f"swap must be one of {SWAP_MODES}, got {mode!r}")
        if mode == "splice" and self.rotation is None:
            raise ValueError("swap 'splice' needs a model whose rotary position embedding can be re-rotated; use 'exact'")

    def _context(self, mode: SwapMode, builder: PromptBuilder, hits: list[Hit], slots: int, max_new_tokens: int) -> Context:
        config = self.model.config
        if mode == "exact":
            return ExactContext(self._forward, builder, hits, config)
        if mode == "splice":
            assert self.rotation is not None  # _check_swap refused it otherwise
            store = (LineStore() if self.line_store is None else self.line_store) if self.reuse_lines else None
            return SpliceContext(
                self._forward,
                builder,
                hits,
                config,
                rotation=self.rotation,
                store=store,
                refresh_prompt=self.refresh_prompt,
                reread_answer=self.reread_answer,
                reread_kept=self.reread_kept,
            )
        return SlotContext(
            self._forward,
            builder,
            hits,
            config,
            slots=slots,
            slot_tokens=self.slot_tokens,
            max_new_tokens=max_new_tokens,
            device=self.device,
        )

    def read_ahead(
        self,
        store: LineStore,
        memories: Optional[Sequence[Memory]] = None,
        *,
        run_lines: int = READ_AHEAD_RUN_LINES,
        chunk_tokens: int = READ_AHEAD_CHUNK_TOKENS,
    ) -> int:
        """Read the splice lines of `memories` (default: the whole pool) into `store` before
        any answer needs them; return the tokens read (`smem.generation.swap.read_ahead`). Give
        `store` as the `fallback` of the stores answers use, sized to hold the lines."""
        if self.rotation is None:
            return 0  # no splice swaps for this model: nothing would put the lines back
        if memories is None:
            with self._pool_lock:
                memories = self.pool.memories
        builder = PromptBuilder(self.tokenizer, "", system_prompt=self.system_prompt)
        return read_ahead(
            self._forward, builder, memories, store, self.model.config, run_lines=run_lines, chunk_tokens=chunk_tokens
        )

    # -- memories ---------------------------------------------------------------------------

    def _first_query(self, message: str, history: Sequence[HistoryItem]) -> tuple[str, np.ndarray]:
        """The user's message (its text for the lexical half of the similarity), with its vector
        nudged towards the last exchange so follow-ups ("and then?") work."""
        with self._pool_lock:
            query = self.pool.embed_query(message, self.query_device)
            # The last exchange (user + assistant), each cut to its last 500 characters (chosen:
            # ~100 tokens, the part a follow-up refers to, inside MiniLM's 256-token window).
            recent = [m["content"] for m in normalize_history(history)[-2:] if m["role"] != "system"]
            recent_text = "\n".join(text.split("</think>")[-1].strip()[-500:] for text in recent).strip()
            if not recent_text:
                return message, query
            recent_vector = self.pool.embed_query(recent_text, self.query_device)
            mixed = (1 - HISTORY_QUERY_WEIGHT) * query + HISTORY_QUERY_WEIGHT * recent_vector
        return message, (mixed / np.linalg.norm(mixed)).astype(np.float32)

    def _retrieve(
        self,
        query: tuple[str, np.ndarray],
        incumbents: Collection[str],
        margin: float,
        draws: MemoryDraws,
        **kwargs: Any,
    ) -> list[Hit]:
        text, vector = query
        with self._pool_lock:
            return self.pool.retrieve(
                text,
                query_vector=vector,
                learn=False,
                incumbents=incumbents,
                incumbent_margin=margin,
                **draws.retrieve_args(),
                **kwargs,
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
            vector = self.pool.embed_query(text, self.query_device)
        weight = min(1.0, len(answer) / lookback)
        mixed = weight * vector + (1.0 - weight) * first
        return text, (mixed / np.linalg.norm(mixed)).astype(np.float32)

    def _sentence_query(self, message: str, sentence: Sequence[int]) -> tuple[str, np.ndarray]:
        """FLARE's query: the user's message and the sentence being written (the uncertainty
        trigger passes it without its newest token, the uncertain one: FLARE masks
        low-confidence tokens so that a wrong guess does not steer the retrieval)."""
        words = [i for i in sentence if not (self.think_ids and i in self.think_ids)]
        text = f"{message} {self.tokenizer.decode(words, skip_special_tokens=True).strip()}".strip()
        with self._pool_lock, torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.bf16_queries):
            return text, self.pool.embed_query(text, self.query_device)

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

    def _learn(self, segments: list[Segment], generated: int, query: np.ndarray, now: Optional[datetime]) -> None:
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

    def _look_ahead(
        self,
        context: Context,
        logits: torch.Tensor,
        pick: TokenPicker,
        tokens: int,
        message: str,
        margin: float,
        draws: MemoryDraws,
        retrieve_args: dict[str, Any],
        stats: AnswerStats,
        rebuild: Callable[[list[Hit]], Context],
    ) -> tuple[Context, torch.Tensor, Optional[MemoryUpdate]]:
        """FLARE's look-ahead (Jiang et al. 2023, "Active Retrieval Augmented Generation"):
        draft the answer's first sentence (up to `tokens`) unseen, retrieve with the message +
        the draft, and start the answer in the memories that draft found. A short answer is
        written before any re-retrieval has text to query with (docs/benchmarks.md, "Answers on
        LoCoMo"), so this is the one retrieval from the model's own words that can still change
        the answer's first token. The draft is dropped: with the same memories the cache is
        rewound to the prompt (its logits kept), with new ones a context is read afresh (exact
        in every swap mode: a splice would leave the prompt's last logits stale)."""
        draft: list[int] = []
        fed = 0
        step = logits
        while len(draft) < tokens:
            token = pick(draft, step)
            if token in self.stop_ids:
                break
            draft.append(token)
            if len(draft) == tokens or SENTENCE_END.search(self.tokenizer.decode([token])):
                break
            step = context.step(token)
            fed += 1
        stats.drafted += len(draft)
        old = context.hits
        new: Optional[list[Hit]] = None
        with stats.timing("retrieval"):
            query = self._sentence_query(message, draft) if draft else None
            if query is not None and query[0]:
                new = self._retrieve(query, [h.id for h in old], margin, draws, **retrieve_args)
        if new is None:
            context.rewind(fed)
            return context, logits, None
        stats.retrievals += 1
        old_ids, new_ids = {h.id for h in old}, {h.id for h in new}
        if new_ids == old_ids:
            context.rewind(fed)
            return context, logits, None
        fresh = rebuild(keep_order(old, new))
        with stats.timing("prefill"):
            logits = fresh.prefill()
        stats.swaps += 1
        stats.restart(tuple(h.id for h in fresh.hits))
        update = MemoryUpdate(
            memories=fresh.hits,
            added=[h for h in fresh.hits if h.id not in old_ids],
            removed=[h for h in old if h.id not in new_ids],
            at_token=0,
            exact=True,
        )
        return fresh, logits, update

    # -- the stream -------------------------------------------------------------------------

    def _context_stats(self, context: Context, builder: PromptBuilder, stats: AnswerStats, generated: int) -> ContextStats:
        return ContextStats(
            prompt_tokens=context.prompt_tokens,
            memory_tokens=context.memory_tokens,
            generated_tokens=generated,
            swaps=stats.swaps,
            rag_memory_tokens=self._memory_tokens(builder, list(stats.ever)),
            all_memory_tokens=self._pool_tokens(builder),
        )

    def _reretrieve(
        self,
        context: Context,
        policy: SwapPolicy,
        stats: AnswerStats,
        generated: list[int],
        window: tuple[int, np.ndarray],
        margin: float,
        draws: MemoryDraws,
        retrieve_args: dict[str, Any],
        sentence: tuple[str, int, float] = ("", 0, 1.0),
        anchors: Sequence[Hit] = (),
        extra_memories: int = 0,
    ) -> Optional[MemoryUpdate]:
        """Re-query the pool if the policy says so, and swap the changed memories into the
        cache. The query is the recent text (interval trigger) or, for the uncertainty trigger,
        `sentence` = (user message, index where the current sentence starts, probability of the
        newest token). The newest token is not in the cache yet (the caller feeds it next).
        With `extra_memories`, the `anchors` stay and the re-retrieval fills that many more
        slots (`with_anchors`)."""
        fed = generated[:-1]
        message, start, confidence = sentence
        if not policy.due(len(generated), context.cheapest_swap(fed), confidence):
            return None
        lookback, first = window
        with stats.timing("retrieval"):
            if policy.trigger == "uncertainty":
                query = self._sentence_query(message, generated[start:-1])
            else:
                query = self._window_query(generated, lookback, first)
            if query is None:
                return None
            old = context.hits
            args = {**retrieve_args, "max_memories": len(anchors) + extra_memories} if extra_memories else retrieve_args
            new = self._retrieve(query, [h.id for h in old], margin, draws, **args)
            if extra_memories:
                new = with_anchors(anchors, new, extra_memories, retrieve_args["token_budget"])
            stats.retrievals += 1
        old_ids, new_ids = {h.id for h in old}, {h.id for h in new}
        if new_ids == old_ids:
            return None
        ordered = keep_order(old, new)
        if isinstance(context, ExactContext):
            plan = context.swap_cost(ordered, fed)
            if not policy.pay(plan[0]):
                stats.deferred += 1
                return None
            with stats.timing("swap"):
                stats.reread += context.swap(ordered, fed, plan)
        else:
            with stats.timing("swap"):
                stats.reread += context.swap(ordered)
        stats.swaps += 1
        now = context.hits
        stats.context(tuple(h.id for h in now), len(generated))
        return MemoryUpdate(
            memories=now,
            added=[h for h in now if h.id not in old_ids],
            removed=[h for h in old if h.id not in new_ids],
            at_token=len(generated),
            exact=context.exact,
        )

    def stream(
        self,
        message: str,
        history: Optional[Sequence[HistoryItem]] = None,
        *,
        # Every 10 tokens costs 1.09x plain generation, every token 1.18x (docs/benchmarks.md,
        # Generation); 5 memories and a 60-token lookback (about two sentences) are chosen.
        update_every_n: int = 10,
        max_memories: int = 5,
        lookback_tokens: int = 60,
        max_new_tokens: int = 1024,  # chosen: room for Qwen3's thinking plus an answer
        min_new_tokens: int = 0,
        temperature: Optional[float] = None,
        top_p: Optional[float] = None,
        seed: Optional[int] = None,
        sample_memories: bool = False,
        swap: Optional[SwapMode] = None,
        retrieval_trigger: RetrievalTrigger = "interval",
        uncertainty_threshold: float = DEFAULT_UNCERTAINTY_THRESHOLD,
        enable_thinking: bool = True,
        lookahead_tokens: int = 0,
        extra_memories: Optional[int] = None,
        memory_token_budget: Optional[int] = None,
        incumbent_margin: Optional[float] = None,
        system_prompt: Optional[str] = None,
        logits_processor: Sequence[LogitsProcessor] = (),
        learn: bool = True,
        return_learned: bool = False,
        now: Optional[datetime] = None,
        cancel: Optional[threading.Event] = None,
    ) -> Iterator[Event]:
        """Yield `Memories`, then `Thinking`/`Token`/`MemoryUpdate`/`ContextStats` while decoding,
        then `Done`.

        `update_every_n=0` disables re-retrieval (classic retrieve-once RAG). `temperature=0` is
        greedy; `temperature` and `top_p` default to the model's decoding profile
        (`smem.generation.decoding`), whose repetition controls run at every temperature, before
        any `logits_processor` of the caller. `sample_memories` draws the memory set from the pool's softmax (at the pool's
        `softmax_temperature`) instead of taking the argmax. `seed` (or a fresh one, reported in
        `Done.stats.extra["seed"]`) drives both the token and the memory draws. `swap` is
        "exact", "splice" or "slots" (default: the engine's). `retrieval_trigger` "interval" re-retrieves
        every `update_every_n` tokens from the last `lookback_tokens`; "uncertainty" (FLARE) when
        a token's probability is below `uncertainty_threshold`, at most once per
        `update_every_n` tokens, from the sentence being written. `lookahead_tokens` > 0 drafts the
        answer's first sentence (at most that many tokens) unseen and starts the answer in the
        memories the message + draft retrieve (FLARE's look-ahead, `_look_ahead`). `extra_memories`
        > 0 anchors the stream: the memories in context when the answer starts stay for the whole
        answer, and re-retrievals fill up to that many more slots instead of replacing the set
        (docs/benchmarks.md, "Anchored streaming"); unset, it is `ANCHORED_EXTRA_MEMORIES`; 0
        lets re-retrievals replace the whole set. `logits_processor` (transformers'
        `LogitsProcessor`s, e.g. a repetition penalty) see the ids of the segment being written
        (after a thinking phase, the answer's; `TokenPicker`) and run before temperature and top-p. `min_new_tokens` holds off end-of-answer tokens (benchmarks
        compare equal lengths). Setting `cancel` stops at the next token; closing the generator
        also stops it. `Done.stats.tokens_per_s` is the decode rate after the first token.
        """
        reasoning = self.reasoning if enable_thinking else None
        if extra_memories is None:
            extra_memories = ANCHORED_EXTRA_MEMORIES
        counts = (update_every_n, max_new_tokens, max_memories, lookahead_tokens, extra_memories)
        if min(counts) < 0 or lookback_tokens < 1:
            raise ValueError(
                "update_every_n, max_new_tokens, max_memories, lookahead_tokens and extra_memories must be >= 0, "
                "lookback_tokens >= 1"
            )
        if swap is not None:
            self._check_swap(swap)
        if retrieval_trigger not in RETRIEVAL_TRIGGERS or not 0.0 <= uncertainty_threshold <= 1.0:
            raise ValueError(f"retrieval_trigger must be one of {RETRIEVAL_TRIGGERS}, uncertainty_threshold in [0, 1]")
        stats = AnswerStats()
        history = list(history or ())
        seed = answer_seed(seed)
        draws = MemoryDraws(seed, sample_memories)
        margin = self.incumbent_margin if incumbent_margin is None else incumbent_margin
        retrieve_args = {"max_memories": max_memories, "token_budget": memory_token_budget, "now": now}
        system_prompt = self.system_prompt if system_prompt is None else system_prompt
        builder = PromptBuilder(
            self.tokenizer,
            message,
            history,
            system_prompt=reasoning.system_prompt(system_prompt) if reasoning else system_prompt,
            enable_thinking=enable_thinking,
        )
        temperature = self.decoding.temperature if temperature is None else temperature
        top_p = self.decoding.top_p if top_p is None else top_p
        processors = [*profile_processors(self.decoding, self.tokenizer, self.stop_ids, message), *logits_processor]
        picker = functools.partial(
            TokenPicker,
            temperature=temperature,
            top_p=top_p,
            min_new_tokens=min_new_tokens,
            stop_ids=self.stop_ids,
            seed=seed,
            device=self.device,
            processors=processors,
        )
        # The forced answer line keeps per-answer state and positions: the answer's picker has it
        # over the whole answer; a look-ahead draft has none.
        pick = picker(whole_processors=reasoning.processors(self.tokenizer, self.stop_ids) if reasoning else ())

        with stats.timing("retrieval"):
            first = self._first_query(message, history)
            hits = self._retrieve(first, (), 0.0, draws, **retrieve_args) if max_memories > 0 else []
        stats.retrievals = 1
        yield Memories(hits)

        mode = swap or self.swap
        slots = max_memories + extra_memories if max_memories else 0
        context = self._context(mode, builder, hits, slots, max_new_tokens)
        policy = SwapPolicy(
            update_every_n if max_memories else 0,
            self.swap_budget if context.exact else None,
            trigger=retrieval_trigger,
            threshold=uncertainty_threshold,
        )
        uncertain = policy.every and retrieval_trigger == "uncertainty"
        sentence_start = 0
        stats.context(tuple(h.id for h in context.hits), 0)
        yield self._context_stats(context, builder, stats, 0)

        think = self.think_ids or ()
        open_think = [i for i in builder.header if i in think]
        splitter = TextSplitter(
            self.tokenizer,
            thinking=reasoning is not None or (bool(open_think) and open_think[-1] == think[0]),
            answer_marker=ANSWER_MARKER if reasoning else None,
        )
        generated: list[int] = []
        segment = 0  # where the segment being written (thinking, then the answer) began
        stop_reason: StopReason = "max_tokens"
        with stats.timing("prefill"):
            logits = context.prefill()
        if lookahead_tokens and max_memories:
            # Its own picker (same seed): the draft leaves the answer's token draws untouched.
            with stats.timing("lookahead"):
                context, logits, update = self._look_ahead(
                    context,
                    logits,
                    picker(),
                    lookahead_tokens,
                    message,
                    margin,
                    draws,
                    retrieve_args,
                    stats,
                    lambda chosen: self._context(mode, builder, chosen, slots, max_new_tokens),
                )
            if update is not None:
                yield update
                yield self._context_stats(context, builder, stats, 0)
        anchors = list(context.hits)

        while max_new_tokens > 0:
            if cancel is not None and cancel.is_set():
                stop_reason = "cancelled"
                break
            token = pick(generated, logits, segment)
            confidence = float(torch.softmax(logits, dim=-1)[token]) if uncertain else 1.0
            stats.first_token()
            if token in self.stop_ids:
                stop_reason = "eos"
                break
            generated.append(token)
            thinking = splitter.thinking
            stats.thinking_tokens += thinking or token in think
            yield from splitter.switch(thinking=token == think[0]) if token in think else splitter.feed(token)
            if splitter.thinking != thinking:
                # a new segment: after a <think> tag; after the answer marker, from the token that began the answer
                segment = len(generated) - (token not in think)
            if len(generated) >= max_new_tokens:
                break
            update = self._reretrieve(
                context,
                policy,
                stats,
                generated,
                (lookback_tokens, first[1]),
                margin,
                draws,
                retrieve_args,
                (message, sentence_start, confidence),
                anchors,
                extra_memories,
            )
            if uncertain and (token in think or SENTENCE_END.search(self.tokenizer.decode([token]))):
                sentence_start = len(generated)
            if update is not None:
                yield update
                yield self._context_stats(context, builder, stats, len(generated))
            logits = context.step(token)
            if self.context_stats_every and len(generated) % self.context_stats_every == 0 and update is None:
                yield self._context_stats(context, builder, stats, len(generated))

        yield from splitter.finish()
        if learn:
            self._learn(stats.segments, len(generated), first[1], now)
        learned = None
        if return_learned:
            with self._pool_lock:
                learned = self.pool.learning_state()
        yield self._context_stats(context, builder, stats, len(generated))
        yield Done(
            stats=stats.done(
                len(generated),
                stop_reason,
                {
                    "prompt_tokens": context.prompt_tokens,
                    "memory_ids": [h.id for h in context.hits],
                    "late_system_block": builder.late_system,
                    "swap_mode": context.mode,
                    "swap_tokens_reused": context.reused,
                    "sample_memories": sample_memories,
                    "seed": seed,
                },
            ),
            learned=learned,
        )
