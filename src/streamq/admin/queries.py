"""What operators ask of a running fleet: stats, one job's record, health, and clean-up."""

from __future__ import annotations

import socket
from dataclasses import asdict, dataclass, field
from typing import Any

from arq.constants import abort_jobs_ss
from redis.asyncio import Redis

from streamq.admin.counters import RecentCounts, recent_counts
from streamq.admin.presence import WorkerPresence, alive_workers
from streamq.core.clock import server_time_ms
from streamq.core.connections import streams_from_url
from streamq.core.events import Delta, Done, Error, Event, Start, decode_entry, entry_order
from streamq.core.exceptions import InvalidRequest, JobNotFound
from streamq.core.keys import Keys, arq_in_progress_key, arq_job_key, fair_order
from streamq.core.protocol import lease_parts
from streamq.core.settings import Settings
from streamq.job import ChatJob
from streamq.webhooks import delivery_status
from streamq.webhooks.queue import DeliveryQueue

OLDEST_SCAN = 100  # queue entries looked at to find the oldest one no worker has started
SCAN_COUNT = 1000


@dataclass
class FleetStats:
    """A snapshot of the queue, the workers and what they finished recently."""

    queued: int
    running: int
    oldest_queued_age_s: float | None
    workers: list[WorkerPresence]
    recent: RecentCounts

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready form (``streamq stats --json``)."""
        return {
            "queued": self.queued,
            "running": self.running,
            "oldest_queued_age_s": self.oldest_queued_age_s,
            "workers": [asdict(worker) for worker in self.workers],
            "window_s": round(self.recent.seconds, 1),
            "jobs_per_minute": round(self.recent.jobs_per_minute, 2),
            "deltas_per_second": round(self.recent.deltas_per_second, 2),
            "jobs": dict(self.recent.jobs),
            "failures": dict(self.recent.errors),
        }


async def fleet_stats(redis: Redis, settings: Settings, minutes: int = 5) -> FleetStats:
    """Queue depth, oldest queued job, jobs in progress, live workers, recent throughput."""
    keys = Keys(settings.key_prefix)
    async with redis.pipeline(transaction=False) as pipe:
        pipe.zcard(settings.queue_name)
        pipe.zcard(keys.running())
        pipe.zrange(settings.queue_name, 0, OLDEST_SCAN - 1, withscores=True)
        in_queue, running, oldest = await pipe.execute()
    async with redis.pipeline(transaction=False) as pipe:
        for arq_id, _ in oldest:
            pipe.exists(arq_in_progress_key(arq_id.decode()))
        started = await pipe.execute()
    now_ms = await server_time_ms(redis)
    waiting = [score for (_, score), busy in zip(oldest, started, strict=True) if not busy]
    return FleetStats(
        queued=max(int(in_queue) - int(running), len(waiting)),
        running=int(running),
        oldest_queued_age_s=round((now_ms - min(waiting)) / 1000, 3) if waiting else None,
        workers=await alive_workers(redis, keys),
        recent=await recent_counts(redis, keys, minutes),
    )


@dataclass
class JobRecord:
    """Everything Redis holds about one job, without its prompt or its text."""

    job_id: str
    state: str
    attempt: int
    stalled: bool
    lease_remaining_s: float | None
    model: str | None = None
    worker: str | None = None
    entries: int = 0
    deltas: int = 0
    last_cursor: str | None = None
    started_at: float | None = None
    first_delta_after_s: float | None = None
    ended_after_s: float | None = None
    finish_reason: str | None = None
    usage: dict[str, Any] | None = None
    error: dict[str, Any] | None = None
    ttl_s: int | None = None
    attempts: list[dict[str, Any]] = field(default_factory=list)
    webhook: dict[str, Any] | None = None  # its delivery, each endpoint's outcome

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready form (``streamq inspect --json``)."""
        return asdict(self)

    def apply(self, event: Event) -> None:
        """Count one entry of the job's stream, read in order (also incrementally, as the
        gateway's ``/admin`` page does)."""
        self.entries += 1
        self.last_cursor = event.cursor
        at = entry_order(event.cursor)[0] / 1000
        if isinstance(event, Start):
            self.attempts.append({"attempt": event.attempt, "worker": event.worker})
            self.model, self.worker, self.started_at = event.model, event.worker, at
            self.deltas, self.first_delta_after_s = 0, None
        elif isinstance(event, Delta):
            self.deltas += 1
            if self.first_delta_after_s is None and self.started_at is not None:
                self.first_delta_after_s = round(at - self.started_at, 3)
        elif isinstance(event, Done | Error) and self.started_at is not None:
            self.ended_after_s = round(at - self.started_at, 3)
            if isinstance(event, Done):
                self.finish_reason, self.usage = event.finish_reason, event.usage
            else:
                self.error = {"code": event.code, "message": event.message}


