"""How workers cover for each other: leases, heartbeats, reaping, cancel requests, wake-ups.

Every running attempt holds a lease in the ``running`` sorted set. Its worker renews the
leases of all its attempts in one command every third of a lease. Every worker also reaps:
an attempt whose lease ran out (its worker died or lost Redis) has arq's in-progress marker
deleted, so the next poll of any live worker starts the job again as a new attempt. Cancel
requests arrive on a pub/sub channel; the heartbeat also re-reads the cancel flags, so a
request sent while the channel was down is not lost. A producer publishes on the queue's wake
channel after enqueueing, so an idle worker starts the job at once instead of at its next poll.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field, replace
from typing import Any

from arq.constants import expires_extra_ms
from redis.asyncio import Redis

from streamq.admin.presence import WorkerPresence, announce, withdraw
from streamq.core import scripts
from streamq.core._tasks import cancel_and_wait
from streamq.core.clock import server_time_ms
from streamq.core.keys import Keys, arq_in_progress_key, arq_job_key, check_job_id
from streamq.core.protocol import lease_member, lease_parts
from streamq.core.queue import arq_job
from streamq.core.redis_errors import is_transient

logger = logging.getLogger("streamq.fleet")

REAP_BATCH = 100
LISTEN_TIMEOUT = 2.0  # below the pool's socket timeout, so an idle channel is not an error


@dataclass(eq=False)
class Run:
    """One attempt running in this process."""

    job_id: str
    attempt: int
    cancel_reason: str | None = None
    deltas: int = 0
    model: str | None = None
    started: float = field(default_factory=time.monotonic)
    first_delta: float | None = None  # time.monotonic() of the first content delta
    task: asyncio.Task[Any] | None = None
    cancelled: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def member(self) -> str:
        """The attempt's member in the ``running`` sorted set."""
        return lease_member(self.attempt, self.job_id)

    def cancel(self, reason: str) -> None:
        """Stop the attempt's generation (closing the upstream stream)."""
        if self.cancel_reason is None:
            self.cancel_reason = reason
            self.cancelled.set()
            if self.task is not None:
                self.task.cancel()


