"""The multiplexing reader: many jobs over one blocking XREAD, same events as job.events()."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis

from streamq import Delta, Done, Event, JobNotFound, Settings, StreamQ
from streamq.request import chat_messages
from streamq.simulator import simulated_text

pytestmark = pytest.mark.usefixtures("worker")


async def test_fifty_live_jobs_over_two_connections(sq: StreamQ, settings: Settings) -> None:
    """Fifty jobs followed at once each get their exact text; the reader holds two connections."""
    name = f"{settings.key_prefix}-mux"
    paced = {"simulator": {"tokens_per_second": 100}}
    async with (
        Redis.from_url(settings.redis_url, client_name=name) as reader,
        StreamQ(reader, settings) as readers,
        readers.multiplexer() as mux,
    ):
        jobs = [await sq.enqueue_chat(f"mux {i}", extra_body=paced) for i in range(50)]

        async def text(job_id: str) -> str:
            return "".join([e.text async for e in mux.follow(job_id) if isinstance(e, Delta)])

        texts = await asyncio.gather(*(text(job.id) for job in jobs))
        clients = [c for c in await sq._redis.client_list() if c.get("name") == name]
    assert texts == [simulated_text(chat_messages(f"mux {i}")) for i in range(50)]
    assert len(clients) <= 2


async def test_same_events_as_a_single_reader_and_resume(sq: StreamQ) -> None:
    """follow() yields exactly what events() does, and resumes after any cursor."""
    job = await sq.enqueue_chat("compare readers")
    alone = [e async for e in job.events()]
    async with sq.multiplexer() as mux:
        assert [e async for e in mux.follow(job.id)] == alone
        assert [e async for e in mux.follow(job.id, after=alone[2].cursor)] == alone[3:]
        assert [e async for e in mux.follow(job.id, after=alone[-1].cursor)] == []


async def test_a_new_follower_does_not_wait_for_the_blocked_read(sq: StreamQ) -> None:
    """A job followed while the reader is blocked on others is read at once, not after the block."""
    slow = {"simulator": {"tokens_per_second": 2, "reply_tokens": 10}}
    waiting = await sq.enqueue_chat("slow one", extra_body=slow)
    async with sq.multiplexer() as mux:
        background = asyncio.create_task(_drain(mux.follow(waiting.id)))
        await asyncio.sleep(0.3)  # the reader is now blocked on the slow job
        quick = await sq.enqueue_chat("quick one")
        events = [e async for e in mux.follow(quick.id, timeout=3)]
        assert isinstance(events[-1], Done)
        background.cancel()
        await asyncio.gather(background, return_exceptions=True)


async def _drain(events: AsyncIterator[Event]) -> None:
    async for _ in events:
        pass


async def test_unknown_job_and_early_exit(sq: StreamQ) -> None:
    """An unknown id raises JobNotFound; leaving a follow early stops following it."""
    async with sq.multiplexer() as mux:
        with pytest.raises(JobNotFound):
            [e async for e in mux.follow("no-such-job")]
        job = await sq.enqueue_chat("leave early")
        follow = mux.follow(job.id)
        async for _ in follow:
            break
        await follow.aclose()
        assert mux._followers == {}
