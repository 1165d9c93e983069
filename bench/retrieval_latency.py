"""Latency of `MemoryPool.retrieve` (k=10, learn=True, 384-d) against numpy brute force.

Vectors are synthetic but clustered like real memory embeddings (each memory near one of
N/50 topic centres, cosine ≈ 0.7 to it; queries near a random centre), so top-10 is
meaningful and the ANN index is not flattered by uniform noise. For every query the
fast path's top-10 is compared with exact scoring of every memory.

    python bench/retrieval_latency.py --sizes 1000 10000 100000 1000000
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
import time
from pathlib import Path

import numpy as np
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from runlog import print_run_config  # noqa: E402  (bench/ is on sys.path when a benchmark runs)

from smem import MemoryPool  # noqa: E402

DIM = 384


class SyntheticEmbedder:
    """Stands in for a sentence embedder: the benchmark passes vectors directly."""

    name = "synthetic-384"
    dim = DIM

    def encode(self, texts: list[str]) -> np.ndarray:
        raise NotImplementedError("the benchmark supplies embeddings")

    def count_tokens(self, text: str) -> int:
        return len(text.split())


def clustered(rng: np.random.Generator, size: int, centres: np.ndarray, spread: float) -> np.ndarray:
    vectors = centres[rng.integers(0, len(centres), size)]
    vectors += rng.standard_normal((size, DIM), dtype=np.float32) * (spread / np.sqrt(DIM))
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors


def unit(rng: np.random.Generator, count: int) -> np.ndarray:
    vectors = rng.standard_normal((count, DIM), dtype=np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def rss() -> int:
    return psutil.Process(os.getpid()).memory_info().rss


def measure(size: int, queries: int, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    centres = unit(rng, max(size // 50, 10))
    vectors = clustered(rng, size, centres, spread=1.0)
    query_vectors = clustered(rng, queries, centres, spread=1.0)
    records = [{"content": f"memory {i} topic {i % 97}"} for i in range(size)]

    gc.collect()
    before = rss()
    started = time.perf_counter()
    pool = MemoryPool(SyntheticEmbedder(), seed=seed)
    pool.add_many(records, embeddings=vectors)
    index_s = pool.build_index() or 0.0
    build_s = time.perf_counter() - started
    used = rss() - before
    del records

    for q in query_vectors[:5]:
        pool.retrieve(q, max_memories=10, learn=False)

    brute, fast, same = [], [], 0
    matrix = pool._index.vectors
    for q in query_vectors:
        t0 = time.perf_counter()
        sims = matrix @ q
        top = np.argpartition(-sims, 10)[:10]
        top = top[np.argsort(-sims[top])]
        brute.append(time.perf_counter() - t0)

        exact = [hit.id for hit in pool.retrieve(q, max_memories=10, learn=False, exact=True)]
        t0 = time.perf_counter()
        hits = pool.retrieve(q, max_memories=10, learn=True)
        fast.append(time.perf_counter() - t0)
        same += [hit.id for hit in hits] == exact
    return {
        "size": size,
        "median_ms": 1e3 * float(np.median(fast)),
        "p95_ms": 1e3 * float(np.percentile(fast, 95)),
        "brute_median_ms": 1e3 * float(np.median(brute)),
        "brute_p95_ms": 1e3 * float(np.percentile(brute, 95)),
        "same_top10": same / len(query_vectors),
        "rss_mb": used / 2**20,
        "vectors_mb": matrix.nbytes / 2**20,
        "build_s": build_s,
        "index_s": index_s,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1_000, 10_000, 100_000, 1_000_000])
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    print_run_config(args)
    print(f"threads: {os.cpu_count()} cpus; numpy {np.__version__}")
    print("\n| memories | retrieve median | retrieve p95 | brute force median | brute force p95 | same top-10 as exact | memory used | pool build (of which quantisation) |")
    print("|---|---|---|---|---|---|---|---|")
    for size in args.sizes:
        r = measure(size, args.queries, args.seed)
        print(
            f"| {r['size']:,} | {r['median_ms']:.2f} ms | {r['p95_ms']:.2f} ms | {r['brute_median_ms']:.2f} ms | "
            f"{r['brute_p95_ms']:.2f} ms | {100 * r['same_top10']:.1f}% | {r['rss_mb']:.0f} MB "
            f"(vectors {r['vectors_mb']:.0f} MB) | {r['build_s']:.1f} s ({r['index_s']:.1f} s) |",
            flush=True,
        )
        gc.collect()


if __name__ == "__main__":
    main()
