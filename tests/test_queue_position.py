"""A place in the queue: readers of a queued job see ``queued`` events with the jobs ahead,
``status()`` says the same, and text iteration is unchanged."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from redis.asyncio import Redis
from redis.exceptions import ResponseError

from streamq import ChatJob, Delta, Queued, Settings, StreamQ
from streamq.core.keys import Keys, fair_order
from streamq.core.queue_position import Place, PlaceLookup, estimate, is_news
from streamq.sync import StreamQ as SyncStreamQ
from streamq.worker.arq_worker import running_worker
from tests.harness.waiting import STARTUP

# Stalls after its first delta until cancelled: a job that runs exactly as long as a test wants.
STALL = {"simulator": {"fault": "stall", "after": 1}}


def test_the_lookup_reads_the_fair_order_first_then_arq_less_the_running_jobs() -> None:
    keys = Keys("p")
    lookup = PlaceLookup(keys, "p:queue", ["a", "b", "c", "d"], now=600.0)
    commands = lookup.commands()
    assert commands[:3] == [
        ("ZRANK", fair_order("p:queue"), "p:a"),
        ("ZRANK", "p:queue", "p:a"),
        ("EXISTS", keys.arq_in_progress("a")),
    ]
    assert commands[12] == ("ZCARD", keys.running())
    assert len(commands) == 4 * 3 + 1 + 6  # constant beyond the jobs' own commands
    counters = [{b"jobs:done": b"50", b"deltas": b"900"}, {b"jobs:error": b"10"}, {}, {}, {}, {}]
    replies: list[Any] = [3, 9, 0, None, 7, 0, None, 7, 1, None, None, 0, 2, *counters]
    places = lookup.places(replies)
    rate = 60 / 300  # 60 jobs ended over five minutes and no second of the current one
    assert places == {
        "a": Place(3, estimate(3, rate)),  # the fair order's rank
        "b": Place(5, estimate(5, rate)),  # arq's rank less the 2 running jobs
        "c": None,  # in progress: started
        "d": None,  # in neither queue
    }
    assert places["a"] == Place(3, 20.0)


def test_a_refused_command_leaves_what_it_needs_unknown() -> None:
    """A Redis user without the lookup's commands: no place (or no eta), never a failed read."""
    lookup = PlaceLookup(Keys("p"), "p:queue", ["fair", "arq"], now=600.0)
    denied = ResponseError("NOPERM this user has no permissions to run the 'zcard' command")
    counters: list[Any] = [{b"jobs:done": b"60"}, denied, {}, {}, {}, {}]
    replies: list[Any] = [2, 5, 0, None, 5, 0, denied, *counters]
    assert lookup.places(replies) == {"fair": Place(2, None), "arq": None}
    replies = [denied, 5, 0, None, 5, 0, 1, *counters]
    assert lookup.places(replies) == {"fair": None, "arq": Place(4, None)}


def test_no_eta_without_a_rate_and_news_only_when_the_place_moved() -> None:
    assert estimate(4, 0.0) is None
    assert is_news(Place(4), None)
    assert not is_news(None, Place(4))
    assert not is_news(Place(4, 10.0), Place(4, 10.5))
    assert is_news(Place(4, 10.0), Place(4, 12.0))
    assert is_news(Place(3, 10.0), Place(4, 10.0))
    assert is_news(Place(4, 10.0), Place(4, None))


async def queued_jobs(sq: StreamQ, count: int) -> list[ChatJob]:
    return [await sq.enqueue_chat(f"queued {i}", extra_body=STALL) for i in range(count)]


async def next_queued(events: Any) -> Queued:
    event = await anext(events)
    assert isinstance(event, Queued), event
    assert event.cursor == ""
    assert event.reason == "queue"
    return event


@pytest.mark.slow
async def test_the_fifth_of_five_queued_jobs_sees_four_ahead_then_fewer_then_its_text(
    sq: StreamQ, settings: Settings, redis: Redis
) -> None:
    jobs = await queued_jobs(sq, 4)
    last = await sq.enqueue_chat("the fifth")
    status = await last.status()
    assert (status.state, status.ahead) == ("queued", 4)
    async with last.events(timeout=60) as events:
        assert (await next_queued(events)).ahead == 4
        async with running_worker(settings.replace(concurrency=1)):
            seen = [4]
            for job in jobs:
                # The worker runs the jobs one by one; each stalls until cancelled here.
                place = await asyncio.wait_for(next_queued(events), STARTUP)
                seen.append(place.ahead or 0)
                assert (await last.status()).ahead == place.ahead
                await job.cancel()
            assert seen == [4, 3, 2, 1, 0]
            text = ""
            async for event in events:
                assert not isinstance(event, Queued), "no place once it started"
                if isinstance(event, Delta):
                    text += event.text
            assert text == (await last.result()).text != ""
            assert (await last.status()).ahead is None


@pytest.mark.slow
async def test_text_iteration_and_a_late_reader_see_no_queued_event(
    sq: StreamQ, settings: Settings
) -> None:
    first = await sq.enqueue_chat("ahead")
    job = await sq.enqueue_chat("behind")
    texts = asyncio.create_task(_joined(job))
    async with running_worker(settings):
        text = await asyncio.wait_for(texts, STARTUP)
        await first.result()
    assert text == (await job.result()).text
    events = [event async for event in job.events()]
    assert not any(isinstance(event, Queued) for event in events)


async def _joined(job: ChatJob) -> str:
    return "".join([chunk async for chunk in job])


def test_the_sync_client_sees_the_same_place(settings: Settings) -> None:
    with SyncStreamQ.from_url(settings.redis_url, settings) as client:
        client.enqueue_chat("one")
        job = client.enqueue_chat("two")
        assert job.status().ahead == 1
        with job.events(timeout=5) as events:
            event = next(events)
        assert isinstance(event, Queued)
        assert event.ahead == 1
        assert event.cursor == ""


async def test_followers_in_a_multiplexer_share_one_lookup(sq: StreamQ) -> None:
    """Five followers of one queued job: each is told its place, from one lookup a tick; once
    cancelled, each gets the end and no more places."""
    await sq.enqueue_chat("first")
    job = await sq.enqueue_chat("second")
    async with sq.multiplexer() as mux:
        follows = [mux.follow(job.id, timeout=30) for _ in range(5)]
        told = [await anext(follow) for follow in follows]
        assert all(isinstance(e, Queued) and e.ahead == 1 for e in told)
        assert len({id(e) for e in told}) == 1  # one event for all: one lookup
        assert await job.cancel() == "cancelled"
        for follow in follows:
            assert [e.type async for e in follow] == ["cancelled"]
        assert mux._followers == {}


async def test_a_queue_of_its_own_name_is_where_the_clients_look(
    settings: Settings, redis: Redis
) -> None:
    """STREAMQ_QUEUE set to a name the prefix would not give: jobs, the multiplexer and the
    sync client look the place up in that queue, not in the prefix's default one."""
    custom = settings.replace(queue_name=f"{settings.key_prefix}:elsewhere")
    async with StreamQ(redis, custom) as client:
        await client.enqueue_chat("one")
        job = await client.enqueue_chat("two")
        assert (await job.status()).ahead == 1
        async with client.multiplexer() as mux:
            told = await anext(mux.follow(job.id, timeout=5))
        assert isinstance(told, Queued)
        assert told.ahead == 1
    with SyncStreamQ.from_url(custom.redis_url, custom) as sync_client:
        assert sync_client.job(job.id).status().ahead == 1
