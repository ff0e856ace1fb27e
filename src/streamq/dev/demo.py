"""``streamq demo``: the whole pipeline in one process, with throwaway parts where needed.

No ``OPENAI_API_KEY`` (and no ``OPENAI_BASE_URL``): the built-in simulator answers. ``REDIS_URL``
not answering: a private ``redis-server`` runs for the demo's length. Everything the demo
started is stopped before it returns.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING

from redis.asyncio import Redis

from streamq.client import StreamQ
from streamq.core.keys import Keys, fair_clock, fair_order, fair_tenants
from streamq.core.settings import Settings
from streamq.dev.local_redis import LocalRedis, redis_answers
from streamq.dev.simulator import SimulatorConfig, SimulatorThread
from streamq.terminal import print_text
from streamq.worker.arq_worker import running_worker

if TYPE_CHECKING:
    from streamq.gateway import GatewayConfig

DEMO_TOKENS_PER_SECOND = 40.0
DEMO_REPLY_TOKENS = 60
SERVE_DEMO_REPLY_TOKENS = 120  # the chat page's answers: long enough to watch them stream
DEMO_DRAIN_TIMEOUT = 5.0  # a cancelled job ends at once; a finished demo has none running


def run_demo(prompt: str, settings: Settings) -> int:
    """Run worker, producer and reader together; return the exit code."""
    with contextlib.ExitStack() as stack:
        settings = throwaway_parts(stack, settings, DEMO_REPLY_TOKENS, notice)
        return asyncio.run(_pipeline(prompt, settings))
    raise AssertionError("unreachable")


def serve_demo(
    settings: Settings,
    config: GatewayConfig,
    host: str,
    port: int,
    on_ready: Callable[[str], None] | None = None,
) -> None:
    """``streamq serve --demo``: the gateway with what it lacks, as ``streamq demo`` has: a
    throwaway ``redis-server``, the simulator, and an in-process worker."""
    from streamq.gateway.server import serve

    def say(message: str) -> None:
        print(f"streamq serve: {message}", file=sys.stderr, flush=True)

    with contextlib.ExitStack() as stack:
        settings = throwaway_parts(stack, settings, SERVE_DEMO_REPLY_TOKENS, say)
        serve(settings, config, host, port, alongside=running_worker, on_ready=on_ready)


def throwaway_parts(
    stack: contextlib.ExitStack,
    settings: Settings,
    reply_tokens: int,
    say: Callable[[str], None],
) -> Settings:
    """``settings`` completed for a demo: a private redis-server when ``REDIS_URL`` does not
    answer, the simulator when no OpenAI key or base URL is set, and a queue of its own (so
    only the demo's worker takes the demo's jobs). ``stack`` stops what was started."""
    if not redis_answers(settings.redis_url):
        server = stack.enter_context(LocalRedis())
        say(f"{settings.redis_url} is not answering: using a throwaway {server.url}")
        settings = settings.replace(redis_url=server.url)
    if settings.openai_api_key is None and settings.openai_base_url is None:
        pace = DEMO_TOKENS_PER_SECOND
        config = SimulatorConfig(tokens_per_second=pace, reply_tokens=reply_tokens, mode="demo")
        simulator = stack.enter_context(SimulatorThread(config))
        say(f"no OPENAI_API_KEY: answering with the built-in simulator at {simulator.base_url}")
        settings = settings.replace(openai_base_url=simulator.base_url)
    return settings.replace(queue_name=f"streamq:demo:{uuid.uuid4().hex[:8]}")


async def _pipeline(prompt: str, settings: Settings) -> int:
    job_id: str | None = None
    try:
        async with (
            running_worker(settings, drain_timeout=DEMO_DRAIN_TIMEOUT),
            StreamQ.from_url(settings.redis_url, settings) as sq,
        ):
            job = await sq.enqueue_chat(prompt)
            job_id = job.id
            notice(f"enqueued job {job.id}; streaming its answer:")
            printing = asyncio.create_task(print_text(job, on_restart="follow"))
            if not await _until_interrupted(printing):
                return printing.result()
            # Ctrl-C: stop the job before the worker stops
            notice("interrupted: cancelling the job and removing the demo's keys")
            await job.cancel()
            raise KeyboardInterrupt
    finally:
        # After the worker stopped: nothing of the demo's is left in Redis (its keys would
        # expire, but its queue's sorted set would not).
        await remove_demo_keys(settings, job_id)


async def _until_interrupted(task: asyncio.Task[int]) -> bool:
    """Wait for ``task``, or until Ctrl-C (then cancel it and answer True). The loop's own
    SIGINT handler, not asyncio.run's: about one in three of the cancellations that handler
    sends the main task never reached the demo (not yet explained: a lone job reader passes
    them on), and the demo printed the whole answer instead of stopping."""
    loop = asyncio.get_running_loop()
    interrupted = asyncio.Event()
    loop.add_signal_handler(signal.SIGINT, interrupted.set)
    waiting = asyncio.create_task(interrupted.wait())
    try:
        await asyncio.wait({task, waiting}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        loop.remove_signal_handler(signal.SIGINT)
        waiting.cancel()
    if task.done():
        return False
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    return True


async def remove_demo_keys(settings: Settings, job_id: str | None) -> None:
    """Delete the demo's queue (with its fair-share order and its workers' picks) and, when it
    got one, everything its job wrote."""
    keys = Keys(settings.key_prefix)
    queue = settings.queue_name
    names = [queue, fair_order(queue), fair_tenants(queue), fair_clock(queue)]
    if job_id is not None:
        names += [keys.events(job_id), keys.request(job_id), keys.state(job_id)]
        names += [keys.arq_job(job_id), keys.arq_result(job_id), keys.arq_in_progress(job_id)]
    async with Redis.from_url(settings.redis_url) as redis:
        names += [name async for name in redis.scan_iter(match=f"{queue}:fair:pick:*")]
        await redis.delete(*names)
        if job_id is not None:
            running = await redis.zrange(keys.running(), 0, -1)
            ours = [m for m in running if m.decode(errors="replace").endswith(f":{job_id}")]
            if ours:
                await redis.zrem(keys.running(), *ours)


def notice(message: str) -> None:
    """One line on stderr, apart from the answer on stdout."""
    print(f"streamq demo: {message}", file=sys.stderr, flush=True)
