"""Resume cursors: anything Redis would refuse raises InvalidCursor before a read starts."""

from __future__ import annotations

import asyncio

import pytest

from streamq import InvalidCursor, ReadTimeout, Settings, StreamQ
from streamq.job import check_cursor
from streamq.sync import StreamQ as SyncStreamQ

TOP = 2**64 - 1
BAD = [
    f"1-{TOP + 1}",
    f"{TOP + 1}-0",
    "1" + "0" * 5000 + "-0",  # past Python's int-string limit (ValueError), and 2^64
    "1-" + "9" * 5000,
    "1-0\n",
    " 1-0",
    "+1-0",
    "1-0-0",
    "1",
    "1-",
    "\u0661-\u0662",  # digits of another script: int() takes them, Redis does not
    b"1-0",
]


def test_check_cursor_bounds_both_parts_and_gives_canonical_ids() -> None:
    """Both parts are ASCII decimal integers in 0..2^64-1; leading zeros are dropped."""
    for cursor in BAD:
        with pytest.raises(InvalidCursor) as raised:
            check_cursor(cursor)  # type: ignore[arg-type]
        assert len(str(raised.value)) < 200
    assert check_cursor(f"{TOP}-{TOP}") == f"{TOP}-{TOP}"
    assert check_cursor("0017-002") == "17-2"
    assert check_cursor("00-00") == check_cursor(None) == check_cursor("") == "0-0"


async def test_every_async_reader_raises_invalid_cursor(sq: StreamQ) -> None:
    """events(), text() and a Multiplexer's follow() refuse a bad cursor before any read."""
    job = await sq.enqueue_chat("never run")
    async with sq.multiplexer() as mux:
        for cursor in BAD:
            with pytest.raises(InvalidCursor):
                job.events(after=cursor)  # type: ignore[arg-type]
            with pytest.raises(InvalidCursor):
                await anext(job.text(after=cursor))  # type: ignore[arg-type]
            with pytest.raises(InvalidCursor):
                await anext(mux.follow(job.id, after=cursor))  # type: ignore[arg-type]


async def test_the_largest_valid_cursor_waits_instead_of_failing_in_redis(sq: StreamQ) -> None:
    """2^64-1 in both parts is an id Redis accepts: the reader waits (nothing can follow it)."""
    job = await sq.enqueue_chat("never run")
    with pytest.raises(ReadTimeout):
        async with job.events(after=f"{TOP}-{TOP}", timeout=0.3) as events:
            await anext(aiter(events))
    async with sq.multiplexer() as mux:
        with pytest.raises(ReadTimeout):
            await anext(mux.follow(job.id, after=f"{TOP}-{TOP}", timeout=0.3))


async def test_the_sync_reader_raises_invalid_cursor(settings: Settings) -> None:
    """streamq.sync's events() and text() refuse the same cursors."""

    def check() -> None:
        with SyncStreamQ.from_url(settings.redis_url, settings) as client:
            job = client.enqueue_chat("never run")
            for cursor in BAD:
                with pytest.raises(InvalidCursor):
                    job.events(after=cursor)  # type: ignore[arg-type]
                with pytest.raises(InvalidCursor):
                    next(iter(job.text(after=cursor)))  # type: ignore[arg-type]
            with (
                pytest.raises(ReadTimeout),
                job.events(after=f"{TOP}-{TOP}", timeout=0.3) as events,
            ):
                next(events)

    await asyncio.to_thread(check)
