"""The worker side: an arq job function that streams one completion into the job's stream.

Run it as ``streamq worker`` or ``arq streamq.worker.WorkerSettings``; either way the settings
are read from the environment when the worker starts, not when this module is imported.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import signal
import socket
import ssl
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx2
from arq.connections import ArqRedis, log_redis_info
from arq.utils import timestamp_ms
from arq.worker import Retry, Worker, func
from openai import AsyncOpenAI, DefaultAsyncHttpxClient
from redis.asyncio import Redis
from redis.commands.core import AsyncScript
from redis.exceptions import RedisError

from streamq import metrics, scripts
from streamq.admission import Admission
from streamq.clients import ClientPool
from streamq.connections import streams_from_url
from streamq.events import Error
from streamq.exceptions import ConfigError, Fenced, InvalidRequest, PublishFailed
from streamq.fleet import Fleet
from streamq.keys import Keys, arq_in_progress_key, wake_channel
from streamq.presence import WorkerPresence
from streamq.publisher import Publisher
from streamq.queue import (
    JOB_FUNCTION,
    REJECTED_FUNCTION,
    arq_redis,
    deserialize_worker_job,
    redis_settings,
    serialize_job,
)
from streamq.redis_errors import is_transient
from streamq.runner import JobRunner
from streamq.settings import Settings
from streamq.version import __version__

logger = logging.getLogger("streamq.worker")

# arq's own job timeout only backs up ours, which ends the stream with an `error` event first.
ARQ_TIMEOUT_MARGIN = 60.0
NO_KEY_NEEDED = "unused"  # OpenAI-compatible servers without auth still get a bearer header
PUBLISH_RETRY_DELAY = 2.0
SUPERVISOR_BACKOFF = 0.5
POLL_RETRY_DELAY = 0.1
MAX_POLL_RETRY_DELAY = 5.0
MAX_SUPERVISOR_BACKOFF = 30.0
# streamq counts attempts itself (STREAMQ_MAX_ATTEMPTS) so that even the last one writes a
# terminal event: past its own max_tries arq would fail the job without calling us.
ARQ_MAX_TRIES = 1_000


class StreamQWorker(Worker):
    """arq's worker, woken by a message on the queue's wake channel rather than only polling.

    An idle worker polls every ``STREAMQ_POLL_INTERVAL`` (a fallback) and otherwise starts a
    job as soon as a producer announces it, or as soon as one of its own jobs frees a slot.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.wake = asyncio.Event()
        self.ctx["wake"] = self.wake.set
        self.stopping = False
        self.on_stop = self._stop
        self._start_script: AsyncScript | None = None  # arq may connect only in main()

    def _stop(self, _signum: signal.Signals) -> None:
        # arq stops the loop by cancelling it, but redis-py can swallow a cancel that lands in
        # the middle of a command (redis-py #2028): the loop would poll on and the process hang.
        self.stopping = True
        self.wake.set()

    async def main(self) -> None:
        # arq's main() with the poll's sleep replaced by a wait that a wake-up ends early, and
        # Redis errors retried here: arq would end the loop and then wait for every running
        # job before anything could take new jobs again.
        logger.info("starting worker for functions: %s", ", ".join(self.functions))
        await log_redis_info(self.pool, logger.info)
        self.ctx["redis"] = self.pool
        if self.on_startup:
            await self.on_startup(self.ctx)
        backoff = POLL_RETRY_DELAY
        while not self.stopping:
            self.wake.clear()
            try:
                await self._poll_iteration()
                if self.burst and await self._burst_done():
                    return
            except Exception as exc:  # no job, payload or bug of ours may end the process
                if isinstance(exc, RedisError | OSError):
                    logger.warning("polling failed (%r); trying again in %.1fs", exc, backoff)
                else:
                    logger.exception("worker loop failed; going on in %.1fs", backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, MAX_POLL_RETRY_DELAY)
                continue
            backoff = POLL_RETRY_DELAY
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.wake.wait(), self.poll_delay_s)

    async def _burst_done(self) -> bool:
        if 0 <= self.max_burst_jobs <= self._jobs_started() or not await self.pool.zcard(
            self.queue_name
        ):
            await asyncio.gather(*self.tasks.values())
            return True
        return False

    async def start_jobs(self, job_ids: list[bytes]) -> None:
        # arq's start_jobs, except that a job whose start fails (Redis went away) gives its
        # slot back; arq's would keep it, and a worker would run out of slots over time.
        for job_id_b in job_ids:
            await self.sem.acquire()
            if self.job_counter >= self.max_jobs:
                self.sem.release()
                return
            self.job_counter += 1
            started = False
            try:
                started = await self._start_job(job_id_b.decode())
            finally:
                if not started:
                    self.job_counter -= 1
                    self.sem.release()

    async def _start_job(self, job_id: str) -> bool:
        running_here = self.tasks.get(job_id)
        if running_here is not None and not running_here.done():
            # Our own earlier run of it was reaped (its lease ran out while Redis was away) but is
            # still going: arq cannot track two runs of one id, and that run may well finish it.
            return False
        in_progress_ms = int(self.in_progress_timeout_s * 1000)
        keys = [arq_in_progress_key(job_id), self.queue_name]
        if self._start_script is None:
            self._start_script = self.pool.register_script(scripts.START)
        args: list[str | int] = [job_id, timestamp_ms(), in_progress_ms]
        score = await self._start_script(keys, args, client=self.pool)
        if score is None:
            return False  # started elsewhere, finished, or deferred
        task = self.loop.create_task(self.run_job(job_id, int(score)))
        task.add_done_callback(lambda _: self._release_sem_dec_counter_on_complete())
        self.tasks[job_id] = task
        return True

    def _release_sem_dec_counter_on_complete(self) -> None:
        super()._release_sem_dec_counter_on_complete()
        self.wake.set()  # a slot is free: jobs may be waiting in the queue


