"""The prompt layout and the thinking split under Qwen3's real chat template.

The tiny tokenizer carries Qwen's special tokens; here its chat_template is replaced by Qwen3's
own (shared/data/qwen3-chat-template.jinja, beside the repository), so the split the engine
relies on is checked against the template the Space runs, not a hand-made copy.
"""

from __future__ import annotations

import os
from datetime import datetime, timezone
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest
import torch

from conftest import build_tiny
from smem import MemoryPool, load_memories
from smem.generation import sampling, tiny
from smem.generation.engine import StreamingEngine
from smem.generation.events import Memories, MemoryUpdate, Thinking, Token
from smem.generation.prompt import MEMORY_INSTRUCTION, MEMORY_LABEL, PromptBuilder, memory_text
from smem.memory.embedder import default_embedder
from smem.memory.records import Hit, Memory

ROOT = Path(__file__).resolve().parents[1]
TEMPLATE = ROOT.parent / "shared" / "data" / "qwen3-chat-template.jinja"

SYSTEM = "You are a tutor's assistant."
HISTORY = [
    {"role": "user", "content": "Hi, I'm planning Alex's next session."},
    {"role": "assistant", "content": "<think>\nThey tutor Alex.\n</think>\n\nGreat, what is the topic?"},
]
MESSAGE = "Negative numbers: he keeps dropping minus signs."


def note(n: int, content: str) -> Hit:
    memory = Memory(
        id=f"m{n}",
        content=content,
        type=None,
        subject=None,
        emotional_intensity=0.5,
        created_at=datetime(2025, 9, n, tzinfo=timezone.utc),
        tokens=len(content.split()),
    )
    return Hit(memory=memory, score=0.5, similarity=0.7, multiplier=1.0, rank=n)


NOTES = [note(1, "Color-coding negative signs in red helped."), note(2, "He loves soccer examples.")]


@pytest.fixture(scope="module")
def tokenizer():
    if not TEMPLATE.is_file():
        pytest.skip(f"Qwen3's chat template is not at {TEMPLATE}")
    tokenizer = tiny.build_tokenizer()
    tokenizer.chat_template = TEMPLATE.read_text(encoding="utf-8")
    return tokenizer


def encode(tokenizer, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False)["input_ids"]


@pytest.mark.parametrize("thinking", [True, False])
def test_the_split_reassembles_the_real_rendering(tokenizer, thinking):
    builder = PromptBuilder(tokenizer, MESSAGE, HISTORY, system_prompt=SYSTEM, enable_thinking=thinking)
    assert builder.late_system  # Qwen3 renders a system message after the user turn in place
    rendered = tokenizer.apply_chat_template(
        [
            {"role": "system", "content": SYSTEM},
            *HISTORY,
            {"role": "user", "content": MESSAGE},
            {"role": "system", "content": memory_text(NOTES)},
        ],
        tokenize=False,
        add_generation_prompt=True,
        enable_thinking=thinking,
    )
    prompt = builder.build(NOTES)
    assert prompt.ids == encode(tokenizer, rendered)
    prefix, block, header = (tokenizer.decode(part) for part in (prompt.prefix, prompt.memory, prompt.header))
    assert prefix.startswith(f"<|im_start|>system\n{SYSTEM}<|im_end|>\n")
    assert prefix.endswith(f"<|im_start|>user\n{MESSAGE}<|im_end|>\n")
    assert "They tutor Alex" not in prefix  # past thinking is dropped by Qwen3's template
    # A short label, dated notes, the instruction last, right before the assistant header.
    assert block == (
        f"<|im_start|>system\n{MEMORY_LABEL}\n"
        "- 1 September 2025: Color-coding negative signs in red helped.\n"
        "- 2 September 2025: He loves soccer examples.\n\n"
        f"{MEMORY_INSTRUCTION}<|im_end|>\n"
    )
    assert header == ("<|im_start|>assistant\n" if thinking else "<|im_start|>assistant\n<think>\n\n</think>\n\n")
    # The prefix and header do not move when the memories do: swaps only re-read the block.
    other = builder.build(NOTES[:1])
    assert (other.prefix, other.header) == (prompt.prefix, prompt.header)
    assert builder.build([]).ids == encode(
        tokenizer,
        tokenizer.apply_chat_template(
            [{"role": "system", "content": SYSTEM}, *HISTORY, {"role": "user", "content": MESSAGE}],
            tokenize=False,
            add_generation_prompt=True,
            enable_thinking=thinking,
        ),
    )


class Reading(torch.nn.Module):
    """The tiny model (a real cache), recording the token sequence it has read."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.inner = model
        self.config = model.config
        self.generation_config = model.generation_config
        self.read: list[int] = []

    def forward(self, input_ids, past_key_values=None, **kwargs):
        self.read = self.read[: past_key_values.get_seq_length()] + input_ids[0].tolist()
        return self.inner(input_ids=input_ids, past_key_values=past_key_values, **kwargs)


def test_thinking_is_split_and_re_retrieval_swaps_inside_it(tokenizer, monkeypatch):
    """Qwen3 on the Space thinks first; re-retrieval during the thinking must keep the real
    template's prompt intact and the thinking/answer split right."""
    model, _ = build_tiny(seed=0)
    pool = MemoryPool(embedder=default_embedder(), seed=0)
    pool.add_many(load_memories(ROOT / "memories" / "tutor.json")[:24])  # enough to swap, quick to embed
    think, end_think, im_end = tokenizer.convert_tokens_to_ids(["<think>", "</think>", "<|im_end|>"])
    thought = (
        "\nHe panics on timed quizzes and his mom Carmen worries about his confidence; "
        "maybe soccer word problems and fractions warm-ups help.\n"
    )
    script = [think, *encode(tokenizer, thought), end_think, *encode(tokenizer, "\n\nStart with a soccer problem."), im_end]
    # The engine writes the script: its token picker is told the next token.
    monkeypatch.setattr(sampling.TokenPicker, "__call__", lambda self, generated, logits, segment=0: script[len(generated)])
    scripted = Reading(model)
    engine = StreamingEngine(scripted, tokenizer, pool, swap_budget=None)
    events = list(
        engine.stream(
            MESSAGE, HISTORY, update_every_n=2, lookback_tokens=8, max_new_tokens=200, temperature=0.0,
            incumbent_margin=0.0, swap="exact",
        )
    )
    thinking = "".join(e.text for e in events if isinstance(e, Thinking))
    answer = "".join(e.text for e in events if isinstance(e, Token))
    assert thinking == thought.strip()
    assert answer == "Start with a soccer problem."
    updates = [e for e in events if isinstance(e, MemoryUpdate)]
    assert updates and updates[0].at_token < len(encode(tokenizer, thought))  # a swap while thinking
    # What the model had read at the end is the real template's prompt with the final notes,
    # then everything generated, the thinking included.
    final = updates[-1].memories
    builder = PromptBuilder(tokenizer, MESSAGE, HISTORY, enable_thinking=True)
    assert scripted.read == [*builder.build(final).ids, *script[:-1]]
    first = next(e for e in events if isinstance(e, Memories)).memories
    assert {h.id for h in first} != {h.id for h in final}
