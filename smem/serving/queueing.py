"""Serialised access to the one loaded model.

Generation is serialised, not batched: one answer streams at a time per process, in
arrival order. A waiting caller is told its place in line (the HTTP API forwards it as a
`queued` event; Gradio shows its own queue) and can give up while waiting.
"""

from __future__ import annotations

import itertools
import threading
from contextlib import contextmanager
from typing import Callable, Iterator, Optional


class Cancelled(Exception):
    """The caller gave up while waiting for the model."""


class GenerationQueue:
    def __init__(self) -> None:
        self._condition = threading.Condition()
        self._tickets = itertools.count()
        self._serving = 0
        self._next = 0
        self._abandoned: set[int] = set()

    @property
    def waiting(self) -> int:
        """Callers holding or waiting for the model."""
        with self._condition:
            return self._next - self._serving

    @contextmanager
    def slot(
        self,
        on_wait: Optional[Callable[[int], None]] = None,
        cancel: Optional[threading.Event] = None,
        poll_s: float = 0.25,
    ) -> Iterator[None]:
        """Hold the model for the duration of the block, first come first served.

        `on_wait(ahead)` is called whenever the number of callers ahead changes.
        """
        with self._condition:
            ticket = next(self._tickets)
            self._next = ticket + 1
            reported = None
            while ticket != self._serving:
                ahead = ticket - self._serving
                if on_wait is not None and ahead != reported:
                    reported = ahead
                    on_wait(ahead)
                if cancel is not None and cancel.is_set():
                    self._abandoned.add(ticket)
                    raise Cancelled()
                self._condition.wait(poll_s)
        try:
            yield
        finally:
            with self._condition:
                self._serving += 1
                while self._serving in self._abandoned:
                    self._abandoned.discard(self._serving)
                    self._serving += 1
                self._condition.notify_all()
