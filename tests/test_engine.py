"""The streaming engine on a tiny in-process Qwen3 (fp32) with the real pool and embedder, on the
CPU or on the device $SMEM_TEST_DEVICE names (conftest.TEST_DEVICE)."""

from __future__ import annotations

import json
import os
import queue
import threading
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import pytest
import torch
from transformers import DynamicCache, GPT2Config, GPT2LMHeadModel, LogitsProcessor
from transformers.models.qwen3.modeling_qwen3 import apply_rotary_pos_emb

from conftest import build_tiny
from smem import MemoryPool, load_memories
from smem.generation import tiny
from smem.memory.embedder import default_embedder
from smem.generation.engine import StreamingEngine
from smem.generation.events import ContextStats, Done, Memories, MemoryUpdate, Thinking, Token
from smem.generation.line_store import LineStore
from smem.generation.prompt import MemoryLineTokens, PromptBuilder, memory_line
from smem.generation.sampling import MemoryDraws
from smem.generation.rope import KeyRotation
from smem.generation.swap import CPU_SWAP_BUDGET, SlotContext, SpliceContext, with_anchors
from smem.generation.text import IncrementalDecoder
from smem.memory.learning import LearningState

ROOT = Path(__file__).resolve().parents[1]
MESSAGE = "How should I help Alex stop dropping minus signs before his algebra quiz?"
HISTORY = [
    {"role": "user", "content": "Alex had a rough week at school."},
    {"role": "assistant", "content": "I'm sorry to hear that. What happened?"},
]


@pytest.fixture(scope="session")
def base_pool() -> MemoryPool:
    pool = MemoryPool(embedder=default_embedder(), seed=0)
    pool.add_many(load_memories(ROOT / "memories" / "tutor.json"))
    return pool


@pytest.fixture
def pool(base_pool: MemoryPool) -> MemoryPool:
    return base_pool.copy()


@pytest.fixture(scope="session")
def tiny_model():
    return build_tiny(seed=0)


class Recorder:
    """Records every forward pass: cache length before it, ids fed, next-token logits."""

    def __init__(self, model: torch.nn.Module) -> None:
        self.calls: list[tuple[int, list[int], torch.Tensor]] = []
        self._pending: tuple[int, list[int]] | None = None
        self._handles = [
            model.register_forward_pre_hook(self._before, with_kwargs=True),
            model.register_forward_hook(self._after, with_kwargs=True),
        ]

    def _before(self, module, args, kwargs):
        cache = kwargs.get("past_key_values")
        self._pending = (cache.get_seq_length() if cache is not None else 0, kwargs["input_ids"][0].tolist())

    def _after(self, module, args, kwargs, output):
        past, ids = self._pending
        self.calls.append((past, ids, output.logits[0, -1].detach().clone()))

    def sequences(self) -> list[list[int]]:
        """The full token sequence the model had read after each call."""
        seq: list[int] = []
        out = []
        for past, ids, _ in self.calls:
            seq = seq[:past] + ids
            out.append(list(seq))
        return out

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()


@pytest.fixture
def recorder(tiny_model):
    """Records the tiny model's forward passes for the duration of one test."""
    recording = Recorder(tiny_model[0])
    yield recording
    recording.remove()


def exact_engine(tiny_model, pool, **kwargs) -> StreamingEngine:
    """The reference engine: exact swaps, none rationed."""
    model, tokenizer = tiny_model
    return StreamingEngine(model, tokenizer, pool, **{"swap": "exact", "swap_budget": None, **kwargs})


def run(engine: StreamingEngine, **kwargs) -> list:
    args = dict(update_every_n=1, max_new_tokens=40, temperature=0.0, incumbent_margin=0.0)
    args.update(kwargs)
    return list(engine.stream(kwargs.pop("message", MESSAGE), kwargs.pop("history", HISTORY), **args))


def done(events: list) -> Done:
    assert isinstance(events[-1], Done)
    return events[-1]


def fresh_logits(model, seq: list[int]) -> torch.Tensor:
    with torch.inference_mode():
        return model(torch.tensor([seq], device=model.device)).logits[0, -1]


def test_swap_logits_equal_a_fresh_forward(tiny_model, pool, recorder):
    model, tokenizer = tiny_model
    events = run(exact_engine(tiny_model, pool))
    recorder.remove()  # the reference forwards below are not the engine's
    assert done(events).stats.swaps >= 2
    swap_calls = 0
    for (past, ids, logits), seq in zip(recorder.calls, recorder.sequences()):
        swap_calls += past > 0 and len(ids) > 1
        torch.testing.assert_close(logits, fresh_logits(model, seq), atol=1e-4, rtol=1e-4)
    assert swap_calls == done(events).stats.swaps


def test_greedy_with_swaps_equals_greedy_from_scratch(tiny_model, pool, recorder):
    model, tokenizer = tiny_model
    events = run(exact_engine(tiny_model, pool), max_new_tokens=30)
    recorder.remove()
    updates = [e for e in events if isinstance(e, MemoryUpdate)]
    assert updates, "the test needs at least one swap"
    final = recorder.sequences()[-1]
    builder = PromptBuilder(tokenizer, MESSAGE, HISTORY)
    context = builder.build(updates[-1].memories).ids
    at = updates[-1].at_token
    assert final[: len(context)] == context
    generated = final[len(context) :]
    # The engine stops without feeding its last token: the answer is everything fed plus it.
    answer = generated + [int(torch.argmax(recorder.calls[-1][2]))]
    assert len(answer) == done(events).stats.tokens == 30
    start = torch.tensor([context + answer[:at]], device=model.device)
    scratch = model.generate(
        start, attention_mask=torch.ones_like(start), max_new_tokens=30 - at, do_sample=False, pad_token_id=0
    )
    assert scratch[0, start.shape[1] :].tolist() == answer[at:]


def test_prefix_is_read_once(tiny_model, pool, recorder):
    model, tokenizer = tiny_model
    events = run(exact_engine(tiny_model, pool), max_new_tokens=40)
    prefix = PromptBuilder(tokenizer, MESSAGE, HISTORY).prefix
    first_past, first_ids, _ = recorder.calls[0]
    assert first_past == 0 and first_ids[: len(prefix)] == prefix
    kept_block_tokens = []
    for past, ids, _ in recorder.calls[1:]:
        assert past >= len(prefix), "the prefix was re-read"
        if len(ids) > 1:
            kept_block_tokens.append(past - len(prefix))
    assert len(kept_block_tokens) == done(events).stats.swaps > 0
    # Memories that stay lead the new block, so their cache entries survive the swap too.
    assert max(kept_block_tokens) > 0
    block_and_header = len(first_ids) - len(prefix)
    assert sum(len(ids) for _, ids, _ in recorder.calls[1:]) < (block_and_header + 40) * len(kept_block_tokens) + 40


