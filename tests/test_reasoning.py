"""Prompted reasoning: the facts stream as thinking, the answer after the marker, and a model
cannot end before its answer line (smem.generation.reasoning)."""

from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import build_tiny
from smem import MemoryPool, load_memories
from smem.generation import tiny
from smem.generation.decoding import PROFILES, apply_profile, profile_for
from smem.generation.engine import ANCHORED_EXTRA_MEMORIES, StreamingEngine
from smem.generation.events import Done, Memories, MemoryUpdate, Thinking, Token
from smem.generation.reasoning import ANSWER_MARKER, CHAT_INSTRUCTION, FORCED_MARKER, AnswerBeforeEnd, PromptedReasoning
from smem.generation.sampling import TokenPicker
from smem.generation.text import TextSplitter

ROOT = Path(__file__).resolve().parents[1]
MESSAGE = "How should I help Alex with fractions?"


@pytest.fixture(scope="module")
def tiny_model():
    return build_tiny(seed=0)


@pytest.fixture(scope="module")
def tokenizer():
    return tiny.build_tokenizer()


def split(tokenizer, text: str) -> tuple[str, str]:
    """Feed `text` token by token through a prompted-reasoning splitter: (thinking, answer)."""
    splitter = TextSplitter(tokenizer, thinking=True, answer_marker=ANSWER_MARKER)
    events = [e for token in tokenizer.encode(text, add_special_tokens=False) for e in splitter.feed(token)]
    events += splitter.finish()
    assert all(isinstance(e, (Thinking, Token)) for e in events)
    kinds = [isinstance(e, Token) for e in events]
    assert kinds == sorted(kinds)  # thinking first, then the answer: never back
    return "".join(e.text for e in events if isinstance(e, Thinking)), "".join(e.text for e in events if isinstance(e, Token))


@pytest.mark.parametrize(
    ("text", "thinking", "answer"),
    [
        ("Facts: Alex likes soccer.\nAnswer: Use soccer scores.", "Facts: Alex likes soccer.", "Use soccer scores."),
        ("Facts: he moved.\n**Answer:** Sweden", "Facts: he moved.", "Sweden"),
        ("Facts: he moved. Final answer: Sweden", "Facts: he moved. Final", "Sweden"),
        ("Facts: an anxious kid; answers fast.\nAnswer: go slow", "Facts: an anxious kid; answers fast.", "go slow"),
        ("Facts: nothing yet\nAnswer:", "Facts: nothing yet", ""),  # cut right after the marker
        ("Facts: cut off while writing Ans", "Facts: cut off while writing Ans", ""),  # a held prefix comes back
    ],
)
def test_the_marker_splits_thinking_from_the_answer(tokenizer, text, thinking, answer):
    assert split(tokenizer, text) == (thinking, answer)


@settings(max_examples=60, deadline=None)
@given(
    facts=st.text(alphabet=st.characters(codec="utf-8", exclude_characters="<>"), max_size=60),
    answer=st.text(alphabet=st.characters(codec="utf-8", exclude_characters="<>"), max_size=40),
    marker=st.sampled_from(["\nAnswer:", "\n**Answer:**", " answer:", "\nFinal answer: "]),
)
def test_streamed_split_is_the_split_of_the_whole_text(tokenizer, facts, answer, marker):
    """Fed a token at a time (emoji and accents split across tokens, "Ans..." held back), the
    thinking is what comes before the marker's first match in the whole reply and the answer what
    follows it, whitespace at their ends aside. ("<>" left out: "<|im_end|>" is a special token.)"""
    # What a model writes is a decoding of tokens: the tokenizer normalises (NFC: "\uf900" reads back as "\u8c48").
    text = tokenizer.decode(tokenizer.encode(f"Facts: {facts}{marker}{answer}", add_special_tokens=False))
    match = ANSWER_MARKER.search(text)
    assert split(tokenizer, text) == (text[: match.start()].strip(), text[match.end() :].strip())


def test_answer_before_end_writes_the_marker_then_lets_the_reply_end(tokenizer):
    stop = tokenizer.convert_tokens_to_ids("<|im_end|>")
    forcing = AnswerBeforeEnd(tokenizer, frozenset({stop}))
    ids = tokenizer.encode("Facts: Alex plays soccer.", add_special_tokens=False)
    marker = tokenizer.encode(FORCED_MARKER, add_special_tokens=False)
    written = []
    for _ in range(len(marker) + 1):
        scores = torch.zeros(1, len(tokenizer))
        scores[0, stop] = 5.0  # the model wants to end every step
        token = int(forcing(torch.tensor([ids + written]), scores).argmax())
        written.append(token)
    assert written == [*marker, stop]  # the marker, one token a step, then the end it wanted


