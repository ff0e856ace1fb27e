"""Cancellation: queued jobs never start, running ones stop their upstream stream at once."""

from __future__ import annotations

import asyncio

import pytest
from arq.constants import in_progress_key_prefix
from redis.asyncio import Redis

from streamq import Cancelled, ChatJob, Delta, JobCancelled, Settings, StreamQ
from streamq.core.keys import Keys
from streamq.dev.simulator import SimulatorThread
from streamq.worker.arq_worker import running_worker
from streamq.worker.fleet import Fleet, Run
from tests.harness.processes import run_cli
from tests.harness.waiting import STARTUP, poll_until

SLOW = {"simulator": {"tokens_per_second": 20, "reply_tokens": 400}}


async def wait_for_delta(job: ChatJob) -> None:
    async for event in job.events():
        if isinstance(event, Delta):
            return


async def test_a_queued_job_is_cancelled_before_any_worker_sees_it(
    sq: StreamQ, redis: Redis, simulator: SimulatorThread
) -> None:
    """Cancelling a queued job ends its stream at once; a worker later never calls upstream."""
    job = await sq.enqueue_chat("never", extra_body=SLOW)
    assert await job.cancel() == "cancelled"
    events = [e async for e in job.events()]
    assert [type(e) for e in events] == [Cancelled]
    requests_before = simulator.stats.requests
    arq_id = Keys(sq.settings.key_prefix).arq_job_id(job.id)

    async def handled() -> bool:  # arq took the job off the queue and finished with it
        queued = await redis.zscore(sq.settings.queue_name, arq_id)
        return queued is None and not await redis.exists(in_progress_key_prefix + arq_id)

    async with running_worker(sq.settings):
        await poll_until(handled, STARTUP, "the worker to take the cancelled job")
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
        await poll_until(lambda: simulator.stats.in_flight == 0, 30, "the upstream stream closed")
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


async def test_a_cancel_storm_ends_every_running_job_cancelled_once(
    sq: StreamQ, simulator: SimulatorThread
) -> None:
    """Twenty running jobs cancelled at once: each ends with one `cancelled` counting exactly
    the deltas it streamed, and every upstream stream is closed."""
    async with running_worker(sq.settings):
        jobs = [await sq.enqueue_chat(f"storm {i}", extra_body=SLOW) for i in range(20)]
        await asyncio.gather(*(wait_for_delta(job) for job in jobs))
        outcomes = await asyncio.gather(*(job.cancel() for job in jobs))
        streams = [[e async for e in job.events()] for job in jobs]
        await poll_until(lambda: simulator.stats.in_flight == 0, 30, "the upstream streams closed")
    assert outcomes == ["cancelling"] * 20
    for events in streams:
        assert [type(e) for e in events if isinstance(e, Cancelled)] == [Cancelled]
        cancelled = events[-1]
        assert isinstance(cancelled, Cancelled)
        assert cancelled.deltas == sum(isinstance(e, Delta) for e in events) > 0


@pytest.mark.slow
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


async def test_a_cancel_that_comes_between_claim_and_tracking_is_not_lost(
    redis: Redis, settings: Settings
) -> None:
    """A cancel request for a job this worker does not run yet (claimed, not yet tracked) is
    remembered: tracking the run then cancels it. Other jobs' requests cancel nothing."""
    keys = Keys(settings.key_prefix)
    fleet = Fleet(redis, keys, lease=5, arq_id=keys.arq_job_id, queue_name=settings.queue_name)
    fleet.start()
    try:
        await poll_until(
            lambda: redis.publish(keys.cancel_channel(), "just-claimed"), STARTUP, "a listener"
        )
        await poll_until(lambda: fleet.signals.asked("just-claimed"), STARTUP, "the request")
        claimed, other = Run("just-claimed", 1), Run("someone-else", 1)
        fleet.track(claimed)
        fleet.track(other)
        assert claimed.cancel_reason == "cancel requested"
        assert other.cancel_reason is None
    finally:
        await fleet.aclose()