def test_swap_budget_rations_reread_tokens(tiny_model, pool, recorder):
    model, tokenizer = tiny_model
    events = run(exact_engine(tiny_model, pool, swap_budget=20.0), max_new_tokens=60)
    stats = done(events).stats
    reread = sum(len(ids) for past, ids, _ in recorder.calls[1:] if len(ids) > 1)
    assert reread == stats.extra["swap_tokens_reread"] <= 20.0 * 60
    assert stats.swaps > 0 and stats.extra["deferred_swaps"] > 0
    unlimited = done(run(exact_engine(tiny_model, pool), max_new_tokens=60)).stats
    assert unlimited.swaps > stats.swaps and unlimited.extra["deferred_swaps"] == 0
    # A RoPE model splices on a CPU; exact swaps asked for run in full there as on a GPU.
    assert StreamingEngine(model, tokenizer, pool).swap_budget is None


def test_no_update_means_one_token_per_step(tiny_model, pool, recorder):
    model, tokenizer = tiny_model
    events = run(exact_engine(tiny_model, pool), update_every_n=0, max_new_tokens=12)
    assert [len(ids) for _, ids, _ in recorder.calls[1:]] == [1] * 11
    assert done(events).stats.swaps == 0 and done(events).stats.retrievals == 1


def test_incumbent_margin_prevents_thrashing(tiny_model, pool):
    # The same scripted answer under both margins, walking through several of the pool's
    # topics, so the margin is the only difference: a free-running random model writes other
    # text under other memories, and its swap counts would compare two different answers.
    _, tokenizer = tiny_model
    answer = "Color-code minus signs in red. He loves soccer: goals per game. Timed quizzes make him anxious."
    swaps = {}
    for margin in (0.0, 0.5):
        engine = scripted_engine(tiny_model, pool, [answer, ids(tokenizer, "<|im_end|>")[0]])
        swaps[margin] = done(run(engine, incumbent_margin=margin, max_new_tokens=40, learn=False)).stats.swaps
    assert swaps[0.5] < swaps[0.0], swaps


def test_anchored_streaming_keeps_the_first_memories_and_fills_only_the_extra_slots(tiny_model, pool):
    # The scripted answer walks through several topics: plain streaming swaps out memories
    # the question found, anchored streaming must keep them and add at most two more.
    _, tokenizer = tiny_model
    answer = "Color-code minus signs in red. He loves soccer: goals per game. Timed quizzes make him anxious."
    script = [answer, ids(tokenizer, "<|im_end|>")[0]]
    plain = run(scripted_engine(tiny_model, pool, script), max_memories=3, extra_memories=0, learn=False)
    anchored = run(scripted_engine(tiny_model, pool, script), max_memories=3, extra_memories=2, learn=False)
    first = [hit.id for hit in anchored[0].memories]
    assert first == [hit.id for hit in plain[0].memories]
    plain_sets = [{hit.id for hit in e.memories} for e in plain if isinstance(e, MemoryUpdate)]
    anchored_sets = [[hit.id for hit in e.memories] for e in anchored if isinstance(e, MemoryUpdate)]
    assert any(not set(first) <= now for now in plain_sets)  # what anchoring prevents
    assert anchored_sets and all(now[: len(first)] == first and len(now) <= len(first) + 2 for now in anchored_sets)
    assert any(len(now) > len(first) for now in anchored_sets)
    assert done(anchored).stats.swaps == len(anchored_sets)


@pytest.mark.parametrize("mode", ["splice", "slots"])
def test_anchored_streaming_holds_in_the_fast_swap_modes(tiny_model, pool, mode):
    model, tokenizer = tiny_model
    engine = StreamingEngine(model, tokenizer, pool, swap=mode)
    events = run(engine, max_new_tokens=30, max_memories=3, extra_memories=2, learn=False)
    first = [hit.id for hit in events[0].memories]
    sets = [[hit.id for hit in e.memories] for e in events if isinstance(e, MemoryUpdate)]
    assert sets and all(now[:3] == first and len(now) <= 5 for now in sets)


def test_anchors_stay_and_the_extra_picks_keep_to_the_token_budget(pool):
    hits = pool.retrieve("algebra quiz minus signs soccer anxiety", max_memories=8, learn=False)
    anchors, new = hits[:3], hits[3:][::-1]  # the new picks best first: reversed on purpose
    assert [h.id for h in with_anchors(anchors, new, 2, None)] == [h.id for h in anchors + new[:2]]
    assert [h.id for h in with_anchors(anchors, new, 0, None)] == [h.id for h in anchors]
    # Room for less than the best new pick: it is passed over for the next that fits.
    shorter = next(h for h in new[1:] if h.tokens < new[0].tokens)
    room = sum(h.tokens for h in anchors) + new[0].tokens - 1
    chosen = with_anchors(anchors, new, 2, room)
    assert chosen[:3] == anchors and new[0] not in chosen and shorter in chosen
    assert sum(h.tokens for h in chosen) <= room
    # A re-retrieval that picks an anchor again lends it its fresh score; the anchors still come first.
    again = with_anchors(anchors, [new[0], *pool.retrieve(anchors[0].content, max_memories=1, learn=False)], 1, None)
    assert [h.id for h in again] == [h.id for h in anchors] + [new[0].id]


@pytest.mark.parametrize("text", ["Zürich café naïve", "😀🎉 👨‍👩‍👧 ❤️", "日本語のテキスト、中文文本", "a — b … c"])
def test_incremental_decoding_keeps_multibyte_characters(tiny_model, text):
    _, tokenizer = tiny_model
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    assert len(ids) > len(text.split())  # really split inside characters
    decoder = IncrementalDecoder(tokenizer)
    pieces = [decoder.push(i) for i in ids]
    pieces.append(decoder.flush())
    assert "".join(pieces) == text
    assert not any("\ufffd" in piece for piece in pieces)


class Scripted(torch.nn.Module):
    """The tiny model (so the cache is real) with its next token dictated by a script."""

    def __init__(self, model: torch.nn.Module, script: list[int]) -> None:
        super().__init__()
        self.inner = model
        self.config = model.config
        self.generation_config = model.generation_config
        self.script = script
        self.calls = 0

    def forward(self, **kwargs):
        out = self.inner(**kwargs)
        forced = torch.full_like(out.logits, -1e4)
        forced[..., self.script[min(self.calls, len(self.script) - 1)]] = 0.0
        self.calls += 1
        out.logits = forced
        return out


def scripted_engine(tiny_model, pool, text_parts: list) -> StreamingEngine:
    model, tokenizer = tiny_model
    script: list[int] = []
    for part in text_parts:
        script += [part] if isinstance(part, int) else tokenizer(part, add_special_tokens=False)["input_ids"]
    return exact_engine((Scripted(model, script), tokenizer), pool)


def ids(tokenizer, *tokens: str) -> list[int]:
    return tokenizer.convert_tokens_to_ids(list(tokens))