def test_answer_before_end_only_takes_the_end_out_of_a_draw_before_the_marker(tokenizer):
    stop = tokenizer.convert_tokens_to_ids("<|im_end|>")
    forcing = AnswerBeforeEnd(tokenizer, frozenset({stop}))
    scores = torch.zeros(1, len(tokenizer))
    scores[0, 5], scores[0, stop] = 2.0, 1.0  # the end is possible (sampling), not the likeliest
    facts = torch.tensor([tokenizer.encode("Facts: Alex plays soccer.", add_special_tokens=False)])
    held = forcing(facts, scores.clone())
    assert held[0, stop] == float("-inf") and torch.equal(held[0, :stop], scores[0, :stop])
    answered = torch.tensor([tokenizer.encode("Facts: Alex plays soccer.\nAnswer: soccer", add_special_tokens=False)])
    assert torch.equal(forcing(answered, scores.clone()), scores)
    scores[0, stop] = 3.0  # after the answer line, ending is the model's own choice
    assert torch.equal(forcing(answered, scores.clone()), scores) and forcing.forced_from is None


class EndFrom:
    """Makes ending the likeliest token from the answer's `step`-th token on: a model that stops
    after its facts."""

    def __init__(self, step: int, stop_id: int) -> None:
        self.step, self.stop_id = step, stop_id

    def __call__(self, input_ids, scores):
        if input_ids.shape[-1] >= self.step:
            scores[:, self.stop_id] = scores.max() + 10.0
        return scores


@pytest.fixture(scope="module")
def pool() -> MemoryPool:
    from smem.memory.embedder import default_embedder

    pool = MemoryPool(embedder=default_embedder(), seed=0)
    pool.add_many(load_memories(ROOT / "memories" / "tutor.json"))
    return pool


def run(engine: StreamingEngine, **options) -> tuple[str, str, Done, list[str]]:
    """(thinking, answer, done, text the model read) of one greedy answer."""
    read: list[int] = []
    hook = engine.model.get_input_embeddings().register_forward_pre_hook(lambda m, a: read.extend(a[0].flatten().tolist()))
    try:
        events = list(engine.stream(MESSAGE, temperature=0.0, max_new_tokens=12, learn=False, **options))
    finally:
        hook.remove()
    thinking = "".join(e.text for e in events if isinstance(e, Thinking))
    answer = "".join(e.text for e in events if isinstance(e, Token))
    return thinking, answer, events[-1], engine.tokenizer.decode(read)


def test_engine_streams_facts_as_thinking_and_forces_the_answer_line(tiny_model, pool):
    model, tokenizer = tiny_model
    stop = tokenizer.convert_tokens_to_ids("<|im_end|>")
    engine = StreamingEngine(model, tokenizer, pool.copy(), swap="exact", swap_budget=None, reasoning=PromptedReasoning())
    thinking, answer, done, read = run(engine, logits_processor=[EndFrom(3, stop)])
    marker = tokenizer.encode(FORCED_MARKER, add_special_tokens=False)
    assert CHAT_INSTRUCTION in read  # the format request is in the prompt
    assert thinking and "Answer:" not in thinking and answer == ""  # three facts tokens, the marker, then the end
    assert done.stats.tokens == 3 + len(marker) and done.stats.stop_reason == "eos"
    assert done.stats.thinking_tokens == done.stats.tokens

    # enable_thinking=False answers directly: no format request, no forced line, no thinking
    thinking, answer, done, read = run(engine, logits_processor=[EndFrom(3, stop)], enable_thinking=False)
    assert CHAT_INSTRUCTION not in read and thinking == "" and answer and done.stats.tokens == 3


def test_the_decoding_profile_decides_who_reasons(tiny_model, pool):
    """The packaged 1.5B reasons by default, the 0.5B (whose F1 it costs) and Qwen3 (which
    thinks natively) do not; the profile travels on the model's generation_config."""
    assert profile_for("qwen2.5-coder-1.5b-instruct").prompted_reasoning
    assert not profile_for("qwen2.5-coder-0.5b-instruct").prompted_reasoning
    assert not profile_for("Qwen/Qwen3-8B").prompted_reasoning
    model, tokenizer = build_tiny(seed=0)
    assert StreamingEngine(model, tokenizer, pool.copy()).reasoning is None
    apply_profile(model, PROFILES["qwen2.5-coder-1.5b-instruct"])
    assert StreamingEngine(model, tokenizer, pool.copy()).reasoning == PromptedReasoning()


