"""Serialised access to the one loaded model, fair to clients that wait and to those that leave.

Generation is serialised, not batched: one answer streams at a time per process, in
arrival order. A waiting caller is told its place in line (the HTTP API forwards it as a
`queued` event; Gradio shows its own queue) and can give up while waiting: its place is
freed at once, so callers that hang up never count against the queue's limit (issue 14: 31
such ghosts locked a real client out for a whole answer). Each caller may name a client (a
session, an address) so that one client cannot hold more than its share of places.
"""

from __future__ import annotations

import itertools
import threading
from collections import Counter
from contextlib import contextmanager
from typing import Callable, Iterator, Optional


class Cancelled(Exception):
    """The caller gave up while waiting for the model."""


class GenerationQueue:
    def __init__(self) -> None:
        self._condition = threading.Condition()
        self._tickets = itertools.count()
        self._line: list[int] = []
        """Tickets in arrival order; the first holds the model."""
        self._clients: Counter[str] = Counter()

    @property
    def waiting(self) -> int:
        """Callers holding or waiting for the model (never one that has left)."""
        with self._condition:
            return len(self._line)

    def held_by(self, client: str) -> int:
        """Places `client` holds now (generating or waiting)."""
        with self._condition:
            return self._clients[client]

    @contextmanager
    def slot(
        self,
        on_wait: Optional[Callable[[int], None]] = None,
        cancel: Optional[threading.Event] = None,
        poll_s: float = 0.25,  # chosen: a cancel is noticed within a quarter second; each wake is one lock
        client: Optional[str] = None,
    ) -> Iterator[None]:
        """Hold the model for the duration of the block, first come first served.

        `on_wait(ahead)` is called whenever the number of callers ahead changes. Setting
        `cancel` while waiting leaves the line at once (raising `Cancelled`).
        """
        with self._condition:
            ticket = next(self._tickets)
            self._line.append(ticket)
            if client is not None:
                self._clients[client] += 1
            try:
                reported = None
                while (ahead := self._line.index(ticket)) > 0:
                    if on_wait is not None and ahead != reported:
                        reported = ahead
                        on_wait(ahead)
                    if cancel is not None and cancel.is_set():
                        raise Cancelled()
                    self._condition.wait(poll_s)
            except BaseException:
                self._leave(ticket, client)
                raise
        try:
            yield
        finally:
            with self._condition:
                self._leave(ticket, client)

    def _leave(self, ticket: int, client: Optional[str]) -> None:
        """Called with the condition held: free the place and wake the others (their positions moved)."""
        self._line.remove(ticket)
        if client is not None:
            self._clients[client] -= 1
            if not self._clients[client]:
                del self._clients[client]
        self._condition.notify_all()
