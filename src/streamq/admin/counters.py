"""Fleet-wide counts per minute: jobs by outcome, failures by code, deltas streamed."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.client import Pipeline

from streamq.core.clock import server_time_ms
from streamq.core.keys import Keys

logger = logging.getLogger("streamq.counters")
KEEP_MINUTES = 120


class EndCounts:
    """Job ends counted in this process until sent to ``minute``'s counts (Redis's clock in
    ms // 60,000). A job end's round trip carries them at most once every ``every`` seconds
    (:meth:`due`, :meth:`take_into`); :meth:`send_later` sends the rest a period after the last
    end, and :meth:`aclose` when the process stops. At a hundred job ends a second, three
    commands a job became three a second; a process that dies loses at most its last period's
    counts."""

    def __init__(self, redis: Redis, keys: Keys, every: float = 1.0) -> None:
        self._redis = redis
        self._keys = keys
        self._every = every
        self._pending: dict[int, Counter[str]] = {}
        self._sent_at = -math.inf
        self._sender: asyncio.Task[None] | None = None
        self._sending = False  # the sender's round trip is under way
        self._closing = False

    def add(self, minute: int, outcome: str, deltas: int, error_code: str | None = None) -> None:
        """Count one finished job."""
        counts = self._pending.setdefault(minute, Counter())
        counts[f"jobs:{outcome}"] += 1
        counts["deltas"] += deltas
        if error_code is not None:
            counts[f"errors:{error_code}"] += 1

    @property
    def pending(self) -> bool:
        """Counts wait to be sent."""
        return bool(self._pending)

    def due(self) -> bool:
        """Counts wait, and the last were sent a period ago or more."""
        return self.pending and time.monotonic() - self._sent_at >= self._every

    def take_into(self, pipe: Pipeline) -> None:
        """Queue on ``pipe`` the commands that add every count waiting (then forgotten here:
        a pipeline that fails loses them, as one job's count was lost before)."""
        for minute, counts in self._pending.items():
            key = self._keys.counters(minute)
            for name, n in counts.items():
                pipe.hincrby(key, name, n)
            pipe.expire(key, KEEP_MINUTES * 60)
        self._pending.clear()
        self._sent_at = time.monotonic()

    def send_later(self) -> None:
        """When counts wait, send them a period from now (unless a send is already due)."""
        if self.pending and self._sender is None and not self._closing:
            self._sender = asyncio.create_task(self._send_later())

    async def send(self) -> None:
        """Send the counts waiting now (logged, never raised, if Redis fails)."""
        if not self.pending:
            return
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                self.take_into(pipe)
                results: list[Any] = await pipe.execute(raise_on_error=False)
        except Exception as exc:
            logger.warning("could not count job ends: %r", exc)
            return
        refused = [result for result in results if isinstance(result, Exception)]
        if refused:
            logger.warning(
                "counting job ends: Redis refused %d of its commands: %r", len(refused), refused[0]
            )

    async def aclose(self) -> None:
        """Send the counts still waiting, after a send under way."""
        self._closing = True
        sender = self._sender
        if sender is not None:
            if not self._sending:  # asleep: the send below takes its counts
                sender.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sender
        await self.send()

    async def _send_later(self) -> None:
        try:
            while True:  # again while ends came in during the send
                await asyncio.sleep(self._every)
                self._sending = True
                await self.send()
                self._sending = False
                if not self.pending or self._closing:
                    return
        finally:
            self._sender, self._sending = None, False


@dataclass
class RecentCounts:
    """What the fleet finished within the last ``seconds``."""

    seconds: float
    jobs: Counter[str] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    deltas: int = 0

    @property
    def jobs_per_minute(self) -> float:
        """Finished jobs (any outcome) per minute."""
        return sum(self.jobs.values()) * 60 / self.seconds

    @property
    def deltas_per_second(self) -> float:
        """Deltas of finished jobs per second."""
        return self.deltas / self.seconds


async def recent_counts(redis: Redis, keys: Keys, minutes: int = 5) -> RecentCounts:
    """The counts of the current minute and the ``minutes - 1`` before it."""
    now_ms = await server_time_ms(redis)
    minute = now_ms // 60_000
    window = range(minute - minutes + 1, minute + 1)
    async with redis.pipeline(transaction=False) as pipe:
        for bucket in window:
            pipe.hgetall(keys.counters(bucket))
        buckets = await pipe.execute()
    counts = RecentCounts(seconds=(minutes - 1) * 60 + (now_ms % 60_000) / 1000 or 1.0)
    for bucket in buckets:
        for raw_name, raw_value in bucket.items():
            name, value = raw_name.decode(), int(raw_value)
            kind, _, detail = name.partition(":")
            if kind == "jobs":
                counts.jobs[detail] += value
            elif kind == "errors":
                counts.errors[detail] += value
            elif kind == "deltas":
                counts.deltas += value
    return counts
