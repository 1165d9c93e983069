"""What one visitor of the app owns and does: a private pool, generation settings, one
answer run as a generator of events, and the memory-set actions (switch, upload, add,
reset, save).

The answer run is the ZeroGPU boundary. On a ZeroGPU Space it executes in a forked worker
whose arguments and yields are pickled, so it takes the visitor's pool as an argument and
everything it learns leaves through what it yields (`Done.learned`); the caller applies that
to the visitor's own pool with `apply_learned`. Pool actions return a new pool instead of
mutating the old one, so an answer still streaming from the old pool is never disturbed.
"""

from __future__ import annotations

import contextlib
import html
import math
import os
import tempfile
import threading
import time
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Iterator, Optional, Sequence

from smem.generation.engine import stream_keywords
from smem.generation.events import Done, Event
from smem.generation.swap import (
    DEFAULT_UNCERTAINTY_THRESHOLD,
    MAX_EXTRA_MEMORIES,
    MAX_LOOKAHEAD_TOKENS,
    RETRIEVAL_TRIGGERS,
    SWAP_CHOICES,
    ExtraMemories,
    parse_extra_memories,
)
from smem.memory.records import MemoryFileError, MemoryType
from smem.memory.memory_sets import MemorySets
from smem.memory.pool import MemoryPool
from smem.memory.settings import MemorySettings
from smem.memory.wording import counted
from smem.serving import uploads
from smem.serving.api_schema import ApiSettings

MEMORY_SETTINGS = MemorySettings()
"""Read from the environment once, so `SMEM_*` retrieval knobs set the sliders' defaults as they
set the runtime's pools (`Runtime.load`)."""

GPU_TOKENS_PER_S = 20.0
"""A conservative decode rate for Qwen3-8B on a ZeroGPU slice, to size the GPU reservation
(chosen, not measured: no GPU has been lent to measure it)."""
GPU_OVERHEAD_S = 15.0
"""Moving the weights onto the GPU for the first call, prefill and swaps (chosen with headroom, not measured)."""
GPU_MAX_S = 240
"""Longest GPU reservation asked for: under the ~5 minutes ZeroGPU grants one call at most
(zero-gpu-explorers/README discussion #7), and shorter reservations are queued sooner
(ZeroGPU README, "Duration")."""

MEMORY_TYPES = tuple(member.value for member in MemoryType)

EXTRA_MEMORY_CHOICES: tuple[ExtraMemories, ...] = ("auto", *range(MAX_EXTRA_MEMORIES + 1))
"""The anchoring menu: the engine's choice, or a number of extra slots."""


@dataclass(frozen=True)
class Setting:
    """A knob's range and default; the UI builds its slider from this."""

    minimum: float
    maximum: float
    default: float
    step: float
    label: str
    info: str = ""


# Slider ranges (chosen, not measured): wide enough to show each knob's effect, narrow enough
# that every value works. `max_memories` 15 and `max_new_tokens` 2048 match the API's limits;
# `update_every_n` 20 and `lookback_tokens` 200 bound re-retrieval at roughly a sentence and a
# paragraph; memory defaults come from the memory settings, the rest from GenerationSettings.
SETTINGS: dict[str, Setting] = {
    "update_every_n": Setting(1, 20, 5, 1, "Update every N tokens", "How often memories are re-retrieved"),
    "max_memories": Setting(1, 15, 5, 1, "Max memories", "Memories in context at once"),
    "softmax_temperature": Setting(
        0.01, 1.0, MEMORY_SETTINGS.softmax_temperature, 0.01, "Softmax temperature", "Lower = sharper selection"
    ),
    "diversity_weight": Setting(
        0.0, 1.0, MEMORY_SETTINGS.diversity_weight, 0.05, "Diversity weight", "Penalty for near-duplicate memories"
    ),
    "association_weight": Setting(
        0.0, 2.0, MEMORY_SETTINGS.association_weight, 0.05, "Association weight", "Pull toward memories that served similar questions before"
    ),
    "lookback_tokens": Setting(10, 200, 60, 5, "Lookback tokens", "Recent text used as the retrieval query"),
    "uncertainty_threshold": Setting(
        0.0, 1.0, DEFAULT_UNCERTAINTY_THRESHOLD, 0.05, "Uncertainty threshold",
        "Uncertainty trigger: re-retrieve when a token's probability is below this",
    ),
    "lookahead_tokens": Setting(
        0, MAX_LOOKAHEAD_TOKENS, 0, 4, "Look-ahead tokens",
        "Draft this many tokens unseen, then start in the memories the draft finds (0 = off)",
    ),
    "temperature": Setting(0.0, 1.5, 0.7, 0.05, "LLM temperature", "0 = greedy"),
    "max_new_tokens": Setting(16, 2048, 512, 16, "Max new tokens"),
}


