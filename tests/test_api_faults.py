"""A bounded load-and-fault test on loopback: the API alone (`python -m smem.serving.api --model
tiny`) in a subprocess, with its sessions in a temporary `SMEM_STATE_DIR`.

1. Forty clients that queue behind a running answer and hang up do not lock out a real
   client: each is admitted (none gets 503), and the real client that comes after them waits
   only for the running answer (`queued` position 1).
2. A session created with `POST /sessions` keeps its learned state, byte for byte, across a
   `kill -9` in the middle of an answer and a restart; the answer in flight is the only loss.
3. An unknown session id is refused (404), never started afresh.
4. A 100k-record upload is refused (422 naming the limit) and the server answers normally
   right after.

The figures (queue fairness, restart recovery, refusal time) print as one JSON line
(`pytest -s`); docs/benchmarks.md "Durability and fairness" records a run.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import httpx
import pytest

from conftest import api_server as serve_api
from smem.serving import sse

ROOT = Path(__file__).resolve().parents[1]
GHOSTS = 40
MESSAGE = "Can you help me with fractions?"
SHORT = {"max_new_tokens": 8, "update_every_n": 4, "temperature": 0.8}
LONG = {"max_new_tokens": 4000, "update_every_n": 20, "temperature": 0.8}
"""An answer that holds the model until its client leaves (the tiny model writes ~100 tokens/s here)."""
FIGURES: dict[str, Any] = {}


@contextmanager
def api_server(state_dir: Path) -> Iterator[tuple[str, subprocess.Popen, float]]:
    """The API on the tiny model; yields its URL, process and seconds until `/health` answered."""
    env = {
        "HF_HUB_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "SMEM_THREADS": "1",
        "SMEM_STATE_DIR": str(state_dir),
        "SMEM_API_MAX_NEW_TOKENS": "4000",
        # The ghosts all come from 127.0.0.1 without a session, so they count as one client:
        # raised past their number so that this test exercises the queue freeing their places.
        "SMEM_API_MAX_QUEUE_PER_CLIENT": str(GHOSTS + 8),
    }
    with serve_api(env) as served:
        yield served


class Holder:
    """A client whose long answer holds the model until `leave()` closes its connection."""

    def __init__(self, url: str, body: dict[str, Any]) -> None:
        self.generating = threading.Event()
        self._leave = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(url, body), daemon=True)
        self._thread.start()
        assert self.generating.wait(60), "the holding answer never started"

    def _run(self, url: str, body: dict[str, Any]) -> None:
        try:
            with httpx.stream("POST", f"{url}/chat/stream", json=body, timeout=120) as response:
                for event in sse.decode(response.iter_lines()):
                    if event["type"] in ("token", "thinking"):
                        self.generating.set()
                    if self._leave.is_set():
                        return
        except httpx.TransportError:  # the server was killed under it
            return

    def leave(self) -> None:
        self._leave.set()
        self._thread.join(30)


def queue_length(url: str) -> int:
    return httpx.get(f"{url}/health", timeout=10).json()["queue"]["length"]


def wait_for(condition: Any, what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def ghost(url: str) -> tuple[int, str | None]:
    """Queue, read the first event, hang up."""
    with httpx.stream("POST", f"{url}/chat/stream", json={"message": MESSAGE, "memory_set": "tutor", **SHORT}, timeout=60) as response:
        if response.status_code != 200:
            return response.status_code, None
        first = next(sse.decode(response.iter_lines()))
        return 200, first["type"]


def answer(url: str, body: dict[str, Any]) -> tuple[list[dict[str, Any]], float]:
    started = time.perf_counter()
    with httpx.stream("POST", f"{url}/chat/stream", json=body, timeout=120) as response:
        assert response.status_code == 200, response.read()
        events = list(sse.decode(response.iter_lines()))
    return events, time.perf_counter() - started


@pytest.fixture(scope="module")
def state_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("state")


@pytest.fixture(scope="module")
def server(state_dir: Path) -> Iterator[tuple[str, subprocess.Popen]]:
    """One server for the whole module (starting one takes most of this test's time); the
    kill -9 test, last, kills it and starts its own successor on the same state."""
    with api_server(state_dir) as (url, process, _):
        yield url, process


def test_clients_that_queue_and_hang_up_do_not_lock_out_a_real_client(server: tuple[str, subprocess.Popen]) -> None:
    url, _ = server
    limit = httpx.get(f"{url}/health").json()["queue"]["limit"]
    assert GHOSTS > limit, "the ghosts must outnumber the queue for the test to mean anything"
    holder = Holder(url, {"message": MESSAGE, "memory_set": "tutor", **LONG})
    with ThreadPoolExecutor(max_workers=10) as pool:
        ghosts = list(pool.map(lambda _: ghost(url), range(GHOSTS)))
    assert ghosts == [(200, "queued")] * GHOSTS, f"ghosts were refused or not queued: {Counter(ghosts)}"
    wait_for(lambda: queue_length(url) == 1, "the ghosts' places to be freed")

    positions: list[int] = []
    result: dict[str, Any] = {}

    def real_client() -> None:
        started = time.perf_counter()
        with httpx.stream("POST", f"{url}/chat/stream", json={"message": MESSAGE, "memory_set": "tutor", **SHORT}, timeout=120) as response:
            result["status"] = response.status_code
            for event in sse.decode(response.iter_lines()):
                if event["type"] == "queued":
                    positions.append(event["position"])
                elif "first_event_s" not in result:
                    result["first_event_s"] = time.perf_counter() - started
                result["last"] = event["type"]

    real = threading.Thread(target=real_client)
    real.start()
    wait_for(lambda: bool(positions), "the real client to be queued")
    released = time.perf_counter()
    holder.leave()
    real.join(60)
    assert result["status"] == 200 and positions == [1] and result["last"] == "done"
    FIGURES["ghosts"] = {
        "ghosts": GHOSTS,
        "queue_limit": limit,
        "ghosts_admitted": sum(status == 200 for status, _ in ghosts),
        "real_client_position": positions[0],
        "real_client_first_event_after_holder_left_s": round(time.perf_counter() - released, 2),
    }


def test_a_100k_record_upload_is_refused_and_the_server_stays_responsive(server: tuple[str, subprocess.Popen]) -> None:
    url, _ = server
    records = [{"content": f"memory number {index} about fractions"} for index in range(100_000)]
    body = json.dumps({"memories": records}).encode()
    stored = httpx.get(f"{url}/health").json()["sessions"]["stored"]
    started = time.perf_counter()
    response = httpx.post(f"{url}/sessions", content=body, headers={"Content-Type": "application/json"}, timeout=60)
    refused_s = time.perf_counter() - started
    assert response.status_code == 422 and "100000 records" in response.json()["error"]["message"]
    events, answered_s = answer(url, {"message": MESSAGE, "memory_set": "tutor", **SHORT})
    assert events[-1]["type"] == "done"
    assert queue_length(url) == 0 and httpx.get(f"{url}/health").json()["sessions"]["stored"] == stored
    FIGURES["upload"] = {"records": len(records), "body_mib": round(len(body) / 2**20, 2), "refused_in_s": round(refused_s, 2), "next_answer_s": round(answered_s, 2)}


def test_a_session_survives_kill_9_and_restart_and_unknown_ids_are_refused(server: tuple[str, subprocess.Popen], state_dir: Path) -> None:
    """Last in the module: it kills the shared server."""
    url, process = server
    session = httpx.post(f"{url}/sessions", json={"memory_set": "family"}).json()["session"]
    for seed in (1, 2):
        events, _ = answer(url, {"message": MESSAGE, "session": session, "seed": seed, **SHORT})
        assert events[-1]["type"] == "done"
    before = httpx.get(f"{url}/sessions/{session}").json()
    exported = httpx.get(f"{url}/sessions/{session}/export").content
    assert before["answers"] == 2 and before["links"]
    in_flight = Holder(url, {"message": MESSAGE, "session": session, **LONG})
    os.kill(process.pid, signal.SIGKILL)  # mid-answer
    process.wait(10)
    in_flight.leave()
    killed = time.perf_counter()

    with api_server(state_dir) as (url, _, ready_s):
        after = httpx.get(f"{url}/sessions/{session}")
        recovered_s = time.perf_counter() - killed
        assert after.status_code == 200 and after.json() == before
        assert httpx.get(f"{url}/sessions/{session}/export").content == exported
        events, _ = answer(url, {"message": MESSAGE, "session": session, "seed": 3, **SHORT})
        assert events[-1]["type"] == "done" and httpx.get(f"{url}/sessions/{session}").json()["answers"] == 3

        unknown = secrets.token_urlsafe(24)
        refused = httpx.post(f"{url}/chat/stream", json={"message": MESSAGE, "session": unknown, **SHORT})
        assert refused.status_code == 404 and refused.json()["error"]["field"] == "session"
        assert httpx.get(f"{url}/sessions/{unknown}").status_code == 404
        FIGURES["restart"] = {"health_after_restart_s": round(ready_s, 2), "session_readable_after_kill_s": round(recovered_s, 2)}
    print("\nAPI fault figures:", json.dumps(FIGURES))
