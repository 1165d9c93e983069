"""Shared fixtures. Everything runs offline: no hub, no telemetry."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import hashlib

import numpy as np
import pytest


class KeyedEmbedder:
    """Deterministic embedder for unit tests: a text's vector is either given explicitly
    or derived from its hash, so tests control geometry exactly."""

    name = "keyed-test"

    def __init__(self, dim: int = 16, vectors: dict[str, np.ndarray] | None = None) -> None:
        self.dim = dim
        self.vectors = {text: np.asarray(v, dtype=np.float32) for text, v in (vectors or {}).items()}
        self.calls = 0

    def vector(self, text: str) -> np.ndarray:
        if text in self.vectors:
            v = self.vectors[text]
        else:
            seed = int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little")
            v = np.random.default_rng(seed).standard_normal(self.dim).astype(np.float32)
        return v / np.linalg.norm(v)

    def encode(self, texts: list[str]) -> np.ndarray:
        self.calls += 1
        return np.stack([self.vector(t) for t in texts]) if texts else np.zeros((0, self.dim), np.float32)

    def count_tokens(self, text: str) -> int:
        return len(text.split())


@pytest.fixture
def keyed() -> type[KeyedEmbedder]:
    return KeyedEmbedder


@pytest.fixture(scope="session")
def minilm():
    """The packaged offline all-MiniLM-L6-v2 (loads in a few seconds, once per session)."""
    from smem.embedder import default_embedder

    return default_embedder()
