"""One answer as a visitor sees it: the engine's event stream reduced into view state.

The UI must not redraw everything on every token, so `AnswerView.apply` reports which parts
of the view an event changed (the chat text, the memory set, the context numbers, the end),
and the front end re-sends only those. After the answer ends the view keeps enough history
(the memory set of every stretch of tokens, and text positions at known token indices) to
answer "which memories were in context at token t?" for the timeline.

Nothing here imports Gradio: the app, tests and notebooks share it.
"""

from __future__ import annotations

import bisect
import itertools
import re
import textwrap
import time
from dataclasses import dataclass, field
from enum import Flag, auto
from typing import Any, Mapping, Optional, Sequence

from smem.generation.events import ContextStats, Done, DoneStats, Event, Memories, MemoryUpdate, Thinking, Token
from smem.memory.records import Hit
from smem.memory.wording import counted

THINKING_TITLE = "💭 Thinking"
SWAP_TITLE = "🔄 Memories swapped at token {at_token}"
SWAPS_TITLE = "🔄 Memories swapped at tokens {at_tokens}"
"""One block for the swaps of one sentence (the title begins as `SWAP_TITLE` does)."""

RETRIEVING, THINKING, ANSWERING, STOPPED, DONE = "retrieving", "thinking", "answering", "stopped", "done"
PHASE_ICONS = {RETRIEVING: "🔎", THINKING: "💭", ANSWERING: "✍️", STOPPED: "⏹", DONE: "✅"}

ADDED, KEPT, REMOVED = "added", "kept", "removed"


class Changed(Flag):
    """Which parts of the view an event touched."""

    NOTHING = 0
    CHAT = auto()
    MEMORIES = auto()
    CONTEXT = auto()
    DONE = auto()


@dataclass(frozen=True)
class Segment:
    """From generated token `start` on (until the next segment), `hits` were in context."""

    start: int
    hits: tuple[Hit, ...]
    exact: Optional[bool] = None
    """How the swap that began it edited the cache: exact re-read, or an approximate splice or
    slot rewrite (None: the first set)."""

    @property
    def ids(self) -> tuple[str, ...]:
        return tuple(hit.id for hit in self.hits)


@dataclass(frozen=True)
class MemoryRow:
    """A line of the "memories in context" table."""

    hit: Hit
    status: str
    entered_at: int


@dataclass(frozen=True)
class Interval:
    """A stretch of tokens `[start, end)` during which one memory stayed in context."""

    hit: Hit
    start: int
    end: int


@dataclass(frozen=True)
class Swap:
    """One change of the memory set while the answer was written, and where in the text it
    happened (so the chat can show it inline, between the words written before and after)."""

    at_token: int
    added: tuple[Hit, ...]
    removed: tuple[Hit, ...]
    answer_chars: int


