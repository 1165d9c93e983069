"""API sessions: durable per-session pools, held one answer at a time.

A session is created by `create` (a memory set's initial state, or an uploaded or imported
pool) and named by the unguessable id its store hands out; nothing else creates one, so a
request naming an unknown or expired id is refused (`SessionNotFound`), never silently started
afresh. The store (`SessionStore`, SQLite by default) is the truth; this class keeps the
pools of recently used sessions loaded so that an answer does not rebuild its indexes, and
can drop any idle one at will (`cache_limit`) without losing anything.

Each session has a lock held for a whole answer, so two requests for the same session apply
their learning one after the other instead of interleaving on one pool. An answer that
finishes commits its learning in one store transaction; one that fails restores the state it
started from, since a half-applied Hebbian update would skew every later retrieval. Readers
(`GET /memories`) see the state published after the last finished answer and never wait.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Iterator

from smem.memory.embedder import Embedder
from smem.memory.learning import LearningState
from smem.memory.pool import MemoryPool
from smem.serving.session_store import SessionStore

CACHE_LIMIT = 64
"""Loaded session pools kept in memory: ~1.5 MiB each for the sample sets (tests/test_api_load.py),
so about 100 MiB at most; a session past it is reloaded from the store when used again."""


class SessionNotFound(KeyError):
    def __str__(self) -> str:
        return str(self.args[0])


@dataclass
class LiveSession:
    pool: MemoryPool
    label: str
    published: LearningState
    """The learning state as of the last finished answer, for readers."""
    answers: int
    last_used: float
    lock: threading.Lock = field(default_factory=threading.Lock)


class Sessions:
    def __init__(self, store: SessionStore, embedder: Embedder, cache_limit: int = CACHE_LIMIT) -> None:
        self.store = store
        self.embedder = embedder
        self.cache_limit = cache_limit
        self._live: OrderedDict[str, LiveSession] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self.store)

    def create(self, pool: MemoryPool, label: str) -> str:
        """A new session starting from `pool` (not kept: the session has its own copy)."""
        return self.store.create(label, pool.to_bytes(), time.time())

    def _session(self, session_id: str) -> LiveSession:
        now = time.time()
        with self._lock:
            live = self._live.get(session_id)
            if live is not None and live.last_used >= now - self.store.ttl_s:
                self._live.move_to_end(session_id)
                return live
        stored = self.store.get(session_id, now)
        if stored is None:
            with self._lock:
                self._live.pop(session_id, None)
            raise SessionNotFound(f"no session {session_id!r} (never created, expired or deleted)")
        pool = MemoryPool.load(stored.pool, self.embedder)
        live = LiveSession(pool=pool, label=stored.label, published=pool.learning_state(), answers=stored.answers, last_used=stored.last_used)
        with self._lock:
            live = self._live.setdefault(session_id, live)
            self._live.move_to_end(session_id)
            idle = [key for key, other in self._live.items() if not other.lock.locked()]
            for key in idle[: max(len(self._live) - self.cache_limit, 0)]:
                del self._live[key]
        return live

    def label(self, session_id: str) -> str:
        return self._session(session_id).label

    @contextmanager
    def checkout(self, session_id: str) -> Iterator[MemoryPool]:
        """The session's pool, held exclusively for one answer; its learning is committed when
        the block ends normally and undone when it raises."""
        live = self._session(session_id)
        with live.lock:
            before = live.pool.learning_state()
            try:
                yield live.pool
            except BaseException:
                live.pool.set_learning_state(before)
                raise
            now = time.time()
            if not self.store.save_answer(session_id, live.pool.to_bytes(), now):
                live.pool.set_learning_state(before)
                raise SessionNotFound(f"session {session_id!r} was deleted or expired during the answer")
            live.answers += 1
            live.last_used = now
            live.published = live.pool.learning_state()

    def replace(self, session_id: str, pool: MemoryPool, label: str) -> None:
        """Store `pool` as the session's whole state (a UI visitor uploaded a set, added a memory
        or reset learning; the store keyed by an id the browser keeps makes that survive a
        reload). Waits for a running answer of the session; its answer count starts again."""
        live = self._session(session_id)
        with live.lock:
            now = time.time()
            if not self.store.replace(session_id, label, pool.to_bytes(), now):
                raise SessionNotFound(f"no session {session_id!r} (never created, expired or deleted)")
            live.pool, live.label, live.answers, live.last_used = pool.copy(), label, 0, now
            live.published = live.pool.learning_state()

    def state(self, session_id: str) -> tuple[MemoryPool, LearningState, int, str]:
        """A session's pool, published learning state, answer count and label."""
        live = self._session(session_id)
        return live.pool, live.published, live.answers, live.label

    def export(self, session_id: str) -> tuple[bytes, str]:
        """The session's pool file as of its last finished answer, and its label."""
        stored = self.store.get(session_id, time.time())
        if stored is None:
            raise SessionNotFound(f"no session {session_id!r} (never created, expired or deleted)")
        return stored.pool, stored.label

    def delete(self, session_id: str) -> bool:
        with self._lock:
            self._live.pop(session_id, None)
        return self.store.delete(session_id)

    def sweep(self) -> int:
        return self.store.sweep(time.time())
