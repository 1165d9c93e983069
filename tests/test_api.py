"""The HTTP API on the tiny model: the event stream, sessions, queueing and disconnects."""

from __future__ import annotations

import logging
import threading
import time
from contextlib import contextmanager
from typing import Any, Iterator

import httpx
import pytest
import uvicorn
from fastapi.testclient import TestClient

from smem.serving import sse
from smem.serving.api import create_api
from smem.serving.api_schema import ApiSettings
from smem.serving.runtime import Runtime

FAST = {"max_new_tokens": 8, "update_every_n": 2, "temperature": 0.8, "seed": 3}
MESSAGE = "Can you help me with fractions?"


def chat(client: TestClient, **body: Any) -> list[dict[str, Any]]:
    response = client.post("/chat/stream", json={"message": MESSAGE, "memory_set": "tutor", **FAST, **body})
    assert response.status_code == 200, response.text
    return list(sse.decode(response.text.split("\n")))


def in_context(events: list[dict[str, Any]]) -> set[str]:
    """Memories that were in context at any point of one answer."""
    return {m["id"] for e in events if e["type"] in ("memories", "memory_update") for m in e["memories"]}


def counts(client: TestClient, memory_set: str, session: str | None = None) -> dict[str, float]:
    params = {"memory_set": memory_set, **({"session": session} if session else {})}
    response = client.get("/memories", params=params)
    assert response.status_code == 200, response.text
    return {m["id"]: m["retrieval_count"] for m in response.json()["memories"] if m["retrieval_count"]}


@pytest.fixture(scope="module")
def client(tiny_runtime: Runtime) -> Iterator[TestClient]:
    app = create_api(tiny_runtime, ApiSettings(max_sessions=4, max_new_tokens=64, default_max_new_tokens=8))
    with TestClient(app) as test_client:
        yield test_client


@contextmanager
def serve(app: Any) -> Iterator[str]:
    """Run `app` with uvicorn on a free loopback port, in this process."""
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "uvicorn did not start"
        time.sleep(0.02)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)


@pytest.fixture(scope="module")
def live(tiny_runtime: Runtime) -> Iterator[str]:
    with serve(create_api(tiny_runtime, ApiSettings(max_new_tokens=4000, default_max_new_tokens=8))) as url:
        yield url


@contextmanager
def holding_the_model(runtime: Runtime) -> Iterator[threading.Event]:
    """Occupy the generation queue (as another answer would) until the yielded event is set."""
    held, release = threading.Event(), threading.Event()

    def hold() -> None:
        with runtime.queue.slot():
            held.set()
            release.wait(30)

    thread = threading.Thread(target=hold, daemon=True)
    thread.start()
    assert held.wait(5)
    try:
        yield release
    finally:
        release.set()
        thread.join(5)


def wait_until_idle(url: str, runtime: Runtime, timeout: float = 5.0) -> float:
    started = time.monotonic()
    while runtime.queue.waiting:
        assert time.monotonic() - started < timeout, f"queue still holds {runtime.queue.waiting} after {timeout}s"
        time.sleep(0.02)
    assert httpx.get(f"{url}/health").json()["queue"]["length"] == 0
    return time.monotonic() - started


def test_stream_events_in_order_with_their_fields(client: TestClient) -> None:
    response = client.post("/chat/stream", json={"message": MESSAGE, "memory_set": "tutor", **FAST})
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/event-stream; charset=utf-8"
    assert response.headers["cache-control"] == "no-cache"
    blocks = response.text.split("\n\n")
    assert blocks[-1] == "" and all(block.startswith("data: {") and "\n" not in block for block in blocks[:-1])
    events = list(sse.decode(response.text.split("\n")))
    types = [event["type"] for event in events]
    assert types[0] == "memories" and types[-1] == "done" and types.count("done") == 1
    assert set(types) <= {"memories", "context", "thinking", "token", "memory_update", "done"}
    assert 1 <= len(events[0]["memories"]) <= 5
    for event in events:
        for key in ("memories", "added", "removed"):
            for memory in event.get(key, []):
                assert {"id", "content", "score"} <= memory.keys() and memory["content"]
        if event["type"] in ("token", "thinking"):
            assert isinstance(event["t"], str) and event["t"]
        if event["type"] == "memory_update":
            assert event["added"] and event["removed"] and 0 < event["at_token"] <= 8
        if event["type"] == "context":
            assert event["prompt_tokens"] > 0 and event["memory_tokens"] >= 0
    done = events[-1]
    assert done["tokens"] <= 8 and done["stop_reason"] in ("eos", "max_tokens")


