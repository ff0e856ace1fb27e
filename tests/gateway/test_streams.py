"""Event streams that resume exactly, stay alive while idle, and always end."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable, Iterator

import httpx2
import pytest
from redis.asyncio import Redis

from streamq import Delta, Event, Settings
from streamq.core.keys import Keys
from streamq.core.request import chat_messages
from streamq.dev.simulator import simulated_text
from streamq.gateway import GatewayConfig, create_app
from streamq.gateway.fanout import Feed
from streamq.gateway.sse import KEEPALIVE, KEEPALIVE_SPREAD, RETRY_MS, event_stream_body
from tests.gateway.sse import Frame, frames, read_events
from tests.gateway.sse import text_of as joined
from tests.harness.gateway import TOKEN_A, TOKENS, GatewayThread

MESSAGES = chat_messages("Resume me")
SLOW = {"extra_body": {"simulator": {"tokens_per_second": 60}}}
AUTH = {"Authorization": f"Bearer {TOKEN_A}"}


async def enqueue(client: httpx2.AsyncClient, **body: object) -> str:
    response = await client.post("/v1/jobs", json={"messages": MESSAGES, **body})
    assert response.status_code == 202, response.text
    job_id: str = response.json()["id"]
    return job_id


@pytest.mark.usefixtures("worker")
async def test_drop_mid_stream_then_resume_with_last_event_id(client: httpx2.AsyncClient) -> None:
    """Half the events, a dropped connection, a reconnect with Last-Event-ID: the joined text
    is the job's text exactly, no entry twice."""
    job_id = await enqueue(client, **SLOW)
    url = f"/v1/jobs/{job_id}/events"
    first: list[Frame] = []
    async with client.stream("GET", url) as response:
        async for frame in frames(response):
            if frame.data:
                first.append(frame)
            if len(first) == 12:
                break  # leaves the block: the connection is closed mid-stream
    assert first[-1].event == "delta"
    rest = await read_events(client, url, headers={"Last-Event-ID": str(first[-1].id)})
    assert rest[-1].event == "done"
    ids = [e.id for e in first + rest]
    assert len(ids) == len(set(ids))
    assert joined(first) + joined(rest) == simulated_text(MESSAGES)


async def test_idle_stream_sends_keep_alives_and_ends_on_cancel(
    client: httpx2.AsyncClient,
) -> None:
    """A queued job's stream carries keep-alive comments, then ends with its terminal event."""
    job_id = await enqueue(client)
    seen: list[Frame] = []
    async with client.stream("GET", f"/v1/jobs/{job_id}/events") as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        assert response.headers["cache-control"] == "no-cache"
        async for frame in frames(response):
            if frame.event == "queued":
                continue  # its place: no entry
            seen.append(frame)
            if len(seen) == 3:
                await client.delete(f"/v1/jobs/{job_id}")
    assert [f.comments for f in seen[:3]] == [["keep-alive"]] * 3
    assert seen[-1].event == "cancelled"


@pytest.fixture
def short_read_settings(settings: Settings) -> Settings:
    return settings.replace(read_timeout=0.5)


async def test_a_silent_job_ends_the_stream_with_a_timeout_event(
    short_read_settings: Settings,
) -> None:
    """Nothing for STREAMQ_READ_TIMEOUT: a `timeout` event (no id) ends the response."""
    config = GatewayConfig(tokens=TOKENS, keepalive=10)
    with GatewayThread(create_app(short_read_settings, config)) as server:
        async with httpx2.AsyncClient(base_url=server.url, headers=AUTH) as client:
            job_id = await enqueue(client)
            events = await asyncio.wait_for(
                read_events(client, f"/v1/jobs/{job_id}/events"), timeout=10
            )
    assert [(e.event, e.id) for e in events] == [("timeout", None)]


async def test_a_stream_that_disappears_ends_with_an_expired_event(
    settings: Settings, redis: Redis
) -> None:
    """The job's keys vanish while a client waits: an `expired` event, never a hang."""
    # A short socket timeout makes the reader re-check the job's existence often.
    quick = settings.replace(redis_url=f"{settings.redis_url}?socket_timeout=0.5")
    config = GatewayConfig(tokens=TOKENS, keepalive=10)
    with GatewayThread(create_app(quick, config)) as server:
        async with httpx2.AsyncClient(base_url=server.url, headers=AUTH, timeout=10) as client:
            job_id = await enqueue(client)
            async with client.stream("GET", f"/v1/jobs/{job_id}/events") as response:
                await redis.delete(Keys(settings.key_prefix).request(job_id))
                events = [f async for f in frames(response) if f.data and f.event != "queued"]
            assert [e.event for e in events] == ["expired"]
            assert (await client.get(f"/v1/jobs/{job_id}/events")).status_code == 404


@pytest.fixture
def short_streams(settings: Settings) -> Iterator[GatewayThread]:
    config = GatewayConfig(tokens=TOKENS, keepalive=0.1, max_stream_seconds=0.3)
    with GatewayThread(create_app(settings, config)) as server:
        yield server


