"""Answering a door request from its job's events: streamed, with the response's head held
until the first chunk, or as one ``chat.completion``.

A streamed answer's head waits (``STREAMQ_GATEWAY_HEADER_HOLD``) for the job's first text or
tool call, or its end, so a job that fails before any text gets OpenAI's answer to a failed
request: its HTTP status and a JSON error. A job still silent after the hold gets a 200 head
and keep-alives; a failure after that can only be an error frame.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Mapping

from starlette.responses import JSONResponse, Response

from streamq.core import metrics
from streamq.core.events import (
    TERMINAL_TYPES,
    Cancelled,
    Delta,
    Done,
    Error,
    Event,
    Reasoning,
    Refusal,
    ToolCallDelta,
)
from streamq.core.exceptions import JobNotFound, ReadTimeout
from streamq.gateway.chunks import ChunkWriter
from streamq.gateway.completion import CompletionBuilder
from streamq.gateway.errors import ApiError
from streamq.gateway.failures import failure, status_of
from streamq.gateway.fanout import Feed
from streamq.gateway.sse import HEADERS, KEEPALIVE, EventStreamResponse
from streamq.gateway.state import Gateway
from streamq.job import ChatJob

EXPIRED = "the job's stream is gone: expired, or Redis lost it"
FIRST_CHUNK = (Delta, Reasoning, Refusal, ToolCallDelta)


async def streamed(
    gateway: Gateway,
    job: ChatJob,
    writer: ChunkWriter,
    hold: float | None,
    keepalive: float,
    headers: Mapping[str, str],
) -> Response:
    """The streamed answer: an error response if the job failed before its first chunk (within
    ``hold`` seconds), else the chunks."""
    # Attempts before the current one are over: a client replaying a finished job (the same
    # Idempotency-Key) gets the final attempt's answer, not the start of an abandoned one.
    writer.floor = (await job.status()).attempt
    feed = await gateway.feed(job, queued=False)  # chat chunks have no place
    try:
        await feed.start()
        first = await _first_chunk(feed, writer, hold)
    except (JobNotFound, ReadTimeout) as exc:
        feed.close()
        raise _read_failure(exc, headers) from None
    except StopAsyncIteration:
        first = None  # the feed ended: nothing more, the chunks say so at once
    except BaseException:
        feed.close()
        raise
    if isinstance(first, Error | Cancelled):
        feed.close()
        raise failure(first, headers)
    body = _chunks(feed, writer, first, keepalive)
    return EventStreamResponse(body, headers={**HEADERS, **headers})


async def _first_chunk(feed: Feed, writer: ChunkWriter, hold: float | None) -> Event | None:
    """The event that starts the answer: the first chunk of the current attempt or the job's
    end; ``None`` once ``hold`` has passed without one."""
    if hold is None:
        return None
    deadline = time.monotonic() + hold
    while (wait := deadline - time.monotonic()) > 0:
        event = await feed.event(wait)
        if event is None:
            return None
        metrics.delivered(event.cursor)
        if event.type in TERMINAL_TYPES:
            return event
        if isinstance(event, FIRST_CHUNK) and event.attempt >= writer.floor:
            return event
        writer.frames(event)  # bookkeeping: start, meta, a reset before any text
    return None


async def _chunks(
    feed: Feed, writer: ChunkWriter, first: Event | None, keepalive: float
) -> AsyncIterator[bytes]:
    """The chunks: every event that came since the last write, in one write."""
    try:
        if first is not None:
            yield b"".join(writer.frames(first))
        while not writer.ended:
            batch = await feed.batch(keepalive)
            if batch is None:
                yield KEEPALIVE
                continue
            out: list[bytes] = []
            for event in batch:
                metrics.delivered(event.cursor)
                out += writer.frames(event)
                if writer.ended:
                    break
            yield b"".join(out)
    except JobNotFound:
        yield writer.error("expired", EXPIRED)
    except ReadTimeout as exc:
        yield writer.error("read_timeout", str(exc))
    except StopAsyncIteration:
        return
    finally:
        feed.close()


async def completed(
    gateway: Gateway, job: ChatJob, model: str, headers: Mapping[str, str]
) -> Response:
    """The non-streamed answer: the last attempt's ``chat.completion``, or the job's failure."""
    builder = CompletionBuilder(job.id, model)
    feed = await gateway.feed(job, queued=False)  # chat chunks have no place
    try:
        await feed.start()
        while True:
            for event in await feed.batch(None) or ():
                if isinstance(event, Error | Cancelled):
                    raise failure(event, headers)
                if isinstance(event, Done):
                    return JSONResponse(builder.build(event), headers=dict(headers))
                builder.add(event)
    except (JobNotFound, ReadTimeout) as exc:
        raise _read_failure(exc, headers) from None
    except StopAsyncIteration:
        pass
    finally:
        feed.close()
    raise AssertionError("unreachable: the event stream ends only after a terminal event")


def _read_failure(exc: JobNotFound | ReadTimeout, headers: Mapping[str, str]) -> ApiError:
    if isinstance(exc, JobNotFound):
        return ApiError(status_of("expired"), "expired", EXPIRED, headers)
    return ApiError(status_of("read_timeout"), "read_timeout", str(exc), headers)
