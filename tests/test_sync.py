"""streamq.sync: the blocking client, against a real Redis, a real worker and the simulator."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import redis as redis_lib
from redis.asyncio import Redis

import streamq
from streamq import (
    Delta,
    Done,
    InvalidCursor,
    InvalidRequest,
    JobCancelled,
    JobFailed,
    JobNotFound,
    JobRestarted,
    ReadTimeout,
    Settings,
    Start,
)
from streamq.core.keys import Keys
from streamq.core.request import chat_messages
from streamq.dev.simulator import simulated_text
from streamq.sync import StreamQ
from tests.harness.loop_thread import worker_thread


@pytest.fixture
def client(settings: Settings) -> Iterator[StreamQ]:
    """A blocking client with the test's settings."""
    with StreamQ.from_url(settings.redis_url, settings) as sq:
        yield sq


@pytest.fixture
def threaded_worker(settings: Settings) -> Iterator[None]:
    """A worker on a thread of its own, so the test may block on Redis."""
    with worker_thread(settings):
        yield


def expected(prompt: str, system_prompt: str | None = None) -> str:
    return simulated_text(chat_messages(prompt, system_prompt=system_prompt))


@pytest.mark.usefixtures("threaded_worker")
def test_for_chunk_in_job_yields_the_exact_text(client: StreamQ) -> None:
    """`for chunk in job` yields the text deltas that join into the model's answer."""
    job = client.enqueue_chat("Tell me about queues", system_prompt="Be brief.")
    chunks = list(job)
    assert len(chunks) > 1
    assert "".join(chunks) == expected("Tell me about queues", system_prompt="Be brief.")


@pytest.mark.usefixtures("threaded_worker")
def test_enqueue_takes_a_full_message_list(client: StreamQ) -> None:
    """`enqueue(messages=...)` sends the messages as given, with the parameters and model."""
    messages = [
        {"role": "system", "content": "sys"},
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "hello"},
        {"role": "user", "content": "and now?"},
    ]
    job = client.enqueue(messages=messages, model="other-model", temperature=0.3)
    result = job.result()
    assert result.text == simulated_text(messages)
    assert result.model == "other-model"
    assert result.finish_reason == "stop"
    assert result.usage is not None


@pytest.mark.usefixtures("threaded_worker")
def test_events_after_a_cursor_resume_without_gap_or_duplicate(client: StreamQ) -> None:
    """`events(after=cursor)` returns exactly the events after the cursor."""
    job = client.enqueue_chat("resume me")
    events = list(job.events(queued=False))
    assert isinstance(events[0], Start)
    assert isinstance(events[-1], Done)
    assert [event.seq for event in events] == list(range(len(events)))
    assert list(job.events(after=events[2].cursor)) == events[3:]
    assert list(job.events(after=events[-1].cursor)) == []
    assert "".join(job.text(after=events[2].cursor)) == "".join(
        e.text for e in events[3:] if isinstance(e, Delta)
    )
    with pytest.raises(InvalidCursor):
        job.events(after="yesterday")


def test_a_job_enqueued_twice_with_one_id_runs_once(client: StreamQ, settings: Settings) -> None:
    """`job_id` is an idempotency key: the same request again returns the same job."""
    first = client.enqueue_chat("only once", job_id="same-id")
    again = client.enqueue_chat("only once", job_id="same-id")
    assert again.id == first.id == "same-id"
    with worker_thread(settings):
        assert first.result().text == expected("only once")
    assert client.enqueue_chat("only once", job_id="same-id").result().text == expected("only once")
    assert sum(isinstance(event, Start) for event in again.events()) == 1


def test_a_job_enqueued_again_is_queued_again_when_arq_lost_it(
    client: StreamQ, settings: Settings
) -> None:
    """Enqueueing an unfinished id whose arq job is gone puts it back in arq's queue."""
    job = client.enqueue_chat("lost by arq", job_id="lost-1")
    arq_id = Keys(settings.key_prefix).arq_job_id("lost-1")
    with redis_lib.Redis.from_url(settings.redis_url) as plain:
        plain.delete(f"arq:job:{arq_id}")
        plain.zrem(settings.queue_name, arq_id)
        client.enqueue_chat("lost by arq", job_id="lost-1")
        assert plain.zscore(settings.queue_name, arq_id) is not None
    with worker_thread(settings):
        assert "".join(job) == expected("lost by arq")


@pytest.mark.parametrize(
    ("call", "message"),
    [
        ({"messages": [{"role": "wizard", "content": "x"}]}, "role"),
        ({"messages": [{"role": "user", "content": "x"}], "temperature": 9}, "temperature"),
        ({"messages": [{"role": "user", "content": "x"}], "api_key": "sk-x"}, "api_key"),
        ({"messages": [{"role": "user", "content": "x"}], "job_id": "no spaces"}, "job id"),
        ({"messages": []}, "non-empty"),
    ],
)
def test_bad_input_raises_before_anything_reaches_redis(
    client: StreamQ, settings: Settings, call: dict[str, object], message: str
) -> None:
    """Invalid requests raise InvalidRequest and write nothing."""
    with pytest.raises(InvalidRequest, match=message):
        client.enqueue(**call)  # type: ignore[arg-type]
    with redis_lib.Redis.from_url(settings.redis_url) as plain:
        assert list(plain.scan_iter(match=f"{settings.key_prefix}*")) == []


def test_an_unknown_job_raises_job_not_found(client: StreamQ) -> None:
    """Every way of reading or changing a job that was never enqueued raises JobNotFound."""
    job = client.job("never-enqueued")
    with pytest.raises(JobNotFound):
        list(job)
    with pytest.raises(JobNotFound):
        job.result()
    with pytest.raises(JobNotFound):
        job.status()
    with pytest.raises(JobNotFound):
        job.cancel()


