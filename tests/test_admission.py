"""Fleet-wide admission: a per-model limit across worker processes, and a shared 429 pause."""

from __future__ import annotations

import asyncio

from redis.asyncio import Redis

from streamq import Delta, Settings, Start, StreamQ
from streamq.core.request import chat_messages
from streamq.dev.simulator import SimulatorThread, simulated_text
from streamq.worker.arq_worker import running_worker
from tests.harness.processes import worker_processes
from tests.harness.waiting import STARTUP, poll_until

PACED = {"simulator": {"tokens_per_second": 200, "reply_tokens": 20}}


async def test_four_workers_never_exceed_the_model_limit_and_every_job_finishes(
    sq: StreamQ, settings: Settings, simulator: SimulatorThread
) -> None:
    """Limit 5 for the model, 4 workers x 50 slots: the upstream sees at most 5 at once."""
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


async def wait_for_key(redis: Redis, pattern: str) -> None:
    async def found() -> bool:
        return bool([key async for key in redis.scan_iter(match=pattern)])

    await poll_until(found, STARTUP, f"a key matching {pattern}", interval=0.01)


def sq_key(sq: StreamQ) -> str:
    return f"429-{sq.settings.key_prefix}"


def entry_ms(cursor: str) -> int:
    return int(cursor.split("-")[0])