def test_every_answer_is_anchored_unless_asked_otherwise(tiny_model, pool):
    """The memories an answer starts with stay to its end, and re-retrievals add up to
    `ANCHORED_EXTRA_MEMORIES` more, with or without the reasoning phase (docs/benchmarks.md,
    "Anchored by default"); an explicit 0 lets the same answer's re-retrievals replace them."""
    model, tokenizer = tiny_model
    engine = StreamingEngine(model, tokenizer, pool.copy(), swap="exact", swap_budget=None, reasoning=PromptedReasoning())
    options = dict(update_every_n=1, max_memories=2, max_new_tokens=24, temperature=0.0, learn=False)

    def contexts(**extra) -> list[set[str]]:
        events = engine.stream("Alex dropped a minus sign again, what now?", **options, **extra)
        return [{hit.id for hit in e.memories} for e in events if isinstance(e, (Memories, MemoryUpdate))]

    for anchored in (contexts(), contexts(enable_thinking=False)):
        assert len(anchored) > 1 and all(anchored[0] <= later for later in anchored[1:])
        assert max(map(len, anchored)) <= 2 + ANCHORED_EXTRA_MEMORIES
    replaced = contexts(enable_thinking=False, extra_memories=0)
    assert any(not replaced[0] <= later for later in replaced[1:])


class Scripted:
    """Writes `text` a token a step, then ends; records the ids each call was shown."""

    def __init__(self, tokenizer, text: str, stop_id: int) -> None:
        self.tokens = tokenizer.encode(text, add_special_tokens=False) + [stop_id]
        self.seen: list[list[int]] = []

    def __call__(self, input_ids, scores):
        self.seen.append(input_ids[0].tolist())
        forced = torch.full_like(scores, float("-inf"))
        forced[:, self.tokens[min(len(self.seen) - 1, len(self.tokens) - 1)]] = 0.0
        return forced


def test_repetition_controls_see_the_answer_apart_from_its_facts(tiny_model, pool):
    """After "Answer:", the decoding's processors are shown the answer's ids only: the facts
    are notes the answer should be free to use, not a text it must not repeat."""
    model, tokenizer = tiny_model
    stop = tokenizer.convert_tokens_to_ids("<|im_end|>")
    engine = StreamingEngine(model, tokenizer, pool.copy(), swap="exact", swap_budget=None, reasoning=PromptedReasoning())
    script = Scripted(tokenizer, "Facts: Alex likes soccer.\nAnswer: soccer drills", stop)
    events = list(engine.stream(MESSAGE, temperature=0.0, max_new_tokens=40, learn=False, logits_processor=[script]))
    answer = "".join(e.text for e in events if isinstance(e, Token))
    assert answer == "soccer drills"
    written = script.tokens[:-1]
    start = len(tokenizer.encode("Facts: Alex likes soccer.\nAnswer:", add_special_tokens=False))
    assert tokenizer.decode(written[start:]).strip() == "soccer drills"
    assert script.seen[: start + 1] == [written[:i] for i in range(start + 1)]  # the facts and the marker: everything
    assert script.seen[-1] == written[start:]  # the answer's turn to end: its own ids only


class Seen:
    def __init__(self) -> None:
        self.ids: list[list[int]] = []

    def __call__(self, input_ids, scores):
        self.ids.append(input_ids[0].tolist())
        return scores


def test_the_minimum_length_and_the_forced_line_see_the_whole_answer(tokenizer):
    """The segment view is for the repetition controls only: the minimum length counts every
    token, and the forced answer line keeps positions in the whole answer (shown only the
    answer, it lost the marker it had read and indexed past its own)."""
    stop = tokenizer.convert_tokens_to_ids("<|im_end|>")
    segment_view, whole_view = Seen(), Seen()
    pick = TokenPicker(temperature=0.0, top_p=1.0, min_new_tokens=5, stop_ids={stop}, seed=0, device=torch.device("cpu"),
                       processors=[segment_view], whole_processors=[whole_view])
    logits = torch.zeros(len(tokenizer))
    logits[stop] = 1.0
    assert pick([7, 8, 9, 10], logits.clone(), segment=3) != stop  # 4 of 5 written, though the segment holds 1
    assert pick([7, 8, 9, 10, 11], logits.clone(), segment=3) == stop
    assert segment_view.ids == [[10], [10, 11]] and whole_view.ids == [[7, 8, 9, 10], [7, 8, 9, 10, 11]]
