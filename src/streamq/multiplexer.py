"""Follow many jobs over one blocking ``XREAD``: a process tailing 1,000 jobs needs two or
three Redis connections, not 1,000.

The long read names every followed stream in one ``XREAD BLOCK ... COUNT`` on a connection of
its own, decodes the entries and hands each follower its own. A job followed while that read
is blocked is read at once on the control connection (what its stream holds already), then by
the join read on a third connection, in short blocks (:data:`JOIN_BLOCK_SECONDS`), until the
long read comes back and names it too. Nothing interrupts the long read: ``CLIENT UNBLOCK``
would need a permission that lets any reader end every other reader's reads
(docs/operations.md, Redis users).
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
from redis.exceptions import RedisError, ResponseError

from streamq.core._tasks import cancel_and_wait
from streamq.core.connections import is_cluster
from streamq.core.events import Event, as_text, decode_entry, entry_order, is_terminal
from streamq.core.exceptions import ClientClosed, JobNotFound, ReadTimeout
from streamq.core.keys import Keys
from streamq.core.protocol import check_cursor, max_block, read_interrupted
from streamq.job import ChatJob, EventStream, ended_by

logger = logging.getLogger("streamq.multiplexer")

READ_COUNT = 1000
BATCH_ABOVE = 16
GATHER_SECONDS = 0.005
# How long a job followed while both reads are blocked may wait for its next entries (what its
# stream holds is read at once). An idle Redis ends blocks on its timer (`hz`, 10/s by
# default), so up to ~100 ms there. Costs one XREAD of the newly followed streams per period,
# only until the long read returns (at most its block, 5 s) and names them.
JOIN_BLOCK_SECONDS = 0.02
BACKOFF = 0.05
MAX_BACKOFF = 2.0


@dataclass(eq=False)
class _Follower:
    key: str
    cursor: str
    queue: asyncio.Queue[list[Event] | BaseException] = field(default_factory=asyncio.Queue)
    ended: bool = False  # its terminal event, or an error, is queued: nothing more to read


class Multiplexer:
    """Reads many jobs' streams with one blocking read; use as an async context manager.

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
        self._changed = asyncio.Event()  # a follower joined: for the long read, when idle
        self._joined = asyncio.Event()  # a follower joined: for the join read
        # Serialises the control connection (follow()'s checks and first read, and probes).
        self._control = asyncio.Lock()
        self._long_read = _Reader(self._redis)
        self._join_read = _Reader(self._redis)
        # Where the long read in flight reads each stream from; None between reads.
        self._covered: dict[str, str] | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._closed = False

    async def __aenter__(self) -> Multiplexer:
        if self._closed:
            raise ClientClosed("this Multiplexer was closed; create a new one")
        self._tasks = [
            asyncio.create_task(self._run(), name="streamq-multiplexer"),
            asyncio.create_task(self._run_joins(), name="streamq-multiplexer-joins"),
        ]
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Stop reading and release the reading connections."""
        self._closed = True
        await cancel_and_wait(self._tasks)
        self._tasks = []
        await self._long_read.close()
        await self._join_read.close()

    async def follow(
        self, job_id: str, after: str | None = None, *, timeout: float | None = None
    ) -> AsyncGenerator[Event, None]:
        """Events of ``job_id`` after cursor ``after``, up to and including the terminal one."""
        if not self._tasks or self._closed:
            raise ClientClosed("use the Multiplexer inside `async with`")
        cursor = check_cursor(after)
        job = ChatJob(
            self._queue, self._keys, job_id, read_timeout=self._read_timeout, streams=self._redis
        )
        events = job.events(cursor, timeout=timeout) if self._per_job else None
        source = self._per_job_events(events) if events else self._shared(job, cursor, timeout)
        async with contextlib.aclosing(source):  # a reader that stops early lets go at once
            async for event in source:
                yield event

    @staticmethod
    async def _per_job_events(events: EventStream) -> AsyncGenerator[Event, None]:
        """On a cluster: the job read on its own (one XREAD cannot span a cluster's slots)."""
        async with events:
            async for event in events:
                yield event

    async def _shared(
        self, job: ChatJob, cursor: str, timeout: float | None
    ) -> AsyncGenerator[Event, None]:
        """The job's events from the shared read: what its stream holds, then what comes."""
        follower = _Follower(self._keys.events(job.id), cursor)
        async with self._control:  # one control connection, however many follow at once
            if not await job.exists():
                raise JobNotFound(job.id)
            if await ended_by(self._redis, follower.key, cursor):
                return
            # What the stream holds already, at once: the reads that follow it may be blocked.
            reply = await self._redis.xread({follower.key: cursor}, count=READ_COUNT)
        if reply:
            self._offer(follower, reply[0][1])
        if not follower.ended:
            self._followers.setdefault(follower.key, []).append(follower)
            self._changed.set()
            self._joined.set()
        wait = self._read_timeout if timeout is None else timeout
        try:
            while True:
                try:
                    item = await asyncio.wait_for(follower.queue.get(), wait)
                except TimeoutError:
                    raise ReadTimeout(f"no event from job {job.id!r} for {wait:g}s") from None
                if isinstance(item, BaseException):
                    raise item
                for event in item:
                    yield event
                    if is_terminal(event):
                        return
        finally:
            self._drop(follower)

    async def _run(self) -> None:
        """The long read: every followed stream in one ``XREAD``, blocking up to 5 s."""
        backoff = BACKOFF
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
            streams = self._read_points(self._followers, None)
            self._covered = streams
            try:
                read = await self._read(self._long_read, streams, max_block(self._redis))
            finally:
                self._covered = None
            backoff = await _pause(read, backoff)

    async def _run_joins(self) -> None:
        """The join read: streams followed while the long read is blocked, in short blocks on a
        connection of its own, until the long read names them."""
        backoff = BACKOFF
        while True:
            self._joined.clear()
            streams = self._uncovered()
            if not streams:
                await self._joined.wait()
                continue
            block = min(JOIN_BLOCK_SECONDS, max_block(self._redis))
            backoff = await _pause(await self._read(self._join_read, streams, block), backoff)

    async def _read(self, reader: _Reader, streams: dict[str, str], block: float) -> bool:
        """One read of ``streams`` and its delivery; False if it failed and should be retried
        after a pause."""
        try:
            reply = await reader.xread(streams, block)
        except (RedisError, OSError) as exc:
            return not await self._failed(exc, streams)
        self._deliver(reply, streams)
        return True

    def _uncovered(self) -> dict[str, str]:
        """Read points of the followers the long read in flight does not cover (they joined
        after it began); none between long reads, as the next one takes every follower."""
        covered = self._covered
        return {} if covered is None else self._read_points(self._followers, covered)

    @staticmethod
    def _read_points(
        followers: dict[str, list[_Follower]], covered: dict[str, str] | None
    ) -> dict[str, str]:
        """Per stream, the earliest cursor of its followers (those before ``covered``'s read
        point for it, when given): one XREAD from there serves each of them."""
        points: dict[str, str] = {}
        for key, group in followers.items():
            start = None if covered is None else covered.get(key)
            cursors = [
                f.cursor
                for f in group
                if start is None or entry_order(f.cursor) < entry_order(start)
            ]
            if cursors:
                points[key] = min(cursors, key=entry_order)  # ids sort as numbers, not text
        return points

    async def _failed(self, exc: BaseException, streams: dict[str, str]) -> bool:
        """Handle a read that failed; True when the caller should back off before the next.

        A dropped link or an ``UNBLOCKED`` reply (another client's ``CLIENT UNBLOCK ... ERROR``)
        is retried from the cursors. Any other error reply is the doing of one stream (not a
        stream, say): the followers of the streams that fail on their own hear it, the others
        go on.
        """
        if read_interrupted(exc) or isinstance(exc, OSError):
            logger.warning("multiplexer read failed (%r); resuming from the cursors", exc)
            return True
        async with self._control:
            try:
                async with self._redis.pipeline(transaction=False) as pipe:
                    for key, cursor in streams.items():
                        pipe.xread({key: cursor}, count=1)
                    results = await pipe.execute(raise_on_error=False)
            except (RedisError, OSError):
                return True  # retried, and probed again if it fails again
        failing = [
            (key, result)
            for key, result in zip(streams, results, strict=True)
            if isinstance(result, ResponseError) and not read_interrupted(result)
        ]
        for key, error in failing:
            for follower in self._followers.pop(key, []):
                follower.queue.put_nowait(error)
                follower.ended = True
        if not failing:
            logger.warning("multiplexer read failed (%r); no stream fails alone, retrying", exc)
        return not failing

    def _deliver(self, reply: Any, streams: dict[str, str]) -> None:
        for raw_key, entries in reply or ():
            key = as_text(raw_key)
            read_from = entry_order(streams[key])
            for follower in list(self._followers.get(key, ())):
                if entry_order(follower.cursor) < read_from:
                    continue  # joined behind this read: its entries before read_from are not here
                self._offer(follower, entries)
                if follower.ended:
                    self._drop(follower)  # a bad entry would otherwise come back on every read

    @staticmethod
    def _offer(follower: _Follower, entries: list[Any]) -> None:
        """Queue for ``follower`` the entries after its cursor (a contiguous run from it)."""
        after = entry_order(follower.cursor)
        batch: list[Event] = []
        failure: Exception | None = None
        for entry_id, fields in entries:
            cursor = as_text(entry_id)
            if entry_order(cursor) <= after:
                continue
            try:
                batch.append(decode_entry(cursor, fields))
            except Exception as exc:  # one bad entry fails its reader, not the others
                failure = exc
                break
        if batch:
            follower.cursor = batch[-1].cursor
            follower.queue.put_nowait(batch)
            follower.ended = any(is_terminal(event) for event in batch)
        if failure is not None:
            follower.queue.put_nowait(failure)
            follower.ended = True

    def _drop(self, follower: _Follower) -> None:
        followers = self._followers.get(follower.key, [])
        if follower in followers:
            followers.remove(follower)
        if not followers:
            self._followers.pop(follower.key, None)


class _Reader:
    """A connection of its own for blocking reads: opened on first use, closed after an error
    (the next read opens a new one)."""

    def __init__(self, redis: Redis) -> None:
        self._redis = redis
        self._client: Redis | None = None

    async def xread(self, streams: dict[str, str], block: float) -> Any:
        if self._client is None:
            self._client = self._redis.client()
        try:
            return await self._client.xread(
                streams,  # type: ignore[arg-type]
                count=READ_COUNT,
                block=max(1, int(block * 1000)),
            )
        except ResponseError:
            raise  # an error reply: the connection is fine
        except (RedisError, OSError):
            await self.close()
            raise

    async def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            with contextlib.suppress(Exception):
                await client.aclose()


async def _pause(read: bool, backoff: float) -> float:
    """After a read: nothing if it went through, else a pause; the next pause's length."""
    if read:
        return BACKOFF
    await asyncio.sleep(backoff)
    return min(backoff * 2, MAX_BACKOFF)
