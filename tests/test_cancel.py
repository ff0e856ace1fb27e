"""Cancellation: queued jobs never start, running ones stop their upstream stream at once."""

from __future__ import annotations

import asyncio
import statistics
import time

import pytest
from redis.asyncio import Redis

from streamq import Cancelled, ChatJob, Delta, JobCancelled, Settings, StreamQ
from streamq.simulator import SimulatorThread
from streamq.worker import running_worker
from tests.processes import run_cli

SLOW = {"simulator": {"tokens_per_second": 20, "reply_tokens": 400}}


async def wait_for_delta(job: ChatJob) -> None:
    async for event in job.events():
        if isinstance(event, Delta):
            return


async def test_a_queued_job_is_cancelled_before_any_worker_sees_it(
    sq: StreamQ, simulator: SimulatorThread
) -> None:
    """Cancelling a queued job ends its stream at once; a worker later never calls upstream."""
    job = await sq.enqueue_chat("never", extra_body=SLOW)
    assert await job.cancel() == "cancelled"
    events = [e async for e in job.events()]
    assert [type(e) for e in events] == [Cancelled]
    requests_before = simulator.stats.requests
    async with running_worker(sq.settings):
        await asyncio.sleep(0.3)  # the worker takes the arq job and finds it ended
    assert simulator.stats.requests == requests_before
    with pytest.raises(JobCancelled):
        await job.result()


async def test_a_running_job_stops_streaming_and_ends_cancelled(
    sq: StreamQ, simulator: SimulatorThread
) -> None:
    """The worker closes the upstream stream and writes `cancelled` with the deltas it sent."""
    async with running_worker(sq.settings):
        job = await sq.enqueue_chat("stop me", extra_body=SLOW)
        await wait_for_delta(job)
        assert await job.cancel() == "cancelling"
        events = [e async for e in job.events()]
        await asyncio.sleep(0.2)
        assert simulator.stats.in_flight == 0  # the upstream connection is closed
    cancelled = events[-1]
    assert isinstance(cancelled, Cancelled)
    assert cancelled.deltas == sum(isinstance(e, Delta) for e in events) > 0
    assert sum(isinstance(e, Cancelled) for e in events) == 1


async def test_cancelling_a_finished_job_changes_nothing(sq: StreamQ) -> None:
    """A finished job stays as it was and the caller is told it had ended."""
    async with running_worker(sq.settings):
        job = await sq.enqueue_chat("quick")
        await job.result()
    before = [e async for e in job.events()]
    assert await job.cancel() == "already_done"
    assert [e async for e in job.events()] == before


async def test_cancel_storm_latency(sq: StreamQ) -> None:
    """Twenty running jobs cancelled at once all end `cancelled`; latency is reported."""
    async with running_worker(sq.settings):
        jobs = [await sq.enqueue_chat(f"storm {i}", extra_body=SLOW) for i in range(20)]
        await asyncio.gather(*(wait_for_delta(job) for job in jobs))

        async def cancel_and_time(job: ChatJob) -> float:
            began = time.monotonic()
            await job.cancel()
            async for event in job.events():
                if isinstance(event, Cancelled):
                    return time.monotonic() - began
            raise AssertionError("no cancelled event")

        latencies = await asyncio.gather(*(cancel_and_time(job) for job in jobs))
    print(f"cancel latency: median {statistics.median(latencies) * 1000:.1f} ms, "
          f"max {max(latencies) * 1000:.1f} ms")  # fmt: skip


async def test_cancel_from_the_cli(settings: Settings, redis: Redis) -> None:
    """`streamq cancel JOB_ID` cancels a queued job and says so; unknown ids exit 2."""
    async with StreamQ(redis, settings) as sq:
        job = await sq.enqueue_chat("cli cancel")
    code, out, _ = await run_cli(settings, "cancel", job.id)
    assert (code, out) == (0, f"{job.id}: cancelled\n")
    code, out, _ = await run_cli(settings, "cancel", job.id)
    assert (code, out) == (0, f"{job.id}: already cancelled\n")
    code, _, err = await run_cli(settings, "cancel", "nope")
    assert code == 2
    assert "no job" in err
