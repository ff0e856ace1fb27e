"""The reading side: a handle on one job, its events, its text and its result."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field, replace
from types import TracebackType
from typing import Any, Literal, cast

from redis import Redis as SyncRedis
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from streamq import scripts
from streamq.events import (
    TERMINAL_TYPES,
    Cancelled,
    Delta,
    Done,
    Error,
    Event,
    Reasoning,
    Refusal,
    Reset,
    Start,
    ToolCallDelta,
    as_text,
    decode_entry,
    encode,
    entry_order,
    is_terminal,
)
from streamq.exceptions import (
    InvalidCursor,
    JobCancelled,
    JobFailed,
    JobNotFound,
    JobRestarted,
    ReadTimeout,
)
from streamq.keys import Keys

CancelOutcome = Literal[
    "cancelled", "cancelling", "already_done", "already_error", "already_cancelled"
]
# Both parts of an entry id are unsigned 64-bit integers: at most 20 ASCII digits each (``\d``
# would also take other scripts' digits, which Redis refuses).
CURSOR_PATTERN = re.compile(r"([0-9]{1,20})-([0-9]{1,20})")
MAX_ID_PART = 2**64 - 1
READ_BATCH = 1000
# Longest single XREAD BLOCK: between calls the reader re-checks that the job still exists.
MAX_BLOCK_SECONDS = 5.0
RECONNECT_BACKOFF = 0.05
MAX_RECONNECT_BACKOFF = 2.0
STREAM_GONE = "its stream is gone: expired, or Redis lost it"


def check_cursor(cursor: str | None) -> str:
    """The stream id to read after: ``"0-0"`` for the beginning, else a validated entry id.

    Raises :class:`InvalidCursor` unless both parts are decimal integers in 0..2^64-1, the
    range Redis accepts, so a bad cursor fails here and never as a Redis error mid-stream.
    """
    if cursor is None or cursor in ("", "0", "0-0"):
        return "0-0"
    # fullmatch: `$` would let a trailing newline through. The pattern bounds the length
    # before int() sees it.
    match = CURSOR_PATTERN.fullmatch(cursor) if isinstance(cursor, str) else None
    if match is None or any(int(part) > MAX_ID_PART for part in match.groups()):
        shown = repr(cursor)
        if len(shown) > 60:  # the message may reach logs and HTTP responses
            shown = f"{shown[:40]}... ({len(shown)} characters)"
        raise InvalidCursor(
            f"invalid cursor {shown}: expected an entry id like 1700000000000-0, "
            "two integers below 2^64"
        )
    return f"{int(match[1])}-{int(match[2])}"  # canonical: no leading zeros


class EventStream:
    """The events of a job after a cursor; iterate with ``async for``, close with ``aclose()``.

    Used as ``async with job.events() as events: async for event in events: ...`` the reader
    is released even when the loop stops early.
    """

    def __init__(self, job: ChatJob, after: str | None, timeout: float) -> None:
        self._iterator = job._read(check_cursor(after), timeout)

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


@dataclass(frozen=True)
class JobStatus:
    """Where a job stands. ``stalled``: running, but its worker's lease has run out (no
    heartbeat): the worker is gone or cut off, and another will start the job again soon."""

    state: Literal["queued", "running", "done", "error", "cancelled"]
    attempt: int
    stalled: bool = False
    lease_remaining: float | None = None


@dataclass
class ToolCall:
    """A tool call assembled from its fragments."""

    index: int
    id: str | None = None
    name: str | None = None
    arguments: str = ""


@dataclass
class ChoiceResult:
    """The assembled output of one choice."""

    index: int
    text: str = ""
    reasoning: str = ""
    refusal: str | None = None
    tool_calls: list[ToolCall] = field(default_factory=list)
    finish_reason: str | None = None


@dataclass
class ChatResult:
    """A finished job: its text, finish reason, usage and tool calls (of the final attempt)."""

    job_id: str
    choices: list[ChoiceResult]
    usage: dict[str, Any] | None
    model: str | None
    attempt: int
    cursor: str

    @property
    def text(self) -> str:
        """The content of the first choice."""
        return self.choices[0].text

    @property
    def finish_reason(self) -> str | None:
        """The first choice's finish reason (``stop``, ``length``, ``tool_calls``, ...)."""
        return self.choices[0].finish_reason

    @property
    def tool_calls(self) -> list[ToolCall]:
        """The first choice's tool calls."""
        return self.choices[0].tool_calls

    @property
    def reasoning(self) -> str:
        """The first choice's reasoning text, where the provider sent it."""
        return self.choices[0].reasoning