@dataclass
class AnswerView:
    """Reducer state of one streamed answer; feed it events with `apply`."""

    thinking: str = ""
    answer: str = ""
    current: tuple[Hit, ...] = ()
    just_added: frozenset[str] = frozenset()
    just_removed: tuple[Hit, ...] = ()
    entered: dict[str, int] = field(default_factory=dict)
    segments: list[Segment] = field(default_factory=list)
    context: list[ContextStats] = field(default_factory=list)
    anchors: list[tuple[int, int]] = field(default_factory=list)
    """(generated tokens, characters of thinking + answer) at moments both are known."""
    generated: int = 0
    text_events: int = 0
    """Thinking and answer pieces received: the engine sends one per decoded token (pieces it
    holds back while a multi-byte character completes are the exception), so this is the
    live token count between the exact figures that swaps and context reports carry."""
    swaps: list[Swap] = field(default_factory=list)
    started: Optional[float] = None
    stopped: bool = False
    """The visitor pressed Stop (the engine may not have said so yet)."""
    done: Optional[DoneStats] = None
    learned: Any = None

    def apply(self, event: Event, now: Optional[float] = None) -> Changed:
        if self.started is None:
            self.started = time.monotonic() if now is None else now
        if isinstance(event, Token):
            self.answer += event.text
            self.text_events += 1
            return Changed.CHAT
        if isinstance(event, Thinking):
            self.thinking += event.text
            self.text_events += 1
            return Changed.CHAT
        if isinstance(event, MemoryUpdate):
            self._anchor(event.at_token)
            self._set_memories(event.memories, event.at_token, removed=event.removed, exact=event.exact)
            self.swaps.append(Swap(event.at_token, tuple(event.added), tuple(event.removed), len(self.answer)))
            return Changed.MEMORIES | Changed.CHAT
        if isinstance(event, ContextStats):
            self.context.append(event)
            self._anchor(event.generated_tokens)
            return Changed.CONTEXT
        if isinstance(event, Memories):
            self._set_memories(event.memories, 0, removed=())
            return Changed.MEMORIES
        if isinstance(event, Done):
            self.done = event.stats
            self.learned = event.learned
            self.stopped = self.stopped or event.stats.stop_reason == "cancelled"
            self._anchor(event.stats.tokens)
            return Changed.DONE | Changed.CHAT
        raise TypeError(f"unknown event {type(event).__name__}")

    def stop(self) -> None:
        """The visitor pressed Stop: the answer ends where it is, whether or not the engine
        gets to report it (on ZeroGPU its stream is simply closed)."""
        self.stopped = True

    # -- the status line ---------------------------------------------------------------------

    @property
    def phase(self) -> str:
        if self.stopped:
            return STOPPED
        if self.finished:
            return DONE
        if self.answer.strip():
            return ANSWERING
        if self.thinking:
            return THINKING
        return RETRIEVING

    @property
    def tokens(self) -> int:
        return self.done.tokens if self.done else max(self.generated, self.text_events)

    def status_line(self, now: Optional[float] = None) -> str:
        """What is happening and how fast: the phase, tokens, swaps and tokens/s."""
        phase = self.phase
        if self.done:
            return f"{PHASE_ICONS[phase]} **{phase}** · {summary(self.done)}"
        parts = [f"{PHASE_ICONS[phase]} **{phase}**", counted(self.tokens, "token"), counted(len(self.swaps), "swap")]
        if self.started is not None and self.tokens:
            elapsed = (time.monotonic() if now is None else now) - self.started
            if elapsed > 0:
                parts.append(f"{self.tokens / elapsed:.1f} tokens/s")
        return " · ".join(parts)

    def _anchor(self, tokens: int) -> None:
        self.generated = max(self.generated, tokens)
        position = len(self.thinking) + len(self.answer)
        if self.anchors and self.anchors[-1][0] >= tokens:
            self.anchors[-1] = (self.anchors[-1][0], position)
        else:
            self.anchors.append((tokens, position))

    def _set_memories(
        self, hits: Sequence[Hit], at_token: int, removed: Sequence[Hit], exact: Optional[bool] = None
    ) -> None:
        before = {hit.id for hit in self.current}
        self.current = tuple(hits)
        self.just_added = frozenset(hit.id for hit in hits if hit.id not in before)
        self.just_removed = tuple(removed)
        for memory_id in self.just_added:
            self.entered[memory_id] = at_token
        self.segments.append(Segment(at_token, self.current, exact))

    def take_learned(self) -> Any:
        """The learned Hebbian state, handed over once: the view is kept for the timeline and
        need not hold a second copy of the pool's state."""
        learned, self.learned = self.learned, None
        return learned

    # -- what the panels show ----------------------------------------------------------------

    @property
    def finished(self) -> bool:
        return self.done is not None

    @property
    def current_ids(self) -> tuple[str, ...]:
        return tuple(hit.id for hit in self.current)

    def rows(self) -> list[MemoryRow]:
        """Memories in context now (added or kept), then the ones the last swap removed."""
        rows = [
            MemoryRow(hit, ADDED if hit.id in self.just_added else KEPT, self.entered.get(hit.id, 0))
            for hit in self.current
        ]
        rows += [MemoryRow(hit, REMOVED, self.entered.get(hit.id, 0)) for hit in self.just_removed]
        return rows

    def swap_tokens(self) -> list[int]:
        """Token indices where the memory set changed (the first set is not a swap)."""
        return [segment.start for segment in self.segments[1:]]

    def swap_marks(self) -> list[tuple[int, bool]]:
        """(token index, exact?) of every swap, for the timeline's marks."""
        return [(segment.start, bool(segment.exact)) for segment in self.segments[1:]]

    # -- the timeline ------------------------------------------------------------------------

    def segment_at(self, token: int) -> Optional[Segment]:
        """The memory set in context while token `token` (0-based) was generated.

        A swap at `at_token=n` happens after n tokens exist, so it governs token n onwards.
        """
        if not self.segments:
            return None
        starts = [segment.start for segment in self.segments]
        return self.segments[max(bisect.bisect_right(starts, token) - 1, 0)]

    def rows_at(self, token: int) -> list[MemoryRow]:
        """The table as it stood at token `token`: added there, or kept from before."""
        segment = self.segment_at(token)
        if segment is None:
            return []
        index = self.segments.index(segment)
        before = set(self.segments[index - 1].ids) if index else set()
        rows = []
        for hit in segment.hits:
            entered = self._entered_before(hit.id, index)
            rows.append(MemoryRow(hit, ADDED if hit.id not in before else KEPT, entered))
        return rows

    def _entered_before(self, memory_id: str, index: int) -> int:
        entered = self.segments[index].start
        for earlier in reversed(self.segments[:index]):
            if memory_id not in earlier.ids:
                break
            entered = earlier.start
        return entered

    def intervals(self) -> list[Interval]:
        """Each memory's unbroken stretches in context, memories in order of first appearance."""
        end_of_answer = max(self.generated, self.segments[-1].start if self.segments else 0)
        first_seen: dict[str, int] = {}
        open_since: dict[str, tuple[Hit, int]] = {}
        closed: list[Interval] = []
        for segment in self.segments:
            ids = set(segment.ids)
            for memory_id in [m for m in open_since if m not in ids]:
                hit, start = open_since.pop(memory_id)
                closed.append(Interval(hit, start, segment.start))
            for hit in segment.hits:
                first_seen.setdefault(hit.id, len(first_seen))
                open_since.setdefault(hit.id, (hit, segment.start))
        closed += [Interval(hit, start, end_of_answer) for hit, start in open_since.values()]
        return sorted(closed, key=lambda interval: (first_seen[interval.hit.id], interval.start))

    def together(self) -> dict[tuple[str, str], float]:
        """Share of the answer so far during which each pair of memories shared the context:
        the co-retrieval links this answer is forming (the engine learns them at the end)."""
        total = max(self.generated, 1)
        shares: dict[tuple[str, str], float] = {}
        for index, segment in enumerate(self.segments):
            end = self.segments[index + 1].start if index + 1 < len(self.segments) else self.generated
            span = max(end - segment.start, 0)
            ids = sorted(segment.ids)
            for a_index, a in enumerate(ids):
                for b in ids[a_index + 1 :]:
                    shares[(a, b)] = shares.get((a, b), 0.0) + span / total
        return shares

    def position_at(self, token: int) -> int:
        """Characters of thinking + answer written by token `token`, interpolated between the
        token indices where both are known (swaps and context reports)."""
        if not self.anchors:
            return 0
        tokens = [anchor[0] for anchor in self.anchors]
        index = bisect.bisect_right(tokens, token)
        if index == 0:
            first_tokens, first_chars = self.anchors[0]
            return round(first_chars * token / first_tokens) if first_tokens else 0
        if index == len(self.anchors):
            return self.anchors[-1][1]
        (t0, c0), (t1, c1) = self.anchors[index - 1], self.anchors[index]
        return round(c0 + (c1 - c0) * (token - t0) / (t1 - t0))

    # Excerpt and label widths (160, 70 characters) are presentation, chosen by eye like viz's.
    def live_excerpt(self, width: int = 160) -> str:
        """The last `width` characters written so far (thinking, then the answer)."""
        text = self.thinking + self.answer
        return ("…" if len(text) > width else "") + text[-width:]

    def excerpt_at(self, token: int, width: int = 160) -> str:
        """The last `width` characters written by token `token` (thinking, then the answer)."""
        text = self.thinking + self.answer
        end = self.position_at(token)
        start = max(end - width, 0)
        return ("…" if start else "") + text[start:end]