class WorkerRuntime:
    """Per-process state shared by all jobs: one OpenAI client, publisher, fleet and runner."""

    def __init__(
        self,
        settings: Settings,
        redis: ArqRedis,
        clients: ClientPool,
        on_wake: Callable[[], None] | None = None,
    ) -> None:
        self.settings = settings
        self.clients = clients
        self.keys = Keys(settings.key_prefix)
        self.name = f"{socket.gethostname()}:{os.getpid()}"
        url = settings.streams_url
        self.streams: Redis = redis if url is None else streams_from_url(url)
        self.publisher = Publisher(self.streams, ttl=settings.stream_ttl)
        self.fleet = Fleet(
            redis,
            self.keys,
            lease=settings.lease,
            arq_id=self.keys.arq_job_id,
            queue_name=settings.queue_name,
            wake_channel=wake_channel(settings.queue_name),
            on_wake=on_wake,
            presence=WorkerPresence(
                id=self.name,
                host=socket.gethostname(),
                pid=os.getpid(),
                version=__version__,
                queue=settings.queue_name,
                concurrency=settings.concurrency,
                in_flight=0,
                started_at=time.time(),
            ),
            streams=self.streams,
        )
        self.admission = Admission(
            redis,
            self.keys,
            settings.model_limits,
            lease=settings.lease,
            api_key=settings.openai_api_key,
        )
        self.runner = JobRunner(
            settings,
            redis,
            clients,
            self.admission,
            self.publisher,
            self.fleet,
            self.name,
            streams=self.streams,
        )

    def start(self) -> None:
        """Start the background tasks."""
        self.publisher.start()
        self.fleet.start()
        self.admission.start()

    async def aclose(self) -> None:
        """Stop the background tasks (writing what is pending) and close the OpenAI clients."""
        await self.fleet.aclose()
        await self.admission.aclose()
        await self.publisher.aclose()
        await self.clients.aclose()
        if self.streams is not self.runner.redis:
            await self.streams.aclose()

    async def run_job(self, arq_job_id: str, rejection: Error | None = None) -> dict[str, Any]:
        """Run the job arq handed us, unless its id is not one of ours; with ``rejection``
        (its envelope was unreadable) end it with that error instead."""
        try:
            job_id = self.keys.job_id_from_arq(arq_job_id)
        except InvalidRequest as exc:
            logger.error("rejected arq job: %s", exc)
            return {"outcome": "rejected"}
        try:
            outcome = await self.runner.run(job_id, rejection)
        except Fenced as exc:
            logger.warning("job %s: %s", job_id, exc)
            return {"outcome": "fenced"}
        except PublishFailed as exc:
            logger.error("job %s could not publish: %s", job_id, exc)
            raise Retry(defer=PUBLISH_RETRY_DELAY) from exc
        except (RedisError, OSError) as exc:
            # Any other exception counts as the job's failure to arq, which then deletes the
            # job: a Redis blip (or failover) during the claim would strand it, queued forever.
            if not is_transient(exc):  # its own keys are unusable (WRONGTYPE...): no retry helps
                logger.error("job %s: Redis refused its keys (%r); dropped", job_id, exc)
                return {"outcome": "redis_refused"}
            logger.warning("job %s: Redis failed (%r); queued again", job_id, exc)
            raise Retry(defer=PUBLISH_RETRY_DELAY) from exc
        return {"outcome": outcome}


