"""The publisher's linger: an attempt's text after its first waits for company in one call,
while its first text, its control entries and its end go at once."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis

from streamq import Delta, Done, Settings, Start
from streamq.core import scripts
from streamq.core.keys import Keys
from streamq.worker.publisher import Publisher, StreamWriter
from tests.harness.waiting import poll_until

FOREVER = 3600.0  # a linger no test outlives: what goes out went because it had to
HANG = 30.0  # bound on a hang, not a measure


@pytest.fixture
async def publisher(redis: Redis, settings: Settings) -> AsyncIterator[Publisher]:
    publisher = Publisher(
        redis, ttl=60, chain_key=Keys(settings.key_prefix).publisher("lingering"), linger=FOREVER
    )
    publisher.start()
    try:
        yield publisher
    finally:
        await asyncio.wait_for(publisher.aclose(), HANG)


async def writer_for(publisher: Publisher, redis: Redis, keys: Keys, job_id: str) -> StreamWriter:
    """A claimed attempt's writer, as the worker opens one."""
    state, events = keys.state(job_id), keys.events(job_id)
    claimed = await redis.eval(  # type: ignore[misc]
        scripts.CLAIM, 3, state, keys.running(), keys.request(job_id), "60", "10000", job_id,
        publisher.chain_key, "0",
    )  # fmt: skip
    return StreamWriter(publisher, events, state, int(claimed[0]))


async def emit_and_sync(writer: StreamWriter, *events: Delta | Start | Done) -> None:
    for event in events:
        await writer.emit(event)
    await asyncio.wait_for(writer.sync(), HANG)


def texts(entries: list[tuple[bytes, dict[bytes, bytes]]]) -> list[str]:
    return [fields[b"data"].decode() for _, fields in entries if fields[b"type"] == b"delta"]


async def test_text_after_the_first_waits_for_the_next_urgent_entry(
    redis: Redis, settings: Settings, publisher: Publisher
) -> None:
    keys = Keys(settings.key_prefix)
    writer = await writer_for(publisher, redis, keys, "linger")
    # The start and the first text go at once (a sync that waited out the linger would hang).
    await emit_and_sync(writer, Start(job_id="linger", model="m"), Delta(text="first"))
    assert texts(await redis.xrange(keys.events("linger"))) == ["first"]
    token = await redis.get(publisher.chain_key)

    await writer.emit(Delta(text="second"))
    await writer.emit(Delta(text="third"))
    await poll_until(lambda: publisher.lingering, HANG, "the publisher holds the later text")
    assert texts(await redis.xrange(keys.events("linger"))) == ["first"]
    assert publisher.pending == 2

    await emit_and_sync(writer, Done(finish_reason="stop"))  # the end takes them along
    entries = await redis.xrange(keys.events("linger"))
    assert texts(entries) == ["first", "second", "third"]
    assert entries[-1][1][b"type"] == b"done"
    assert int(await redis.get(publisher.chain_key)) == int(token) + 1  # in one call


async def test_another_attempts_first_text_takes_the_waiting_text_along(
    redis: Redis, settings: Settings, publisher: Publisher
) -> None:
    keys = Keys(settings.key_prefix)
    slow = await writer_for(publisher, redis, keys, "slow")
    await emit_and_sync(slow, Start(job_id="slow", model="m"), Delta(text="a"))
    await slow.emit(Delta(text="b"))
    await poll_until(lambda: publisher.lingering, HANG, "the publisher holds the later text")

    new = await writer_for(publisher, redis, keys, "new")
    await emit_and_sync(new, Start(job_id="new", model="m"))
    await asyncio.wait_for(slow.sync(), HANG)
    assert texts(await redis.xrange(keys.events("slow"))) == ["a", "b"]


async def test_closing_writes_what_lingers_at_once(
    redis: Redis, settings: Settings, publisher: Publisher
) -> None:
    keys = Keys(settings.key_prefix)
    writer = await writer_for(publisher, redis, keys, "closing")
    await emit_and_sync(writer, Start(job_id="closing", model="m"), Delta(text="a"))
    await writer.emit(Delta(text="b"))
    await poll_until(lambda: publisher.lingering, HANG, "the publisher holds the later text")
    await asyncio.wait_for(publisher.aclose(), HANG)
    assert texts(await redis.xrange(keys.events("closing"))) == ["a", "b"]


async def test_without_a_linger_nothing_waits(redis: Redis, settings: Settings) -> None:
    keys = Keys(settings.key_prefix)
    publisher = Publisher(redis, ttl=60, chain_key=keys.publisher("eager"))
    publisher.start()
    try:
        writer = await writer_for(publisher, redis, keys, "eager")
        await emit_and_sync(writer, Start(job_id="eager", model="m"), Delta(text="a"))
        await emit_and_sync(writer, Delta(text="b"))
        assert texts(await redis.xrange(keys.events("eager"))) == ["a", "b"]
        assert not publisher.lingering
    finally:
        await asyncio.wait_for(publisher.aclose(), HANG)