def test_thinking_streams_separately(tiny_model, pool):
    _, tokenizer = tiny_model
    think, end_think, im_end = ids(tokenizer, "<think>", "</think>", "<|im_end|>")
    engine = scripted_engine(
        tiny_model, pool, [think, "\nLet me recall what works.\n", end_think, "\n\nUse pizza 🍕 slices.", im_end]
    )
    events = run(engine, update_every_n=0)
    thinking = "".join(e.text for e in events if isinstance(e, Thinking))
    answer = "".join(e.text for e in events if isinstance(e, Token))
    assert thinking == "Let me recall what works."
    assert answer == "Use pizza 🍕 slices."
    stats = done(events).stats
    assert stats.stop_reason == "eos"
    assert stats.thinking_tokens == 1 + len(tokenizer("\nLet me recall what works.\n")["input_ids"]) + 1
    assert events.index(next(e for e in events if isinstance(e, Token))) > events.index(
        next(e for e in events if isinstance(e, Thinking))
    )


def test_enable_thinking_false_prefills_an_empty_think_block(tiny_model, pool):
    _, tokenizer = tiny_model
    off = PromptBuilder(tokenizer, MESSAGE, HISTORY, enable_thinking=False)
    on = PromptBuilder(tokenizer, MESSAGE, HISTORY, enable_thinking=True)
    assert tokenizer.decode(off.header) == "<|im_start|>assistant\n<think>\n\n</think>\n\n"
    assert tokenizer.decode(on.header) == "<|im_start|>assistant\n"
    engine = scripted_engine(tiny_model, pool, ["Plain answer.", ids(tokenizer, "<|im_end|>")[0]])
    events = run(engine, update_every_n=0, enable_thinking=False)
    assert "".join(e.text for e in events if isinstance(e, Token)) == "Plain answer."
    assert not any(isinstance(e, Thinking) for e in events)


def test_model_without_thinking_streams_everything_as_tokens(tiny_model, pool):
    _, tokenizer = tiny_model
    engine = scripted_engine(tiny_model, pool, ["Just an answer, no think tags.", ids(tokenizer, "<|im_end|>")[0]])
    engine.think_ids = None  # what the engine finds for a vocabulary without <think> (Qwen2.5)
    events = run(engine, update_every_n=0)
    assert "".join(e.text for e in events if isinstance(e, Token)) == "Just an answer, no think tags."
    assert done(events).stats.thinking_tokens == 0


def test_stop_reasons(tiny_model, pool):
    model, tokenizer = tiny_model
    eos = scripted_engine(tiny_model, pool, ["One two three", ids(tokenizer, "<|endoftext|>")[0]])
    stats = done(run(eos, update_every_n=0)).stats
    assert stats.stop_reason == "eos" and stats.tokens == len(tokenizer("One two three")["input_ids"])
    stats = done(run(exact_engine(tiny_model, pool), max_new_tokens=7)).stats
    assert stats.stop_reason == "max_tokens" and stats.tokens == 7


def test_cancel_event_stops_promptly_and_still_learns(tiny_model, pool):
    model, tokenizer = tiny_model
    cancel = threading.Event()
    events = []
    for event in exact_engine(tiny_model, pool).stream(
        MESSAGE, HISTORY, max_new_tokens=500, temperature=0.0, cancel=cancel
    ):
        events.append(event)
        if sum(isinstance(e, (Token, Thinking)) for e in events) == 3:
            cancel.set()
    stats = done(events).stats
    assert stats.stop_reason == "cancelled"
    assert stats.tokens <= 5
    first = events[0].memories[0].id
    assert pool.retrieval_count(first) == 1


def test_closing_the_generator_stops_and_learns_nothing(tiny_model, pool, recorder):
    model, tokenizer = tiny_model
    stream = exact_engine(tiny_model, pool).stream(MESSAGE, HISTORY, max_new_tokens=500, temperature=0.0)
    first = next(stream)
    next(stream)
    stream.close()
    assert len(recorder.calls) <= 2
    assert all(pool.retrieval_count(hit.id) == 0 for hit in first.memories)


def test_learning_counts_each_memory_once_per_answer(tiny_model, pool, monkeypatch):
    model, tokenizer = tiny_model
    engine = exact_engine(tiny_model, pool)
    real = engine._retrieve
    first: list = []

    def sticky(*args, **kwargs):
        # The real re-retrieval runs (and must not learn); its winner is then held in context.
        hits = real(*args, **kwargs)
        first.extend([] if first else hits)
        return first

    monkeypatch.setattr(engine, "_retrieve", sticky)
    events = run(engine, max_new_tokens=50)
    stats = done(events).stats
    assert stats.retrievals == 50 and stats.swaps == 0
    kept = [hit.id for hit in events[0].memories]
    assert len(kept) == 5
    assert all(pool.retrieval_count(i) == 1 for i in kept)
    links = {frozenset((a, b)): w for a, b, w in pool.links()}
    assert len(links) == 10 and all(w == pytest.approx(1.0) for w in links.values())
    assert sum(pool.retrieval_count(m.id) for m in pool.memories) == 5


def test_learning_with_swaps_weights_links_by_shared_tokens(tiny_model, pool):
    model, tokenizer = tiny_model
    events = run(exact_engine(tiny_model, pool), max_new_tokens=40)
    assert done(events).stats.swaps > 0
    spans: dict[str, list[int]] = {}
    current, start = [h.id for h in events[0].memories], 0
    for update in [e for e in events if isinstance(e, MemoryUpdate)] + [None]:
        end = update.at_token if update else 40
        for i in current:
            spans.setdefault(i, []).extend(range(start, end))
        if update:
            current, start = [h.id for h in update.memories], update.at_token
    assert {m.id for m in pool.memories if pool.retrieval_count(m.id)} == set(spans)
    assert all(pool.retrieval_count(i) == 1 for i in spans)
    for a, b, weight in pool.links():
        shared = len(set(spans[a]) & set(spans[b]))
        assert weight == pytest.approx(shared / 40)


def test_learn_false_and_return_learned(tiny_model, pool):
    model, tokenizer = tiny_model
    engine = exact_engine(tiny_model, pool)
    before = pool.learning_state()
    run(engine, learn=False, max_new_tokens=10)
    assert pool.learning_state().counts.tolist() == before.counts.tolist()
    learned = done(run(engine, max_new_tokens=10, return_learned=True)).learned
    assert isinstance(learned, LearningState)
    assert learned.counts.tolist() == pool.learning_state().counts.tolist()
    assert done(run(engine, max_new_tokens=3)).learned is None


def test_events_convert_to_the_sse_shapes(tiny_model, pool):
    model, tokenizer = tiny_model
    events = run(exact_engine(tiny_model, pool), max_new_tokens=30)
    seen = set()
    for event in events:
        payload = json.loads(json.dumps(event.to_sse()))
        seen.add(payload["type"])
        if payload["type"] == "memories":
            assert {"id", "content", "score", "similarity", "type", "subject"} <= set(payload["memories"][0])
        elif payload["type"] in ("token", "thinking"):
            assert set(payload) == {"type", "t"} and payload["t"]
        elif payload["type"] == "memory_update":
            assert {"memories", "added", "removed", "at_token"} <= set(payload)
            assert payload["added"] or payload["removed"]  # anchored: filling an extra slot adds without removing
        elif payload["type"] == "context":
            assert {
                "prompt_tokens",
                "memory_tokens",
                "generated_tokens",
                "swaps",
                "rag_memory_tokens",
                "all_memory_tokens",
            } <= set(payload)
        elif payload["type"] == "done":
            assert {"tokens", "swaps", "stop_reason", "ttft_s", "tokens_per_s", "retrieval_ms", "swap_ms"} <= set(
                payload
            )
    assert {"memories", "token", "memory_update", "context", "done"} <= seen
    assert isinstance(events[0], Memories)


