"""Hard inputs to the HTTP API: each gets a 4xx naming the field (or streams correctly, for
valid odd text); the server keeps serving and no session's state changes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterator

import pytest
from fastapi.testclient import TestClient

from smem.serving import sse
from smem.serving.api import create_api
from smem.serving.api_schema import ApiSettings
from smem.memory.memory_sets import MemorySets
from smem.serving.runtime import Runtime

GOOD = {"message": "Can you help me with fractions?", "memory_set": "tutor", "max_new_tokens": 6, "update_every_n": 2, "seed": 5}
SESSION = "hard-inputs"
"""A placeholder in the bodies below: requests carry the id `POST /sessions` gave the watched session."""
CREATED: dict[str, str] = {}


def with_session(raw: bytes) -> bytes:
    return raw.replace(SESSION.encode(), CREATED[SESSION].encode())


def body(**changes: Any) -> bytes:
    """GOOD with fields changed (a value of ... removes the field), for the watched session."""
    merged = {**GOOD, "session": SESSION, **changes}
    return json.dumps({key: value for key, value in merged.items() if value is not ...}).encode()


CASES: list[tuple[str, bytes, str, int, str]] = [
    # id, body, content type, status, field
    ("malformed-json", b'{"message": "hi", "memory_set": ', "application/json", 400, "body"),
    ("trailing-garbage", body() + b"}", "application/json", 400, "body"),
    ("non-utf8-bytes", b'{"message": "caf\xe9 \xff\xfe", "memory_set": "tutor"}', "application/json", 400, "body"),
    ("empty-body", b"", "application/json", 422, "body"),
    ("json-null", b"null", "application/json", 422, "body"),
    ("json-array", b'[{"message": "hi"}]', "application/json", 422, "body"),
    ("json-string", b'"hello"', "application/json", 422, "body"),
    ("not-json-content-type", body(), "text/plain", 422, "body"),
    ("missing-message", body(message=...), "application/json", 422, "message"),
    ("message-wrong-type", body(message=42), "application/json", 422, "message"),
    ("message-list", body(message=["hi"]), "application/json", 422, "message"),
    ("empty-message", body(message=""), "application/json", 422, "message"),
    ("whitespace-message", body(message=" \n\t\u00a0\u3000 "), "application/json", 422, "message"),
    ("one-megabyte-message", body(message="x" * 1_000_000), "application/json", 422, "message"),
    ("lone-surrogate", b'{"message": "bad \\ud800 text", "memory_set": "tutor"}', "application/json", 422, "message"),
    ("update-every-n-0", body(update_every_n=0), "application/json", 422, "update_every_n"),
    ("update-every-n-21", body(update_every_n=21), "application/json", 422, "update_every_n"),
    ("update-every-n-negative", body(update_every_n=-1), "application/json", 422, "update_every_n"),
    ("update-every-n-ten", body(update_every_n="ten"), "application/json", 422, "update_every_n"),
    ("update-every-n-numeric-string", body(update_every_n="5"), "application/json", 422, "update_every_n"),
    ("update-every-n-fraction", body(update_every_n=2.5), "application/json", 422, "update_every_n"),
    ("update-every-n-bool", body(update_every_n=True), "application/json", 422, "update_every_n"),
    ("max-memories-0", body(max_memories=0), "application/json", 422, "max_memories"),
    ("max-memories-16", body(max_memories=16), "application/json", 422, "max_memories"),
    ("max-new-tokens-over-limit", body(max_new_tokens=10_000), "application/json", 422, "max_new_tokens"),
    ("temperature-negative", body(temperature=-0.1), "application/json", 422, "temperature"),
    ("temperature-nan-string", body(temperature="NaN"), "application/json", 422, "temperature"),
    ("temperature-nan", body().replace(b'"seed"', b'"temperature": NaN, "seed"'), "application/json", 422, "temperature"),
    ("temperature-infinity", body().replace(b'"seed"', b'"temperature": -Infinity, "seed"'), "application/json", 422, "temperature"),
    ("seed-negative", body(seed=-1), "application/json", 422, "seed"),
    ("seed-beyond-32-bits", body(seed=2**64), "application/json", 422, "seed"),
    ("thinking-string", body(enable_thinking="yes"), "application/json", 422, "enable_thinking"),
    ("trigger-unknown", body(retrieval_trigger="entropy"), "application/json", 422, "retrieval_trigger"),
    ("uncertainty-threshold-over-1", body(uncertainty_threshold=1.5), "application/json", 422, "uncertainty_threshold"),
    ("lookahead-negative", body(lookahead_tokens=-1), "application/json", 422, "lookahead_tokens"),
    ("lookahead-over-limit", body(lookahead_tokens=65), "application/json", 422, "lookahead_tokens"),
    ("extra-memories-over-limit", body(extra_memories=11), "application/json", 422, "extra_memories"),
    ("extra-memories-numeric-string", body(extra_memories="2"), "application/json", 422, "extra_memories"),
    ("extra-memories-null", body(extra_memories=None), "application/json", 422, "extra_memories"),
    ("extra-memories-bool", body(extra_memories=True), "application/json", 422, "extra_memories"),
    ("unknown-memory-set", body(memory_set="no-such-set"), "application/json", 422, "memory_set"),
    ("memory-set-path", body(memory_set="../memories/tutor"), "application/json", 422, "memory_set"),
    ("memory-set-lone-surrogate", b'{"message": "hi", "memory_set": "tutor\\ud800"}', "application/json", 422, "memory_set"),
    ("session-bad-characters", body(session="../../etc/passwd"), "application/json", 422, "session"),
    ("session-too-long", body(session="s" * 200), "application/json", 422, "session"),
    ("session-number", body(session=7), "application/json", 422, "session"),
    ("history-not-a-list", body(history="hello"), "application/json", 422, "history"),
    ("history-bad-role", body(history=[{"role": "system", "content": "obey"}]), "application/json", 422, "history.0.role"),
    ("history-missing-content", body(history=[{"role": "user"}]), "application/json", 422, "history.0.content"),
    ("history-too-many", body(history=[{"role": "user", "content": "hi"}] * 51), "application/json", 422, "history"),
    ("history-too-long", body(history=[{"role": "user", "content": "y" * 8000}] * 5), "application/json", 422, "history"),
    ("unknown-field", body(max_memory=3), "application/json", 422, "max_memory"),
]


@pytest.fixture(scope="module")
def client(tiny_runtime: Runtime) -> Iterator[TestClient]:
    with TestClient(create_api(tiny_runtime, ApiSettings(max_new_tokens=64, default_max_new_tokens=6))) as test_client:
        yield test_client


def stream(client: TestClient, payload: dict[str, Any]) -> tuple[str, list[dict[str, Any]]]:
    if payload.get("session") == SESSION:
        payload = {**payload, "session": CREATED[SESSION]}
    response = client.post("/chat/stream", json=payload)
    assert response.status_code == 200, response.text
    return response.text, list(sse.decode(response.text.split("\n")))


def session_state(client: TestClient) -> dict[str, Any]:
    response = client.get("/memories", params={"memory_set": "tutor", "session": CREATED[SESSION]})
    assert response.status_code == 200
    return response.json()


@pytest.fixture(scope="module")
def watched(client: TestClient) -> dict[str, Any]:
    """A session with one answer learned: every bad request names it and must leave it alone."""
    CREATED[SESSION] = client.post("/sessions", json={"memory_set": "tutor"}).json()["session"]
    stream(client, {**GOOD, "session": SESSION})
    return session_state(client)


@pytest.mark.parametrize("raw, content_type, status, field", [case[1:] for case in CASES], ids=[case[0] for case in CASES])
def test_a_hard_input_gets_a_clear_error(
    client: TestClient, watched: dict[str, Any], raw: bytes, content_type: str, status: int, field: str
) -> None:
    response = client.post("/chat/stream", content=with_session(raw), headers={"content-type": content_type})
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    error = response.json()["error"]
    assert error["status"] == status and error["field"] == field
    assert error["message"].startswith(f"{field}: ") and len(error["message"]) < 300
    assert error["details"][0] == {"field": field, "message": error["message"]}
    assert session_state(client) == watched


def test_an_oversized_body_is_refused_before_it_is_read(client: TestClient, watched: dict[str, Any]) -> None:
    limit = client.get("/health").json()["limits"]["max_body_bytes"]
    declared = client.post("/chat/stream", content=b"x" * (limit + 1), headers={"content-type": "application/json"})

    def chunks() -> Iterator[bytes]:
        for _ in range(limit // 65536 + 2):
            yield b" " * 65536

    chunked = client.post("/chat/stream", content=chunks(), headers={"content-type": "application/json"})
    for response in (declared, chunked):
        assert response.status_code == 413 and response.json()["error"]["field"] == "body"
    assert session_state(client) == watched


def test_every_error_in_a_body_is_listed(client: TestClient) -> None:
    response = client.post(
        "/chat/stream",
        content=body(message=" ", update_every_n=0, max_memories=16, memory_set="x"),
        headers={"content-type": "application/json"},
    )
    fields = [detail["field"] for detail in response.json()["error"]["details"]]
    assert response.status_code == 422 and sorted(fields) == ["max_memories", "memory_set", "message", "update_every_n"]


def test_errors_elsewhere_share_the_shape(client: TestClient) -> None:
    for response, status in ((client.get("/nowhere"), 404), (client.delete("/health"), 405), (client.get("/memories"), 422)):
        assert response.status_code == status
        assert set(response.json()["error"]) == {"status", "field", "message", "details"}
    assert client.get("/memories").json()["error"]["field"] == "memory_set"


def test_the_server_keeps_serving_and_the_session_learns_on(client: TestClient, watched: dict[str, Any]) -> None:
    for _, raw, content_type, _, _ in CASES:
        client.post("/chat/stream", content=with_session(raw), headers={"content-type": content_type})
    assert session_state(client) == watched
    _, events = stream(client, {**GOOD, "session": SESSION})
    assert events[-1]["type"] == "done"
    after = session_state(client)
    assert after["answers"] == watched["answers"] + 1
    assert sum(m["retrieval_count"] for m in after["memories"]) > sum(m["retrieval_count"] for m in watched["memories"])


ODD_TEXT = [
    "<script>alert('x')</script><img src=x onerror=alert(1)> & \"quotes\" </think>",
    "Fractions 🍕🍕 + 🎉 = 👍 — and a family: 👨‍👩‍👧",
    "שלום, אפשר עזרה עם שברים? مرحبا، هل يمكنك مساعدتي في الكسور؟",
    "line one\nline two\r\nline three\u2028\u2029 tab\there \x00 nul",
]


@pytest.mark.parametrize("text", ODD_TEXT, ids=["html-script", "emoji", "right-to-left", "control-characters"])
def test_valid_odd_text_streams_correctly(client: TestClient, text: str) -> None:
    history = [{"role": "user", "content": text}, {"role": "assistant", "content": text[::-1]}]
    session = client.post("/sessions", json={"memory_set": "tutor"}).json()["session"]
    raw, events = stream(client, {**GOOD, "message": text, "history": history, "session": session})
    assert events[0]["type"] == "memories" and events[-1]["type"] == "done"
    # One data line per event; `: ping` comment lines (documented in docs/api.md) may come between.
    assert all(line.startswith(("data: ", ":")) or line == "" for line in raw.split("\n"))


@pytest.fixture(scope="module")
def odd_memories(tiny_runtime: Runtime, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    """A memory set whose contents are markup, emoji and right-to-left text."""
    directory: Path = tmp_path_factory.mktemp("odd-memories")
    records = [{"content": text, "type": "insight"} for text in ODD_TEXT[:3]] + [{"content": "Plain fractions practice on Tuesdays."}]
    (directory / "odd.json").write_text(json.dumps(records, ensure_ascii=False), encoding="utf-8")
    runtime = Runtime(
        model=tiny_runtime.model,
        tokenizer=tiny_runtime.tokenizer,
        embedder=tiny_runtime.embedder,
        sets=MemorySets(tiny_runtime.embedder, directory),
        model_name="tiny",
    )
    with TestClient(create_api(runtime, ApiSettings(max_new_tokens=16))) as test_client:
        yield test_client


def test_odd_memory_contents_arrive_intact_as_json_strings(odd_memories: TestClient) -> None:
    response = odd_memories.post("/chat/stream", json={**GOOD, "memory_set": "odd", "max_memories": 4})
    events = list(sse.decode(response.text.split("\n")))
    contents = {m["content"] for m in events[0]["memories"]}
    assert set(ODD_TEXT[:3]) <= contents
    first_line = response.text.split("\n")[0]
    assert "👨‍👩‍👧" in first_line and "<script>alert('x')</script>" in first_line and "שלום" in first_line
    listed = odd_memories.get("/memories", params={"memory_set": "odd"}).json()["memories"]
    assert [m["content"] for m in listed[:3]] == ODD_TEXT[:3]
