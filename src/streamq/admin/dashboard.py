"""What the gateway's ``/admin`` page reads beyond ``streamq stats``: the last hour's counts per
minute, admission state per model, and running and recent jobs, each job's stream read
incrementally (only the entries since the last look).

Every reader here works on the same keys as :mod:`streamq.admin.queries` and
:mod:`streamq.admin.counters`; ``docs/operations.md`` says what each costs Redis.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

from redis.asyncio import Redis

from streamq.admin.queries import JobRecord
from streamq.core.clock import server_time_ms
from streamq.core.events import decode_entry
from streamq.core.exceptions import InvalidRequest, JobNotFound
from streamq.core.keys import Keys
from streamq.core.protocol import lease_parts
from streamq.core.settings import Settings
from streamq.job import ChatJob

HISTORY_MINUTES = 60
QUEUED_SHOWN = 20  # the oldest queued jobs listed
RECENT_KEPT = 50  # ended jobs the page keeps listing
ENTRIES_PER_LOOK = 1000  # stream entries read per job and refresh, at most
ENDED = ("done", "error", "cancelled")


@dataclass(frozen=True)
class Minute:
    """The fleet's counts for one minute (Unix time // 60)."""

    minute: int
    jobs: dict[str, int]
    errors: dict[str, int]
    deltas: int


async def counts_by_minute(
    redis: Redis, keys: Keys, minutes: int = HISTORY_MINUTES
) -> list[Minute]:
    """The counters of the last ``minutes`` minutes, oldest first (one pipelined read)."""
    now_minute = await server_time_ms(redis) // 60_000
    window = range(now_minute - minutes + 1, now_minute + 1)
    async with redis.pipeline(transaction=False) as pipe:
        for bucket in window:
            pipe.hgetall(keys.counters(bucket))
        buckets = await pipe.execute()
    history = []
    for bucket_minute, bucket in zip(window, buckets, strict=True):
        jobs: dict[str, int] = {}
        errors: dict[str, int] = {}
        deltas = 0
        for raw_name, raw_value in bucket.items():
            kind, _, detail = raw_name.decode().partition(":")
            if kind == "jobs":
                jobs[detail] = int(raw_value)
            elif kind == "errors":
                errors[detail] = int(raw_value)
            elif kind == "deltas":
                deltas = int(raw_value)
        history.append(Minute(bucket_minute, jobs, errors, deltas))
    return history


@dataclass(frozen=True)
class ModelAdmission:
    """One model's fleet-wide admission state, for one provider account (a key's digest)."""

    account: str
    model: str
    slots_in_use: int
    paused_for_s: float | None  # the fleet waits this long after a 429; None: not paused


async def admission_pairs(redis: Redis, keys: Keys) -> list[tuple[str, str]]:
    """The (account, model) pairs with admission keys now (a ``SCAN``: call it rarely)."""
    pattern = f"{keys.prefix}:admission:*"
    pairs: set[tuple[str, str]] = set()
    async for raw in redis.scan_iter(match=pattern, count=1000):
        rest = raw.decode(errors="replace")[len(keys.prefix) + len(":admission:") :]
        account, _, model_kind = rest.partition(":")
        model, _, kind = model_kind.rpartition(":")
        if kind in ("slots", "paused") and model:
            pairs.add((account, model))
    return sorted(pairs)


async def admission_state(
    redis: Redis, keys: Keys, pairs: list[tuple[str, str]]
) -> list[ModelAdmission]:
    """Slots held (leases not expired) and the 429 pause of each pair, in one pipeline."""
    if not pairs:
        return []
    now_ms = await server_time_ms(redis)
    async with redis.pipeline(transaction=False) as pipe:
        for account, model in pairs:
            pipe.zcount(keys.admission_slots(account, model), now_ms, "+inf")
            pipe.pttl(keys.admission_pause(account, model))
        replies = await pipe.execute()
    states = []
    for index, (account, model) in enumerate(pairs):
        in_use, pause_ms = int(replies[2 * index]), int(replies[2 * index + 1])
        paused = round(pause_ms / 1000, 3) if pause_ms > 0 else None
        states.append(ModelAdmission(account, model, in_use, paused))
    return states