async def streamq_chat(ctx: dict[str, Any]) -> dict[str, Any]:
    """The arq job function: the job's request lives in Redis under its id, not in arq's args."""
    runtime: WorkerRuntime = ctx["streamq"]
    metrics.job_dequeued(ctx.get("enqueue_time"), ctx.get("job_try", 1))
    return await runtime.run_job(str(ctx["job_id"]))


async def streamq_rejected(ctx: dict[str, Any], problem: str) -> dict[str, Any]:
    """What arq runs for a queued envelope that is not a producer's: end its job with why."""
    runtime: WorkerRuntime = ctx["streamq"]
    job_id = str(ctx["job_id"])
    logger.error("job %s: malformed arq envelope: %s", job_id, problem)
    message = f"the job's queue entry is malformed: {problem}"
    return await runtime.run_job(job_id, Error(code="invalid_job", message=message))


def openai_client(settings: Settings, *, ssl_context: ssl.SSLContext | None = None) -> AsyncOpenAI:
    """The worker's OpenAI client; a missing key is an error unless a base URL is set.

    Clients given one ``ssl_context`` share it (each would otherwise load the CA bundle:
    ~0.8 MB apiece).
    """
    if settings.openai_api_key is None and settings.openai_base_url is None:
        raise ConfigError(
            "OPENAI_API_KEY is not set: set it, or set OPENAI_BASE_URL to a server that needs none"
        )
    # No SDK retries: streamq's own policy retries, as new attempts readers can follow.
    return AsyncOpenAI(
        api_key=settings.openai_api_key or NO_KEY_NEEDED,
        base_url=settings.openai_base_url,
        max_retries=0,
        http_client=None if ssl_context is None else DefaultAsyncHttpxClient(verify=ssl_context),
    )