def test_context_stats_track_the_chart_lines(tiny_model, pool):
    model, tokenizer = tiny_model
    events = run(exact_engine(tiny_model, pool), max_new_tokens=40)
    stats = [e for e in events if isinstance(e, ContextStats)]
    builder = PromptBuilder(tokenizer, MESSAGE, HISTORY)
    first = stats[0]
    assert first.prompt_tokens == len(builder.prefix) + len(builder.header)
    assert first.memory_tokens == len(builder.memory_block(events[0].memories))
    assert first.generated_tokens == 0
    last = stats[-1]
    assert last.generated_tokens == 40 and last.swaps == done(events).stats.swaps
    for s in stats:
        assert s.memory_tokens <= s.rag_memory_tokens + 2 <= s.all_memory_tokens + 2
    assert last.rag_memory_tokens > first.rag_memory_tokens
    assert len(stats) >= 2 + done(events).stats.swaps


def test_seeded_sampling_is_reproducible(tiny_model, pool):
    model, tokenizer = tiny_model
    engine = exact_engine(tiny_model, pool)

    def text(seed):
        events = run(engine, temperature=1.0, top_p=0.9, seed=seed, learn=False, max_new_tokens=20, update_every_n=5)
        return "".join(e.text for e in events if isinstance(e, Token))

    assert text(1) == text(1)
    assert text(1) != text(2)


