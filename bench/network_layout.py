"""Cost of the Hebbian network figure as the pool grows (issue 13: the old spring layout of
every memory took 7.6 s at 500 memories and 161 s at 4,000, on every pool change).

A pool of N memories with random unit vectors (no embedder needed: only the figure is timed)
learns A simulated answers, each linking 8 memories drawn from the first 400 (what a visitor
reaches in a session). Then, as in the app: the first figure after the answers (a layout
from scratch), a redraw with nothing new (cached), and the redraw after one more answer
(incremental layout). Figures are medians of `--repeat` runs.

    nice -n 10 python bench/network_layout.py --sizes 151 1000 10000 --answers 20
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from smem.memory.pool import MemoryPool  # noqa: E402
from smem.ui import viz  # noqa: E402

DIM = 32


class RandomEmbedder:
    """Unit random vectors: the figure never looks at them."""

    name = "bench-random"
    dim = DIM

    def encode(self, texts: list[str]) -> np.ndarray:
        rng = np.random.default_rng(len(texts))
        vectors = rng.standard_normal((len(texts), DIM)).astype(np.float32)
        return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)

    def count_tokens(self, text: str) -> int:
        return len(text.split())


def build(size: int, answers: int, rng: np.random.Generator) -> MemoryPool:
    pool = MemoryPool(RandomEmbedder())
    types = ["current_state", "what_works", "pattern", "insight", "relationship", "parent", "behavior"]
    pool.add_many(
        [{"content": f"memory {i}: a first-person note of about twelve words", "type": types[i % 7]} for i in range(size)],
        embeddings=RandomEmbedder().encode(["x"] * size),
    )
    for _ in range(answers):
        learn(pool, rng)
    return pool


def learn(pool: MemoryPool, rng: np.random.Generator) -> list[str]:
    ids = [pool.memories[i].id for i in rng.choice(min(len(pool), 400), size=8, replace=False)]
    pool.reinforce(ids)
    return ids


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[151, 1000, 10000])
    parser.add_argument("--answers", type=int, default=20)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    print(f"settings: {vars(args)}; MAX_LAID_OUT={viz.MAX_LAID_OUT} ITERATIONS={viz.ITERATIONS} GRAVITY={viz.GRAVITY}")
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs (shared, loaded)")
    print("| memories | links | drawn | first figure (s) | cached redraw (s) | after one more answer (s) | figure JSON (MB) |")
    print("|---:|---:|---:|---:|---:|---:|---:|")
    for size in args.sizes:
        first, cached, grown = [], [], []
        for repeat in range(args.repeat):
            rng = np.random.default_rng(repeat)
            pool = build(size, args.answers, rng)
            layout = viz.NetworkLayout()
            first.append(timed(lambda: viz.network_figure(pool, layout)))
            cached.append(timed(lambda: viz.network_figure(pool, layout)))
            in_context = learn(pool, rng)
            grown.append(timed(lambda: viz.network_figure(pool, layout, in_context)))
        figure = viz.network_figure(pool, layout)
        megabytes = len(figure.to_json()) / 1e6
        print(
            f"| {size} | {len(pool.links())} | {len(layout.positions)} | {statistics.median(first):.3f} | "
            f"{statistics.median(cached):.3f} | {statistics.median(grown):.3f} | {megabytes:.2f} |"
        )


if __name__ == "__main__":
    main()
