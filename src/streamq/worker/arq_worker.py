"""arq's side of a worker: its ``Worker`` woken over pub/sub, ``WorkerSettings``, and running it
in the current loop (:func:`running_worker`) or supervised in a process (:func:`run_supervised`).

Run it as ``streamq worker`` or ``arq streamq.worker.WorkerSettings``; either way the settings
are read from the environment when the worker starts, not when this module is imported.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import logging
import signal
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx2
from arq.connections import log_redis_info
from arq.constants import (
    abort_jobs_ss,
    in_progress_key_prefix,
    job_key_prefix,
    retry_key_prefix,
)
from arq.utils import timestamp_ms
from arq.worker import Worker, func
from redis.commands.core import AsyncScript
from redis.exceptions import NoScriptError, RedisError

from streamq.core import scripts
from streamq.core.garbage_collection import pace_for_service
from streamq.core.keys import arq_in_progress_key, fair_clock, fair_order, fair_pick
from streamq.core.protocol import fair_requeue_call
from streamq.core.queue import (
    JOB_FUNCTION,
    REJECTED_FUNCTION,
    arq_redis,
    deserialize_worker_job,
    redis_settings,
    serialize_job,
)
from streamq.core.settings import Settings
from streamq.worker.openai_pool import ClientPool
from streamq.worker.runtime import (
    WorkerRuntime,
    openai_client,
    streamq_chat,
    streamq_rejected,
)
from streamq.worker.start_gate import StartGate

logger = logging.getLogger("streamq.worker")

# arq's own job timeout only backs up ours, which ends the stream with an `error` event first.
ARQ_TIMEOUT_MARGIN = 60.0
SUPERVISOR_BACKOFF = 0.5
POLL_RETRY_DELAY = 0.1
MAX_POLL_RETRY_DELAY = 5.0
MAX_SUPERVISOR_BACKOFF = 30.0
# Fair order entries PICK looks at per poll: deferred or running ones at its front are skipped.
FAIR_SCAN = 1_000
# streamq counts attempts itself (STREAMQ_MAX_ATTEMPTS) so that even the last one writes a
# terminal event: past its own max_tries arq would fail the job without calling us.
ARQ_MAX_TRIES = 1_000


class StreamQWorker(Worker):
    """arq's worker, woken by a message on the queue's wake channel rather than only polling.

    An idle worker polls every ``STREAMQ_POLL_INTERVAL`` (a fallback) and otherwise starts a
    job as soon as a producer announces it, or as soon as one of its own jobs frees a slot.
    Free slots go to the jobs with the lowest virtual start tags (fair sharing between tenants,
    :data:`~streamq.core.scripts.PICK`), then to arq's queue head.
    """

    def __init__(
        self,
        *args: Any,
        fair_ttl: int = 86_400,
        start_concurrency: int = Settings.start_concurrency,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.fair_ttl = fair_ttl
        self._pick_script: AsyncScript | None = None
        self._requeue_script: AsyncScript | None = None
        self.wake = asyncio.Event()
        self.ctx["wake"] = self.wake.set
        self.stopping = False
        self.on_stop = self._stop
        self._start_script: AsyncScript | None = None  # arq may connect only in main()
        self.start_gate = StartGate(start_concurrency)
        # The token of PICK and START calls (see scripts.PICK): a resent call is known by it.
        # It changes only once a call carrying it was answered, so the call after one whose
        # reply never came (Redis away longer than redis-py retries) takes over what that
        # one started, rather than leave it started and run by nobody.
        self._uid = uuid.uuid4().hex
        self._calls = itertools.count(1)
        self._token = f"{self._uid}:0"

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

    async def _poll_iteration(self) -> None:
        # arq's, with its queue read replaced by PICK: the fair order first (started in the same
        # call), then arq's head.
        count = self.queue_read_limit
        if self.burst and self.max_burst_jobs >= 0:
            burst_jobs_remaining = self.max_burst_jobs - self._jobs_started()
            if burst_jobs_remaining < 1:
                return
            count = min(burst_jobs_remaining, count)
        if self.allow_pick_jobs and self.job_counter < self.max_jobs:
            free = min(self.max_jobs - self.job_counter, count)
            started, head = await self._pick(free, count)
            await self._run_started(started)
            if head:
                await self.start_jobs(head)
        if self.allow_abort_jobs:
            await self._cancel_aborted_jobs()
        for job_id, task in list(self.tasks.items()):
            if task.done():
                del self.tasks[job_id]
                task.result()  # arq's way of letting errors in run_job surface
        await self.heart_beat()

    def _answered(self) -> None:
        """A call carrying the current token was answered: the next call gets a new one."""
        self._token = f"{self._uid}:{next(self._calls)}"

    async def _pick(self, free: int, count: int) -> tuple[list[tuple[str, int]], list[bytes]]:
        """Up to ``free`` due jobs of the fair order, started for this worker as arq starts one
        (its in-progress key), with their scores; when they are fewer, arq's queue head
        (``count`` of it), not started."""
        if self._pick_script is None:
            self._pick_script = self.pool.register_script(scripts.PICK)
        queue = self.queue_name
        keys = [fair_order(queue), fair_clock(queue), queue, fair_pick(queue, self._uid)]
        args: list[str | int] = [free, timestamp_ms(), in_progress_key_prefix, self.fair_ttl]
        args += [FAIR_SCAN, self._queue_read_offset, count]
        args += [int(self.in_progress_timeout_s * 1000), self._token]
        flat, head = await self._pick_script(keys, args, client=self.pool)
        self._answered()
        started = [(flat[i].decode(), int(float(flat[i + 1]))) for i in range(0, len(flat), 2)]
        return started, head

    async def _run_started(self, started: list[tuple[str, int]]) -> None:
        """Run each job PICK started here, in a slot of its own: a start of its own per job,
        after the pick, cost each job's first delta a round trip."""
        for job_id, score in started:
            # Another worker may run it meanwhile. And PICK starts no more than the slots free
            # when it was sent, and only this loop takes slots; should one be gone anyway, the
            # job goes back.
            if self._running_here(job_id) or self.job_counter >= self.max_jobs or self.sem.locked():
                await self._give_back(job_id)
                continue
            await self.sem.acquire()  # free (not locked): returns at once
            self.job_counter += 1
            self._launch(job_id, score)

    def _running_here(self, job_id: str) -> bool:
        """Whether an earlier run of ``job_id`` is still going in this worker: it was reaped
        (its lease ran out while Redis was away), but arq cannot track two runs of one id, and
        this one may finish it."""
        running = self.tasks.get(job_id)
        return running is not None and not running.done()

    def _launch(self, job_id: str, score: int) -> None:
        """Run ``job_id``, started for this worker, in the slot taken for it."""
        task = self.loop.create_task(self.run_job(job_id, score))
        task.add_done_callback(lambda _: self._release_sem_dec_counter_on_complete())
        self.tasks[job_id] = task

    async def _give_back(self, job_id: str) -> None:
        """Undo PICK's start of ``job_id``: no longer in progress, and back at the front of
        the fair order (failing that, arq's queue head still holds it)."""
        try:
            await self.pool.delete(arq_in_progress_key(job_id))
            await self._requeue_fair(job_id)
        except (RedisError, OSError) as exc:  # the reaper frees it after a lease
            logger.warning("job %s picked here could not be given back (%r)", job_id, exc)

    async def _requeue_fair(self, job_id: str) -> None:
        """Put ``job_id``, queued in arq's queue again, back at the fair order's front."""
        if self._requeue_script is None:
            self._requeue_script = self.pool.register_script(scripts.FAIR_REQUEUE)
        keys, argv = fair_requeue_call(self.queue_name, self.fair_ttl, job_id)
        await self._requeue_script(keys, argv, client=self.pool)

    async def finish_job(
        self,
        job_id: str,
        finish: bool,
        result_data: bytes | None,
        result_timeout_s: float | None,
        keep_result_forever: bool,
        incr_score: int | None,
        keep_in_progress: float | None,
    ) -> None:
        if finish and result_data is None and keep_in_progress is None:
            # A job that ended, with no result to keep (streamq's jobs: the stream is the
            # result): arq's commands without its MULTI/EXEC, two of the ~60 a job costs
            # beside its entries. The queue entry goes first, so that no worker takes the job
            # again while its keys go; should the rest fail, they expire.
            async with self.pool.pipeline(transaction=False) as pipe:
                pipe.zrem(self.queue_name, job_id)
                pipe.zrem(abort_jobs_ss, job_id)
                pipe.delete(
                    in_progress_key_prefix + job_id,
                    retry_key_prefix + job_id,
                    job_key_prefix + job_id,
                )
                await pipe.execute()
            return
        await super().finish_job(
            job_id,
            finish,
            result_data,
            result_timeout_s,
            keep_result_forever,
            incr_score,
            keep_in_progress,
        )
        if finish:
            return
        # arq queued it again (a Retry, or a run cut short): back to the fair order's front.
        try:
            await self._requeue_fair(job_id)
        except (RedisError, OSError) as exc:  # arq's queue head still finds it
            logger.warning("job %s stays out of the fair order (%r)", job_id, exc)

    async def _burst_done(self) -> bool:
        if 0 <= self.max_burst_jobs <= self._jobs_started() or not await self.pool.zcard(
            self.queue_name
        ):
            await asyncio.gather(*self.tasks.values())
            return True
        return False

    async def start_jobs(self, job_ids: list[bytes]) -> None:
        # arq's start_jobs claims one job per round trip (four, before START): under load each
        # waits its turn on the busy loop, and a worker started ~30 jobs/s. Here the jobs a poll
        # found claim in pipelined round trips, as many at a time as there are free slots; the
        # slots of jobs another worker took first go to the next ones found (so two workers
        # polling the same queue do not both give up on its head). A job whose start fails
        # (Redis went away) gives its slot back, where arq's would keep it.
        pending = [job_id.decode() for job_id in job_ids]
        while pending:
            candidates, pending = await self._take_slots(pending)
            if not candidates:
                return
            await self._start_candidates(candidates)

    async def _take_slots(self, job_ids: list[str]) -> tuple[list[str], list[str]]:
        """A free slot for each of the first ``job_ids`` there is room for; and the rest."""
        candidates: list[str] = []
        for taken, job_id in enumerate(job_ids):
            if self.job_counter >= self.max_jobs or self.sem.locked():
                return candidates, job_ids[taken:]
            if self._running_here(job_id):
                continue
            await self.sem.acquire()  # free (not locked): returns at once
            self.job_counter += 1
            candidates.append(job_id)
        return candidates, []

    async def _start_candidates(self, candidates: list[str]) -> None:
        """Start each of ``candidates`` (their slots taken) that START lets this worker run."""
        scores: list[Any] = [None] * len(candidates)
        try:
            scores = await self._start_many(candidates)
        finally:
            for job_id, score in zip(candidates, scores, strict=True):
                if isinstance(score, bytes | int | float | str) and not isinstance(score, bool):
                    self._launch(job_id, int(float(score)))
                else:  # started elsewhere, finished, deferred, or the start failed
                    self.job_counter -= 1
                    self.sem.release()

    async def _start_many(self, job_ids: list[str]) -> list[Any]:
        """START's answer for each job: its score when this worker may start it, else None."""
        if self._start_script is None:
            self._start_script = self.pool.register_script(scripts.START)
        script = self._start_script
        in_progress_ms = str(int(self.in_progress_timeout_s * 1000))
        now, token = str(timestamp_ms()), self._token
        if len(job_ids) == 1:  # the common, idle case: no pipeline to build
            keys = [arq_in_progress_key(job_ids[0]), self.queue_name]
            args = [job_ids[0], now, in_progress_ms, token]
            answer = await script(keys, args, client=self.pool)
            self._answered()
            return [answer]
        for _ in range(2):  # once more after loading the script into a new or restarted Redis
            async with self.pool.pipeline(transaction=False) as pipe:
                for job_id in job_ids:
                    keys = [arq_in_progress_key(job_id), self.queue_name]
                    pipe.evalsha(script.sha, 2, *keys, job_id, now, in_progress_ms, token)
                results: list[Any] = await pipe.execute(raise_on_error=False)
            if not any(isinstance(r, NoScriptError) for r in results):
                break
            await self.pool.script_load(scripts.START)
        self._answered()
        return [None if isinstance(r, BaseException) else r for r in results]

    async def run_job(self, job_id: str, score: int) -> None:
        # Through the start gate: a poll that took many jobs starts a few at a time.
        async with self.start_gate.start():
            await super().run_job(job_id, score)

    def _release_sem_dec_counter_on_complete(self) -> None:
        super()._release_sem_dec_counter_on_complete()
        self.wake.set()  # a slot is free: jobs may be waiting in the queue


