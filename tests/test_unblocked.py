"""A blocked read ended by another client (``CLIENT UNBLOCK <id> ERROR``) resumes from its
cursor: every reader yields every event exactly once, and no error reaches its caller."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx2
import pytest
from redis.asyncio import Redis

from streamq import Delta, Done, Event, Settings, Start, StreamQ
from streamq.core.events import as_text, encode
from streamq.core.keys import Keys
from streamq.dev.local_redis import LocalRedis
from streamq.gateway import GatewayConfig, create_app
from streamq.sync import StreamQ as SyncStreamQ
from tests.gateway.sse import frames
from tests.harness.gateway import TOKEN_A, TOKENS, GatewayThread
from tests.harness.waiting import poll_until

ROUNDS = 6


@pytest.fixture(scope="module")
def private_redis() -> Iterator[LocalRedis]:
    """A redis-server of this module's own: every read blocked on it is one under test."""
    with LocalRedis() as server:
        yield server


@pytest.fixture
def local(settings: Settings, private_redis: LocalRedis) -> Settings:
    return settings.replace(redis_url=private_redis.url)


@pytest.fixture
async def admin(local: Settings) -> AsyncIterator[Redis]:
    """The other client: it finds blocked reads and ends them."""
    async with Redis.from_url(local.redis_url) as client:
        yield client


class Writer:
    """Appends a job's entries as a worker would write them (attempt 1, seq 0, 1, ...)."""

    def __init__(self, redis: Redis, settings: Settings, job_id: str) -> None:
        self.redis, self.key, self.job_id = redis, Keys(settings.key_prefix).events(job_id), job_id
        self.ids: list[str] = []

    async def append(self, event: Event) -> None:
        fields: dict[Any, Any] = dict(encode(event, attempt=1, seq=len(self.ids)))
        self.ids.append(as_text(await self.redis.xadd(self.key, fields)))


async def blocked_reads(admin: Redis) -> list[int]:
    return [
        int(client["id"])
        for client in await admin.client_list()
        if client["cmd"] == "xread" and "b" in client["flags"]
    ]


async def wait_blocked(admin: Redis) -> list[int]:
    reads: list[int] = []

    async def found() -> bool:
        nonlocal reads
        reads = await blocked_reads(admin)
        return bool(reads)

    await poll_until(found, 10, "a reader blocked in XREAD")
    return reads


async def knock(admin: Redis) -> int:
    """Once a read is blocked, end every blocked read with an UNBLOCKED error; how many."""
    ended = [await admin.client_unblock(read, error=True) for read in await wait_blocked(admin)]
    assert any(ended)
    return sum(ended)


async def knock_while_writing(admin: Redis, writers: list[Writer]) -> int:
    """Write each job's stream while ending its reader's reads again and again: entries land
    while a reader waits to retry and while it is blocked anew. Returns the reads ended."""
    ended = 0
    for writer in writers:
        await writer.append(Start(job_id=writer.job_id, model="m"))
    for i in range(ROUNDS):
        ended += await knock(admin)
        if i % 2:
            await wait_blocked(admin)
        for writer in writers:
            await writer.append(Delta(text=f"piece {i} "))
    for writer in writers:
        await writer.append(Done(finish_reason="stop"))
    return ended


async def test_async_events_survive_unblocked_reads(local: Settings, admin: Redis) -> None:
    """job.events(): every entry once, in order, however often its read is ended."""
    async with StreamQ.from_url(local.redis_url, local) as sq:
        job = await sq.enqueue_chat("knocked")
        writer = Writer(admin, local, job.id)
        reader = asyncio.create_task(collect(job.events(timeout=20, queued=False)))
        assert await knock_while_writing(admin, [writer]) >= ROUNDS
        assert [event.cursor for event in await reader] == writer.ids


async def test_sync_events_survive_unblocked_reads(local: Settings, admin: Redis) -> None:
    """streamq.sync's events(): the same, on a blocking client."""
    with SyncStreamQ.from_url(local.redis_url, local) as sq:
        job = sq.enqueue_chat("knocked")
        writer = Writer(admin, local, job.id)

        def read() -> list[str]:
            with job.events(timeout=20, queued=False) as events:
                return [event.cursor for event in events]

        reader = asyncio.create_task(asyncio.to_thread(read))
        assert await knock_while_writing(admin, [writer]) >= ROUNDS
        assert await reader == writer.ids


async def test_multiplexer_survives_unblocked_reads(local: Settings, admin: Redis) -> None:
    """A Multiplexer's long read and its join read (a job followed while the long read is
    blocked) are both ended again and again: each follower still gets every entry once."""
    async with StreamQ.from_url(local.redis_url, local) as sq, sq.multiplexer() as mux:
        first, second = await sq.enqueue_chat("first"), await sq.enqueue_chat("second")
        writers = [Writer(admin, local, first.id), Writer(admin, local, second.id)]
        readers = [asyncio.create_task(collect(mux.follow(first.id, timeout=20, queued=False)))]
        long_read = await wait_blocked(admin)  # on the first job alone
        readers.append(
            asyncio.create_task(collect(mux.follow(second.id, timeout=20, queued=False)))
        )

        async def join_read_ended() -> bool:
            joins = [read for read in await blocked_reads(admin) if read not in long_read]
            return any([await admin.client_unblock(read, error=True) for read in joins])

        await poll_until(join_read_ended, 10, "the join read of the second job, ended")
        assert await knock_while_writing(admin, writers) >= ROUNDS
        for reader, writer in zip(readers, writers, strict=True):
            assert [event.cursor for event in await reader] == writer.ids


async def test_gateway_event_stream_survives_unblocked_reads(local: Settings, admin: Redis) -> None:
    """GET /v1/jobs/{id}/events over real HTTP: one 200 stream with every entry once, ending
    with `done`, and no error frame."""
    headers = {"Authorization": f"Bearer {TOKEN_A}"}
    app = create_app(local, GatewayConfig(tokens=TOKENS, keepalive=5))
    with GatewayThread(app) as gateway:
        async with httpx2.AsyncClient(base_url=gateway.url, headers=headers, timeout=30) as http:
            created = await http.post(
                "/v1/jobs", json={"messages": [{"role": "user", "content": "x"}]}
            )
            assert created.status_code == 202, created.text
            writer = Writer(admin, local, created.json()["id"])

            async def read() -> list[tuple[str, str | None]]:
                async with http.stream("GET", f"/v1/jobs/{writer.job_id}/events") as response:
                    assert response.status_code == 200
                    return [(f.event, f.id) async for f in frames(response) if f.data]

            reader = asyncio.create_task(read())
            assert await knock_while_writing(admin, [writer]) >= ROUNDS
            received = await reader
    # The job waits in the queue (no worker takes it; the test writes its stream): the gateway
    # may tell its place first, in frames of its own with no id, whichever wins the race.
    places = [event_id for event, event_id in received if event == "queued"]
    entries = [(event, event_id) for event, event_id in received if event != "queued"]
    assert places == [None] * len(places)
    assert [event_id for _, event_id in entries] == writer.ids
    assert [event for event, _ in entries] == ["start"] + ["delta"] * ROUNDS + ["done"]


async def collect(events: AsyncIterator[Event]) -> list[Event]:
    return [event async for event in events]
