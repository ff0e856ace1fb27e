"""/v1/jobs over real HTTP: enqueue, follow, status, cancel, with a real worker and simulator."""

from __future__ import annotations

from typing import Any

import httpx2
import pytest

from streamq.core.request import chat_messages
from streamq.dev.simulator import simulated_text
from tests.gateway.sse import frames, read_events, text_of

MESSAGES = chat_messages("Tell me about queues", system_prompt="Be brief.")
SLOW: dict[str, Any] = {"extra_body": {"simulator": {"tokens_per_second": 25}}}


async def enqueue(client: httpx2.AsyncClient, **body: Any) -> str:
    response = await client.post("/v1/jobs", json={"messages": MESSAGES, **body})
    assert response.status_code == 202, response.text
    job_id: str = response.json()["id"]
    return job_id


@pytest.mark.usefixtures("worker")
async def test_enqueue_then_follow_the_events_to_the_end(client: httpx2.AsyncClient) -> None:
    """POST answers 202 with the job's URLs; its events arrive as SSE, ids are the cursors."""
    response = await client.post("/v1/jobs", json={"messages": MESSAGES})
    assert response.status_code == 202
    created = response.json()
    assert created["events_url"] == f"/v1/jobs/{created['id']}/events"
    assert response.headers["location"] == created["url"] == f"/v1/jobs/{created['id']}"

    events = await read_events(client, created["events_url"])
    assert events[0].event == "start"
    assert events[-1].event == "done"
    assert text_of(events) == simulated_text(MESSAGES)
    assert all(e.id == e.json()["cursor"] for e in events)
    order = [tuple(map(int, str(e.id).split("-"))) for e in events]
    assert order == sorted(order)
    assert len(set(order)) == len(order)


@pytest.mark.usefixtures("worker")
async def test_status_then_result_once_done(client: httpx2.AsyncClient) -> None:
    """GET /v1/jobs/{id} gives the state, and the assembled result once the job is done."""
    job_id = await enqueue(client, max_tokens=5)
    await read_events(client, f"/v1/jobs/{job_id}/events")
    body = (await client.get(f"/v1/jobs/{job_id}")).json()
    assert body["state"] == "done"
    assert body["result"]["text"] == simulated_text(MESSAGES, max_tokens=5)
    assert body["result"]["finish_reason"] == "length"
    assert body["result"]["usage"]["completion_tokens"] == 5


async def test_cancel_a_queued_job(client: httpx2.AsyncClient) -> None:
    """DELETE on a job no worker took ends it at once; its stream ends with `cancelled`."""
    job_id = await enqueue(client)
    response = await client.delete(f"/v1/jobs/{job_id}")
    assert response.status_code == 200
    assert response.json() == {"id": job_id, "outcome": "cancelled"}
    events = await read_events(client, f"/v1/jobs/{job_id}/events")
    assert [e.event for e in events] == ["cancelled"]
    status = (await client.get(f"/v1/jobs/{job_id}")).json()
    assert status["state"] == "cancelled"
    assert status["cancelled"]["reason"]
    again = await client.delete(f"/v1/jobs/{job_id}")
    assert again.json()["outcome"] == "already_cancelled"


@pytest.mark.usefixtures("worker")
async def test_cancel_a_running_job_stops_its_stream(client: httpx2.AsyncClient) -> None:
    """DELETE while a worker streams: 202 `cancelling`, then the stream ends with `cancelled`."""
    job_id = await enqueue(client, **SLOW)
    async with client.stream("GET", f"/v1/jobs/{job_id}/events") as response:
        seen = []
        async for frame in frames(response):
            seen.append(frame.event)
            if frame.event == "delta" and seen.count("delta") == 3:
                cancel = await client.delete(f"/v1/jobs/{job_id}")
                assert cancel.status_code == 202
                assert cancel.json()["outcome"] == "cancelling"
    assert seen[-1] == "cancelled"
    assert seen.count("delta") < len(simulated_text(MESSAGES).split())


@pytest.mark.usefixtures("worker")
async def test_idempotency_key_names_one_job(client: httpx2.AsyncClient) -> None:
    """The same Idempotency-Key twice gives the same job, generated once."""
    headers = {"Idempotency-Key": "order-42"}
    first = await client.post("/v1/jobs", json={"messages": MESSAGES}, headers=headers)
    second = await client.post("/v1/jobs", json={"messages": MESSAGES}, headers=headers)
    assert first.json()["id"] == second.json()["id"]
    events = await read_events(client, first.json()["events_url"])
    assert [e.event for e in events].count("start") == 1


