"""Attempts: fenced writes, restarts that readers never glue together, and resumption."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis

from streamq import (
    Delta,
    Done,
    JobFailed,
    JobRestarted,
    Reset,
    Settings,
    Start,
    StreamQ,
)
from streamq.core import scripts
from streamq.core.exceptions import Fenced, PublishFailed
from streamq.core.keys import Keys
from streamq.core.request import chat_messages
from streamq.dev.local_redis import LocalRedis, free_port
from streamq.dev.simulator import simulated_text
from streamq.worker.arq_worker import running_worker
from streamq.worker.publisher import Publisher, StreamWriter
from tests.harness.processes import worker_processes


@pytest.fixture
async def publisher(redis: Redis, settings: Settings) -> AsyncIterator[Publisher]:
    """A running publisher on the test's Redis."""
    async with started_publisher(redis, Keys(settings.key_prefix), "one") as publisher:
        yield publisher


@contextlib.asynccontextmanager
async def started_publisher(redis: Redis, keys: Keys, name: str) -> AsyncIterator[Publisher]:
    publisher = Publisher(redis, ttl=60, chain_key=keys.publisher(name))
    publisher.start()
    try:
        yield publisher
    finally:
        await publisher.aclose()


async def open_writer(publisher: Publisher, redis: Redis, keys: Keys, job_id: str) -> StreamWriter:
    attempt = await claim(redis, keys, job_id, publisher)
    return StreamWriter(publisher, keys.events(job_id), keys.state(job_id), attempt)


async def claim(
    redis: Redis, keys: Keys, job_id: str, publisher: Publisher | None = None, retry: bool = False
) -> int:
    """Claim the job's next attempt, as ``publisher``'s worker would (``retry``: after its own
    attempt ended)."""
    state, running = keys.state(job_id), keys.running()
    request = keys.request(job_id)
    chain = "" if publisher is None else publisher.chain_key
    own = "1" if retry else "0"
    claimed = await redis.eval(
        scripts.CLAIM, 3, state, running, request, "60", "10000", job_id, chain, own
    )  # type: ignore[misc]
    attempt = claimed[0]
    return int(attempt)


@pytest.mark.parametrize("same_worker", [False, True])
async def test_a_zombie_attempt_cannot_write(
    redis: Redis, settings: Settings, publisher: Publisher, same_worker: bool
) -> None:
    """Once attempt 2 claims the job, attempt 1's writes are refused and it learns it, though
    its publisher had checked it and stopped checking (its chain is broken by the claim)."""
    keys = Keys(settings.key_prefix)
    first = await open_writer(publisher, redis, keys, "z")
    for text in ("one", "two"):  # the second write is vouched for, unchecked
        await first.emit(Delta(text=text))
        await first.sync()
    assert first.trusted == publisher._trust
    async with started_publisher(redis, keys, "other") as other:
        second = await open_writer(publisher if same_worker else other, redis, keys, "z")
        await second.emit(Reset())
        await first.emit(Delta(text="zombie"))
        with pytest.raises(Fenced):
            await first.sync()
        await second.emit(Delta(text="three"))
        await second.sync()
    texts = [fields[b"data"] for _, fields in await redis.xrange(keys.events("z"))]
    assert texts == [b"one", b"two", b'{"reason":""}', b"three"]


async def test_a_checked_writer_then_costs_one_xadd_an_entry(settings: Settings) -> None:
    """The state is checked on a writer's first write, not on the ones that follow, until
    something breaks its publisher's chain (here a claim of a job it writes, but for its own
    retry)."""
    keys = Keys(settings.key_prefix)
    with LocalRedis(free_port()) as server:
        async with (
            Redis.from_url(server.url) as redis,
            started_publisher(redis, keys, "counted") as publisher,
        ):
            writers = [await open_writer(publisher, redis, keys, job) for job in ("a", "b")]

            async def commands_of_one_entry_each() -> dict[str, int]:
                before = await command_counts(redis)
                for writer in writers:
                    await writer.emit(Delta(text="x"))
                await asyncio.gather(*(writer.sync() for writer in writers))
                after = await command_counts(redis)
                moved = {k: n - before.get(k, 0) for k, n in after.items() if k != "info"}
                return {k: n for k, n in moved.items() if n}

            checked = await commands_of_one_entry_each()
            assert checked["hmget"] == 2
            assert checked["xrevrange"] == 2
            vouched = await commands_of_one_entry_each()
            assert vouched == {"evalsha": 1, "set": 1, "xadd": 2}
            # Its own retry of job a (attempt 1 ended) leaves its chain whole: b stays vouched.
            await claim(redis, keys, "a", publisher, retry=True)
            writers[0] = StreamWriter(publisher, keys.events("a"), keys.state("a"), 2)
            assert (await commands_of_one_entry_each())["hmget"] == 1
            # Another claim of a job it writes (its attempt was taken over) breaks it.
            await claim(redis, keys, "a", publisher)
            writers[0] = StreamWriter(publisher, keys.events("a"), keys.state("a"), 3)
            rechecked = await commands_of_one_entry_each()
            assert rechecked["hmget"] == 2
            assert rechecked["xadd"] == 2
            assert (await commands_of_one_entry_each())["xadd"] == 2


