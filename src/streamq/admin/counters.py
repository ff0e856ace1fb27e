"""Fleet-wide counts per minute: jobs by outcome, failures by code, deltas streamed."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from redis.asyncio import Redis
from redis.asyncio.client import Pipeline

from streamq.core.clock import server_time_ms
from streamq.core.keys import Keys

KEEP_MINUTES = 120


def count_job_end(
    pipe: Pipeline,
    keys: Keys,
    minute: int,
    outcome: str,
    deltas: int,
    error_code: str | None = None,
) -> None:
    """Queue on ``pipe`` the commands that add one finished job to ``minute``'s counts (Redis's
    clock in ms // 60,000)."""
    key = keys.counters(minute)
    pipe.hincrby(key, f"jobs:{outcome}", 1)
    pipe.hincrby(key, "deltas", deltas)
    if error_code is not None:
        pipe.hincrby(key, f"errors:{error_code}", 1)
    pipe.expire(key, KEEP_MINUTES * 60)


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