async def inspect_job(redis: Redis, settings: Settings, job_id: str) -> JobRecord:
    """The job's state, attempts, timings, usage and last cursor (raises JobNotFound)."""
    keys = Keys(settings.key_prefix)
    url = settings.streams_url
    streams = redis if url is None else streams_from_url(url)
    try:
        return await _inspect(redis, streams, keys, settings, job_id)
    finally:
        if streams is not redis:
            await streams.aclose()


async def _inspect(
    redis: Redis, streams: Redis, keys: Keys, settings: Settings, job_id: str
) -> JobRecord:
    job = ChatJob(
        redis,
        keys,
        job_id,
        read_timeout=1.0,
        stream_ttl=settings.stream_ttl,
        streams=streams,
        queue_name=settings.queue_name,
    )
    status = await job.status()
    record = JobRecord(
        job_id=job.id,
        state=status.state,
        attempt=status.attempt,
        stalled=status.stalled,
        lease_remaining_s=status.lease_remaining,
    )
    events_key = keys.events(job.id)
    ttl = await streams.ttl(events_key)
    record.ttl_s = ttl if ttl >= 0 else None
    for raw_id, fields in await streams.xrange(events_key):
        record.apply(decode_entry(raw_id.decode(), fields))
    record.webhook = await delivery_status(redis, keys, job.id)
    return record


async def health_problems(redis: Redis, settings: Settings, *, worker: bool) -> list[str]:
    """Why this process should not count as healthy; empty when it should.

    Without ``worker``: Redis answers (readiness of a producer or gateway). With it: a worker
    process on this host has a fresh presence (liveness of a worker container).
    """
    try:
        await redis.ping()
    except Exception as exc:  # any failure to talk to Redis is the answer itself
        return [f"Redis does not answer: {exc!r}"]
    if not worker:
        return []
    host = socket.gethostname()
    workers = await alive_workers(redis, Keys(settings.key_prefix))
    if not any(presence.host == host for presence in workers):
        return [f"no live streamq worker on host {host!r} (queue {settings.queue_name!r})"]
    return []


@dataclass
class DrainReport:
    """What :func:`drain` dropped (or, with ``dry_run``, would drop)."""

    cancelled: int = 0  # queued, never started: they end with a ``cancelled`` event
    cancelling: int = 0  # queued again after an attempt: their next worker ends them so

    def to_dict(self) -> dict[str, int]:
        """A JSON-ready form (``streamq drain --json``)."""
        return asdict(self)


async def drain(redis: Redis, settings: Settings, *, dry_run: bool = False) -> DrainReport:
    """Cancel every job waiting in the queue: the ones that never started leave it at once
    (their readers see ``cancelled``); ones queued again after an attempt are cancelled for the
    worker that takes them. Running jobs and other applications' arq jobs are left alone."""
    keys = Keys(settings.key_prefix)
    url = settings.streams_url
    streams = redis if url is None else streams_from_url(url)
    report = DrainReport()
    webhooks = DeliveryQueue.for_settings(redis, settings)
    try:
        for raw in await redis.zrange(settings.queue_name, 0, -1):
            arq_id = raw.decode(errors="replace")
            try:
                job_id = keys.job_id_from_arq(arq_id)
            except InvalidRequest:
                continue
            job = ChatJob(redis, keys, job_id, read_timeout=1.0, stream_ttl=settings.stream_ttl,
                          streams=streams, queue_name=settings.queue_name)  # fmt: skip
            try:
                status = await job.status()
            except JobNotFound:  # its request expired: nothing will run it
                continue
            if status.state != "queued" and not (status.state == "running" and status.stalled):
                continue
            if status.attempt == 0:
                report.cancelled += 1
            else:
                report.cancelling += 1
            if dry_run:
                continue
            if await job.cancel() == "cancelled":
                await redis.zrem(settings.queue_name, arq_id)
                await redis.zrem(fair_order(settings.queue_name), arq_id)
                await redis.delete(keys.arq_job(job_id))
                # No worker will take it now: its webhook is due here, as any ended job's.
                await webhooks.register(job_id, 0)
    finally:
        if streams is not redis:
            await streams.aclose()
    return report


@dataclass
class PurgeReport:
    """What :func:`purge` removed (or, with ``dry_run``, would remove)."""

    stale_leases: int = 0
    stale_workers: int = 0
    keys_without_ttl: int = 0
    abort_entries: int = 0
    orphaned_arq_keys: int = 0
    fair_entries: int = 0

    def to_dict(self) -> dict[str, int]:
        """A JSON-ready form (``streamq purge --json``)."""
        return asdict(self)