async def command_counts(redis: Redis) -> dict[str, int]:
    stats = await redis.info("commandstats")
    return {name.removeprefix("cmdstat_"): int(v["calls"]) for name, v in stats.items()}


async def test_a_retried_batch_writes_each_entry_once(redis: Redis, settings: Settings) -> None:
    """Sending the same entries twice (a retry after a lost reply) adds nothing the second time,
    also when the first call was vouched for: its retry finds the chain moved on, and checks."""
    keys = Keys(settings.key_prefix)
    attempt = await claim(redis, keys, "r")
    entry = ["0", "", "8", "type", "delta", "attempt", str(attempt), "seq", "0", "data", "x"]
    scratch = keys.events("r") + ":compacting"
    args = [keys.events("r"), keys.state("r"), scratch, str(attempt), "60", *entry]
    assert await redis.eval(scripts.APPEND, 3, *args) == 1  # type: ignore[misc]
    assert await redis.eval(scripts.APPEND, 3, *args) == 1  # type: ignore[misc]
    assert await redis.xlen(keys.events("r")) == 1
    chain = keys.publisher("retried")
    await redis.set(chain, "7", ex=60)
    later = ["1", "", "8", "type", "delta", "attempt", str(attempt), "seq", "1", "data", "y"]
    job = [keys.events("r"), keys.state("r"), scratch]
    vouched = ["60", "7", "8", str(attempt), "1", str(len(later)), *later]
    # The same call twice, as redis-py resends it after a timeout: the first one vouched for
    # (the chain held "7"), the second checked (it holds "8" now).
    for intact in (1, 0):
        reply = await redis.eval(scripts.APPEND_MANY, 4, chain, *job, *vouched)  # type: ignore[misc]
        assert reply == [intact, 1]
    assert await redis.xlen(keys.events("r")) == 2
    assert await redis.get(chain) == b"8!"


async def test_nothing_follows_the_terminal_event(
    redis: Redis, settings: Settings, publisher: Publisher
) -> None:
    """After done, further writes are refused: a stream has exactly one terminal event."""
    keys = Keys(settings.key_prefix)
    writer = StreamWriter(
        publisher, keys.events("t"), keys.state("t"), await claim(redis, keys, "t")
    )
    await writer.emit(Done(finish_reason="stop"))
    await writer.emit(Delta(text="late"))
    with pytest.raises(Fenced):
        await writer.sync()
    assert await redis.xlen(keys.events("t")) == 1
    assert await claim(redis, keys, "t") == 0  # an ended job is never started again


async def test_sync_and_close_wait_for_every_entry_and_keep_the_ttl(
    redis: Redis, settings: Settings
) -> None:
    """sync() returns only when all entries are in Redis; closing drains the rest."""
    keys = Keys(settings.key_prefix)
    publisher = Publisher(redis, ttl=60, chain_key=keys.publisher("drained"))
    publisher.start()
    writer = StreamWriter(
        publisher, keys.events("s"), keys.state("s"), await claim(redis, keys, "s", publisher)
    )
    for i in range(3000):
        await writer.emit(Delta(text=str(i)))
    await writer.sync()
    assert await redis.xlen(keys.events("s")) == 3000
    for i in range(3000):
        await writer.emit(Delta(text=str(i)))
    await publisher.aclose()
    assert await redis.xlen(keys.events("s")) == 6000
    assert 0 < await redis.ttl(keys.events("s")) <= 60