def test_a_queued_job_can_be_cancelled_and_never_starts(
    client: StreamQ, settings: Settings
) -> None:
    """Cancelling a job no worker took ends it at once; readers get JobCancelled."""
    job = client.enqueue_chat("never mind")
    assert job.status().state == "queued"
    assert job.cancel() == "cancelled"
    assert job.cancel() == "already_cancelled"
    with worker_thread(settings):
        with pytest.raises(JobCancelled):
            list(job)
        assert job.status().state == "cancelled"
        assert [event.type for event in job.events()] == ["cancelled"]


@pytest.mark.usefixtures("threaded_worker")
def test_a_running_job_can_be_cancelled(client: StreamQ) -> None:
    """Cancelling mid-stream stops the generation; the stream ends with `cancelled`."""
    slow = {"simulator": {"tokens_per_second": 50, "reply_tokens": 200}}
    job = client.enqueue_chat("stop me", extra_body=slow)
    chunks = job.text()
    next(chunks)
    assert job.status().state == "running"
    assert job.cancel() == "cancelling"
    with pytest.raises(JobCancelled) as cancelled:
        list(chunks)
    assert 0 < cancelled.value.event.deltas < 200


@pytest.mark.usefixtures("threaded_worker")
def test_a_failed_job_raises_job_failed(client: StreamQ) -> None:
    """An `error` event raises JobFailed from iteration and from result()."""
    job = client.enqueue_chat("fail", extra_body={"simulator": {"fault": "http_400"}})
    with pytest.raises(JobFailed) as failed:
        job.result()
    assert failed.value.error.code == "upstream_bad_request"
    with pytest.raises(JobFailed):
        list(job)
    assert job.status().state == "error"


@pytest.mark.usefixtures("threaded_worker")
def test_a_restart_after_text_raises_job_restarted(client: StreamQ) -> None:
    """Text from two attempts is never joined; the new attempt reads from the exception's cursor."""
    fault = {"fault": "disconnect", "after": 3, "fault_times": 1, "fault_key": uuid.uuid4().hex}
    job = client.enqueue_chat("restart me", extra_body={"simulator": fault})
    seen: list[str] = []
    with pytest.raises(JobRestarted) as restarted:
        seen.extend(job)
    assert len(seen) == 3
    assert "".join(job.text(after=restarted.value.cursor)) == expected("restart me")
    assert job.result().attempt == 2


def test_a_reader_with_nothing_to_read_times_out(client: StreamQ) -> None:
    """With no worker, waiting longer than the timeout raises ReadTimeout."""
    job = client.enqueue_chat("nobody home")
    with pytest.raises(ReadTimeout):
        list(job.text(timeout=0.2))


@pytest.mark.usefixtures("threaded_worker")
async def test_a_sync_job_is_read_by_the_async_client(client: StreamQ, sq: streamq.StreamQ) -> None:
    """Jobs are shared through Redis: enqueued blocking, read with `async for`."""
    job = client.enqueue_chat("from sync to async")
    chunks = [chunk async for chunk in sq.job(job.id)]
    assert "".join(chunks) == expected("from sync to async")


@pytest.mark.usefixtures("threaded_worker")
async def test_an_async_job_is_read_by_the_sync_client(
    client: StreamQ, sq: streamq.StreamQ
) -> None:
    """Jobs are shared through Redis: enqueued with `await`, read with a plain `for`."""
    job = await sq.enqueue_chat("from async to sync")
    assert "".join(client.job(job.id)) == expected("from async to sync")
    assert client.job(job.id).result() == await job.result()


async def test_both_clients_write_the_same_keys_and_values(
    client: StreamQ, sq: streamq.StreamQ, redis: Redis, settings: Settings
) -> None:
    """The same request enqueued by either client leaves identical keys, values and TTLs."""
    params: dict[str, Any] = {"system_prompt": "Be brief.", "temperature": 0.5, "deadline": 30.0}
    client.enqueue_chat("same writes", job_id="from-sync", **params)
    await sq.enqueue_chat("same writes", job_id="from-async", **params)
    keys = Keys(settings.key_prefix)
    for name in ("from-sync", "from-async"):
        assert await redis.ttl(keys.request(name)) == settings.stream_ttl
        assert await redis.pttl(f"arq:job:{keys.arq_job_id(name)}") > 0
    assert await redis.get(keys.request("from-sync")) == await redis.get(keys.request("from-async"))
    [sync_job, async_job] = [
        json.loads(await redis.get(f"arq:job:{keys.arq_job_id(name)}") or b"")
        for name in ("from-sync", "from-async")
    ]
    assert sync_job.keys() == async_job.keys()
    assert {k: v for k, v in sync_job.items() if k != "et"} == {
        k: v for k, v in async_job.items() if k != "et"
    }
    queued = await redis.zrange(settings.queue_name, 0, -1)
    assert sorted(queued) == sorted(
        keys.arq_job_id(n).encode() for n in ("from-sync", "from-async")
    )


def test_a_closed_client_refuses_use(settings: Settings) -> None:
    """A client used after `with` raises ClientClosed."""
    with StreamQ.from_url(settings.redis_url, settings) as client:
        pass
    with pytest.raises(streamq.ClientClosed):
        client.enqueue_chat("too late")


def test_the_client_reads_its_settings_from_the_environment(settings: Settings) -> None:
    """`StreamQ.from_env` takes REDIS_URL and the key prefix from the environment."""
    environ = {"REDIS_URL": settings.redis_url, "STREAMQ_KEY_PREFIX": settings.key_prefix}
    with StreamQ.from_env(environ) as client:
        assert client.settings.key_prefix == settings.key_prefix
        assert client.settings.redis_url == settings.redis_url