# -- the chat -----------------------------------------------------------------------------------


def message_text(content: Any) -> str:
    """Text of a chat message's content: a string, or Gradio 6's list of typed blocks."""
    if isinstance(content, str):
        return content
    if isinstance(content, Mapping):
        return str(content.get("text") or "") if content.get("type", "text") == "text" else ""
    if isinstance(content, Sequence):
        return "".join(message_text(part) for part in content)
    return ""


def model_history(chat: Optional[Sequence[Mapping[str, Any]]]) -> list[dict[str, str]]:
    """What the model should read of past turns: user and assistant text, without the
    collapsible thinking and swap messages (the chat template drops past reasoning anyway).
    An answer shown in pieces around its swaps is read as one message again."""
    history: list[dict[str, str]] = []
    for message in chat or ():
        metadata = message.get("metadata") or {}
        if metadata.get("title"):
            continue
        role = message.get("role")
        text = message_text(message.get("content"))
        if role not in ("user", "assistant") or not text.strip():
            continue
        if history and role == "assistant" and history[-1]["role"] == "assistant":
            history[-1]["content"] += text
        else:
            history.append({"role": role, "content": text})
    return [{"role": item["role"], "content": item["content"].strip()} for item in history]


_HEADING = re.compile(r"^(\s{0,3})(#{1,6})(?=\s|$)", re.MULTILINE)  # CommonMark §4.2 ATX headings


