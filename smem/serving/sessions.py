"""Per-session Hebbian state for the HTTP API, in a bounded least-recently-used store.

A session is keyed by (session id, memory set): a client that switches sets gets one
learned pool per set instead of an error. Past `limit` keys the least recently used one is
dropped, so a server that many clients name sessions on keeps a bounded footprint.

Each session has a lock held for a whole answer, so two requests for the same session apply
their learning one after the other instead of interleaving on one pool. An answer that fails
restores the state it started from: a half-applied Hebbian update would skew every later
retrieval of that session. Readers (`GET /memories`) see the state published after the last
finished answer and never wait for a running one.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Iterator, Optional

from smem.memory.learning import LearningState
from smem.memory.memory_sets import MemorySets
from smem.memory.pool import MemoryPool


@dataclass
class Session:
    pool: MemoryPool
    published: LearningState
    """The learning state as of the last finished answer, for readers."""
    answers: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)


class SessionPools:
    def __init__(self, sets: MemorySets, limit: int = 256) -> None:
        if limit < 1:
            raise ValueError("the session limit must be at least 1")
        self.sets = sets
        self.limit = limit
        self.evicted = 0
        self._sessions: OrderedDict[tuple[str, str], Session] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        with self._lock:
            return len(self._sessions)

    def _session(self, memory_set: str, session_id: str) -> Session:
        """The session, created from the set's initial state if new; marks it most recent."""
        key = (session_id, memory_set)
        with self._lock:
            session = self._sessions.get(key)
        if session is None:
            pool = self.sets.pool(memory_set)  # outside the store lock: the first copy of a set embeds it
            session = Session(pool=pool, published=pool.learning_state())
        with self._lock:
            session = self._sessions.setdefault(key, session)
            self._sessions.move_to_end(key)
            while len(self._sessions) > self.limit:
                self._sessions.popitem(last=False)
                self.evicted += 1
        return session

    @contextmanager
    def checkout(self, memory_set: str, session_id: Optional[str]) -> Iterator[MemoryPool]:
        """The pool one answer works on: the session's own, held exclusively for the answer, or
        a fresh copy of the set when there is no session id."""
        if session_id is None:
            yield self.sets.pool(memory_set)
            return
        session = self._session(memory_set, session_id)
        with session.lock:
            before = session.pool.learning_state()
            try:
                yield session.pool
            except BaseException:
                session.pool.set_learning_state(before)
                raise
            session.answers += 1
            session.published = session.pool.learning_state()

    def state(self, memory_set: str, session_id: str) -> Optional[tuple[MemoryPool, LearningState, int]]:
        """A session's pool, published learning state and answer count, without touching its
        recency; None if the session does not exist (never created, or evicted)."""
        with self._lock:
            session = self._sessions.get((session_id, memory_set))
            if session is None:
                return None
            return session.pool, session.published, session.answers
