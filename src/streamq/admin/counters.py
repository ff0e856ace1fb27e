"""Fleet-wide counts per minute: jobs by outcome, failures by code, deltas streamed."""

from __future__ import annotations

import math
import time
from collections import Counter
from dataclasses import dataclass, field

from redis.asyncio import Redis
from redis.asyncio.client import Pipeline

from streamq.core.clock import server_time_ms
from streamq.core.keys import Keys

KEEP_MINUTES = 120


class EndCounts:
    """Job ends counted in this process until sent to ``minute``'s counts (Redis's clock in
    ms // 60,000). A job end's round trip carries them at most once every ``every`` seconds;
    :meth:`take_into` sends the rest (the worker, a period after its last end and when it
    stops). At a hundred job ends a second, three commands a job became three a second; a
    process that dies loses at most its last period's counts."""

    def __init__(self, keys: Keys, every: float = 1.0) -> None:
        self._keys = keys
        self._every = every
        self._pending: dict[int, Counter[str]] = {}
        self._sent_at = -math.inf

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
