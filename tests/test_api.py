"""The HTTP API on the tiny model: the event stream, sessions, queueing and disconnects."""

from __future__ import annotations

import contextlib
import itertools
import logging
import threading
import time
from contextlib import contextmanager
from typing import Any, Iterator, Optional

import httpx
import pytest
import uvicorn
from fastapi.testclient import TestClient

from smem.generation.events import Done, Thinking, Token
from smem.serving import sse
from smem.serving.api import create_api
from smem.serving.api_schema import ApiSettings
from smem.serving.queueing import Cancelled
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


def new_session(client: Any, memory_set: str = "tutor") -> str:
    response = client.post("/sessions", json={"memory_set": memory_set})
    assert response.status_code == 201, response.text
    return response.json()["session"]


def counts(client: TestClient, memory_set: str | None, session: str | None = None) -> dict[str, float]:
    """Learned retrieval counts: of a set's initial state, or of a session (`GET /sessions/{id}`
    when no set is named)."""
    if memory_set is None:
        response = client.get(f"/sessions/{session}")
    else:
        response = client.get("/memories", params={"memory_set": memory_set, **({"session": session} if session else {})})
    assert response.status_code == 200, response.text
    return {m["id"]: m["retrieval_count"] for m in response.json()["memories"] if m["retrieval_count"]}


@pytest.fixture(scope="module")
def client(tiny_runtime: Runtime) -> Iterator[TestClient]:
    app = create_api(tiny_runtime, ApiSettings(max_new_tokens=64, default_max_new_tokens=8))
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


def recorded_answers(
    runtime: Runtime, monkeypatch: pytest.MonkeyPatch, hold_after: Optional[int] = None, released: Optional[list] = None
) -> list[Done]:
    """The `Done` event of every answer the runtime's engines finish from now on. With
    `hold_after`, the first of them waits after that many text events until its cancel event
    is set (60 s guard), so a fast model cannot finish before a disconnect is noticed;
    `released` gets True when the cancel event ended the wait, False when the guard did."""
    finished: list[Done] = []
    answers = itertools.count()
    make_engine = runtime.engine

    def engine(pool: Any) -> Any:
        built = make_engine(pool)
        stream = built.stream

        def recording(*args: Any, **kwargs: Any) -> Iterator[Any]:
            texts = 0
            hold = hold_after if next(answers) == 0 else None
            for event in stream(*args, **kwargs):
                if isinstance(event, Done):
                    finished.append(event)
                texts += isinstance(event, (Token, Thinking))
                if texts == hold and kwargs.get("cancel") is not None:
                    woken = kwargs["cancel"].wait(60)
                    if released is not None:
                        released.append(woken)
                yield event

        monkeypatch.setattr(built, "stream", recording)
        return built

    monkeypatch.setattr(runtime, "engine", engine)
    return finished


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
    events_blocks = [block for block in blocks[:-1] if not block.startswith(":")]  # `: ping` comments are allowed
    assert blocks[-1] == "" and all(block.startswith("data: {") and "\n" not in block for block in events_blocks)
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
            # anchored (the default): filling an extra slot adds without removing
            assert (event["added"] or event["removed"]) and 0 < event["at_token"] <= 8
        if event["type"] == "context":
            assert event["prompt_tokens"] > 0 and event["memory_tokens"] >= 0
    done = events[-1]
    assert done["tokens"] <= 8 and done["stop_reason"] in ("eos", "max_tokens")


def test_without_a_session_every_request_starts_fresh(client: TestClient) -> None:
    first, second = chat(client), chat(client)
    assert first[:-1] == second[:-1]  # same seed, same initial state: the same answer (timings aside)
    assert counts(client, "tutor") == {}


def test_a_session_keeps_its_hebbian_state(client: TestClient) -> None:
    keeper = new_session(client)
    assert len(keeper) >= 32  # 192 random bits, URL-safe base64
    answers = [chat(client, session=keeper, seed=seed) for seed in (1, 2, 3)]
    expected: dict[str, float] = {}
    for events in answers:
        for memory_id in in_context(events):
            expected[memory_id] = expected.get(memory_id, 0) + 1
    assert counts(client, "tutor", keeper) == expected
    state = client.get(f"/sessions/{keeper}").json()
    assert state["answers"] == 3 and state["links"] and state["memory_set"] == "tutor"
    assert all(link["weight"] > 0 for link in state["links"])
    assert counts(client, "family", None) == {}