async def purge(redis: Redis, settings: Settings, *, dry_run: bool = False) -> PurgeReport:
    """Remove what nothing will clean up by itself.

    - leases of attempts whose job has ended or whose state expired;
    - worker index entries whose presence expired;
    - job keys that lost their TTL (given the stream TTL, not deleted; on the queue's Redis
      only, not on a separate streams Redis);
    - this prefix's entries in arq's abort set (streamq cancels through its own scripts, so
      nothing reads them; other applications' entries are left alone);
    - arq job and in-progress keys of jobs that have ended or whose request expired;
    - fair order entries of jobs arq's queue no longer holds.
    """
    url = settings.streams_url
    streams = redis if url is None else streams_from_url(url)
    try:
        return await _purge(redis, streams, settings, dry_run)
    finally:
        if streams is not redis:
            await streams.aclose()


async def _purge(redis: Redis, streams: Redis, settings: Settings, dry_run: bool) -> PurgeReport:
    purge = _Purge(redis, streams, settings, dry_run)
    report = PurgeReport()
    report.stale_leases = await purge.stale_leases()
    report.stale_workers = await purge.stale_workers()
    report.keys_without_ttl = await purge.keys_without_ttl()
    report.abort_entries = await purge.abort_entries()
    report.orphaned_arq_keys = await purge.orphaned_arq_keys()
    report.fair_entries = await purge.fair_entries()
    return report


class _Purge:
    """The five clean-ups of :func:`purge`; each counts what it found (and, unless a dry run,
    removed)."""

    def __init__(self, redis: Redis, streams: Redis, settings: Settings, dry_run: bool) -> None:
        self.redis, self.streams, self.settings = redis, streams, settings
        self.keys = Keys(settings.key_prefix)
        self.dry_run = dry_run

    async def stale_leases(self) -> int:
        """Leases of attempts whose job ended or whose state expired."""
        found = 0
        for raw in await self.redis.zrange(self.keys.running(), 0, -1):
            member = raw.decode(errors="replace")
            _, job_id = lease_parts(member)
            state = self.keys.state(job_id)
            attempt, terminal = await self.streams.hmget(state, ["attempt", "terminal"])  # type: ignore[misc]
            if attempt is None or terminal is not None:
                found += 1
                if not self.dry_run:
                    await self.redis.zrem(self.keys.running(), member)
        return found

    async def stale_workers(self) -> int:
        """Worker index entries whose presence expired."""
        now_ms = await server_time_ms(self.redis)
        expired = await self.redis.zrangebyscore(self.keys.workers(), "-inf", f"({now_ms}")
        if expired and not self.dry_run:
            await self.redis.zrem(self.keys.workers(), *expired)
        return len(expired)

    async def keys_without_ttl(self) -> int:
        """Job keys that lost their TTL: given the stream TTL back, not deleted."""
        found = 0
        async for key in self.redis.scan_iter(match=self.keys.job_keys(), count=SCAN_COUNT):
            if await self.redis.ttl(key) == -1:
                found += 1
                if not self.dry_run:
                    await self.redis.expire(key, self.settings.stream_ttl)
        return found

    async def abort_entries(self) -> int:
        """This prefix's entries in arq's abort set (streamq cancels through its own scripts)."""
        match = self.keys.arq_job_ids()
        ours = [m async for m, _ in self.redis.zscan_iter(abort_jobs_ss, match=match)]
        if ours and not self.dry_run:
            await self.redis.zrem(abort_jobs_ss, *ours)
        return len(ours)

    async def orphaned_arq_keys(self) -> int:
        """arq job and in-progress keys of jobs that ended or whose request expired."""
        found = 0
        for arq_key in (arq_job_key, arq_in_progress_key):
            prefix = arq_key("")
            pattern = arq_key(self.keys.arq_job_ids())
            async for key in self.redis.scan_iter(match=pattern, count=SCAN_COUNT):
                arq_id = key.decode(errors="replace")[len(prefix) :]
                if await self._orphaned(arq_id):
                    found += 1
                    if not self.dry_run:
                        await self.redis.delete(key)
        return found

    async def fair_entries(self) -> int:
        """Fair order entries of jobs arq's queue no longer holds (PICK drops them too)."""
        order, queue = fair_order(self.settings.queue_name), self.settings.queue_name
        gone = [
            member
            async for member, _ in self.redis.zscan_iter(order, count=SCAN_COUNT)
            if await self.redis.zscore(queue, member) is None
        ]
        if gone and not self.dry_run:
            await self.redis.zrem(order, *gone)
        return len(gone)

    async def _orphaned(self, arq_id: str) -> bool:
        try:
            job_id = self.keys.job_id_from_arq(arq_id)
        except InvalidRequest:  # not a job of ours (or not a valid id): not ours to clean
            return False
        ended = await self.streams.hexists(self.keys.state(job_id), "terminal")  # type: ignore[misc]
        gone = not await self.redis.exists(self.keys.request(job_id))
        queued = await self.redis.zscore(self.settings.queue_name, arq_id) is not None
        return bool(ended or (gone and not queued))