def worker_settings(settings: Settings) -> type:
    """An arq ``WorkerSettings`` class for ``settings``."""

    async def on_startup(ctx: dict[str, Any]) -> None:
        shared = httpx2.create_ssl_context()
        clients = ClientPool(functools.partial(openai_client, settings, ssl_context=shared))
        clients.warm()  # a missing key fails here, not at the first job
        runtime = WorkerRuntime(settings, ctx["redis"], clients, ctx.get("wake"))
        runtime.start()
        ctx["streamq"] = runtime
        logger.info("streamq worker %s serving queue %r", runtime.name, settings.queue_name)

    async def on_shutdown(ctx: dict[str, Any]) -> None:
        runtime: WorkerRuntime | None = ctx.get("streamq")
        if runtime is not None:
            await runtime.aclose()

    attributes = {
        "functions": [
            func(streamq_chat, name=JOB_FUNCTION, max_tries=ARQ_MAX_TRIES),
            func(streamq_rejected, name=REJECTED_FUNCTION, max_tries=ARQ_MAX_TRIES),
        ],
        "on_startup": on_startup,
        "on_shutdown": on_shutdown,
        "redis_settings": redis_settings(settings.redis_url),
        "redis_pool": arq_redis(settings.redis_url, settings.queue_name),
        "queue_name": settings.queue_name,
        "max_jobs": settings.concurrency,
        "job_timeout": settings.job_timeout + ARQ_TIMEOUT_MARGIN,
        "poll_delay": settings.poll_interval,
        "job_completion_wait": settings.drain_timeout,
        "keep_result": 0,
        "log_results": False,
        "job_serializer": serialize_job,
        "job_deserializer": deserialize_worker_job,
    }
    return type("WorkerSettings", (), attributes)


def create_worker(settings: Settings, **overrides: Any) -> StreamQWorker:
    """An arq :class:`Worker` for ``settings`` (``burst=True``, ``handle_signals=False``, ...)."""
    attributes = {
        k: v for k, v in vars(worker_settings(settings)).items() if not k.startswith("__")
    }
    return StreamQWorker(**{**attributes, **overrides})


def run_supervised(settings: Settings, *, burst: bool = False) -> None:
    """Run a worker until a signal stops it, starting it again whenever it loses Redis.

    arq's worker exits when Redis goes away; this waits (with backoff) and starts a fresh one,
    so a Redis restart or a network cut costs a pause, not the process.
    """
    backoff = SUPERVISOR_BACKOFF
    while True:
        started = time.monotonic()
        worker = create_worker(settings, burst=burst)
        try:
            worker.run()
            return
        except (RedisError, OSError) as exc:
            if worker.stopping:  # a signal asked it to stop: Redis being away changes nothing
                logger.warning("worker stopped; Redis was unavailable at the end (%r)", exc)
                return
            # arq's loop signal handlers are gone with its loop: let signals act at once.
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            signal.signal(signal.SIGINT, signal.default_int_handler)
            if time.monotonic() - started > MAX_SUPERVISOR_BACKOFF:
                backoff = SUPERVISOR_BACKOFF
            logger.error("worker lost Redis (%r); starting again in %.1fs", exc, backoff)
            time.sleep(backoff)
            backoff = min(backoff * 2, MAX_SUPERVISOR_BACKOFF)


@contextlib.asynccontextmanager
async def running_worker(
    settings: Settings, *, drain_timeout: float = 10.0, **overrides: Any
) -> AsyncIterator[Worker]:
    """Run a worker on the current event loop for the block's length (demo, tests, embedding).

    On exit it stops taking jobs and lets running ones finish for up to ``drain_timeout``.
    """
    worker = create_worker(settings, handle_signals=False, **overrides)
    main = asyncio.create_task(worker.async_run())
    try:
        yield worker
    finally:
        # arq has no stop() of its own: burst mode with a spent job budget ends its loop cleanly,
        # where cancelling it mid-poll would leave a WATCHed connection behind.
        worker.allow_pick_jobs = False
        worker.burst = True
        worker.max_burst_jobs = 0
        await asyncio.wait({main}, timeout=drain_timeout)
        if not main.done():
            jobs = [main, *worker.tasks.values()]
            for task in jobs:
                task.cancel()
            await asyncio.gather(*jobs, return_exceptions=True)
            worker.tasks.clear()  # arq's close() would re-raise the cancellations
        await asyncio.gather(main, return_exceptions=True)
        await worker.close()


def __getattr__(name: str) -> Any:
    # `arq streamq.worker.WorkerSettings` looks this up when the worker starts.
    if name == "WorkerSettings":
        return worker_settings(Settings.from_env())
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
