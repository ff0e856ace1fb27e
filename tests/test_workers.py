"""Real worker processes: many jobs spread over several workers, and arq's own CLI."""

from __future__ import annotations

import asyncio
import functools
import shutil
import signal
import sys

from redis.asyncio import Redis

from streamq import Settings, Start, StreamQ
from streamq.core.request import chat_messages
from streamq.dev.local_redis import LocalRedis
from streamq.dev.simulator import simulated_text
from streamq.worker.arq_worker import create_worker
from tests.harness.processes import STOP_TIMEOUT, exited, worker_processes
from tests.harness.waiting import STARTUP, poll_until

JOBS = 200


async def test_jobs_spread_over_two_worker_processes(sq: StreamQ, settings: Settings) -> None:
    """200 jobs through 2 worker subprocesses all end `done` with the exact text."""
    # Ten jobs at a time per worker, each ~0.1 s: both workers get a share even if one starts late.
    paced = {"simulator": {"tokens_per_second": 200}}
    with worker_processes(settings, 2, env={"STREAMQ_CONCURRENCY": "10"}):
        jobs = [await sq.enqueue_chat(f"question {i}", extra_body=paced) for i in range(JOBS)]
        results = await asyncio.gather(*(job.result(timeout=120) for job in jobs))
    for i, result in enumerate(results):
        assert result.text == simulated_text(chat_messages(f"question {i}"))
        assert result.finish_reason == "stop"
    workers = set()
    for job in jobs:
        async for event in job.events():
            if isinstance(event, Start):
                workers.add(event.worker)
    assert len(workers) == 2


async def test_arq_cli_runs_the_worker_settings(sq: StreamQ, settings: Settings) -> None:
    """`arq streamq.worker.WorkerSettings` serves jobs like `streamq worker` does."""
    arq = shutil.which("arq", path=sys.prefix + "/bin")
    assert arq is not None
    with worker_processes(settings, 1, command=(arq, "streamq.worker.WorkerSettings")):
        job = await sq.enqueue_chat("via arq")
        result = await job.result(timeout=30)
    assert result.text == simulated_text(chat_messages("via arq"))


async def test_a_stop_ends_the_poll_loop_even_if_its_cancel_is_lost(
    settings: Settings, redis: Redis
) -> None:
    """A signal stops the worker even when redis-py swallows arq's cancel of the poll loop."""
    worker = create_worker(settings, handle_signals=False)
    main = asyncio.create_task(worker.main())  # no main_task: arq's cancel goes nowhere
    # arq writes its health-check key at the end of its first poll: the loop is running.
    await poll_until(
        lambda: redis.exists(worker.health_check_key), STARTUP, "the worker's first poll",
        give_up=lambda: "the worker's loop ended" if main.done() else None,
    )  # fmt: skip
    worker.handle_sig(signal.SIGTERM)
    await asyncio.wait_for(main, timeout=STOP_TIMEOUT)
    await worker.close()


async def test_sigterm_while_redis_is_down_stops_the_worker(settings: Settings) -> None:
    """A worker told to stop while Redis is away exits, rather than start over to wait."""
    with LocalRedis() as server:
        down = settings.replace(redis_url=server.url)
        with worker_processes(down, 1, env={"STREAMQ_DRAIN_TIMEOUT": "1"}) as workers:
            [worker] = workers.processes
            await workers.wait_serving()  # connected, its signal handlers installed
            server.kill()
            await poll_until(
                lambda: "polling failed" in workers.log(worker), STARTUP,
                "the worker to find Redis gone", give_up=functools.partial(exited, worker),
            )  # fmt: skip
            worker.send_signal(signal.SIGTERM)
            assert await asyncio.to_thread(worker.wait, STOP_TIMEOUT) == 0