def test_without_a_session_every_request_starts_fresh(client: TestClient) -> None:
    first, second = chat(client), chat(client)
    assert first[:-1] == second[:-1]  # same seed, same initial state: the same answer (timings aside)
    assert counts(client, "tutor") == {}


def test_a_session_keeps_its_hebbian_state(client: TestClient) -> None:
    answers = [chat(client, session="keeper", seed=seed) for seed in (1, 2, 3)]
    expected: dict[str, float] = {}
    for events in answers:
        for memory_id in in_context(events):
            expected[memory_id] = expected.get(memory_id, 0) + 1
    assert counts(client, "tutor", "keeper") == expected
    state = client.get("/memories", params={"memory_set": "tutor", "session": "keeper"}).json()
    assert state["answers"] == 3 and state["links"]
    assert all(link["weight"] > 0 for link in state["links"])
    assert counts(client, "family", None) == {}


def test_one_session_id_keeps_one_state_per_memory_set(client: TestClient) -> None:
    tutor = chat(client, session="both", memory_set="tutor")
    family = chat(client, session="both", memory_set="family")
    assert counts(client, "tutor", "both") == dict.fromkeys(in_context(tutor), 1)
    assert counts(client, "family", "both") == dict.fromkeys(in_context(family), 1)


def test_sessions_are_evicted_least_recently_used_first(client: TestClient) -> None:
    for name in ("lru-0", "lru-1", "lru-2", "lru-3"):
        chat(client, session=name, max_new_tokens=1)
    chat(client, session="lru-0", max_new_tokens=1)  # now lru-1 is the least recently used
    before = client.get("/health").json()["sessions"]["evicted"]
    chat(client, session="lru-4", max_new_tokens=1)
    health = client.get("/health").json()["sessions"]
    assert health["active"] == 4 and health["limit"] == 4 and health["evicted"] == before + 1
    gone = client.get("/memories", params={"memory_set": "tutor", "session": "lru-1"})
    assert gone.status_code == 404 and gone.json()["error"]["field"] == "session"
    for name in ("lru-0", "lru-2", "lru-3", "lru-4"):
        assert client.get("/memories", params={"memory_set": "tutor", "session": name}).json()["answers"] >= 1