@dataclass(frozen=True)
class Choice:
    """A knob with named values; the UI builds its radio from this."""

    choices: tuple[str, ...]
    label: str
    info: str


CHOICES: dict[str, Choice] = {
    "swap": Choice(
        SWAP_CHOICES,
        "Memory swap",
        "exact: re-read everything after a changed memory (long answers used more of their memories; on a CPU "
        "1.2-1.5x splice's time per token, and seconds of pause late in an answer); splice: put in only new "
        "memories' lines, read ahead at start (approximate); slots: fixed slots; auto: exact on GPU, splice on CPU",
    ),
    "retrieval_trigger": Choice(
        RETRIEVAL_TRIGGERS,
        "Retrieval trigger",
        "interval: every N tokens; uncertainty: when a token is unlikely (FLARE), at most every N tokens",
    ),
}


@dataclass(frozen=True)
class GenerationSettings:
    """Every knob of one answer; validated so the app's API endpoint rejects bad values
    with the knob's name rather than failing deep inside the engine."""

    update_every_n: int = 5  # chosen for the demo: twice the engine's rate, so swaps are seen
    max_memories: int = 5  # the engine's default context size
    softmax_temperature: float = MEMORY_SETTINGS.softmax_temperature
    diversity_weight: float = MEMORY_SETTINGS.diversity_weight
    association_weight: float = MEMORY_SETTINGS.association_weight
    lookback_tokens: int = 60  # the engine's default
    temperature: float = 0.7  # Qwen2.5's generation_config temperature (smem.generation.decoding)
    max_new_tokens: int = 512  # the API's default answer length; app.py sets its own per device
    enable_thinking: bool = True
    sample_memories: bool = True
    """Draw memories from the softmax, as the design and the "Softmax temperature" slider
    promise (a visitor moving the slider expects the selection to change); every answer's seed
    is in its Done statistics, so a draw can be replayed."""
    swap: str = "auto"
    """How memory swaps edit the cache: "exact", "splice", "slots" or "auto" (exact on GPUs,
    splice on CPUs; `smem.generation.swap`)."""
    retrieval_trigger: str = "interval"
    """When to re-retrieve: "interval" (every N tokens, the default: no variant beat it on F1)
    or "uncertainty" (FLARE: a token below `uncertainty_threshold`, at most every N tokens)."""
    uncertainty_threshold: float = DEFAULT_UNCERTAINTY_THRESHOLD
    lookahead_tokens: int = 0
    """FLARE's look-ahead, off by default: it changed the first memories but not F1
    (docs/benchmarks.md, "Look-ahead")."""
    extra_memories: ExtraMemories = "auto"
    """Anchored extra slots, or "auto" (the engine's: 2 with prompted reasoning, else 0)."""
    seed: Optional[int] = None

    def __post_init__(self) -> None:
        for item in fields(self):
            value = getattr(self, item.name)
            if item.name in ("enable_thinking", "sample_memories"):
                object.__setattr__(self, item.name, bool(value))
                continue
            if item.name in CHOICES:
                choice = CHOICES[item.name]
                if value not in choice.choices:
                    raise ValueError(f"{choice.label} ({item.name}) must be one of {', '.join(choice.choices)}, got {value!r}")
                continue
            if item.name == "extra_memories":
                try:
                    object.__setattr__(self, item.name, parse_extra_memories(value))
                except ValueError as error:
                    raise ValueError(f"Anchored extra memories (extra_memories) {error}") from None
                continue
            if item.name == "seed":
                if value is not None and (isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 2**32):
                    raise ValueError(f"seed must be an integer in [0, 2**32), got {value!r}")
                continue
            setting = SETTINGS[item.name]
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ValueError(f"{setting.label} ({item.name}) must be a number, got {value!r}")
            if not setting.minimum <= value <= setting.maximum:
                raise ValueError(
                    f"{setting.label} ({item.name}) must be between {setting.minimum:g} and "
                    f"{setting.maximum:g}, got {value!r}"
                )
            if item.type in (int, "int"):
                object.__setattr__(self, item.name, int(round(value)))
            else:
                object.__setattr__(self, item.name, float(value))

    def apply_to(self, pool: MemoryPool) -> None:
        """The retrieval knobs live on the pool (its scoring reads them on every retrieve)."""
        pool.softmax_temperature = self.softmax_temperature
        pool.diversity_weight = self.diversity_weight
        pool.association_weight = self.association_weight

    def stream_kwargs(self) -> dict[str, Any]:
        return stream_keywords(self)