def test_a_session_answers_from_its_own_set_only(client: TestClient) -> None:
    session = new_session(client, "family")
    events = chat(client, session=session, memory_set=None)
    assert events[-1]["type"] == "done"
    response = client.post("/chat/stream", json={"message": MESSAGE, "memory_set": "tutor", "session": session, **FAST})
    assert response.status_code == 422 and response.json()["error"]["field"] == "memory_set"
    assert counts(client, None, session) == dict.fromkeys(in_context(events), 1)


def test_unknown_or_deleted_sessions_are_refused_never_started_afresh(client: TestClient) -> None:
    for unknown in ("never-created", "x" * 32):
        response = client.post("/chat/stream", json={"message": MESSAGE, "session": unknown, **FAST})
        assert response.status_code == 404 and response.json()["error"]["field"] == "session"
        assert client.get("/memories", params={"memory_set": "tutor", "session": unknown}).status_code == 404
        assert client.get(f"/sessions/{unknown}").status_code == 404
    session = new_session(client)
    assert client.delete(f"/sessions/{session}").status_code == 204
    assert client.post("/chat/stream", json={"message": MESSAGE, "session": session, **FAST}).status_code == 404
    assert client.delete(f"/sessions/{session}").status_code == 404


def test_sessions_expire_after_their_ttl(tiny_runtime: Runtime, tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from types import SimpleNamespace

    from smem.serving import sessions
    from smem.serving.session_store import SQLiteSessionStore

    store = SQLiteSessionStore(tmp_path / "s.sqlite3", ttl_s=60)
    with TestClient(create_api(tiny_runtime, ApiSettings(max_new_tokens=8), store=store)) as ttl_client:
        session = new_session(ttl_client)
        assert ttl_client.get(f"/sessions/{session}").status_code == 200
        monkeypatch.setattr(sessions, "time", SimpleNamespace(time=lambda: time.time() + 61))  # a minute passes unused
        response = ttl_client.get(f"/sessions/{session}")
        assert response.status_code == 404 and "expired" in response.json()["error"]["message"]
        assert store.sweep(time.time() + 61) == 1 and len(store) == 0


def test_export_and_import_carry_a_session_whole(client: TestClient) -> None:
    session = new_session(client)
    chat(client, session=session, seed=5)
    exported = client.get(f"/sessions/{session}/export")
    assert exported.status_code == 200 and exported.content.startswith(b"PK")
    imported = client.post("/imports", content=exported.content, headers={"Content-Type": "application/octet-stream"})
    assert imported.status_code == 201, imported.text
    copy = imported.json()["session"]
    assert copy != session and counts(client, None, copy) == counts(client, None, session)
    damaged = client.post("/imports", content=exported.content[:-50])
    assert damaged.status_code == 422 and damaged.json()["error"]["field"] == "body"


def test_a_session_over_your_own_memories_within_the_limits(tiny_runtime: Runtime) -> None:
    limits = ApiSettings(max_new_tokens=8, max_upload_records=5)
    with TestClient(create_api(tiny_runtime, limits)) as small:
        mine = small.post("/sessions", json={"memories": [{"content": "Sam plays the cello"}, {"content": "Sam fears exams"}], "label": "sam"})
        assert mine.status_code == 201 and mine.json()["memories"] == 2 and mine.json()["memory_set"] == "sam"
        too_many = small.post("/sessions", json={"memories": [{"content": f"note {i}"} for i in range(6)]})
        assert too_many.status_code == 422 and "at most 5" in too_many.json()["error"]["message"]
        bad = small.post("/sessions", json={"memories": [{"content": "ok"}, {"content": ""}]})
        assert bad.status_code == 422 and "record 2" in bad.json()["error"]["message"]


def test_a_failed_answer_reports_an_error_event_and_leaves_the_session_as_it_was(
    client: TestClient, tiny_runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    fails = new_session(client)
    chat(client, session=fails)
    before = client.get("/memories", params={"memory_set": "tutor", "session": fails}).json()
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
    events = chat(client, session=fails)
    assert [e["type"] for e in events] == ["memories", "error"]
    assert events[-1]["error"]["message"] == "generation failed: RuntimeError"
    monkeypatch.undo()
    assert client.get("/memories", params={"memory_set": "tutor", "session": fails}).json() == before
    assert chat(client, session=fails)[-1]["type"] == "done"


def test_health_names_model_sets_queue_and_limits(client: TestClient) -> None:
    health = client.get("/health").json()
    assert health["status"] == "ok" and health["model"] == "tiny"
    assert health["can_think"]  # the tiny model has Qwen3's template, with its thinking switch
    assert health["memory_sets"] == ["family", "tutor"]
    assert health["queue"] == {"mode": "serialised", "length": 0, "limit": 32}
    assert health["limits"]["max_new_tokens"] == 64


def test_memories_lists_a_set_with_its_learned_state(client: TestClient) -> None:
    body = client.get("/memories", params={"memory_set": "family"}).json()
    assert body["memory_set"] == "family" and body["session"] is None and body["answers"] == 0
    assert len(body["memories"]) > 10 and body["links"] == []
    first = body["memories"][0]
    assert {"id", "content", "type", "subject", "tokens", "retrieval_count", "last_retrieved"} <= first.keys()
    for params, field in (({"memory_set": "nope"}, "memory_set"), ({"memory_set": "tutor", "session": "never"}, "session")):  # noqa: E501
        response = client.get("/memories", params=params)
        assert response.status_code == 404 and response.json()["error"]["field"] == field


def test_openapi_documents_bodies_limits_and_errors(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    request = spec["components"]["schemas"]["ChatRequest"]
    assert request["required"] == ["message"] and request["additionalProperties"] is False
    assert request["properties"]["update_every_n"]["minimum"] == 1 and request["properties"]["update_every_n"]["maximum"] == 20
    assert request["properties"]["max_memories"]["maximum"] == 15
    assert request["properties"]["max_new_tokens"]["maximum"] == 64
    assert request["properties"]["memory_set"]["enum"] == ["family", "tutor"]
    responses = spec["paths"]["/chat/stream"]["post"]["responses"]
    assert list(responses["200"]["content"]) == ["text/event-stream"]
    for status in ("400", "413", "422", "429", "503"):
        assert responses[status]["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/ErrorResponse"}
    assert spec["paths"]["/memories"]["get"]["responses"]["404"]["content"]["application/json"]


def test_settings_come_from_the_environment() -> None:
    settings = ApiSettings.from_env({"SMEM_API_SESSION_TTL_S": "7", "SMEM_API_MAX_NEW_TOKENS": "100", "SMEM_API_MAX_QUEUE": "3"})
    assert (settings.session_ttl_s, settings.max_new_tokens, settings.default_max_new_tokens, settings.max_queue) == (7, 100, 100, 3)
    with pytest.raises(ValueError, match="max_body_bytes"):
        ApiSettings(max_body_bytes=1000)


def test_a_full_queue_is_refused_with_503(tiny_runtime: Runtime) -> None:
    client = TestClient(create_api(tiny_runtime, ApiSettings(max_queue=1)))
    with holding_the_model(tiny_runtime):
        response = client.post("/chat/stream", json={"message": MESSAGE, "memory_set": "tutor"})
    assert response.status_code == 503 and response.headers["retry-after"] == "5"
    assert response.json()["error"]["status"] == 503
    assert "(1 answer waiting)" in response.json()["error"]["message"]  # counted, not "1 answers"


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
    shared = new_session(httpx.Client(base_url=live), "family")

    def ask(seed: int) -> None:
        body = {"message": MESSAGE, "session": shared, **FAST, "seed": seed}
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
    state = httpx.get(f"{live}/memories", params={"memory_set": "family", "session": shared}).json()
    assert state["answers"] == 3
    assert {m["id"]: m["retrieval_count"] for m in state["memories"] if m["retrieval_count"]} == expected


def test_a_client_that_disconnects_stops_its_generation(
    live: str, tiny_runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    released: list[bool] = []
    finished = recorded_answers(tiny_runtime, monkeypatch, hold_after=5, released=released)
    leaver = new_session(httpx.Client(base_url=live))
    body = {"message": MESSAGE, "memory_set": "tutor", "session": leaver, "max_new_tokens": 4000, "update_every_n": 20}
    with httpx.stream("POST", f"{live}/chat/stream", json=body, timeout=30) as response:
        tokens = 0
        for event in sse.decode(response.iter_lines()):
            tokens += event["type"] in ("token", "thinking")
            if tokens == 3:
                break
        assert tiny_runtime.queue.waiting == 1
    wait_until_idle(live, tiny_runtime, timeout=60.0)
    assert [(done.stats.stop_reason, done.stats.tokens < 4000) for done in finished] == [("cancelled", True)]
    assert False not in released  # the disconnect cancelled the answer (held or not), not the 60 s guard
    state = httpx.get(f"{live}/memories", params={"memory_set": "tutor", "session": leaver}).json()
    assert state["answers"] == 1  # the engine finished (cancelled) and the session was released
    events = list(sse.decode(httpx.post(f"{live}/chat/stream", json={**body, **FAST}, timeout=30).text.split("\n")))
    assert events[0]["type"] == "memories" and events[-1]["type"] == "done"


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
        zero = new_session(remote)
        events = chat(remote, session=zero)
        assert events[-1]["type"] == "done" and seen
        learned = counts(remote, "tutor", zero)
        assert set(learned) == in_context(events)
        chat(remote, session=zero)
        assert sum(counts(remote, "tutor", zero).values()) > sum(learned.values())


def test_a_caller_that_leaves_the_line_frees_its_place_at_once() -> None:
    from smem.serving.queueing import GenerationQueue

    queue = GenerationQueue()
    holding, release = threading.Event(), threading.Event()

    def hold() -> None:
        with queue.slot(client="a"):
            holding.set()
            release.wait(10)

    holder = threading.Thread(target=hold)
    holder.start()
    assert holding.wait(5)
    cancels = [threading.Event() for _ in range(5)]
    positions: list[list[int]] = [[] for _ in cancels]

    def wait(index: int) -> None:
        try:
            with queue.slot(on_wait=positions[index].append, cancel=cancels[index], poll_s=0.01, client="ghost"):
                pass
        except Cancelled:
            pass

    ghosts = [threading.Thread(target=wait, args=(index,)) for index in range(len(cancels))]
    for ghost in ghosts:
        ghost.start()
    while queue.waiting < 1 + len(ghosts):
        time.sleep(0.005)
    assert queue.held_by("ghost") == len(ghosts) and queue.held_by("a") == 1
    for cancel in cancels:
        cancel.set()
    for ghost in ghosts:
        ghost.join(5)
    assert queue.waiting == 1 and queue.held_by("ghost") == 0  # the holder is still generating
    release.set()
    holder.join(5)
    assert queue.waiting == 0


def test_one_client_cannot_fill_the_queue(tiny_runtime: Runtime) -> None:
    client = TestClient(create_api(tiny_runtime, ApiSettings(max_queue_per_client=1)))
    session = new_session(client)
    leave = threading.Event()

    def queued_answer() -> None:
        with contextlib.suppress(Cancelled), tiny_runtime.queue.slot(client=f"session:{session}", cancel=leave, poll_s=0.01):
            pass

    with holding_the_model(tiny_runtime):
        waiter = threading.Thread(target=queued_answer)
        waiter.start()
        while tiny_runtime.queue.held_by(f"session:{session}") < 1:
            time.sleep(0.01)
        refused = client.post("/chat/stream", json={"message": MESSAGE, "session": session, **FAST})
        leave.set()
        waiter.join(5)
    assert refused.status_code == 429 and refused.headers["retry-after"] == "5"
    assert refused.json()["error"]["status"] == 429
    assert "already has 1 answer generating" in refused.json()["error"]["message"]


def test_history_is_trimmed_to_the_token_budget_and_the_stream_says_so(tiny_runtime: Runtime) -> None:
    limits = ApiSettings(max_new_tokens=8, max_message_tokens=64, max_prompt_tokens=200)
    turn = "fractions and decimals " * 10
    history = [{"role": role, "content": turn} for _ in range(6) for role in ("user", "assistant")]
    with TestClient(create_api(tiny_runtime, limits)) as small:
        events = list(sse.decode(small.post("/chat/stream", json={"message": MESSAGE, "memory_set": "tutor", "history": history, **FAST}).text.split("\n")))
        trimmed = events[0]
        assert trimmed["type"] == "history_trimmed" and trimmed["budget"] == 200
        assert trimmed["dropped"] + trimmed["kept"] == len(history) and trimmed["dropped"] >= 1 and trimmed["prompt_tokens"] <= 200
        assert events[1]["type"] == "memories" and events[-1]["type"] == "done"
        short = list(sse.decode(small.post("/chat/stream", json={"message": MESSAGE, "memory_set": "tutor", "history": history[:2], **FAST}).text.split("\n")))
        assert short[0]["type"] == "memories"
        long = small.post("/chat/stream", json={"message": "fractions " * 100, "memory_set": "tutor", **FAST})
        assert long.status_code == 422 and long.json()["error"]["field"] == "message" and "model tokens" in long.json()["error"]["message"]


def test_a_visitor_state_is_kept_under_an_id_and_survives_a_new_process(tiny_runtime: Runtime, tmp_path: Any) -> None:
    """What the UI needs to keep a visitor's pool across reloads: create, replace and reload it
    through a fresh `Sessions` on the same database (as after a restart)."""
    from smem.serving.session_store import SQLiteSessionStore
    from smem.serving.sessions import Sessions

    path = tmp_path / "visitors.sqlite3"
    pool = tiny_runtime.sets.pool("tutor")
    sessions = Sessions(SQLiteSessionStore(path), tiny_runtime.embedder)
    visitor = sessions.create(pool, "tutor")
    pool.add("Alex joined the chess club")
    pool.reinforce([memory.id for memory in pool.memories[:3]])
    sessions.replace(visitor, pool, "tutor")
    reloaded, learned, answers, label = Sessions(SQLiteSessionStore(path), tiny_runtime.embedder).state(visitor)
    assert reloaded.memories == pool.memories and reloaded.links() == pool.links() and reloaded.links()
    assert (answers, label) == (0, "tutor")


def test_stream_events_are_exactly_the_generated_models(client: TestClient) -> None:
    """The engine's event models are generated from `smem.generation.events`: each payload
    the server sends has exactly its model's fields, and validates."""
    from pydantic import TypeAdapter

    from smem.serving.api_schema import ENGINE_EVENT_MODELS, StreamEvent

    models = {cls.sse_type: model for cls, model in ENGINE_EVENT_MODELS.items()}
    adapter = TypeAdapter(StreamEvent)
    seen = set()
    for event in chat(client, update_every_n=1, max_new_tokens=16):
        assert set(event) == set(models[event["type"]].model_fields), event["type"]
        assert type(adapter.validate_python(event)) is models[event["type"]]
        seen.add(event["type"])
    assert {"memories", "context", "done"} <= seen


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


def test_the_streaming_query_settings_reach_the_engine(client: TestClient) -> None:
    """The variants the answer benchmark tried are request fields: each changes what the engine does."""
    long = {"max_new_tokens": 16, "update_every_n": 1}

    def sets(events: list[dict[str, Any]]) -> list[set[str]]:
        return [{m["id"] for m in e["memories"]} for e in events if e["type"] in ("memories", "memory_update")]

    never, always = (chat(client, **long, retrieval_trigger="uncertainty", uncertainty_threshold=t) for t in (0.0, 1.0))
    assert never[-1]["retrievals"] < always[-1]["retrievals"], "a token below the threshold triggers a re-retrieval"
    free = sets(chat(client, **long, extra_memories=0))
    anchored = sets(chat(client, **long, extra_memories=2))
    assert any(not free[0] <= later for later in free[1:]), "unanchored, a swap replaces a first memory"
    assert len(anchored) > 1 and all(anchored[0] <= later for later in anchored[1:]), "anchored, the first memories stay"
    assert max(map(len, anchored)) <= len(anchored[0]) + 2
    assert chat(client, **long, lookahead_tokens=8)[-1]["extra"]["drafted_tokens"] == 8
    assert chat(client, **long)[-1]["extra"]["drafted_tokens"] == 0
