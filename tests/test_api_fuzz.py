"""Schemathesis against the API's own OpenAPI document, bounded: few examples per operation,
a deadline per example, the tiny model with at most 4 new tokens, small text limits. Both
schema-valid and schema-breaking data; every response must be a documented status with a
conforming body, never a 5xx, and the server must still answer normally afterwards."""

from __future__ import annotations

from datetime import timedelta

import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, settings

from smem.serving import sse
from smem.serving.api import create_api
from smem.serving.api_schema import ApiSettings
from smem.serving.runtime import Runtime

LIMITS = ApiSettings(
    max_sessions=16,
    max_new_tokens=4,
    max_message_chars=200,
    max_history_messages=4,
    max_history_chars=800,
    max_body_bytes=128 * 1024,
)


@pytest.fixture(scope="module")
def fuzzed_app(tiny_runtime: Runtime):
    return create_api(tiny_runtime, LIMITS)


@pytest.fixture(scope="module")
def api_schema(fuzzed_app):
    return schemathesis.openapi.from_asgi("/openapi.json", fuzzed_app)


schema = schemathesis.pytest.from_fixture("api_schema")


@schema.parametrize()
@settings(max_examples=40, deadline=timedelta(seconds=10), suppress_health_check=list(HealthCheck), derandomize=True)
def test_no_server_errors_and_responses_conform(case) -> None:
    case.call_and_validate()


def test_the_server_still_answers_after_fuzzing(fuzzed_app, tiny_runtime: Runtime) -> None:
    client = TestClient(fuzzed_app)
    response = client.post("/chat/stream", json={"message": "Still there?", "memory_set": "tutor", "session": "after-fuzz"})
    assert [e["type"] for e in sse.decode(response.text.split("\n"))][-1] == "done"
    assert client.get("/health").json()["queue"]["length"] == 0 and tiny_runtime.queue.waiting == 0