def quiet_dropped_connections(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
    """The worker loop's exception handler: asyncio's report of a future whose error nobody
    read is one warning line when the error is a dropped connection (a Redis restart leaves
    such futures in transports redis-py has let go of), and asyncio's own report otherwise."""
    error = context.get("exception")
    if context.get("message") == "Future exception was never retrieved" and isinstance(
        error, ConnectionError
    ):
        logger.warning("a dropped connection's error was never read: %r", error)
        return
    loop.default_exception_handler(context)


def worker_settings(settings: Settings) -> type:
    """An arq ``WorkerSettings`` class for ``settings``."""

    async def on_startup(ctx: dict[str, Any]) -> None:
        asyncio.get_running_loop().set_exception_handler(quiet_dropped_connections)
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
    ours = {"fair_ttl": settings.stream_ttl, "start_concurrency": settings.start_concurrency}
    return StreamQWorker(**{**ours, **attributes, **overrides})


def run_supervised(settings: Settings, *, burst: bool = False) -> None:
    """Run a worker until a signal stops it, starting it again whenever it loses Redis.

    arq's worker exits when Redis goes away; this waits (with backoff) and starts a fresh one,
    so a Redis restart or a network cut costs a pause, not the process. The loop is asyncio's
    own: on uvloop, a write to a Redis connection that broke raises RuntimeError, which
    redis-py does not take for a connection error (a Redis restart failed jobs).
    """
    pace_for_service()
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
) -> AsyncIterator[StreamQWorker]:
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