def inert_headings(text: str) -> str:
    """A partial answer whose lines start with `#` (the model echoing a heading of its prompt
    when stopped mid-way) is shown as text, not as a page-sized Markdown heading."""
    return _HEADING.sub(lambda match: match.group(1) + "\\" + match.group(2), text)


def _short(hits: Sequence[Hit], width: int = 70) -> str:
    return "; ".join(textwrap.shorten(hit.content, width=width, placeholder="…") for hit in hits) or "none"


def swap_message(swaps: Sequence[Swap]) -> dict[str, Any]:
    """A collapsed chat block for the swaps of one sentence: "swapped in …, out …, at token 37"."""
    if len(swaps) == 1:
        content = f"**in:** {_short(swaps[0].added)}\n\n**out:** {_short(swaps[0].removed)}"
        title = SWAP_TITLE.format(at_token=swaps[0].at_token)
    else:
        content = "\n\n".join(
            f"**token {swap.at_token}** · in: {_short(swap.added)} · out: {_short(swap.removed)}" for swap in swaps
        )
        title = SWAPS_TITLE.format(at_tokens=", ".join(str(swap.at_token) for swap in swaps))
    return {"role": "assistant", "content": content, "metadata": {"title": title, "status": "done"}}


def text_block(text: str) -> dict[str, str]:
    """Chat text (a question, or what the model wrote) as a typed content block, which
    Gradio's Chatbot keeps verbatim.

    A plain string goes through `inspect.cleandoc` on its way to the browser: the space that
    begins the piece after a swap block is dropped, and nested list lines lose their indent.
    The chat is sent back as the next turn's history, so the model then read its own answer
    with words glued together ("motivatedthroughout") and copied them into the next answer;
    a question with indented code lost its indent before the model read it."""
    return {"type": "text", "text": text}


def _answer_piece(view: AnswerView, text: str) -> list[dict[str, Any]]:
    if not text.strip():
        return []
    return [{"role": "assistant", "content": text_block(inert_headings(text) if view.stopped else text)}]


def chat_messages(chat: Optional[Sequence[Mapping[str, Any]]], view: AnswerView) -> list[dict[str, Any]]:
    """The chat as it should look now: past turns (ending with the question), then the answer
    so far: its thinking in a collapsible message, and the memory swaps as collapsed blocks
    where they happened, one block at the end of each sentence that had any. A block at every
    swap cut the default model's answers into pieces of 5 tokens (a re-retrieval every 5), too
    short to read in Chromium. A sentence still being written shows its block when it ends (or
    the answer does), so a frame only ever grows at its end: earlier messages keep their place,
    which the front end's streamed diffs rely on."""
    messages: list[dict[str, Any]] = [dict(item) for item in chat or ()]
    if view.thinking:
        status = "done" if view.answer or view.finished or view.stopped else "pending"
        messages.append(
            {
                "role": "assistant",
                "content": text_block(view.thinking),
                "metadata": {"title": THINKING_TITLE, "status": status},
            }
        )
    shown = 0
    ends = [_sentence_end(view.answer, swap.answer_chars) for swap in view.swaps]
    for end, group in itertools.groupby(zip(ends, view.swaps), key=lambda pair: pair[0]):
        if end is None:
            if not (view.finished or view.stopped):
                break  # its sentence is still being written: the block comes when it ends
            end = len(view.answer)
        end = max(shown, end)
        # The whitespace before a block stays with the words before it: dropped, the words on
        # either side were read back glued ("wordthen").
        if view.answer[shown:end].strip():
            messages += _answer_piece(view, view.answer[shown:end])
            shown = end
        messages.append(swap_message([swap for _, swap in group]))
    messages += _answer_piece(view, view.answer[shown:])
    return messages


