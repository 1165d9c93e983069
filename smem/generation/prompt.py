"""The chat prompt, split so that memory swaps never touch the conversation's KV cache.

The memory block goes late: a system message after the latest user turn, just before the
assistant header. Everything before it (system prompt, history, user message) is the *prefix*
and keeps its cache across swaps; a swap re-reads only memory block + header + generated text.
Qwen2.5's and Qwen3's templates render a non-first system message in place. For a template
that refuses one (or mangles it), the block is appended to the user turn instead, which keeps
the same split.

The template is rendered once with a sentinel in place of the memory text and cut at the
sentinel, so the model's own template decides every byte and a swap only tokenises the new
block.

What the block says is shaped by what small models do with it (tried on the packaged 0.5B,
greedy, on the example prompts). The old long heading ("Memories relevant to this conversation
(they update as you answer; use them where they help):") was the first thing it wrote back in 3
of 5 answers, then the list with its "[type, subject]" tags. A block of bare notes followed by
the instruction made it list the notes back, or thank the user for their "suggestions". What
worked: a plain label (no heading), the memories as dated notes (dates answer "when"
questions), and the instruction last, right before the assistant header, telling it not to
repeat them.
The label then was "Notes from earlier conversations:", and on LoCoMo questions the model opened
2 of 30 answers by copying it and listing the notes under it (issue 10's answer benchmark; broad
questions such as "What are Joanna's hobbies?"). Three labels were tried on those 30 questions
(rag, greedy) and on the app's ten example prompts (the example-prompt test): "Earlier
conversations (dated):" (F1 0.252, no copy, but one example answer repeated a sentence),
"From earlier conversations (dated):" (0.212, clean) and the one kept, a sentence that names
whose memories these are (0.230, clean; the old label scored 0.213 with 2 copies).
Assistant turns in the history are cleaned of echoed notes and instructions before they
re-enter the prompt, since a model copies its own earlier echoes.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Mapping, Optional, Sequence, Union

from smem.memory.records import Hit, Memory

DEFAULT_SYSTEM_PROMPT = (
    "You are a helpful assistant who knows the user from earlier conversations. "
    "Answer the user's message directly and concretely, in your own words."
)
MEMORY_LABEL = "What you remember from earlier conversations with the user:"
MEMORY_INSTRUCTION = (
    "Answer the user's message above. Use the notes only where they are relevant; do not list or repeat them."
)
FIXED_TEXTS = (DEFAULT_SYSTEM_PROMPT, MEMORY_LABEL, MEMORY_INSTRUCTION)
"""The prompt's own wording: an answer that copies it is degenerate (`smem.generation.degenerate`)."""
# The first 40 characters of a sentence (chosen) identify it; a model echoing it rarely copies more exactly.
_ECHO_PREFIXES = (
    MEMORY_LABEL,
    MEMORY_INSTRUCTION[:40],
    DEFAULT_SYSTEM_PROMPT[:40],
    "Notes from earlier conversations:",  # the labels of earlier versions, still in old chats
    "Memories relevant to this conversation",
)
_NOTE_LINE = re.compile(r"^\s*-\s+(\[[^\]]*\]\s*|\d{1,2} [A-Z][a-z]+ \d{4}:\s*)")
"""An echoed note: "- 2 June 2025: ..." (this layout) or "- [type, subject] ..." (the old one)."""
_SENTINEL = "\u2063SMEM-MEMORY-BLOCK\u2063"

HistoryItem = Union[Mapping[str, Any], Sequence[str]]


@dataclass(frozen=True)
class Prompt:
    """Token ids in three parts; `ids` is what the model reads."""

    prefix: list[int]
    memory: list[int]
    header: list[int]

    @property
    def ids(self) -> list[int]:
        return [*self.prefix, *self.memory, *self.header]


