"""Follow many jobs over one blocking ``XREAD``: a process tailing 1,000 jobs needs two or
three Redis connections, not 1,000.

The long read names every followed stream in one ``XREAD BLOCK ... COUNT`` on a connection of
its own, decodes the entries and hands each follower its own. A job followed while that read
is blocked is read at once on the control connection (what its stream holds already), then by
the join read on a third connection, in short blocks (:data:`JOIN_BLOCK_SECONDS`), until the
long read comes back and names it too. Nothing interrupts the long read: ``CLIENT UNBLOCK``
would need a permission that lets any reader end every other reader's reads
(docs/operations.md, Redis users).

While a followed job waits in the queue (its stream still empty), its place is looked up once a
tick for all such jobs together, in one pipelined round trip, whatever the number of their
followers: each follower reading from the start gets a ``queued`` event (no cursor) when the
place changes (:mod:`streamq.core.queue_position`).
"""

from __future__ import annotations

import asyncio
import bisect
import collections
import contextlib
import logging
import time
from collections.abc import AsyncGenerator, Callable
from types import TracebackType
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import RedisError, ResponseError

from streamq.core import protocol
from streamq.core._tasks import cancel_and_wait
from streamq.core.connections import is_cluster
from streamq.core.events import Event, as_text, decode_entry, entry_order, is_terminal
from streamq.core.exceptions import ClientClosed, JobNotFound, ReadTimeout
from streamq.core.keys import Keys
from streamq.core.protocol import STREAM_GONE, check_cursor, max_block, read_interrupted
from streamq.core.queue_position import TICK_SECONDS, Place, PlaceLookup, is_news
from streamq.job import ChatJob, EventStream, places

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
# Entries that may wait for one follower; past that its backlog is dropped and it catches up
# from Redis by cursor, so a stalled reader costs memory bounded by this, not by the stream.
MAX_BACKLOG = 256
MAX_BACKOFF = 2.0
# Least time between two place lookups: a burst of newly followed queued jobs is looked up in a
# few round trips, not one per job.
PLACE_GAP_SECONDS = 0.1
# Readers woken per loop turn to end after their sinks took the terminal entry. Ending an
# event stream (its last chunk, the response's teardown) takes ~0.2 ms; woken at once, the
# 2,000 subscribers of one job held a gateway's loop ~0.4 s, and every other request with it.
ENDS_PER_TURN = 32


class _Follower:
    """One reader of one stream: what has come for it and not been taken yet.

    ``cursor`` is the last entry handed to it (taken or waiting), ``taken`` the last it took.
    Over :data:`MAX_BACKLOG` waiting entries, the waiting ones are dropped and it goes
    ``behind``: it reads from Redis after ``taken`` on its own until it has caught up.

    A follower with a ``sink`` (:meth:`Subscription.write_directly`) has its entries passed to
    it as they are read, while its reader waits for them with nothing else waiting; ``sunk``
    counts the batches it took, ``sunk_at`` is when it took the last (``time.monotonic()``).
    """

    __slots__ = (
        "alarm",
        "behind",
        "closed",
        "cursor",
        "ended",
        "error",
        "following",
        "key",
        "pending",
        "queued",
        "sink",
        "sunk",
        "sunk_at",
        "taken",
        "waiter",
    )

    def __init__(self, key: str, cursor: str, queued: bool = True) -> None:
        self.key = key
        self.queued = queued  # told its job's place while it waits in the queue
        self.cursor = cursor
        self.taken = cursor
        self.pending: list[Event] = []
        self.error: BaseException | None = None
        self.ended = False  # its terminal event, or an error, is waiting: nothing more to read
        self.behind = False
        self.following = False  # in the shared reads' followers (not yet, or let go)
        self.closed = False  # its subscription was closed: never to follow again
        self.waiter: asyncio.Future[None] | None = None
        self.alarm: asyncio.TimerHandle | None = None
        self.sink: Callable[[list[Event]], bool] | None = None
        self.sunk = 0
        self.sunk_at = 0.0

    def wake(self) -> None:
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def wake_at(self, loop: asyncio.AbstractEventLoop, when: float) -> None:
        """Wake the waiter by ``when`` at the latest. An alarm that rings earlier stays: one
        timer per follower outlives many waits (a timer made and cancelled per entry cost a
        gateway more than the entry's own delivery to a subscriber)."""
        alarm = self.alarm
        if alarm is not None:
            if alarm.when() <= when:
                return
            alarm.cancel()
        self.alarm = loop.call_at(when, self._ring)

    def _ring(self) -> None:
        self.alarm = None
        self.wake()

    def silence(self) -> None:
        """Cancel the alarm (the follower is let go)."""
        if self.alarm is not None:
            self.alarm.cancel()
            self.alarm = None

    def fail(self, error: BaseException) -> None:
        self.error = error
        self.ended = True
        self.wake()


