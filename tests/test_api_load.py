"""A bounded load test on loopback: the API alone (`python -m smem.serving.api --model tiny`) in a
subprocess, 8 concurrent SSE clients × 3 answers, each client its own session.

Checks: every stream ends with exactly one `done`; no event strays across sessions (every
memory a stream shows belongs to its client's memory set, and each session's learned counts
are exactly what its own three streams had in context); waiting clients are told their place;
the queue drains; and memory returns to baseline: after a warm-up, the first round adds only
its sessions' state, and a second round on the same sessions adds nothing beyond allocator noise.
The figures print as one JSON line (`pytest -s`); docs/benchmarks.md "## API" records a run.
"""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path
from typing import Any, Iterator

import httpx
import psutil
import pytest

from conftest import api_server
from smem.serving import sse

ROOT = Path(__file__).resolve().parents[1]
CLIENTS = int(os.environ.get("SMEM_LOAD_CLIENTS", "8"))
"""8 in the suite; docs/benchmarks.md also records a 16-client run (`SMEM_LOAD_CLIENTS=16`)."""
ANSWERS = 3
SETS = ("tutor", "family")
BODY = {"max_new_tokens": 16, "update_every_n": 4, "temperature": 0.8}
MESSAGES = (
    "Can you help me with fractions?",
    "What should I remember about the family this week?",
    "How do I keep a student motivated before a test?",
)
SESSIONS_TOLERANCE_BYTES = (32 + 2 * CLIENTS) * 2**20
"""What the first round may add over the warmed-up baseline: the sessions it creates stay
loaded (~1.5 MiB each for the sample sets, up to `sessions.CACHE_LIMIT`) plus allocator slack."""
LEAK_CHECK_ANSWERS = 1
LEAK_TOLERANCE_BYTES = 16 * 2**20
"""What a second round (same sessions, 8 concurrent answers more) may add: allocator noise
only. Anything a request leaked would grow it every round."""


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, psutil.Process]]:
    # One torch thread: the tiny model gains nothing from two, and the serving path, not the
    # model, is under test here; it also keeps the figures steadier on a shared machine.
    # The clients all come from 127.0.0.1; without sessions (the warm-up) they count as one
    # client, so the per-client limit is raised to let them stand for 8 different people.
    env = {
        "HF_HUB_OFFLINE": "1",
        "HF_HUB_DISABLE_TELEMETRY": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "SMEM_THREADS": "1",
        "SMEM_API_MAX_QUEUE_PER_CLIENT": str(CLIENTS),
        # Its own store: the test counts the sessions it created, and other servers of the run share the default.
        "SMEM_STATE_DIR": str(tmp_path_factory.mktemp("load-state")),
    }
    with api_server(env) as (url, process, _):
        yield url, psutil.Process(process.pid)


def ask(url: str, body: dict[str, Any]) -> dict[str, Any]:
    started = time.perf_counter()
    first = first_text = None
    events = []
    with httpx.stream("POST", f"{url}/chat/stream", json=body, timeout=120) as response:
        assert response.status_code == 200, response.read()
        for event in sse.decode(response.iter_lines()):
            now = time.perf_counter() - started
            if first is None and event["type"] != "queued":
                first = now
            if first_text is None and event["type"] in ("token", "thinking"):
                first_text = now
            events.append(event)
    return {"events": events, "latency_s": time.perf_counter() - started, "first_event_s": first, "first_text_s": first_text}