class Fleet:
    """This process's part in the fleet: its runs' leases, reaping, and cancel requests."""

    def __init__(
        self,
        redis: Redis,
        keys: Keys,
        *,
        lease: float,
        arq_id: Callable[[str], str],
        queue_name: str,
        wake_channel: str | None = None,
        on_wake: Callable[[], None] | None = None,
        presence: WorkerPresence | None = None,
        streams: Redis | None = None,
    ) -> None:
        self._streams = redis if streams is None else streams  # where the job states live
        self.runs: dict[str, Run] = {}
        self._presence = presence
        self._queue_name = queue_name
        self._suspects: dict[str, float] = {}  # job id -> when first seen stranded
        self._wake_channel = wake_channel.encode() if wake_channel else None
        self._on_wake = on_wake
        self._redis = redis
        self._keys = keys
        self._lease_ms = int(lease * 1000)
        self._interval = lease / 3
        self._arq_id = arq_id
        self._heartbeat = redis.register_script(scripts.HEARTBEAT)
        self._reap = redis.register_script(scripts.REAP)
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        """Start heartbeats, reaping and the cancel listener on the running loop."""
        loops = {"heartbeat": self._beat, "reaper": self._reap_lost}
        for name, step in loops.items():
            self._tasks.append(asyncio.create_task(self._every(step), name=f"streamq-{name}"))
        self._tasks.append(asyncio.create_task(self._listen(), name="streamq-cancel-listener"))

    async def aclose(self) -> None:
        """Stop the background tasks and withdraw this worker's presence."""
        await cancel_and_wait(self._tasks)
        self._tasks.clear()
        if self._presence is not None:
            with contextlib.suppress(Exception):
                await withdraw(self._redis, self._keys, self._presence.id)

    def track(self, run: Run) -> None:
        """Register a claimed attempt (its lease was taken by the claim itself)."""
        self.runs[run.job_id] = run

    async def release(self, run: Run) -> None:
        """Forget a finished attempt and drop its lease."""
        if self.runs.get(run.job_id) is run:
            del self.runs[run.job_id]
        with contextlib.suppress(Exception):
            await self._redis.zrem(self._keys.running(), run.member)

    async def _every(self, step: Callable[[], Awaitable[None]]) -> None:
        while True:
            try:
                await step()
            except Exception as exc:  # Redis trouble: try again next round
                logger.warning("%s failed: %r", step.__name__, exc)
            await asyncio.sleep(self._interval * random.uniform(0.8, 1.0))

    async def _beat(self) -> None:
        if self._presence is not None:
            now = replace(self._presence, in_flight=len(self.runs))
            await announce(self._redis, self._keys, now, ttl_ms=self._lease_ms)
        runs = list(self.runs.values())
        if not runs:
            return
        members = [run.member for run in runs]
        await self._heartbeat(keys=[self._keys.running()], args=[self._lease_ms, *members])
        async with self._streams.pipeline(transaction=False) as pipe:
            for run in runs:
                pipe.hget(self._keys.state(run.job_id), "cancel")
            flags = await pipe.execute(raise_on_error=False)  # one job's keys fail it alone
        for run, flag in zip(runs, flags, strict=True):
            if flag and not isinstance(flag, Exception):
                run.cancel("cancel requested")

    async def _reap_lost(self) -> None:
        await self._reap_expired()
        await self._reap_stranded(self._queue_name)

    async def _reap_stranded(self, queue_name: str) -> None:
        """Free jobs arq marked in progress whose worker died before it claimed them.

        Such a job holds arq's in-progress marker but no lease; left alone it would wait for
        arq's own timeout. A job seen like that for a whole lease is freed like a lost one.
        """
        now = asyncio.get_running_loop().time()
        oldest = await self._redis.zrangebyscore(
            queue_name,
            "-inf",
            f"({await self._server_ms() - self._lease_ms}",
            start=0,
            num=REAP_BATCH,
        )
        stranded: set[str] = set()
        for raw in oldest:
            arq_id = raw.decode(errors="replace") if isinstance(raw, bytes) else str(raw)
            try:
                job_id = self._keys.job_id_from_arq(arq_id)
            except ValueError:
                continue
            async with _one_job(f"checking stranded job {job_id}"):
                await self._check_stranded(job_id, arq_id, now, stranded)
        self._suspects = {k: v for k, v in self._suspects.items() if k in stranded}

    async def _check_stranded(
        self, job_id: str, arq_id: str, now: float, stranded: set[str]
    ) -> None:
        in_progress = arq_in_progress_key(arq_id)
        if job_id in self.runs or not await self._redis.exists(in_progress):
            return
        attempt, terminal = await self._state(job_id)
        if terminal:
            return
        member = lease_member(attempt, job_id)
        if attempt and await self._redis.zscore(self._keys.running(), member) is not None:
            return
        stranded.add(job_id)
        first_seen = self._suspects.setdefault(job_id, now)
        if now - first_seen >= self._lease_ms / 1000:
            await self._redis.delete(in_progress)
            logger.warning("job %s was stranded before its first claim; freed again", job_id)

    async def _reap_expired(self) -> None:
        expired = await self._redis.zrangebyscore(
            self._keys.running(), "-inf", f"({await self._server_ms()}", start=0, num=REAP_BATCH
        )
        for raw in expired:
            member = raw.decode(errors="replace") if isinstance(raw, bytes) else str(raw)
            try:
                await self._reap_member(member)
            except Exception as exc:  # its job's data is bad: drop the lease, not the round
                if is_transient(exc):
                    raise
                logger.error("dropping the unusable lease %r: %r", member, exc)
                await self._redis.zrem(self._keys.running(), member)

    async def _reap_member(self, member: str) -> None:
        attempt, job_id = lease_parts(member)
        check_job_id(job_id)
        arq_id = self._arq_id(job_id)
        current, terminal = await self._state(job_id)
        keys = [
            self._keys.running(),
            arq_in_progress_key(arq_id),
            arq_job_key(arq_id),
            self._queue_name,
        ]
        now = int(time.time() * 1000)
        args: list[str | bytes | int] = [
            member,
            attempt,
            arq_id,
            arq_job(now),
            expires_extra_ms,
            current,
            "1" if terminal else "",
        ]
        if await self._reap(keys=keys, args=args):
            logger.warning("job %s attempt %s lost its worker; freed for a retry", job_id, attempt)

    async def _state(self, job_id: str) -> tuple[int, bool]:
        """The job's current attempt and whether it has ended, from its stream's state."""
        attempt, terminal = await self._streams.hmget(  # type: ignore[misc]
            self._keys.state(job_id), ["attempt", "terminal"]
        )
        return int(attempt or 0), terminal is not None

    def _dispatch(self, channel: bytes, data: bytes) -> None:
        if channel == self._wake_channel:
            if self._on_wake is not None:
                self._on_wake()
            return
        run = self.runs.get(data.decode(errors="replace"))
        if run is not None:
            run.cancel("cancel requested")

    async def _server_ms(self) -> int:
        return await server_time_ms(self._redis)

    async def _listen(self) -> None:
        channels = [self._keys.cancel_channel().encode()]
        if self._wake_channel is not None:
            channels.append(self._wake_channel)
        backoff = 0.1
        while True:
            try:
                async with self._redis.pubsub(ignore_subscribe_messages=True) as pubsub:
                    await pubsub.subscribe(*channels)
                    backoff = 0.1
                    if self._on_wake is not None:
                        self._on_wake()  # a job enqueued while we were not listening
                    while True:
                        message = await pubsub.get_message(timeout=LISTEN_TIMEOUT)
                        if message is not None:
                            self._dispatch(message["channel"], message["data"])
            except Exception as exc:
                logger.warning("pub/sub listener lost Redis (%r); reconnecting", exc)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)


@contextlib.asynccontextmanager
async def _one_job(doing: str) -> AsyncIterator[None]:
    """Let one job's bad data fail only its own step of a round over many jobs; a lost link
    ends the round (the next one tries again)."""
    try:
        yield
    except Exception as exc:
        if is_transient(exc):
            raise
        logger.error("%s failed: %r", doing, exc)