def test_engine_runs_in_background_threads(tiny_model, pool):
    model, tokenizer = tiny_model
    engine = exact_engine(tiny_model, pool)
    expected = "".join(
        e.text for e in run(engine, learn=False, max_new_tokens=25, update_every_n=3) if isinstance(e, Token)
    )
    results: queue.Queue = queue.Queue()

    def worker():
        events = run(engine, learn=False, max_new_tokens=25, update_every_n=3)
        results.put("".join(e.text for e in events if isinstance(e, Token)))

    threads = [threading.Thread(target=worker) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert [results.get_nowait() for _ in threads] == [expected] * 3


def test_bad_arguments_are_refused_before_any_work(tiny_model, pool):
    model, tokenizer = tiny_model
    engine = StreamingEngine(model, tokenizer, pool)
    for bad in ({"lookback_tokens": 0}, {"update_every_n": -1}, {"max_new_tokens": -5}, {"extra_memories": -1}):
        with pytest.raises(ValueError):
            next(engine.stream(MESSAGE, **bad))


def test_pool_counts_rendered_lines_in_model_tokens_once(tiny_model, pool):
    """Budgets and context sizes count each memory's rendered line (tags included) in the
    generating model's tokens; building engines for later answers recounts nothing."""
    model, tokenizer = tiny_model
    calls = []

    class Counting(MemoryLineTokens):
        def __call__(self, memories):
            calls.append(len(memories))
            return super().__call__(memories)

    counting = Counting(tokenizer)
    StreamingEngine(model, tokenizer, pool, line_tokens=counting)
    memories = pool.memories
    assert calls == [len(pool)]
    lines = tokenizer([memory_line(m) + "\n" for m in memories], add_special_tokens=False)["input_ids"]
    assert pool.token_counts.tolist() == [len(ids) for ids in lines]
    assert any(m.type for m in memories) and pool.token_counts.tolist() != [pool.embedder.count_tokens(m.content) for m in memories]

    events = run(StreamingEngine(model, tokenizer, pool, line_tokens=counting), max_new_tokens=12, memory_token_budget=60)
    assert calls == [len(pool)], "later engines reuse the pool's counts"
    assert sum(h.tokens for h in events[0].memories) <= 60
    builder = PromptBuilder(tokenizer, MESSAGE, HISTORY)
    stats = [e for e in events if isinstance(e, ContextStats)][-1]
    assert stats.all_memory_tokens == builder.block_overhead() + sum(len(ids) for ids in lines)


# -- splice swaps ----------------------------------------------------------------------------


def splice_context(
    tiny_model, hits, fuse: bool = False, reuse: bool = True, refresh: bool = False, reread: int | None = 0,
    kept: bool = False,
) -> tuple[SpliceContext, StreamingEngine]:
    model, tokenizer = tiny_model
    engine = StreamingEngine(model, tokenizer, MemoryPool(embedder=default_embedder()))
    builder = PromptBuilder(tokenizer, MESSAGE, HISTORY)
    store = LineStore() if reuse else None
    context = SpliceContext(
        engine._forward, builder, hits, model.config, rotation=engine.rotation, fuse=fuse, store=store,
        refresh_prompt=refresh, reread_answer=reread, reread_kept=kept,
    )
    return context, engine


def read_over(engine: StreamingEngine, cache: DynamicCache, keep: int, ids) -> tuple[torch.Tensor, DynamicCache]:
    """`ids` read by a plain forward pass over the first `keep` entries of `cache` (a copy): the
    entries and logits a prefill would give them there. Returns (logits, the copy)."""
    reference = DynamicCache(config=engine.model.config)
    for index, layer in enumerate(cache.layers):
        reference.update(layer.keys[:, :, :keep], layer.values[:, :, :keep], index)
    return engine._forward(list(ids), reference), reference


def expected_tokens(context: SpliceContext, hits, fed) -> list[int]:
    builder = context._builder
    head, tail = builder.block_frame()
    lines = [token for hit in hits for token in builder.line_ids(hit)]
    block = [*head, *lines, *tail] if hits else []
    return [*builder.prefix, *block, *builder.header, *fed]


def test_key_rotation_moves_a_key_as_the_models_rotary_embedding_would(tiny_model):
    model, _ = tiny_model
    rotary = model.model.rotary_emb
    rotation = KeyRotation.from_model(model)
    keys = torch.randn(1, 2, 6, rotation.rotary_dims, generator=torch.Generator().manual_seed(0)).to(model.device)
    positions = torch.arange(40, 46, device=model.device)[None]
    for shift in (7, -5, 300):
        at = apply_rotary_pos_emb(keys, keys, *rotary(keys, positions))[1]
        moved = apply_rotary_pos_emb(keys, keys, *rotary(keys, positions + shift))[1]
        torch.testing.assert_close(rotation(at, shift), moved, atol=1e-5, rtol=1e-5)


def test_splice_reads_only_the_new_line_and_slides_the_rest_by_rotation(tiny_model, pool):
    a, b, c, d = pool.retrieve(MESSAGE, max_memories=4, learn=False)
    context, engine = splice_context(tiny_model, [a, b, c])
    fed = [11, 12, 13, 14, 15]
    context.prefill()
    for token in fed:
        context.step(token)
    old = [(layer.keys.clone(), layer.values.clone()) for layer in context.cache.layers]
    b_start = context.start + len(context._head) + len(context.lines[0][1])
    c_start = b_start + len(context.lines[1][1])
    c_end = c_start + len(context.lines[2][1])
    b_len, d_len = len(context.lines[1][1]), len(context._builder.line_ids(d))

    # b leaves, d comes: b's line is cut, d's line read after the last line that stays (c).
    assert context.swap([a, d, c]) == d_len  # the new line, nothing else
    assert context.hits == [a, c, d] and context.tokens == expected_tokens(context, [a, c, d], fed)
    assert context.cache.get_seq_length() == len(context.tokens)  # positions stay contiguous
    d_start = c_end - b_len
    # d's line over what precedes it
    _, reference = read_over(engine, context.cache, d_start, context._builder.line_ids(d))
    for layer, fresh, (keys, values) in zip(context.cache.layers, reference.layers, old):
        assert torch.equal(layer.keys[:, :, :b_start], keys[:, :, :b_start])  # before b: untouched
        # c slides back by b's length, the header and the answer forward by d's minus b's.
        for new, old_span, shift in ((slice(b_start, d_start), slice(c_start, c_end), -b_len),
                                     (slice(d_start + d_len, None), slice(c_end, None), d_len - b_len)):
            torch.testing.assert_close(layer.keys[:, :, new], context._rotation(keys[:, :, old_span], shift))
            assert torch.equal(layer.values[:, :, new], values[:, :, old_span])
        d_span = slice(d_start, d_start + d_len)
        torch.testing.assert_close(layer.keys[:, :, d_span], fresh.keys[:, :, d_span])
        torch.testing.assert_close(layer.values[:, :, d_span], fresh.values[:, :, d_span])


def test_a_fused_splice_reads_the_new_lines_with_the_next_token_as_two_passes_would(tiny_model, pool):
    a, b, c, d = pool.retrieve(MESSAGE, max_memories=4, learn=False)
    runs = []
    for fuse in (False, True):
        context, _ = splice_context(tiny_model, [a, b, c], fuse=fuse)
        context.prefill()
        context.step(11)
        read = context.swap([d, c])  # a and b leave, d comes
        pending = context.cache.get_seq_length()
        logits = [context.step(token) for token in (12, 13)]
        runs.append((read, pending, logits, context))
    (read, pending, logits, plain), (fused_read, fused_pending, fused_logits, fused) = runs
    assert read == fused_read > 0 and fused.tokens == plain.tokens
    assert fused_pending == pending - read  # fused: the lines were not read by the swap
    for left, right in zip(logits, fused_logits):
        torch.testing.assert_close(left, right, atol=1e-4, rtol=1e-4)
    for left, right in zip(plain.cache.layers, fused.cache.layers):
        torch.testing.assert_close(left.keys, right.keys, atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(left.values, right.values, atol=1e-4, rtol=1e-4)


def test_a_memory_that_returns_gets_its_cut_line_back_without_a_read(tiny_model, pool):
    a, b, c, d = pool.retrieve(MESSAGE, max_memories=4, learn=False)
    context, _ = splice_context(tiny_model, [a, b, c])
    unswapped, _ = splice_context(tiny_model, [a, b, c])
    for each in (context, unswapped):
        each.prefill()
        each.step(11)
    c_line = len(context._builder.line_ids(c))
    assert context.swap([a, b]) == 0  # c is cut...
    assert context.swap([a, b, c]) == 0 and context.reused == c_line  # ...and put back, not read
    assert context.tokens == unswapped.tokens
    for left, right in zip(context.cache.layers, unswapped.cache.layers):  # same place: same entries
        torch.testing.assert_close(left.keys, right.keys, atol=1e-5, rtol=1e-5)
        assert torch.equal(left.values, right.values)
    torch.testing.assert_close(context.step(12), unswapped.step(12), atol=1e-4, rtol=1e-4)

    # a comes back after c: its entries from the prefill, keys re-rotated to the new place.
    a_line, a_start = context._builder.line_ids(a), context.start + len(context._head)
    before = [(layer.keys[:, :, a_start : a_start + len(a_line)].clone(), layer.values[:, :, a_start : a_start + len(a_line)].clone())
              for layer in context.cache.layers]
    context.swap([b, c])
    assert context.swap([b, c, a]) == 0 and context.hits == [b, c, a]
    assert context.tokens == expected_tokens(context, [b, c, a], [11, 12])
    moved = sum(len(context._builder.line_ids(h)) for h in (b, c))
    for layer, (keys, values) in zip(context.cache.layers, before):
        span = slice(a_start + moved, a_start + moved + len(a_line))
        torch.testing.assert_close(layer.keys[:, :, span], context._rotation(keys, moved), atol=1e-5, rtol=1e-5)
        assert torch.equal(layer.values[:, :, span], values)

    # A line read by a (fused) swap is stored too: d read, cut, back in the same place.
    d_line = context._builder.line_ids(d)
    assert context.swap([b, c, a, d]) == len(d_line)
    context.step(13)
    d_span = slice(a_start + moved + len(a_line), a_start + moved + len(a_line) + len(d_line))
    assert context.tokens[d_span] == d_line
    read = [(layer.keys[:, :, d_span].clone(), layer.values[:, :, d_span].clone()) for layer in context.cache.layers]
    context.swap([b, c, a])
    assert context.swap([b, c, a, d]) == 0
    for layer, (keys, values) in zip(context.cache.layers, read):
        torch.testing.assert_close(layer.keys[:, :, d_span], keys, atol=1e-5, rtol=1e-5)
        assert torch.equal(layer.values[:, :, d_span], values)

    without, _ = splice_context(tiny_model, [a, b, c], reuse=False)
    without.prefill()
    without.swap([a, b])
    assert without.swap([a, b, c]) == c_line and without.reused == 0  # no store: read again


def test_splice_cuts_appends_empties_and_refills_the_block(tiny_model, pool):
    a, b, c, d = pool.retrieve(MESSAGE, max_memories=4, learn=False)
    context, _ = splice_context(tiny_model, [a, b, c])
    context.prefill()
    context.step(11)
    cases = [([a, c], 0), ([a, c, d, b], None), ([], 0), ([d], None)]
    for hits, reads in cases:
        read = context.swap(hits)
        assert {h.id for h in context.hits} == {h.id for h in hits}
        assert context.tokens == expected_tokens(context, context.hits, [11])
        assert context.cache.get_seq_length() == len(context.tokens)
        if reads is not None:
            assert read == reads  # cutting a line reads nothing
    assert context.memory_tokens == len(expected_tokens(context, [d], [])) - context.prompt_tokens
    logits = context.step(12)
    assert torch.isfinite(logits).all()


def test_a_refreshing_splice_re_reads_the_instruction_and_header_over_the_new_block(tiny_model, pool):
    """With `refresh_prompt` a swap re-reads the block's instruction and the header too: the
    entries from the first line read to the answer are a forward pass over the cache before
    them, as a prefill would give. Without it the instruction keeps the entries it had."""
    a, b, c, d = pool.retrieve(MESSAGE, max_memories=4, learn=False)
    for fuse in (False, True):
        (stale, _), (context, engine) = (
            splice_context(tiny_model, [a, b, c], fuse=fuse, refresh=refresh) for refresh in (False, True)
        )
        fed = [11, 12, 13]
        for each in (stale, context):
            each.prefill()
            for token in fed:
                each.step(token)
        header, frame = len(context._builder.header), len(context._tail) + len(context._builder.header)
        line = {hit.id: len(context._builder.line_ids(hit)) for hit in (a, b, c, d)}
        block_of_b = len(context._head) + line[b.id] + len(context._tail)
        cases = [([a, d, c], line[d.id] + frame), ([a, c], frame), ([], header), ([b], block_of_b + header)]
        for hits, reads in cases:
            assert context.swap(hits) == reads
            stale.swap(hits)
            fed.append(len(fed) + 11)
            assert torch.isfinite(context.step(fed[-1])).all()
            stale.step(fed[-1])
            assert context.tokens == stale.tokens == expected_tokens(context, context.hits, fed)
            answer = len(context.tokens) - len(fed)
            gap = answer - reads
            _, reference = read_over(engine, context.cache, gap, context.tokens[gap:answer])
            for layer, fresh in zip(context.cache.layers, reference.layers):
                torch.testing.assert_close(layer.keys[:, :, gap:answer], fresh.keys[:, :, gap:], atol=1e-4, rtol=1e-4)
                torch.testing.assert_close(
                    layer.values[:, :, gap:answer], fresh.values[:, :, gap:], atol=1e-4, rtol=1e-4
                )
            instruction = slice(answer - frame, answer)
            if hits == [a, d, c]:  # without refresh the instruction still has the entries that saw b
                assert not torch.allclose(stale.cache.layers[-1].values[:, :, instruction],
                                          context.cache.layers[-1].values[:, :, instruction], atol=1e-3)


def test_a_splice_that_re_reads_the_prompt_and_the_answer_leaves_nothing_stale_after_the_lines(tiny_model, pool):
    """`refresh_prompt` with `reread_answer=None` re-reads everything after the new lines, so
    where no line stays after a cut one and none comes from the store (as in these swaps) the
    cache and the logits are a fresh forward's over the same tokens. With `reread_answer=2` the
    answer's last two entries are a forward over the cache before them; with 0 they are not."""
    model, _ = tiny_model
    a, b, c, d = pool.retrieve(MESSAGE, max_memories=4, learn=False)
    for fuse in (False, True):
        exact, engine = splice_context(tiny_model, [a, b, c], fuse=fuse, refresh=True, reread=None)
        recent, _ = splice_context(tiny_model, [a, b, c], fuse=fuse, refresh=True, reread=2)
        plain, _ = splice_context(tiny_model, [a, b, c], fuse=fuse, refresh=True)
        fed = [11, 12, 13, 14]
        for each in (exact, recent, plain):
            each.prefill()
            for token in fed:
                each.step(token)
        for hits in ([a, d], [a], [], [c, b]):
            counts = [each.swap(hits) for each in (exact, recent, plain)]
            assert counts[0] == counts[2] + len(fed) and counts[1] == counts[2] + 2
            fed.append(len(fed) + 11)
            logits = [each.step(fed[-1]) for each in (exact, recent, plain)]
            fresh = DynamicCache(config=model.config)
            torch.testing.assert_close(logits[0], engine._forward(exact.tokens, fresh), atol=1e-4, rtol=1e-4)
            for layer, reference in zip(exact.cache.layers, fresh.layers):
                torch.testing.assert_close(layer.keys, reference.keys, atol=1e-4, rtol=1e-4)
                torch.testing.assert_close(layer.values, reference.values, atol=1e-4, rtol=1e-4)
            cut = len(recent.tokens) - 3  # the two tokens re-read and the new one
            read, reference = read_over(engine, recent.cache, cut, recent.tokens[cut:])
            torch.testing.assert_close(logits[1], read, atol=1e-4, rtol=1e-4)
            for layer, fresh_layer in zip(recent.cache.layers, reference.layers):
                torch.testing.assert_close(
                    layer.values[:, :, cut:], fresh_layer.values[:, :, cut:], atol=1e-4, rtol=1e-4
                )
            assert exact.tokens == recent.tokens == plain.tokens
        stale = plain.cache.layers[-1].values[:, :, -len(fed) : -1]
        answer = fresh.layers[-1].values[:, :, -len(fed) : -1]
        assert not torch.allclose(stale, answer, atol=1e-3), "reread_answer=0: the answer keeps its entries"


def test_a_splice_can_read_again_the_lines_that_stay_after_a_cut_one(tiny_model, pool):
    """With `reread_kept`, cutting b from [a, b, c] reads c again (after a, as a prefill would)
    with the newcomer d, instead of sliding c back with the entries that saw b."""
    a, b, c, d = pool.retrieve(MESSAGE, max_memories=4, learn=False)
    for fuse in (False, True):
        (slid, _), (context, engine) = (splice_context(tiny_model, [a, b, c], fuse=fuse, kept=k) for k in (False, True))
        for each in (slid, context):
            each.prefill()
            each.step(11)
        line = {hit.id: len(context._builder.line_ids(hit)) for hit in (a, b, c, d)}
        assert slid.swap([a, c, d]) == line[d.id]
        assert context.swap([a, c, d]) == line[c.id] + line[d.id]
        for each in (slid, context):
            each.step(12)
        assert context.hits == slid.hits == [a, c, d] and context.tokens == slid.tokens
        c_start = context.start + len(context._head) + line[a.id]
        c_end = c_start + line[c.id]
        _, reference = read_over(engine, context.cache, c_start, context.tokens[c_start:c_end])
        for layer, fresh in zip(context.cache.layers, reference.layers):
            torch.testing.assert_close(
                layer.values[:, :, c_start:c_end], fresh.values[:, :, c_start:], atol=1e-4, rtol=1e-4
            )
        assert not torch.allclose(slid.cache.layers[-1].values[:, :, c_start:c_end],
                                  reference.layers[-1].values[:, :, c_start:], atol=1e-3), "slid, c still saw b"


def test_splice_mode_runs_every_re_retrieval_without_deferring(tiny_model, pool):
    model, tokenizer = tiny_model
    # Splice is the CPU default for a RoPE model; a GPU reads a few hundred tokens in about a decode step.
    assert StreamingEngine(model, tokenizer, pool).swap == ("splice" if model.device.type == "cpu" else "exact")
    engine = StreamingEngine(model, tokenizer, pool, swap="splice")
    events = run(engine, max_new_tokens=40)
    stats = done(events).stats
    assert stats.swaps > 0 and stats.extra["deferred_swaps"] == 0 and stats.extra["swap_mode"] == "splice"
    assert stats.retrievals == 40
    updates = [e for e in events if isinstance(e, MemoryUpdate)]
    assert updates and not any(update.exact for update in updates)
    builder = PromptBuilder(tokenizer, MESSAGE, HISTORY)
    added = sum(len(builder.line_ids(hit)) for update in updates for hit in update.added)
    # New lines only, read or put back from the store (a refilled empty block adds its frame).
    assert stats.extra["swap_tokens_reread"] + stats.extra["swap_tokens_reused"] <= added


def test_a_later_answer_puts_back_the_lines_an_earlier_one_read(tiny_model, pool):
    model, tokenizer = tiny_model
    engine = StreamingEngine(model, tokenizer, pool, line_store=LineStore(), swap="splice")
    first, second = (done(run(engine, learn=False)).stats.extra for _ in range(2))
    assert first["swap_tokens_reread"] > 0
    assert second["swap_tokens_reused"] > 0 and second["swap_tokens_reread"] < first["swap_tokens_reread"]
    alone = done(run(StreamingEngine(model, tokenizer, pool, reuse_lines=False), learn=False)).stats.extra
    assert alone["swap_tokens_reused"] == 0


@pytest.mark.parametrize("run_lines", [1, 2])
def test_lines_read_ahead_hold_what_reading_their_run_after_the_frame_gives(tiny_model, pool, run_lines):
    model, tokenizer = tiny_model
    engine = StreamingEngine(model, tokenizer, pool)
    memories = pool.memories[:6]
    ahead = LineStore(max_lines=len(memories))
    builder = PromptBuilder(tokenizer, "", system_prompt=engine.system_prompt)
    frame = [*builder.prefix, *builder.block_frame()[0]]
    lines = [builder.line_ids(m) for m in memories]
    # Small chunks: several runs share a forward pass, and a chunk boundary falls between runs.
    read = engine.read_ahead(ahead, memories, run_lines=run_lines, chunk_tokens=2 * run_lines * max(map(len, lines)))
    assert read == sum(map(len, lines)) and len(ahead) == len(memories)
    for first in range(0, len(memories), run_lines):
        run = lines[first : first + run_lines]
        alone = DynamicCache(config=model.config)
        engine._forward([*frame, *(token for ids in run for token in ids)], alone)
        start = len(frame)
        for memory, ids in zip(memories[first:], run):
            stored = ahead.get(memory.id, ids)
            assert stored is not None and stored.position == start
            for layer, (keys, values) in zip(alone.layers, stored.entries):
                # Read in one longer pass: other kernel shapes, so fp32 rounding differs (~1e-5 on a GPU).
                torch.testing.assert_close(keys, layer.keys[:, :, start : start + len(ids)], atol=1e-4, rtol=1e-4)
                torch.testing.assert_close(values, layer.values[:, :, start : start + len(ids)], atol=1e-4, rtol=1e-4)
            start += len(ids)
    assert engine.read_ahead(ahead, memories) == 0  # stored lines are not read again


def test_an_answer_puts_back_lines_read_ahead_from_the_fallback_store(tiny_model, pool):
    model, tokenizer = tiny_model
    ahead = LineStore(max_lines=len(pool))
    engine = StreamingEngine(model, tokenizer, pool, line_store=LineStore(fallback=ahead), swap="splice")
    engine.read_ahead(ahead)
    stats = done(run(engine, learn=False)).stats.extra
    assert stats["swap_tokens_reused"] > 0 and stats["swap_tokens_reread"] == 0
    assert len(engine.line_store) > 0  # the answer's prefill lines are its pool's own


def test_a_model_without_rotary_positions_swaps_exactly(pool):
    model = GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=16, n_head=2, vocab_size=64)).eval()
    _, tokenizer = tiny.build(seed=0)
    engine = StreamingEngine(model, tokenizer, pool)
    assert engine.rotation is None and engine.swap == "exact"
    assert engine.swap_budget == CPU_SWAP_BUDGET  # exact is this model's only CPU mode: rationed
    with pytest.raises(ValueError, match="splice"):
        StreamingEngine(model, tokenizer, pool, swap="splice")


