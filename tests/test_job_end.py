"""A job's end, after its terminal entry: its lease dropped, its request kept as long as its
stream, its end counted; none of it can fail the job."""

from __future__ import annotations

import logging

import pytest
from arq.constants import abort_jobs_ss, in_progress_key_prefix, job_key_prefix, retry_key_prefix
from redis.asyncio import Redis

from streamq import StreamQ
from streamq.admin.counters import KEEP_MINUTES, EndCounts
from streamq.core.clock import server_time_ms
from streamq.core.keys import Keys
from streamq.core.settings import Settings
from streamq.worker.arq_worker import running_worker
from tests.harness.counts import jobs_counted
from tests.harness.waiting import poll_until


async def no_lease_left(redis: Redis, keys: Keys) -> None:
    """Wait until no attempt holds a lease (the end's round trip follows the terminal entry)."""

    async def dropped() -> bool:
        return int(await redis.zcard(keys.running())) == 0

    await poll_until(dropped, 10, "the lease dropped")


async def test_a_job_end_drops_its_lease_keeps_its_request_and_counts(
    redis: Redis, settings: Settings, sq: StreamQ
) -> None:
    keys = Keys(settings.key_prefix)
    async with running_worker(settings):
        job = await sq.enqueue_chat("count me")
        await job.result(timeout=30)
        await no_lease_left(redis, keys)
    assert await redis.ttl(keys.request(job.id)) > settings.stream_ttl - 60
    assert await jobs_counted(redis, keys, "done") == 1


async def test_a_refused_count_still_lets_the_job_go(
    redis: Redis, settings: Settings, sq: StreamQ, caplog: pytest.LogCaptureFixture
) -> None:
    """The minute's counters refuse their HINCRBY (not a hash): the job still ends done, its
    lease is dropped, and the warning names the command that failed."""
    keys = Keys(settings.key_prefix)
    minute = await server_time_ms(redis) // 60_000
    for spoiled in range(minute, minute + 3):
        await redis.set(keys.counters(spoiled), "not a hash", ex=600)
    caplog.set_level(logging.WARNING, logger="streamq.worker")
    async with running_worker(settings):
        job = await sq.enqueue_chat("count me if you can")
        assert (await job.result(timeout=30)).finish_reason == "stop"
        await no_lease_left(redis, keys)
        await poll_until(lambda: "HINCRBY at its end failed" in caplog.text, 10, "the warning")


async def test_job_ends_are_counted_together_and_none_is_lost(
    redis: Redis, settings: Settings, sq: StreamQ
) -> None:
    """Ends within a second of the last count sent wait, in the worker, for the next job end
    or for a second to pass; the ones left when the worker stops are sent as it stops."""
    keys = Keys(settings.key_prefix)
    async with running_worker(settings):
        jobs = [await sq.enqueue_chat(f"count {i}") for i in range(6)]
        for job in jobs:
            await job.result(timeout=30)

        async def all_counted() -> bool:
            return await jobs_counted(redis, keys, "done") == len(jobs)

        await poll_until(all_counted, 30, "every job's end counted, without another end")
        more = [await sq.enqueue_chat(f"then {i}") for i in range(3)]
        for job in more:
            await job.result(timeout=30)
    # Sent by the stopping worker:
    assert await jobs_counted(redis, keys, "done") == len(jobs) + len(more)


async def test_counts_wait_in_the_process_until_sent(redis: Redis, settings: Settings) -> None:
    keys = Keys(settings.key_prefix)
    counts = EndCounts(redis, keys, every=3600)
    minute = await server_time_ms(redis) // 60_000
    assert counts.due() is False  # nothing to send
    counts.add(minute, "done", 50)
    assert counts.due()  # the first end is sent at once
    async with redis.pipeline(transaction=False) as pipe:
        counts.take_into(pipe)
        await pipe.execute()
    counts.add(minute, "done", 10)
    counts.add(minute, "error", 0, "timeout")
    assert counts.pending
    assert not counts.due()  # within the period: the next end, or the sender, takes them
    async with redis.pipeline(transaction=False) as pipe:
        counts.take_into(pipe)
        await pipe.execute()
    assert not counts.pending
    stored = await redis.hgetall(keys.counters(minute))
    assert stored == {
        b"jobs:done": b"2",
        b"jobs:error": b"1",
        b"deltas": b"60",
        b"errors:timeout": b"1",
    }
    assert 0 < await redis.ttl(keys.counters(minute)) <= KEEP_MINUTES * 60


async def test_arq_forgets_a_finished_job(redis: Redis, settings: Settings, sq: StreamQ) -> None:
    """arq's keys of a job that ended go (its envelope, in-progress mark and retry count), and
    it leaves arq's queue and abort set."""
    keys = Keys(settings.key_prefix)
    job_id = f"forget-{settings.key_prefix}"
    arq_id = keys.arq_job_id(job_id)
    await redis.zadd(abort_jobs_ss, {arq_id: 1})  # as arq's Job.abort() would: arq's own set
    try:
        async with running_worker(settings):
            job = await sq.enqueue_chat("forget me", job_id=job_id)
            await job.result(timeout=30)

            async def forgotten() -> bool:
                arq_keys = (job_key_prefix, in_progress_key_prefix, retry_key_prefix)
                left = await redis.exists(*(prefix + arq_id for prefix in arq_keys))
                queued = await redis.zscore(settings.queue_name, arq_id)
                aborted = await redis.zscore(abort_jobs_ss, arq_id)
                return left == 0 and queued is None and aborted is None

            await poll_until(forgotten, 30, "arq's keys of the job gone")
    finally:
        await redis.zrem(abort_jobs_ss, arq_id)
