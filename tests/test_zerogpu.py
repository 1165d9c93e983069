"""The ZeroGPU trap: on a ZeroGPU Space the generation function runs in a forked worker and
its arguments and yields are pickled, so anything it learns must come back through what it
yields. These tests run app.py's own generation function that way."""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from smem.ui import actions
from smem.generation.events import Done
from smem.memory.memory_sets import MemorySets

from conftest import REPO

# Mirrors spaces.zero.wrappers: a worker forked after app.py was imported receives the
# pickled (args, kwargs) through a queue and sends each yielded value back through another.
WORKER_RUN = textwrap.dedent(
    """
    import json, multiprocessing
    import app
    from smem.ui import actions

    def worker(args_queue, results_queue):
        args = args_queue.get()
        pool = args[0]
        for event in app.generate(*args):
            results_queue.put(event)
        results_queue.put(("worker links", len(pool.links()), pool.learning.updates))
        results_queue.put(None)

    context = multiprocessing.get_context("fork")
    args_queue, results_queue = context.Queue(), context.Queue()
    pool = app.RUNTIME.sets.pool("tutor")
    settings = actions.GenerationSettings(max_new_tokens=48, update_every_n=2, temperature=0.0)
    process = context.Process(target=worker, args=(args_queue, results_queue))
    process.start()
    args_queue.put((pool, "How do I help Alex with fractions?", [], settings))
    events = []
    while (item := results_queue.get(timeout=120)) is not None:
        events.append(item)
    process.join(30)
    done = events[-2]
    worker_links, worker_events = events[-1][1], events[-1][2]
    untouched = (len(pool.links()), pool.learning.updates, float(pool.learning.counts.sum()))
    applied = actions.apply_learned(pool, done)
    print(json.dumps({
        "decorated_is_plain": not hasattr(app.generate, "zerogpu"),
        "kinds": sorted({type(e).__name__ for e in events[:-1]}),
        "untouched": untouched,
        "applied": applied,
        "worker": [worker_links, worker_events],
        "parent": [len(pool.links()), pool.learning.updates, float(pool.learning.counts.sum())],
        "exitcode": process.exitcode,
    }))
    """
)


def test_learned_state_survives_a_forked_worker_with_pickled_arguments():
    env = {**os.environ, "SMEM_MODEL": "tiny", "HF_HUB_OFFLINE": "1", "GRADIO_ANALYTICS_ENABLED": "False"}
    env.pop("SPACE_ID", None)
    result = subprocess.run(
        [sys.executable, "-c", WORKER_RUN], check=False, cwd=REPO, env=env, capture_output=True, text=True, timeout=240
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["decorated_is_plain"], "spaces.GPU is a no-op off Spaces"
    assert report["exitcode"] == 0
    assert {"Memories", "Token", "Done"} <= set(report["kinds"])
    links, events, counts = report["untouched"]
    assert (links, events, counts) == (0, 0, 0.0), "the worker's learning never reaches the parent by itself"
    assert report["applied"]
    worker_links, worker_events = report["worker"]
    assert worker_links > 0 and worker_events > 0
    assert report["parent"][:2] == [worker_links, worker_events], "everything learned came back through the yield"
    assert report["parent"][2] > 0


@pytest.fixture(scope="module")
def tutor_pool(minilm):
    return MemorySets(minilm).pool("tutor")


def test_a_pool_pickles_without_its_embedder_and_revives(tutor_pool, minilm):
    data = pickle.dumps(tutor_pool)
    assert len(data) < 2_000_000
    revived = pickle.loads(data)
    assert revived._embedder is None, "the embedder is not carried across processes"
    hits = revived.retrieve("fractions homework", max_memories=3, learn=False)
    assert revived.embedder is minilm, "it is found again by name in the receiving process"
    assert [h.id for h in hits] == [
        h.id for h in tutor_pool.retrieve("fractions homework", max_memories=3, learn=False)
    ]


def test_learned_state_pickles_inside_done(tutor_pool, tiny_runtime):
    pool = tutor_pool.copy()
    events = list(
        actions.answer(
            tiny_runtime.engine(pool), "Alex and fractions", [], actions.GenerationSettings(max_new_tokens=20)
        )
    )
    done = pickle.loads(pickle.dumps(events[-1]))
    assert isinstance(done, Done) and done.learned is not None
    fresh = tutor_pool.copy()
    assert actions.apply_learned(fresh, done)
    assert np.array_equal(fresh.learning.counts, pool.learning.counts)
    assert fresh.links() == pool.links()


def test_gpu_duration_grows_with_answer_length_and_is_capped(tutor_pool):
    short = actions.gpu_seconds(tutor_pool, "hi", [], actions.GenerationSettings(max_new_tokens=64))
    long = actions.gpu_seconds(tutor_pool, "hi", [], actions.GenerationSettings(max_new_tokens=2048))
    assert 15 < short < long <= actions.GPU_MAX_S