class ChatJob:
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
    ) -> None:
        """``redis`` holds the queue and the job's request; ``streams`` (when the job streams
        live elsewhere, ``STREAMQ_STREAMS_URL``) its stream and state."""
        self.id = job_id
        self._redis = redis
        self._streams = redis if streams is None else streams
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
        async with self.events(after, timeout=timeout) as events:
            async for event in events:
                chunk = text_of(self.id, event, yielded=yielded)
                if chunk is not None:
                    yielded = True
                    yield chunk

    async def result(self, *, timeout: float | None = None) -> ChatResult:
        """Wait for the job to end and return its final attempt's result."""
        builder = _ResultBuilder()
        async with self.events(timeout=timeout) as events:
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
        keys, args = cancel_call(self._keys, self.id, self._stream_ttl)
        outcome = as_text(await self._streams.eval(scripts.CANCEL, len(keys), *keys, *args))  # type: ignore[misc]
        if outcome == "cancelling":  # the workers listen on the queue's Redis
            await self._redis.publish(self._keys.cancel_channel(), self.id)
        return cast(CancelOutcome, outcome)

    async def status(self) -> JobStatus:
        """The job's state, attempt and, while running, whether its worker is still alive."""
        status = stored_status(await self._streams.hgetall(self._keys.state(self.id)))  # type: ignore[misc]
        if status.state == "queued" and not await self.exists():
            raise JobNotFound(self.id)
        if status.state != "running":
            return status
        expiry = await self._redis.zscore(self._keys.running(), f"{status.attempt}:{self.id}")
        return with_lease(status, expiry, await self._redis.time())

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

    async def _read(self, after: str, timeout: float) -> AsyncIterator[Event]:
        key = self._keys.events(self.id)
        if not await self.exists():
            raise JobNotFound(self.id)
        if await self._ended_by(key, after):
            return
        last, wait = after, ReadWait(self.id, timeout, self._max_block)
        while True:
            block_ms = wait.next_block_ms()
            try:
                reply = await self._streams.xread({key: last}, count=READ_BATCH, block=block_ms)
                if not reply and not await self.exists():
                    raise JobNotFound(self.id, STREAM_GONE)
            except RedisError as exc:
                if not read_interrupted(exc):
                    raise
                # Redis restarted, the link dropped, or another client ended the read: resume
                # from the cursor, no gap, no dupe.
                await asyncio.sleep(wait.link_failed())
                continue
            if not wait.answered(bool(reply)):
                continue
            for entry_id, fields in reply[0][1]:
                last = as_text(entry_id)
                event = decode_entry(last, fields)
                yield event
                if is_terminal(event):
                    return

    async def _ended_by(self, key: str, cursor: str) -> bool:
        return await ended_by(self._streams, key, cursor)

    @property
    def _max_block(self) -> float:
        return max_block(self._streams)


async def ended_by(redis: Redis, key: str, cursor: str) -> bool:
    """Whether the stream's terminal entry is at or before ``cursor`` (nothing to wait for)."""
    return cursor != "0-0" and ended_at_or_before(cursor, await redis.xrevrange(key, count=1))


def ended_at_or_before(cursor: str, newest: list[Any]) -> bool:
    """Whether ``newest`` (``XREVRANGE key + - COUNT 1``) is a terminal entry at or before
    ``cursor``."""
    if not newest:
        return False
    entry_id, fields = newest[0]
    ended = as_text(fields.get(b"type", b"")) in TERMINAL_TYPES
    return ended and entry_order(cursor) >= entry_order(as_text(entry_id))


def read_interrupted(exc: BaseException) -> bool:
    """Whether a failed read should resume from its cursor: the link dropped or timed out, or
    another client ended the blocked read (``CLIENT UNBLOCK <id> ERROR`` answers it with an
    ``UNBLOCKED`` error)."""
    if isinstance(exc, RedisConnectionError | RedisTimeoutError):
        return True
    return isinstance(exc, ResponseError) and str(exc).startswith("UNBLOCKED")


def max_block(redis: Redis | SyncRedis) -> float:
    """The longest XREAD BLOCK for ``redis``: a client-side socket timeout would cut a longer
    one short with an error."""
    pool = getattr(redis, "connection_pool", None)  # a cluster client has one per node
    kwargs = pool.connection_kwargs if pool is not None else redis.get_connection_kwargs()
    socket_timeout = kwargs.get("socket_timeout")
    if socket_timeout:
        return max(0.001, min(MAX_BLOCK_SECONDS, float(socket_timeout) * 0.8))
    return MAX_BLOCK_SECONDS


