"""``enqueue_response``: Responses-shaped work from the Python clients, async and sync, read like
any job; ``previous_response_id`` continues a stored conversation across clients."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from redis.asyncio import Redis

from streamq import InvalidRequest, Settings, StreamQ
from streamq.core.keys import Keys
from streamq.dev.simulator import simulated_text
from streamq.responses.store import ResponseNotFound
from streamq.sync import StreamQ as SyncStreamQ
from tests.harness.loop_thread import worker_thread

FIRST = [{"role": "system", "content": "Be terse."}, {"role": "user", "content": "Name a queue."}]


async def stored_request(redis: Redis, settings: Settings, job_id: str) -> dict[str, Any]:
    raw = await redis.get(Keys(settings.key_prefix).request(job_id))
    assert raw is not None
    body: dict[str, Any] = json.loads(raw)
    return body


@pytest.mark.usefixtures("worker")
async def test_a_response_job_reads_like_any_job(sq: StreamQ) -> None:
    job = await sq.enqueue_response("Name a queue.", instructions="Be terse.")
    chunks = [chunk async for chunk in job]
    assert "".join(chunks) == simulated_text(FIRST)
    assert (await job.result()).text == simulated_text(FIRST)


@pytest.mark.usefixtures("worker")
async def test_previous_response_id_carries_the_conversation(
    sq: StreamQ, redis: Redis, settings: Settings
) -> None:
    first = await sq.enqueue_response("Name a queue.", instructions="Be terse.")
    answer = (await first.result()).text
    second = await sq.enqueue_response("And another?", previous_response_id="resp_" + first.id)
    # Instructions are not carried over (as at OpenAI); the earlier turns are.
    expected = [
        {"role": "user", "content": "Name a queue."},
        {"role": "assistant", "content": answer},
        {"role": "user", "content": "And another?"},
    ]
    assert (await second.result()).text == simulated_text(expected)
    stored = await stored_request(redis, settings, second.id)
    assert stored["api"] == "responses"
    assert [item.get("role") for item in stored["input"]] == ["user", "assistant", "user"]


async def test_unknown_or_foreign_previous_responses_are_refused(sq: StreamQ) -> None:
    with pytest.raises(ResponseNotFound):
        await sq.enqueue_response("hi", previous_response_id="resp_nosuchjob")
    mine = await sq.enqueue_response("hi", tenant="tenant-a")
    with pytest.raises(ResponseNotFound):
        await sq.enqueue_response("hi", previous_response_id="resp_" + mine.id, tenant="tenant-b")
    with pytest.raises(InvalidRequest):
        await sq.enqueue_response("hi", temperature=7)
    with pytest.raises(InvalidRequest):
        await sq.enqueue_response([{"type": "item_reference", "id": "msg_x_0"}])


@pytest.fixture
def client(settings: Settings) -> Iterator[SyncStreamQ]:
    with SyncStreamQ.from_url(settings.redis_url, settings) as sq:
        yield sq


def test_the_sync_client_keeps_a_conversation(settings: Settings, client: SyncStreamQ) -> None:
    """The sync client stores and reads the same records as the async one and the gateway."""
    with worker_thread(settings):
        first = client.enqueue_response("Name a queue.", instructions="Be terse.")
        answer = first.result().text
        assert answer == simulated_text(FIRST)
        second = client.enqueue_response(
            [{"role": "user", "content": [{"type": "input_text", "text": "And another?"}]}],
            previous_response_id="resp_" + first.id,
        )
        expected = [
            {"role": "user", "content": "Name a queue."},
            {"role": "assistant", "content": answer},
            {"role": "user", "content": "And another?"},
        ]
        assert second.result().text == simulated_text(expected)