def normalize_history(history: Optional[Sequence[HistoryItem]]) -> list[dict[str, str]]:
    """Accept role/content dicts (OpenAI, Gradio "messages") or (user, assistant) pairs;
    assistant turns come back cleaned of echoed prompt text (`clean_reply`)."""
    messages: list[dict[str, str]] = []
    for item in history or ():
        if isinstance(item, Mapping):
            role = str(item.get("role", ""))
            if role not in ("user", "assistant", "system"):
                raise ValueError(f"history message has unknown role {role!r}")
            content = str(item.get("content") or "")
            messages.append({"role": role, "content": clean_reply(content) if role == "assistant" else content})
        else:
            user, assistant = item
            if user:
                messages.append({"role": "user", "content": str(user)})
            if assistant:
                messages.append({"role": "assistant", "content": clean_reply(str(assistant))})
    return messages


def memory_line(memory: Union[Hit, Memory]) -> str:
    """One memory as a dated note. Type and subject tags are left out: bracketed labels were
    copied into answers verbatim, and the content already names its subject."""
    when = (memory.memory if isinstance(memory, Hit) else memory).created_at
    date = f"{when.day} {when:%B %Y}: " if when is not None else ""
    return f"- {date}{memory.content}"


def memory_text(memories: Sequence[Union[Hit, Memory]]) -> str:
    return "\n".join([MEMORY_LABEL, *(memory_line(m) for m in memories), "", MEMORY_INSTRUCTION])


def clean_reply(text: str) -> str:
    """An earlier assistant answer without the notes and instructions it echoed from its prompt.

    Only whole lines go: a line that starts like one of the prompt's instructions or headings,
    and note-shaped lines ("- 2 June 2025: ...") in a run that follows such a line or opens the
    answer. An answer that was nothing but echo becomes empty. Thinking (before `</think>`) is
    left to the chat template, which drops it from past turns.
    """
    thinking, end, answer = text.rpartition("</think>")
    if end:
        return f"{thinking}{end}\n\n{clean_reply(answer)}"
    kept: list[str] = []
    echoing = True
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith(_ECHO_PREFIXES):
            echoing = True
            continue
        if echoing and (_NOTE_LINE.match(line) or not stripped):
            continue
        echoing = False
        kept.append(line)
    return "\n".join(kept).strip()


_PROBE = Memory(
    id="probe",
    content="Probe note: 12 ½ apples 🍎",
    type="insight",
    subject="probe",
    emotional_intensity=0.5,
    created_at=datetime(2000, 1, 1, tzinfo=timezone.utc),
    tokens=0,
)


class MemoryLineTokens:
    """What each memory costs in the prompt: its `memory_line` (date included) and line break,
    in the generating model's tokens. A pool keeps these counts (`MemoryPool.count_tokens_with`),
    so token budgets and context sizes cost nothing per memory at answer time.

    `key` identifies the tokenizer and the rendering (a probe memory rendered and tokenised),
    so counts follow automatically when either changes and are reused when neither does.
    """

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer
        probe = memory_line(_PROBE)
        ids = self._encode([probe])[0]
        fingerprint = repr((type(tokenizer).__name__, getattr(tokenizer, "name_or_path", ""), len(tokenizer), probe, ids))
        self.key = "memory-line:" + hashlib.blake2b(fingerprint.encode(), digest_size=8).hexdigest()

    def _encode(self, lines: list[str]) -> list[list[int]]:
        return self.tokenizer([line + "\n" for line in lines], add_special_tokens=False)["input_ids"]

    def __call__(self, memories: Sequence[Union[Hit, Memory]]) -> list[int]:
        if not memories:
            return []
        return [len(ids) for ids in self._encode([memory_line(m) for m in memories])]


