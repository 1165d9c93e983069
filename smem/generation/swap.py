"""Memory swaps: when the engine may change the memory block, and how it edits the KV cache.

The prompt is prefix | memory block | assistant header, then the generated text (see
`smem.generation.prompt`). Three ways to change the block under a running answer:

* **exact** (`ExactContext`, the reference and the default on accelerators): crop the cache to
  the longest common prefix of the old and new token sequences and re-read the rest, i.e. the
  changed memory lines, the header and every generated token. The logits afterwards are those
  of a fresh forward over the same tokens. Its cost grows with the answer.
* **splice** (`SpliceContext`, the default on CPUs): the block is tokenised line by line; a
  swap cuts the lines of memories that leave, computes only the newcomers' lines (after the
  last line that stays) over the unchanged cache before them, and slides every cached entry
  after them to its new position by re-rotating its key
  (`smem.generation.rope`: RoPE rotations compose, so this needs no forward pass). Positions
  stay contiguous, nothing is trimmed or masked, and a swap costs the new line's tokens
  whatever the answer's length. Approximate: the kept entries after the line were computed
  while the old memory was there (`bench/swap_fidelity.py` measures what that changes). A line
  read before (earlier in the answer, in an earlier answer sharing the `LineStore`, or ahead of
  any answer by `read_ahead`) is put back from the store, re-rotated to its new place, and
  nothing is read (`smem.generation.line_store`).
* **slots** (`SlotContext`): the block is a fixed number of slots of a fixed token length (a
  memory line is trimmed or padded to its slot; padding and empty slots are masked out of
  attention), rewritten in place at fixed positions. Approximate in the same way, plus the
  position gaps its masked padding leaves, which derail the small model on some prompts
  (docs/benchmarks.md, "A prompt the slot layout derails"); kept for comparison.

`SwapPolicy` decides when to re-retrieve. Splice and slot swaps are cheap enough to run at
every scheduled re-retrieval; exact swaps on a CPU are paid from a budget of re-read tokens per
generated token.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Literal, Optional, Sequence, Union, get_args

import torch
from transformers import DynamicCache

from smem.generation.line_store import LineStore, StoredLine
from smem.generation.prompt import Prompt, PromptBuilder
from smem.generation.rope import KeyRotation
from smem.memory.records import Hit, Memory

SwapMode = Literal["exact", "splice", "slots"]
SWAP_MODES: tuple[SwapMode, ...] = get_args(SwapMode)
SwapChoice = Literal["auto", "exact", "splice", "slots"]
"""What a user may ask for: a mode, or "auto" (`default_swap_mode`)."""
SWAP_CHOICES: tuple[str, ...] = get_args(SwapChoice)

CPU_SWAP_BUDGET = 6.0
"""Re-read tokens per generated token that exact swaps may spend on a CPU where they are the only
mode (`default_swap_budget`). Here a decode step of the 0.5B model costs as much as prefilling
~35 tokens, so 6 keeps swaps near 15% of decode time. On an accelerator prefill is nearly free
next to a decode step and swaps are not rationed."""

DEFAULT_SLOT_TOKENS = 40
"""Tokens per memory slot: the 99th percentile of a rendered memory line (tags included) in
the shipped sets is 40.5 (tutor) and 41 (family) Qwen2.5 tokens, so 1 line in 100 is trimmed."""

RetrievalTrigger = Literal["interval", "uncertainty"]
RETRIEVAL_TRIGGERS: tuple[str, ...] = get_args(RetrievalTrigger)

DEFAULT_UNCERTAINTY_THRESHOLD = 0.4
"""Token probability under which the "uncertainty" trigger re-retrieves (FLARE's θ, a free
parameter there too). Not tuned: bench/answers.py reports how often it fires (retrievals per
answer) and takes `--uncertainty-threshold` to try others."""

MAX_LOOKAHEAD_TOKENS = 64
"""Longest look-ahead draft the app and the API accept: twice the benchmark's 32 tokens (one
sentence, FLARE's draft; docs/benchmarks.md, "Look-ahead"). Chosen: the draft is written unseen
before the first shown token, so each of its tokens delays the answer by a decode step."""

MAX_EXTRA_MEMORIES = 10
"""Most anchored extra slots the app and the API accept (chosen): five times the measured 2, so
with the 15-memory maximum at most 25 notes; the memory token budget bounds their text anyway
(`with_anchors`)."""

ExtraMemories = Union[int, Literal["auto"]]
"""Anchored extra slots of an answer, or "auto": the engine's choice, 2
(`engine.ANCHORED_EXTRA_MEMORIES`)."""


def parse_extra_memories(value: Any) -> ExtraMemories:
    """`extra_memories` as the app and the API take it, checked in one place: "auto", or a whole
    number of slots from 0 to `MAX_EXTRA_MEMORIES` (2.0 is one, as JSON Schema counts; True is not)."""
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if value == "auto" or (type(value) is int and 0 <= value <= MAX_EXTRA_MEMORIES):
        return value
    raise ValueError(f'must be "auto" or an integer from 0 to {MAX_EXTRA_MEMORIES}, got {value!r}')

Forward = Callable[..., torch.Tensor]
"""`forward(ids, cache, attention_mask=None, position_ids=None) -> next-token logits`: appends
`ids` to `cache` (at the cache's next positions unless `position_ids` says otherwise)."""


def default_swap_mode(device: torch.device, rotation: Optional[KeyRotation]) -> SwapMode:
    """Exact where prefill is nearly free next to a decode step (accelerators); splice on CPUs,
    where an exact swap late in an answer re-reads hundreds of tokens, if the model's position
    embedding can be re-rotated (else exact)."""
    return "splice" if device.type == "cpu" and rotation is not None else "exact"


def default_swap_budget(device: torch.device, rotation: Optional[KeyRotation]) -> Optional[float]:
    """`CPU_SWAP_BUDGET` where exact swaps are a CPU's default (a model whose keys cannot be
    re-rotated, so no splice), else None: every swap runs. A RoPE model on a CPU splices by
    default, and exact swaps asked for there run in full, because rationed they gave no more of
    the memories' words than splice for more time (long answers: 15.4 grounded words against
    splice's 15.7 and unrationed exact's 20.6; docs/benchmarks.md, "Do long answers use their
    memories?")."""
    return CPU_SWAP_BUDGET if device.type == "cpu" and rotation is None else None


def _common_prefix(cached: Sequence[int], sequence: Sequence[int]) -> int:
    """How much of the cache a swap keeps: the shared head of the old and new token sequences."""
    limit = min(len(cached), len(sequence))
    common = 0
    while common < limit and cached[common] == sequence[common]:
        common += 1
    return common


def _crop(cache: DynamicCache, tokens: int) -> None:
    """Drop the cache's last `tokens` entries."""
    if tokens:
        with torch.inference_mode():
            cache.crop(-tokens)


def keep_order(old: Sequence[Hit], new: Sequence[Hit]) -> list[Hit]:
    """The new set with the memories that stay first, in their old order (their cache entries
    survive an exact swap), then the newcomers; every hit carries its fresh score."""
    fresh = {h.id: h for h in new}
    return [fresh[h.id] for h in old if h.id in fresh] + [h for h in new if h.id not in {o.id for o in old}]


def with_anchors(anchors: Sequence[Hit], new: Sequence[Hit], extra: int, token_budget: Optional[int]) -> list[Hit]:
    """Anchored streaming's set: the memories the answer started with (`anchors`, fresh scores
    where `new` has them), then up to `extra` of the other `new` picks, best first, while the
    token budget holds. A re-retrieval then adds what the answer's words find without pushing
    out what the question found (a swap that did so cost streaming its evidence at the final
    answer: docs/benchmarks.md, "Results: a prompted reasoning phase")."""
    fresh = {h.id: h for h in new}
    chosen = [fresh.get(h.id, h) for h in anchors]
    taken = {h.id for h in chosen}
    room = math.inf if token_budget is None else token_budget - sum(h.tokens for h in chosen)
    for hit in new:
        if len(chosen) == len(anchors) + extra:
            break
        if hit.id not in taken and hit.tokens <= room:
            chosen.append(hit)
            room -= hit.tokens
    return chosen


class ExactContext:
    """The answer's cache when every swap crops and re-reads (logits exact)."""

    exact = True
    mode: SwapMode = "exact"
    reused = 0  # line tokens put back instead of read: splice contexts only

    def __init__(self, forward: Forward, builder: PromptBuilder, hits: Sequence[Hit], config: Any) -> None:
        self._forward = forward
        self._builder = builder
        self.prompt: Prompt = builder.build(hits)
        self.hits = list(hits)
        self.cache = DynamicCache(config=config)

    @property
    def prompt_tokens(self) -> int:
        return len(self.prompt.prefix) + len(self.prompt.header)

    @property
    def memory_tokens(self) -> int:
        return len(self.prompt.memory)

    def prefill(self) -> torch.Tensor:
        return self._forward(self.prompt.ids, self.cache)

    def step(self, token: int) -> torch.Tensor:
        return self._forward([token], self.cache)

    def rewind(self, tokens: int) -> None:
        """Forget the last `tokens` read after the prompt (a look-ahead draft)."""
        _crop(self.cache, tokens)

    def cheapest_swap(self, fed: Sequence[int]) -> int:
        """Any swap re-reads at least the header and the generated text."""
        return len(self.prompt.header) + len(fed)

    def swap_cost(self, hits: Sequence[Hit], fed: Sequence[int]) -> tuple[int, Prompt, int]:
        """(tokens to re-read, the new prompt, tokens kept) for putting `hits` in context when
        the cache holds the current prompt + `fed`."""
        candidate = self._builder.build(hits)
        sequence = [*candidate.ids, *fed]
        keep = _common_prefix([*self.prompt.ids, *fed], sequence)
        return len(sequence) - keep, candidate, keep

    def swap(self, hits: Sequence[Hit], fed: Sequence[int], plan: Optional[tuple[int, Prompt, int]] = None) -> int:
        """Crop to the common prefix and re-read the rest; return the tokens read."""
        cost, candidate, keep = plan or self.swap_cost(hits, fed)
        with torch.inference_mode():
            self.cache.crop(keep - self.cache.get_seq_length())
        if cost:
            self._forward([*candidate.ids, *fed][keep:], self.cache)
        self.prompt, self.hits = candidate, list(hits)
        return cost


class SpliceContext:
    """The answer's cache when a swap splices the new memory lines in and re-rotates what
    follows (approximate; see the module docstring).

    A swap cuts the lines of memories that leave (nothing read: what follows slides back) and
    opens a gap after the last line that stays, sliding what follows forward; the newcomers'
    lines are read into the gap by the next forward pass. With `fuse` (the default) that is the
    next decode step: one forward reads the new lines at the gap's positions (a 4D mask lets
    them see only what precedes the gap, as a prefill would) and the new token at the end (it
    sees everything), so a swap costs the weights' read once, not twice: on a CPU a decode step
    is bound by reading the weights, and a 25-token line costs about as much again
    (docs/benchmarks.md, "Swap modes"). Without `fuse` the lines are read at once.

    Three re-reads a splice skips can be asked for, each off by default because none of them
    alone brought long answers closer to exact swaps (docs/benchmarks.md, "What an exact swap
    does that a splice does not"): with `refresh_prompt` a swap that changes the block also
    re-reads what follows the lines up to the answer (the block's instruction and the assistant
    header) in the same gap; with `reread_answer` n it re-reads the answer's last n tokens (all
    of them with None) at the end of the same forward pass, over everything before them; with
    `reread_kept` the lines that stay after a cut one are read again instead of sliding back
    with the entries they were read with. Lines put back from the store keep theirs.
    """

    exact = False
    mode: SwapMode = "splice"

    def __init__(
        self,
        forward: Forward,
        builder: PromptBuilder,
        hits: Sequence[Hit],
        config: Any,
        *,
        rotation: KeyRotation,
        fuse: bool = True,
        store: Optional[LineStore] = None,
        refresh_prompt: bool = False,
        reread_answer: Optional[int] = 0,
        reread_kept: bool = False,
    ) -> None:
        self._forward = forward
        self._builder = builder
        self._rotation = rotation
        self.fuse = fuse
        self.refresh_prompt = refresh_prompt
        self.reread_answer = reread_answer
        self.reread_kept = reread_kept
        self.store = store
        """Where lines read are kept and looked up (None: every newcomer's line is read)."""
        self.reused = 0
        """Line tokens put back from the store instead of read."""
        self._head, self._tail = builder.block_frame()
        self.lines: list[tuple[Hit, list[int]]] = [(hit, builder.line_ids(hit)) for hit in hits]
        self.start = len(builder.prefix)
        """Where the memory block begins; nothing before it ever changes."""
        self.tokens: list[int] = [*builder.prefix, *self._block(), *builder.header]
        """The sequence the model reads, in order (generated tokens appended by `step`)."""
        self.cache = DynamicCache(config=config)
        self._gap: Optional[tuple[int, list[int], list[tuple[Hit, list[int]]], int]] = None
        """(position, ids, the memory lines among them, where the first starts in ids) of lines
        spliced into `tokens` whose cache entries are not read yet."""
        self._suffix: list[int] = []
        """The answer's last tokens, cut from the cache by a swap and read again with the gap."""

    def _block(self) -> list[int]:
        """Head + lines + tail; no memories, no block (as `PromptBuilder.memory_block`)."""
        if not self.lines:
            return []
        return [*self._head, *(token for _, ids in self.lines for token in ids), *self._tail]

    @property
    def hits(self) -> list[Hit]:
        return [hit for hit, _ in self.lines]

    @property
    def prompt_tokens(self) -> int:
        return len(self._builder.prefix) + len(self._builder.header)

    @property
    def memory_tokens(self) -> int:
        return len(self._block())

    def prefill(self) -> torch.Tensor:
        logits = self._forward(self.tokens, self.cache)
        self._keep(self.start, list(self.lines), len(self._head))
        return logits

    def _keep(self, at: int, lines: Sequence[tuple[Hit, list[int]]], offset: int = 0) -> None:
        """Store the entries of `lines`, read in order from `at + offset`."""
        if self.store is None:
            return
        for hit, ids in lines:
            self.store.keep(hit.id, ids, self.cache, at + offset)
            offset += len(ids)

    def step(self, token: int) -> torch.Tensor:
        self.tokens.append(token)
        if self._pending:
            return self._fill(token)
        return self._forward([token], self.cache)

    @property
    def _pending(self) -> bool:
        return self._gap is not None or bool(self._suffix)

    def rewind(self, tokens: int) -> None:
        """Forget the last `tokens` read after the prompt (a look-ahead draft; no swap is
        pending then)."""
        _crop(self.cache, tokens)
        del self.tokens[len(self.tokens) - tokens :]

    def cheapest_swap(self, fed: Sequence[int] = ()) -> int:
        """A splice reads only the new line (budgets apply to exact swaps only)."""
        return 1

    def swap(self, hits: Sequence[Hit], fed: Sequence[int] = ()) -> int:
        """Put `hits` in context; return the tokens to read (the newcomers' lines and any
        re-reads). Memories that stay keep their line; the newcomers' lines go after the last
        of them, so the block's order is `keep_order`'s, as in an exact swap. `fed` (the
        generated text in the cache) is not used: its entries slide with re-rotated keys, and
        `reread_answer` takes the tokens to re-read from `tokens`."""
        if self._pending:
            self._fill(None)
        header = [*self._builder.header] if self.refresh_prompt else []  # read again with the lines
        if not self.lines or not hits:  # the block appears or disappears as a whole
            before = len(self._block())
            self.lines = [(hit, self._builder.line_ids(hit)) for hit in hits]
            block = self._block()
            self._move(self.start, self.start + before + len(header), [*block, *header], self.lines, len(self._head))
            return len(block) + len(header) + self._cut_answer()
        old = [hit.id for hit, _ in self.lines]
        wanted = {hit.id: hit for hit in hits}
        cut = next((index for index, hit_id in enumerate(old) if hit_id not in wanted), len(old))
        reread = (  # lines that stay after a cut one: cut too, and read again below
            [(wanted.pop(hit_id), ids) for hit_id, (_, ids) in zip(old[cut:], self.lines[cut:]) if hit_id in wanted]
            if self.reread_kept
            else []
        )
        first = self.start + len(self._head)
        starts = [first, *(first + n for n in itertools.accumulate(len(ids) for _, ids in self.lines))]
        for index in reversed(range(len(self.lines))):  # last first: earlier starts stay valid
            hit, ids = self.lines[index]
            if hit.id in wanted:
                self.lines[index] = (wanted.pop(hit.id), ids)  # fresh score, same line
            else:
                self._move(starts[index], starts[index + 1], [])
                del self.lines[index]
        end = first + sum(len(ids) for _, ids in self.lines)
        fresh = reread
        for hit in (hit for hit in hits if hit.id in wanted):  # stored lines first, then the ones to read
            line = self._builder.line_ids(hit)
            stored = self.store.get(hit.id, line) if self.store is not None else None
            if stored is None:
                fresh.append((hit, line))
                continue
            self._put_back(stored, line, end)
            self.lines.append((hit, line))
            end += len(line)
        self.lines += fresh
        ids = [token for _, line in fresh for token in line]
        if [hit.id for hit, _ in self.lines] == old:
            return 0  # the same memories, fresh scores: nothing to read
        frame = [*self._tail, *header] if self.refresh_prompt else []  # what follows the lines, up to the answer
        if ids or frame:
            self._move(end, end + len(frame), [*ids, *frame], fresh)
        return len(ids) + len(frame) + self._cut_answer()

    def _cut_answer(self) -> int:
        """Cut the answer's last `reread_answer` tokens from the cache, to be read again after the
        gap's lines by the next forward pass (`_fill`); return how many."""
        written = len(self.tokens) - (self.start + len(self._block()) + len(self._builder.header))
        count = written if self.reread_answer is None else min(self.reread_answer, written)
        if count:
            self._suffix = self.tokens[len(self.tokens) - count :]
            _crop(self.cache, count)
            if not self.fuse:
                self._fill(None)
        return count

    def _put_back(self, stored: StoredLine, ids: list[int], at: int) -> None:
        """Insert a stored line at position `at`: its keys re-rotated from where it was read,
        what follows slid forward by its length (no forward pass)."""
        with torch.inference_mode():
            for layer, (keys, values) in zip(self.cache.layers, stored.entries):
                after = self._rotation(layer.keys[:, :, at:], len(ids))
                layer.keys = torch.cat([layer.keys[:, :, :at], self._rotation(keys, at - stored.position), after], dim=-2)
                layer.values = torch.cat([layer.values[:, :, :at], values, layer.values[:, :, at:]], dim=-2)
        self.tokens[at:at] = ids
        self.reused += len(ids)

    def _move(
        self, start: int, stop: int, ids: list[int], lines: Sequence[tuple[Hit, list[int]]] = (), offset: int = 0
    ) -> None:
        """Put `ids` in place of `tokens[start:stop]`: drop those cache entries and slide what
        followed by the length difference (keys re-rotated, values as they are), leaving a gap
        for `ids`, read by the next `step` (fused) or at once. `ids` holds `lines` from
        `offset` on (stored once read)."""
        with torch.inference_mode():
            for layer in self.cache.layers:
                keys, values = layer.keys, layer.values
                moved = self._rotation(keys[:, :, stop:], len(ids) - (stop - start))
                layer.keys = torch.cat([keys[:, :, :start], moved], dim=-2)
                layer.values = torch.cat([values[:, :, :start], values[:, :, stop:]], dim=-2)
        self.tokens[start:stop] = ids
        if ids:
            self._gap = (start, ids, [*lines], offset)
            if not self.fuse:
                self._fill(None)

    def _fill(self, token: Optional[int]) -> torch.Tensor:
        """Read the gap's lines at their positions, seeing only what precedes the gap (and each
        other, causally), then the answer tokens a swap cut (`_cut_answer`) and `token` at the
        end of the sequence, seeing everything; then put the lines' entries in order. Returns
        the logits after the last id read."""
        kept = self.cache.get_seq_length()
        at, ids, lines, offset = self._gap or (kept, [], [], 0)
        suffix, self._gap, self._suffix = self._suffix, None, []
        reads = [*ids, *suffix, *([token] if token is not None else [])]
        positions = [*range(at, at + len(ids)), *range(kept + len(ids), kept + len(reads))]
        dtype, device = self.cache.layers[0].keys.dtype, self.cache.layers[0].keys.device
        blocked = torch.finfo(dtype).min
        mask = torch.zeros(1, 1, len(reads), kept + len(reads), dtype=dtype, device=device)
        mask[:, :, : len(ids), at:kept] = blocked  # the lines do not see what follows the gap
        mask[:, :, :, kept:] = torch.full((len(reads), len(reads)), blocked, dtype=dtype, device=device).triu(1)
        logits = self._forward(reads, self.cache, mask, torch.tensor([positions], device=device))
        with torch.inference_mode():
            for layer in self.cache.layers:
                for name in ("keys", "values"):
                    entries = getattr(layer, name)
                    read, token = entries[:, :, kept : kept + len(ids)], entries[:, :, kept + len(ids) :]
                    setattr(layer, name, torch.cat([entries[:, :, :at], read, entries[:, :, at:kept], token], dim=-2))
        self._keep(at, lines, offset)
        return logits


READ_AHEAD_CHUNK_TOKENS = 512
"""Line tokens `read_ahead` reads in one forward pass. The chunking changes no entry (a line sees
only the frame and the lines before it in its run); 512 (chosen) keeps a pass's float32 mask,
512 x (frame + 512), near 2 MB and its activations small. On two AVX2 cores reading ahead cost
5.6-5.8 ms a line token, about a swap's read (docs/benchmarks.md, "Lines read ahead")."""


READ_AHEAD_RUN_LINES = 5
"""Memories whose lines `read_ahead` reads one after another, each after the ones before it. Chosen:
the engine's default context of 5 memories, so a line is read after as many lines as in a
block. Against exact streaming (bench/swap_fidelity.py, 4 answers): KL 0.346 nats for lines read
alone, 0.247 in runs of 5, 0.213 for lines read in context; LoCoMo F1 at N=1 paired against
exact swaps -0.031 alone, -0.008 in runs of 5 (docs/benchmarks.md, "Lines read ahead")."""


def read_ahead(
    forward: Forward,
    builder: PromptBuilder,
    memories: Sequence[Memory],
    store: LineStore,
    config: Any,
    *,
    run_lines: int = READ_AHEAD_RUN_LINES,
    chunk_tokens: int = READ_AHEAD_CHUNK_TOKENS,
) -> int:
    """Read memory lines into `store` before any answer needs them, so that a splice swap
    puts them back instead of reading them while the answer waits; return the tokens read.

    The lines are read after `builder`'s prefix and the block's head (system prompt, the user
    turn, the label: a builder for an empty message gives a frame no conversation is in), in
    runs of `run_lines` consecutive memories, each line seeing the frame and the lines before
    it in its run, as in a memory block (`run_lines=1`: each line alone). Its entries then do
    not depend on the conversation, and any pool holding the same memory can use them.
    Approximate, like every stored line: in an answer the line follows the conversation and
    other lines (`bench/swap_fidelity.py` measures what that changes). Lines already in `store`
    are skipped. Many runs go in one forward pass, a block-diagonal mask keeping them apart.
    The cost is the same per token as a swap's read; what changes is when it is paid: once per
    memory, before any answer.
    """
    if run_lines < 1:
        raise ValueError("run_lines must be >= 1")
    head, _ = builder.block_frame()
    frame = [*builder.prefix, *head]
    lines = [(memory.id, builder.line_ids(memory)) for memory in memories]
    lines = [(memory_id, ids) for memory_id, ids in lines if (memory_id, ids) not in store]
    if not lines:
        return 0
    runs = [lines[i : i + run_lines] for i in range(0, len(lines), run_lines)]
    cache = DynamicCache(config=config)
    forward(frame, cache)
    at = len(frame)
    dtype, device = cache.layers[0].keys.dtype, cache.layers[0].keys.device
    blocked = torch.finfo(dtype).min
    read = 0
    for chunk in _chunks(runs, chunk_tokens):
        ids = [token for run in chunk for _, line in run for token in line]
        mask = torch.full((len(ids), at + len(ids)), blocked, dtype=dtype, device=device)
        mask[:, :at] = 0
        positions: list[int] = []
        for run in chunk:  # each run sees the frame and itself, causally
            length = sum(len(line) for _, line in run)
            start = len(positions)
            mask[start : start + length, at + start : at + start + length] = torch.full(
                (length, length), blocked, dtype=dtype, device=device
            ).triu(1)
            positions += range(at, at + length)
        forward(ids, cache, mask[None, None], torch.tensor([positions], device=device))
        offset = at
        for run in chunk:
            position = at
            for memory_id, line in run:
                store.keep(memory_id, line, cache, offset, position=position)
                offset += len(line)
                position += len(line)
        _crop(cache, len(ids))
        read += len(ids)
    return read


def _chunks(runs: list[list[tuple[str, list[int]]]], tokens: int) -> Iterator[list[list[tuple[str, list[int]]]]]:
    """Consecutive groups of `runs` of at most `tokens` tokens (a longer run alone)."""
    chunk: list[list[tuple[str, list[int]]]] = []
    size = 0
    for run in runs:
        length = sum(len(line) for _, line in run)
        if chunk and size + length > tokens:
            yield chunk
            chunk, size = [], 0
        chunk.append(run)
        size += length
    if chunk:
        yield chunk


class SlotContext:
    """The answer's cache when the memory block is fixed slots rewritten in place (approximate)."""

    exact = False
    mode: SwapMode = "slots"
    reused = 0  # line tokens put back instead of read: splice contexts only

    def __init__(
        self,
        forward: Forward,
        builder: PromptBuilder,
        hits: Sequence[Hit],
        config: Any,
        *,
        slots: int,
        slot_tokens: int,
        max_new_tokens: int,
        device: torch.device,
    ) -> None:
        if len(hits) > slots:
            raise ValueError(f"{len(hits)} memories do not fit {slots} slots")
        self._forward = forward
        self._builder = builder
        self._config = config
        self.slot_tokens = slot_tokens
        self.slots: list[Optional[Hit]] = [*hits, *[None] * (slots - len(hits))]
        head, tail = builder.block_frame() if slots else ([], [])
        self.first_slot = len(builder.prefix) + len(head)
        self.layout = [*builder.prefix, *head, *[0] * (slots * slot_tokens), *tail, *builder.header]
        self._frame = len(head) + len(tail)
        # One attention-mask row for the whole answer: 0 for padding and empty slots.
        self.mask = torch.ones(1, len(self.layout) + max_new_tokens + 1, dtype=torch.long, device=device)
        self.length = 0
        self.cache = DynamicCache(config=config)
        for index, hit in enumerate(self.slots):
            self._place(index, hit)

    @property
    def hits(self) -> list[Hit]:
        return [hit for hit in self.slots if hit is not None]

    @property
    def prompt_tokens(self) -> int:
        return len(self._builder.prefix) + len(self._builder.header)

    @property
    def memory_tokens(self) -> int:
        """Block tokens the model attends to (padding and empty slots excluded)."""
        start = self.first_slot
        visible = int(self.mask[0, start : start + len(self.slots) * self.slot_tokens].sum())
        return visible + self._frame if self.slots else 0

    def _span(self, index: int) -> slice:
        start = self.first_slot + index * self.slot_tokens
        return slice(start, start + self.slot_tokens)

    def _place(self, index: int, hit: Optional[Hit]) -> list[int]:
        """Write slot `index`'s ids into the layout and its visibility into the mask."""
        ids = self._builder.slot_line(hit, self.slot_tokens) if hit is not None else []
        span = self._span(index)
        self.layout[span] = [*ids, *[0] * (self.slot_tokens - len(ids))]  # padding id: masked, never read
        self.mask[0, span] = 0
        self.mask[0, span.start : span.start + len(ids)] = 1
        self.slots[index] = hit
        return self.layout[span]

    def prefill(self) -> torch.Tensor:
        self.length = len(self.layout)
        return self._forward(self.layout, self.cache, self.mask[:, : self.length])

    def step(self, token: int) -> torch.Tensor:
        self.length += 1
        return self._forward([token], self.cache, self.mask[:, : self.length])

    def rewind(self, tokens: int) -> None:
        """Forget the last `tokens` read after the prompt (a look-ahead draft)."""
        _crop(self.cache, tokens)
        self.length -= tokens

    def cheapest_swap(self, fed: Sequence[int] = ()) -> int:
        return self.slot_tokens

    def assign(self, hits: Sequence[Hit]) -> list[tuple[int, Optional[Hit]]]:
        """Slot changes that put `hits` in context: memories that stay keep their slot,
        newcomers take the lowest free slots, slots left over are emptied."""
        wanted = {h.id: h for h in hits}
        changes: list[tuple[int, Optional[Hit]]] = []
        free = []
        for index, hit in enumerate(self.slots):
            if hit is not None and hit.id in wanted:
                self.slots[index] = wanted.pop(hit.id)  # fresh score, same slot
            else:
                free.append(index)
        newcomers = list(wanted.values())
        for index in free:
            if newcomers:
                changes.append((index, newcomers.pop(0)))
            elif self.slots[index] is not None:
                changes.append((index, None))
        return changes

    def swap(self, hits: Sequence[Hit], fed: Sequence[int] = ()) -> int:
        """Rewrite the slots that change; return the tokens read (slot length per new memory).
        `fed` (the generated text in the cache) is not re-read: it keeps its entries."""
        read = 0
        for index, hit in self.assign(hits):
            ids = self._place(index, hit)
            if hit is not None:
                self._recompute(self._span(index), ids)
                read += self.slot_tokens
        return read

    def _recompute(self, span: slice, ids: list[int]) -> None:
        """Slot KV as a fresh prefill computes it: forward the slot over a view of the cache
        cut at the slot's start (so its positions and attention are the prefill's), then write
        the new keys/values into the cache at the slot's positions."""
        view = DynamicCache(config=self._config)
        with torch.inference_mode():
            for index, layer in enumerate(self.cache.layers):
                view.update(layer.keys[:, :, : span.start], layer.values[:, :, : span.start], index)
            self._forward(ids, view, self.mask[:, : span.stop])
            for layer, fresh in zip(self.cache.layers, view.layers):
                layer.keys[:, :, span] = fresh.keys[:, :, span]
                layer.values[:, :, span] = fresh.values[:, :, span]


@dataclass
class SwapPolicy:
    """When to re-retrieve, and whether a swap may run now.

    `trigger` "interval": every `every` generated tokens (0 = never). "uncertainty" (FLARE,
    Jiang et al. 2023, "Active Retrieval Augmented Generation"): when the token just written had
    a probability below `threshold`, at most once per `every` tokens. With a `budget` (re-read
    tokens per generated token, exact swaps on a CPU) a swap the credit cannot pay is deferred,
    and while the credit cannot pay even the cheapest swap the re-retrieval is skipped: its result
    could not change the context, so the output is the same and the embedding time is saved.
    """

    every: int
    budget: Optional[float] = None
    credit: float = 0.0
    trigger: RetrievalTrigger = "interval"
    threshold: float = DEFAULT_UNCERTAINTY_THRESHOLD
    last: int = 0
    """Generated tokens at the last uncertainty-triggered retrieval."""

    def due(self, generated: int, cheapest: int, confidence: float = 1.0) -> bool:
        self.credit += self.budget or 0.0
        if not self.every:
            return False
        if self.trigger == "uncertainty":
            if confidence >= self.threshold or generated - self.last < self.every:
                return False
        elif generated % self.every:
            return False
        if self.budget is not None and self.credit < cheapest:
            return False
        self.last = generated
        return True

    def pay(self, cost: int) -> bool:
        """Spend `cost` re-read tokens if the credit allows; False means deferred."""
        if self.budget is None:
            return True
        if cost > self.credit:
            return False
        self.credit -= cost
        return True
