"""Persistence: round trips, crash safety under a real SIGKILL, bad files, embedding cache."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pytest

from smem import MemoryFileError, MemoryPool, load_memories
from smem.memory.embedder import EmbeddingCache, embed_documents
from smem.memory.store import PoolFileError

NOW = datetime(2026, 6, 1, tzinfo=timezone.utc)
REPO = Path(__file__).resolve().parents[1]


def test_save_load_round_trip_keeps_everything(tmp_path, minilm):
    pool = MemoryPool(minilm, softmax_temperature=0.3, diversity_weight=0.4, association_weight=0.7, seed=3)
    pool.add_many(load_memories(REPO / "memories" / "tutor.json")[:40])
    for question in ["fractions", "soccer word problems", "how is Alex feeling", "fractions homework"]:
        pool.retrieve(question, max_memories=5, now=NOW)
    path = tmp_path / "pool.npz"
    pool.save(path)
    loaded = MemoryPool.load(path, minilm)
    assert loaded.memories == pool.memories
    assert loaded.links() == pool.links()
    assert (loaded.softmax_temperature, loaded.diversity_weight, loaded.association_weight, loaded.seed) == (0.3, 0.4, 0.7, 3)
    for name, value in pool.learning.to_arrays().items():
        np.testing.assert_array_equal(value, loaded.learning.to_arrays()[name], err_msg=name)
    for question in ["fractions", "Alex's mom", "science project"]:
        assert loaded.retrieve(question, 5, now=NOW, learn=False) == pool.retrieve(question, 5, now=NOW, learn=False)


def test_load_rejects_another_embedder(tmp_path, minilm, keyed):
    pool = MemoryPool(minilm)
    pool.add("Alex loves soccer")
    pool.save(tmp_path / "p.npz")
    with pytest.raises(PoolFileError, match="embedded with 'sentence-transformers/all-MiniLM-L6-v2'"):
        MemoryPool.load(tmp_path / "p.npz", keyed())


@pytest.mark.parametrize(
    "content, message",
    [
        (b"", "not a readable pool file"),
        (b"PK\x03\x04 truncated zip", "not a readable pool file"),
        (b"\x93NUMPY garbage", "not a readable pool file"),
    ],
)
def test_corrupt_pool_files_are_reported(tmp_path, minilm, content, message):
    path = tmp_path / "bad.npz"
    path.write_bytes(content)
    with pytest.raises(PoolFileError, match=message):
        MemoryPool.load(path, minilm)


def test_missing_pool_file(tmp_path, minilm):
    with pytest.raises(PoolFileError, match="no pool file"):
        MemoryPool.load(tmp_path / "nope.npz", minilm)


CHILD = textwrap.dedent(
    """
    import sys
    import numpy as np
    sys.path.insert(0, {repo!r})
    from smem import MemoryPool

    class Embedder:
        name, dim = "synthetic", 384
        def encode(self, texts):
            raise AssertionError("vectors are given")
        def count_tokens(self, text):
            return len(text.split())

    rng = np.random.default_rng(0)
    pool = MemoryPool(Embedder())
    pool.add_many([{{"content": f"memory {{i}}"}} for i in range(30000)], embeddings=rng.standard_normal((30000, 384)))
    pool.save(sys.argv[1])
    print("saved", len(pool), flush=True)
    while True:
        pool.add_many([{{"content": f"more {{len(pool)}}"}}], embeddings=rng.standard_normal((1, 384)))
        pool.save(sys.argv[1])
    """
)


def test_kill_during_save_leaves_previous_file_intact(tmp_path):
    path = tmp_path / "pool.npz"
    script = tmp_path / "child.py"
    script.write_text(CHILD.format(repo=str(REPO)))
    child = subprocess.Popen([sys.executable, str(script), str(path)], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().startswith("saved 30000")
        deadline = time.monotonic() + 60
        while not any(p.name.endswith(".tmp") for p in tmp_path.iterdir()):
            assert time.monotonic() < deadline, "the child never started a second save"
            time.sleep(0.001)
        os.kill(child.pid, signal.SIGKILL)
    finally:
        child.kill()
        child.wait()
    assert child.returncode == -signal.SIGKILL

    class Embedder:
        name, dim = "synthetic", 384

    loaded = MemoryPool.load(path, Embedder())
    assert len(loaded) >= 30000
    assert len(loaded.learning) == len(loaded)


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "set.json"
    path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.parametrize(
    "text, message",
    [
        ('[{"content": "ok"}, {"content": "x", "emotional_intensity": "high"}]', r"record 2, field 'emotional_intensity'"),
        ('[{"content": "ok"}, {"type": "pattern"}]', r"record 2, field 'content': Field required"),
        ('[{"content": "ok", "type": "mood"}]', r"record 1, field 'type'"),
        ('[{"content": "ok", "colour": "red"}]', r"record 1, field 'colour'"),
        ('[{"content": "ok", "created_at": "yesterday"}]', r"record 1, field 'created_at'"),
        ('[{"content": "a", "id": "x"}, {"content": "b", "id": "x"}]', r"record 2, field 'id': duplicate id 'x'"),
        ('{"content": "not a list"}', "must be a JSON list"),
        ("[]", "empty"),
        ('[{"content": "unterminated"', "not valid JSON"),
    ],
)
def test_bad_memory_files_name_record_and_field(tmp_path, text, message):
    with pytest.raises(MemoryFileError, match=message):
        load_memories(write(tmp_path, text))


def test_non_utf8_memory_file(tmp_path):
    path = tmp_path / "set.json"
    path.write_bytes(b'[{"content": "caf\xe9"}]')
    with pytest.raises(MemoryFileError, match="not UTF-8"):
        load_memories(path)


def test_shipped_memory_sets_are_valid():
    for path in sorted((REPO / "memories").glob("*.json")):
        records = load_memories(path)
        assert len(records) >= 120, path.name
        assert len({r.type for r in records}) == 7, path.name


def test_embedding_cache_persists_and_skips_known_texts(tmp_path, keyed):
    embedder = keyed(dim=8)
    embedder.cache = EmbeddingCache(tmp_path, embedder.name)
    first = embed_documents(embedder, ["a", "b", "a"])
    assert embedder.calls == 1
    np.testing.assert_array_equal(first[0], first[2])
    again = keyed(dim=8)
    again.cache = EmbeddingCache(tmp_path, again.name)
    second = embed_documents(again, ["b", "a", "c"])
    assert again.calls == 1
    np.testing.assert_array_equal(second[:2], first[[1, 0]])
    np.testing.assert_allclose(second[2], again.vector("c"))


def test_corrupt_embedding_cache_is_ignored(tmp_path, keyed):
    embedder = keyed(dim=8)
    embedder.cache = EmbeddingCache(tmp_path, embedder.name)
    embedder.cache.path.write_bytes(b"garbage")
    vectors = embed_documents(embedder, ["a"])
    np.testing.assert_allclose(vectors[0], embedder.vector("a"))
