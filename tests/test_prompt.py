"""Prompt layout: prefix | memory block | assistant header, cut from the model's own template."""

from __future__ import annotations

import os
from datetime import datetime, timezone

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest

from smem.generation import tiny
from smem.memory.records import Hit, Memory
from smem.generation.prompt import (
    MEMORY_INSTRUCTION,
    MEMORY_LABEL,
    MemoryLineTokens,
    PromptBuilder,
    clean_reply,
    memory_line,
    memory_text,
    normalize_history,
)

HISTORY = [
    {"role": "user", "content": "Hi, I'm planning Alex's next session."},
    {"role": "assistant", "content": "<think>\nThey tutor Alex.\n</think>\n\nGreat, what is the topic?"},
]
MESSAGE = "Negative numbers — he keeps dropping minus signs 😅"


def hit(n: int, content: str, type_: str | None = "what_works", subject: str | None = "algebra") -> Hit:
    memory = Memory(
        id=f"m{n}",
        content=content,
        type=type_,
        subject=subject,
        emotional_intensity=0.5,
        created_at=datetime(2025, 1, 1, tzinfo=timezone.utc),
        tokens=len(content.split()),
    )
    return Hit(memory=memory, score=0.5, similarity=0.7, multiplier=1.2, rank=n)


MEMORIES = [hit(1, "Color-coding negative signs in red helped."), hit(2, "He loves soccer examples.", "pattern", None)]


@pytest.fixture(scope="module")
def tokenizer():
    return tiny.build_tokenizer()


def encode(tokenizer, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False)["input_ids"]


@pytest.mark.parametrize("thinking", [True, False])
def test_parts_concatenate_to_the_template_rendering(tokenizer, thinking):
    builder = PromptBuilder(
        tokenizer, MESSAGE, HISTORY, system_prompt="You are a tutor's assistant.", enable_thinking=thinking
    )
    assert builder.late_system
    messages = [
        {"role": "system", "content": "You are a tutor's assistant."},
        *HISTORY,
        {"role": "user", "content": MESSAGE},
        {"role": "system", "content": memory_text(MEMORIES)},
    ]
    rendered = tokenizer.apply_chat_template(
        messages, tokenize=False, add_generation_prompt=True, enable_thinking=thinking
    )
    prompt = builder.build(MEMORIES)
    assert prompt.ids == encode(tokenizer, rendered)
    assert tokenizer.decode(prompt.prefix).endswith(MESSAGE + "<|im_end|>\n")
    assert tokenizer.decode(prompt.memory) == f"<|im_start|>system\n{memory_text(MEMORIES)}<|im_end|>\n"
    # Past thinking is dropped by the template, as Qwen3's does.
    assert "They tutor Alex" not in tokenizer.decode(prompt.prefix)


def test_prefix_and_header_do_not_depend_on_the_memories(tokenizer):
    builder = PromptBuilder(tokenizer, MESSAGE, HISTORY)
    one, other, none = builder.build(MEMORIES), builder.build(MEMORIES[:1]), builder.build([])
    assert one.prefix == other.prefix == none.prefix
    assert one.header == other.header == none.header
    assert one.memory != other.memory and none.memory == []
    plain = tokenizer.apply_chat_template(
        [{"role": "system", "content": builder._base[0]["content"]}, *HISTORY, {"role": "user", "content": MESSAGE}],
        tokenize=False,
        add_generation_prompt=True,
    )
    assert none.ids == encode(tokenizer, plain)


def test_a_template_without_late_system_messages_gets_the_block_in_the_user_turn(tokenizer):
    strict = (
        "{%- for m in messages %}"
        "{%- if m.role == 'system' and not loop.first %}"
        "{{ raise_exception('system message must come first') }}"
        "{%- endif %}"
        "{{- '<|im_start|>' + m.role + '\\n' + m.content + '<|im_end|>\\n' }}"
        "{%- endfor %}"
        "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
    )
    tokenizer = tiny.build_tokenizer()
    tokenizer.chat_template = strict
    builder = PromptBuilder(tokenizer, MESSAGE, HISTORY)
    assert not builder.late_system
    prompt = builder.build(MEMORIES)
    assert tokenizer.decode(prompt.prefix).endswith(MESSAGE)
    assert tokenizer.decode(prompt.ids).endswith(
        f"{MESSAGE}\n\n{memory_text(MEMORIES)}<|im_end|>\n<|im_start|>assistant\n"
    )
    assert builder.build([]).prefix == prompt.prefix


def test_history_formats():
    pairs = [("hello", "hi there"), ("second", None)]
    assert normalize_history(pairs) == [
        {"role": "user", "content": "hello"},
        {"role": "assistant", "content": "hi there"},
        {"role": "user", "content": "second"},
    ]
    assert normalize_history(None) == []
    with pytest.raises(ValueError, match="unknown role"):
        normalize_history([{"role": "tool", "content": "x"}])


def test_memory_lines_and_token_costs(tokenizer):
    assert memory_line(MEMORIES[0]) == "- 1 January 2025: Color-coding negative signs in red helped."
    undated = Memory(id="u", content="Bare note.", type=None, subject=None, emotional_intensity=0.5, created_at=None, tokens=2)
    assert memory_line(undated) == "- Bare note."
    # A short label, dated notes, and the instruction after them.
    assert memory_text(MEMORIES) == (
        f"{MEMORY_LABEL}\n- 1 January 2025: Color-coding negative signs in red helped.\n"
        f"- 1 January 2025: He loves soccer examples.\n\n{MEMORY_INSTRUCTION}"
    )
    builder = PromptBuilder(tokenizer, MESSAGE)
    costs = MemoryLineTokens(tokenizer)(MEMORIES)
    block = len(builder.memory_block(MEMORIES))
    assert abs(builder.block_overhead() + sum(costs) - block) <= 2


ECHOED = (
    "Memories relevant to this conversation (they update as you answer; use them where they help):\n"
    "- [what_works, algebra] Color-coding negative signs in red helped.\n"
    "- 1 January 2025: He loves soccer examples.\n"
    "\n"
    "Try red ink for the minus signs.\n"
    "- Then a soccer word problem."
)


def test_echoed_headings_and_notes_are_cleaned_from_past_answers(tokenizer):
    assert clean_reply(ECHOED) == "Try red ink for the minus signs.\n- Then a soccer word problem."
    assert clean_reply(memory_text(MEMORIES)) == ""
    assert clean_reply("- 1 January 2025: a note\nThe answer.") == "The answer."
    assert clean_reply("Plain answer.\n- a list item") == "Plain answer.\n- a list item"
    # Thinking is left for the template to drop; the answer after it is cleaned.
    assert clean_reply("<think>\nhm\n</think>\n\n" + ECHOED).endswith("\n\nTry red ink for the minus signs.\n- Then a soccer word problem.")
    history = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": ECHOED}]
    assert normalize_history(history)[1]["content"] == clean_reply(ECHOED)
    assert normalize_history([("hi", ECHOED)])[1]["content"] == clean_reply(ECHOED)
    prefix = tokenizer.decode(PromptBuilder(tokenizer, MESSAGE, history).prefix)
    assert "Memories relevant" not in prefix and "soccer examples" not in prefix
    assert "Try red ink" in prefix
