"""The reading side, synchronous: a handle on one job, its events, text and result."""

from __future__ import annotations

import time
from collections.abc import Generator, Iterator
from types import TracebackType
from typing import Any, cast

from redis import Redis
from redis.exceptions import RedisError

from streamq import scripts
from streamq.consumer import (
    READ_BATCH,
    STREAM_GONE,
    CancelOutcome,
    ChatResult,
    JobStatus,
    ReadWait,
    _ResultBuilder,
    cancel_call,
    check_cursor,
    ended_at_or_before,
    max_block,
    read_interrupted,
    stored_status,
    text_of,
    with_lease,
)
from streamq.events import Event, as_text, decode_entry, is_terminal
from streamq.exceptions import JobNotFound
from streamq.keys import Keys


class EventStream:
    """The events of a job after a cursor; iterate with ``for``, close with ``close()``.

    ``with job.events() as events: for event in events: ...`` stops the reader even when the
    loop ends early.
    """

    def __init__(self, job: ChatJob, after: str | None, timeout: float) -> None:
        self._iterator = job._read(check_cursor(after), timeout)

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


class ChatJob:
    """A handle on one job, as :class:`streamq.ChatJob` but blocking.

    ``for text in job`` yields the content deltas; :meth:`events` yields every event with its
    cursor; :meth:`result` waits for the end and assembles the answer.
    """

    def __init__(
        self,
        redis: Redis,
        keys: Keys,
        job_id: str,
        *,
        read_timeout: float,
        stream_ttl: int = 86_400,
    ) -> None:
        self.id = job_id
        self._redis = redis
        self._keys = keys
        self._read_timeout = read_timeout
        self._stream_ttl = stream_ttl

    def __repr__(self) -> str:
        return f"ChatJob(id={self.id!r})"

    def events(self, after: str | None = None, *, timeout: float | None = None) -> EventStream:
        """Events after cursor ``after`` (from the start when omitted), up to the terminal one.

        ``timeout`` bounds the wait for each next event (default ``STREAMQ_READ_TIMEOUT``).
        """
        return EventStream(self, after, self._read_timeout if timeout is None else timeout)

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
        with self.events(after, timeout=timeout) as events:
            for event in events:
                chunk = text_of(self.id, event, yielded=yielded)
                if chunk is not None:
                    yielded = True
                    yield chunk

    def result(self, *, timeout: float | None = None) -> ChatResult:
        """Wait for the job to end and return its final attempt's result."""
        builder = _ResultBuilder()
        with self.events(timeout=timeout) as events:
            for event in events:
                if (result := builder.take(self.id, event)) is not None:
                    return result
        raise AssertionError("unreachable: the event stream ends only after a terminal event")

    def cancel(self) -> CancelOutcome:
        """Ask for the job to stop; returns at once, saying what happened (as
        :meth:`streamq.ChatJob.cancel`)."""
        if not self.exists():
            raise JobNotFound(self.id)
        keys, args = cancel_call(self._keys, self.id, self._stream_ttl)
        outcome = as_text(cast(bytes, self._redis.eval(scripts.CANCEL, len(keys), *keys, *args)))
        if outcome == "cancelling":  # the workers listen on the queue's Redis
            self._redis.publish(self._keys.cancel_channel(), self.id)
        return cast(CancelOutcome, outcome)

    def status(self) -> JobStatus:
        """The job's state, attempt and, while running, whether its worker is still alive."""
        state = cast(dict[bytes, bytes], self._redis.hgetall(self._keys.state(self.id)))
        status = stored_status(state)
        if status.state == "queued" and not self.exists():
            raise JobNotFound(self.id)
        if status.state != "running":
            return status
        expiry = self._redis.zscore(self._keys.running(), f"{status.attempt}:{self.id}")
        return with_lease(status, cast(float | None, expiry), cast(Any, self._redis.time()))

    def exists(self) -> bool:
        """Whether the job is known: enqueued and not yet expired."""
        return bool(self._redis.exists(self._keys.request(self.id), self._keys.events(self.id)))

    def _read(self, after: str, timeout: float) -> Generator[Event, None, None]:
        key = self._keys.events(self.id)
        if not self.exists():
            raise JobNotFound(self.id)
        if after != "0-0" and ended_at_or_before(
            after, cast(list[Any], self._redis.xrevrange(key, count=1))
        ):
            return
        last, wait = after, ReadWait(self.id, timeout, max_block(self._redis))
        while True:
            block_ms = wait.next_block_ms()
            try:
                reply = cast(
                    list[Any], self._redis.xread({key: last}, count=READ_BATCH, block=block_ms)
                )
                if not reply and not self.exists():
                    raise JobNotFound(self.id, STREAM_GONE)
            except RedisError as exc:
                if not read_interrupted(exc):
                    raise
                # Redis restarted, the link dropped, or another client ended the read: resume
                # from the cursor, no gap, no dupe.
                time.sleep(wait.link_failed())
                continue
            if not wait.answered(bool(reply)):
                continue
            for entry_id, fields in reply[0][1]:
                last = as_text(entry_id)
                event = decode_entry(last, fields)
                yield event
                if is_terminal(event):
                    return
