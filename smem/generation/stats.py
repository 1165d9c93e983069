"""What one answer counts and times, kept apart from the decode loop that produces it."""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field
from typing import Any, Iterator, Optional

from smem.generation.events import DoneStats, StopReason


@dataclass
class Segment:
    """A stretch of the answer during which one memory set was in context."""

    ids: tuple[str, ...]
    start: int


@dataclass
class AnswerStats:
    """Counters and timers of one answer; `done()` turns them into `DoneStats`."""

    started: float = field(default_factory=time.perf_counter)
    retrievals: int = 0
    swaps: int = 0
    deferred: int = 0
    reread: int = 0
    drafted: int = 0
    """Tokens of the look-ahead draft (never shown, never in the answer)."""
    thinking_tokens: int = 0
    seconds: dict[str, float] = field(
        default_factory=lambda: {"retrieval": 0.0, "swap": 0.0, "prefill": 0.0, "lookahead": 0.0}
    )
    ttft: Optional[float] = None
    first_at: Optional[float] = None
    segments: list[Segment] = field(default_factory=list)
    ever: dict[str, None] = field(default_factory=dict)
    """Every memory that was in context at some point, in order of arrival."""

    @contextlib.contextmanager
    def timing(self, name: str) -> Iterator[None]:
        tick = time.perf_counter()
        yield
        self.seconds[name] += time.perf_counter() - tick

    def first_token(self) -> None:
        if self.ttft is None:
            self.first_at = time.perf_counter()
            self.ttft = self.first_at - self.started

    def context(self, ids: tuple[str, ...], at_token: int) -> None:
        """The memory set `ids` is in context from generated token `at_token` on."""
        self.ever.update(dict.fromkeys(ids))
        self.segments.append(Segment(ids, at_token))

    def restart(self, ids: tuple[str, ...]) -> None:
        """The answer starts over in the memory set `ids` (after a look-ahead draft): the draft's
        set stays among those ever in context but earns no share of the answer, so learning
        credits only the memories the shown answer was written with."""
        self.segments.clear()
        self.context(ids, 0)

    def done(self, tokens: int, stop_reason: StopReason, extra: dict[str, Any]) -> DoneStats:
        finished = time.perf_counter()
        decode_s = finished - self.first_at if self.first_at is not None else 0.0
        return DoneStats(
            tokens=tokens,
            thinking_tokens=self.thinking_tokens,
            swaps=self.swaps,
            retrievals=self.retrievals,
            stop_reason=stop_reason,
            ttft_s=round(self.ttft or 0.0, 4),
            total_s=round(finished - self.started, 4),
            tokens_per_s=round((tokens - 1) / decode_s, 3) if tokens > 1 and decode_s > 0 else 0.0,
            retrieval_ms=round(self.seconds["retrieval"] * 1000, 2),
            swap_ms=round(self.seconds["swap"] * 1000, 2),
            extra={
                "prefill_ms": round(self.seconds["prefill"] * 1000, 2),
                "lookahead_ms": round(self.seconds["lookahead"] * 1000, 2),
                "drafted_tokens": self.drafted,
                "swaps_per_100_tokens": round(100 * self.swaps / max(tokens, 1), 2),
                "ms_per_swap": round(1000 * self.seconds["swap"] / self.swaps, 2) if self.swaps else 0.0,
                "deferred_swaps": self.deferred,
                "swap_tokens_reread": self.reread,
                **extra,
            },
        )