@pytest.mark.usefixtures("worker")
async def test_streams_cut_by_max_stream_seconds_resume_exactly(
    short_streams: GatewayThread,
) -> None:
    """With STREAMQ_GATEWAY_MAX_STREAM_SECONDS each response ends early; a client that keeps
    resuming from its last id gets every entry once."""
    async with httpx2.AsyncClient(base_url=short_streams.url, headers=AUTH) as client:
        job_id = await enqueue(client, extra_body={"simulator": {"tokens_per_second": 30}})
        events: list[Frame] = []
        connections = 0
        while not events or events[-1].event != "done":
            headers = {"Last-Event-ID": str(events[-1].id)} if events else {}
            events += await read_events(client, f"/v1/jobs/{job_id}/events", headers=headers)
            connections += 1
    assert connections >= 3
    assert joined(events) == simulated_text(MESSAGES)
    assert len({e.id for e in events}) == len(events)


RINGS_LATE = 1e-6  # seconds


class Clock:
    """``time.monotonic`` for the SSE body, moved on by hand: a wait runs out at once."""

    def __init__(self) -> None:
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    """The SSE body's clock, in place of the process's (the event loop keeps its own)."""
    fake = Clock()
    monkeypatch.setattr("streamq.gateway.sse.time", fake)
    return fake


class DirectlyWritten:
    """A source whose first wait sees one entry written directly (by the sink), ``into`` that
    wait (a fraction of it), and runs out; its next call ends the stream. Its waits pass on
    ``clock``."""

    def __init__(self, clock: Clock, into: float) -> None:
        self.clock = clock
        self.into = into
        self.waits: list[float] = []
        self.sink: Callable[[list[Event]], bool] | None = None
        self.written_at = 0.0

    async def __aenter__(self) -> DirectlyWritten:
        return self

    async def next(self, wait: float | None) -> list[Event] | None:
        assert wait is not None
        self.waits.append(wait)
        if len(self.waits) > 1:
            raise StopAsyncIteration
        self.clock.now += wait * self.into
        assert self.sink is not None
        assert self.sink([Delta(text="hi", cursor="1-0")])
        self.written_at = self.clock.now  # as a subscription stamps its sink's batches
        # The wait runs out (a timer rings at its time or a little after): only the sink wrote.
        self.clock.now += wait * (1 - self.into) + RINGS_LATE
        return []

    def write_directly(self, sink: Callable[[list[Event]], bool]) -> None:
        self.sink = sink

    def close(self) -> None:
        pass


async def test_entries_written_directly_put_off_the_keep_alive_by_its_own_time_only(
    clock: Clock,
) -> None:
    """An entry the multiplexer wrote straight to the connection counts as a write as of when
    it was written: the keep-alive comes ``keepalive`` seconds after it, not a whole wait after
    the wait it came in (which left up to twice the interval silent)."""
    source = DirectlyWritten(clock, into=0.0)
    feed = Feed(source)
    feed.write_directly(lambda batch: True)
    chunks = [chunk async for chunk in event_stream_body(feed, keepalive=0.05, max_seconds=None)]
    # the entry was written a keep-alive's time ago when the wait ran out: one is due at once
    assert chunks == [f"retry: {RETRY_MS}\n\n".encode(), KEEPALIVE]


async def test_an_entry_written_directly_late_in_a_wait_puts_the_keep_alive_off(
    clock: Clock,
) -> None:
    """Written directly 0.8 s into a 1 s keep-alive wait: no keep-alive when the wait ends
    (the interval counts from that entry), and the next wait is shorter than a whole one."""
    source = DirectlyWritten(clock, into=0.8)
    feed = Feed(source)
    feed.write_directly(lambda batch: True)
    chunks = [chunk async for chunk in event_stream_body(feed, keepalive=1.0, max_seconds=None)]
    assert chunks == [f"retry: {RETRY_MS}\n\n".encode()]
    assert len(source.waits) == 2
    assert source.waits[1] < source.waits[0] <= 1.0


class EndsAtOnce(DirectlyWritten):
    """A source that ends at its first wait (which it keeps)."""

    async def next(self, wait: float | None) -> list[Event] | None:
        assert wait is not None
        self.waits.append(wait)
        raise StopAsyncIteration


async def test_each_response_has_its_own_keep_alive_interval_a_little_under_the_setting(
    monkeypatch: pytest.MonkeyPatch, clock: Clock
) -> None:
    """The responses to one job get their entries at the same moments: with one keep-alive
    interval they would all wake together a keep-alive after the latest. Each response's
    interval is its own, up to a tenth under the configured one (never over: proxies' idle
    timeouts are set by it)."""
    waits = []
    for draw in (0.0, 0.5, 0.999999):
        monkeypatch.setattr(random, "random", lambda draw=draw: draw)
        source = EndsAtOnce(clock, into=0.0)
        assert [c async for c in event_stream_body(Feed(source), 10.0, None)] == [
            f"retry: {RETRY_MS}\n\n".encode()
        ]
        waits += source.waits
    expected = [10.0, 10.0 * (1 - KEEPALIVE_SPREAD / 2), 10.0 * (1 - KEEPALIVE_SPREAD)]
    assert waits == pytest.approx(expected)
    assert all(wait <= 10.0 for wait in waits)
