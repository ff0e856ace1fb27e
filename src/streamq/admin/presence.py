"""Which worker processes are alive: each keeps a presence key fresh with its heartbeat."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass

from redis.asyncio import Redis

from streamq.core.clock import server_time_ms
from streamq.core.keys import Keys


@dataclass(frozen=True)
class WorkerPresence:
    """What a worker process says about itself every heartbeat."""

    id: str
    host: str
    pid: int
    version: str
    queue: str
    concurrency: int
    in_flight: int
    started_at: float

    def to_json(self) -> str:
        """The JSON stored under :meth:`Keys.worker`."""
        return json.dumps(asdict(self), separators=(",", ":"))

    @classmethod
    def from_json(cls, raw: bytes | str) -> WorkerPresence:
        """Parse what :meth:`to_json` stored."""
        return cls(**json.loads(raw))


async def announce(redis: Redis, keys: Keys, presence: WorkerPresence, ttl_ms: int) -> None:
    """Write ``presence`` for ``ttl_ms``: a worker that stops beating vanishes on its own.

    Its key expires; its entry in the index is dropped by the next heartbeat of any other
    worker, and the index itself expires ``ttl_ms`` after the last heartbeat of all.
    """
    server_ms = await server_time_ms(redis)
    async with redis.pipeline(transaction=False) as pipe:
        pipe.set(keys.worker(presence.id), presence.to_json(), px=ttl_ms)
        pipe.zadd(keys.workers(), {presence.id: server_ms + ttl_ms})
        pipe.zremrangebyscore(keys.workers(), "-inf", f"({server_ms}")
        pipe.pexpire(keys.workers(), ttl_ms)
        await pipe.execute()


async def withdraw(redis: Redis, keys: Keys, worker_id: str) -> None:
    """Remove a stopping worker's presence at once."""
    async with redis.pipeline(transaction=False) as pipe:
        pipe.delete(keys.worker(worker_id))
        pipe.zrem(keys.workers(), worker_id)
        await pipe.execute()


async def alive_workers(redis: Redis, keys: Keys) -> list[WorkerPresence]:
    """Every worker whose presence has not expired, oldest first."""
    ids = [raw.decode() for raw in await redis.zrangebyscore(keys.workers(), "-inf", "+inf")]
    if not ids:
        return []
    values = await redis.mget([keys.worker(worker_id) for worker_id in ids])
    alive = [WorkerPresence.from_json(value) for value in values if value is not None]
    return sorted(alive, key=lambda presence: presence.started_at)
