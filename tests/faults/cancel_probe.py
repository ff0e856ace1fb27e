"""Run in a subprocess: start and stop a worker's runtime many times, report stops that hang.

A worker stops its background loops (heartbeat, reaper, pub/sub listener, publisher) when arq
shuts it down. Each stop lands at a random moment, often in the middle of a Redis command; a
loop that outlives its stop keeps the worker process alive for good. The probe runs in its own
process because a hung loop cannot be cleaned up: it exits with ``os._exit`` and prints
``RESULT <trials> <hung>``.

    python -m tests.faults.cancel_probe REDIS_URL KEY_PREFIX TRIALS
"""

from __future__ import annotations

import asyncio
import functools
import os
import random
import sys

from streamq.core.keys import Keys
from streamq.core.queue import arq_redis
from streamq.core.settings import Settings
from streamq.worker.openai_pool import ClientPool
from streamq.worker.runtime import WorkerRuntime, openai_client

STOP_TIMEOUT = 3.0
BUSY_MEMBERS = 100_000  # expired leases of nobody: the reaper always has work to do


async def probe(url: str, prefix: str, trials: int) -> tuple[int, int]:
    """Start and stop a runtime ``trials`` times; returns (trials run, stops that hung)."""
    settings = Settings(
        redis_url=url,
        key_prefix=prefix,
        queue_name=f"{prefix}:queue",
        openai_base_url="http://127.0.0.1:9/v1",  # never called
        lease=0.006,  # heartbeat and reaper every 2 ms: always busy with Redis
    )
    redis = arq_redis(url, settings.queue_name)
    running = Keys(prefix).running()
    for start in range(0, BUSY_MEMBERS, 10_000):
        members = {f"1:nobody-{i}": 0 for i in range(start, start + 10_000)}
        await redis.zadd(running, members)
    ran = hung = 0
    while ran < trials and not hung:
        ran += 1
        clients = ClientPool(functools.partial(openai_client, settings))
        runtime = WorkerRuntime(settings, redis, clients)
        runtime.start()
        await asyncio.sleep(random.uniform(0.002, 0.02))
        stopping = asyncio.ensure_future(runtime.aclose())
        done, _ = await asyncio.wait({stopping}, timeout=STOP_TIMEOUT)
        hung = 0 if done else 1
    await redis.delete(running)  # with a loop still running, if one hung
    return ran, hung


async def report(url: str, prefix: str, trials: int) -> None:
    """Probe, print ``RESULT <trials> <hung>``, and leave before asyncio's own cleanup (which
    would wait for a hung loop forever)."""
    ran, hung = await probe(url, prefix, trials)
    print(f"RESULT {ran} {hung}", flush=True)
    os._exit(0)


def main() -> None:
    """Entry point."""
    asyncio.run(report(sys.argv[1], sys.argv[2], int(sys.argv[3])))


if __name__ == "__main__":
    main()
