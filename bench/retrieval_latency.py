"""Latency of `MemoryPool.retrieve` (k=10, learn=True, 384-d) against numpy brute force.

Data shapes (`--shapes`):
- `n/50`, `200`, `20`: synthetic vectors in that many topic clusters (each memory near one
  centre, cosine ≈ 0.7 to it; queries near a random centre). Few broad topics make the
  candidate widening work hardest: more memories tie with the top ones.
- `locomo`: real sentence embeddings (the packaged MiniLM) of every LoCoMo dialog turn
  and every memory-set line, grown to the size with paraphrase-like noise (each copy at
  cosine 0.8–0.93 to its source); queries are the LoCoMo questions, as vectors.
- `locomo-text`: the same pool, the questions asked as text (hybrid cosine + BM25, the
  path the engine takes).

For every query the selection is compared with `retrieve(..., exact=True)` on the same
state (ids in order and scores, bit for bit), and the candidates the fast path scored are
counted. With `--approximate`, `retrieve(..., approximate=True)` (inverted lists, no proof)
is timed beside the exact fast path, both with learning off and interleaved, and its recall
against exact is measured on the checked queries: the share of exact's picks it picks too
(selection overlap) and the share of the 10 most similar memories among its candidates
(top-10 similarity recall). Brute force (float32 matrix-vector product + argpartition top-10) runs beside it,
interleaved query by query, with the same one-thread BLAS pinning. Both are timed by wall
clock and by this thread's CPU time: on a shared, overloaded machine the CPU time is the
figure that still says what a query costs.

Every timed query learns (learn=True), so a pool starts empty of learned state and ends with
~k per query of it; `--used-queries N` has it learn from N other queries first, as a pool in use
has (the last column counts its memories with learned state at the first and last timed query).
`--sessions S` dates the memories in sessions of S (LoCoMo's dev sessions: 21.6 turns on
average, median 20), so the pool links neighbours at encoding and spreading activation joins
the candidates, as in a real pool; without it the pool has no links.

    nice -n 10 python bench/retrieval_latency.py --sizes 1000 100000 --queries 50
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import psutil
from threadpoolctl import threadpool_limits

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from locomo import load as load_locomo  # noqa: E402  (bench/ is on sys.path when a benchmark runs)
from runlog import print_run_config  # noqa: E402

from smem import MemoryPool  # noqa: E402
from smem.memory import pages  # noqa: E402
from smem.memory.embedder import default_embedder, embed_documents  # noqa: E402

DIM = 384
ROOT = Path(__file__).resolve().parents[1]


class FixedEmbedder:
    """Stands in for a sentence embedder: the benchmark supplies every vector."""

    name = "bench-384"
    dim = DIM

    def encode(self, texts: list[str]) -> np.ndarray:
        raise NotImplementedError("the benchmark supplies embeddings")

    def count_tokens(self, text: str) -> int:
        return len(text.split())


def unit(vectors: np.ndarray) -> np.ndarray:
    return (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32)


def clustered(rng: np.random.Generator, size: int, centres: np.ndarray) -> np.ndarray:
    vectors = centres[rng.integers(0, len(centres), size)]
    vectors += rng.standard_normal((size, DIM), dtype=np.float32) / np.float32(np.sqrt(DIM))
    return unit(vectors)


def synthetic(shape: str, size: int, queries: int, rng: np.random.Generator):
    count = max(size // 50, 10) if shape == "n/50" else int(shape)
    centres = unit(rng.standard_normal((count, DIM), dtype=np.float32))
    texts = [f"memory {i} topic {i % 97}" for i in range(size)]
    return clustered(rng, size, centres), texts, list(clustered(rng, queries, centres)), None


def real_sentences(data: Path) -> tuple[list[str], list[str]]:
    """Every LoCoMo turn and memory-set line (pool texts) and the LoCoMo questions (queries)."""
    texts, questions = [], []
    for conversation in load_locomo(data):
        texts += conversation.texts
        questions += [question for question, _, _ in conversation.questions]
    for path in sorted((ROOT / "memories").glob("*.json")):
        texts += [record["content"] for record in json.loads(path.read_text(encoding="utf-8"))]
    return texts, questions


def grown(rng: np.random.Generator, base: np.ndarray, size: int) -> np.ndarray:
    """Copies of real vectors plus isotropic noise: |noise| 0.4–0.75 puts a copy at
    cosine 1/√(1+|noise|²) ≈ 0.8–0.93 to its source, where MiniLM puts paraphrases."""
    source = rng.integers(0, len(base), size)
    source[: len(base)] = np.arange(min(size, len(base)))
    scale = rng.uniform(0.4, 0.75, size).astype(np.float32)
    scale[: len(base)] = 0.0
    noise = rng.standard_normal((size, DIM), dtype=np.float32) * (scale / np.float32(np.sqrt(DIM)))[:, None]
    return unit(base[source] + noise), source


def real(size: int, queries: int, rng: np.random.Generator, data: Path):
    texts, questions = real_sentences(data)
    embedder = default_embedder()
    base = embed_documents(embedder, texts)
    asked = [questions[i] for i in rng.choice(len(questions), queries, replace=False)]
    vectors, source = grown(rng, np.asarray(base, dtype=np.float32), size)
    return vectors, [texts[i] for i in source], list(unit(embedder.encode(asked))), asked


def used_queries(pool: MemoryPool, config: dict) -> np.ndarray:
    """`--used-queries` queries the pool learns from before the timed ones: each near a random
    memory of the pool (cosine ≈ 0.9), drawn from their own seed, so the timed queries are the
    same with or without them. They give the timed queries a pool in use: hundreds of memories
    with learned state, each bounded one by one in `MemoryPool._choose`."""
    rng = np.random.default_rng(config["seed"] + 1)
    vectors = pool._index.vectors
    picked = rng.integers(0, len(vectors), config["used_queries"])
    return unit(vectors[picked] + 0.5 * rng.standard_normal((len(picked), DIM), dtype=np.float32) / np.float32(np.sqrt(DIM)))


def dated(records: list[dict], sessions: int) -> list[dict]:
    """With `sessions` > 0, each run of that many consecutive memories shares a day (from
    2024-01-01), so the pool links each memory to its next two at encoding, as it links the
    turns of one conversation session; with 0, undated memories and no links."""
    if sessions <= 0:
        return records
    return [
        {**record, "created_at": f"{np.datetime64('2024-01-01') + np.timedelta64(number // sessions, 'D')}T12:00:00Z"}
        for number, record in enumerate(records)
    ]


def rss() -> int:
    return psutil.Process(os.getpid()).memory_info().rss


def same(fast, exact) -> bool:
    key = lambda hits: [(h.id, h.score, h.similarity, h.multiplier) for h in hits]  # noqa: E731
    return key(fast) == key(exact)


def measure(shape: str, size: int, config: dict) -> dict:
    rng = np.random.default_rng(config["seed"])
    if shape.startswith("locomo"):
        vectors, texts, query_vectors, asked = real(size, config["queries"], rng, Path(config["data"]))
    else:
        vectors, texts, query_vectors, asked = synthetic(shape, size, config["queries"], rng)
    text_queries = asked if shape == "locomo-text" else [None] * len(query_vectors)

    gc.collect()
    before = rss()
    started = time.perf_counter()
    pool = MemoryPool(FixedEmbedder(), seed=config["seed"], quantized_threshold=config["quantized_threshold"])
    pool.add_many(dated([{"content": text} for text in texts], config["sessions"]), embeddings=vectors)
    del texts, vectors
    index_s = pool.build_index() or 0.0
    build_s = time.perf_counter() - started
    used = rss() - before

    lists_s = 0.0
    if config["approximate"] and pool._index.quantized:
        started = time.perf_counter()
        pool._index.lists()
        lists_s = time.perf_counter() - started

    scored: list[np.ndarray] = []
    choose = pool._select

    def counting(index, *args, **kwargs):
        scored.append(index)
        return choose(index, *args, **kwargs)

    # One fixed `now`: recency moves with the clock, and exact and fast must see one state.
    options = dict(max_memories=config["k"], token_budget=config["token_budget"], now=time.time())
    for q in used_queries(pool, config):
        pool.retrieve(q, **options, learn=True)
    learned_before = len(pool.learning.learned_positions())
    ask = lambda q, t, **kw: pool.retrieve(q if t is None else t, query_vector=None if t is None else q, **options, **kw)  # noqa: E731
    for q, t in list(zip(query_vectors, text_queries))[:5]:
        ask(q, t, learn=False)

    brute, fast, checked, identical, candidates, rounds = [], [], 0, 0, [], []
    unlearned, approximate, overlap, recall = [], [], [], []
    matrix = pool._index.vectors
    for number, (q, t) in enumerate(zip(query_vectors, text_queries)):
        with threadpool_limits(limits=1, user_api="blas"):
            t0, c0 = time.perf_counter(), time.thread_time()
            sims = matrix @ q
            top = np.argpartition(-sims, 10)[:10]
            top = top[np.argsort(-sims[top])]
            brute.append((time.perf_counter() - t0, time.thread_time() - c0))

        if number < config["exact_queries"]:
            exact = ask(q, t, learn=False, exact=True)
            scored.clear()
            pool._select = counting
            checked += 1
            identical += same(ask(q, t, learn=False), exact)
            candidates.append(len(scored[-1]))
            rounds.append(len(scored))
            if config["approximate"]:
                scored.clear()
                picked = {hit.id for hit in ask(q, t, learn=False, approximate=True)}
                overlap.append(len(picked & {hit.id for hit in exact}) / max(len(exact), 1))
                recall.append(np.isin(top, scored[-1]).mean())
            del pool._select
        if config["approximate"]:
            for timings, kwargs in ((unlearned, {}), (approximate, {"approximate": True})):
                t0, c0 = time.perf_counter(), time.thread_time()
                ask(q, t, learn=False, **kwargs)
                timings.append((time.perf_counter() - t0, time.thread_time() - c0))
        t0, c0 = time.perf_counter(), time.thread_time()
        ask(q, t, learn=True)
        fast.append((time.perf_counter() - t0, time.thread_time() - c0))
    fast, brute = np.array(fast), np.array(brute)
    extra = {}
    if config["approximate"]:
        unlearned, approximate = np.array(unlearned), np.array(approximate)
        extra = {
            "exact_off_cpu_ms": 1e3 * float(np.median(unlearned[:, 1])),
            "approximate_cpu_ms": 1e3 * float(np.median(approximate[:, 1])),
            "approximate_ms": 1e3 * float(np.median(approximate[:, 0])),
            "approximate_p95_ms": 1e3 * float(np.percentile(approximate[:, 0], 95)),
            "overlap": float(np.mean(overlap)) if overlap else float("nan"),
            "worst_overlap": min(overlap, default=float("nan")),
            "recall": float(np.mean(recall)) if recall else float("nan"),
            "lists_s": lists_s,
        }
    return {
        **extra,
        "shape": shape,
        "size": size,
        "median_ms": 1e3 * float(np.median(fast[:, 0])),
        "p95_ms": 1e3 * float(np.percentile(fast[:, 0], 95)),
        "brute_median_ms": 1e3 * float(np.median(brute[:, 0])),
        "brute_p95_ms": 1e3 * float(np.percentile(brute[:, 0], 95)),
        "cpu_ms": 1e3 * float(np.median(fast[:, 1])),
        "brute_cpu_ms": 1e3 * float(np.median(brute[:, 1])),
        "identical": f"{identical}/{checked}",
        "candidates": float(np.median(candidates)) if candidates else float("nan"),
        "max_candidates": max(candidates, default=0),
        "rounds": float(np.mean(rounds)) if rounds else float("nan"),
        "rss_mb": used / 2**20,
        "learned": (learned_before, len(pool.learning.learned_positions())),
        "build_s": build_s,
        "index_s": index_s,
    }


def simd() -> str:
    """The vector units a flat scan can use (the run config already names the bf16 kind)."""
    cpuinfo = Path("/proc/cpuinfo")
    flags = set(cpuinfo.read_text().split("flags")[1].split("\n")[0].split()) if cpuinfo.exists() else set()
    model = next((line.split(":")[1].strip() for line in cpuinfo.read_text().splitlines() if "model name" in line), "") if cpuinfo.exists() else ""
    return f"{model or platform.processor()}, {os.cpu_count()} cores, " + ("AVX-512" if "avx512f" in flags else "AVX2" if "avx2" in flags else "no AVX2")


def code_paths() -> dict[str, str]:
    """The vector code each library actually runs, which environment variables can lower below
    what the CPU has (numpy `NPY_DISABLE_CPU_FEATURES`, OpenBLAS `OPENBLAS_CORETYPE`, faiss
    `FAISS_SIMD_LEVEL`): a run that emulates an AVX2-only CPU on an AVX-512 one says so here."""
    import faiss
    from numpy._core._multiarray_umath import __cpu_features__ as features
    from threadpoolctl import threadpool_info

    blas = [f"{pool['internal_api']} {pool.get('architecture')}" for pool in threadpool_info() if pool["user_api"] == "blas"]
    return {
        "numpy": "X86_V4 (AVX-512)" if features.get("X86_V4") else "X86_V3 (AVX2)" if features.get("X86_V3") else "below AVX2",
        "blas": ", ".join(blas),
        "faiss": faiss.SIMDConfig.get_level_name(),
    }


def transparent_huge_pages() -> str:
    """The kernel's mode (`always`, `madvise` or `never`): only `madvise` makes the pool's hint matter."""
    mode = Path("/sys/kernel/mm/transparent_hugepage/enabled")
    return mode.read_text().split("[")[1].split("]")[0] if mode.exists() else "unknown"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1_000, 100_000])
    parser.add_argument("--shapes", nargs="+", default=["n/50", "200", "20", "locomo", "locomo-text"])
    parser.add_argument("--queries", type=int, default=50)
    parser.add_argument("--exact-queries", type=int, default=50, help="queries also checked against exact=True")
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--token-budget", type=int, default=None)
    parser.add_argument("--quantized-threshold", type=int, default=20_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--approximate", action="store_true", help="also time approximate=True and measure its recall")
    parser.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "locomo-dev.json"))
    parser.add_argument("--used-queries", type=int, default=0, help="queries the pool learns from before timing")
    parser.add_argument(
        "--sessions",
        type=int,
        default=0,
        help="date memories in sessions of this many (one day each), so encoding links join neighbours "
        "as in a conversation (LoCoMo's dev sessions: median 20 turns); 0: undated, no links",
    )
    parser.add_argument(
        "--no-huge-pages",
        action="store_true",
        help="leave faiss's codes in 4 KiB pages, to measure the hint (smem.memory.pages)",
    )
    args = parser.parse_args()
    config = vars(args)
    pages.enabled = not args.no_huge_pages
    print_run_config(args)
    print(
        {
            "simd": simd(),
            "code paths": code_paths(),
            "transparent huge pages": transparent_huge_pages(),
            "numpy": np.__version__,
            "load_average": os.getloadavg(),
        }
    )
    print(
        "\n| shape | memories | retrieve CPU | brute force CPU | CPU ratio | retrieve wall median (p95) | brute force wall median (p95) "
        "| identical to exact | candidates scored (median, max) | rounds | memory used | build (quantisation) "
        "| memories with learned state (first, last query) |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    rows = []
    for size in config["sizes"]:
        for shape in config["shapes"]:
            r = measure(shape, size, config)
            print(
                f"| {r['shape']} | {r['size']:,} | {r['cpu_ms']:.2f} ms | {r['brute_cpu_ms']:.2f} ms | "
                f"{r['cpu_ms'] / r['brute_cpu_ms']:.2f} | {r['median_ms']:.2f} ({r['p95_ms']:.2f}) ms | "
                f"{r['brute_median_ms']:.2f} ({r['brute_p95_ms']:.2f}) ms | "
                f"{r['identical']} | {r['candidates']:.0f}, {r['max_candidates']} | {r['rounds']:.2f} | "
                f"{r['rss_mb']:.0f} MB | {r['build_s']:.1f} s ({r['index_s']:.1f} s) | "
                f"{r['learned'][0]:,}, {r['learned'][1]:,} |",
                flush=True,
            )
            rows.append(r)
            gc.collect()
    if config["approximate"]:
        print(
            "\n| shape | memories | exact fast path CPU (learning off) | approximate CPU | approximate wall median (p95) "
            "| brute force CPU | selection overlap with exact (mean, worst) | top-10 similarity recall | lists build |"
        )
        print("|---|---|---|---|---|---|---|---|---|")
        for r in rows:
            if "approximate_cpu_ms" in r:
                print(
                    f"| {r['shape']} | {r['size']:,} | {r['exact_off_cpu_ms']:.2f} ms | {r['approximate_cpu_ms']:.2f} ms | "
                    f"{r['approximate_ms']:.2f} ({r['approximate_p95_ms']:.2f}) ms | {r['brute_cpu_ms']:.2f} ms | "
                    f"{r['overlap']:.3f}, {r['worst_overlap']:.2f} | {r['recall']:.3f} | {r['lists_s']:.1f} s |"
                )
    print({"load_average_after": os.getloadavg()})


if __name__ == "__main__":
    main()