def app_defaults(memory: MemorySettings, on_gpu: bool) -> GenerationSettings:
    """Where the app's sliders start: the deployment's memory knobs (its environment and flags),
    and per device the answer length and temperature. Qwen3 with thinking is sampled at 0.6 (its
    card's advice); the CPU model wanders off topic when sampled hotter, so it runs cooler and
    shorter."""
    return GenerationSettings(
        max_new_tokens=1024 if on_gpu else 256,
        temperature=0.6 if on_gpu else 0.3,
        softmax_temperature=memory.softmax_temperature,
        diversity_weight=memory.diversity_weight,
        association_weight=memory.association_weight,
    )


def gpu_seconds_for(max_new_tokens: int) -> int:
    """How long to reserve a ZeroGPU slice for one answer: longer answers need longer slots,
    and a short one should not queue behind a needlessly long reservation."""
    return min(GPU_MAX_S, math.ceil(GPU_OVERHEAD_S + max_new_tokens / GPU_TOKENS_PER_S))


def gpu_seconds(pool: Any, message: Any, history: Any, settings: GenerationSettings, *_: Any) -> int:
    """spaces.GPU's dynamic duration for the app's answers (called with their arguments)."""
    return gpu_seconds_for(settings.max_new_tokens)


def api_gpu_seconds(pool: Any, kwargs: dict[str, Any], *_: Any) -> int:
    """spaces.GPU's dynamic duration for the HTTP API's answers (see smem.serving.api.Generate)."""
    return gpu_seconds_for(int(kwargs["max_new_tokens"]))


def answer(
    engine: Any,
    message: str,
    history: Sequence[Any],
    settings: GenerationSettings,
    cancel: Optional[threading.Event] = None,
) -> Iterator[Event]:
    """Stream one answer from `engine` (over the pool it was built with), returning the
    learned Hebbian state in the final `Done` so it survives a process boundary. Setting
    `cancel` ends the answer with a "cancelled" `Done` that still learns from what was written."""
    settings.apply_to(engine.pool)
    yield from engine.stream(message, list(history), return_learned=True, cancel=cancel, **settings.stream_kwargs())


class StopButtons:
    """The Stop button of each visitor's page, keyed by Gradio session: pressing it sets the
    event their running answer polls, so the answer ends itself and reports how it ended
    (cancelling the handler instead would leave the page saying "answering")."""

    def __init__(self) -> None:
        self._events: dict[str, threading.Event] = {}
        self._lock = threading.Lock()

    def arm(self, session: str) -> threading.Event:
        with self._lock:
            event = self._events[session] = threading.Event()
            return event

    def press(self, session: str) -> None:
        with self._lock:
            event = self._events.get(session)
        if event is not None:
            event.set()

    def leave(self, session: str) -> None:
        """The visitor closed or reloaded the page: stop their answer (nobody is left to read
        it, and it would hold the shared model) and drop their button."""
        with self._lock:
            event = self._events.pop(session, None)
        if event is not None:
            event.set()


