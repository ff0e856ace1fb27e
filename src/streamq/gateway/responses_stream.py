"""Answering from a job's events as a Response: its Responses events over SSE, or the Response
once it ended.

Every answer reads the job's stream from its start through a fresh
:class:`~streamq.responses.events.ResponseStream`, so every reader, on any replica, sees the
same events with the same ``sequence_number``; ``starting_after`` only skips what a reader has
seen. The head of a new response's stream is held, as the chat door's is (``door``), until its
first output or its end: a job that fails before any output gets OpenAI's HTTP status and JSON
error rather than a ``response.failed`` event.

A ``queued`` event (the job's place in the queue, or a worker's wait for admission) has no
Responses event and no sequence number: it goes out as an SSE comment,
``: queued {"reason": "queue", "ahead": 3, "eta": 12.5}``, which every SSE parser (the
``openai`` SDKs', the Vercel AI SDK's) skips, and which the chat page reads.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Mapping
from typing import Any

from starlette.responses import Response

from streamq.core import metrics
from streamq.core.events import Error, Event, Queued, is_terminal
from streamq.core.exceptions import JobNotFound, ReadTimeout
from streamq.gateway.door import EXPIRED
from streamq.gateway.errors import ApiError
from streamq.gateway.failures import failure, status_of
from streamq.gateway.fanout import Feed
from streamq.gateway.sse import HEADERS, KEEPALIVE, EventStreamResponse, frame
from streamq.gateway.state import Gateway
from streamq.job import ChatJob
from streamq.responses.events import ResponseStream
from streamq.responses.store import StoredResponse

# Events that say nothing of the answer yet: the head may wait past them.
OPENING = frozenset({"response.created", "response.queued", "response.in_progress"})


class _Follower:
    """One read of a job's events through a fresh translation; ``failed_early`` is the job's
    ``error`` when the response ended without output."""

    def __init__(self, feed: Feed, record: StoredResponse) -> None:
        self.stream = ResponseStream(record.id, record.fields)
        self.ready = self.stream.opening()  # translated, not sent yet
        self.feed = feed
        self.last: Event | None = None
        self.notes: list[bytes] = []  # SSE comments to send with the next write

    async def step(self, timeout: float | None) -> bool:
        """Read the events that came within ``timeout`` and translate them; ``False`` if none
        came."""
        batch = await self.feed.batch(timeout)
        if batch is None:
            return False
        for event in batch:
            metrics.delivered(event.cursor)
            if isinstance(event, Queued):
                self.notes.append(queued_comment(event))
                continue
            self.last = event
            self.ready += self.stream.feed(event)
        return True

    def failed_early(self) -> Error | None:
        ended_empty = self.stream.ended and not self.stream.snapshot()["output"]
        return self.last if ended_empty and isinstance(self.last, Error) else None

    def close(self) -> None:
        self.feed.close()


async def _follower(
    gateway: Gateway, job: ChatJob, record: StoredResponse, queued: bool = True
) -> _Follower:
    feed = await gateway.feed(job, queued=queued)
    await feed.start()
    return _Follower(feed, record)


async def streamed(
    gateway: Gateway,
    job: ChatJob,
    record: StoredResponse,
    *,
    hold: float | None,
    keepalive: float,
    headers: Mapping[str, str],
    starting_after: int = -1,
) -> Response:
    """The response's events as SSE after ``starting_after``; an error response instead if the
    job fails before any output within ``hold`` seconds (``None``: no wait)."""
    try:
        follower = await _follower(gateway, job, record)
    except (JobNotFound, ReadTimeout) as exc:
        raise read_failure(exc, headers) from None
    try:
        if hold is not None:
            deadline = time.monotonic() + hold
            while not follower.stream.ended and all(e["type"] in OPENING for e in follower.ready):
                wait = deadline - time.monotonic()
                if wait <= 0 or not await follower.step(wait):
                    break
        error = follower.failed_early()
        if error is not None:
            raise failure(error, headers)
    except (JobNotFound, ReadTimeout) as exc:
        follower.close()
        raise read_failure(exc, headers) from None
    except StopAsyncIteration:
        pass  # the stream ended: the translation has ended too
    except BaseException:
        follower.close()
        raise
    body = _frames(follower, keepalive, starting_after)
    return EventStreamResponse(body, headers={**HEADERS, **headers})


async def _frames(
    follower: _Follower, keepalive: float, starting_after: int
) -> AsyncIterator[bytes]:
    seen = starting_after
    try:
        while True:
            out, follower.notes = follower.notes, []  # everything ready, in one write
            for item in follower.ready:
                if item["sequence_number"] > seen:
                    seen = item["sequence_number"]
                    out.append(frame(item["type"], item))
            follower.ready = []
            if out:
                yield b"".join(out)
            if follower.stream.ended:
                return
            if not await follower.step(keepalive):
                yield KEEPALIVE
    except JobNotFound:
        yield _error_frame("expired", EXPIRED, seen)
    except ReadTimeout as exc:
        yield _error_frame("read_timeout", str(exc), seen)
    except StopAsyncIteration:
        return
    finally:
        follower.close()


def queued_comment(event: Queued) -> bytes:
    """The SSE comment that tells a reader of the response where its job waits."""
    body = {"reason": event.reason, "ahead": event.ahead, "eta": event.eta}
    if event.model is not None:
        body["model"] = event.model
    return f": queued {json.dumps(body, separators=(',', ':'))}\n\n".encode()


def _error_frame(code: str, message: str, seen: int) -> bytes:
    # Outside the translation, so after the last number it gave.
    body = {"type": "error", "code": code, "message": message, "param": None}
    return frame("error", {**body, "sequence_number": seen + 1})


async def finished(
    gateway: Gateway, job: ChatJob, record: StoredResponse, headers: Mapping[str, str]
) -> dict[str, Any]:
    """The Response once the job ended; the job's error as an :class:`ApiError` if it failed
    before any output."""
    try:
        follower = await _follower(gateway, job, record, queued=False)
    except (JobNotFound, ReadTimeout) as exc:
        raise read_failure(exc, headers) from None
    try:
        while not follower.stream.ended:
            await follower.step(None)
    except StopAsyncIteration:  # the stream ended: the translation has ended too
        pass
    except (JobNotFound, ReadTimeout) as exc:
        raise read_failure(exc, headers) from None
    finally:
        follower.close()
    error = follower.failed_early()
    if error is not None:
        raise failure(error, headers)
    return follower.stream.snapshot()


async def ended(gateway: Gateway, job: ChatJob, seconds: float) -> bool:
    """Whether the job's stream ends within ``seconds``."""
    feed = await gateway.feed(job, queued=False)
    deadline = time.monotonic() + seconds
    try:
        await feed.start()
        while (wait := deadline - time.monotonic()) > 0:
            batch = await feed.batch(wait)
            if batch and is_terminal(batch[-1]):
                return True
        return False
    except (JobNotFound, ReadTimeout, StopAsyncIteration):
        return False
    finally:
        feed.close()


def read_failure(exc: JobNotFound | ReadTimeout, headers: Mapping[str, str]) -> ApiError:
    """The error answer when the job's stream is gone or silent too long."""
    if isinstance(exc, JobNotFound):
        return ApiError(status_of("expired"), "expired", EXPIRED, headers)
    return ApiError(status_of("read_timeout"), "read_timeout", str(exc), headers)
