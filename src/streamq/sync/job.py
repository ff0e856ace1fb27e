"""The reading side, synchronous: a handle on one job, its events, text and result.

The rules live in :mod:`streamq.core.protocol`, as for :mod:`streamq.job`; this module drives
them with blocking calls.
"""

from __future__ import annotations

import time
from collections.abc import Generator, Iterator
from dataclasses import replace
from types import TracebackType
from typing import Any, cast

from redis import Redis
from redis.exceptions import RedisError

from streamq.core import protocol, scripts
from streamq.core.events import Event, as_text
from streamq.core.exceptions import JobNotFound
from streamq.core.queue_position import TICK_SECONDS, Place, PlaceLookup, is_news


class EventStream:
    """The events of a job after a cursor; iterate with ``for``, close with ``close()``.

    ``with job.events() as events: for event in events: ...`` stops the reader even when the
    loop ends early.
    """

    def __init__(
        self, job: ChatJob, after: str | None, timeout: float, queued: bool = True
    ) -> None:
        self._iterator = job._read(protocol.check_cursor(after), timeout, queued)

    def __iter__(self) -> Iterator[Event]:
        return self._iterator

    def __next__(self) -> Event:
        return next(self._iterator)

    def close(self) -> None:
        """Stop reading; safe to call more than once."""
        self._iterator.close()

    def __enter__(self) -> EventStream:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class ChatJob(protocol.JobBase[Redis]):
    """A handle on one job, as :class:`streamq.ChatJob` but blocking.

    ``for text in job`` yields the content deltas; :meth:`events` yields every event with its
    cursor; :meth:`result` waits for the end and assembles the answer.
    """

    def events(
        self, after: str | None = None, *, timeout: float | None = None, queued: bool = True
    ) -> EventStream:
        """Events after cursor ``after`` (from the start when omitted), up to the terminal one.

        While the job waits in the queue, :class:`~streamq.core.events.Queued` events without a
        cursor, as :meth:`streamq.ChatJob.events` (``queued=False``: the entries only).
        ``timeout`` bounds the wait for each next
        entry (default ``STREAMQ_READ_TIMEOUT``).
        """
        return EventStream(self, after, self._timeout(timeout), queued)

    def __iter__(self) -> Iterator[str]:
        """Content deltas of the first choice, as text: ``for chunk in job``."""
        return self.text()

    def text(self, after: str | None = None, *, timeout: float | None = None) -> Iterator[str]:
        """Content deltas of the first choice, as text, after cursor ``after``.

        Never joins two attempts: a restart after text was yielded raises
        :class:`~streamq.JobRestarted` (a restart before any text is followed silently). Raises
        :class:`~streamq.JobFailed` on ``error`` and :class:`~streamq.JobCancelled` on
        ``cancelled``.
        """
        yielded = False
        with self.events(after, timeout=timeout, queued=False) as events:
            for event in events:
                chunk = protocol.text_of(self.id, event, yielded=yielded)
                if chunk is not None:
                    yielded = True
                    yield chunk

    def result(self, *, timeout: float | None = None) -> protocol.ChatResult:
        """Wait for the job to end and return its final attempt's result."""
        builder = protocol.ResultBuilder()
        with self.events(timeout=timeout, queued=False) as events:
            for event in events:
                if (result := builder.take(self.id, event)) is not None:
                    return result
        raise AssertionError("unreachable: the event stream ends only after a terminal event")

    def cancel(self) -> protocol.CancelOutcome:
        """Ask for the job to stop; returns at once, saying what happened (as
        :meth:`streamq.ChatJob.cancel`)."""
        if not self.exists():
            raise JobNotFound(self.id)
        keys, args = protocol.cancel_call(self._keys, self.id, self._stream_ttl)
        outcome = as_text(cast(bytes, self._redis.eval(scripts.CANCEL, len(keys), *keys, *args)))
        if outcome == "cancelling":  # the workers listen on the queue's Redis
            self._redis.publish(self._keys.cancel_channel(), self.id)
        return cast(protocol.CancelOutcome, outcome)

    def status(self) -> protocol.JobStatus:
        """The job's state, attempt and, while running, whether its worker is still alive;
        while queued, the jobs ``ahead`` of it and the estimated seconds until it starts."""
        state = cast(dict[bytes, bytes], self._redis.hgetall(self._keys.state(self.id)))
        status = protocol.stored_status(state)
        if status.state == "queued":
            place = self.place()
            if place is not None:
                return replace(status, ahead=place.ahead, eta=place.eta)
            if not self.exists():
                raise JobNotFound(self.id)
        if status.state != "running":
            return status
        member = protocol.lease_member(status.attempt, self.id)
        expiry = cast(float | None, self._redis.zscore(self._keys.running(), member))
        return protocol.with_lease(status, expiry, cast(Any, self._redis.time()))

    def place(self) -> Place | None:
        """The job's place in the queue; None unless it waits there."""
        lookup = PlaceLookup(self._keys, self.queue_name, [self.id])
        with self._redis.pipeline(transaction=False) as pipe:
            for command in lookup.commands():
                pipe.execute_command(*command)  # type: ignore[no-untyped-call]
            return lookup.places(pipe.execute(raise_on_error=False))[self.id]

    def exists(self) -> bool:
        """Whether the job is known: enqueued and not yet expired."""
        return bool(self._redis.exists(self._keys.request(self.id), self._keys.events(self.id)))

    def _read(self, after: str, timeout: float, queued: bool) -> Generator[Event, None, None]:
        reader = self._reader(after, timeout, protocol.max_block(self._redis))
        if not self.exists():
            raise JobNotFound(self.id)
        if after != "0-0" and protocol.ended_at_or_before(
            after, cast(list[Any], self._redis.xrevrange(reader.key, count=1))
        ):
            return
        waiting = queued and after == "0-0"  # nothing read yet: the job may wait in the queue
        told: Place | None = None
        while not reader.ended:
            streams, block_ms = reader.next_read()
            try:
                reply = None
                if waiting:  # a place only while its stream is still empty
                    reply = self._redis.xread(streams, count=protocol.READ_BATCH)
                    if not reply:
                        place = self.place()
                        if is_news(place, told):
                            told = place
                            yield cast(Place, place).event()
                    block_ms = min(block_ms, int(TICK_SECONDS * 1000))
                if not reply:
                    reply = self._redis.xread(streams, count=protocol.READ_BATCH, block=block_ms)
                if not reply and not self.exists():
                    raise JobNotFound(self.id, protocol.STREAM_GONE)
            except RedisError as exc:
                time.sleep(reader.failed(exc))
                continue
            for event in reader.received(reply):
                waiting = False
                yield event