class PromptBuilder:
    """Renders one turn's prompt and re-renders its memory block on every swap."""

    def __init__(
        self,
        tokenizer: Any,
        message: str,
        history: Optional[Sequence[HistoryItem]] = None,
        *,
        system_prompt: Optional[str] = DEFAULT_SYSTEM_PROMPT,
        enable_thinking: bool = True,
    ) -> None:
        self.tokenizer = tokenizer
        self.enable_thinking = enable_thinking
        base = normalize_history(history)
        if system_prompt and not (base and base[0]["role"] == "system"):
            base.insert(0, {"role": "system", "content": system_prompt})
        self._base = [*base, {"role": "user", "content": message}]
        late = self._split_late_system()
        self.late_system = late is not None
        prefix_text, self._block_before, self._block_after, header_text = late or self._split_user_suffix()
        self.prefix = self.encode(prefix_text)
        self.header = self.encode(header_text)
        self._overhead: Optional[int] = None

    def _render(self, messages: list[dict[str, str]], generation_prompt: bool) -> str:
        return self.tokenizer.apply_chat_template(
            messages,
            tokenize=False,
            add_generation_prompt=generation_prompt,
            enable_thinking=self.enable_thinking,
        )

    def _split_late_system(self) -> Optional[tuple[str, str, str, str]]:
        """Memory as a system message after the user turn, if the template renders it verbatim
        and leaves everything around it unchanged."""
        memory = [*self._base, {"role": "system", "content": _SENTINEL}]
        try:
            before = self._render(self._base, generation_prompt=False)
            plain = self._render(self._base, generation_prompt=True)
            with_memory = self._render(memory, generation_prompt=False)
            full = self._render(memory, generation_prompt=True)
        except Exception:  # jinja raises its own errors for "roles must alternate" and the like
            return None
        if not (with_memory.startswith(before) and full.startswith(with_memory) and plain.startswith(before)):
            return None
        block = with_memory[len(before) :]
        header = full[len(with_memory) :]
        if block.count(_SENTINEL) != 1 or plain[len(before) :] != header:
            return None
        block_before, block_after = block.split(_SENTINEL)
        return before, block_before, block_after, header

    def _split_user_suffix(self) -> tuple[str, str, str, str]:
        """Fallback: memory text appended to the user's message, cut at the message's end."""
        messages = [*self._base[:-1], {"role": "user", "content": self._base[-1]["content"] + _SENTINEL}]
        full = self._render(messages, generation_prompt=True)
        if full.count(_SENTINEL) != 1:
            raise ValueError("the chat template does not render message content verbatim; cannot place memories")
        prefix, header = full.split(_SENTINEL)
        return prefix, "\n\n", "", header

    def encode(self, text: str) -> list[int]:
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def memory_block(self, memories: Sequence[Union[Hit, Memory]]) -> list[int]:
        """Token ids of the block holding `memories`; no memories, no block."""
        if not memories:
            return []
        return self.encode(self._block_before + memory_text(memories) + self._block_after)

    def build(self, memories: Sequence[Union[Hit, Memory]]) -> Prompt:
        return Prompt(prefix=self.prefix, memory=self.memory_block(memories), header=self.header)

    def block_frame(self) -> tuple[list[int], list[int]]:
        """The fixed tokens around the memory lines, (head with the label, tail with the
        instruction), for a block edited line by line (`smem.generation.swap`)."""
        return (
            self.encode(self._block_before + MEMORY_LABEL + "\n"),
            self.encode("\n" + MEMORY_INSTRUCTION + self._block_after),
        )

    def line_ids(self, memory: Union[Hit, Memory]) -> list[int]:
        """One memory line with its newline, tokenised alone, for a block edited line by line
        (`smem.generation.swap`): the block is then head + lines + tail, token for token."""
        return self.encode(memory_line(memory) + "\n")

    def slot_line(self, memory: Union[Hit, Memory], length: int) -> list[int]:
        """A memory line's ids trimmed to `length` (keeping its closing newline) for a slot."""
        ids = self.line_ids(memory)
        return ids if len(ids) <= length else [*ids[: length - 1], ids[-1]]

    def block_overhead(self) -> int:
        """Tokens a non-empty block costs beyond its memory lines (wrapper, label, instruction)."""
        if self._overhead is None:
            self._overhead = len(self.encode(self._block_before + memory_text([]) + "\n" + self._block_after))
        return self._overhead
