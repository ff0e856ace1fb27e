"""The naive worker: the seed's loop plus one ``XADD`` per delta.

Run as ``python -m benchmarks.naive_worker ENDPOINTS_JSON``.

Jobs arrive on a Redis list (``BLPOP``, so an idle worker sends no commands and starts a job as
soon as it is pushed; the seed's arq would poll every 0.5 s). Each job runs as its own task:
every content delta is awaited into the job's stream as ``{"text": delta}``, then ``{"end": 1}``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import sys
from typing import Any

from openai import AsyncOpenAI
from redis.asyncio import Redis

from benchmarks.common import MODEL, NAIVE_WORKER_NAME, Endpoints
from streamq.core._tasks import cancel_and_wait


async def run_job(clients: dict[str, AsyncOpenAI], redis: Redis, job: dict[str, Any]) -> None:
    key = job["stream"]
    client = clients[job["base_url"]]
    try:
        stream = await client.chat.completions.create(
            model=MODEL, messages=job["messages"], stream=True, extra_body=job["extra_body"]
        )
        async for chunk in stream:
            if chunk.choices and chunk.choices[0].delta.content:
                await redis.xadd(key, {"text": chunk.choices[0].delta.content})
    except Exception as exc:
        await redis.xadd(key, {"end": "1", "error": repr(exc)})
        return
    await redis.xadd(key, {"end": "1"})


async def serve(endpoints: Endpoints) -> None:
    main = asyncio.current_task()
    assert main is not None
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, main.cancel)
    clients = {
        url: AsyncOpenAI(api_key="unused", base_url=url, max_retries=0)
        for url in {endpoints.base_url, endpoints.aimock_url} - {""}
    }
    redis = Redis.from_url(endpoints.redis_url, client_name=NAIVE_WORKER_NAME)
    tasks: set[asyncio.Task[None]] = set()
    try:
        while True:
            popped = await redis.blpop([endpoints.naive_queue], timeout=0)
            if popped is None:
                continue
            task = asyncio.create_task(run_job(clients, redis, json.loads(popped[1])))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
    finally:
        await cancel_and_wait(list(tasks))
        await redis.aclose()
        for client in clients.values():
            await client.close()


def main() -> None:
    with contextlib.suppress(KeyboardInterrupt, asyncio.CancelledError):
        asyncio.run(serve(Endpoints.from_json(sys.argv[1])))


if __name__ == "__main__":
    main()
