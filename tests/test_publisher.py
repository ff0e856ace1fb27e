"""The publisher's linger: an attempt's text after its first waits for company in one call,
while its first text, its other entries, its end and anything waited for go at once."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis

from streamq import (
    Delta,
    Done,
    Event,
    Meta,
    Queued,
    Reasoning,
    Refusal,
    Settings,
    Start,
    ToolCallDelta,
)
from streamq.core import scripts
from streamq.core.keys import Keys
from streamq.worker.publisher import Publisher, StreamWriter
from tests.harness.waiting import poll_until

FOREVER = 3600.0  # a linger no test outlives: what goes out went because it had to
HANG = 30.0  # bound on a hang, not a measure

URGENT_FIRSTS = [
    Delta(text="first"),
    Reasoning(text="first"),
    Refusal(text="first"),
    ToolCallDelta(index=0, id="call_1", name="f", arguments="{"),
    Meta(model="m"),
    Queued(reason="concurrency"),
]


@pytest.fixture
async def publisher(redis: Redis, settings: Settings) -> AsyncIterator[Publisher]:
    async with started(redis, settings, FOREVER) as publisher:
        yield publisher


@contextlib.asynccontextmanager
async def started(
    redis: Redis, settings: Settings, linger: float, max_pending: int = 10_000
) -> AsyncIterator[Publisher]:
    """A running publisher with ``linger``, closed (and so flushed) on exit."""
    chain = Keys(settings.key_prefix).publisher(f"linger-{linger}")
    publisher = Publisher(redis, ttl=60, chain_key=chain, linger=linger, max_pending=max_pending)
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


async def emit_and_sync(writer: StreamWriter, *events: Event) -> None:
    for event in events:
        await writer.emit(event)
    await asyncio.wait_for(writer.sync(), HANG)


async def holding_later_text(
    publisher: Publisher, redis: Redis, keys: Keys, job_id: str
) -> StreamWriter:
    """A writer whose start and first text ``a`` are written and whose ``b`` the publisher
    holds, having sent a call since ``a``."""
    writer = await writer_for(publisher, redis, keys, job_id)
    await emit_and_sync(writer, Start(job_id=job_id, model="m"), Delta(text="a"))
    await writer.emit(Delta(text="b"))
    await poll_until(lambda: publisher.lingering, HANG, "the publisher holds the later text")
    assert texts(await redis.xrange(keys.events(job_id))) == ["a"]
    return writer


def texts(entries: list[tuple[bytes, dict[bytes, bytes]]]) -> list[str]:
    return [fields[b"data"].decode() for _, fields in entries if fields[b"type"] == b"delta"]


async def until_written(redis: Redis, keys: Keys, job_id: str, *expected: str) -> None:
    """Wait, without asking the publisher for anything, until the stream holds that text."""

    async def written() -> bool:
        return texts(await redis.xrange(keys.events(job_id))) == list(expected)

    await poll_until(written, HANG, f"{job_id}'s text {expected} written")


async def test_text_after_the_first_waits_for_the_attempts_end(
    redis: Redis, settings: Settings, publisher: Publisher
) -> None:
    keys = Keys(settings.key_prefix)
    writer = await holding_later_text(publisher, redis, keys, "linger")
    token = await redis.get(publisher.chain_key)
    await writer.emit(Delta(text="c"))
    assert publisher.lingering
    assert publisher.pending == 2

    await writer.emit(Done(finish_reason="stop"))  # the end takes them along
    await until_written(redis, keys, "linger", "a", "b", "c")
    entries = await redis.xrange(keys.events("linger"))
    assert entries[-1][1][b"type"] == b"done"
    assert int(await redis.get(publisher.chain_key)) == int(token) + 1  # in one call


@pytest.mark.parametrize("first", URGENT_FIRSTS, ids=lambda event: event.type)
async def test_an_attempts_first_text_and_its_other_entries_do_not_wait(
    redis: Redis, settings: Settings, publisher: Publisher, first: Event
) -> None:
    """Another attempt's first text (or a non-text entry), alone, goes at once and takes the
    held text along; so does a non-text entry after text."""
    keys = Keys(settings.key_prefix)
    held = await holding_later_text(publisher, redis, keys, "held")
    new = await writer_for(publisher, redis, keys, "new")
    await new.emit(Start(job_id="new", model="m"))  # urgent: takes "b" along
    await until_written(redis, keys, "held", "a", "b")
    await held.emit(Delta(text="c"))
    await poll_until(lambda: publisher.lingering, HANG, "the publisher holds the later text")

    await new.emit(first)
    await until_written(redis, keys, "held", "a", "b", "c")

    if first.type in {"meta", "queued"}:
        return
    await held.emit(Delta(text="d"))
    await poll_until(lambda: publisher.lingering, HANG, "the publisher holds the later text")
    await held.emit(Queued(reason="rate_limited"))
    await until_written(redis, keys, "held", "a", "b", "c", "d")


async def test_text_waited_for_goes_at_once(
    redis: Redis, settings: Settings, publisher: Publisher
) -> None:
    """A retry's backoff or a rejected entry's recovery waits for what was written."""
    keys = Keys(settings.key_prefix)
    writer = await holding_later_text(publisher, redis, keys, "waited")
    await asyncio.wait_for(writer.sync(), HANG)
    assert texts(await redis.xrange(keys.events("waited"))) == ["a", "b"]


async def test_a_full_queue_does_not_wait(redis: Redis, settings: Settings) -> None:
    keys = Keys(settings.key_prefix)
    async with started(redis, settings, FOREVER, max_pending=2) as publisher:
        writer = await holding_later_text(publisher, redis, keys, "full")
        await asyncio.wait_for(writer.emit(Delta(text="c")), HANG)  # the second pending entry
        assert texts(await redis.xrange(keys.events("full"))) == ["a", "b", "c"]


async def test_closing_writes_what_lingers_at_once(
    redis: Redis, settings: Settings, publisher: Publisher
) -> None:
    keys = Keys(settings.key_prefix)
    await holding_later_text(publisher, redis, keys, "closing")
    await asyncio.wait_for(publisher.aclose(), HANG)
    assert texts(await redis.xrange(keys.events("closing"))) == ["a", "b"]


async def test_without_a_linger_later_text_goes_unasked(redis: Redis, settings: Settings) -> None:
    keys = Keys(settings.key_prefix)
    async with started(redis, settings, 0.0) as publisher:
        writer = await writer_for(publisher, redis, keys, "eager")
        await emit_and_sync(writer, Start(job_id="eager", model="m"), Delta(text="a"))
        await writer.emit(Delta(text="b"))  # nothing waits for it, nothing urgent follows
        await until_written(redis, keys, "eager", "a", "b")


async def test_the_ttls_go_with_the_first_entries_every_64th_and_the_end(
    redis: Redis, settings: Settings
) -> None:
    """The stream's TTL with the attempt's first entries; the state's is the claim's until the
    64th entry (the claim set it just before), then both with every 64th and the end."""
    keys = Keys(settings.key_prefix)
    claimed_ttl, stream_ttl = 60, 5000  # the claim here sets 60 s, the publisher 5,000 s
    chain = keys.publisher("ttls")
    publisher = Publisher(redis, ttl=stream_ttl, chain_key=chain, linger=0.0)
    publisher.start()
    try:
        writer = await writer_for(publisher, redis, keys, "ttls")
        await emit_and_sync(writer, Start(job_id="ttls", model="m"), Delta(text="a"))
        assert await redis.ttl(keys.events("ttls")) > claimed_ttl
        assert 0 < await redis.ttl(keys.state("ttls")) <= claimed_ttl
        await emit_and_sync(writer, *(Delta(text=str(i)) for i in range(70)))
        assert await redis.ttl(keys.state("ttls")) > claimed_ttl
        await redis.expire(keys.state("ttls"), claimed_ttl)
        await redis.expire(keys.events("ttls"), claimed_ttl)
        await emit_and_sync(writer, Done(finish_reason="stop"))
        assert await redis.ttl(keys.events("ttls")) > claimed_ttl
        assert await redis.ttl(keys.state("ttls")) > claimed_ttl
    finally:
        await asyncio.wait_for(publisher.aclose(), HANG)