# -- slot swaps ------------------------------------------------------------------------------


def slot_context(tiny_model, hits, **kwargs) -> SlotContext:
    model, tokenizer = tiny_model
    engine = StreamingEngine(model, tokenizer, MemoryPool(embedder=default_embedder()))
    args = dict(slots=3, slot_tokens=12, max_new_tokens=8, device=model.device)
    return SlotContext(engine._forward, PromptBuilder(tokenizer, MESSAGE, HISTORY), hits, model.config, **{**args, **kwargs})


def test_slot_swap_recomputes_one_slot_as_a_fresh_prefill_and_moves_nothing(tiny_model, pool):
    hits = pool.retrieve(MESSAGE, max_memories=4, learn=False)
    a, b, c, d = hits
    context = slot_context(tiny_model, [a, b, c])
    context.prefill()
    for token in (11, 12, 13, 14, 15):
        context.step(token)
    length = context.cache.get_seq_length()
    before = [(layer.keys.clone(), layer.values.clone()) for layer in context.cache.layers]
    assert context.swap([a, d, c]) == 12  # one slot re-read, whatever the answer's length
    assert context.slots == [a, d, c] and context.cache.get_seq_length() == length
    fresh = slot_context(tiny_model, [a, d, c])
    fresh.prefill()
    end = context._span(1).stop
    for layer, reference, (keys, values) in zip(context.cache.layers, fresh.cache.layers, before):
        # Up to the end of the new slot: what a fresh prefill of the new block computes.
        torch.testing.assert_close(layer.keys[:, :, :end], reference.keys[:, :, :end], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(layer.values[:, :, :end], reference.values[:, :, :end], atol=1e-5, rtol=1e-5)
        # After it (later slots, header, generated text): untouched, at the same positions.
        assert torch.equal(layer.keys[:, :, end:], keys[:, :, end:])
        assert torch.equal(layer.values[:, :, end:], values[:, :, end:])
    assert torch.equal(context.mask, fresh.mask)


def test_slot_swap_empties_slots_without_reading_and_trims_long_memories(tiny_model, pool):
    a, b, c = pool.retrieve(MESSAGE, max_memories=3, learn=False)
    context = slot_context(tiny_model, [a, b, c], slot_tokens=4)
    context.prefill()
    span = context._span(1)
    assert context.mask[0, span].tolist() == [1, 1, 1, 1]  # trimmed to its slot
    assert context.layout[span.stop - 1] == context._builder.encode("\n")[0]  # keeps its newline
    assert context.swap([a, c]) == 0
    assert context.slots == [a, None, c] and context.mask[0, span].tolist() == [0, 0, 0, 0]
    assert context.memory_tokens < slot_context(tiny_model, [a, b, c], slot_tokens=4).memory_tokens


def test_slot_mode_runs_every_re_retrieval_and_keeps_positions(tiny_model, pool, recorder):
    model, tokenizer = tiny_model
    engine = StreamingEngine(model, tokenizer, pool, swap="slots")
    events = run(engine, max_new_tokens=40)
    stats = done(events).stats
    assert stats.swaps > 0 and stats.extra["deferred_swaps"] == 0 and stats.extra["swap_mode"] == "slots"
    assert stats.retrievals == 40  # the first retrieval + one after each token but the last
    updates = [e for e in events if isinstance(e, MemoryUpdate)]
    assert updates and not any(update.exact for update in updates)
    assert stats.extra["swap_tokens_reread"] == engine.slot_tokens * sum(len(u.added) for u in updates)
    layout = recorder.calls[0][0] + len(recorder.calls[0][1])
    steps = [past for past, ids, _ in recorder.calls[1:] if len(ids) == 1]
    # Generated tokens are appended at fixed positions: a swap never shifts them.
    assert steps == list(range(layout, layout + 39))
    assert all(past < layout for past, ids, _ in recorder.calls[1:] if len(ids) > 1)


def test_exact_swaps_are_marked_exact(tiny_model, pool):
    updates = [e for e in run(exact_engine(tiny_model, pool)) if isinstance(e, MemoryUpdate)]
    assert updates and all(update.exact for update in updates)
    assert all(update.to_sse()["exact"] is True for update in updates)


# -- memory sampling ---------------------------------------------------------------------------


def first_draws(engine: StreamingEngine, seeds, **kwargs) -> list[tuple[str, ...]]:
    """The opening memory set of an answer per seed (closing the stream there: no model work)."""
    draws = []
    for seed in seeds:
        stream = engine.stream(MESSAGE, HISTORY, seed=seed, learn=False, **kwargs)
        draws.append(tuple(hit.id for hit in next(stream).memories))
        stream.close()
    return draws


def test_memory_temperature_changes_the_draws_and_near_zero_gives_argmax(tiny_model, pool):
    engine = exact_engine(tiny_model, pool)
    argmax = first_draws(engine, [0])[0]
    pool.softmax_temperature = 1.0
    hot = first_draws(engine, range(8), sample_memories=True)
    assert len(set(hot)) > 1 and any(draw != argmax for draw in hot)
    assert first_draws(engine, range(8), sample_memories=True) == hot  # seeded: the same draws again
    pool.softmax_temperature = 1e-4
    assert first_draws(engine, range(8), sample_memories=True) == [argmax] * 8


def test_sampled_answer_replays_from_its_reported_seed(tiny_model, pool):
    engine = exact_engine(tiny_model, pool)
    pool.softmax_temperature = 0.5

    def trace(seed):
        events = run(engine, seed=seed, temperature=0.8, sample_memories=True, learn=False, max_new_tokens=20)
        memories = [tuple(h.id for h in e.memories) for e in events if isinstance(e, (Memories, MemoryUpdate))]
        return done(events).stats.extra["seed"], memories, "".join(e.text for e in events if isinstance(e, Token))

    seed, memories, text = trace(None)
    assert trace(seed) == (seed, memories, text)


def test_a_sampled_re_retrieval_of_the_same_text_redraws_the_same_set(tiny_model, pool):
    """Common random numbers: a re-retrieval changes the set only where the scores moved."""
    engine = exact_engine(tiny_model, pool)
    pool.softmax_temperature = 1.0
    query = engine._first_query(MESSAGE, HISTORY)
    draws = MemoryDraws(seed=3, sample=True)
    sets = {tuple(h.id for h in engine._retrieve(query, (), 0.0, draws, max_memories=5)) for _ in range(5)}
    assert len(sets) == 1


def test_logits_processors_plug_into_the_decode_loop(tiny_model, pool):
    class Forbid(LogitsProcessor):
        def __init__(self, token: int) -> None:
            self.token = token
            self.seen: list[int] = []

        def __call__(self, input_ids, scores):
            self.seen.append(input_ids.shape[-1])
            scores[:, self.token] = float("-inf")
            return scores

    engine = exact_engine(tiny_model, pool)
    free = [e for e in run(engine, learn=False, max_new_tokens=12, update_every_n=0) if isinstance(e, Token)]
    _, tokenizer = tiny_model
    first = tokenizer("".join(e.text for e in free), add_special_tokens=False)["input_ids"][0]
    forbid = Forbid(first)
    events = run(engine, learn=False, max_new_tokens=12, update_every_n=0, logits_processor=[forbid])
    assert forbid.seen == list(range(12))  # the answer's ids so far
    assert "".join(e.text for e in events if isinstance(e, Token)) != "".join(e.text for e in free)


def test_the_embedder_encodes_on_another_device_with_a_copy_of_its_model():
    """`encode_on` (what an engine on a GPU calls) runs a copy made on that device once and
    gives the CPU model's vectors; the CPU model, which embeds every memory, does not move.
    "cpu:0" stands in for a GPU here: another device name, so the copy path runs."""
    embedder = default_embedder()
    texts = ["Alex drops minus signs under time pressure.", "Maya's peanut allergy is severe."]
    cpu_model = embedder._model
    try:
        on_device = embedder.encode_on(texts, "cpu:0")
        assert np.allclose(on_device, embedder.encode(texts), atol=1e-5)
        copy = embedder._copies["cpu:0"]
        assert copy is not cpu_model and embedder._model is cpu_model
        others = {device: model for device, model in embedder._copies.items() if device != "cpu:0"}
        embedder.encode_on(texts[:1], "cpu:0")
        assert embedder._copies == {**others, "cpu:0": copy}  # others: a GPU's, where the tests run on one
        assert np.array_equal(embedder.encode_on(texts, "cpu"), embedder.encode(texts))
    finally:
        embedder._copies.pop("cpu:0", None)  # the embedder is the session's: drop the 90 MB copy


def test_an_engine_on_an_accelerator_embeds_every_query_there(tiny_model, pool, monkeypatch):
    """On a CPU queries take the embedder's own path; on an accelerator every query of the
    answer (the message, the last exchange, the answer window) goes to `encode_on` with the
    model's device, while the pool's memories keep their CPU vectors."""
    devices: list[str] = []

    def encode_on(texts: list[str], device: str) -> np.ndarray:
        devices.append(device)
        return pool.embedder.encode(texts)

    monkeypatch.setattr(pool.embedder, "encode_on", encode_on, raising=False)
    engine = exact_engine(tiny_model, pool)
    on_cpu = engine.device.type == "cpu"
    assert engine.query_device == (None if on_cpu else str(engine.device))
    if on_cpu:
        run(engine, max_new_tokens=12, update_every_n=3, learn=False)
        assert devices == []
        engine.query_device = "cuda:0"  # stands in for a GPU: another device name
    done(run(engine, max_new_tokens=12, update_every_n=3, learn=False))
    # the message, the last exchange, then the answer window every 3 tokens
    assert len(devices) >= 3 and set(devices) == {engine.query_device}