def apply_learned(pool: MemoryPool, done: Optional[Done | Any]) -> bool:
    """Take the state an answer learned (possibly in another process) into the visitor's pool.

    Skipped when the pool changed shape meanwhile (the visitor added a memory or switched
    sets while the answer streamed): that learning belongs to a pool they no longer use.
    """
    learned = getattr(done, "learned", done)
    if learned is None or len(learned) != len(pool):
        return False
    pool.set_learning_state(learned)
    return True


# -- memory-set actions -------------------------------------------------------------------------


def upload(sets: MemorySets, raw: bytes | str | None, settings: ApiSettings) -> MemoryPool:
    """A private pool from an uploaded memory-set file or a downloaded learned state (.npz),
    within the deployment's limits; MemoryFileError names the bad record, field or limit."""
    return uploads.load_upload(sets, raw, settings)


def take_upload(path: Optional[str]) -> Optional[bytes]:
    """The bytes of a file Gradio received, which is removed once read, accepted or not:
    Gradio keeps uploads in its cache folder, and a refused file must not stay there (issue 14
    found a rejected 50 MB upload left behind)."""
    if not path:
        return None
    file = Path(path)
    try:
        return file.read_bytes()
    finally:
        file.unlink(missing_ok=True)
        with contextlib.suppress(OSError):  # Gradio's per-upload folder, if now empty
            file.parent.rmdir()


def switch_set(
    stash: dict[str, tuple[MemoryPool, Any]], sets: MemorySets, leaving: str, pool: MemoryPool, layout: Any, name: str
) -> tuple[MemoryPool, Any]:
    """Put the set the visitor leaves (its pool, with what it learned, and its network layout)
    aside, and take the chosen set back as they left it, or fresh on a first visit."""
    stash[leaving] = (pool, layout)
    if name in stash:
        return stash.pop(name)
    return sets.pool(name), None


def add_memory(
    pool: MemoryPool, content: str, memory_type: Optional[str], emotional_intensity: float, settings: ApiSettings
) -> MemoryPool:
    """A copy of `pool` with one more memory (validated like a file record, within the pool size limit)."""
    uploads.check_size(pool, settings, adding=1)
    updated = pool.copy()
    updated.add(content, type=memory_type or None, emotional_intensity=emotional_intensity)
    return updated


def reset_learning(pool: MemoryPool) -> MemoryPool:
    updated = pool.copy()
    updated.reset_learning()
    return updated


DOWNLOAD_TTL_S = 3600
"""Saved files older than an hour are removed (chosen: ample time to click the download link)."""


def save_learned(pool: MemoryPool, label: str, directory: Optional[Path] = None) -> Path:
    """Write the pool with its learned state for download; files older than an hour are
    removed on the way, so a long-running Space does not fill its disk."""
    directory = Path(directory or Path(tempfile.gettempdir()) / "smem-downloads")
    directory.mkdir(parents=True, exist_ok=True)
    now = time.time()
    for old in directory.glob("*.npz"):
        try:
            if now - old.stat().st_mtime > DOWNLOAD_TTL_S:
                old.unlink()
        except OSError:
            continue
    slug = "".join(ch if ch.isalnum() or ch in "-_" else "-" for ch in label)[:40] or "memories"
    handle, name = tempfile.mkstemp(prefix=f"smem-{slug}-learned-", suffix=".npz", dir=directory)
    os.close(handle)
    path = Path(name)
    pool.save(path)
    return path


def describe(pool: MemoryPool, label: str) -> str:
    """A Markdown status line about the visitor's pool; `label` may be an uploaded file's
    name, so it is escaped."""
    return (
        f"**{html.escape(label)}** · {counted(len(pool), 'memory')} · {counted(len(pool.links()), 'learned link')} · "
        f"{counted(pool.learning.answers, 'answer')} learned from"
    )