@pytest.mark.slow
async def test_a_stopped_worker_hands_the_job_back_and_readers_see_a_reset(
    sq: StreamQ, settings: Settings
) -> None:
    """SIGTERM past the drain time: another worker reruns the job; text never joins attempts."""
    slow = {"simulator": {"tokens_per_second": 20, "reply_tokens": 40}}
    expected = simulated_text(chat_messages("hand me back"), length=40)
    with contextlib.ExitStack() as workers:
        [first] = workers.enter_context(
            worker_processes(settings, 1, env={"STREAMQ_DRAIN_TIMEOUT": "1"})
        ).processes
        job = await sq.enqueue_chat("hand me back", extra_body=slow)
        seen: list[str] = []

        async def read_until_restart() -> None:
            async for chunk in job:
                seen.append(chunk)
                if len(seen) == 3:
                    first.send_signal(signal.SIGTERM)
                    workers.enter_context(worker_processes(settings, 1))

        with pytest.raises(JobRestarted) as restarted:
            await read_until_restart()
        assert expected.startswith("".join(seen))
        again = [chunk async for chunk in job.text(after=restarted.value.cursor)]
        assert "".join(again) == expected
    result = await job.result()
    assert result.text == expected
    assert result.attempt == 2
    kinds = [type(e) for e in [e async for e in job.events()] if isinstance(e, Reset | Start)]
    assert kinds == [Start, Reset, Start]


async def test_resuming_from_the_terminal_cursor_returns_at_once(sq: StreamQ) -> None:
    """A reader that saved the cursor of the last event is done at once, not after a timeout."""
    async with running_worker(sq.settings):
        job = await sq.enqueue_chat("finish")
        done = [e async for e in job.events()][-1]
    assert isinstance(done, Done)
    assert [e async for e in job.events(after=done.cursor, timeout=30)] == []


async def test_read_timeout_counts_only_waiting_not_the_readers_own_work(sq: StreamQ) -> None:
    """A slow consumer of a steady stream never hits a read timeout shorter than its work."""
    steady = {"simulator": {"tokens_per_second": 40, "reply_tokens": 12}}
    async with running_worker(sq.settings):
        job = await sq.enqueue_chat("steady", extra_body=steady)
        async with job.events() as events:  # however long the start takes
            first = await anext(aiter(events))
        # Then 13 events read at 0.1 s each: the read outlasts its 0.5 s timeout many times.
        async for _ in job.events(after=first.cursor, timeout=0.5):
            await asyncio.sleep(0.1)  # the reader's own work


async def test_the_same_job_id_under_two_prefixes_runs_twice(
    settings: Settings, redis: Redis
) -> None:
    """Two apps sharing one Redis may use the same job id: arq's ids are namespaced."""
    other = settings.replace(
        key_prefix=settings.key_prefix + "-b", queue_name=settings.key_prefix + "-b:queue"
    )
    async with (
        StreamQ(redis, settings) as a,
        StreamQ(redis, other) as b,
        running_worker(settings),
        running_worker(other),
    ):
        first = await a.enqueue_chat("one", job_id="shared-id")
        second = await b.enqueue_chat("two", job_id="shared-id")
        assert (await first.result()).text == simulated_text(chat_messages("one"))
        assert (await second.result()).text == simulated_text(chat_messages("two"))


async def test_the_attempt_budget_ends_the_job_with_an_error(
    sq: StreamQ, redis: Redis, settings: Settings
) -> None:
    """A job started more often than STREAMQ_MAX_ATTEMPTS ends with `attempts_exhausted`."""
    keys = Keys(settings.key_prefix)
    await redis.hset(keys.state("tired"), "attempt", "3")  # type: ignore[misc]
    async with running_worker(settings.replace(max_attempts=3)):
        job = await sq.enqueue_chat("again", job_id="tired")
        with pytest.raises(JobFailed) as failed:
            await job.result()
    assert failed.value.error.code == "attempts_exhausted"
    assert failed.value.error.attempt == 4


@pytest.mark.slow
async def test_a_killed_workers_job_restarts_within_the_lease(
    sq: StreamQ, settings: Settings
) -> None:
    """SIGKILL the worker mid-stream: within about one lease another worker starts it over."""
    slow = {"simulator": {"tokens_per_second": 20, "reply_tokens": 40}}
    expected = simulated_text(chat_messages("survive"), length=40)
    with worker_processes(settings, 2, env={"STREAMQ_LEASE": "2"}) as workers:
        processes = workers.processes
        job = await sq.enqueue_chat("survive", extra_body=slow)
        start = None
        async for event in job.events():
            if isinstance(event, Start):
                start = event
            if isinstance(event, Delta):
                break
        assert start is not None
        [victim] = [p for p in processes if start.worker.endswith(f":{p.pid}")]
        victim.send_signal(signal.SIGKILL)
        killed_at = asyncio.get_running_loop().time()
        status = await job.status()
        assert status.state == "running"
        async for event in job.events(after=start.cursor, timeout=30):
            if isinstance(event, Reset):
                recovered_in = asyncio.get_running_loop().time() - killed_at
                break
        result = await job.result(timeout=30)
    print(f"recovered {recovered_in:.2f}s after SIGKILL (lease 2s)")
    assert recovered_in < 15
    assert result.text == expected
    assert result.attempt == 2
    assert (await job.status()).state == "done"