async def test_events_of_a_finished_job_resume_after_any_cursor(
    client: httpx2.AsyncClient, worker: None
) -> None:
    """?after= and Last-Event-ID give exactly the later events; after the last one, 204."""
    job_id = await enqueue(client)
    url = f"/v1/jobs/{job_id}/events"
    events = await read_events(client, url)
    middle = events[len(events) // 2]
    by_query = await read_events(client, f"{url}?after={middle.id}")
    by_header = await read_events(client, url, headers={"Last-Event-ID": str(middle.id)})
    assert [e.id for e in by_query] == [e.id for e in by_header]
    assert [e.id for e in by_header] == [e.id for e in events[len(events) // 2 + 1 :]]
    ended = await client.get(url, headers={"Last-Event-ID": str(events[-1].id)})
    assert ended.status_code == 204


async def test_bad_cursors_and_unknown_jobs(client: httpx2.AsyncClient) -> None:
    """An invalid cursor is 400, a cursor the stream never had is 400, an unknown job 404."""
    job_id = await enqueue(client)
    url = f"/v1/jobs/{job_id}/events"
    for cursor in ("yesterday", "1-2-3", "9999999999999-0"):
        response = await client.get(url, headers={"Last-Event-ID": cursor})
        assert response.status_code == 400, cursor
        assert response.json()["error"]["type"] == "invalid_request_error"
    for path in ("/v1/jobs/no-such-job", "/v1/jobs/no-such-job/events", "/v1/jobs/%7Bbad%7D"):
        response = await client.get(path)
        assert response.status_code == 404
        assert response.json()["error"]["code"] == "job_not_found"
    assert (await client.delete("/v1/jobs/no-such-job")).status_code == 404


@pytest.mark.parametrize(
    ("body", "status", "fragment"),
    [
        (b"not json", 400, "not valid UTF-8 JSON"),
        (b"[1, 2]", 400, "must be a JSON object"),
        (b'{"model": "x"}', 400, "messages is required"),
        (b'{"messages": []}', 400, "non-empty list"),
        (b'{"messages": [{"role": "robot", "content": "hi"}]}', 400, "role"),
        (b'{"messages": [{"role": "user", "content": "hi"}], "temperature": 9}', 400, "from 0"),
        (b'{"messages": [{"role": "user", "content": "hi"}], "api_key": "sk"}', 400, "cannot"),
        (b'{"messages": [{"role": "user", "content": "hi"}], "job_id": "x"}', 400, "Idempotency"),
        (b'{"messages": [{"role": "user", "content": "hi"}], "stream": true}', 400, "stream"),
        (b'{"messages": [{"role": "user", "content": "hi"}], "deadline": -1}', 400, "deadline"),
    ],
)
async def test_bad_requests_get_a_clear_400(
    client: httpx2.AsyncClient, body: bytes, status: int, fragment: str
) -> None:
    """Validation is the producer's: every bad request is a JSON 4xx saying what is wrong."""
    headers = {"Content-Type": "application/json"}
    response = await client.post("/v1/jobs", content=body, headers=headers)
    assert response.status_code == status
    error = response.json()["error"]
    assert fragment in error["message"]


async def test_size_type_and_method_limits(client: httpx2.AsyncClient) -> None:
    """Oversized bodies are 413, non-JSON bodies 415, wrong methods 405: all JSON."""
    huge = {"messages": [{"role": "user", "content": "x" * 1_100_000}]}
    response = await client.post("/v1/jobs", json=huge)
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "request_too_large"
    form = await client.post("/v1/jobs", content=b"a=b", headers={"Content-Type": "text/plain"})
    assert form.status_code == 415
    assert (await client.put("/v1/jobs")).status_code == 405
    assert (await client.put("/v1/jobs")).json()["error"]["code"] == "method_not_allowed"
    assert (await client.get("/v2/elsewhere")).json()["error"]["code"] == "not_found"
    key = await client.post(
        "/v1/jobs", json={"messages": MESSAGES}, headers={"Idempotency-Key": ""}
    )
    assert key.status_code == 400
