"""An Idempotency-Key names one request: the same request again finds the same job, another
request under the same key is a 409, at each door that enqueues."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx2
import pytest

from streamq.core.request import chat_messages

pytestmark = pytest.mark.usefixtures("worker")

FIRST = chat_messages("What is a queue?")
OTHER = chat_messages("What is a stack?")
Body = Callable[[list[dict[str, Any]]], dict[str, Any]]
DOORS: list[tuple[str, Body]] = [
    ("/v1/jobs", lambda messages: {"messages": messages}),
    ("/v1/chat/completions", lambda messages: {"model": "gpt-4o-mini", "messages": messages}),
    ("/v1/responses", lambda messages: {"model": "gpt-4o-mini", "input": messages[0]["content"]}),
]


@pytest.mark.parametrize(("path", "body"), DOORS, ids=["jobs", "chat", "responses"])
async def test_a_key_reused_for_another_request_is_a_409(
    client: httpx2.AsyncClient, path: str, body: Body
) -> None:
    """The same key and request: the same job twice; the same key, another request: 409
    ``idempotency_key_reused``, and the first job is untouched."""
    headers = {"Idempotency-Key": f"reused-{path}"}
    first = await client.post(path, json=body(FIRST), headers=headers)
    again = await client.post(path, json=body(FIRST), headers=headers)
    assert first.status_code == again.status_code < 300, first.text
    job_id = first.headers.get("x-streamq-job-id") or first.json()["id"]
    assert (again.headers.get("x-streamq-job-id") or again.json()["id"]) == job_id

    other = await client.post(path, json=body(OTHER), headers=headers)
    assert other.status_code == 409, other.text
    error = other.json()["error"]
    assert error["code"] == "idempotency_key_reused"
    assert "different request" in error["message"]
