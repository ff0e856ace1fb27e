"""How workers cover for each other: this process's leases and heartbeat, its part in reaping
(:mod:`~streamq.worker.reaper`) and the signals it listens for (:mod:`~streamq.worker.signals`).

Every running attempt holds a lease in the ``running`` sorted set. Its worker renews the
leases of all its attempts in one command every third of a lease, announces its presence, and
re-reads its attempts' cancel flags (a cancel sent while pub/sub was down is not lost).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.client import Pipeline

from streamq.admin.presence import WorkerPresence, announce, withdraw
from streamq.core import scripts
from streamq.core._tasks import cancel_and_wait
from streamq.core.keys import Keys
from streamq.core.protocol import lease_member
from streamq.worker.reaper import FAIR_TTL, Reaper
from streamq.worker.signals import Signals

logger = logging.getLogger("streamq.fleet")
# Every how many heartbeats the cancel flags of running jobs are read again regardless (a
# backstop: requests come over pub/sub, and after a resubscription the flags are read anyway).
FLAG_SWEEP_BEATS = 10


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
        fair_ttl: int = FAIR_TTL,
    ) -> None:
        self._streams = redis if streams is None else streams  # where the job states live
        self.runs: dict[str, Run] = {}
        self._presence = presence
        self._redis = redis
        self._keys = keys
        self._lease_ms = int(lease * 1000)
        self._interval = lease / 3
        self._heartbeat = redis.register_script(scripts.HEARTBEAT)
        self._beats = 0
        self._flags_read_after = -1  # the listener's subscriptions at the last read of the flags
        self._tasks: list[asyncio.Task[None]] = []
        self.reaper = Reaper(
            redis,
            keys,
            lease_ms=self._lease_ms,
            arq_id=arq_id,
            queue_name=queue_name,
            runs=self.runs,
            streams=streams,
            fair_ttl=fair_ttl,
        )
        self.signals = Signals(redis, keys, self.runs, wake_channel=wake_channel, on_wake=on_wake)

    def start(self) -> None:
        """Start heartbeats, reaping and the cancel listener on the running loop."""
        loops = {"heartbeat": self._beat, "reaper": self.reaper.reap_lost}
        for name, step in loops.items():
            self._tasks.append(asyncio.create_task(self._every(step), name=f"streamq-{name}"))
        listener = self.signals.listen()
        self._tasks.append(asyncio.create_task(listener, name="streamq-cancel-listener"))

    async def aclose(self) -> None:
        """Stop the background tasks and withdraw this worker's presence."""
        await cancel_and_wait(self._tasks)
        self._tasks.clear()
        if self._presence is not None:
            with contextlib.suppress(Exception):
                await withdraw(self._redis, self._keys, self._presence.id)

    def track(self, run: Run) -> None:
        """Register a claimed attempt (its lease was taken by the claim itself); one whose
        cancel request came between its claim and now is cancelled."""
        self.runs[run.job_id] = run
        if self.signals.asked(run.job_id):
            run.cancel("cancel requested")

    def release_in(self, pipe: Pipeline, run: Run) -> None:
        """Forget a finished attempt, and queue the drop of its lease on ``pipe`` (a pipeline
        of this fleet's Redis)."""
        if self.runs.get(run.job_id) is run:
            del self.runs[run.job_id]
        pipe.zrem(self._keys.running(), run.member)

    async def release(self, run: Run) -> None:
        """Forget a finished attempt and drop its lease."""
        async with self._redis.pipeline(transaction=False) as pipe:
            self.release_in(pipe, run)
            with contextlib.suppress(Exception):
                await pipe.execute()

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
        self._beats += 1
        # The flags again only after a (re)subscription, and now and then: a read per running
        # job every beat was 4-8 reads per job of a 10 s stream.
        subscriptions = self.signals.subscriptions
        if subscriptions == self._flags_read_after and self._beats % FLAG_SWEEP_BEATS:
            return
        async with self._streams.pipeline(transaction=False) as pipe:
            for run in runs:
                pipe.hget(self._keys.state(run.job_id), "cancel")
            flags = await pipe.execute(raise_on_error=False)  # one job's keys fail it alone
        self._flags_read_after = subscriptions
        for run, flag in zip(runs, flags, strict=True):
            if flag and not isinstance(flag, Exception):
                run.cancel("cancel requested")
