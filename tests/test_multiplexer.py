"""The multiplexing reader: many jobs over one blocking XREAD, same events as job.events()."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from redis.asyncio import Redis
from redis.exceptions import ResponseError

from streamq import Delta, Done, Event, JobNotFound, Queued, Settings, Start, StreamQ
from streamq.core.events import as_text, encode
from streamq.core.keys import Keys
from streamq.core.request import chat_messages
from streamq.dev.simulator import simulated_text
from streamq.multiplexer import ENDS_PER_TURN, Multiplexer, _decoded, _Follower
from tests.harness.waiting import STARTUP, poll_until


@pytest.mark.usefixtures("worker")
async def test_fifty_live_jobs_over_three_connections(sq: StreamQ, settings: Settings) -> None:
    """Fifty jobs followed at once each get their exact text; the reader holds three connections
    (the long read, the join read and the control connection)."""
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
    assert len(clients) <= 3


@pytest.mark.slow
@pytest.mark.usefixtures("worker")
async def test_two_hundred_jobs_five_followers_each_get_every_event_once(sq: StreamQ) -> None:
    """200 live jobs, five followers each joining at once, some before the job starts, some
    while it streams: each follower gets its job's every event once, in order, as events()."""
    quick = {"simulator": {"tokens_per_second": 150, "reply_tokens": 30}}
    jobs = [await sq.enqueue_chat(f"many {i}", extra_body=quick) for i in range(200)]
    async with sq.multiplexer() as mux:
        results = await asyncio.gather(
            *(
                _collect(mux.follow(job.id, timeout=60, queued=False))
                for job in jobs
                for _ in range(5)
            )
        )
        assert mux._followers == {}
    for i, events in enumerate(results):
        assert events == [e async for e in jobs[i // 5].events()], f"follower {i}"


@pytest.mark.usefixtures("worker")
async def test_a_sink_takes_entries_while_its_reader_waits_and_order_holds(sq: StreamQ) -> None:
    """``Subscription.write_directly``: entries that come while ``next()`` waits go to the sink;
    a batch it declines (its client is busy) waits for ``next()``. Together, in the order they
    were handed over, they are the job's events, each once. ``next()`` answers ``[]`` when only
    the sink got entries within its wait, and ends once the sink took the terminal one."""
    paced = {"simulator": {"tokens_per_second": 50, "reply_tokens": 40}}
    job = await sq.enqueue_chat("sink", extra_body=paced)
    handed: list[tuple[str, Event]] = []
    takes = itertools.cycle([True, True, False])
    stamps: list[tuple[float, bool]] = []  # written_at as each call found it; what it answered

    def sink(batch: list[Event]) -> bool:
        took = next(takes)
        stamps.append((subscription.written_at, took))
        if took:
            handed.extend(("sink", event) for event in batch)
        return took

    empty = 0
    async with sq.multiplexer() as mux, mux.subscribe(job.id, queued=False) as subscription:
        subscription.write_directly(sink)
        while True:
            try:
                batch = await subscription.next(0.05)
            except StopAsyncIteration:
                break
            empty += batch == []
            handed.extend(("next", event) for event in batch or ())
        assert mux.written_directly > 0
        stamps.append((subscription.written_at, False))
    # written_at moves (forward) after each batch the sink took, and only then
    assert stamps[0][0] == 0.0
    assert stamps[-1][0] <= time.monotonic()
    for (before, took), (after, _) in itertools.pairwise(stamps):
        assert after > before if took else after == before
    assert [event for _, event in handed] == [e async for e in job.events(queued=False)]
    assert {how for how, _ in handed} == {"sink", "next"}
    assert empty > 0


@pytest.mark.usefixtures("worker")
async def test_same_events_as_a_single_reader_and_resume(sq: StreamQ) -> None:
    """follow() yields exactly what events() does, and resumes after any cursor."""
    job = await sq.enqueue_chat("compare readers")
    alone = [e async for e in job.events(queued=False)]
    async with sq.multiplexer() as mux:
        assert [e async for e in mux.follow(job.id, queued=False)] == alone
        assert [e async for e in mux.follow(job.id, after=alone[2].cursor)] == alone[3:]
        assert [e async for e in mux.follow(job.id, after=alone[-1].cursor)] == []


@pytest.mark.usefixtures("worker")
async def test_a_new_follower_does_not_wait_for_the_blocked_read(
    sq: StreamQ, settings: Settings, redis: Redis
) -> None:
    """A job followed while the reader is blocked on others is read at once, not after the block,
    and without CLIENT UNBLOCK (which the reader's ACL user may not send)."""
    slow = {"simulator": {"tokens_per_second": 2, "reply_tokens": 10}}
    waiting = await sq.enqueue_chat("slow one", extra_body=slow)
    name = f"{settings.key_prefix}-mux"
    unblocks = await _unblock_calls(redis)
    async with (
        Redis.from_url(settings.redis_url, client_name=name) as reader,
        StreamQ(reader, settings) as readers,
        readers.multiplexer() as mux,
    ):
        background = asyncio.create_task(_drain(mux.follow(waiting.id)))
        await poll_until(lambda: _blocked(redis, name), 10, "the reader blocked on the slow job")
        quick = await sq.enqueue_chat("quick one")
        events = [e async for e in mux.follow(quick.id, timeout=3)]
        assert isinstance(events[-1], Done)
        background.cancel()
        await asyncio.gather(background, return_exceptions=True)
    assert await _unblock_calls(redis) == unblocks
    assert await waiting.cancel() == "cancelling"  # the worker need not drain it


async def _blocked(redis: Redis, name: str) -> bool:
    clients = await redis.client_list()
    return any(c["name"] == name and c["cmd"] == "xread" and "b" in c["flags"] for c in clients)


async def _unblock_calls(redis: Redis) -> int:
    stats = await redis.info("commandstats")
    return int(stats.get("cmdstat_client|unblock", {}).get("calls", 0))


async def _drain(events: AsyncIterator[Event]) -> None:
    async for _ in events:
        pass


@pytest.mark.usefixtures("worker")
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


@pytest.mark.usefixtures("worker")
async def test_a_later_follower_from_an_earlier_cursor_gets_every_entry(sq: StreamQ) -> None:
    """A second follower of a stream already being read, from further back, gets all of it:
    the read in flight starts after its cursor, so it is read on its own until it catches up."""
    slow = {"simulator": {"tokens_per_second": 40, "reply_tokens": 40}}
    job = await sq.enqueue_chat("two readers", extra_body=slow)
    async with sq.multiplexer() as mux:
        first = mux.follow(job.id, queued=False)
        head = [await anext(first) for _ in range(5)]
        rest = asyncio.create_task(_collect(first))
        second = await _collect(mux.follow(job.id, queued=False))
        assert [e.cursor for e in head + await rest] == [e.cursor for e in second]
    assert second == [e async for e in job.events(queued=False)]  # every entry once, up to `done`
    assert isinstance(second[-1], Done)


def test_read_points_compare_ids_as_numbers() -> None:
    """Followers of one stream at ``5-9`` and ``5-10``: the read starts after ``5-9`` (as text,
    ``5-10`` sorts first, and the entry ``5-10`` would be skipped for the first follower)."""
    group = [_Follower("k", "5-10"), _Follower("k", "5-9"), _Follower("k", "999-0")]
    assert Multiplexer._read_points({"k": group}, None) == {"k": "5-9"}
    assert Multiplexer._read_points({"k": group}, {"k": "5-10"}) == {"k": "5-9"}
    assert Multiplexer._read_points({"k": group}, {"k": "5-9"}) == {}


def test_the_join_read_looks_only_at_newcomers_behind_the_long_read() -> None:
    """While the long read covers ``k`` from ``5-0``: a newcomer from ``2-0`` is read by the join
    read; once it is let go (or the long read covers it, or it drops behind) it is forgotten, so
    no stale cursor keeps the join read re-reading ``k`` (156e127 kept a let-go newcomer's
    cursor while its stream had other followers: the join read spun until the long read
    returned). A follower that catches up is a newcomer again."""
    mux = Multiplexer(Redis(), Keys("t"))
    old, early, late = _Follower("k", "5-0"), _Follower("k", "2-0"), _Follower("k", "7-0")
    for follower in (old, early, late):
        mux._followers.setdefault("k", []).append(follower)
        follower.following = True
    mux._covered = {"k": "5-0"}
    mux._newcomers = [early, late]
    assert mux._uncovered() == {"k": "2-0"}
    assert mux._newcomers == [early]  # `late` is the long read's
    mux._drop(early)  # the subscriber left
    assert mux._uncovered() == {}
    assert mux._newcomers == []
    old.cursor = old.taken = "3-0"  # dropped behind, then caught up to the long read's start
    mux._caught_up(old, [])
    assert mux._uncovered() == {"k": "3-0"}
    mux._covered = None  # between long reads: the next one takes every follower
    assert mux._uncovered() == {}


async def test_a_sink_never_overtakes_what_waits_for_the_reader() -> None:
    """A batch the sink declined waits for ``next()``; what comes after it joins it there
    rather than reach the client first, and nothing goes to the sink while the reader is away
    from ``next()`` (it may be writing what it took)."""
    mux = Multiplexer(Redis(), Keys("t"))
    follower = _Follower("k", "0-0")
    answers, taken = iter([False, True]), list[str]()

    def sink(batch: list[Event]) -> bool:
        if not next(answers):
            return False
        taken.extend(event.cursor for event in batch)
        return True

    def offer(n: int) -> None:
        fields = encode(Delta(text=f"d{n}"), attempt=1, seq=n)
        raw = [(f"{n}-0".encode(), {k.encode(): v.encode() for k, v in fields.items()})]
        mux._offer(follower, _decoded(raw, (0, 0)))

    def pending() -> list[str]:
        return [event.cursor for event in follower.pending]

    follower.sink = sink
    follower.waiter = asyncio.get_running_loop().create_future()  # the reader waits in next()
    offer(1)  # declined: waits for next()
    offer(2)
    assert (taken, pending()) == ([], ["1-0", "2-0"])
    follower.pending, follower.waiter = [], None  # the reader took them, and writes them
    offer(3)
    assert (taken, pending()) == ([], ["3-0"])
    follower.pending = []
    follower.waiter = asyncio.get_running_loop().create_future()  # back in next()
    offer(4)
    assert (taken, pending(), follower.taken, mux.written_directly) == (["4-0"], [], "4-0", 1)


def _taking(into: list[list[Event]]) -> Callable[[list[Event]], bool]:
    """A sink that takes every batch, into ``into``."""

    def sink(batch: list[Event]) -> bool:
        into.append(batch)
        return True

    return sink


def _declining(batch: list[Event]) -> bool:
    return False


async def test_readers_whose_sinks_took_the_end_are_woken_a_few_per_loop_turn() -> None:
    """Ending a response takes a while (its last chunk, its teardown): the readers of a job
    whose sinks took its terminal entry are woken :data:`ENDS_PER_TURN` per loop turn, so that
    other work (another client's request) gets turns in between. Each is woken once, in turn."""
    mux = Multiplexer(Redis(), Keys("t"))
    loop = asyncio.get_running_loop()
    count = ENDS_PER_TURN * 3 + 5
    followers = [_Follower("k", "1-0") for _ in range(count)]
    fields = encode(Done(finish_reason="stop"), attempt=1, seq=2)
    decoded = _decoded([(b"2-0", {k.encode(): v.encode() for k, v in fields.items()})], (1, 0))
    sunk: list[list[Event]] = []
    for follower in followers:
        follower.sink = _taking(sunk)
        follower.waiter = loop.create_future()
        mux._offer(follower, decoded)
    assert len(sunk) == count  # every terminal frame written at once
    assert all(f.ended and f.cursor == "2-0" for f in followers)
    woken: list[int] = []
    while len(woken) < count:
        await asyncio.sleep(0)  # one loop turn for this test, as for any other task
        woken.append(sum(f.waiter is not None and f.waiter.done() for f in followers))
    steps = [b - a for a, b in itertools.pairwise([0, *woken])]
    assert max(steps) <= ENDS_PER_TURN
    assert len(woken) > 3
    assert [f for f in followers if f.waiter is not None and f.waiter.done()] == followers


async def test_a_place_told_goes_to_the_sink_without_waking_the_reader() -> None:
    """A ``queued`` event (its place in the queue) is written by the sink like an entry, one
    list for all the followers (one frame made), and leaves the cursor where it was; a
    follower whose sink declines gets it from ``next()``."""
    mux = Multiplexer(Redis(), Keys("t"))
    loop = asyncio.get_running_loop()
    told: list[Event] = [Queued(reason="queue", ahead=3)]
    handed: list[list[Event]] = []
    taking, declining = _Follower("k", "0-0"), _Follower("k", "0-0")
    taking.sink, declining.sink = _taking(handed), _declining
    for follower in (taking, declining):
        follower.waiter = loop.create_future()
        mux._tell(follower, told)
    assert handed == [told]
    assert handed[0] is told
    assert taking.waiter is not None
    assert not taking.waiter.done()
    assert (taking.cursor, taking.taken, taking.pending, taking.ended) == ("0-0", "0-0", [], False)
    assert (taking.sunk, taking.sunk_at > 0) == (1, True)
    assert declining.waiter is not None
    assert declining.waiter.done()
    assert (declining.cursor, declining.pending) == ("0-0", told)


async def test_a_sink_that_raises_leaves_the_entries_to_its_reader() -> None:
    """A sink's failure stays with its follower: the batch waits for ``next()`` and the sink is
    not called again (the shared read that called it goes on for every other follower)."""
    mux = Multiplexer(Redis(), Keys("t"))
    follower = _Follower("k", "0-0")
    calls = 0

    def sink(batch: list[Event]) -> bool:
        nonlocal calls
        calls += 1
        raise RuntimeError("the client's connection is in a state nobody expected")

    follower.sink = sink
    follower.waiter = asyncio.get_running_loop().create_future()
    for n in (1, 2):
        fields = encode(Delta(text=f"d{n}"), attempt=1, seq=n)
        raw = [(f"{n}-0".encode(), {k.encode(): v.encode() for k, v in fields.items()})]
        mux._offer(follower, _decoded(raw, (0, 0)))
    assert [event.cursor for event in follower.pending] == ["1-0", "2-0"]
    assert (calls, mux.written_directly) == (1, 0)
    assert follower.sink is None


async def test_a_stream_replaced_by_another_type_fails_only_its_followers(
    sq: StreamQ, settings: Settings, redis: Redis
) -> None:
    """A followed key that stops being a stream (WRONGTYPE for the whole XREAD) fails the
    followers of that key with the error; the other followers go on to their terminal event."""
    keys = Keys(settings.key_prefix)
    healthy, poisoned = await sq.enqueue_chat("healthy"), await sq.enqueue_chat("poisoned")
    for job in (healthy, poisoned):
        await _append(redis, keys.events(job.id), Start(job_id=job.id, model="m"), 0)
    async with sq.multiplexer() as mux:
        follows = [mux.follow(healthy.id, timeout=10), mux.follow(poisoned.id, timeout=10)]
        firsts = [await anext(follow) for follow in follows]  # both followed, and read once
        good, bad = (asyncio.create_task(_collect(follow)) for follow in follows)
        async with redis.pipeline(transaction=True) as pipe:
            pipe.delete(keys.events(poisoned.id))
            pipe.set(keys.events(poisoned.id), "not a stream")
            await pipe.execute()
        ids = [
            await _append(redis, keys.events(healthy.id), event, seq)
            for seq, event in enumerate([Delta(text="still here"), Done(finish_reason="stop")], 1)
        ]
        with pytest.raises(ResponseError, match="WRONGTYPE"):
            await bad
        events = firsts[:1] + await good
    assert [type(e) for e in events] == [Start, Delta, Done]
    assert [e.cursor for e in events][1:] == ids


async def _append(redis: Redis, key: str, event: Event, seq: int) -> str:
    fields: dict[Any, Any] = dict(encode(event, attempt=1, seq=seq))
    return as_text(await redis.xadd(key, fields))


async def _collect(events: AsyncIterator[Event]) -> list[Event]:
    return [event async for event in events]


@pytest.mark.usefixtures("worker")
async def test_while_every_follower_is_behind_the_shared_read_waits(
    sq: StreamQ, settings: Settings, redis: Redis, caplog: pytest.LogCaptureFixture
) -> None:
    """A follower that fell behind reads on its own; while it is the only one, the shared read
    has no stream to read and waits for a follower to come back (an ``XREAD`` of no streams is
    an error, which it used to send again and again). Once its reader reads again, it catches
    up while the job still streams, the shared read takes it back, and it gets the whole
    stream, each event once."""
    paced = {"simulator": {"tokens_per_second": 50, "reply_tokens": 200}}
    job = await sq.enqueue_chat("behind", extra_body=paced)
    mux = Multiplexer(redis, Keys(settings.key_prefix), max_backlog=4)
    async with mux, mux.subscribe(job.id, queued=False) as subscription:
        follower = subscription._follower
        await poll_until(lambda: follower.behind, 60, "the follower to fall behind")
        seen = 0
        async for event in job.events(queued=False):  # the stream grows while it is behind
            seen += isinstance(event, Delta)
            if seen == 60:
                break
        events: list[Event] = []
        while True:
            try:
                events += await subscription.next(None) or []
            except StopAsyncIteration:
                break
    assert events == [e async for e in job.events(queued=False)]
    assert "multiplexer read failed" not in caplog.text


async def test_a_follower_leaving_while_its_place_is_looked_up_leaves_nothing_behind(
    sq: StreamQ,
) -> None:
    """A queued job's only follower leaves while the lookup of its place waits for Redis: once
    the lookup is back, the multiplexer keeps nothing of that job (it used to keep the place it
    found, for as long as the process lived)."""
    job = await sq.enqueue_chat("waits: no worker here")
    async with sq.multiplexer() as mux:
        async with mux.subscribe(job.id) as subscription:
            told = await subscription.next(STARTUP)
            assert told
            assert isinstance(told[0], Queued)
            async with mux._control:  # the next lookup waits for the control connection
                mux._place_wanted.set()
                await poll_until(lambda: bool(mux._control._waiters), STARTUP, "the lookup")
                lookups = mux.place_lookups  # (none can end while the lock is held)
                subscription.close()
        await poll_until(lambda: mux.place_lookups > lookups, STARTUP, "the lookup's end")
        assert (mux._followers, mux._places) == ({}, {})
    await job.cancel()


async def test_a_follower_leaving_while_its_stream_is_checked_leaves_nothing_behind(
    sq: StreamQ,
) -> None:
    """The check that a quiet stream still exists waits for Redis while the stream's last
    follower leaves: the stream exists, and the multiplexer keeps nothing of it (it used to
    keep when it last saw it)."""
    job = await sq.enqueue_chat("quiet: no worker here")
    async with sq.multiplexer() as mux, mux.subscribe(job.id, queued=False) as subscription:
        key = Keys(sq.settings.key_prefix).events(job.id)
        async with mux._control:  # the check waits for the control connection here
            check = asyncio.create_task(mux._exists(sq.job(job.id), key))
            await poll_until(lambda: bool(mux._control._waiters), STARTUP, "the check")
            subscription.close()
        assert await check
        # (before the block's end closes the subscription again, which drops it all)
        assert (mux._followers, mux._seen) == ({}, {})
    await job.cancel()


async def test_a_subscription_closed_while_it_joins_is_not_followed(sq: StreamQ) -> None:
    """A subscription closed by another task while its join waits for Redis: once the join is
    back, its follower is not among the multiplexer's (it used to stay there)."""
    job = await sq.enqueue_chat("joins: no worker here")
    async with sq.multiplexer() as mux:
        subscription = mux.subscribe(job.id, queued=False)
        async with mux._control:  # the join waits for the control connection here
            joining = asyncio.create_task(subscription.__aenter__())
            await poll_until(lambda: bool(mux._control._waiters), STARTUP, "the join")
            subscription.close()
        await joining
        assert (mux._followers, mux.subscribers) == ({}, 0)
    await job.cancel()
