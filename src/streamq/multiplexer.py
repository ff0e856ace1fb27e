"""Follow many jobs over one blocking ``XREAD``: a process tailing 1,000 jobs needs two
Redis connections (one reading, one for control commands), not 1,000.

One task reads every followed stream with a single ``XREAD BLOCK ... COUNT``, decodes the
entries and hands each follower its own. A new follower interrupts the blocked read
(``CLIENT UNBLOCK``) so it is included at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncGenerator
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from streamq._tasks import cancel_and_wait
from streamq.connections import is_cluster
from streamq.consumer import ChatJob, check_cursor, ended_by, max_block
from streamq.events import Event, as_text, decode_entry, entry_order, is_terminal
from streamq.exceptions import ClientClosed, JobNotFound, ReadTimeout
from streamq.keys import Keys

logger = logging.getLogger("streamq.multiplexer")

READ_COUNT = 1000
UNBLOCK_TRIES = 100
BATCH_ABOVE = 16
GATHER_SECONDS = 0.005


@dataclass(eq=False)
class _Follower:
    key: str
    cursor: str
    queue: asyncio.Queue[list[Event] | BaseException] = field(default_factory=asyncio.Queue)


class Multiplexer:
    """Reads many jobs' streams over one connection; use as an async context manager.

    ``async for event in mux.follow(job_id, after=cursor)`` behaves like
    ``job.events(after=cursor)``: every event after the cursor, up to the terminal one.
    """

    def __init__(
        self,
        redis: Redis,
        keys: Keys,
        *,
        read_timeout: float = 300.0,
        streams: Redis | None = None,
    ) -> None:
        self._queue = redis
        self._redis = redis if streams is None else streams
        # One XREAD cannot span a cluster's slots: there each job is read on its own.
        self._per_job = is_cluster(self._redis)
        self._keys = keys
        self._read_timeout = read_timeout
        self._followers: dict[str, list[_Follower]] = {}
        self._changed = asyncio.Event()
        self._control = asyncio.Lock()
        self._reader: Redis | None = None
        self._reader_id: int | None = None
        self._blocked = False
        self._task: asyncio.Task[None] | None = None
        self._closed = False

    async def __aenter__(self) -> Multiplexer:
        if self._closed:
            raise ClientClosed("this Multiplexer was closed; create a new one")
        self._task = asyncio.create_task(self._run(), name="streamq-multiplexer")
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Stop reading and release the reading connection."""
        self._closed = True
        if self._task is not None:
            await cancel_and_wait([self._task])
            self._task = None
        await self._drop_reader()

    async def follow(
        self, job_id: str, after: str | None = None, *, timeout: float | None = None
    ) -> AsyncGenerator[Event, None]:
        """Events of ``job_id`` after cursor ``after``, up to and including the terminal one."""
        if self._task is None or self._closed:
            raise ClientClosed("use the Multiplexer inside `async with`")
        cursor = check_cursor(after)
        job = ChatJob(
            self._queue, self._keys, job_id, read_timeout=self._read_timeout, streams=self._redis
        )
        if self._per_job:
            async with job.events(cursor, timeout=timeout) as events:
                async for event in events:
                    yield event
            return
        async with self._control:  # one control connection, however many follow at once
            if not await job.exists():
                raise JobNotFound(job_id)
            if await ended_by(self._redis, self._keys.events(job_id), cursor):
                return
        follower = _Follower(self._keys.events(job_id), cursor)
        self._followers.setdefault(follower.key, []).append(follower)
        await self._wake_reader()
        wait = self._read_timeout if timeout is None else timeout
        try:
            while True:
                try:
                    item = await asyncio.wait_for(follower.queue.get(), wait)
                except TimeoutError:
                    raise ReadTimeout(f"no event from job {job_id!r} for {wait:g}s") from None
                if isinstance(item, BaseException):
                    raise item
                for event in item:
                    yield event
                    if is_terminal(event):
                        return
        finally:
            followers = self._followers.get(follower.key, [])
            if follower in followers:
                followers.remove(follower)
            if not followers:
                self._followers.pop(follower.key, None)

    async def _wake_reader(self) -> None:
        self._changed.set()
        # The read in flight may not have reached Redis yet: retry the unblock until it lands,
        # or until the reader starts a new read (which clears `_changed` and includes us).
        for _ in range(UNBLOCK_TRIES):
            if not (self._blocked and self._changed.is_set() and self._reader_id is not None):
                return
            with contextlib.suppress(Exception):
                async with self._control:
                    if await self._redis.client_unblock(self._reader_id):
                        return
            await asyncio.sleep(0.001)

    async def _run(self) -> None:
        backoff = 0.05
        while True:
            if not self._followers:
                self._changed.clear()
                await self._changed.wait()
                continue
            if len(self._followers) > BATCH_ABOVE:
                # Many streams: let entries gather for a moment, so each XREAD (which names every
                # followed stream) returns many of them rather than one or two.
                await asyncio.sleep(GATHER_SECONDS)
            self._changed.clear()
            streams = {key: min(f.cursor for f in group) for key, group in self._followers.items()}
            try:
                reader = await self._ensure_reader()
                self._blocked = True
                try:
                    reply = await reader.xread(
                        streams,  # type: ignore[arg-type]
                        count=READ_COUNT,
                        block=int(max_block(self._redis) * 1000),
                    )
                finally:
                    self._blocked = False
            except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
                logger.warning("multiplexer lost Redis (%r); resuming from the cursors", exc)
                await self._drop_reader()
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 2.0)
                continue
            backoff = 0.05
            for raw_key, entries in reply or ():
                self._deliver(as_text(raw_key), entries)

    def _deliver(self, key: str, entries: list[Any]) -> None:
        for follower in self._followers.get(key, ()):
            after = entry_order(follower.cursor)
            batch: list[Event] = []
            for entry_id, fields in entries:
                cursor = as_text(entry_id)
                if entry_order(cursor) <= after:
                    continue
                try:
                    batch.append(decode_entry(cursor, fields))
                except Exception as exc:  # one bad entry fails its reader, not the others
                    follower.queue.put_nowait(exc)
                    break
            if batch:
                follower.cursor = batch[-1].cursor
                follower.queue.put_nowait(batch)

    async def _ensure_reader(self) -> Redis:
        if self._reader is None:
            self._reader = self._redis.client()
            self._reader_id = int(await self._reader.client_id())
        return self._reader

    async def _drop_reader(self) -> None:
        reader, self._reader, self._reader_id = self._reader, None, None
        if reader is not None:
            with contextlib.suppress(Exception):
                await reader.aclose()
