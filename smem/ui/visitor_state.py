"""A visitor's learned state, kept across page reloads and server restarts.

The browser keeps only a small key ring (`gr.BrowserState`, in its localStorage, encrypted by
Gradio with a secret kept under `$SMEM_STATE_DIR`, so a restart can still read it): which
memory set is open and, for each set the visitor changed, the unguessable id of a row in a
session store. The pools themselves (memories, vectors, learned Hebbian state) stay on the
server, in the same `SQLiteSessionStore` the HTTP API uses, in a file of their own so that
visitors never count against, or collide with, API sessions. Each answer's learning is one
transaction, as for API sessions: a kill -9 loses at most the answer in flight.

Rows are written only when a visitor changes something (an answer, an added memory, a reset,
an upload), so a visitor who only looks costs nothing. A row unused for the store's TTL
expires; the ring then drops its id and the visitor is told, rather than silently starting
afresh. Two tabs of one browser share the ring: the last one to write wins.
"""

from __future__ import annotations

import html
import logging
import os
import secrets
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from smem.memory.embedder import Embedder
from smem.memory.memory_sets import MemorySets
from smem.memory.pool import MemoryPool
from smem.memory.store import PoolFileError
from smem.serving.session_store import SessionStore

log = logging.getLogger(__name__)

SECRET_FILE = "browser-state.key"
SECRET_BYTES = 32
"""256 bits for the key Gradio derives its localStorage encryption key from."""


def browser_secret(directory: Path) -> str:
    """The secret `gr.BrowserState` encrypts with, made once and kept (mode 0600): Gradio's
    default is a new random secret per process, which would orphan every ring at a restart."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / SECRET_FILE
    try:
        return path.read_text(encoding="ascii").strip()
    except FileNotFoundError:
        pass
    secret = secrets.token_urlsafe(SECRET_BYTES)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w", encoding="ascii") as sink:
        sink.write(secret)
    return secret


@dataclass(frozen=True)
class KeyRing:
    """What the browser keeps: the open set and the store row of each set the visitor changed."""

    current: Optional[str] = None
    sessions: dict[str, str] = field(default_factory=dict)

    @classmethod
    def parse(cls, value: Any) -> "KeyRing":
        """Whatever came back from the browser; anything not shaped like a ring is no ring."""
        if not isinstance(value, dict):
            return cls()
        current = value.get("current")
        sessions = value.get("sessions")
        if not isinstance(sessions, dict):
            sessions = {}
        return cls(
            current if isinstance(current, str) else None,
            {label: ident for label, ident in sessions.items() if isinstance(label, str) and isinstance(ident, str)},
        )

    def as_json(self) -> dict[str, Any]:
        return {"current": self.current, "sessions": dict(self.sessions)}


@dataclass
class Restored:
    """A returning visitor's sets: the open one, the others (as `switch_set` stashes them), and
    a note for the status line."""

    label: str
    pool: MemoryPool
    stash: dict[str, tuple[MemoryPool, None]]
    ring: KeyRing
    note: str


class VisitorStates:
    """Reads and writes visitors' pools in `store`, named by the ids their browsers keep."""

    def __init__(self, store: SessionStore, sets: MemorySets, embedder: Embedder) -> None:
        self.store = store
        self.sets = sets
        self.embedder = embedder

    def restore(self, value: Any) -> Optional[Restored]:
        """The visitor's state as they left it, or None for a first visit (or an empty ring)."""
        ring = KeyRing.parse(value)
        if not ring.sessions and ring.current in (None, self.sets.default):
            return None
        now = time.time()
        self.store.sweep(now)
        pools: dict[str, MemoryPool] = {}
        lost: list[str] = []
        for label, ident in ring.sessions.items():
            stored = self.store.get(ident, now)
            if stored is None:
                lost.append(label)
                continue
            try:
                pools[label] = MemoryPool.load(stored.pool, self.embedder)
            except PoolFileError as error:  # written by an older version, or damaged
                log.warning("visitor row for %r unreadable: %s", label, error)
                lost.append(label)
        label = ring.current if ring.current in pools or ring.current in self.sets.names else self.sets.default
        pool = pools.pop(label, None) or self.sets.pool(label)
        kept = {name: ident for name, ident in ring.sessions.items() if name not in lost}
        note = (
            "⚠️ What you taught " + ", ".join(f"**{html.escape(name)}**" for name in lost) + " is gone (expired after the store's TTL, or unreadable); starting afresh."
            if lost
            else "↻ Welcome back: your learned state is restored."
        )
        return Restored(label, pool, {name: (other, None) for name, other in pools.items()}, KeyRing(label, kept), note)

    def save(self, value: Any, label: str, pool: MemoryPool, answered: bool = False) -> dict[str, Any]:
        """Keep `pool` as the visitor's `label` set (one transaction) and return the ring the
        browser should keep. `answered` counts an answer's learning; other changes (an added
        memory, a reset, an upload) replace the row."""
        ring = KeyRing.parse(value)
        now = time.time()
        data = pool.to_bytes()
        ident = ring.sessions.get(label)
        if ident is not None:
            kept = self.store.save_answer(ident, data, now) if answered else self.store.replace(ident, label, data, now)
            if not kept:
                ident = None
        if ident is None:
            ident = self.store.create(label, data, now)
        return KeyRing(label, {**ring.sessions, label: ident}).as_json()

    def opened(self, value: Any, label: str) -> dict[str, Any]:
        """The ring after the visitor switched to `label` (nothing is written to the store)."""
        ring = KeyRing.parse(value)
        return KeyRing(label, ring.sessions).as_json()
