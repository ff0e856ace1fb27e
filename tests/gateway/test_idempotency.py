"""An Idempotency-Key names one request: the same request again finds the same job, another
request under the same key is a 409, at each door that enqueues."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx2
import pytest
from redis.asyncio import Redis

from streamq import Settings
from streamq.core.keys import Keys, fair_order
from streamq.core.request import chat_messages
from streamq.gateway.tenancy import job_id_for
from tests.harness.gateway import TOKEN_A, TOKENS

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


@pytest.mark.parametrize(("path", "body"), DOORS, ids=["jobs", "chat", "responses"])
async def test_a_job_id_another_tenant_owns_is_a_409_and_nothing_is_written(
    client: httpx2.AsyncClient, redis: Redis, settings: Settings, path: str, body: Body
) -> None:
    """The job id a tenant's key maps to, already another tenant's (a library client's
    ``tenant=`` can name any id): 409 ``job_id_conflict``, refused by the enqueue script in
    its one round trip, before it writes anything; the owner stays."""
    key = f"taken-{path}"
    job_id = job_id_for(TOKENS[TOKEN_A], key)
    keys = Keys(settings.key_prefix)
    await redis.set(keys.owner(job_id), "someone-else", ex=600)
    reply = await client.post(path, json=body(FIRST), headers={"Idempotency-Key": key})
    assert reply.status_code == 409, reply.text
    assert reply.json()["error"]["code"] == "job_id_conflict"
    assert await redis.get(keys.owner(job_id)) == b"someone-else"
    assert (
        await redis.exists(keys.request(job_id), keys.arq_job(job_id), keys.response(job_id)) == 0
    )
    order = fair_order(settings.queue_name)
    assert await redis.zscore(order, keys.arq_job_id(job_id)) is None