async def running_job_ids(redis: Redis, keys: Keys) -> list[str]:
    """The jobs with a running attempt (their leases), oldest lease first."""
    ids: list[str] = []
    for raw in await redis.zrange(keys.running(), 0, -1):
        _, job_id = lease_parts(raw.decode(errors="replace"))
        if job_id not in ids:
            ids.append(job_id)
    return ids


async def queued_job_ids(redis: Redis, settings: Settings, limit: int = QUEUED_SHOWN) -> list[str]:
    """The oldest ``limit`` jobs of this prefix in the queue (other applications' skipped)."""
    keys = Keys(settings.key_prefix)
    ids = []
    for raw in await redis.zrange(settings.queue_name, 0, limit - 1):
        try:
            ids.append(keys.job_id_from_arq(raw.decode(errors="replace")))
        except InvalidRequest:
            continue
    return ids


@dataclass
class WatchedJob:
    """One job as the page lists it: its :class:`JobRecord`, kept up to date entry by entry."""

    record: JobRecord
    tenant: str | None = None
    first_seen: float = 0.0
    owner_read: bool = False
    complete: bool = False  # ended, and its stream read to the end: nothing more to read

    def to_dict(self) -> dict[str, Any]:
        """The fields the page's job table shows."""
        record = self.record
        return {
            "job_id": record.job_id,
            "state": record.state,
            "model": record.model,
            "tenant": self.tenant,
            "attempt": record.attempt,
            "attempts": len(record.attempts),
            "worker": record.worker,
            "ttft_s": record.first_delta_after_s,
            "duration_s": record.ended_after_s,
            "deltas": record.deltas,
            "usage": record.usage,
            "error": record.error,
            "started_at": record.started_at,
            "first_seen": self.first_seen,
        }


@dataclass
class JobWatch:
    """The jobs the page lists: the running ones, the oldest queued ones, and up to
    ``keep`` that ended while watched. Ended jobs are read no more."""

    redis: Redis
    streams: Redis
    settings: Settings
    keep: int = RECENT_KEPT
    jobs: OrderedDict[str, WatchedJob] = field(default_factory=OrderedDict)

    async def refresh(self) -> list[WatchedJob]:
        """Look again; running and queued jobs first, then the ended ones, newest first."""
        keys = Keys(self.settings.key_prefix)
        now = await server_time_ms(self.redis) / 1000
        current = await running_job_ids(self.redis, keys)
        current += [i for i in await queued_job_ids(self.redis, self.settings) if i not in current]
        for job_id in current:
            if job_id not in self.jobs:
                self.jobs[job_id] = WatchedJob(
                    JobRecord(job_id, "queued", 0, False, None), first_seen=now
                )
        for job_id, watched in list(self.jobs.items()):
            if watched.complete:
                continue
            try:
                await self._update(keys, watched)
            except JobNotFound:  # expired or never there: nothing to list
                del self.jobs[job_id]
        ended = [w for w in self.jobs.values() if w.complete]
        for gone in ended[: max(0, len(ended) - self.keep)]:
            del self.jobs[gone.record.job_id]
        live = [w for w in self.jobs.values() if not w.complete]
        recent = [w for w in self.jobs.values() if w.complete]
        return live + recent[::-1]

    async def _update(self, keys: Keys, watched: WatchedJob) -> None:
        record = watched.record
        job = ChatJob(
            self.redis,
            keys,
            record.job_id,
            read_timeout=1.0,
            stream_ttl=self.settings.stream_ttl,
            streams=self.streams,
            queue_name=self.settings.queue_name,
        )
        status = await job.status()
        record.state, record.attempt, record.stalled = status.state, status.attempt, status.stalled
        record.lease_remaining_s = status.lease_remaining
        after = "-" if record.last_cursor is None else f"({record.last_cursor}"
        entries = await self.streams.xrange(
            keys.events(record.job_id), after, "+", count=ENTRIES_PER_LOOK
        )
        for raw_id, fields in entries:
            record.apply(decode_entry(raw_id.decode(), fields))
        watched.complete = status.state in ENDED and len(entries) < ENTRIES_PER_LOOK
        if not watched.owner_read:
            owner = await self.redis.get(keys.owner(record.job_id))
            watched.tenant = None if owner is None else owner.decode()
            watched.owner_read = True