SENTENCE_END = re.compile(r"(?<!\d)[.!?](?=\s)|\n")
"""A sentence or line ends: . ! or ? before whitespace (not a list number's "7. "), or a line break."""


def _sentence_end(text: str, at: int) -> Optional[int]:
    """Where the block of a swap at position `at` goes: after the end of its sentence (or at
    `at` if it is between sentences already) and the whitespace that follows, so the next piece
    begins with a word; None until such a word is written. A swap lands between two tokens,
    often inside a word ("Thursda|y"): its block never cuts one. A piece must not begin with
    whitespace: one that begins with a nested list line's indent is drawn as a code block."""
    before = text[:at].rstrip()
    if before and "\n" not in text[len(before) : at] and not SENTENCE_END.match(before + " ", len(before) - 1):
        found = SENTENCE_END.search(text, at)
        if found is None:
            return None
        at = found.end()
    word = len(text) - len(text[at:].lstrip())
    return word if word < len(text) else None


def summary(stats: DoneStats) -> str:
    """One line of what the answer cost, for the status bar."""
    stops = {"eos": "the model finished", "max_tokens": "max new tokens reached", "cancelled": "stopped"}
    return (
        f"{counted(stats.tokens, 'token')} in {stats.total_s:.1f} s · "
        f"{counted(stats.swaps, 'memory swap')} ({counted(stats.retrievals, 'retrieval')}) · "
        f"{stats.tokens_per_s:.1f} tokens/s · "
        f"first token after {stats.ttft_s:.2f} s · "
        f"{stops.get(stats.stop_reason, stats.stop_reason)}"
    )


class Throttle:
    """Decides what to redraw now, so the browser never falls behind a fast model.

    Chat text may redraw every `chat_interval_s`; the table, network and charts (heavier to
    send and draw) at most every `panel_interval_s`. Changes that arrive in between are
    remembered and go out with the next redraw; the end of the answer flushes everything.
    Every redraw carries the chat text, so text is never more than one interval stale.
    """

    # Chat text up to 20 times a second (chosen: smooth to the eye, far below a GPU's token rate);
    # panels 4 times a second: one network redraw costs 0.19–0.34 s of CPU (docs/benchmarks.md,
    # "The Hebbian network figure"), so faster would fall behind.
    def __init__(self, chat_interval_s: float = 0.05, panel_interval_s: float = 0.25) -> None:
        self.chat_interval_s = chat_interval_s
        self.panel_interval_s = panel_interval_s
        self._pending = Changed.NOTHING
        self._last_chat = float("-inf")
        self._last_panels = float("-inf")

    def push(self, changed: Changed, now: Optional[float] = None) -> Changed:
        """Record `changed`; return the parts to redraw now (NOTHING to skip this event)."""
        now = time.monotonic() if now is None else now
        self._pending |= changed
        if self._pending & Changed.DONE:
            out, self._pending = self._pending | Changed.CHAT, Changed.NOTHING
            return out
        out = Changed.NOTHING
        panels = self._pending & (Changed.MEMORIES | Changed.CONTEXT)
        if panels and now - self._last_panels >= self.panel_interval_s:
            out |= panels
            self._last_panels = now
        if out or (self._pending & Changed.CHAT and now - self._last_chat >= self.chat_interval_s):
            out |= Changed.CHAT
            self._last_chat = now
        self._pending &= ~out
        return out