class Multiplexer:
    """Reads many jobs' streams with one blocking read; use as an async context manager.

    ``async for event in mux.follow(job_id, after=cursor)`` behaves like
    ``job.events(after=cursor)``: every event after the cursor, up to the terminal one.
    :meth:`subscribe` gives the same events in batches, each all that had come.
    """

    def __init__(
        self,
        redis: Redis,
        keys: Keys,
        *,
        read_timeout: float = 300.0,
        streams: Redis | None = None,
        max_backlog: int = MAX_BACKLOG,
        control_connections: int = 1,
        queue_name: str | None = None,
    ) -> None:
        """``queue_name``: the queue the followed jobs wait in (``STREAMQ_QUEUE``; the prefix's
        default queue when None)."""
        self._queue = redis
        self._queue_name = keys.default_queue() if queue_name is None else queue_name
        self._redis = redis if streams is None else streams
        # One XREAD cannot span a cluster's slots: there each job is read on its own.
        self._per_job = is_cluster(self._redis)
        self._keys = keys
        self._read_timeout = read_timeout
        self._max_backlog = max_backlog
        self._followers: dict[str, list[_Follower]] = {}
        self._changed = asyncio.Event()  # a follower joined: for the long read, when idle
        self._joined = asyncio.Event()  # a follower joined: for the join read
        # Bounds the control connections (follow()'s checks and first read, catch-ups, probes).
        self._control = asyncio.Semaphore(control_connections)
        self._long_read = _Reader(self._redis)
        self._join_read = _Reader(self._redis)
        # Where the long read in flight reads each stream from; None between reads.
        self._covered: dict[str, str] | None = None
        # Followers that joined or caught up since it began: only they can be behind its read
        # points, so the join read looks at them, not at every follower on every join.
        self._newcomers: list[_Follower] = []
        self._tasks: list[asyncio.Task[None]] = []
        self._closed = False
        self._seen: dict[str, float] = {}  # when each followed stream was last seen to exist
        self.dropped = 0  # times a follower's backlog was dropped (it fell too far behind)
        self.written_directly = 0  # batches handed to sinks (Subscription.write_directly)
        # Followed jobs whose streams were empty when followed, by stream, and the place last
        # told their followers; a follower joining such a job asks for a lookup at once.
        self._job_ids: dict[str, str] = {}
        self._places: dict[str, tuple[Place, list[Event]]] = {}
        self._place_wanted = asyncio.Event()
        self.place_lookups = 0  # round trips made to look places up
        # Readers to wake to end, a few per loop turn (_wake_to_end); whether a turn will.
        self._ending: collections.deque[_Follower] = collections.deque()
        self._ending_due = False

    @property
    def subscribers(self) -> int:
        """How many followers are reading now."""
        return sum(len(group) for group in self._followers.values())

    async def __aenter__(self) -> Multiplexer:
        if self._closed:
            raise ClientClosed("this Multiplexer was closed; create a new one")
        self._tasks = [
            asyncio.create_task(self._run(), name="streamq-multiplexer"),
            asyncio.create_task(self._run_joins(), name="streamq-multiplexer-joins"),
            asyncio.create_task(self._run_places(), name="streamq-multiplexer-places"),
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
        self,
        job_id: str,
        after: str | None = None,
        *,
        timeout: float | None = None,
        queued: bool = True,
    ) -> AsyncGenerator[Event, None]:
        """Events of ``job_id`` after cursor ``after``, up to and including the terminal one;
        with ``queued``, its place while it waits in the queue, as ``job.events()``."""
        if not self._tasks or self._closed:
            raise ClientClosed("use the Multiplexer inside `async with`")
        cursor = check_cursor(after)
        job = self._job(job_id)
        if self._per_job:
            source = self._per_job_events(job.events(cursor, timeout=timeout, queued=queued))
        else:
            source = self._shared(job, cursor, timeout, queued)
        async with contextlib.aclosing(source):  # a reader that stops early lets go at once
            async for event in source:
                yield event

    def subscribe(
        self,
        job_id: str,
        after: str | None = None,
        *,
        timeout: float | None = None,
        queued: bool = True,
    ) -> Subscription:
        """Follow ``job_id`` after cursor ``after`` in batches: ``async with`` the result, then
        ``await sub.next(wait)`` until it raises :class:`StopAsyncIteration`. ``queued``: as
        :meth:`follow`."""
        if not self._tasks or self._closed:
            raise ClientClosed("use the Multiplexer inside `async with`")
        return Subscription(self, self._job(job_id), check_cursor(after), timeout, queued)

    def _job(self, job_id: str) -> ChatJob:
        return ChatJob(
            self._queue,
            self._keys,
            job_id,
            read_timeout=self._read_timeout,
            streams=self._redis,
            queue_name=self._queue_name,
        )

    @staticmethod
    async def _per_job_events(events: EventStream) -> AsyncGenerator[Event, None]:
        """On a cluster: the job read on its own (one XREAD cannot span a cluster's slots)."""
        async with events:
            async for event in events:
                yield event

    async def _shared(
        self, job: ChatJob, cursor: str, timeout: float | None, queued: bool
    ) -> AsyncGenerator[Event, None]:
        """The job's events from the shared read: what its stream holds, then what comes."""
        async with Subscription(self, job, cursor, timeout, queued) as subscription:
            while True:
                try:
                    batch = await subscription.next(None)
                except StopAsyncIteration:
                    return
                for event in batch or ():
                    yield event

    async def _join(self, job: ChatJob, follower: _Follower) -> None:
        """Start following: check the job and read what its stream holds already (the shared
        reads may be blocked), in one round trip when the stream exists; then the shared reads
        take it from its cursor."""
        key, cursor = follower.key, follower.cursor
        async with self._control:
            async with self._redis.pipeline(transaction=False) as pipe:
                pipe.exists(key)
                pipe.xrevrange(key, count=1)
                pipe.xread({key: cursor}, count=self._max_backlog)
                exists, newest, reply = await pipe.execute()
            if not exists and not await job.exists():
                raise JobNotFound(job.id)
        if follower.closed:  # by another task, meanwhile
            return
        if cursor != "0-0" and protocol.ended_at_or_before(cursor, newest):
            follower.ended = True
            return
        self._followers.setdefault(key, []).append(follower)
        follower.following = True
        self._caught_up(follower, reply[0][1] if reply else [])
        if _waits(follower):  # nothing came yet: it may wait in the queue
            self._job_ids[key] = job.id
            told = self._places.get(key)
            if told is None:
                self._place_wanted.set()
            else:
                self._tell(follower, told[1])

    async def _catch_up(self, follower: _Follower) -> None:
        """A follower behind reads the entries after the last it took from Redis, at most a
        backlog's worth at a time; once that reaches the stream's end, the shared reads take
        it from its cursor again."""
        async with self._control:
            reply = await self._redis.xread({follower.key: follower.taken}, count=self._max_backlog)
        self._caught_up(follower, reply[0][1] if reply else [])

    def _caught_up(self, follower: _Follower, entries: list[Any]) -> None:
        follower.behind = False
        follower.cursor = follower.taken
        self._offer(follower, _decoded(entries, entry_order(follower.taken)))
        if follower.ended:
            self._drop(follower)
        elif len(entries) >= self._max_backlog:
            follower.behind = True  # more to read on its own
        else:
            self._newcomers.append(follower)
            self._changed.set()  # the long or the join read takes it from its cursor
            self._joined.set()

    async def _exists(self, job: ChatJob, key: str) -> bool:
        """Whether the job is still there; asked at most once a block per stream, however
        many follow it."""
        now = asyncio.get_running_loop().time()
        if now - self._seen.get(key, -1e9) < max_block(self._redis) / 2:
            return True
        async with self._control:
            exists = await job.exists()
        if exists and key in self._followers:  # (not if its last follower left meanwhile)
            self._seen[key] = now
        return exists

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
            if not streams:  # every follower is behind, reading on its own: until one is back
                await self._changed.wait()
                continue
            self._covered = streams
            self._newcomers = []  # it reads every follower from its cursor
            try:
                read = await self._read(self._long_read, streams, max_block(self._redis))
            finally:
                self._covered = None
            backoff = await _pause(read, backoff)

    async def _run_places(self) -> None:
        """Once a tick (or at once for a new queued job): the places of every followed job
        still waiting, in one round trip; each change told to the followers still at the
        start of its stream."""
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(TICK_SECONDS):
                    await self._place_wanted.wait()
            self._place_wanted.clear()
            if await self._tell_places():
                await asyncio.sleep(PLACE_GAP_SECONDS)

    async def _tell_places(self) -> bool:
        """One look at the places of the followed jobs still waiting; whether it was made.
        (Its own call, so that what it found is not held until the next tick.)"""
        waiting = {
            key: job_id
            for key, job_id in self._job_ids.items()
            if any(_waits(f) for f in self._followers.get(key, ()))
        }
        if not waiting:
            return False
        lookup = PlaceLookup(self._keys, self._queue_name, list(waiting.values()))
        try:
            async with self._control:
                found = await places(self._queue, lookup)
        except (RedisError, OSError) as exc:
            logger.warning("looking up queued jobs' places failed (%r)", exc)
            return False
        self.place_lookups += 1
        for key, job_id in waiting.items():
            followers = self._followers.get(key)
            place = found[job_id]
            if place is None or not followers:  # started, or its followers left meanwhile
                self._places.pop(key, None)
                continue
            last = self._places.get(key)
            if not is_news(place, None if last is None else last[0]):
                continue
            # One list holding one object for all: its SSE frame and chunk are made once.
            told: list[Event] = [place.event()]
            self._places[key] = (place, told)
            for follower in followers:
                if _waits(follower):
                    self._tell(follower, told)
        return True

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
        """Read points of the followers the long read in flight does not cover (they joined or
        caught up after it began, behind its read point for their stream); none between long
        reads, as the next one takes every follower.

        Only the newcomers since it began are looked at: every other follower was at or past
        its read points when it began, and a follower's cursor only moves on, except when it
        drops behind, and then it comes back as a newcomer when it has caught up. A newcomer
        the long read covers now, or that was let go or dropped behind, is forgotten.
        """
        covered = self._covered
        if covered is None:
            return {}
        points: dict[str, str] = {}
        orders: dict[str, tuple[int, int]] = {}
        waiting = []
        for follower in self._newcomers:
            if not follower.following or follower.behind or follower.ended:
                continue
            key, order = follower.key, entry_order(follower.cursor)
            start = covered.get(key)
            if start is not None and order >= entry_order(start):
                continue  # the long read in flight serves it from here on
            waiting.append(follower)
            if key not in orders or order < orders[key]:
                points[key], orders[key] = follower.cursor, order
        self._newcomers = waiting
        return points

    @staticmethod
    def _read_points(
        followers: dict[str, list[_Follower]], covered: dict[str, str] | None
    ) -> dict[str, str]:
        """Per stream, the earliest cursor of its followers (those before ``covered``'s read
        point for it, when given): one XREAD from there serves each of them."""
        points: dict[str, str] = {}
        for key, group in followers.items():
            if covered is None and len(group) == 1:  # the common case: nothing to compare
                if not group[0].behind:
                    points[key] = group[0].cursor
                continue
            start = None if covered is None else covered.get(key)
            # A follower behind reads on its own: the shared reads do not wait for it. Most
            # followers of a stream share a cursor: each is compared once, not once a follower.
            cursors = {f.cursor for f in group if not f.behind}
            if start is not None:
                limit = entry_order(start)
                cursors = {cursor for cursor in cursors if entry_order(cursor) < limit}
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
                follower.following = False
                follower.fail(error)
        if not failing:
            logger.warning("multiplexer read failed (%r); no stream fails alone, retrying", exc)
        return not failing

    def _deliver(self, reply: Any, streams: dict[str, str]) -> None:
        """Hand each follower of each stream read its entries, decoded once for all of them."""
        for raw_key, entries in reply or ():
            key = as_text(raw_key)
            read_from = entry_order(streams[key])
            group = self._followers.get(key)
            if not group:
                continue
            decoded = _decoded(entries, read_from)
            cursor, order = "", read_from  # most followers share a cursor: parsed once for them
            for follower in list(group):
                if follower.behind:
                    continue
                if follower.cursor != cursor:
                    cursor, order = follower.cursor, entry_order(follower.cursor)
                if order < read_from:
                    continue  # joined behind this read: its entries before read_from are not here
                self._offer(follower, decoded, order)
                if follower.ended:
                    self._drop(follower)  # a bad entry would otherwise come back on every read

    def _offer(
        self, follower: _Follower, decoded: _Decoded, order: tuple[int, int] | None = None
    ) -> None:
        """Queue for ``follower`` the entries after its cursor (a contiguous run from it; its
        ``order``, when the caller has it); drop its backlog instead when it would grow past the
        bound."""
        events, orders, failure = decoded
        if order is None:
            order = entry_order(follower.cursor)
        start = bisect.bisect_right(orders, order)
        batch = events[start:] if start else events
        if batch and not self._sunk(follower, batch):
            if len(follower.pending) + len(batch) > self._max_backlog:
                # Too far behind: it reads from Redis after what it took, on its own.
                self.dropped += 1
                follower.pending = []
                follower.cursor = follower.taken
                follower.behind = True
                follower.wake()
                return
            follower.pending.extend(batch)
            follower.cursor = batch[-1].cursor
            follower.ended = is_terminal(batch[-1])
            follower.wake()
        if failure is not None and not follower.ended:
            follower.fail(failure)

    def _sunk(self, follower: _Follower, batch: list[Event]) -> bool:
        """Pass ``batch`` to the follower's sink, if it has one that takes it now: only while
        its reader waits with nothing waiting for it, so that nothing it was handed before is
        still to be written (entries stay in order). A sink that raises is not used again: the
        batch goes to its reader, whose own task meets the trouble, not the shared read."""
        sink = follower.sink
        if sink is None or follower.waiter is None or follower.pending:
            return False
        try:
            if not sink(batch):
                return False
        except Exception:
            logger.exception("a follower's sink failed; its reader takes its entries")
            follower.sink = None
            return False
        self.written_directly += 1
        follower.sunk += 1
        follower.sunk_at = time.monotonic()
        last = batch[-1]
        if not last.cursor:  # a place told (not an entry): the cursor stays
            return True
        follower.cursor = follower.taken = last.cursor
        if is_terminal(last):
            follower.ended = True
            self._wake_to_end(follower)  # its reader ends the response
        return True

    def _tell(self, follower: _Follower, told: list[Event]) -> None:
        """Hand ``follower`` a ``queued`` event (not an entry: its cursor stays): to its sink
        if that takes it now, else to its reader. A place told to 2,000 readers by waking each
        held a gateway's loop for ~0.1 s."""
        if not self._sunk(follower, told):
            follower.pending.extend(told)
            follower.wake()

    def _wake_to_end(self, follower: _Follower) -> None:
        """Wake ``follower`` to end, :data:`ENDS_PER_TURN` of them per loop turn."""
        self._ending.append(follower)
        if not self._ending_due:
            asyncio.get_running_loop().call_soon(self._wake_some_to_end)
            self._ending_due = True

    def _wake_some_to_end(self) -> None:
        ending = self._ending
        try:
            for _ in range(min(ENDS_PER_TURN, len(ending))):
                ending.popleft().wake()
        finally:  # the rest are woken in the next turns, whatever happened to these
            self._ending_due = bool(ending)
            if ending:
                asyncio.get_running_loop().call_soon(self._wake_some_to_end)

    def _drop(self, follower: _Follower) -> None:
        follower.following = False
        followers = self._followers.get(follower.key, [])
        if follower in followers:
            followers.remove(follower)
        if not followers:
            self._followers.pop(follower.key, None)
            self._seen.pop(follower.key, None)
            self._job_ids.pop(follower.key, None)
            self._places.pop(follower.key, None)


