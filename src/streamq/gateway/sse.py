"""Server-Sent Events: a job's events as SSE frames, with keep-alives and a bounded length.

One frame per stream entry: ``id:`` its cursor, ``event:`` its type, ``data:`` the JSON of
:func:`streamq.core.events.event_to_dict`. Some frames come from the gateway itself and carry no
id (so ``Last-Event-ID`` stays on the last entry): ``queued`` while the job waits in the queue
(its place, when it changes), ``expired`` (the stream is gone) and ``timeout`` (nothing for
``STREAMQ_READ_TIMEOUT``; reconnect to keep waiting).
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections.abc import AsyncIterator, Mapping
from typing import Any

from starlette.background import BackgroundTask
from starlette.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from streamq.core import metrics
from streamq.core.events import TERMINAL_TYPES, Event, entry_order, event_to_dict
from streamq.core.exceptions import InvalidCursor, JobNotFound, ReadTimeout
from streamq.gateway.direct_write import chunk_of, direct_writer
from streamq.gateway.fanout import Alone, Feed
from streamq.job import ChatJob, EventStream, check_cursor

# The scope key under which the app keeps the server's own `send` (gateway/app.py).
SERVER_SEND = "streamq.server_send"
RETRY_MS = 1000  # how long a browser's EventSource waits before it reconnects
HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
KEEPALIVE = b": keep-alive\n\n"
# Each response's keep-alive interval is shorter than the configured one by its own share of
# up to this fraction. The responses to one job, written together by the multiplexer, would
# otherwise all wake at once a keep-alive after its latest entry: 2,000 wakes in one loop turn.
KEEPALIVE_SPREAD = 0.1


def frame(event: str, data: Any, event_id: str | None = None) -> bytes:
    """One SSE frame; ``data`` as one line of JSON."""
    head = f"id: {event_id}\n" if event_id is not None else ""
    body = json.dumps(data, ensure_ascii=False, separators=(",", ":"))
    return f"{head}event: {event}\ndata: {body}\n\n".encode()


def event_frame(event: Event) -> bytes:
    """The frame of one stream entry."""
    body = event_to_dict(event)
    if not event.cursor:  # a place in the queue, told by the reader: no entry, no id
        body = {k: v for k, v in body.items() if k not in ("cursor", "attempt", "seq")}
        return frame(body["type"], body)
    return frame(body["type"], body, event.cursor)


async def resume_point(job: ChatJob, cursor: str | None) -> tuple[str, bool]:
    """The validated cursor and whether the job already ended at or before it.

    A cursor the stream cannot have produced (after its newest entry, or any cursor before the
    stream exists) raises :class:`InvalidCursor`, instead of a read that would wait forever.
    """
    after = check_cursor(cursor)
    if after == "0-0":
        return after, False
    newest = await job.last_entry()  # on the streams' Redis, which may not be the queue's
    if newest is None:
        raise InvalidCursor(f"cursor {after} is not from this job's stream (it has no entries)")
    entry_id, entry_type = newest
    if entry_order(after) > entry_order(entry_id):
        raise InvalidCursor(f"cursor {after} is after the newest entry of this job's stream")
    ended = entry_type in TERMINAL_TYPES
    return after, ended and entry_order(after) == entry_order(entry_id)


def frames_of(batch: list[Event]) -> bytes:
    """The frames of ``batch``, for one write. Each entry's frame is made once for all the
    responses that follow its job (the multiplexer hands them all the same objects)."""
    cache = _FRAMES
    out = []
    for event in batch:
        metrics.delivered(event.cursor)
        cached = cache.get(id(event))
        if cached is None or cached[0] is not event:
            cached = (event, event_frame(event))
            if len(cache) >= FRAME_CACHE:
                del cache[next(iter(cache))]  # the oldest
            cache[id(event)] = cached
        out.append(cached[1])
    return b"".join(out)


# The frames of the latest entries, by object id; holding the event keeps its id from reuse.
_FRAMES: dict[int, tuple[Event, bytes]] = {}
FRAME_CACHE = 4096


def forget_frames() -> None:
    """Let go of the frames kept for the latest entries and batches (the gateway does once a
    crowd has left: made while it was there, they would hold its memory)."""
    _framed.forget()
    _FRAMES.clear()


async def event_stream_body(
    feed: Feed | EventStream, keepalive: float, max_seconds: float | None
) -> AsyncIterator[bytes]:
    """The body of ``GET /v1/jobs/{id}/events``: all the entries that came since the last
    write in one write, a keep-alive after (a little under) ``keepalive`` seconds without any.
    Best given a :meth:`Gateway.feed`; a job's own ``events()`` holds a Redis connection while
    it lasts."""
    if isinstance(feed, EventStream):
        feed = Feed(Alone(feed))
    keepalive *= 1 - KEEPALIVE_SPREAD * random.random()
    yield f"retry: {RETRY_MS}\n\n".encode()
    wrote = time.monotonic()  # the last write, here or by the feed's sink
    deadline = None if max_seconds is None else wrote + max_seconds
    try:
        await feed.start()
        while True:
            now = time.monotonic()
            if deadline is not None and now >= deadline:
                return
            wrote = max(wrote, feed.written_at)
            wait = keepalive - (now - wrote)
            if wait <= 0:  # nothing written for a keep-alive's time
                yield KEEPALIVE
                wrote = time.monotonic()
                continue
            if deadline is not None:
                wait = min(wait, deadline - now)
            batch = await feed.batch(wait)
            if batch:
                yield frames_of(batch)
                wrote = time.monotonic()
            # None or [] (entries went out directly): a keep-alive once one is due
    except StopAsyncIteration:
        return
    except JobNotFound:
        yield frame("expired", {"message": "the job's stream is gone: expired, or Redis lost it"})
    except ReadTimeout as exc:
        yield frame("timeout", {"message": f"{exc}; reconnect with Last-Event-ID to keep waiting"})
    finally:
        feed.close()


class EventStreamResponse(StreamingResponse):
    """A ``text/event-stream`` response whose body chunks go straight to the server's ``send``.

    The middleware around the routes (request id, metrics, CORS, Starlette's error handlers)
    acts on a response's start alone; passing every chunk through their wrappers cost a
    gateway following a job for 2,000 subscribers about a tenth of its CPU. The start and the
    end still pass through them all. A middleware that rewrites bodies would not see these.

    The body is written by the request's own task, and a plain task waits for the client to
    leave (and then stops it): Starlette's way, an anyio task group holding the writer as a
    second task, cost each of thousands of open streams its memory and a frame on every wake.

    Given the ``feed`` its body reads, the entries that come while the body waits for them are
    written where they are read, without waking this response's task, when the server lets
    them be (:mod:`streamq.gateway.direct_write`).
    """

    media_type = "text/event-stream"
    _server_send: Send | None = None

    def __init__(
        self,
        content: AsyncIterator[bytes],
        status_code: int = 200,
        headers: Mapping[str, str] | None = None,
        background: BackgroundTask | None = None,
        *,
        feed: Feed | None = None,
    ) -> None:
        super().__init__(content, status_code, headers, background=background)
        self._feed = feed

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self._server_send = scope.get(SERVER_SEND)
        if self._feed is not None and self._server_send is not None:
            direct = direct_writer(self._server_send, scope["method"], _framed)
            if direct is not None:
                self._feed.write_directly(direct.write)
        spec = scope.get("asgi", {}).get("spec_version", "2.0")
        if tuple(map(int, spec.split("."))) >= (2, 4):  # the server's send raises instead
            await super().__call__(scope, receive, send)
            return
        writer = asyncio.current_task()
        assert writer is not None
        left = False

        async def watch() -> None:
            nonlocal left
            while (await receive())["type"] != "http.disconnect":
                pass
            left = True
            writer.cancel()

        watcher = asyncio.create_task(watch())
        try:
            await self.stream_response(send)
        except asyncio.CancelledError:
            if not left or writer.uncancel() > 0:
                raise  # not (only) ours: the server is stopping
        finally:
            watcher.cancel()
        if self.background is not None:
            await self.background()

    async def stream_response(self, send: Send) -> None:
        start = {"type": "http.response.start", "status": self.status_code}
        await send({**start, "headers": self.raw_headers})
        direct = self._server_send or send
        async for chunk in self.body_iterator:
            body = chunk if isinstance(chunk, bytes | memoryview) else chunk.encode(self.charset)
            await direct({"type": "http.response.body", "body": body, "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})


class _Framed:
    """:func:`frames_of` a batch, and the same as one HTTP/1.1 chunk: made once for all the
    responses the multiplexer hands this very list (its followers at one cursor); it keeps
    the latest batch (holding the list keeps its id).

    The lag metric of the responses the batch is handed to after its first is counted, and
    observed per :data:`GROUP` of them (and at the end of the loop's turn), at the time of the
    group's last. Observed one by one, the metric took ~2.5 µs of each write to 2,000
    subscribers; a group of 32 writes spans ~0.5 ms."""

    GROUP = 32

    def __init__(self) -> None:
        self._batch: list[Event] = []
        self._data = self._chunk = b""
        self._handed = 0  # responses handed the batch again since the metric last saw them
        self._flush_due = False  # a flush waits for the end of the loop's turn

    def __call__(self, batch: list[Event]) -> tuple[bytes, bytes]:
        if batch is not self._batch:
            self.flush()
            data = frames_of(batch)  # (counted for its first response there)
            self._batch, self._data = batch, data
            self._chunk = chunk_of(data) if data else b""
        else:
            self._handed_again()
        return self._data, self._chunk

    def _handed_again(self) -> None:
        self._handed += 1
        if self._handed >= self.GROUP:
            self.flush()
        elif not self._flush_due:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:  # no loop to wait for: now
                self.flush()
                return
            self._flush_due = True
            loop.call_soon(self._end_of_turn)

    def flush(self) -> None:
        """Observe the lag of what was counted, as of now."""
        if self._handed:
            for event in self._batch:
                metrics.delivered(event.cursor, readers=self._handed)
            self._handed = 0

    def _end_of_turn(self) -> None:
        self._flush_due = False
        self.flush()

    def forget(self) -> None:
        """Observe what was counted, then let the latest batch go."""
        self.flush()
        self._batch = []
        self._data = self._chunk = b""


_framed = _Framed()
