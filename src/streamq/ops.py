"""What operators ask of a running fleet: stats, one job's record, health, and clean-up."""

from __future__ import annotations

import json
import socket
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from arq.constants import abort_jobs_ss
from redis.asyncio import Redis

from streamq.clock import server_time_ms
from streamq.connections import streams_from_url
from streamq.consumer import ChatJob
from streamq.counters import RecentCounts, recent_counts
from streamq.events import Delta, Done, Error, Start, decode_entry, entry_order
from streamq.exceptions import InvalidRequest
from streamq.keys import Keys, arq_in_progress_key, arq_job_key
from streamq.presence import WorkerPresence, alive_workers
from streamq.settings import Settings

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

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready form (``streamq inspect --json``)."""
        return asdict(self)


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
        redis, keys, job_id, read_timeout=1.0, stream_ttl=settings.stream_ttl, streams=streams
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
        event = decode_entry(raw_id.decode(), fields)
        record.entries += 1
        record.last_cursor = event.cursor
        at = entry_order(event.cursor)[0] / 1000
        if isinstance(event, Start):
            record.attempts.append({"attempt": event.attempt, "worker": event.worker})
            record.model, record.worker, record.started_at = event.model, event.worker, at
            record.deltas, record.first_delta_after_s = 0, None
        elif isinstance(event, Delta):
            record.deltas += 1
            if record.first_delta_after_s is None and record.started_at is not None:
                record.first_delta_after_s = round(at - record.started_at, 3)
        elif isinstance(event, Done | Error) and record.started_at is not None:
            record.ended_after_s = round(at - record.started_at, 3)
            if isinstance(event, Done):
                record.finish_reason, record.usage = event.finish_reason, event.usage
            else:
                record.error = {"code": event.code, "message": event.message}
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
class PurgeReport:
    """What :func:`purge` removed (or, with ``dry_run``, would remove)."""

    stale_leases: int = 0
    stale_workers: int = 0
    keys_without_ttl: int = 0
    abort_entries: int = 0
    orphaned_arq_keys: int = 0

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
    - arq job and in-progress keys of jobs that have ended or whose request expired.
    """
    url = settings.streams_url
    streams = redis if url is None else streams_from_url(url)
    try:
        return await _purge(redis, streams, settings, dry_run)
    finally:
        if streams is not redis:
            await streams.aclose()


async def _purge(redis: Redis, streams: Redis, settings: Settings, dry_run: bool) -> PurgeReport:
    keys = Keys(settings.key_prefix)
    report = PurgeReport()

    leases = [raw.decode() for raw in await redis.zrange(keys.running(), 0, -1)]
    for member in leases:
        _, _, job_id = member.partition(":")
        state = await streams.hmget(keys.state(job_id), ["attempt", "terminal"])  # type: ignore[misc]
        if state[0] is None or state[1] is not None:
            report.stale_leases += 1
            if not dry_run:
                await redis.zrem(keys.running(), member)

    now_ms = await server_time_ms(redis)
    expired = await redis.zrangebyscore(keys.workers(), "-inf", f"({now_ms}")
    report.stale_workers = len(expired)
    if expired and not dry_run:
        await redis.zrem(keys.workers(), *expired)

    async for key in redis.scan_iter(match=keys.job_keys(), count=SCAN_COUNT):
        if await redis.ttl(key) == -1:
            report.keys_without_ttl += 1
            if not dry_run:
                await redis.expire(key, settings.stream_ttl)

    ours = [m async for m, _ in redis.zscan_iter(abort_jobs_ss, match=keys.arq_job_ids())]
    report.abort_entries = len(ours)
    if ours and not dry_run:
        await redis.zrem(abort_jobs_ss, *ours)

    for arq_key in (arq_job_key, arq_in_progress_key):
        prefix = arq_key("")
        async for key in redis.scan_iter(match=arq_key(keys.arq_job_ids()), count=SCAN_COUNT):
            arq_id = key.decode(errors="replace")[len(prefix) :]
            try:
                job_id = keys.job_id_from_arq(arq_id)
            except InvalidRequest:  # not a job of ours (or not a valid id): not ours to clean
                continue
            ended = await streams.hexists(keys.state(job_id), "terminal")  # type: ignore[misc]
            gone = not await redis.exists(keys.request(job_id))
            queued = await redis.zscore(settings.queue_name, arq_id) is not None
            if ended or (gone and not queued):
                report.orphaned_arq_keys += 1
                if not dry_run:
                    await redis.delete(key)
    return report


def stats_text(stats: FleetStats) -> str:
    """``streamq stats`` for a terminal."""
    oldest = "-" if stats.oldest_queued_age_s is None else f"{stats.oldest_queued_age_s:.1f}s"
    recent = stats.recent
    lines = [
        f"queue      {stats.queued} queued (oldest {oldest}), {stats.running} running",
        f"workers    {len(stats.workers)} alive, "
        f"{sum(w.in_flight for w in stats.workers)} jobs in flight",
    ]
    for worker in stats.workers:
        up = time.time() - worker.started_at
        lines.append(
            f"  {worker.id:<32} {worker.in_flight:>4}/{worker.concurrency:<4} "
            f"up {up:,.0f}s  v{worker.version}"
        )
    lines.append(
        f"last {recent.seconds:.0f}s  {recent.jobs_per_minute:.1f} jobs/min, "
        f"{recent.deltas_per_second:.1f} deltas/s"
    )
    outcomes = ", ".join(f"{name} {count}" for name, count in sorted(recent.jobs.items()))
    lines.append(f"  outcomes {outcomes or '-'}")
    failures = ", ".join(f"{code} {count}" for code, count in recent.errors.most_common())
    lines.append(f"  failures {failures or '-'}")
    return "\n".join(lines)


def as_json(data: dict[str, Any]) -> str:
    """One line of JSON, for scripts."""
    return json.dumps(data, ensure_ascii=False, sort_keys=True)
