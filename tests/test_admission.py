"""Fleet-wide admission: a per-model limit across worker processes, and a shared 429 pause."""

from __future__ import annotations

import asyncio

from redis.asyncio import Redis

from streamq import Delta, Settings, Start, StreamQ
from streamq.core.events import Event, Queued, decode_entry
from streamq.core.keys import Keys
from streamq.core.request import chat_messages
from streamq.dev.simulator import SimulatorThread, simulated_text
from streamq.worker.arq_worker import running_worker
from tests.harness.processes import worker_processes
from tests.harness.waiting import STARTUP, poll_until

PACED = {"simulator": {"tokens_per_second": 200, "reply_tokens": 20}}


async def test_four_workers_never_exceed_the_model_limit_and_every_job_finishes(
    sq: StreamQ, redis: Redis, settings: Settings, simulator: SimulatorThread
) -> None:
    """Limit 5 for the model, 4 workers x 50 slots: the upstream sees at most 5 at once.
    Jobs that waited for a slot said so, once, in a `queued` entry after their start."""
    env = {"STREAMQ_MODEL_LIMITS": f"{settings.openai_model}=5", "STREAMQ_CONCURRENCY": "50"}
    with worker_processes(settings, 4, env=env):
        simulator.stats.reset()
        jobs = [await sq.enqueue_chat(f"limited {i}", extra_body=PACED) for i in range(60)]
        results = await asyncio.gather(*(job.result(timeout=120) for job in jobs))
    peak = simulator.stats.max_in_flight_by_model[settings.openai_model]
    print(f"peak concurrent upstream requests: {peak}")
    assert peak <= 5
    assert peak >= 2  # the limit throttles; it does not serialize
    for i, result in enumerate(results):
        assert result.text == simulated_text(chat_messages(f"limited {i}"), length=20)
    streams = [await entries(redis, settings, job.id) for job in jobs]
    waits = [[e for e in events if isinstance(e, Queued)] for events in streams]
    assert any(waits)
    for queued in waits:
        assert [e.reason for e in queued] in ([], ["concurrency"])
        assert all(e.model == settings.openai_model for e in queued)


async def test_a_429_pauses_the_model_for_the_whole_fleet(
    sq: StreamQ, redis: Redis, settings: Settings
) -> None:
    """After one job's 429 with retry-after 1 s, a new job waits out the pause before its
    request, although a slot is free."""
    limited = settings.replace(model_limits={"*": 10})
    fault = {"fault": "http_429", "retry_after": 1.0, "fault_times": 1, "fault_key": sq_key(sq)}
    async with running_worker(limited):
        first = await sq.enqueue_chat("rate limited", extra_body={"simulator": fault})
        pause = f"{settings.key_prefix}:admission:*:{settings.openai_model}:paused"
        await wait_for_key(redis, pause)
        second = await sq.enqueue_chat("waits for the pause")
        await second.result(timeout=30)
        await first.result(timeout=30)
    events = [event async for event in second.events()]
    start = next(e for e in events if isinstance(e, Start))
    first_delta = next(e for e in events if isinstance(e, Delta))
    waited = (entry_ms(first_delta.cursor) - entry_ms(start.cursor)) / 1000
    assert waited >= 0.5, f"the second job's request went out {waited:.2f}s after its start"
    told = [e for e in events if isinstance(e, Queued)]
    assert [e.reason for e in told] == ["rate_limited"]
    assert told[0].eta is not None
    assert 0 < told[0].eta <= 1.0


async def entries(redis: Redis, settings: Settings, job_id: str) -> list[Event]:
    """The job's stream as written (no queue places looked up)."""
    raw = await redis.xrange(Keys(settings.key_prefix).events(job_id))
    return [decode_entry(cursor.decode(), fields) for cursor, fields in raw]


async def wait_for_key(redis: Redis, pattern: str) -> None:
    async def found() -> bool:
        return bool([key async for key in redis.scan_iter(match=pattern)])

    await poll_until(found, STARTUP, f"a key matching {pattern}", interval=0.01)


def sq_key(sq: StreamQ) -> str:
    return f"429-{sq.settings.key_prefix}"


def entry_ms(cursor: str) -> int:
    return int(cursor.split("-")[0])
