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
from schemathesis.specs.openapi.checks import positive_data_acceptance

from smem.serving import sse
from smem.serving.api import create_api
from smem.serving.api_schema import ApiSettings
from smem.serving.runtime import Runtime

LIMITS = ApiSettings(
    max_new_tokens=4,
    max_message_chars=200,
    max_history_messages=4,
    max_history_chars=800,
    max_body_bytes=128 * 1024,
    max_upload_bytes=64 * 1024,
    max_upload_records=8,
    max_pool_memories=8,
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
    # An import body is any bytes by its schema, and only a real pool file is accepted; uploaded
    # records have rules no schema states (no duplicate ids, no whitespace-only content). There,
    # schema-valid data is not expected to succeed (it must still get a documented 422).
    uploads = case.operation.path == "/imports" or (case.operation.path == "/sessions" and isinstance(case.body, dict) and "memories" in case.body)
    excluded = [positive_data_acceptance] if uploads else []
    case.call_and_validate(excluded_checks=excluded)


def test_the_server_still_answers_after_fuzzing(fuzzed_app, tiny_runtime: Runtime) -> None:
    client = TestClient(fuzzed_app)
    session = client.post("/sessions", json={"memory_set": "tutor"}).json()["session"]
    response = client.post("/chat/stream", json={"message": "Still there?", "session": session})
    assert [e["type"] for e in sse.decode(response.text.split("\n"))][-1] == "done"
    assert client.get("/health").json()["queue"]["length"] == 0 and tiny_runtime.queue.waiting == 0