class Subscription:
    """One job followed through a :class:`Multiplexer`, its events taken in batches."""

    def __init__(
        self,
        mux: Multiplexer,
        job: ChatJob,
        cursor: str,
        timeout: float | None,
        queued: bool = True,
    ) -> None:
        self._mux = mux
        self._job = job
        self._follower = _Follower(mux._keys.events(job.id), cursor, queued)
        self._timeout = mux._read_timeout if timeout is None else timeout
        self._done = False
        # On a cluster: the job's own reader, and its read in flight past a wait.
        per_job = job.events(cursor, timeout=timeout, queued=queued) if mux._per_job else None
        self._events = per_job
        self._read: asyncio.Future[Event] | None = None

    @property
    def job_id(self) -> str:
        return self._job.id

    async def __aenter__(self) -> Subscription:
        if self._events is None:
            await self._mux._join(self._job, self._follower)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def write_directly(self, sink: Callable[[list[Event]], bool]) -> None:
        """Hand entries to ``sink`` as the shared read gets them, while :meth:`next` waits with
        nothing waiting: no wake-up of the reader per entry (a gateway's event stream writes
        them to its client this way). ``sink`` returns False to decline a batch (its client
        cannot take more now): the batch waits for :meth:`next` instead. :meth:`next` then
        returns an empty list when only ``sink`` got entries before its ``wait`` ran out, and
        ends after ``sink`` got the terminal one. ``sink`` also gets the ``queued`` events of a
        job waiting in the queue (its place; no cursor: not a point to resume from). Not on a
        cluster, where each job is read alone."""
        self._follower.sink = sink

    @property
    def written_at(self) -> float:
        """When :meth:`write_directly`'s sink last took a batch (``time.monotonic()``; 0.0:
        never)."""
        return self._follower.sunk_at

    def close(self) -> None:
        """Stop following; what was waiting is let go."""
        if self._read is not None:
            self._read.cancel()  # its reader closes as the cancelled read unwinds
            self._read = None
        follower = self._follower
        follower.closed = True
        self._mux._drop(follower)
        follower.pending = []
        follower.sink = None
        follower.silence()
        follower.wake()

    async def next(self, wait: float | None) -> list[Event] | None:
        """Every event that came since the last call (at least one), in order, up to the
        terminal one; ``None`` if ``wait`` seconds pass first (``None``: no limit), or an empty
        list if by then only :meth:`write_directly`'s sink got entries.

        Raises :class:`StopAsyncIteration` after the terminal event, :class:`ReadTimeout` when
        nothing came for the read timeout and :class:`JobNotFound` if the stream disappears.
        """
        if self._events is not None:
            return await self._next_alone(self._events, wait)
        follower = self._follower
        loop = asyncio.get_running_loop()
        now = loop.time()
        give_up = None if wait is None else now + wait
        quiet_until = now + self._timeout
        sunk = seen = follower.sunk
        while True:
            if follower.pending:
                batch, follower.pending = follower.pending, []
                # A queued event is no entry (no cursor): the last entry is what was taken.
                follower.taken = next(
                    (e.cursor for e in reversed(batch) if e.cursor), follower.taken
                )
                self._done = is_terminal(batch[-1])
                return batch
            if follower.error is not None:
                error, follower.error = follower.error, None
                self._done = True
                raise error
            if self._done or follower.ended:
                raise StopAsyncIteration
            if follower.behind:
                await self._mux._catch_up(follower)
                continue
            now = loop.time()
            if now >= quiet_until:
                raise ReadTimeout(f"no event from job {self._job.id!r} for {self._timeout:g}s")
            if give_up is not None and now >= give_up:
                return None if follower.sunk == sunk else []
            # Wake up at least every block to see whether the stream is still there.
            until = min(quiet_until, now + max_block(self._mux._redis))
            if give_up is not None:
                until = min(until, give_up)
            follower.waiter = loop.create_future()
            follower.wake_at(loop, until)
            try:
                await follower.waiter
            finally:
                follower.waiter = None
            if loop.time() < until:  # an entry came (or an earlier alarm rang): look again
                continue
            if follower.sunk != seen:  # the sink got entries meanwhile: not quiet, still there
                seen = follower.sunk
                quiet_until = max(quiet_until, until + self._timeout)
                continue
            checkpoint = until < quiet_until and (give_up is None or until < give_up)
            idle = checkpoint and not follower.pending and not follower.ended
            if idle and not await self._mux._exists(self._job, follower.key):
                raise JobNotFound(self._job.id, STREAM_GONE)

    async def _next_alone(self, events: EventStream, wait: float | None) -> list[Event] | None:
        """:meth:`next` on a cluster, one event at a time from the job's own reader."""
        if self._read is None:
            self._read = asyncio.ensure_future(anext(events))
        done, _ = await asyncio.wait({self._read}, timeout=wait)
        if not done:
            return None  # the read stays in flight for the next call
        read, self._read = self._read, None
        return [read.result()]


_Decoded = tuple[list[Event], list[tuple[int, int]], Exception | None]


def _waits(follower: _Follower) -> bool:
    """Whether ``follower`` wants places, reads from the start and nothing came for it yet."""
    return (
        follower.queued and follower.cursor == "0-0" and follower.following and not follower.ended
    )


def _decoded(entries: list[Any], after: tuple[int, int]) -> _Decoded:
    """Entries after ``after``, decoded, with their orders; a bad entry ends the run and is the
    error its readers get after the events before it."""
    events: list[Event] = []
    orders: list[tuple[int, int]] = []
    for entry_id, fields in entries:
        cursor = as_text(entry_id)
        order = entry_order(cursor)
        if order <= after:
            continue
        try:
            events.append(decode_entry(cursor, fields))
        except Exception as exc:  # one bad entry fails its readers, not the others
            return events, orders, exc
        orders.append(order)
    return events, orders, None


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