def load_round(url: str, sessions: list[str], rounds_done: int, answers: int) -> tuple[dict[int, list[dict[str, Any]]], float]:
    """Every client asks its answers one after another, all clients at once."""
    results: dict[int, list[dict[str, Any]]] = {client: [] for client in range(CLIENTS)}

    def client(index: int) -> None:
        for answer in range(answers):
            seed = 1000 * rounds_done + 100 * index + answer
            body = {"message": MESSAGES[answer], "session": sessions[index], "seed": seed, **BODY}
            results[index].append(ask(url, body))

    started = time.perf_counter()
    threads = [threading.Thread(target=client, args=(index,)) for index in range(CLIENTS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(150)
    return results, time.perf_counter() - started


def test_eight_clients_three_answers_each(server: tuple[str, psutil.Process]) -> None:
    url, process = server
    contents = {name: {m["content"] for m in httpx.get(f"{url}/memories", params={"memory_set": name}).json()["memories"]} for name in SETS}
    warm_up = [threading.Thread(target=ask, args=(url, {"message": MESSAGES[0], "memory_set": SETS[i % 2], **BODY})) for i in range(CLIENTS)]
    for thread in warm_up:  # every set embedded, kernels loaded, request threads and allocator at their working size
        thread.start()
    for thread in warm_up:
        thread.join(60)
    sessions = [httpx.post(f"{url}/sessions", json={"memory_set": SETS[index % 2]}).json()["session"] for index in range(CLIENTS)]
    rss = [process.memory_info().rss]
    expected: dict[int, dict[str, float]] = {client: {} for client in range(CLIENTS)}
    walls: list[float] = []
    answers: list[dict[str, Any]] = []

    learned_from = 0
    for round_index, round_answers in enumerate((ANSWERS, LEAK_CHECK_ANSWERS)):
        results, wall = load_round(url, sessions, round_index, round_answers)
        walls.append(wall)
        learned_from += round_answers
        assert all(len(done) == round_answers for done in results.values()), "a client did not finish"
        for index, client_answers in results.items():
            memory_set = SETS[index % 2]
            for answer in client_answers:
                events = answer["events"]
                types = [event["type"] for event in events]
                assert types[-1] == "done" and types.count("done") == 1 and "error" not in types
                assert set(types[: types.index("memories")]) <= {"queued"}
                shown = [m for e in events if e["type"] in ("memories", "memory_update") for m in e["memories"]]
                assert shown and {m["content"] for m in shown} <= contents[memory_set], f"client {index} saw another set's memories"
                for memory_id in {m["id"] for m in shown}:
                    expected[index][memory_id] = expected[index].get(memory_id, 0) + 1
            state = httpx.get(f"{url}/sessions/{sessions[index]}").json()
            assert state["answers"] == learned_from
            learned = {m["id"]: m["retrieval_count"] for m in state["memories"] if m["retrieval_count"]}
            assert learned == expected[index], f"client {index}'s session holds counts its own streams do not explain"
            if round_index == 0:
                answers += client_answers
        health = httpx.get(f"{url}/health").json()
        assert health["queue"]["length"] == 0 and health["sessions"]["stored"] == CLIENTS
        time.sleep(0.5)
        rss.append(process.memory_info().rss)

    positions = [event["position"] for answer in answers for event in answer["events"] if event["type"] == "queued"]
    assert positions and max(positions) >= CLIENTS // 2, "concurrent clients were never told they were queued"
    sessions_and_slack, per_round = rss[1] - rss[0], rss[2] - rss[1]
    assert sessions_and_slack < SESSIONS_TOLERANCE_BYTES, f"the first round grew RSS by {sessions_and_slack / 2**20:.1f} MiB"
    assert per_round < LEAK_TOLERANCE_BYTES, f"the second round grew RSS by {per_round / 2**20:.1f} MiB"

    latencies = sorted(answer["latency_s"] for answer in answers)
    dones = [answer["events"][-1] for answer in answers]
    figures = {  # the 8 x 3 round; the second round only checks memory
        "answers": len(answers),
        "max_new_tokens": BODY["max_new_tokens"],
        "wall_s": round(walls[0], 2),
        "answers_per_s": round(len(answers) / walls[0], 2),
        "tokens_per_s": round(sum(d["tokens"] for d in dones) / walls[0], 1),
        "latency_s": {"min": round(latencies[0], 2), "median": round(latencies[len(latencies) // 2], 2), "max": round(latencies[-1], 2)},
        "generation_s_median": round(sorted(d["total_s"] for d in dones)[len(dones) // 2], 3),
        "first_text_s_max": round(max(a["first_text_s"] or 0 for a in answers), 2),
        "queued_events": len(positions),
        "max_queue_position": max(positions),
        "rss_mib": dict(zip(("baseline", "after_round_1", "after_round_2"), (round(value / 2**20, 1) for value in rss))),
        "load_average": os.getloadavg()[0],
    }
    print("\nAPI load figures:", json.dumps(figures))