async def test_a_lost_attempt_whose_job_arq_dropped_is_queued_again(
    sq: StreamQ, redis: Redis, settings: Settings
) -> None:
    """The reaper re-queues a job arq no longer holds, so its lost attempt is not the end of it.

    How it happens: a worker cut off from Redis for longer than a lease loses its job to
    another worker; when its fenced run ends, arq deletes the job. If the new holder then dies
    too, only the reaper can bring the job back.
    """
    keys = Keys(settings.key_prefix)
    job = await sq.enqueue_chat("dropped by arq")  # no worker yet: the job waits in the queue
    arq_id = keys.arq_job_id(job.id)
    attempt = await claim(redis, keys, job.id)  # a worker claimed it ...
    await redis.delete(f"arq:job:{arq_id}")  # ... arq dropped it (a fenced run ended) ...
    await redis.zrem(settings.queue_name, arq_id)
    await redis.zadd(keys.running(), {f"{attempt}:{job.id}": 0})  # ... and its holder died
    async with running_worker(settings.replace(lease=0.3)):
        result = await job.result(timeout=10)
    assert result.text == simulated_text(chat_messages("dropped by arq"))
    assert result.attempt == attempt + 1


async def test_an_attempt_whose_earlier_entries_were_lost_cannot_go_on(
    redis: Redis, settings: Settings, publisher: Publisher
) -> None:
    """If a failover lost entries an attempt wrote, its next write fails (the job then starts
    over as a new attempt) instead of leaving a hole in the stream."""
    keys = Keys(settings.key_prefix)
    writer = await open_writer(publisher, redis, keys, "g")
    await writer.emit(Delta(text="one"))
    await writer.sync()
    chain_then = await redis.get(publisher.chain_key)
    await writer.emit(Delta(text="two"))
    await writer.sync()
    # The replica that takes over missed the call that wrote "two", its chain token with it.
    newest = await redis.xrevrange(keys.events("g"), count=1)
    await redis.xdel(keys.events("g"), newest[0][0])
    await redis.set(publisher.chain_key, chain_then or b"", ex=60)
    await writer.emit(Delta(text="three"))
    with pytest.raises(PublishFailed):
        await writer.sync()
    texts = [fields[b"data"] for _, fields in await redis.xrange(keys.events("g"))]
    assert texts == [b"one"]  # not "three" after a hole


async def test_an_attempt_whose_claim_was_lost_is_not_mistaken_for_a_zombie(
    redis: Redis, settings: Settings, publisher: Publisher
) -> None:
    """A stored attempt older than the writer's means its claim was lost (a failover), not
    taken over: the write fails so the job is queued again, rather than fenced and dropped."""
    keys = Keys(settings.key_prefix)
    writer = await open_writer(publisher, redis, keys, "c")
    await redis.hset(keys.state("c"), "attempt", "0")  # type: ignore[misc]
    await writer.emit(Delta(text="after the failover"))
    with pytest.raises(PublishFailed):
        await writer.sync()


async def test_a_heartbeat_renews_every_lease_it_names_and_adds_none(
    redis: Redis, settings: Settings
) -> None:
    """One beat for 1,200 attempts (more than one ZADD's worth) renews each held lease and adds
    no lease the reaper already took."""
    keys = Keys(settings.key_prefix)
    held = [f"1:job{i}" for i in range(1100)]
    await redis.zadd(keys.running(), dict.fromkeys(held, 1))
    reaped = [f"1:gone{i}" for i in range(100)]
    members = held[:600] + reaped + held[600:]
    expiry = await redis.eval(scripts.HEARTBEAT, 1, keys.running(), "10000", *members)  # type: ignore[misc]
    leases = dict(await redis.zrange(keys.running(), 0, -1, withscores=True))
    assert len(leases) == len(held)
    assert set(leases.values()) == {float(expiry)}