class ReadWait:
    """A reader's wait for the next event: how long each XREAD may block, the reconnect
    backoff, and :class:`ReadTimeout` after ``timeout`` seconds without an event."""

    def __init__(self, job_id: str, timeout: float, max_block: float) -> None:
        self._job_id, self._timeout, self._max_block = job_id, timeout, max_block
        self._idle, self._began, self._backoff = 0.0, 0.0, RECONNECT_BACKOFF

    def next_block_ms(self) -> int:
        """Milliseconds the next read may block; raises :class:`ReadTimeout` once time is up."""
        if self._idle >= self._timeout:
            raise ReadTimeout(f"no event from job {self._job_id!r} for {self._timeout:g}s")
        self._began = time.monotonic()
        return max(1, int(min(self._timeout - self._idle, self._max_block) * 1000))

    def link_failed(self) -> float:
        """Seconds to pause before reading again after the link dropped (doubling each time)."""
        delay, self._backoff = self._backoff, min(self._backoff * 2, MAX_RECONNECT_BACKOFF)
        self._idle += time.monotonic() - self._began + delay
        return delay

    def answered(self, with_events: bool) -> bool:
        """Count a read that Redis answered; returns ``with_events``."""
        self._backoff = RECONNECT_BACKOFF
        self._idle = 0.0 if with_events else self._idle + time.monotonic() - self._began
        return with_events


def text_of(job_id: str, event: Event, *, yielded: bool) -> str | None:
    """The text ``event`` adds to ``for chunk in job``, or None. Raises :class:`JobFailed`,
    :class:`JobCancelled`, and :class:`JobRestarted` on a restart after text was ``yielded``."""
    if isinstance(event, Delta) and event.choice == 0:
        return event.text
    if isinstance(event, Reset) and yielded:
        raise JobRestarted(job_id, event.attempt, event.cursor)
    _raise_if_failed(job_id, event)
    return None


def cancel_call(keys: Keys, job_id: str, stream_ttl: int) -> tuple[list[str], list[str]]:
    """KEYS and ARGV of :data:`scripts.CANCEL` for ``job_id``."""
    entry = encode(Cancelled(reason="cancelled before it started"), attempt=0, seq=0)
    args = [str(stream_ttl), keys.cancel_channel(), job_id]
    args += [item for pair in entry.items() for item in pair]
    return [keys.state(job_id), keys.events(job_id)], args


def stored_status(state: dict[bytes, bytes]) -> JobStatus:
    """The status the state hash tells: ended, queued (attempt 0: the job may also be unknown)
    or running (the caller adds the lease, :func:`with_lease`)."""
    attempt = int(state.get(b"attempt", 0))
    terminal = state.get(b"terminal")
    if terminal:
        return JobStatus(cast(Any, terminal.decode()), attempt)
    return JobStatus("running", attempt) if attempt else JobStatus("queued", 0)


def with_lease(running: JobStatus, expiry: float | None, redis_time: tuple[int, int]) -> JobStatus:
    """A running status with its lease: ``expiry`` (ms) from the running set, Redis ``TIME``."""
    seconds, microseconds = redis_time
    now_ms = int(seconds) * 1000 + int(microseconds) // 1000
    remaining = None if expiry is None else (float(expiry) - now_ms) / 1000
    stalled = remaining is None or remaining <= 0
    return replace(running, stalled=stalled, lease_remaining=remaining)


def _raise_if_failed(job_id: str, event: Event) -> None:
    if isinstance(event, Error):
        raise JobFailed(job_id, event)
    if isinstance(event, Cancelled):
        raise JobCancelled(job_id, event)


class _ResultBuilder:
    """Assembles one attempt's events into choices."""

    def __init__(self) -> None:
        self.choices: dict[int, ChoiceResult] = {}
        self.calls: dict[tuple[int, int], ToolCall] = {}

    def take(self, job_id: str, event: Event) -> ChatResult | None:
        """Add the next event of the stream; the result once it is ``done``. Raises
        :class:`JobFailed` or :class:`JobCancelled` when the job ended so."""
        _raise_if_failed(job_id, event)
        if isinstance(event, Reset | Start):
            self.choices, self.calls = {}, {}  # a new attempt starts over
        elif isinstance(event, Done):
            return self.finish(job_id, event)
        else:
            self.add(event)
        return None

    def add(self, event: Event) -> None:
        index = getattr(event, "choice", 0)
        choice = self.choices.setdefault(index, ChoiceResult(index))
        match event:
            case Delta():
                choice.text += event.text
            case Reasoning():
                choice.reasoning += event.text
            case Refusal():
                choice.refusal = (choice.refusal or "") + event.text
            case ToolCallDelta():
                call = self.calls.get((index, event.index))
                if call is None:
                    call = self.calls[index, event.index] = ToolCall(event.index)
                    choice.tool_calls.append(call)
                call.id = event.id or call.id
                call.name = event.name or call.name
                call.arguments += event.arguments

    def finish(self, job_id: str, done: Done) -> ChatResult:
        for i, reason in enumerate(done.finish_reasons or [done.finish_reason]):
            self.choices.setdefault(i, ChoiceResult(i)).finish_reason = reason
        for choice in self.choices.values():
            choice.tool_calls.sort(key=lambda call: call.index)
        return ChatResult(
            job_id=job_id,
            choices=[self.choices[i] for i in sorted(self.choices)] or [ChoiceResult(0)],
            usage=done.usage,
            model=done.model,
            attempt=done.attempt,
            cursor=done.cursor,
        )