def test_a_failed_answer_reports_an_error_event_and_leaves_the_session_as_it_was(
    client: TestClient, tiny_runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    chat(client, session="fails")
    before = client.get("/memories", params={"memory_set": "tutor", "session": "fails"}).json()
    real_engine = tiny_runtime.engine

    class Breaking:
        def __init__(self, pool: Any) -> None:
            self.engine = real_engine(pool)

        def stream(self, *args: Any, **kwargs: Any) -> Iterator[Any]:
            events = self.engine.stream(*args, **kwargs)
            yield next(events)
            self.engine.pool.reinforce([m.id for m in self.engine.pool.memories[:3]])  # a half-applied update
            raise RuntimeError("the model fell over")

    monkeypatch.setattr(tiny_runtime, "engine", Breaking)
    events = chat(client, session="fails")
    assert [e["type"] for e in events] == ["memories", "error"]
    assert events[-1]["error"]["message"] == "generation failed: RuntimeError"
    monkeypatch.undo()
    assert client.get("/memories", params={"memory_set": "tutor", "session": "fails"}).json() == before
    assert chat(client, session="fails")[-1]["type"] == "done"


def test_health_names_model_sets_queue_and_limits(client: TestClient) -> None:
    health = client.get("/health").json()
    assert health["status"] == "ok" and health["model"] == "tiny"
    assert health["memory_sets"] == ["family", "tutor"]
    assert health["queue"] == {"mode": "serialised", "length": 0, "limit": 32}
    assert health["limits"]["max_new_tokens"] == 64


def test_memories_lists_a_set_with_its_learned_state(client: TestClient) -> None:
    body = client.get("/memories", params={"memory_set": "family"}).json()
    assert body["memory_set"] == "family" and body["session"] is None and body["answers"] == 0
    assert len(body["memories"]) > 10 and body["links"] == []
    first = body["memories"][0]
    assert {"id", "content", "type", "subject", "tokens", "retrieval_count", "last_retrieved"} <= first.keys()
    for params, field in (({"memory_set": "nope"}, "memory_set"), ({"memory_set": "tutor", "session": "never"}, "session")):
        response = client.get("/memories", params=params)
        assert response.status_code == 404 and response.json()["error"]["field"] == field


def test_openapi_documents_bodies_limits_and_errors(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    request = spec["components"]["schemas"]["ChatRequest"]
    assert request["required"] == ["message"] and request["additionalProperties"] is False
    assert request["properties"]["memory_set"]["default"] == "tutor"
    assert request["properties"]["update_every_n"]["minimum"] == 1 and request["properties"]["update_every_n"]["maximum"] == 20
    assert request["properties"]["max_memories"]["maximum"] == 15
    assert request["properties"]["max_new_tokens"]["maximum"] == 64
    assert request["properties"]["memory_set"]["enum"] == ["family", "tutor"]
    responses = spec["paths"]["/chat/stream"]["post"]["responses"]
    assert list(responses["200"]["content"]) == ["text/event-stream"]
    for status in ("400", "413", "422", "503"):
        assert responses[status]["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/ErrorResponse"}
    assert spec["paths"]["/memories"]["get"]["responses"]["404"]["content"]["application/json"]


def test_settings_come_from_the_environment() -> None:
    settings = ApiSettings.from_env({"SMEM_API_MAX_SESSIONS": "7", "SMEM_API_MAX_NEW_TOKENS": "100", "SMEM_API_MAX_QUEUE": "3"})
    assert (settings.max_sessions, settings.max_new_tokens, settings.default_max_new_tokens, settings.max_queue) == (7, 100, 100, 3)
    with pytest.raises(ValueError, match="max_body_bytes"):
        ApiSettings(max_body_bytes=1000)


def test_a_full_queue_is_refused_with_503(tiny_runtime: Runtime) -> None:
    client = TestClient(create_api(tiny_runtime, ApiSettings(max_queue=1)))
    with holding_the_model(tiny_runtime):
        response = client.post("/chat/stream", json={"message": MESSAGE, "memory_set": "tutor"})
    assert response.status_code == 503 and response.headers["retry-after"] == "5"
    assert response.json()["error"]["status"] == 503


def test_a_waiting_client_is_told_its_place_in_line(live: str, tiny_runtime: Runtime) -> None:
    body = {"message": MESSAGE, "memory_set": "tutor", **FAST}
    with holding_the_model(tiny_runtime) as release:
        with httpx.stream("POST", f"{live}/chat/stream", json=body, timeout=30) as response:
            events = sse.decode(response.iter_lines())
            assert next(events) == {"type": "queued", "position": 1}
            release.set()
            rest = list(events)
    assert rest[0]["type"] == "memories" and rest[-1]["type"] == "done"


def test_concurrent_requests_to_one_session_apply_one_after_the_other(live: str) -> None:
    results: list[list[dict[str, Any]]] = []

    def ask(seed: int) -> None:
        body = {"message": MESSAGE, "memory_set": "family", "session": "shared", **FAST, "seed": seed}
        with httpx.stream("POST", f"{live}/chat/stream", json=body, timeout=60) as response:
            results.append(list(sse.decode(response.iter_lines())))

    threads = [threading.Thread(target=ask, args=(seed,)) for seed in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert len(results) == 3 and all(events[-1]["type"] == "done" for events in results)
    assert sum(any(e["type"] == "queued" for e in events) for events in results) >= 1
    expected: dict[str, float] = {}
    for events in results:
        for memory_id in in_context(events):
            expected[memory_id] = expected.get(memory_id, 0) + 1
    state = httpx.get(f"{live}/memories", params={"memory_set": "family", "session": "shared"}).json()
    assert state["answers"] == 3
    assert {m["id"]: m["retrieval_count"] for m in state["memories"] if m["retrieval_count"]} == expected


def test_a_client_that_disconnects_stops_its_generation(live: str, tiny_runtime: Runtime) -> None:
    body = {"message": MESSAGE, "memory_set": "tutor", "session": "leaver", "max_new_tokens": 4000, "update_every_n": 20}
    with httpx.stream("POST", f"{live}/chat/stream", json=body, timeout=30) as response:
        tokens = 0
        for event in sse.decode(response.iter_lines()):
            tokens += event["type"] in ("token", "thinking")
            if tokens == 3:
                break
        assert tiny_runtime.queue.waiting == 1
    freed = wait_until_idle(live, tiny_runtime, timeout=3.0)
    assert freed < 3.0
    state = httpx.get(f"{live}/memories", params={"memory_set": "tutor", "session": "leaver"}).json()
    assert state["answers"] == 1  # the engine finished (cancelled) and the session was released
    started = time.monotonic()
    events = list(sse.decode(httpx.post(f"{live}/chat/stream", json={**body, **FAST}, timeout=30).text.split("\n")))
    assert events[0]["type"] == "memories" and events[-1]["type"] == "done"
    assert time.monotonic() - started < 10


def test_a_client_that_leaves_while_queued_gives_up_its_place(
    live: str, tiny_runtime: Runtime, caplog: pytest.LogCaptureFixture
) -> None:
    body = {"message": MESSAGE, "memory_set": "tutor", **FAST}
    with caplog.at_level(logging.INFO, logger="smem.serving.api"), holding_the_model(tiny_runtime):
        with httpx.stream("POST", f"{live}/chat/stream", json=body, timeout=30) as response:
            assert next(sse.decode(response.iter_lines()))["type"] == "queued"
        deadline = time.monotonic() + 3
        while "client left while queued" not in caplog.text:
            assert time.monotonic() < deadline, "the queued answer did not notice its client left"
            time.sleep(0.05)
    wait_until_idle(live, tiny_runtime)
    response = httpx.post(f"{live}/chat/stream", json=body, timeout=30)
    assert [e["type"] for e in sse.decode(response.text.split("\n"))][0] == "memories"


def test_answers_run_elsewhere_carry_learning_back_through_done(tiny_runtime: Runtime) -> None:
    """ZeroGPU runs generation in a forked worker: the pool arrives pickled and the session's
    state can only come back through `Done.learned`. Simulate that boundary with pickle."""
    import pickle

    from smem.serving.api import generate_here

    here = generate_here(tiny_runtime)
    seen: list[int] = []

    def elsewhere(pool, kwargs, cancel):
        copy = pickle.loads(pickle.dumps(pool))
        seen.append(id(copy))
        for event in here(copy, kwargs, cancel):
            yield pickle.loads(pickle.dumps(event))

    app = create_api(tiny_runtime, ApiSettings(max_new_tokens=64, default_max_new_tokens=8), generate=elsewhere)
    with TestClient(app) as remote:
        events = chat(remote, session="zero")
        assert events[-1]["type"] == "done" and seen
        learned = counts(remote, "tutor", "zero")
        assert set(learned) == in_context(events)
        chat(remote, session="zero")
        assert sum(counts(remote, "tutor", "zero").values()) > sum(learned.values())


def test_the_original_projects_request_body_works_with_the_default_set(client: TestClient) -> None:
    body = {"message": MESSAGE, "history": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}],
            "update_every_n": 2, "max_memories": 3}  # fmt: skip
    response = client.post("/chat/stream", json=body)
    assert response.status_code == 200, response.text
    events = list(sse.decode(response.text.split("\n")))
    assert events[-1]["type"] == "done" and len(events[0]["memories"]) <= 3


def test_a_wrong_method_is_a_405_in_the_error_shape_with_allow(client: TestClient) -> None:
    for method, path in (("GET", "/chat/stream"), ("POST", "/health"), ("DELETE", "/memories")):
        response = client.request(method, path)
        assert response.status_code == 405, (method, path, response.text)
        assert response.json()["error"]["status"] == 405
        assert response.headers["allow"] in ("POST", "GET")
    response = client.get("/no/such/path")
    assert response.status_code == 404 and response.json()["error"]["status"] == 404
