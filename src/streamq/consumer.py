"""The reading side: a handle on one job, its events, its text and its result."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Literal, cast

from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
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
CURSOR_PATTERN = re.compile(r"^\d+-\d+$")
READ_BATCH = 1000
# Longest single XREAD BLOCK: between calls the reader re-checks that the job still exists.
MAX_BLOCK_SECONDS = 5.0
RECONNECT_BACKOFF = 0.05
MAX_RECONNECT_BACKOFF = 2.0


def check_cursor(cursor: str | None) -> str:
    """The stream id to read after: ``"0-0"`` for the beginning, else a validated entry id."""
    if cursor is None or cursor in ("", "0", "0-0"):
        return "0-0"
    if not isinstance(cursor, str) or not CURSOR_PATTERN.match(cursor):
        raise InvalidCursor(f"invalid cursor {cursor!r}: expected an entry id like 1700000000000-0")
    return cursor


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
                if isinstance(event, Delta) and event.choice == 0:
                    yielded = True
                    yield event.text
                elif isinstance(event, Reset) and yielded:
                    raise JobRestarted(self.id, event.attempt, event.cursor)
                else:
                    _raise_if_failed(self.id, event)

    async def result(self, *, timeout: float | None = None) -> ChatResult:
        """Wait for the job to end and return its final attempt's result."""
        builder = _ResultBuilder()
        async with self.events(timeout=timeout) as events:
            async for event in events:
                _raise_if_failed(self.id, event)
                if isinstance(event, Reset | Start):
                    builder = _ResultBuilder()  # a new attempt starts over
                elif isinstance(event, Done):
                    return builder.finish(self.id, event)
                else:
                    builder.add(event)
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
        entry = encode(Cancelled(reason="cancelled before it started"), attempt=0, seq=0)
        keys = [self._keys.state(self.id), self._keys.events(self.id)]
        args = [str(self._stream_ttl), self._keys.cancel_channel(), self.id]
        args += [item for pair in entry.items() for item in pair]
        outcome = await self._redis.eval(scripts.CANCEL, len(keys), *keys, *args)  # type: ignore[misc]
        return cast(CancelOutcome, as_text(outcome))

    async def status(self) -> JobStatus:
        """The job's state, attempt and, while running, whether its worker is still alive."""
        state = cast(dict[bytes, bytes], await self._redis.hgetall(self._keys.state(self.id)))  # type: ignore[misc]
        attempt = int(state.get(b"attempt", 0))
        terminal = state.get(b"terminal")
        if terminal:
            return JobStatus(cast(Any, terminal.decode()), attempt)
        if not attempt:
            if not await self.exists():
                raise JobNotFound(self.id)
            return JobStatus("queued", 0)
        expiry = await self._redis.zscore(self._keys.running(), f"{attempt}:{self.id}")
        seconds, microseconds = await self._redis.time()
        now_ms = int(seconds) * 1000 + int(microseconds) // 1000
        remaining = None if expiry is None else (float(expiry) - now_ms) / 1000
        stalled = remaining is None or remaining <= 0
        return JobStatus("running", attempt, stalled=stalled, lease_remaining=remaining)

    async def exists(self) -> bool:
        """Whether the job is known: enqueued and not yet expired."""
        keys = (self._keys.request(self.id), self._keys.events(self.id))
        return bool(await self._redis.exists(*keys))

    async def _read(self, after: str, timeout: float) -> AsyncIterator[Event]:
        key = self._keys.events(self.id)
        if not await self.exists():
            raise JobNotFound(self.id)
        if await self._ended_by(key, after):
            return
        last, idle, backoff = after, 0.0, RECONNECT_BACKOFF
        while True:
            if idle >= timeout:
                raise ReadTimeout(f"no event from job {self.id!r} for {timeout:g}s")
            block = min(timeout - idle, self._max_block)
            began = time.monotonic()
            try:
                reply = await self._redis.xread(
                    {key: last}, count=READ_BATCH, block=max(1, int(block * 1000))
                )
                if not reply and not await self.exists():
                    raise JobNotFound(self.id, "its stream is gone: expired, or Redis lost it")
            except (RedisConnectionError, RedisTimeoutError):
                # Redis restarted or the link dropped: resume from the cursor, no gap, no dupe.
                await asyncio.sleep(backoff)
                idle += time.monotonic() - began
                backoff = min(backoff * 2, MAX_RECONNECT_BACKOFF)
                continue
            backoff = RECONNECT_BACKOFF
            if not reply:
                idle += time.monotonic() - began
                continue
            idle = 0.0
            for entry_id, fields in reply[0][1]:
                last = as_text(entry_id)
                event = decode_entry(last, fields)
                yield event
                if is_terminal(event):
                    return

    async def _ended_by(self, key: str, cursor: str) -> bool:
        return await ended_by(self._redis, key, cursor)

    @property
    def _max_block(self) -> float:
        return max_block(self._redis)


async def ended_by(redis: Redis, key: str, cursor: str) -> bool:
    """Whether the stream's terminal entry is at or before ``cursor`` (nothing to wait for)."""
    if cursor == "0-0":
        return False
    newest = await redis.xrevrange(key, count=1)
    if not newest:
        return False
    entry_id, fields = newest[0]
    ended = as_text(fields.get(b"type", b"")) in TERMINAL_TYPES
    return ended and entry_order(cursor) >= entry_order(as_text(entry_id))


def max_block(redis: Redis) -> float:
    """The longest XREAD BLOCK for ``redis``: a client-side socket timeout would cut a longer
    one short with an error."""
    socket_timeout = redis.connection_pool.connection_kwargs.get("socket_timeout")
    if socket_timeout:
        return max(0.001, min(MAX_BLOCK_SECONDS, float(socket_timeout) * 0.8))
    return MAX_BLOCK_SECONDS


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
