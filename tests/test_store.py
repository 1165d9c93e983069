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


# -- atomic writes -----------------------------------------------------------------------------


def test_atomic_write_keeps_the_file_mode_and_cleans_up_on_failure(tmp_path):
    from smem.memory.store import atomic_write

    path = tmp_path / "shared.bin"
    atomic_write(path, lambda fh: fh.write(b"one"))
    path.chmod(0o640)
    atomic_write(path, lambda fh: fh.write(b"two"))
    assert path.read_bytes() == b"two" and path.stat().st_mode & 0o777 == 0o640

    def failing(fh):
        fh.write(b"half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        atomic_write(path, failing)
    assert path.read_bytes() == b"two" and sorted(p.name for p in tmp_path.iterdir()) == ["shared.bin"]


def test_a_write_removes_what_a_killed_writer_left_but_not_a_live_ones(tmp_path):
    from smem.memory.store import atomic_write

    path = tmp_path / "pool.npz"
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    orphan = tmp_path / f".pool.npz.{int(dead.stdout)}.abc.tmp"
    live = tmp_path / f".pool.npz.{os.getppid()}.def.tmp"
    orphan.write_bytes(b"x" * 100)
    live.write_bytes(b"y")
    atomic_write(path, lambda fh: fh.write(b"new"))
    assert not orphan.exists() and live.exists()


# -- loading checks every field ----------------------------------------------------------------


@pytest.fixture(scope="module")
def learned_file(tmp_path_factory, minilm) -> Path:
    pool = MemoryPool(minilm)
    pool.add_many(load_memories(REPO / "memories" / "tutor.json")[:12])
    for question in ["fractions", "soccer", "how is Alex feeling"]:
        pool.retrieve(question, max_memories=4, now=NOW)
    path = tmp_path_factory.mktemp("pool") / "learned.npz"
    pool.save(path)
    return path


def _rewrite(path: Path, target: Path, arrays=None, meta=None) -> Path:
    """A copy of a pool file with some arrays or metadata fields replaced."""
    import json

    from smem.memory.store import read_pool_file

    content, document = read_pool_file(path)
    content.update(arrays or {})
    document.update(meta or {})
    payload = {**content, "meta": np.frombuffer(json.dumps(document).encode(), dtype=np.uint8)}
    with target.open("wb") as fh:
        np.savez(fh, **payload)
    return target


def _arrays(path):
    from smem.memory.store import read_pool_file

    return read_pool_file(path)


@pytest.mark.parametrize(
    "change, field",
    [
        (lambda a, m: {"vectors": a["vectors"][:, :100]}, "vectors"),
        (lambda a, m: {"vectors": np.zeros_like(a["vectors"])}, "vectors"),
        (lambda a, m: {"vectors": a["vectors"] * 3}, "vectors"),
        (lambda a, m: {"counts": np.where(np.arange(len(a["counts"])) == 0, np.nan, a["counts"])}, "counts"),
        (lambda a, m: {"query_slot": np.full_like(a["query_slot"], 999)}, "query_slot"),
        (lambda a, m: {"link_a": a["link_a"] + 10_000}, "link_a"),
        (lambda a, m: {"link_w": np.full_like(a["link_w"], np.nan)}, "link_w"),
        (lambda a, m: {"query_sum": np.full_like(a["query_sum"], np.inf)}, "query_sum"),
        (lambda a, m: {"counts": a["counts"].astype(str)}, "counts"),
        (lambda a, m: {"memories": m["memories"][:1] * 2 + m["memories"][2:]}, "memories"),
        (lambda a, m: {"memories": [{**m["memories"][0], "emotional_intensity": float("nan")}] + m["memories"][1:]}, "memories.0.emotional_intensity"),
        (lambda a, m: {"params": {**m["params"], "weights": {**m["params"]["weights"], "recency_half_life_days": 0}}}, "params.weights.recency_half_life_days"),
        (lambda a, m: {"params": {**m["params"], "softmax_temperature": -1}}, "params.softmax_temperature"),
    ],
)
def test_inconsistent_pool_files_are_refused_naming_the_field(learned_file, tmp_path, minilm, change, field):
    arrays, meta = _arrays(learned_file)
    replaced = change(arrays, meta)
    target = _rewrite(learned_file, tmp_path / "bad.npz", {k: v for k, v in replaced.items() if k in arrays}, {k: v for k, v in replaced.items() if k not in arrays})
    with pytest.raises(PoolFileError, match=f"field '{field}'"):
        MemoryPool.load(target, minilm)


def test_a_json_list_as_metadata_is_refused(learned_file, tmp_path, minilm):
    arrays, _ = _arrays(learned_file)
    with (tmp_path / "list.npz").open("wb") as fh:
        np.savez(fh, **arrays, meta=np.frombuffer(b"[1, 2]", dtype=np.uint8))
    with pytest.raises(PoolFileError, match="field 'meta' must be a JSON object"):
        MemoryPool.load(tmp_path / "list.npz", minilm)


def test_a_huge_declared_shape_is_refused_before_allocating(learned_file, tmp_path, minilm):
    import zipfile

    header = np.lib.format.header_data_from_array_1_0(np.zeros(3, dtype=np.float32))
    header["shape"] = (10**12,)
    target = tmp_path / "huge.npz"
    with zipfile.ZipFile(learned_file) as source, zipfile.ZipFile(target, "w") as out:
        for info in source.infolist():
            data = source.read(info)
            if info.filename == "counts.npy":
                import io

                buffer = io.BytesIO()
                np.lib.format.write_array_header_1_0(buffer, header)
                data = buffer.getvalue() + b"\0" * 12
            out.writestr(info.filename, data)
    with pytest.raises(PoolFileError, match="array 'counts' declares shape"):
        MemoryPool.load(target, minilm)


def test_loading_from_bytes_matches_loading_from_the_file(learned_file, minilm):
    from_file = MemoryPool.load(learned_file, minilm)
    from_bytes = MemoryPool.load(learned_file.read_bytes(), minilm)
    assert from_bytes.memories == from_file.memories and from_bytes.links() == from_file.links()
    assert from_file.to_bytes() == MemoryPool.load(from_file.to_bytes(), minilm).to_bytes()


VALUES = (float("nan"), float("inf"), -1.0, 0.0, 1e30, -(2**31), 2**40, 7)


def test_corrupted_values_load_cleanly_or_raise_pool_file_error(learned_file, tmp_path, minilm):
    """Any value of any array replaced by a hostile one (NaN, inf, negative, huge), or any array
    truncated: the loader refuses with PoolFileError, or the pool retrieves finite scores."""
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    arrays, _ = _arrays(learned_file)
    keys = sorted(key for key, value in arrays.items() if value.size)

    @settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(st.sampled_from(keys), st.integers(0, 10**6), st.sampled_from(VALUES), st.booleans())
    def check(key, position, value, truncate):
        array = arrays[key].copy()
        if truncate:
            array = array[: position % len(array)]
        else:
            flat = array.reshape(-1)
            flat[position % flat.size] = value if array.dtype.kind == "f" else int(np.clip(value if np.isfinite(value) else -5, -(2**31), 2**31 - 1))
        target = _rewrite(learned_file, tmp_path / "fuzzed.npz", {key: array})
        try:
            pool = MemoryPool.load(target, minilm)
        except PoolFileError:
            return
        hits = pool.retrieve("fractions and soccer", max_memories=4, now=NOW)
        assert all(np.isfinite(hit.score) for hit in hits)

    check()


def test_embedding_cache_is_capped_oldest_first(tmp_path, keyed):
    embedder = keyed(dim=8)
    embedder.cache = EmbeddingCache(tmp_path, embedder.name, max_entries=5)
    embed_documents(embedder, [f"t{i}" for i in range(4)])
    embed_documents(embedder, [f"t{i}" for i in range(4, 8)])
    rows = embedder.cache._db.execute("SELECT COUNT(*) FROM vectors").fetchone()[0]
    assert rows == 5
    calls = embedder.calls
    embed_documents(embedder, ["t7", "t6", "t5", "t4", "t3"])  # the newest five: all cached
    assert embedder.calls == calls
    embed_documents(embedder, ["t0"])  # dropped as the oldest
    assert embedder.calls == calls + 1


WRITER = textwrap.dedent(
    """
    import sys, hashlib
    import numpy as np
    sys.path.insert(0, {repo!r})
    from smem.memory.embedder import EmbeddingCache, embed_documents

    class Embedder:
        name, dim = "shared-test", 8
        def encode(self, texts):
            return np.stack([np.frombuffer(hashlib.sha256(t.encode()).digest()[:32], dtype=np.float32) for t in texts])

    embedder = Embedder()
    embedder.cache = EmbeddingCache(sys.argv[1], embedder.name)
    for batch in range(20):
        embed_documents(embedder, [f"{{sys.argv[2]}}-{{batch}}-{{i}}" for i in range(10)])
    """
)


def test_processes_sharing_the_embedding_cache_keep_each_others_entries(tmp_path):
    script = tmp_path / "writer.py"
    script.write_text(WRITER.format(repo=str(REPO)))
    writers = [subprocess.Popen([sys.executable, str(script), str(tmp_path / "cache"), name]) for name in ("a", "b")]
    assert [writer.wait(120) for writer in writers] == [0, 0]
    cache = EmbeddingCache(tmp_path / "cache", "shared-test")
    assert cache._open().execute("SELECT COUNT(*) FROM vectors").fetchone()[0] == 400
