"""Deadlines: a total one per job and an idle one for an upstream that stops sending."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from redis.asyncio import Redis

from streamq import Error, JobFailed, Reset, StreamQ
from streamq.core.request import chat_messages
from streamq.core.settings import Settings
from streamq.dev.simulator import simulated_text
from streamq.worker.arq_worker import running_worker


@pytest.mark.usefixtures("worker")
async def test_an_upstream_that_stalls_once_is_retried(sq: StreamQ) -> None:
    """No data for `idle_timeout` fails the attempt; the retry completes the job."""
    stall = {"fault": "stall", "after": 2, "fault_times": 1, "fault_key": "stall-once"}
    job = await sq.enqueue_chat("stall", idle_timeout=0.3, extra_body={"simulator": stall})
    result = await job.result()
    assert result.text == simulated_text(chat_messages("stall"))
    assert result.attempt == 2
    assert any(isinstance(e, Reset) for e in [e async for e in job.events()])


@pytest.mark.usefixtures("worker")
async def test_an_upstream_that_keeps_stalling_ends_with_timeout(sq: StreamQ) -> None:
    """When every attempt stalls, the job ends with `error` code `timeout`."""
    stall = {"fault": "stall", "after": 1}
    job = await sq.enqueue_chat("stuck", idle_timeout=0.2, extra_body={"simulator": stall})
    with pytest.raises(JobFailed) as failed:
        await job.result()
    assert failed.value.error.code == "timeout"
    assert failed.value.error.attempt == sq.settings.max_attempts


@pytest.mark.usefixtures("worker")
async def test_the_total_deadline_ends_the_job_without_retry(sq: StreamQ) -> None:
    """A job slower than its `deadline` ends with a non-retryable `timeout` on attempt 1."""
    slow = {"simulator": {"tokens_per_second": 10, "reply_tokens": 100}}
    job = await sq.enqueue_chat("too slow", deadline=0.5, extra_body=slow)
    events = [e async for e in job.events()]
    error = events[-1]
    assert isinstance(error, Error)
    assert (error.code, error.retryable, error.attempt) == ("timeout", False, 1)
    assert "deadline" in error.message


@pytest.fixture
async def silent_upstream() -> AsyncIterator[str]:
    """The base URL of a server that takes connections and never answers on them."""
    held: list[asyncio.StreamWriter] = []

    async def hold(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)  # kept open until the test ends, never written to

    server = await asyncio.start_server(hold, "127.0.0.1", 0)
    try:
        yield f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/v1"
    finally:
        for writer in held:
            writer.close()
        server.close()
        await server.wait_closed()


@pytest.mark.parametrize(
    "options",
    [
        {"idle_timeout": 0.3},
        {"idle_timeout": 0.3, "upstream_api": "responses"},
        {"buffered": True, "deadline": 0.5},
    ],
    ids=["chat", "responses", "buffered"],
)
async def test_an_upstream_that_never_answers_ends_with_timeout(
    redis: Redis, settings: Settings, silent_upstream: str, options: dict[str, Any]
) -> None:
    """A request whose response never even starts fails after its idle timeout (a buffered
    one's: its deadline), whichever API the upstream speaks. The SDK's own read timeout is
    off in the worker: these are what bound the wait."""
    silent = settings.replace(openai_base_url=silent_upstream, max_attempts=1)
    async with StreamQ(redis, silent) as sq, running_worker(silent):
        job = await sq.enqueue_chat("anyone there?", **options)
        with pytest.raises(JobFailed) as failed:
            await job.result(timeout=30)
    assert failed.value.error.code == "timeout"
