"""The reading side: a handle on one job, its events, its text and its result.

The rules (cursors, the way through a stream, status, results) live in
:mod:`streamq.core.protocol`; this module drives them with ``await``.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import replace
from types import TracebackType
from typing import Any, cast

from redis.asyncio import Redis
from redis.exceptions import RedisError

from streamq.core import protocol, scripts
from streamq.core.events import Event, as_text
from streamq.core.exceptions import JobNotFound
from streamq.core.keys import Keys
from streamq.core.protocol import (
    CancelOutcome,
    ChatResult,
    ChoiceResult,
    JobStatus,
    ToolCall,
    check_cursor,
)
from streamq.core.queue_position import TICK_SECONDS, Place, PlaceLookup, is_news

# Results and status are defined in the protocol; they are imported from here too.
__all__ = [
    "CancelOutcome",
    "ChatJob",
    "ChatResult",
    "ChoiceResult",
    "EventStream",
    "JobStatus",
    "ToolCall",
    "check_cursor",
    "ended_by",
    "places",
]


class EventStream:
    """The events of a job after a cursor; iterate with ``async for``, close with ``aclose()``.

    Used as ``async with job.events() as events: async for event in events: ...`` the reader
    is released even when the loop stops early.
    """

    def __init__(
        self, job: ChatJob, after: str | None, timeout: float, queued: bool = True
    ) -> None:
        self._iterator = job._read(check_cursor(after), timeout, queued)

    def __aiter__(self) -> AsyncIterator[Event]:
        return self._iterator

    async def __anext__(self) -> Event:
        return await self._iterator.__anext__()

    async def aclose(self) -> None:
        """Stop reading; safe to call more than once."""
        await self._iterator.aclose()  # type: ignore[attr-defined]

    async def __aenter__(self) -> EventStream:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()


class ChatJob(protocol.JobBase[Redis]):
    """A handle on one job, from the process that enqueued it or any other.

    ``async for text in job`` yields the content deltas; :meth:`events` yields every event
    with its cursor; :meth:`result` waits for the end and assembles the answer.
    """

    def __init__(
        self,
        redis: Redis,
        keys: Keys,
        job_id: str,
        *,
        read_timeout: float,
        stream_ttl: int = 86_400,
        streams: Redis | None = None,
        queue_name: str | None = None,
    ) -> None:
        """``redis`` holds the queue and the job's request; ``streams`` (when the job streams
        live elsewhere, ``STREAMQ_STREAMS_URL``) its stream and state; ``queue_name`` is the
        queue it waits in (``STREAMQ_QUEUE``; the prefix's default queue when None)."""
        super().__init__(
            redis, keys, job_id, read_timeout=read_timeout, stream_ttl=stream_ttl,
            queue_name=queue_name,
        )  # fmt: skip
        self._streams = redis if streams is None else streams

    def events(
        self, after: str | None = None, *, timeout: float | None = None, queued: bool = True
    ) -> EventStream:
        """Events after cursor ``after`` (from the start when omitted), up to the terminal one.

        While the job waits in the queue (read from the start, its stream still empty), a
        :class:`~streamq.core.events.Queued` event without a cursor comes each time its place
        changes (looked up about once a second); ``queued=False`` gives the stream's entries
        only. ``timeout`` bounds the wait for each next entry (default
        ``STREAMQ_READ_TIMEOUT``).
        """
        return EventStream(self, after, self._timeout(timeout), queued)

    def __aiter__(self) -> AsyncIterator[str]:
        """Content deltas of the first choice, as text: ``async for chunk in job``."""
        return self.text()

    async def text(
        self, after: str | None = None, *, timeout: float | None = None
    ) -> AsyncIterator[str]:
        """Content deltas of the first choice, as text, after cursor ``after``.

        Never joins two attempts: a restart after text was yielded raises :class:`JobRestarted`
        (a restart before any text is followed silently). Raises :class:`JobFailed` on
        ``error`` and :class:`JobCancelled` on ``cancelled``.
        """
        yielded = False
        async with self.events(after, timeout=timeout, queued=False) as events:
            async for event in events:
                chunk = protocol.text_of(self.id, event, yielded=yielded)
                if chunk is not None:
                    yielded = True
                    yield chunk

    async def result(self, *, timeout: float | None = None) -> ChatResult:
        """Wait for the job to end and return its final attempt's result."""
        builder = protocol.ResultBuilder()
        async with self.events(timeout=timeout, queued=False) as events:
            async for event in events:
                if (result := builder.take(self.id, event)) is not None:
                    return result
        raise AssertionError("unreachable: the event stream ends only after a terminal event")

    async def cancel(self) -> CancelOutcome:
        """Ask for the job to stop; returns at once, saying what happened.

        ``"cancelled"``: it had not started and never will (its stream now ends with
        ``cancelled``). ``"cancelling"``: a worker is running it; the worker closes the upstream
        stream and writes ``cancelled`` (a worker that picks it up later does the same).
        ``"already_done"``, ``"already_error"``, ``"already_cancelled"``: it had ended; nothing
        changed.
        """
        if not await self.exists():
            raise JobNotFound(self.id)
        keys, args = protocol.cancel_call(self._keys, self.id, self._stream_ttl)
        outcome = as_text(await self._streams.eval(scripts.CANCEL, len(keys), *keys, *args))  # type: ignore[misc]
        if outcome == "cancelling":  # the workers listen on the queue's Redis
            await self._redis.publish(self._keys.cancel_channel(), self.id)
        return cast(CancelOutcome, outcome)

    async def status(self) -> JobStatus:
        """The job's state, attempt and, while running, whether its worker is still alive;
        while queued, the jobs ``ahead`` of it and the estimated seconds until it starts."""
        status = protocol.stored_status(await self._streams.hgetall(self._keys.state(self.id)))  # type: ignore[misc]
        if status.state == "queued":
            place = await self.place()
            if place is not None:
                return replace(status, ahead=place.ahead, eta=place.eta)
            if not await self.exists():
                raise JobNotFound(self.id)
        if status.state != "running":
            return status
        member = protocol.lease_member(status.attempt, self.id)
        expiry = await self._redis.zscore(self._keys.running(), member)
        return protocol.with_lease(status, expiry, await self._redis.time())

    async def place(self) -> Place | None:
        """The job's place in the queue; None unless it waits there."""
        return (await places(self._redis, PlaceLookup(self._keys, self.queue_name, [self.id])))[
            self.id
        ]

    async def last_entry(self) -> tuple[str, str] | None:
        """The cursor and type of the newest entry of the job's stream; None while it has none."""
        newest = await self._streams.xrevrange(self._keys.events(self.id), count=1)
        if not newest:
            return None
        entry_id, fields = newest[0]
        return as_text(entry_id), as_text(fields.get(b"type", b""))

    async def exists(self) -> bool:
        """Whether the job is known: enqueued and not yet expired."""
        if await self._redis.exists(self._keys.request(self.id)):
            return True
        return bool(await self._streams.exists(self._keys.events(self.id)))

    async def _read(self, after: str, timeout: float, queued: bool) -> AsyncIterator[Event]:
        reader = self._reader(after, timeout, protocol.max_block(self._streams))
        if not await self.exists():
            raise JobNotFound(self.id)
        if await ended_by(self._streams, reader.key, after):
            return
        waiting = queued and after == "0-0"  # nothing read yet: the job may wait in the queue
        told: Place | None = None
        while not reader.ended:
            streams, block_ms = reader.next_read()
            try:
                reply = None
                if waiting:  # a place only while its stream is still empty
                    reply = await self._streams.xread(streams, count=protocol.READ_BATCH)
                    if not reply:
                        place = await self.place()
                        if is_news(place, told):
                            told = place
                            yield cast(Place, place).event()
                    block_ms = min(block_ms, int(TICK_SECONDS * 1000))
                if not reply:
                    reply = await self._streams.xread(
                        streams, count=protocol.READ_BATCH, block=block_ms
                    )
                if not reply and not await self.exists():
                    raise JobNotFound(self.id, protocol.STREAM_GONE)
            except RedisError as exc:
                await asyncio.sleep(reader.failed(exc))
                continue
            for event in reader.received(reply):
                waiting = False
                yield event


async def places(redis: Redis, lookup: PlaceLookup) -> dict[str, Place | None]:
    """Run ``lookup`` on the queue's Redis in one round trip: each job's place. A refused
    command leaves the places it needs unknown (logged once), never fails the caller."""
    async with redis.pipeline(transaction=False) as pipe:
        for command in lookup.commands():
            pipe.execute_command(*command)
        replies: list[Any] = await pipe.execute(raise_on_error=False)
    return lookup.places(replies)


async def ended_by(redis: Redis, key: str, cursor: str) -> bool:
    """Whether the stream's terminal entry is at or before ``cursor`` (nothing to wait for)."""
    return cursor != "0-0" and protocol.ended_at_or_before(
        cursor, await redis.xrevrange(key, count=1)
    )
