"""The store of memory lines' cache entries: what it hands out, what it keeps, what it drops."""

from __future__ import annotations

import threading

import pytest
import torch
from transformers import DynamicCache

from smem.generation.line_store import LineStore


def filled_cache(tokens: int, seed: int) -> DynamicCache:
    cache = DynamicCache()
    generator = torch.Generator().manual_seed(seed)
    for layer in range(2):
        cache.update(torch.randn(1, 2, tokens, 4, generator=generator), torch.randn(1, 2, tokens, 4, generator=generator), layer)
    return cache


def test_a_kept_line_comes_back_as_a_copy_of_its_entries_and_only_for_the_same_tokens():
    store, cache = LineStore(), filled_cache(10, 0)
    store.keep("m1", [5, 6, 7], cache, start=4)
    line = store.get("m1", [5, 6, 7])
    assert line is not None and line.position == 4
    for layer, (keys, values) in zip(cache.layers, line.entries):
        assert torch.equal(keys, layer.keys[:, :, 4:7]) and torch.equal(values, layer.values[:, :, 4:7])
    cache.layers[0].keys.zero_()  # a later edit of the cache does not reach the store
    assert line.entries[0][0].abs().sum() > 0
    assert store.get("m1", [5, 6, 8]) is None  # the memory's text changed: its old line is no use
    assert store.get("m2", [5, 6, 7]) is None


def test_the_first_read_is_kept_and_the_least_recently_used_line_goes_first():
    store = LineStore(max_lines=2)
    store.keep("a", [1], filled_cache(3, 0), start=0)
    first = store.get("a", [1])
    store.keep("a", [1], filled_cache(3, 1), start=2)  # read again elsewhere: the first read stays
    assert store.get("a", [1]) is first
    store.keep("b", [2], filled_cache(3, 2), start=0)
    store.get("a", [1])  # a used last
    store.keep("c", [3], filled_cache(3, 3), start=0)
    assert len(store) == 2 and store.get("b", [2]) is None and store.get("a", [1]) is first
    with pytest.raises(ValueError):
        LineStore(max_lines=0)


def test_threads_sharing_a_store_never_exceed_its_size():
    store, cache = LineStore(max_lines=8), filled_cache(40, 0)

    def fill(name: str) -> None:
        for index in range(30):
            store.keep(f"{name}{index}", [index], cache, start=index)
            store.get(f"{name}{index // 2}", [index // 2])

    threads = [threading.Thread(target=fill, args=(name,)) for name in "abcd"]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(store) == 8


def test_a_runtime_keeps_one_store_per_pool_for_the_pools_that_answered_last(tiny_runtime):
    from smem.serving.runtime import LINE_STORE_POOLS

    pools = [tiny_runtime.sets.pool(tiny_runtime.sets.default) for _ in range(LINE_STORE_POOLS + 1)]
    store = tiny_runtime.engine(pools[0]).line_store
    assert store is not None and tiny_runtime.engine(pools[0]).line_store is store  # a session's later answers
    assert tiny_runtime.engine(pools[1]).line_store is not store  # lines read with one session's conversation stay there
    for pool in pools[1:]:
        tiny_runtime.engine(pool)
    assert len(tiny_runtime.line_stores) == LINE_STORE_POOLS
    assert tiny_runtime.engine(pools[0]).line_store is not store  # the least recently answered pool's went first


def test_a_store_asks_its_fallback_for_lines_it_lacks_and_keeps_its_own_first():
    behind = LineStore()
    behind.keep("a", [1, 2], filled_cache(4, 0), start=1, position=0)
    store = LineStore(fallback=behind)
    assert store.get("a", [1, 2]) is behind.get("a", [1, 2]) and ("a", [1, 2]) not in store
    assert behind.get("a", [1, 2]).position == 0  # where it was read, not where the cache held it
    store.keep("a", [1, 2], filled_cache(4, 1), start=2)
    assert store.get("a", [1, 2]).position == 2 and ("a", [1, 2]) in store


def test_a_runtime_reads_the_sets_lines_ahead_for_every_pool_of_them(tiny_runtime):
    from smem.generation.prompt import PromptBuilder
    from smem.serving.runtime import Runtime

    runtime = Runtime(
        model=tiny_runtime.model,
        tokenizer=tiny_runtime.tokenizer,
        embedder=tiny_runtime.embedder,
        sets=tiny_runtime.sets,
        model_name="tiny",
        line_tokens=tiny_runtime.line_tokens,
    )
    name = runtime.sets.default
    thread = runtime.start_read_ahead([name])
    assert thread is not None
    thread.join()
    pool = runtime.sets.pool(name)
    assert len(runtime.lines_ahead) == len(pool)
    store, builder = runtime.engine(pool).line_store, PromptBuilder(runtime.tokenizer, "")
    assert len(store) == 0 and all(store.get(m.id, builder.line_ids(m)) is not None for m in pool.memories)
