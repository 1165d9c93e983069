"""Where sessions live between answers and across restarts: a small interface and its
default, an embedded SQLite database in WAL mode.

A session row holds the session's whole pool as a pool file (memories, vectors, learned
Hebbian state: `MemoryPool.to_bytes`), the label of the memory set it started from, how many
answers it learned from, and when it was created and last used. Each answer's learning is
one `UPDATE` in one transaction, so a process killed at any moment (kill -9 included) loses
at most the answer in flight. A session unused for `ttl_s` seconds is expired: it reads as
absent and is deleted on the next sweep, never evicted by other clients' traffic.

Ids are 192 random bits (`secrets.token_urlsafe(24)`): a session cannot be guessed, only
handed out by `POST /sessions`.

One process per database: SQLite serialises writers, and WAL lets `GET /memories` read while
an answer commits. A deployment that outgrows one process implements `SessionStore` over a
shared server instead (docs/api.md "Storage"): Postgres, a `sessions` table of the same
columns with `pool BYTEA` and the same single-row `UPDATE` per answer, configured by
`SMEM_SESSION_STORE=postgresql://…`; or Redis, one hash per session with `EXPIRE` as the TTL.
"""

from __future__ import annotations

import secrets
import sqlite3
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Protocol

from smem.serving.settings import ServerSettings

ID_BYTES = 24
"""192 bits of randomness per session id; the issue asks for at least 128."""
SCHEMA = """
CREATE TABLE IF NOT EXISTS sessions (
    id TEXT PRIMARY KEY,
    label TEXT NOT NULL,
    pool BLOB NOT NULL,
    answers INTEGER NOT NULL DEFAULT 0,
    created REAL NOT NULL,
    last_used REAL NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS sessions_last_used ON sessions (last_used);
"""


@dataclass(frozen=True)
class StoredSession:
    id: str
    label: str
    """The memory set it started from, or an upload's name."""
    pool: bytes
    """A pool file (`MemoryPool.to_bytes`)."""
    answers: int
    created: float
    last_used: float


class SessionStore(Protocol):
    """What the serving layer needs from session storage. Times are epoch seconds."""

    ttl_s: float

    def create(self, label: str, pool: bytes, now: float) -> str:
        """Store a new session; returns its fresh unguessable id."""
        ...

    def get(self, session_id: str, now: float) -> Optional[StoredSession]:
        """The session, or None if it never existed or has expired."""
        ...

    def save_answer(self, session_id: str, pool: bytes, now: float) -> bool:
        """Commit one answer's learning (the new pool, one more answer) atomically; False if the
        session is gone."""
        ...

    def replace(self, session_id: str, label: str, pool: bytes, now: float) -> bool:
        """Replace a session's pool (an import); False if the session is gone."""
        ...

    def delete(self, session_id: str) -> bool: ...

    def sweep(self, now: float) -> int:
        """Delete expired sessions; returns how many."""
        ...

    def __len__(self) -> int: ...


def new_session_id() -> str:
    return secrets.token_urlsafe(ID_BYTES)


def state_dir() -> Path:
    """Where durable state lives: `ServerSettings.state_dir` ($SMEM_STATE_DIR; on a Space with
    persistent storage, `/data`)."""
    return ServerSettings().state_dir


class SQLiteSessionStore:
    """The default `SessionStore`: one SQLite file in WAL mode, safe for this process's threads."""

    def __init__(self, path: Optional[Path] = None, ttl_s: float = 30 * 24 * 3600) -> None:  # ApiSettings.session_ttl_s's default
        self.path = Path(path or state_dir() / "sessions.sqlite3")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.ttl_s = float(ttl_s)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        # FULL: a commit is on disk before the answer's stream ends, surviving power loss too
        # (NORMAL would survive kill -9 but not a power cut). One fsync per answer is cheap.
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(SCHEMA)

    def _expired_before(self, now: float) -> float:
        return now - self.ttl_s

    def create(self, label: str, pool: bytes, now: float) -> str:
        session_id = new_session_id()
        with self._lock:
            self._db.execute(
                "INSERT INTO sessions (id, label, pool, answers, created, last_used) VALUES (?, ?, ?, 0, ?, ?)",
                (session_id, label, pool, now, now),
            )
        return session_id

    def get(self, session_id: str, now: float) -> Optional[StoredSession]:
        with self._lock:
            row = self._db.execute(
                "SELECT id, label, pool, answers, created, last_used FROM sessions WHERE id = ? AND last_used >= ?",
                (session_id, self._expired_before(now)),
            ).fetchone()
        return None if row is None else StoredSession(*row)

    def save_answer(self, session_id: str, pool: bytes, now: float) -> bool:
        with self._lock:
            cursor = self._db.execute(
                "UPDATE sessions SET pool = ?, answers = answers + 1, last_used = ? WHERE id = ? AND last_used >= ?",
                (pool, now, session_id, self._expired_before(now)),
            )
        return cursor.rowcount == 1

    def replace(self, session_id: str, label: str, pool: bytes, now: float) -> bool:
        with self._lock:
            cursor = self._db.execute(
                "UPDATE sessions SET label = ?, pool = ?, answers = 0, last_used = ? WHERE id = ? AND last_used >= ?",
                (label, pool, now, session_id, self._expired_before(now)),
            )
        return cursor.rowcount == 1

    def delete(self, session_id: str) -> bool:
        with self._lock:
            return self._db.execute("DELETE FROM sessions WHERE id = ?", (session_id,)).rowcount == 1

    def sweep(self, now: float) -> int:
        with self._lock:
            return self._db.execute("DELETE FROM sessions WHERE last_used < ?", (self._expired_before(now),)).rowcount

    def __len__(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM sessions").fetchone()[0])

    def close(self) -> None:
        with self._lock:
            self._db.close()
